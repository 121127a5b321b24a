"""Ground geometry of a raster grid: true metres per pixel, CRS units, WGS84 footprints."""

from __future__ import annotations

import math
from typing import Any

from pyproj import CRS as ProjCRS
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.transform import Affine

from roadprn.errors import InputError

_GEOD = Geod(ellps="WGS84")
#: UTM is defined from 80 S to 84 N; beyond, an azimuthal equidistant CRS on the point is used
UTM_LAT_LIMITS = (-80.0, 84.0)


def metric_crs_at(lon: float, lat: float) -> ProjCRS:
    """The local metric CRS that buffers and lengths are measured in around (lon, lat): its UTM
    zone (longitudes beyond 180 wrap), or an azimuthal equidistant CRS on the point near the
    poles, where UTM is undefined. Labels and evaluation both call this, so a road buffered for
    training and one buffered as evaluation truth are the same polygon."""
    if UTM_LAT_LIMITS[0] <= lat <= UTM_LAT_LIMITS[1]:
        zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
        return ProjCRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
    return ProjCRS.from_proj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m")


def pixel_size_m(crs: CRS, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """True pixel size (x, y) in metres at the scene centre.

    For geographic CRSs a degree of longitude shrinks with latitude, so pixels are not square in
    metres; for projected CRSs the CRS's linear unit is honoured (e.g. US survey feet).
    """
    if crs.is_geographic:
        cx, cy = transform @ (width / 2.0, height / 2.0)
        dx, dy = abs(transform.a), abs(transform.e)
        _, _, x_m = _GEOD.inv(cx - dx / 2, cy, cx + dx / 2, cy)
        _, _, y_m = _GEOD.inv(cx, cy - dy / 2, cx, cy + dy / 2)
        return float(x_m), float(y_m)
    factor = linear_unit_m(crs)
    return (math.hypot(transform.a, transform.d) * factor,
            math.hypot(transform.b, transform.e) * factor)


def linear_unit_m(crs: CRS) -> float:
    """Metres per CRS unit, for projected and for local engineering CRSs (no geographic base).

    rasterio's ``linear_units_factor`` is defined for projected CRSs only and raises on a local
    engineering CRS, whose axes still carry a unit (site grids in metres or feet).
    """
    try:
        return float(crs.linear_units_factor[1]) if crs.linear_units_factor else 1.0
    except CRSError:
        pass
    try:
        name, factor = crs.units_factor
    except CRSError:
        name, factor = "unknown", float("nan")
    if not (math.isfinite(factor) and factor > 0):
        raise InputError(f"CRS {crs.to_string()[:80]!r} has no linear unit ({name}); pixel sizes "
                         "in metres are unknown")
    return float(factor)


def footprint_wgs84(crs: CRS, bounds: Any) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in degrees, densified so curved edges are covered."""
    from rasterio.warp import transform_bounds

    try:
        west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    except Exception:  # noqa: BLE001 - a CRS PROJ cannot invert: the footprint is optional
        return None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        return None
    return float(west), float(south), float(east), float(north)


def footprint_polygon_wgs84(crs: CRS, bounds: Any, *, segments: int = 1) -> dict[str, Any] | None:
    """A grid's ``bounds`` as a GeoJSON (Multi)Polygon in lon/lat, cut at the antimeridian;
    ``segments`` > 1 densifies the edges (a UTM rectangle is curved in lon/lat). None where
    PROJ cannot invert the CRS."""
    from rasterio.warp import transform_geom
    from shapely.geometry import box

    left, bottom, right, top = bounds
    ring = box(left, bottom, right, top)
    if segments > 1:
        ring = ring.segmentize(max(right - left, top - bottom) / segments)
    try:
        return dict(transform_geom(crs, "EPSG:4326", ring.__geo_interface__,
                                   antimeridian_cutting=True, precision=7))
    except Exception:  # noqa: BLE001 - as footprint_wgs84: the footprint is optional
        return None
