"""``roadprn synth``: write a synthetic georeferenced scene with known roads."""

from __future__ import annotations

import sys

import click
from tqdm import tqdm

from roadprn.synth import generate_scene


class SizeType(click.ParamType):
    """``N`` for a square scene or ``WxH``."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).lower().replace("×", "x")
        try:
            parts = [int(p) for p in text.split("x")]
        except ValueError:
            self.fail(f"{value!r} is not N or WxH (e.g. 4096 or 4096x2048)", param, ctx)
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or min(parts) < 1:
            self.fail(f"{value!r} is not N or WxH with positive integers", param, ctx)
        return tuple(parts)


class OriginType(click.ParamType):
    name = "X,Y"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            x, y = (float(p) for p in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not X,Y in CRS units (e.g. 500000,5760000)", param, ctx)
        return (x, y)


@click.command("synth")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--size", type=SizeType(), default="4096", show_default=True,
              help="Scene size in pixels: N (square) or WxH.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same scene.")
@click.option("--crs", default="EPSG:32631", show_default=True, help="Any EPSG code or WKT.")
@click.option("--resolution", type=float, default=0.5, show_default=True,
              help="Pixel size in metres (converted to degrees for a geographic CRS).")
@click.option("--origin", type=OriginType(), default=None,
              help="Top-left corner in CRS units; default: centre of the CRS's area of use.")
@click.option("--bands", type=click.Choice(["1", "3", "4"]), default="3", show_default=True,
              help="1 = panchromatic, 3 = RGB, 4 = RGB + NIR.")
@click.option("--dtype", type=click.Choice(["uint8", "uint16"]), default="uint8",
              show_default=True, help="uint16 uses an 11-bit range (1..2047).")
@click.option("--nodata-border", is_flag=True, help="Leave a slanted nodata border (value 0).")
@click.option("--nodata-holes", is_flag=True, help="Punch nodata holes (value 0) into the scene.")
@click.option("--window-size", type=int, default=1024, show_default=True,
              help="Pixels per rendered window side (memory, not output, depends on it).")
@click.option("--no-overviews", is_flag=True, help="Skip building overviews.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.pass_context
def synth(ctx: click.Context, out: str, size: tuple[int, int], seed: int, crs: str,
          resolution: float, origin: tuple[float, float] | None, bands: str, dtype: str,
          nodata_border: bool, nodata_holes: bool, window_size: int, no_overviews: bool,
          overwrite: bool) -> None:
    """Write OUT.tif, OUT_mask.tif and OUT_roads.gpkg: a synthetic scene with known roads."""
    quiet = bool((ctx.obj or {}).get("quiet"))
    width, height = size
    with tqdm(total=width * height, unit="px", unit_scale=True, desc="synth",
              disable=quiet or not sys.stderr.isatty(), file=sys.stderr) as bar:
        result = generate_scene(
            out, width=width, height=height, seed=seed, crs=crs, resolution_m=resolution,
            origin=origin, bands=int(bands), dtype=dtype, nodata_border=nodata_border,
            nodata_holes=nodata_holes, window_size=window_size, overviews=not no_overviews,
            overwrite=overwrite, progress=bar.update)
    click.echo(f"image: {result.image_path}")
    click.echo(f"mask:  {result.mask_path}")
    click.echo(f"roads: {result.roads_path}")
    click.echo(f"road length: {result.road_length_m / 1000:.2f} km in {result.road_count} "
               f"lines; road pixels: {100 * result.road_fraction:.1f} %")
