"""``roadprn train prn``: train a PatchRefineNet for one base model (parse, call, print).

The job is :func:`roadprn.prn.train.train_prn_model`; the options are
:class:`roadprn.prn.options.TrainPRNOptions`, generated into click options.
"""

from __future__ import annotations

from pathlib import Path

import click

from roadprn.cli.common import show_progress
from roadprn.cli.schema_options import SchemaOption
from roadprn.cli.train_options import echo_result, json_option, reporter, training_options
from roadprn.prn.options import TrainPRNOptions, make_prn_options

PRN_OPTIONS = [
    SchemaOption("base_model", metavar="default|PATH"),
    SchemaOption("variant"), SchemaOption("grid"), SchemaOption("map_size"),
    SchemaOption("epochs"), SchemaOption("lr"), SchemaOption("batch_size"),
    SchemaOption("val_fraction"), SchemaOption("fusion"), SchemaOption("patience"),
    SchemaOption("road_width_m"), SchemaOption("mask_threshold"), SchemaOption("labels_crs"),
    SchemaOption("augment", flags=("--no-augment",), set_to=False,
                 help="No flips or 90-degree rotations."),
    SchemaOption("seed"), SchemaOption("device"),
    SchemaOption("threads", help="Torch CPU threads for training (1 is often fastest on a "
                                 "shared machine)."),
    SchemaOption("max_minutes"),
]


@click.command("prn")
@click.option("--pair", "pair_items", nargs=2, multiple=True, metavar="SCENE LABELS",
              type=click.Path(dir_okay=False),
              help="A labelled scene the base model was NOT trained on; repeatable.")
@click.option("--pairs", "pairs_csv", type=click.Path(dir_okay=False),
              help="CSV with columns scene,labels[,split] (split: train or val).")
@click.option("--prob-maps", "prob_items", nargs=2, multiple=True, metavar="PROB TRUTH",
              type=click.Path(dir_okay=False),
              help="A saved base probability raster and its truth (mask raster or vector "
                   "labels on its grid); repeatable.")
@click.option("-o", "--out", "output", required=True, type=click.Path(dir_okay=False),
              help="PRN checkpoint (.pt); OUT.state.pt and OUT.metrics.csv/json go beside it.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue a run: its checkpoint (the .state.pt beside it) or the state file.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Base probability rasters of --pair scenes (default: OUT.maps/), reused.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@json_option
@training_options("prn", PRN_OPTIONS, make_prn_options)
@click.pass_context
def prn(ctx: click.Context, pair_items: tuple[tuple[str, str], ...], pairs_csv: str | None,
        prob_items: tuple[tuple[str, str], ...], output: str, resume: str | None,
        work_dir: str | None, overwrite: bool, as_json: bool, options: TrainPRNOptions) -> None:
    """Train a PatchRefineNet on a base model's probability maps.

    The base model runs on the labelled scenes with extract's tiled engine (use scenes it was
    not trained on), or saved probability rasters are read; both are cut into MAP-SIZE maps.
    The epoch with the best validation IoU is saved; the checkpoint records the base model's
    sha256 so that extract can tell when the pair is mismatched.
    """
    from roadprn.prn.train import train_prn_model
    from roadprn.train import TrainingPair, read_pairs_csv

    pairs = [TrainingPair(Path(s), Path(lab)) for s, lab in pair_items]
    if pairs_csv:
        pairs += read_pairs_csv(pairs_csv)
    result = train_prn_model(pairs, options, output, prob_maps=prob_items, resume=resume,
                             overwrite=overwrite, work_dir=work_dir, progress=show_progress(ctx),
                             report=reporter(ctx))
    echo_result(result, as_json, base_model_sha256=result.base_model_sha256,
                train_maps=result.train_maps, val_maps=result.val_maps)
