"""``roadprn vectorize``: a road mask or probability raster → road network file(s)."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError
from pyproj import CRS
from pyproj.exceptions import CRSError

from roadprn.cli.common import show_progress
from roadprn.errors import ConfigError, InputError
from roadprn.vectorize import VectorizeParams
from roadprn.vectorize.gpkg import FORMATS
from roadprn.vectorize.run import vectorize_file

# option name -> VectorizeParams field; all default to the params' own defaults
METRE_OPTIONS = {
    "min_component_area_m2": (float, "Remove road blobs smaller than this (m²)."),
    "min_hole_area_m2": (float, "Fill holes smaller than this (m²)."),
    "spur_length_m": (float, "Prune dead-end branches shorter than this (m)."),
    "junction_merge_radius_m": (float, "Merge junctions closer than this (m)."),
    "simplify_tolerance_m": (float, "Simplification tolerance (m)."),
    "bridge_max_gap_m": (float, "Bridge facing dead ends up to this far apart (m; 0 = off)."),
    "bridge_max_angle_deg": (float, "Max angle between a dead end and its bridge (degrees)."),
    "min_network_length_m": (float, "Drop isolated networks shorter than this in total (m)."),
    "tile_size_px": (int, "Tile size in pixels (memory per worker grows with its square)."),
}


def _metre_options(func):  # type: ignore[no-untyped-def]
    for name, (kind, help_text) in reversed(METRE_OPTIONS.items()):
        default = VectorizeParams.model_fields[name].default
        func = click.option(f"--{name.replace('_', '-')}", name, type=kind, default=None,
                            help=f"{help_text} [default: {default}]")(func)
    return func


def build_params(threshold: float | None, overrides: dict[str, object]) -> VectorizeParams:
    """Params from defaults plus the options given; bad values are a one-line ConfigError."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if threshold is not None:
        given["threshold"] = threshold
    try:
        return VectorizeParams(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"--{key.replace('_', '-')}: {err['msg']}") from exc


@click.command("vectorize")
@click.argument("raster", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder.")
@click.option("--threshold", type=float, default=None,
              help="Probability threshold for probability rasters (uint8: p = v/255). "
                   "[default: 0.5]")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="gpkg",
              show_default=True, help="gpkg: one file with roads, junctions, runs and style.")
@click.option("--dst-crs", default=None, help="Output CRS (e.g. EPSG:4326); default: the "
                                              "raster's CRS.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Parallel tile threads. [default: one per CPU core, at most 8]")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@_metre_options
@click.pass_context
def vectorize(ctx: click.Context, raster: Path, out_dir: Path, threshold: float | None, fmt: str,
              dst_crs: str | None, workers: int | None, overwrite: bool, **metre: object) -> None:
    """Turn a road mask or probability raster into a road network (roads + junctions)."""
    params = build_params(threshold, metre)
    if dst_crs is not None:
        try:
            CRS.from_user_input(dst_crs)
        except CRSError as exc:
            raise ConfigError(f"--dst-crs {dst_crs!r} is not a valid CRS") from exc
    if not raster.is_file():
        raise InputError(f"input raster not found: {raster}")
    result = vectorize_file(raster, out_dir, params, fmt=fmt, dst_crs=dst_crs,
                            overwrite=overwrite, workers=workers, progress=show_progress(ctx))
    if not (ctx.obj or {}).get("quiet"):
        click.echo(f"{result.files[0]}: {result.roads} roads, {result.junctions} junctions, "
                   f"{result.length_m / 1000:.3f} km")
