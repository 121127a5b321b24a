"""What a batch run produced, at a glance: ``DIR/roadprn_summary.json`` and a quick-look PNG.

Scenes done / failed, the area they cover in km², km of road, road density, time per stage, and
``DIR/roadprn_quicklook.png``: every finished scene's footprint with its roads (or the merged
network) in lon/lat. Read scene by scene from the outputs, so memory stays that of one scene's
network whatever the archive's size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roadprn.outputs.atomic import atomic_output

log = logging.getLogger(__name__)

SUMMARY_NAME = "roadprn_summary.json"
QUICKLOOK_NAME = "roadprn_quicklook.png"
MERGED_NETWORK = "roadprn_network.gpkg"
FINISHED = ("done", "skipped")


def run_summary(out_dir: str | Path, records: Sequence[dict[str, Any]],
                seconds: float) -> dict[str, Any]:
    """The run's numbers from its scene records (this run's scenes, finished ones read back)."""
    out_dir = Path(out_dir)
    finished = [r for r in records if r.get("status") in FINISHED]
    area_km2 = _covered_km2([f for r in finished
                             if (f := _footprint_wgs84(out_dir, r)) is not None])
    length_km = sum(r.get("road_length_m") or 0.0 for r in finished) / 1000
    roads = sum(r.get("roads") or 0 for r in finished)
    stages: dict[str, float] = {}
    for record in records:
        for stage, value in (record.get("stage_seconds") or {}).items():
            if isinstance(value, (int, float)):
                stages[stage] = stages.get(stage, 0.0) + float(value)
    return {
        "scenes": len(records),
        "done": sum(r.get("status") == "done" for r in records),
        "skipped_already_done": sum(r.get("status") == "skipped" for r in records),
        "failed": sum(r.get("status") == "failed" for r in records),
        "area_km2": round(area_km2, 4),
        "road_length_km": round(length_km, 3),
        "roads": roads,
        "road_km_per_km2": round(length_km / area_km2, 3) if area_km2 else None,
        "roads_per_km2": round(roads / area_km2, 2) if area_km2 else None,
        "stage_seconds": {k: round(v, 2) for k, v in sorted(stages.items())},
        "seconds": round(seconds, 2),
        "failed_scenes": [r.get("scene") for r in records if r.get("status") == "failed"],
    }


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as a few lines for the console."""
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary["stage_seconds"].items()) or "none"
    density = ("" if summary["road_km_per_km2"] is None
               else f" ({summary['road_km_per_km2']:.2f} km/km², "
                    f"{summary['roads_per_km2']:.1f} roads/km²)")
    scenes = summary["done"] + summary["skipped_already_done"]
    return [f"covered {summary['area_km2']:.3f} km² in {scenes} scene(s); "
            f"{summary['road_length_km']:.3f} km of road in {summary['roads']} "
            f"roads{density}",
            f"time per stage (all scenes): {stages}"]


def write_summary(out_dir: str | Path, summary: dict[str, Any], *,
                  quicklook: bool = True, records: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """``roadprn_summary.json`` and (``quicklook``) ``roadprn_quicklook.png`` in ``out_dir``,
    each written atomically and replacing the previous run's."""
    out_dir = Path(out_dir)
    written = []
    path = out_dir / SUMMARY_NAME
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    written.append(path)
    if quicklook:
        png = out_dir / QUICKLOOK_NAME
        try:
            _quicklook(out_dir, records, png)
            written.append(png)
        except Exception as exc:  # noqa: BLE001 - a picture never fails a finished run
            log.warning("no quick-look picture: %s", exc)
    return written


def _covered_km2(footprints: Sequence[Any]) -> float:
    """Area the footprints cover together in km² (overlaps once; geodesic, right in any CRS)."""
    if not footprints:
        return 0.0
    from pyproj import Geod
    from shapely import unary_union

    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(unary_union(list(footprints)))
    return abs(area) / 1e6


def output_grid(raster: Path, *, segments: int = 1) -> tuple[Any, Any, tuple[int, int],
                                                                dict[str, Any]] | None:
    """CRS, transform, shape and lon/lat footprint (GeoJSON) of an output raster; None when it
    cannot be read or has no CRS (STAC items and the summary both describe scenes by it)."""
    import rasterio

    from roadprn.raster.gdal_env import GDAL_ERRORS
    from roadprn.raster.geometry import footprint_polygon_wgs84

    try:
        with rasterio.open(raster) as ds:
            crs, transform, shape, bounds = ds.crs, ds.transform, ds.shape, ds.bounds
    except GDAL_ERRORS:
        return None
    except OSError:
        return None
    if crs is None:
        return None
    footprint = footprint_polygon_wgs84(crs, bounds, segments=segments)
    return None if footprint is None else (crs, transform, shape, footprint)


def _footprint_wgs84(out_dir: Path, record: dict[str, Any]) -> Any:
    from shapely.geometry import shape

    mask = (record.get("files") or {}).get("mask", {}).get("path")
    # densified: a UTM rectangle is not straight in lon/lat over a large scene
    grid = output_grid(out_dir / mask, segments=32) if mask else None
    return None if grid is None else shape(grid[3])


def _quicklook(out_dir: Path, records: Sequence[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = [r for r in records if r.get("status") in FINISHED]
    failed = [r for r in records if r.get("status") == "failed"]
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    merged = out_dir / MERGED_NETWORK
    for record in finished:
        footprint = _footprint_wgs84(out_dir, record)
        if footprint is not None:
            ax.plot(*footprint.exterior.xy, color="#888888", linewidth=0.6)
        if not merged.is_file():
            _plot_roads(ax, out_dir / ((record.get("files") or {}).get("roads", {})
                                       .get("path", "")))
    if merged.is_file():
        _plot_roads(ax, merged)
    ax.set_aspect("equal", adjustable="datalim")
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"roadprn: {len(finished)} scene(s)"
                 + (f", {len(failed)} failed (not shown)" if failed else ""))
    with atomic_output(png, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _plot_roads(ax: Any, path: Path) -> None:
    if not path.name or not path.is_file():
        return
    import pyogrio

    try:
        frame = pyogrio.read_dataframe(path, layer="roads", columns=[])
    except Exception:  # noqa: BLE001 - another format or no roads layer: nothing to draw
        return
    if frame.empty or frame.crs is None:
        return
    for line in frame.to_crs("EPSG:4326").geometry:
        for part in getattr(line, "geoms", [line]):
            ax.plot(*part.xy, color="#d7301f", linewidth=0.8)
