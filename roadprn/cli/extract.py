"""``roadprn extract SCENE``: scene in, georeferenced road rasters out."""

from __future__ import annotations

import json

import click

from roadprn.cli.common import (
    build_config,
    config_options,
    parse_bands,
    refine_options,
    refine_overrides,
    show_progress,
)


@click.command()
@click.argument("scene", type=str)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (default: <scene folder>/<scene name>_roadprn).")
@click.option("-m", "--model", help="Base model checkpoint (.pt), or 'default'.")
@config_options
@refine_options
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
@click.option("--format", "vector_format", type=click.Choice(["gpkg", "geojson", "fgb", "parquet"]),
              help="Road network format (default gpkg, with an embedded QGIS style).")
@click.option("--dst-crs", help="CRS of the road network, e.g. EPSG:4326 (default: the scene's).")
@click.option("--no-vectorize", is_flag=True, help="Stop after the rasters; no road network.")
@click.option("--allow-ungeoreferenced", is_flag=True, default=None,
              help="Accept rasters without CRS (outputs in pixel coordinates).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
def extract(ctx: click.Context, scene: str, out_dir: str | None, model: str | None,
            config_path: str | None, set_items: tuple[str, ...], refine_method: str | None,
            prn_model: str | None, fusion: str | None, device: str | None,
            tile_size: int | None, halo: int | None, batch_size: int | None, blend: str | None,
            threshold: float | None, bands: str | None, tta: bool | None,
            compile_model: bool | None, no_probability: bool, vector_format: str | None,
            dst_crs: str | None, no_vectorize: bool, allow_ungeoreferenced: bool | None,
            overwrite: bool | None, as_json: bool) -> None:
    """Extract roads from SCENE into --out.

    Writes SCENE_probability.tif (uint8 0-255), SCENE_mask.tif (0/1, nodata 255) and, with a
    PatchRefineNet, SCENE_refined_mask.tif as Cloud-Optimised GeoTIFFs on the scene's grid, and
    SCENE_roads.gpkg (layers roads, junctions, runs, with an embedded QGIS style) from the
    refined mask when there is one.
    """
    from roadprn.extract import run_extract

    config = build_config(
        config_path, set_items,
        **{
            "model": model,
            **refine_overrides(refine_method, prn_model, fusion),
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
            "output.vector_format": vector_format,
            "output.dst_crs": dst_crs,
            "vectorize.enabled": False if no_vectorize else None,
        },
    )
    run = run_extract(scene, config, out_dir, progress=show_progress(ctx))
    if as_json:
        click.echo(json.dumps(run.as_dict(), indent=2))
        return
    for key, path in run.files.items():
        click.echo(f"{key:<12} {path}")
    base = run.base
    click.echo(f"{'scene':<12} {base.width} x {base.height} px, {base.tiles} tiles, "
               f"{base.mpix_per_s:.2f} MPix/s on {base.device}, "
               f"road {100 * base.road_fraction:.2f} % of valid pixels")
    if run.road_length_m is not None:
        click.echo(f"{'network':<12} {run.roads} roads, {run.junctions} junctions, "
                   f"{run.road_length_m / 1000:.3f} km")
