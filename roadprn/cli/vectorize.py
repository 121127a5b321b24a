"""``roadprn vectorize``: a road mask or probability raster → road network file(s)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from roadprn.cli.common import show_progress
from roadprn.cli.schema_options import SchemaOption, schema_options
from roadprn.config import Config
from roadprn.errors import InputError
from roadprn.vectorize import VectorizeParams

#: The vectoriser's own thresholds, each the config key ``vectorize.<name>`` (metres / m²)
METRE_OPTIONS = ("min_component_area_m2", "min_hole_area_m2", "spur_length_m",
                 "junction_merge_radius_m", "simplify_tolerance_m", "bridge_max_gap_m",
                 "bridge_max_angle_deg", "min_network_length_m", "tile_size_px")

VECTORIZE_OPTIONS = [
    SchemaOption("vectorize.threshold",
                 help="Probability threshold for probability rasters (uint8: p = v/255). "
                      "[default: 0.5]"),
    SchemaOption("output.vector_format", ("--format",), param="fmt"),
    SchemaOption("output.dst_crs", help="Output CRS (e.g. EPSG:4326); default: the raster's CRS."),
    SchemaOption("vectorize.workers",
                 help="Parallel tile threads. [default: one per CPU core, at most 8]"),
    SchemaOption("output.overwrite", ("--overwrite",), set_to=True,
                 help="Replace existing outputs."),
    *(SchemaOption(f"vectorize.{name}") for name in METRE_OPTIONS),
]


def vectorize_params(config: Config) -> VectorizeParams:
    """The vectoriser's parameters from the config's ``vectorize:`` section (without the keys
    that say how ``extract`` runs it)."""
    fields = VectorizeParams.model_fields
    return VectorizeParams(**config.vectorize.model_dump(include=set(fields)))


@click.command("vectorize")
@click.argument("raster", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@schema_options(VECTORIZE_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
def vectorize(ctx: click.Context, raster: Path, out_dir: Path, config: Config,
              as_json: bool) -> None:
    """Turn a road mask or probability raster into a road network (roads + junctions)."""
    from roadprn.vectorize.run import vectorize_file

    if not raster.is_file():
        raise InputError(f"input raster not found: {raster}")
    result = vectorize_file(raster, out_dir, vectorize_params(config),
                            fmt=config.output.vector_format, dst_crs=config.output.dst_crs,
                            overwrite=config.output.overwrite, workers=config.vectorize.workers,
                            progress=show_progress(ctx))
    if as_json:
        click.echo(json.dumps({"raster": str(raster), "files": [str(f) for f in result.files],
                               "roads": result.roads, "junctions": result.junctions,
                               "road_length_m": round(result.length_m, 2)}, indent=2))
    elif not (ctx.obj or {}).get("quiet"):
        click.echo(f"{result.files[0]}: {result.roads} roads, {result.junctions} junctions, "
                   f"{result.length_m / 1000:.3f} km")
