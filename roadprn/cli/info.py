"""``roadprn info PATH``: what a scene (or, later, a model checkpoint) holds."""

from __future__ import annotations

import json

import click

from roadprn.raster import SceneInfo, open_scene


@click.command()
@click.argument("path", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--allow-ungeoreferenced", is_flag=True,
              help="Describe rasters without a CRS (pixel coordinates) instead of failing.")
def info(path: str, as_json: bool, allow_ungeoreferenced: bool) -> None:
    """Describe a scene: size, bands, dtype, CRS, resolution in metres, nodata, footprint."""
    scene = open_scene(path, allow_ungeoreferenced=allow_ungeoreferenced)
    if as_json:
        click.echo(json.dumps(scene.as_dict(), indent=2))
    else:
        click.echo(format_scene(scene))


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
