"""``roadprn info PATH``: what a scene, a road network or a model checkpoint holds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from roadprn.cli.schema_options import SchemaOption, schema_options
from roadprn.config import Config
from roadprn.raster.scene import SceneInfo, open_scene


@click.command()
@click.argument("path", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@schema_options([SchemaOption("input.allow_ungeoreferenced", ("--allow-ungeoreferenced",),
                              set_to=True, help="Describe rasters without a CRS (pixel "
                                                "coordinates) instead of failing.")])
def info(path: str, as_json: bool, config: Config) -> None:
    """Describe a scene (size, bands, dtype, CRS, resolution in metres, nodata, footprint), a
    road network (GeoPackage, GeoJSON, FlatGeobuf, GeoParquet: layers, features, CRS, extent,
    road length in km, junctions by degree, the run's provenance) or a model checkpoint
    (architecture, expected input, training data, metrics, sha256; TorchScript and ONNX too).

    PATH may also be 'default' for the model shipped with roadprn.
    """
    if is_model_file(path):
        describe_model(path, as_json)
        return
    from roadprn.vectorize.describe import describe_vector, format_vector, is_vector_file

    if is_vector_file(path):
        desc = describe_vector(path)
        if as_json:
            click.echo(json.dumps(json_safe(desc), indent=2, allow_nan=False, default=str))
        else:
            click.echo(format_vector(desc))
        return
    scene = open_scene(path, allow_ungeoreferenced=config.input.allow_ungeoreferenced)
    if as_json:
        click.echo(json.dumps(json_safe(scene.as_dict()), indent=2, allow_nan=False))
    else:
        click.echo(format_scene(scene))


def json_safe(value: Any) -> Any:
    """``value`` with NaN/±Inf floats as the strings "nan", "inf", "-inf" (JSON has no NaN).

    A NaN nodata value (common for float reflectance) made ``info --json`` print ``NaN``,
    which strict JSON parsers reject.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def format_scene(scene: SceneInfo) -> str:
    dtypes = sorted(set(scene.dtypes))
    rows = [
        ("path", scene.path),
        ("driver", scene.driver),
        ("size", f"{scene.width} x {scene.height} px"),
        ("bands", f"{scene.count} ({', '.join(scene.colorinterp)})"),
        ("dtype", ", ".join(dtypes)),
        ("crs", scene.crs_name),
        ("pixel size", f"{scene.res[0]:.6g} x {scene.res[1]:.6g} (CRS units)"),
    ]
    if scene.resolution_m:
        xm, ym = scene.resolution_m
        rows.append(("resolution", f"{xm:.3f} m x {ym:.3f} m"))
    rows.append(("nodata", "none" if scene.nodata is None else f"{scene.nodata:g}"))
    rows.append(("masks", ", ".join(sorted({"+".join(f) for f in scene.mask_flags}))))
    rows.append(("blocks", f"{scene.block_shape[1]} x {scene.block_shape[0]}"))
    rows.append(("overviews", ", ".join(map(str, scene.overviews)) or "none"))
    if scene.footprint_wgs84:
        w, s, e, n = scene.footprint_wgs84
        rows.append(("footprint", f"lon {w:.6f} .. {e:.6f}, lat {s:.6f} .. {n:.6f} (WGS84)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".onnx")


def is_model_file(path: str) -> bool:
    return path == "default" or Path(path).suffix.lower() in MODEL_SUFFIXES


def describe_model(path: str, as_json: bool) -> None:
    from roadprn.models.checkpoint import describe_checkpoint
    from roadprn.models.loading import resolve_model_path

    resolved = resolve_model_path(path)
    if resolved.suffix.lower() == ".onnx":
        from roadprn.models.exported import describe_onnx

        lines = describe_onnx(resolved)
    else:
        lines = describe_checkpoint(resolved)
    if as_json:
        click.echo(json.dumps(lines, indent=2))
        return
    width = max(len(k) for k in lines)
    click.echo("\n".join(f"{k:<{width}}  {v}" for k, v in lines.items()))
