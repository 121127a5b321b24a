"""Reading predictions and truths (rasters or vectors), aligning grids, local metric CRSs.

Rasters are never read whole: :class:`RasterLayer` and the layers of
:mod:`roadprn.evaluate.windowed` yield one window at a time.

Everything a user can get wrong here (unreadable file, missing CRS, coordinates that cannot
be in the declared CRS, inputs that do not overlap, one georeferenced input and one not)
ends in an :class:`InputError` with one line naming the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio.warp
import shapely
from affine import Affine
from pyproj import CRS
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from roadprn.errors import InputError, gdal_reason, one_line
from roadprn.evaluate.roadclass import (
    HIGHWAY,
    Dropped,
    non_road_mask,
    normalise_values,
    summarise,
)
from roadprn.evaluate.windowed import GridSpec, Layer, ShapesLayer, WarpedLayer, clip_rect
from roadprn.outputs.atomic import ogr_path
from roadprn.raster.gdal_env import read_masks
from roadprn.raster.geometry import metric_crs_at, pixel_size_m
from roadprn.raster.labels import SceneGrid, buffer_lines
from roadprn.raster.scene import check_blocks_readable, open_dataset, open_raster

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb", ".gml", ".kml", ".geojsonl",
                   ".geojsons", ".parquet", ".geoparquet", ".sqlite"}


def is_vector(path: str | Path) -> bool:
    """Vector by extension; a GeoPackage holding only rasters counts as a raster."""
    p = Path(path)
    if p.suffix.lower() not in VECTOR_SUFFIXES:
        return False
    if p.suffix.lower() == ".gpkg" and p.exists():
        try:
            with ogr_path(p) as name:
                return len(pyogrio.list_layers(name)) > 0
        except Exception:  # noqa: BLE001 - unreadable: let the vector reader explain
            return True
    return True


# --------------------------------------------------------------------------- vectors


def read_lines(path: str | Path) -> gpd.GeoSeries:
    """(Multi)LineStrings of a vector file in its own CRS; an empty file is an empty prediction."""
    return read_road_lines(path)[0]


def read_road_lines(path: str | Path) -> tuple[gpd.GeoSeries, np.ndarray | None]:
    """:func:`read_lines` and, per line, its normalised ``highway`` value (None when the file
    has no such attribute)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        with ogr_path(p) as name:
            gdf = gpd.read_file(name, engine="pyogrio", layer=_roads_layer(name))
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user error
        reason = one_line(exc)
        raise InputError(f"{p}: not a readable vector file ({reason})") from None
    present = ~(gdf.geometry.isna() | gdf.geometry.is_empty)
    geoms = gdf.geometry[present]
    if len(geoms) and gdf.crs is None:
        raise InputError(f"{p}: vector file has no CRS; cannot measure lengths in metres")
    _check_coordinates(p, gpd.GeoSeries(geoms, crs=gdf.crs))
    types = set(geoms.geom_type)
    is_line = geoms.geom_type.isin(["LineString", "MultiLineString"])
    lines = geoms[is_line]
    if len(geoms) and not len(lines):
        raise InputError(f"{p}: no LineString geometries (found {', '.join(sorted(types))})")
    values = None
    if HIGHWAY in gdf.columns:
        values = normalise_values(gdf[HIGHWAY][present][is_line].tolist())
    return gpd.GeoSeries(shapely.force_2d(lines.values), crs=gdf.crs), values


def split_non_roads(lines: gpd.GeoSeries, values: np.ndarray | None,
                    drop: frozenset[str]) -> tuple[gpd.GeoSeries, gpd.GeoSeries, np.ndarray]:
    """(kept lines, dropped lines, their ``highway`` values), all in the lines' CRS."""
    mask = non_road_mask(values, drop)
    if mask is None:
        return lines, gpd.GeoSeries([], crs=lines.crs), np.empty(0, dtype=object)
    return (gpd.GeoSeries(lines.values[~mask], crs=lines.crs),
            gpd.GeoSeries(lines.values[mask], crs=lines.crs), values[mask])  # type: ignore[index]


def _roads_layer(path: Path | str) -> str | None:
    """The ``roads`` layer of a multi-layer file (roadprn's GeoPackage), else the only layer."""
    import pyogrio

    try:
        names = [name for name, _ in pyogrio.list_layers(path)]
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader itself
        return None
    return "roads" if len(names) > 1 and "roads" in names else None


#: no CRS on Earth has coordinates this large (metres, feet): larger ones are corrupt data
MAX_PROJECTED_COORD = 1e9


def _check_coordinates(path: Path, geoms: gpd.GeoSeries) -> None:
    """Refuse coordinates no real file holds (NaN, inf, 1e308): they overflow later on."""
    if not len(geoms):
        return
    coords = shapely.get_coordinates(geoms.values)
    if coords.size and not (np.isfinite(coords).all()
                            and np.abs(coords).max() <= MAX_PROJECTED_COORD):
        bad = coords[~np.isfinite(coords) | (np.abs(coords) > MAX_PROJECTED_COORD)]
        raise InputError(f"{path}: coordinates such as {bad.flat[0]:g} are not finite or beyond "
                         f"{MAX_PROJECTED_COORD:g} in any CRS; the file is corrupt")
    if geoms.crs is None or not geoms.crs.is_geographic:
        return
    minx, miny, maxx, maxy = geoms.total_bounds
    if minx < -180.5 or maxx > 360.5 or miny < -90.5 or maxy > 90.5:
        raise InputError(f"{path}: coordinates ({minx:.0f}, {miny:.0f}, {maxx:.0f}, {maxy:.0f}) "
                         f"cannot be degrees of the declared {geoms.crs.to_string()}; "
                         "the file's CRS is wrong")


def local_utm_crs(*series: gpd.GeoSeries) -> CRS:
    """The metric CRS lengths are measured in: :func:`~roadprn.raster.geometry.metric_crs_at`
    of the centre of the given geometries."""
    boxes = []
    for s in series:
        if len(s):
            west, south, east, north = finite_bounds(reproject_geoms(s, "EPSG:4326"))
            boxes.append((west, south, east, north))
    if not boxes:
        return CRS.from_epsg(32631)  # nothing to measure; any metric CRS will do
    west = min(b[0] for b in boxes)
    south = min(b[1] for b in boxes)
    east = max(b[2] for b in boxes)
    north = max(b[3] for b in boxes)
    return metric_crs_at((west + east) / 2.0, (south + north) / 2.0)


def finite_bounds(geoms: gpd.GeoSeries, path: object = None) -> tuple[float, float, float, float]:
    """total_bounds, refused when a reprojection produced inf/NaN (points outside the CRS)."""
    bounds = tuple(float(b) for b in geoms.total_bounds)
    if not all(math.isfinite(b) for b in bounds):
        raise InputError(f"{path or 'lines'}: coordinates cannot be reprojected from "
                         f"{geoms.crs.to_string() if geoms.crs else 'their CRS'} (they lie "
                         "outside the area it covers); the file's CRS is wrong")
    return bounds  # type: ignore[return-value]


def to_metric(lines: gpd.GeoSeries, crs: CRS, path: object) -> gpd.GeoSeries:
    """``lines`` in the metric CRS ``crs``, refusing coordinates PROJ cannot place there."""
    if not len(lines):
        return gpd.GeoSeries([], crs=crs)
    out = reproject_geoms(lines, crs, path)
    finite_bounds(out, path)
    return out


def reproject_geoms(geoms: gpd.GeoSeries, crs: object, path: object = None) -> gpd.GeoSeries:
    """``geoms.to_crs(crs)``; a CRS pair PROJ cannot relate (a local engineering CRS, say) is
    the user's input problem, told in one line, not a ProjError traceback."""
    try:
        return geoms.to_crs(crs)
    except Exception as exc:  # noqa: BLE001 - pyproj / rasterio CRS errors of many kinds
        source = geoms.crs.to_string() if geoms.crs is not None else "no CRS"
        target = crs.to_string() if hasattr(crs, "to_string") else str(crs)
        source, target = source[:60], target[:60]
        raise InputError(f"{path or 'lines'}: cannot reproject from {source} to {target} "
                         f"({one_line(exc, 160)})") from None


def check_overlap(a_bounds: tuple[float, ...], b_bounds: tuple[float, ...], a_name: str,
                  b_name: str) -> None:
    """Fail when two bounding boxes (same CRS) do not intersect."""
    if (a_bounds[0] > b_bounds[2] or b_bounds[0] > a_bounds[2]
            or a_bounds[1] > b_bounds[3] or b_bounds[1] > a_bounds[3]):
        raise InputError(f"{a_name} and {b_name} do not overlap (checked in a common CRS)")


# --------------------------------------------------------------------------- rasters

#: the largest grid evaluate accepts (2^36 px, e.g. 262144²): windowed, memory would stay flat
#: beyond it too, but such a run takes many hours; tiles through --pairs are the way there
MAX_PIXELS = 1 << 36
#: a float raster holds probabilities in [0, 1]; this much rounding outside is tolerated
FLOAT_SLACK = 1e-3
_SCAN = 2048  # window side of the scan that decides an integer raster's scale


class RasterLayer:
    """Band 1 of a raster file on its own grid, read window by window as values in [0, 1].

    Opened through :func:`roadprn.raster.open_dataset` and checked up front (size, data type,
    first and last block readable), so a truncated or absurd file fails before any work with
    one line naming it. Integer rasters are scaled as docs/metrics.md says; the scale depends
    on whether any valid value exceeds 1, found by a scan that stops at the first such value.
    A float raster whose values leave [0, 1] is refused: clipping would make metrics silently
    meaningless. ``role="ignore"`` skips both (only "> 0" matters there).
    """

    def __init__(self, path: str | Path, role: str = "prediction") -> None:
        self.path = str(path)
        self.role = role
        self.ds = open_dataset(path)
        try:
            self.grid = self._check()
            self.dtype = np.dtype(self.ds.dtypes[0])
            self.scale = 1.0 if role == "ignore" else self._decide_scale()
        except BaseException:
            self.ds.close()
            raise

    def __enter__(self) -> RasterLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ds.close()

    def _check(self) -> GridSpec:
        ds = self.ds
        try:
            width, height, count = ds.width, ds.height, ds.count
            if width < 1 or height < 1 or count < 1:
                raise InputError(f"{self.path}: raster is empty ({width}x{height}, "
                                 f"{count} bands)")
            if width * height > MAX_PIXELS:
                raise InputError(
                    f"{self.path}: {width} x {height} pixels ({width * height:.2g}) is more than "
                    f"evaluate takes ({MAX_PIXELS:.2g}, e.g. 262144 x 262144); cut it into "
                    "tiles and score them with --pairs")
            if np.dtype(ds.dtypes[0]).kind == "c":
                raise InputError(f"{self.path}: complex-valued band ({ds.dtypes[0]}) is not a "
                                 "mask or probability")
            transform = ds.transform
            georef = ds.crs is not None and transform != Affine.identity()
            if georef and (transform.determinant == 0
                           or not all(math.isfinite(v) for v in transform[:6])):
                raise InputError(f"{self.path}: geotransform {transform.to_gdal()} has a zero "
                                 "or non-finite pixel size")
            crs = ds.crs if georef else None
        except RasterioError as exc:
            raise InputError(f"{self.path}: cannot read raster header "
                             f"({gdal_reason(exc)})") from None
        check_blocks_readable(ds)
        return GridSpec(self.path, width, height, transform, crs)

    def _decide_scale(self) -> float:
        if self.dtype.kind == "f":
            return 1.0
        for row0 in range(0, self.grid.height, _SCAN):
            for col0 in range(0, self.grid.width, _SCAN):
                raw, valid = self._raw(col0, row0, min(_SCAN, self.grid.width - col0),
                                       min(_SCAN, self.grid.height - row0))
                if np.any(raw[valid] > 1):
                    return 255.0 if self.dtype == np.uint8 else float(np.iinfo(self.dtype).max)
        return 1.0

    def _raw(self, col0: int, row0: int, width: int, height: int,
             out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        window = Window(col0, row0, width, height)
        kw = {} if out_shape is None else {"out_shape": out_shape,
                                           "resampling": Resampling.nearest}
        try:
            raw = self.ds.read(1, window=window, **kw)
            valid = read_masks(self.ds, 1, window=window, **kw) > 0
        except (RasterioError, CPLE_BaseError) as exc:
            raise InputError(f"{self.path}: cannot read pixels at col {col0} row {row0} "
                             f"({gdal_reason(exc)}); the file is truncated or corrupt") from None
        if raw.dtype.kind == "f":
            valid &= np.isfinite(raw)
        return raw, valid

    def read(self, col0: int, row0: int, width: int, height: int,
             out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(values in [0, 1], valid) of a rectangle; beyond the raster 0 and invalid.

        ``out_shape`` reads the rectangle (which must lie inside) decimated, nearest neighbour.
        """
        if out_shape is not None:
            raw, valid = self._raw(col0, row0, width, height, out_shape)
            return self._scaled(raw, valid, col0, row0), valid
        values = np.zeros((height, width), np.float32)
        valid = np.zeros((height, width), bool)
        rect = clip_rect(col0, row0, width, height, self.grid.width, self.grid.height)
        if rect is not None:
            c0, r0, c1, r1 = rect
            raw, ok = self._raw(c0, r0, c1 - c0, r1 - r0)
            dst = (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))
            values[dst] = self._scaled(raw, ok, c0, r0)
            valid[dst] = ok
        return values, valid

    def _scaled(self, raw: np.ndarray, valid: np.ndarray, col0: int, row0: int) -> np.ndarray:
        if raw.dtype.kind != "f":
            out = raw.astype(np.float32)
            return out if self.scale == 1.0 else (out / np.float32(self.scale)).clip(0.0, 1.0)
        if self.role != "ignore" and valid.any():
            sample = raw[valid]
            lo, hi = float(sample.min()), float(sample.max())
            if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
                raise InputError(
                    f"{self.path}: a float {self.role} raster must hold values in [0, 1], found "
                    f"{lo:g} to {hi:g} (near col {col0} row {row0}); rescale it (e.g. divide by "
                    "255) or store it as an integer type")
        return np.where(valid, raw, 0).astype(np.float32).clip(0.0, 1.0)

    @property
    def pixel_size_m(self) -> tuple[float, float] | None:
        """True pixel size in metres at the centre; None without georeferencing."""
        grid = self.grid
        if grid.crs is None:
            return None
        try:
            size = pixel_size_m(grid.crs, grid.transform, grid.width, grid.height)
        except Exception as exc:  # noqa: BLE001 - PROJ cannot measure this CRS
            raise InputError(f"{self.path}: cannot measure pixels in metres in its CRS "
                             f"({one_line(exc)})") from None
        if not all(math.isfinite(v) and v > 0 for v in size):
            raise InputError(f"{self.path}: pixel size in metres is {size}; the "
                             "georeferencing is wrong")
        return size


def align(source: RasterLayer, grid: GridSpec) -> Layer:
    """``source`` on ``grid``'s pixels (nearest neighbour); pixels it does not cover are invalid.

    Both must be georeferenced, or neither (then the sizes must match, pixel for pixel).
    """
    src = source.grid
    if src.crs is None and grid.crs is None:
        if src.shape != grid.shape:
            raise InputError(f"{src.path} ({src.width}x{src.height}) and {grid.path} "
                             f"({grid.width}x{grid.height}) have no georeferencing and different "
                             "sizes; cannot align them")
        return source
    if src.crs is None or grid.crs is None:
        plain, geo = (src, grid) if src.crs is None else (grid, src)
        raise InputError(f"{plain.path} has no georeferencing while {geo.path} is in "
                         f"{geo.crs.to_string()}; cannot align them")  # type: ignore[union-attr]
    if src.crs == grid.crs and src.transform == grid.transform and src.shape == grid.shape:
        return source
    try:
        src_bounds = rasterio.warp.transform_bounds(src.crs, grid.crs, *src.bounds)
    except Exception as exc:  # noqa: BLE001 - PROJ cannot relate the two CRSs
        raise InputError(f"{src.path} cannot be placed in the CRS of {grid.path} "
                         f"({one_line(exc)})") from None
    check_overlap(src_bounds, grid.bounds, src.path, grid.path)
    return WarpedLayer(source, grid)


def lines_layer(path: str | Path, grid: GridSpec, width_m: float,
                drop: frozenset[str] = frozenset()) -> tuple[ShapesLayer, Dropped]:
    """Lines of ``path`` buffered to a road ``width_m`` metres wide, to burn onto ``grid``.

    Buffered and burnt by the training labels' code (:func:`roadprn.raster.labels.buffer_lines`
    in the grid's local metric CRS, so the width is true metres whatever the grid's CRS), so
    truth from a GeoPackage is the mask a training run would make of it. Features whose
    ``highway`` value is in ``drop`` are left out and returned as a :class:`Dropped` summary.
    """
    if grid.crs is None:
        raise InputError(f"{grid.path} has no georeferencing; cannot place the lines of {path} "
                         "on it")
    lines, values = read_road_lines(path)
    lines, dropped_lines, dropped_values = split_non_roads(lines, values, drop)
    dropped = Dropped()
    if len(dropped_lines):
        metric = to_metric(dropped_lines, local_utm_crs(dropped_lines), path)
        dropped = summarise(metric.values, dropped_values)
    if not len(lines):
        return ShapesLayer(np.empty(0, dtype=object), grid), dropped
    on_grid = reproject_geoms(lines, grid.crs, path)
    check_overlap(finite_bounds(on_grid, path), grid.bounds, str(path), grid.path)
    scene = SceneGrid(grid.transform, grid.width, grid.height, grid.crs)
    try:
        buffered = buffer_lines(lines, scene, width_m, str(path))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - PROJ cannot relate the CRSs
        raise InputError(f"{path}: cannot buffer the lines in metres ({one_line(exc, 160)})") \
            from None
    finite_bounds(buffered, path)
    return ShapesLayer(np.asarray(buffered.values), grid), dropped


def ignore_shapes(path: str | Path, grid: GridSpec) -> ShapesLayer:
    """Polygons of a vector ignore mask, to burn onto ``grid`` (a raster mask: RasterLayer)."""
    if grid.crs is None:
        raise InputError(f"{path}: a vector ignore mask needs a georeferenced prediction")
    if not Path(path).exists():
        raise InputError(f"{path}: no such file")
    try:
        with ogr_path(path) as name:
            gdf = gpd.read_file(name, engine="pyogrio")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: not a readable vector file ({gdal_reason(exc)})") from None
    geoms = gdf.geometry[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    if not len(geoms):
        return ShapesLayer(np.empty(0, dtype=object), grid)
    if gdf.crs is None:
        raise InputError(f"{path}: vector file has no CRS")
    _check_coordinates(Path(path), gpd.GeoSeries(geoms, crs=gdf.crs))
    on_grid = reproject_geoms(geoms, grid.crs, path)
    finite_bounds(on_grid, path)
    return ShapesLayer(np.asarray(on_grid.values), grid)


def to_unit_interval(data: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Masks and probabilities as float32 in [0, 1] (the rule :class:`RasterLayer` applies).

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


def check_image(path: str | Path, shape: tuple[int, int]) -> None:
    """Fail before any work when the overlay image is unreadable or on another grid."""
    with open_raster(path) as ds:
        if (ds.height, ds.width) != tuple(shape):
            raise InputError(f"{path}: image is {ds.width}x{ds.height}, prediction is "
                             f"{shape[1]}x{shape[0]}; the overlay needs the same grid")
        check_blocks_readable(ds)


def read_image_rgb(path: str | Path, shape: tuple[int, int],
                   out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Up to three bands stretched to 0-255 (2-98 %) for overlays, read at ``out_shape``.

    The image must have the grid's ``shape``; it is read decimated (nearest) to ``out_shape``
    so that memory follows the figure, not the scene.
    """
    out_shape = (int((out_shape or shape)[0]), int((out_shape or shape)[1]))
    with open_raster(path) as ds:
        try:
            if (ds.height, ds.width) != tuple(shape):
                raise InputError(f"{path}: image is {ds.width}x{ds.height}, prediction is "
                                 f"{shape[1]}x{shape[0]}; the overlay needs the same grid")
            bands = [1, 2, 3] if ds.count >= 3 else [1]
            data = ds.read(bands, out_shape=(len(bands), *out_shape),
                           resampling=Resampling.nearest).astype(np.float32)
            valid = read_masks(ds, 1, out_shape=out_shape, resampling=Resampling.nearest) > 0
        except (RasterioError, CPLE_BaseError) as exc:
            raise InputError(f"{path}: cannot read the overlay image ({gdal_reason(exc)}); the "
                             "file is truncated or corrupt") from None
    out = np.empty_like(data)
    for i, band in enumerate(data):
        finite = valid & np.isfinite(band)
        sample = band[finite] if finite.any() else band[np.isfinite(band)]
        lo, hi = np.percentile(sample, [2, 98]) if sample.size else (0.0, 1.0)
        out[i] = np.clip((np.nan_to_num(band) - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.moveaxis(out, 0, -1)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return (rgb * 255).astype(np.uint8)
