"""``roadprn train prn``: train a PatchRefineNet for one base model.

The lead registers :data:`prn` in the ``train`` group (``roadprn/cli/train.py``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from roadprn.cli.common import show_progress
from roadprn.errors import ConfigError, InputError, ModelError

log = logging.getLogger(__name__)


@click.command("prn")
@click.option("--base-model", default="default", show_default=True, metavar="default|PATH",
              help="The base model whose probability maps PRN refines.")
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
              help="PRN checkpoint (.pt); OUT.state.pt and OUT.history.csv/json go beside it.")
@click.option("--variant", type=click.Choice(["fast", "paper"]), default="fast",
              show_default=True, help="fast: pooled input, ~0.1x base cost; paper: as published.")
@click.option("--grid", type=int, default=8, show_default=True,
              help="Patch cells per side (8 = P64, 2 = P4, 0 = P0: global branch only).")
@click.option("--map-size", type=int, default=512, show_default=True,
              help="PRN window side in pixels (training maps and extract windows).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--lr", type=float, default=8e-4, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Share of scenes (or maps, with one scene) held out to choose the epoch.")
@click.option("--fusion", type=click.Choice(["paper", "global", "local", "mean"]),
              default=None,
              help="Fusion rule scored on the validation maps to choose the epoch "
                   "(default: the config's refine.fusion, what extract will use).")
@click.option("--road-width-m", type=float, default=4.0, show_default=True,
              help="Full road width for centreline labels, in metres.")
@click.option("--mask-threshold", type=float, default=None,
              help="Mask raster labels: road where value > this (default: from the data).")
@click.option("--labels-crs", default=None, help="Override a missing/wrong CRS of vector labels.")
@click.option("--no-augment", is_flag=True, help="No flips or 90-degree rotations.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None,
              help="Torch CPU threads for training (1 is often fastest on a shared machine).")
@click.option("--max-minutes", type=float, default=None,
              help="Stop after the epoch that ends past this time.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue a run: its checkpoint (the .state.pt beside it) or the state file.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Base probability rasters of --pair scenes (default: OUT.maps/), reused.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.pass_context
def prn(ctx: click.Context, base_model, pair_items, pairs_csv, prob_items, output, variant, grid,
        map_size, epochs, lr, batch_size, val_fraction, fusion, road_width_m, mask_threshold,
        labels_crs, no_augment, seed, device, threads, max_minutes, resume, work_dir,
        overwrite) -> None:
    """Train a PatchRefineNet on a base model's probability maps.

    The base model runs on the labelled scenes with extract's tiled engine (use scenes it was
    not trained on), or saved probability rasters are read; both are cut into MAP-SIZE maps.
    The epoch with the best validation IoU is saved; the checkpoint records the base model's
    sha256 so that extract can tell when the pair is mismatched.
    """
    import torch

    from roadprn.config import load_config
    from roadprn.infer.predictor import resolve_device
    from roadprn.models.loading import load_segmentation_model
    from roadprn.outputs.atomic import check_writable
    from roadprn.prn.data import (
        PRNMaps,
        fit_prn,
        load_train_state,
        maps_from_rasters,
        maps_from_scene,
        save_train_state,
        split_maps,
        write_history,
        write_prn_checkpoint,
    )
    from roadprn.prn.network import prn_arch, prn_arch_kwargs
    from roadprn.prn.train import PRNTrainSettings
    from roadprn.train import read_pairs_csv

    out = Path(output)
    check_writable(out, overwrite or resume is not None)
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    try:
        arch_kwargs = prn_arch_kwargs(prn_arch(variant, grid=grid, map_size=map_size))
    except ValueError as exc:
        raise ConfigError(f"--variant/--grid/--map-size: {exc}") from None
    state_path = out.with_suffix(".state.pt")
    state = None
    if resume is not None:
        resume_path = Path(resume)
        if not resume_path.name.endswith(".state.pt"):
            resume_path = resume_path.with_suffix(".state.pt")
        state = load_train_state(resume_path)
        arch_kwargs = state.arch_kwargs
        map_size = int(arch_kwargs["map_size"])

    pairs = [(Path(s), Path(lab), None) for s, lab in pair_items]
    if pairs_csv:
        pairs += [(p.scene, p.labels, p.split) for p in read_pairs_csv(pairs_csv)]
    if not pairs and not prob_items:
        raise ConfigError("give training data with --pair SCENE LABELS, --pairs CSV or "
                          "--prob-maps PROB TRUTH")
    for scene, labels, _ in pairs:
        for path in (scene, labels):
            if not path.exists():
                raise InputError(f"file not found: {path}")
    base = load_segmentation_model(base_model)
    if not base.sha256:
        raise ModelError(f"base model {base_model}: no sha256 to pair the PRN with")

    progress = show_progress(ctx)
    config = load_config(None, {"output.overwrite": True, "inference.device": device})
    maps_dir = Path(work_dir) if work_dir else out.with_name(out.name + ".maps")
    explicit: dict[str, list[PRNMaps]] = {"train": [], "val": []}
    undecided: list[PRNMaps] = []
    from tqdm import tqdm

    sources = [("pair", *p) for p in pairs] + [("prob", Path(p), Path(t), None)
                                                for p, t in prob_items]
    for kind, first, second, split in tqdm(sources, desc="base maps", unit="scene",
                                           disable=not progress):
        if kind == "pair":
            part = maps_from_scene(first, second, base, config, maps_dir, map_size,
                                   road_width_m=road_width_m, mask_threshold=mask_threshold,
                                   labels_crs=labels_crs, progress=progress)
        else:
            _check_prob_source(first, base.sha256)
            part = maps_from_rasters(first, second, map_size, mask_threshold=mask_threshold)
        if not len(part):
            log.warning("%s: no %d-pixel map with enough labelled area; skipped", first, map_size)
        (explicit[split] if split in explicit else undecided).append(part)
    train, val = split_maps(PRNMaps.concat(undecided, map_size),
                            0.0 if explicit["val"] else val_fraction, seed)
    train = PRNMaps.concat([train, *explicit["train"]], map_size)
    val = PRNMaps.concat([val, *explicit["val"]], map_size)
    if not len(train):
        raise InputError(f"no training maps of {map_size} px: scenes too small or unlabelled; "
                         "lower --map-size")
    click.echo(f"PRN maps: {len(train)} train, {len(val)} validation ({map_size} px)", err=True)

    if threads:
        torch.set_num_threads(threads)
    settings = PRNTrainSettings(
        epochs=epochs, learning_rate=lr, batch_size=batch_size, seed=seed,
        augment=not no_augment,
        fusion=(fusion or config.refine.fusion) if int(arch_kwargs["grid"]) > 0 else "global",
        device=str(resolve_device(device)))
    history_path = out.with_suffix(".history.csv")
    bar = tqdm(total=epochs, initial=state.epoch if state else 0, desc="PRN epochs",
               unit="epoch", disable=not progress)

    def on_epoch_end(current) -> None:
        save_train_state(state_path, current)
        write_history(history_path, current.history)
        row = current.history[-1]
        bar.update(1)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k in ("train_loss", "val_iou")})
        log.info("epoch %d: %s", current.epoch, json.dumps(row))

    try:
        state = fit_prn(arch_kwargs, train, val, settings, resume=state,
                        max_minutes=max_minutes, on_epoch_end=on_epoch_end)
    finally:
        bar.close()
    best = state.history[state.best_epoch - 1]
    sha = write_prn_checkpoint(
        out, state, base.sha256, overwrite=True,
        metrics={"best_epoch": state.best_epoch, "epochs": state.epoch,
                 **{k: float(v) for k, v in best.items() if k.startswith(("val_", "train_"))}},
        notes=f"{len(train)} train / {len(val)} validation maps of {map_size} px",
        road_fraction=float(train.truth.mean()), labelled_pixels=int(train.truth.size))
    click.echo(json.dumps({"checkpoint": str(out), "sha256": sha, "base_model_sha256": base.sha256,
                           "best_epoch": state.best_epoch, "epochs": state.epoch,
                           "metrics": best, "history": str(history_path)}))


def _check_prob_source(path: Path, base_sha256: str) -> None:
    """A probability raster written by ``extract`` names its base model: it must be this one."""
    from roadprn.raster.scene import open_dataset

    if not path.is_file():
        raise InputError(f"probability raster not found: {path}")
    with open_dataset(path) as ds:
        made_by = ds.tags().get("ROADPRN_MODEL_SHA256")
    if made_by and made_by != "unknown" and made_by != base_sha256:
        raise InputError(f"{path} was made by base model {made_by[:12]}…, not --base-model "
                         f"({base_sha256[:12]}…); PRN must learn the bias of the model it refines")
