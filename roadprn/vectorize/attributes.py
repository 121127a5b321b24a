"""Road network in pixels → GeoDataFrames with per-road and per-junction attributes."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod

from roadprn.vectorize.graph import RoadNetwork


def _to_map(points_rc: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel (row, col) of pixel centres → map (x, y)."""
    cols, rows = points_rc[:, 1] + 0.5, points_rc[:, 0] + 0.5
    x = transform.a * cols + transform.b * rows + transform.c
    y = transform.d * cols + transform.e * rows + transform.f
    return np.column_stack([x, y])


def lengths_m(geoms: np.ndarray, crs: CRS) -> np.ndarray:
    """True lengths: geodesic on a geographic CRS, planar × unit factor otherwise."""
    if len(geoms) == 0:
        return np.zeros(0)
    if crs.is_geographic:
        geod = Geod(ellps="WGS84")
        return np.array([geod.geometry_length(g) for g in geoms])
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return shapely.length(geoms) * unit


def network_frames(network: RoadNetwork, transform: Affine, crs: object, scene: str,
                   dst_crs: object | None = None) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """``roads`` (LineString) and ``junctions`` (Point) layers; only valid, non-empty lines."""
    src_crs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    geoms = np.array([shapely.LineString(_to_map(line, transform)) for line in network.lines],
                     dtype=object)
    keep = np.array([g.is_valid and not g.is_empty and g.length > 0 for g in geoms], dtype=bool)
    geoms = geoms[keep] if len(geoms) else geoms
    width = np.asarray(network.width_m, dtype=float)[keep] if len(keep) else np.zeros(0)
    prob = np.asarray(network.prob_mean, dtype=float)[keep] if len(keep) else np.zeros(0)
    roads = gpd.GeoDataFrame(
        {"id": np.arange(1, len(geoms) + 1, dtype=np.int64),
         "length_m": np.round(lengths_m(geoms, src_crs), 3),
         "width_m": np.round(width, 3), "prob_mean": np.round(prob, 4),
         "scene": np.array([scene] * len(geoms), dtype=object)},
        geometry=gpd.GeoSeries(list(geoms), crs=src_crs), crs=src_crs)
    points = shapely.points(_to_map(network.junctions, transform)) \
        if len(network.junctions) else np.array([], dtype=object)
    junctions = gpd.GeoDataFrame(
        {"id": np.arange(1, len(points) + 1, dtype=np.int64),
         "degree": np.asarray(network.junction_degree, dtype=np.int64),
         "scene": np.array([scene] * len(points), dtype=object)},
        geometry=gpd.GeoSeries(list(points), crs=src_crs), crs=src_crs)
    if dst_crs is not None:
        roads, junctions = roads.to_crs(dst_crs), junctions.to_crs(dst_crs)
        roads = roads[roads.geometry.is_valid & ~roads.geometry.is_empty].reset_index(drop=True)
    return roads, junctions
