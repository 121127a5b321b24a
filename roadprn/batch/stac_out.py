"""STAC out: the run's outputs as a STAC Collection, one Item per finished scene.

``DIR/stac/collection.json`` and ``DIR/stac/<scene>/<scene>.json``: every Item has the scene's
footprint, its grid (``proj:`` fields of the projection extension), how it was made
(``processing:`` fields) and the outputs as assets (masks and probability as COGs, the road
network), with hrefs relative to the catalog so that the run folder can move. The merged network
of the run, when there is one, is a collection-level asset. Written into a temporary folder and
swapped in whole: a reader never sees half a catalog.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roadprn import __version__
from roadprn.batch.report import output_grid
from roadprn.batch.stac import StacScene, _pystac

log = logging.getLogger(__name__)

STAC_FOLDER = "stac"
PROJECTION_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
PROCESSING_EXT = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: the run's outputs as assets: key in a scene record's files -> (media type, roles, title)
ASSETS = {
    "mask": (COG_TYPE, ["data"], "Road mask (1 road, 0 background, 255 nodata)"),
    "refined_mask": (COG_TYPE, ["data"], "Road mask refined by PatchRefineNet"),
    "probability": (COG_TYPE, ["data"], "Road probability (uint8, p = value / 255)"),
    "roads": ("application/geopackage+sqlite3", ["data"], "Road network (roads, junctions)"),
    "junctions": ("application/geo+json", ["data"], "Road junctions"),
    "mask_style": ("application/xml", ["metadata"], "QGIS style of the mask"),
    "refined_mask_style": ("application/xml", ["metadata"], "QGIS style of the refined mask"),
    "probability_style": ("application/xml", ["metadata"], "QGIS style of the probability"),
}
MERGED_NETWORK = "roadprn_network.gpkg"


def write_run_catalog(out_dir: str | Path, records: Sequence[dict[str, Any]],
                      sources: dict[str, StacScene] | None = None,
                      run_id: str | None = None) -> Path | None:
    """The STAC Collection of every finished scene in ``records`` (manifest scene records);
    None when no scene finished. ``sources``: the STAC Item each scene came from, by path."""
    pystac = _pystac()
    out_dir = Path(out_dir)
    sources = sources or {}
    items = [item for record in records
             if record.get("status") in ("done", "skipped") and record.get("files")
             for item in [_item(pystac, out_dir, record, sources.get(record.get("scene", "")),
                                run_id)]
             if item is not None]
    if not items:
        return None
    collection = pystac.Collection(
        id="roadprn-roads", title="Roads extracted by roadprn",
        description=f"Road masks, probabilities and networks extracted by roadprn {__version__} "
                    f"from {len(items)} scene(s).",
        extent=pystac.Extent(pystac.SpatialExtent([_union([i.bbox for i in items])]),
                             pystac.TemporalExtent([_interval([i.datetime for i in items])])),
        license="other", stac_extensions=[PROCESSING_EXT],
        extra_fields={"processing:software": {"roadprn": __version__}})
    for item in items:
        collection.add_item(item)
    merged = out_dir / MERGED_NETWORK
    if merged.is_file():
        collection.add_asset("network", pystac.Asset(
            str(merged.resolve()), title="Merged road network of the run",
            media_type=ASSETS["roads"][0], roles=["data"]))
    final = out_dir / STAC_FOLDER
    staging = out_dir / f".{STAC_FOLDER}-{uuid.uuid4().hex[:8]}"
    try:
        collection.normalize_hrefs(str(staging.resolve()))
        collection.make_all_asset_hrefs_relative()
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        # the assets' relative hrefs were made from the staging folder: same depth, same result
        old = out_dir / f".{STAC_FOLDER}-old-{uuid.uuid4().hex[:8]}"
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "collection.json"


def _item(pystac: Any, out_dir: Path, record: dict[str, Any], source: StacScene | None,
          run_id: str | None) -> Any:
    files = record["files"]
    grid = _grid(out_dir / files.get("mask", {}).get("path", ""))
    if grid is None:
        log.warning("%s: its mask is not readable; no STAC item", record.get("scene"))
        return None
    geometry, bbox, proj = grid
    # the Item's own acquisition time when it came from STAC, else when roadprn made it
    when = (_datetime(source.datetime if source else None) or _datetime(record.get("time"))
            or dt.datetime.now(dt.UTC))
    properties: dict[str, Any] = {
        **proj,
        "processing:software": {"roadprn": __version__},
        "processing:lineage": f"roadprn batch (extract) of {record.get('scene')}",
        "processing:datetime": _rfc3339(record.get("time")),
        "roadprn:scene": record.get("scene"),
        "roadprn:road_length_m": record.get("road_length_m"),
        "roadprn:model_hashes": record.get("model_hashes"),
    }
    if run_id:
        properties["roadprn:run_id"] = run_id
    if source is not None:
        properties["roadprn:source_item"] = source.item_id
        properties["roadprn:source_asset"] = source.asset_key
    item = pystac.Item(id=source.item_id if source else record["name"], geometry=geometry,
                       bbox=bbox, datetime=when, properties=properties,
                       stac_extensions=[PROJECTION_EXT, PROCESSING_EXT])
    for key, entry in files.items():
        if key not in ASSETS or not isinstance(entry, dict) or "path" not in entry:
            continue
        media_type, roles, title = ASSETS[key]
        extra = {"roadprn:sha256": entry.get("sha256"), "roadprn:bytes": entry.get("bytes")}
        item.add_asset(key, pystac.Asset(str((out_dir / entry["path"]).resolve()), title=title,
                                         media_type=media_type, roles=roles, extra_fields=extra))
    return item


def _grid(mask: Path) -> tuple[dict[str, Any], list[float], dict[str, Any]] | None:
    """WGS84 footprint, bbox and the ``proj:`` fields of an output raster."""
    from shapely.geometry import shape as geometry_shape

    grid = output_grid(mask)
    if grid is None:
        return None
    crs, transform, shape, geometry = grid
    bbox = list(geometry_shape(geometry).bounds)
    epsg = crs.to_epsg()
    proj: dict[str, Any] = {"proj:code": f"EPSG:{epsg}" if epsg else None,
                            "proj:shape": list(shape), "proj:transform": list(transform)[:6]}
    if epsg is None:
        proj["proj:wkt2"] = crs.to_wkt()
    return geometry, bbox, proj


def _union(boxes: Sequence[list[float] | None]) -> list[float]:
    real = [b for b in boxes if b]
    return [min(b[0] for b in real), min(b[1] for b in real), max(b[2] for b in real),
            max(b[3] for b in real)]


def _interval(times: Sequence[dt.datetime | None]) -> list[dt.datetime | None]:
    real = [t for t in times if t is not None]
    return [min(real), max(real)] if real else [None, None]


def _rfc3339(text: str | None) -> str | None:
    value = _datetime(text)
    return value.isoformat().replace("+00:00", "Z") if value else None


def _datetime(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
