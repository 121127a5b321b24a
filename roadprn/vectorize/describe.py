"""What a road-network file holds, like ``ogrinfo -so``: layers, feature counts, geometry
types, CRS, extent, road length in km (measured in metres), junctions by degree and the
``runs`` provenance record. ``roadprn info`` prints it; notebooks can call it too.

Lengths are measured in the layer's CRS when it is projected (in its linear unit, converted to
metres), else in the local metric CRS at the layer's centre
(:func:`roadprn.raster.geometry.metric_crs_at`: UTM), never in degrees.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from roadprn.errors import InputError, one_line

#: suffixes ``roadprn info`` describes as a vector file
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".fgb", ".parquet", ".geoparquet", ".shp")
# tables of a roadprn GeoPackage that are not features
NON_SPATIAL = ("runs", "layer_styles")
# line ends closer than this (in metres) are one node when junctions are computed from lines
NODE_TOLERANCE_M = 0.01


def is_vector_file(path: str) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def describe_vector(path: str | Path) -> dict[str, Any]:
    """The description of a vector file as a JSON-ready dict (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        frames = {path.stem: _read_parquet(path)}
        driver = "GeoParquet"
    else:
        frames, driver = _read_ogr(path)
    layers = [_describe_layer(name, frame) for name, frame in frames.items()
              if frame is not None]
    tables = [name for name, frame in frames.items() if frame is None]
    result: dict[str, Any] = {"path": str(path), "driver": driver, "layers": layers}
    if tables:
        result["tables"] = tables
    lines = [layer for layer in layers if "Line" in layer["geometry_type"]]
    if lines:
        result["road_length_km"] = round(sum(layer["length_km"] for layer in lines), 3)
    result["junctions_by_degree"] = _junctions(frames)
    run = _run_record(path)
    if run is not None:
        result["run"] = run
    return result


def _read_ogr(path: Path) -> tuple[dict[str, Any], str]:
    import geopandas as gpd
    import pyogrio

    from roadprn.outputs.atomic import ogr_path

    try:
        with ogr_path(path) as name:
            listed = pyogrio.list_layers(name)
            driver = str(pyogrio.read_info(name, layer=listed[0][0])["driver"]) \
                if len(listed) else "?"
            frames: dict[str, Any] = {}
            for layer, geometry_type in listed:
                if layer in NON_SPATIAL or geometry_type is None:
                    frames[str(layer)] = None
                    continue
                frames[str(layer)] = gpd.read_file(name, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(f"{path}: not a readable vector file ({one_line(exc)})") from None
    return frames, driver


def _read_parquet(path: Path) -> Any:
    import geopandas as gpd

    try:
        return gpd.read_parquet(path)
    except ImportError as exc:
        raise InputError(f"{path}: reading GeoParquet needs pyarrow ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's and geopandas' errors alike
        raise InputError(f"{path}: not a readable GeoParquet file ({one_line(exc)})") from None


def _crs_text(crs: Any) -> str | None:
    if crs is None:
        return None
    code = crs.to_epsg()
    name = crs.name
    return f"EPSG:{code} ({name})" if code else name


def _describe_layer(name: str, frame: Any) -> dict[str, Any]:
    geoms = frame.geometry
    types = sorted({str(t) for t in geoms.geom_type.dropna().unique()})
    info: dict[str, Any] = {
        "name": name,
        "features": int(len(frame)),
        "geometry_type": ", ".join(types) or "none",
        "crs": _crs_text(frame.crs),
        "extent": None if len(frame) == 0 or geoms.is_empty.all()
        else [float(v) for v in geoms.total_bounds],
        "fields": [str(c) for c in frame.columns if c != frame.geometry.name],
    }
    if any("Line" in t for t in types) or name == "roads":
        info["length_km"] = round(length_m(frame) / 1000.0, 3)
        info["length_crs"] = _crs_text(_metric_crs(frame))
    return info


def _metric_crs(frame: Any) -> Any:
    """The CRS lengths of ``frame`` are measured in: its own when projected, else local UTM."""
    from roadprn.raster.geometry import metric_crs_at

    crs = frame.crs
    if crs is not None and crs.is_projected:
        return crs
    if len(frame) == 0 or frame.geometry.is_empty.all():
        return None
    wgs84 = frame if crs is None else frame.to_crs("EPSG:4326")
    w, s, e, n = wgs84.geometry.total_bounds
    return metric_crs_at((w + e) / 2.0, (s + n) / 2.0)


def length_m(frame: Any) -> float:
    """Total length of the lines of ``frame`` in metres (0 for an empty layer)."""
    if len(frame) == 0 or frame.geometry.is_empty.all():
        return 0.0
    crs = frame.crs
    if crs is not None and crs.is_projected:
        factor = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
        return float(frame.geometry.length.sum()) * factor
    if crs is None:  # no CRS: the coordinates are taken for lon/lat (GeoJSON's default)
        frame = frame.set_crs("EPSG:4326")
    return float(frame.to_crs(_metric_crs(frame)).geometry.length.sum())


def _junctions(frames: dict[str, Any]) -> dict[str, Any]:
    """Nodes by degree: the ``junctions`` layer's ``degree`` column if present, else computed
    from where line ends meet (degree = number of line ends at a node)."""
    points = frames.get("junctions")
    if points is not None and "degree" in points:
        counts = Counter(int(d) for d in points["degree"])
        return {"source": "junctions layer", "by_degree": _sorted(counts),
                "junctions": int(sum(n for d, n in counts.items() if d >= 3))}
    lines = [f for f in frames.values() if f is not None
             and any("Line" in str(t) for t in f.geometry.geom_type.dropna().unique())]
    ends = []
    for frame in lines:
        tol = NODE_TOLERANCE_M
        crs = frame.crs
        if crs is not None and not crs.is_projected:
            tol = NODE_TOLERANCE_M / 111_320.0  # degrees: ~1 cm
        for geom in frame.geometry.explode(index_parts=False):
            if geom is None or geom.is_empty or geom.geom_type != "LineString":
                continue
            coords = np.asarray(geom.coords)  # a closed loop: two ends at one node
            ends.append(np.round(coords[[0, -1], :2] / tol).astype(np.int64))
    if not ends:
        return {"source": "line ends", "by_degree": {}, "junctions": 0}
    nodes = Counter(map(tuple, np.concatenate(ends).tolist()))
    counts = Counter(nodes.values())
    return {"source": "line ends", "by_degree": _sorted(counts),
            "junctions": int(sum(n for d, n in counts.items() if d >= 3))}


def _sorted(counts: Counter) -> dict[str, int]:
    return {str(d): int(counts[d]) for d in sorted(counts)}


def _run_record(path: Path) -> dict[str, Any] | None:
    """The ``runs`` table's last row (GeoPackage) or the ``<scene>_run.json`` beside a
    single-layer file; JSON-text columns decoded."""
    record: dict[str, Any] | None = None
    if path.suffix.lower() == ".gpkg":
        import pyogrio

        from roadprn.outputs.atomic import ogr_path

        with ogr_path(path) as name:
            if "runs" not in [str(n) for n, _ in pyogrio.list_layers(name)]:
                return None
            runs = pyogrio.read_dataframe(name, layer="runs", read_geometry=False)
        if len(runs) == 0:
            return None
        record = {str(k): (None if _missing(v) else v) for k, v in runs.iloc[-1].items()}
    else:
        stem = path.stem
        for suffix in ("_roads", "_junctions"):
            stem = stem.removesuffix(suffix)
        sidecar = path.with_name(f"{stem}_run.json")
        if not sidecar.is_file():
            return None
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
    for key in [k for k in record if k.endswith("_json")]:
        try:
            record[key.removesuffix("_json")] = json.loads(str(record.pop(key)))
        except ValueError:
            pass
    return record


def _missing(value: Any) -> bool:
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):
        return False


def format_vector(desc: dict[str, Any]) -> str:
    """``desc`` as ``info``'s aligned text, one block per layer."""
    rows: list[tuple[str, str]] = [("path", desc["path"]), ("driver", desc["driver"]),
                                   ("layers", str(len(desc["layers"])))]
    for layer in desc["layers"]:
        name = layer["name"]
        rows.append((f"layer {name}", f"{layer['features']} feature(s), {layer['geometry_type']}"))
        rows.append(("  crs", layer["crs"] or "none"))
        if layer["extent"] is not None:
            x0, y0, x1, y1 = layer["extent"]
            rows.append(("  extent", f"{x0:.12g}, {y0:.12g} .. {x1:.12g}, {y1:.12g}"))
        if "length_km" in layer:
            rows.append(("  length", f"{layer['length_km']:.3f} km (measured in "
                                     f"{layer['length_crs'] or 'metres'})"))
        if layer["fields"]:
            rows.append(("  fields", ", ".join(layer["fields"])))
    if desc.get("tables"):
        rows.append(("tables", ", ".join(desc["tables"])))
    if "road_length_km" in desc:
        rows.append(("road length", f"{desc['road_length_km']:.3f} km"))
    junctions = desc["junctions_by_degree"]
    degrees = ", ".join(f"degree {d}: {n}" for d, n in junctions["by_degree"].items())
    rows.append(("junctions", f"{junctions['junctions']} (degree >= 3; from "
                              f"{junctions['source']})" + (f"; {degrees}" if degrees else "")))
    run = desc.get("run")
    if run:
        for key in ("roadprn_version", "command", "input_path", "input_sha256", "created_utc"):
            if run.get(key) is not None:
                rows.append((f"run {key.replace('_', ' ')}", str(run[key])))
        hashes = run.get("model_hashes")
        if isinstance(hashes, dict) and hashes:
            rows.append(("run models", ", ".join(f"{k} {v}" for k, v in hashes.items())))
        if isinstance(run.get("config"), dict):
            rows.append(("run config", f"{len(run['config'])} section(s) (--json for all)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
