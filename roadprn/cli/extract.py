"""``roadprn extract SCENE``: scene in, georeferenced road rasters out."""

from __future__ import annotations

import json

import click

from roadprn.cli.common import build_config, config_options, parse_bands, show_progress


@click.command()
@click.argument("scene", type=str)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (default: <scene folder>/<scene name>_roadprn).")
@click.option("-m", "--model", help="Base model checkpoint (.pt), or 'default'.")
@config_options
@click.option("--device", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--tile-size", type=int, help="Tile side in pixels (default: from the model).")
@click.option("--halo", type=int, help="Tile overlap on each side in pixels (default: from the model).")
@click.option("--batch-size", type=int, help="Tiles per forward pass.")
@click.option("--blend", type=click.Choice(["hann", "crop"]), help="How overlapping tiles merge.")
@click.option("--threshold", type=float, help="Road probability threshold for the mask (0..1).")
@click.option("--bands", help="1-based bands to feed the model, e.g. 1,2,3.")
@click.option("--tta/--no-tta", default=None, help="Average predictions over flips (slower).")
@click.option("--compile/--no-compile", "compile_model", default=None, help="torch.compile the model.")
@click.option("--no-probability", is_flag=True, help="Write only the mask, not the probability raster.")
@click.option("--allow-ungeoreferenced", is_flag=True, default=None,
              help="Accept rasters without CRS (outputs in pixel coordinates).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
def extract(ctx: click.Context, scene: str, out_dir: str | None, model: str | None,
            config_path: str | None, set_items: tuple[str, ...], device: str | None,
            tile_size: int | None, halo: int | None, batch_size: int | None, blend: str | None,
            threshold: float | None, bands: str | None, tta: bool | None,
            compile_model: bool | None, no_probability: bool, allow_ungeoreferenced: bool | None,
            overwrite: bool | None, as_json: bool) -> None:
    """Segment roads in SCENE: probability and mask Cloud-Optimised GeoTIFFs in --out."""
    from roadprn.models.loading import load_segmentation_model
    from roadprn.pipeline import extract_probability

    config = build_config(
        config_path, set_items,
        **{
            "model": model,
            "inference.device": device,
            "tiling.tile_size": tile_size,
            "tiling.halo": halo,
            "tiling.batch_size": batch_size,
            "tiling.blend": blend,
            "output.threshold": threshold,
            "input.bands": parse_bands(bands),
            "inference.tta": tta,
            "inference.compile": compile_model,
            "output.write_probability": False if no_probability else None,
            "input.allow_ungeoreferenced": allow_ungeoreferenced,
            "output.overwrite": overwrite,
        },
    )
    seg_model = load_segmentation_model(config.model)
    result = extract_probability(scene, seg_model, config, out_dir, progress=show_progress(ctx))
    summary = result.as_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key in ("probability", "mask"):
        if summary[key]:
            click.echo(f"{key:<12} {summary[key]}")
    click.echo(f"{'scene':<12} {result.width} x {result.height} px, {result.tiles} tiles, "
               f"{summary['mpix_per_s']:.2f} MPix/s on {result.device}, "
               f"road {100 * result.road_fraction:.2f} % of valid pixels")
