"""Reading predictions and truths (rasters or vectors), aligning grids, local metric CRSs.

Everything a user can get wrong here (unreadable file, missing CRS, coordinates that cannot
be in the declared CRS, inputs that do not overlap, one georeferenced input and one not)
ends in an :class:`InputError` with one line naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.crs import CRS as RioCRS

from roadprn.errors import InputError
from roadprn.raster import open_raster, pixel_size_m

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb", ".gml", ".kml", ".geojsonl",
                   ".geojsons", ".parquet", ".geoparquet", ".sqlite"}


def is_vector(path: str | Path) -> bool:
    """Vector by extension; a GeoPackage holding only rasters counts as a raster."""
    p = Path(path)
    if p.suffix.lower() not in VECTOR_SUFFIXES:
        return False
    if p.suffix.lower() == ".gpkg" and p.exists():
        try:
            return len(pyogrio.list_layers(p)) > 0
        except Exception:  # noqa: BLE001 - unreadable: let the vector reader explain
            return True
    return True


# --------------------------------------------------------------------------- vectors


def read_lines(path: str | Path) -> gpd.GeoSeries:
    """(Multi)LineStrings of a vector file in its own CRS; an empty file is an empty prediction."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        gdf = gpd.read_file(p, engine="pyogrio", layer=_roads_layer(p))
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user error
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{p}: not a readable vector file ({reason})") from None
    geoms = gdf.geometry[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    if len(geoms) and gdf.crs is None:
        raise InputError(f"{p}: vector file has no CRS; cannot measure lengths in metres")
    _check_geographic_range(p, gpd.GeoSeries(geoms, crs=gdf.crs))
    types = set(geoms.geom_type)
    lines = geoms[geoms.geom_type.isin(["LineString", "MultiLineString"])]
    if len(geoms) and not len(lines):
        raise InputError(f"{p}: no LineString geometries (found {', '.join(sorted(types))})")
    return gpd.GeoSeries(shapely.force_2d(lines.values), crs=gdf.crs)


def _roads_layer(path: Path) -> str | None:
    """The ``roads`` layer of a multi-layer file (roadprn's GeoPackage), else the only layer."""
    import pyogrio

    try:
        names = [name for name, _ in pyogrio.list_layers(path)]
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader itself
        return None
    return "roads" if len(names) > 1 and "roads" in names else None


def _check_geographic_range(path: Path, geoms: gpd.GeoSeries) -> None:
    if not len(geoms) or geoms.crs is None or not geoms.crs.is_geographic:
        return
    minx, miny, maxx, maxy = geoms.total_bounds
    if minx < -180.5 or maxx > 360.5 or miny < -90.5 or maxy > 90.5:
        raise InputError(f"{path}: coordinates ({minx:.0f}, {miny:.0f}, {maxx:.0f}, {maxy:.0f}) "
                         f"cannot be degrees of the declared {geoms.crs.to_string()}; "
                         "the file's CRS is wrong")


def local_utm_crs(*series: gpd.GeoSeries) -> CRS:
    """UTM zone of the centre of the given geometries (the metric CRS lengths are measured in)."""
    boxes = []
    for s in series:
        if len(s):
            west, south, east, north = s.to_crs("EPSG:4326").total_bounds
            boxes.append((west, south, east, north))
    if not boxes:
        return CRS.from_epsg(32631)  # nothing to measure; any metric CRS will do
    west = min(b[0] for b in boxes)
    south = min(b[1] for b in boxes)
    east = max(b[2] for b in boxes)
    north = max(b[3] for b in boxes)
    return utm_crs_at((west + east) / 2.0, (south + north) / 2.0)


def utm_crs_at(lon: float, lat: float) -> CRS:
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def check_overlap(a_bounds: tuple[float, ...], b_bounds: tuple[float, ...], a_name: str,
                  b_name: str) -> None:
    """Fail when two bounding boxes (same CRS) do not intersect."""
    if (a_bounds[0] > b_bounds[2] or b_bounds[0] > a_bounds[2]
            or a_bounds[1] > b_bounds[3] or b_bounds[1] > a_bounds[3]):
        raise InputError(f"{a_name} and {b_name} do not overlap (checked in a common CRS)")


# --------------------------------------------------------------------------- rasters


@dataclass
class RasterInput:
    """A prediction or truth raster: values in [0, 1], which pixels count, and its grid."""

    path: str
    values: np.ndarray  # float32 in [0, 1]
    valid: np.ndarray  # bool
    transform: Affine
    crs: RioCRS | None  # None when the file has no georeferencing

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    @property
    def pixel_size_m(self) -> tuple[float, float] | None:
        if self.crs is None:
            return None
        return pixel_size_m(self.crs, self.transform, self.shape[1], self.shape[0])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return _bounds(self.transform, self.shape)


def _bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    xs, ys = zip(*(transform * (c, r) for c, r in ((0, 0), (shape[1], 0), (0, shape[0]),
                                                  (shape[1], shape[0]))), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def to_unit_interval(data: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Masks and probabilities as float32 in [0, 1].

    uint8 with valid values above 1 is a 0-255 probability (or a {0, 255} mask) and is divided
    by 255; other integers above 1 are divided by their type's maximum; floats are clipped.
    Nodata values are left out when deciding (a {0, 1} mask with nodata 255 stays {0, 1}).
    """
    if np.issubdtype(data.dtype, np.integer):
        sample = data if valid is None else data[valid]
        top = int(sample.max()) if sample.size else 0
        if top <= 1:
            return data.astype(np.float32)
        scale = 255.0 if data.dtype == np.uint8 else float(np.iinfo(data.dtype).max)
        return (data.astype(np.float32) / scale).clip(0.0, 1.0)
    return np.nan_to_num(data.astype(np.float32), nan=0.0).clip(0.0, 1.0)


def read_raster(path: str | Path) -> RasterInput:
    """First band as [0, 1] values; nodata / alpha / NaN pixels are invalid."""
    with open_raster(path) as ds:
        data = ds.read(1)
        valid = ds.read_masks(1) > 0
        georef = ds.crs is not None and ds.transform != Affine.identity()
        crs = ds.crs if georef else None
        transform = ds.transform
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    return RasterInput(str(path), to_unit_interval(data, valid), valid, transform, crs)


def align(source: RasterInput, grid: RasterInput) -> RasterInput:
    """``source`` on ``grid``'s pixels (nearest neighbour); pixels it does not cover are invalid.

    Both must be georeferenced, or neither (then the shapes must match, pixel for pixel).
    """
    if source.crs is None and grid.crs is None:
        if source.shape != grid.shape:
            raise InputError(f"{source.path} ({source.shape[1]}x{source.shape[0]}) and "
                             f"{grid.path} ({grid.shape[1]}x{grid.shape[0]}) have no "
                             "georeferencing and different sizes; cannot align them")
        return source
    if source.crs is None or grid.crs is None:
        plain, geo = (source, grid) if source.crs is None else (grid, source)
        raise InputError(f"{plain.path} has no georeferencing while {geo.path} is in "
                         f"{geo.crs.to_string()}; cannot align them")
    if source.crs == grid.crs and source.transform == grid.transform \
            and source.shape == grid.shape:
        return source
    src_bounds = rasterio.warp.transform_bounds(source.crs, grid.crs, *source.bounds)
    check_overlap(src_bounds, grid.bounds, source.path, grid.path)
    values = np.zeros(grid.shape, dtype=np.float32)
    covered = np.zeros(grid.shape, dtype=np.uint8)
    common = dict(src_transform=source.transform, src_crs=source.crs,
                  dst_transform=grid.transform, dst_crs=grid.crs,
                  resampling=rasterio.warp.Resampling.nearest)
    rasterio.warp.reproject(source.values, values, **common)
    rasterio.warp.reproject(source.valid.astype(np.uint8), covered, dst_nodata=0, **common)
    return RasterInput(source.path, values, covered > 0, grid.transform, grid.crs)


def rasterize_lines(lines: gpd.GeoSeries, transform: Affine, shape: tuple[int, int],
                    crs: CRS | RioCRS,
                    width_m: float) -> np.ndarray:
    """Boolean mask of ``lines`` buffered to a road ``width_m`` metres wide, on the given grid.

    Buffering happens in the local UTM zone so the width is true metres whatever the grid's
    CRS (on EPSG:4326 a buffer in degrees would be wider north-south than east-west).
    TODO(lead): merge with roadprn.labels.rasterize_lines when that exists.
    """
    if not len(lines):
        return np.zeros(shape, dtype=bool)
    metric = local_utm_crs(lines)
    buffered = lines.to_crs(metric).buffer(width_m / 2.0)
    on_grid = buffered.to_crs(crs)
    return rasterio.features.rasterize(
        ((g, 1) for g in on_grid if g is not None and not g.is_empty),
        out_shape=shape, transform=transform, fill=0, dtype=np.uint8).astype(bool)


def read_ignore(path: str | Path, grid: RasterInput) -> np.ndarray:
    """Pixels to ignore on ``grid``: non-zero pixels of a raster, or inside vector polygons."""
    if is_vector(path):
        if grid.crs is None:
            raise InputError(f"{path}: a vector ignore mask needs a georeferenced prediction")
        try:
            gdf = gpd.read_file(path, engine="pyogrio")
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: not a readable vector file ({exc})") from None
        if gdf.crs is None:
            raise InputError(f"{path}: vector file has no CRS")
        geoms = [g for g in gdf.geometry.to_crs(grid.crs) if g is not None and not g.is_empty]
        if not geoms:
            return np.zeros(grid.shape, dtype=bool)
        return rasterio.features.rasterize(((g, 1) for g in geoms), out_shape=grid.shape,
                                           transform=grid.transform, fill=0,
                                           dtype=np.uint8).astype(bool)
    mask = align(read_raster(path), grid)
    return (mask.values > 0) & mask.valid


def read_image_rgb(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Up to three bands stretched to 0-255 (2-98 %) for overlays; must match ``shape``."""
    with open_raster(path) as ds:
        if (ds.height, ds.width) != tuple(shape):
            raise InputError(f"{path}: image is {ds.width}x{ds.height}, prediction is "
                             f"{shape[1]}x{shape[0]}; the overlay needs the same grid")
        bands = [1, 2, 3] if ds.count >= 3 else [1]
        data = ds.read(bands).astype(np.float32)
        valid = ds.read_masks(1) > 0
    out = np.empty_like(data)
    for i, band in enumerate(data):
        sample = band[valid] if valid.any() else band.ravel()
        lo, hi = np.percentile(sample, [2, 98]) if sample.size else (0.0, 1.0)
        out[i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.moveaxis(out, 0, -1)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return (rgb * 255).astype(np.uint8)
