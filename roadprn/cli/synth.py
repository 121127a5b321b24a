"""``roadprn synth``: write a synthetic georeferenced scene with known roads."""

from __future__ import annotations

import json
import math
import sys

import click

from roadprn.cli.common import show_progress
from roadprn.cli.schema_options import SchemaOption, schema_options
from roadprn.config import Config
from roadprn.errors import ConfigError
from roadprn.runtime.progress import progress_bar
from roadprn.synth import generate_scene


def parse_size(text: str) -> list[int]:
    """``N`` for a square scene or ``WxH``."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        size = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--size {text!r} is not N or WxH (e.g. 4096 or 4096x2048)") from None
    if len(size) > 2:
        raise ConfigError(f"--size {text!r} is not N or WxH (e.g. 4096 or 4096x2048)")
    return size


def parse_origin(text: str) -> tuple[float, float]:
    try:
        x, y = (float(p) for p in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--origin {text!r} is not X,Y in CRS units (e.g. "
                          "500000,5760000)") from None
    return (x, y)


SYNTH_OPTIONS = [
    SchemaOption("synth.size", convert=parse_size, metavar="SIZE",
                 help="Scene size in pixels: N (square) or WxH. [default: 4096]"),
    SchemaOption("synth.seed"),
    SchemaOption("synth.crs"),
    SchemaOption("synth.resolution"),
    SchemaOption("synth.origin", convert=parse_origin, metavar="X,Y"),
    SchemaOption("synth.bands"),
    SchemaOption("synth.dtype"),
    SchemaOption("synth.nodata_border", ("--nodata-border",), set_to=True),
    SchemaOption("synth.nodata_holes", ("--nodata-holes",), set_to=True),
    SchemaOption("synth.window_size"),
    SchemaOption("synth.overviews", ("--no-overviews",), set_to=False,
                 help="Skip building overviews."),
    SchemaOption("synth.style"),
    SchemaOption("synth.landscape"),
    SchemaOption("output.overwrite", ("--overwrite",), set_to=True,
                 help="Replace existing outputs."),
]


@click.command("synth")
@click.argument("out", type=click.Path(dir_okay=False), required=False)
@click.option("-o", "--out", "out_option", type=click.Path(dir_okay=False),
              help="The scene to write (OUT.tif), as the OUT argument.")
@schema_options(SYNTH_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
def synth(ctx: click.Context, out: str | None, out_option: str | None, config: Config,
          as_json: bool) -> None:
    """Write OUT.tif, OUT_mask.tif and OUT_roads.gpkg: a synthetic scene with known roads."""
    if (out is None) == (out_option is None):
        raise ConfigError("give the scene to write once: roadprn synth OUT.tif (or -o OUT.tif)")
    out = out or out_option
    assert out is not None
    settings = config.synth
    width, height = settings.size[0], settings.size[-1]
    with progress_bar(total=width * height, unit="px", unit_scale=True, desc="synth",
                      enabled=show_progress(ctx), file=sys.stderr) as bar:
        result = generate_scene(
            out, width=width, height=height, seed=settings.seed, crs=settings.crs,
            resolution_m=settings.resolution, origin=settings.origin, bands=settings.bands,
            dtype=settings.dtype, nodata_border=settings.nodata_border,
            nodata_holes=settings.nodata_holes, window_size=settings.window_size,
            overviews=settings.overviews, overwrite=config.output.overwrite,
            progress=bar.update, style=settings.style, landscape=settings.landscape)
    if as_json:
        click.echo(json.dumps({
            "image": str(result.image_path), "mask": str(result.mask_path),
            "roads": str(result.roads_path), "width": result.width, "height": result.height,
            "crs": result.crs, "road_length_m": round(result.road_length_m, 2),
            "road_lines": result.road_count,
            "road_fraction": None if math.isnan(result.road_fraction)
            else round(result.road_fraction, 5)}, indent=2))
        return
    click.echo(f"image: {result.image_path}")
    click.echo(f"mask:  {result.mask_path}")
    click.echo(f"roads: {result.roads_path}")
    click.echo(f"road length: {result.road_length_m / 1000:.2f} km in {result.road_count} "
               f"lines; road pixels: {100 * result.road_fraction:.1f} %")
