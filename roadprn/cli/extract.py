"""``roadprn extract SCENE``: scene in, georeferenced road rasters out."""

from __future__ import annotations

import json

import click

from roadprn.cli.common import pipeline_options, show_progress
from roadprn.config import Config


@click.command()
@click.argument("scene", type=str)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (default: <scene folder>/<scene name>_roadprn).")
@pipeline_options
@click.option("--overwrite", is_flag=True, default=None, help="Replace existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
def extract(ctx: click.Context, scene: str, out_dir: str | None, config: Config,
            overwrite: bool | None, as_json: bool) -> None:
    """Extract roads from SCENE into --out.

    Writes SCENE_probability.tif (uint8 0-255), SCENE_mask.tif (0/1, nodata 255) and, with
    --refine auto|prn (PatchRefineNet), SCENE_refined_mask.tif as Cloud-Optimised GeoTIFFs on
    the scene's grid, and
    SCENE_roads.gpkg (layers roads, junctions, runs, with an embedded QGIS style) from the
    refined mask when there is one. Each raster gets a QGIS style beside it (SCENE_mask.qml,
    ...: masks drawn in the road colour on transparent, probabilities as a colour ramp).
    """
    from roadprn.extract import run_extract
    from roadprn.runtime.settings import configure_process

    if overwrite:
        config.output.overwrite = True
    configure_process(torch_threads=config.inference.torch_threads,
                      reader_threads=config.inference.reader_threads)
    run = run_extract(scene, config, out_dir, progress=show_progress(ctx))
    if as_json:
        click.echo(json.dumps(run.as_dict(), indent=2))
        return
    width = max(12, *(len(key) for key in run.files))
    for key, path in run.files.items():
        click.echo(f"{key:<{width}} {path}")
    base = run.base
    click.echo(f"{'model':<{width}} {base.model}")
    click.echo(f"{'scene':<{width}} {base.width} x {base.height} px, {base.tiles} tiles, "
               f"{base.mpix_per_s:.2f} MPix/s on {base.device}, "
               f"road {100 * base.road_fraction:.2f} % of valid pixels")
    if run.road_length_m is not None:
        click.echo(f"{'network':<{width}} {run.roads} roads, {run.junctions} junctions, "
                   f"{run.road_length_m / 1000:.3f} km")
        if not run.roads:
            click.echo(f"{'':<{width}} no roads found: compare the scene's resolution and "
                       "bands with the model's (roadprn info SCENE, roadprn info MODEL), check "
                       "--bands and the normalisation, or try a lower --threshold")
