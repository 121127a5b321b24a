"""Road labels -> binary masks on a scene's pixel grid.

Two kinds of label:

* centrelines (GeoJSON, GeoPackage, Shapefile, ...; LineString / MultiLineString; any CRS),
  buffered to a road width in metres and rasterised;
* mask rasters ({0,1}, {0,255}, soft 0..255, 3-channel like DeepGlobe's, float 0..1).

Buffering happens in a local metric CRS (UTM of the scene centre), never in degrees or pixels,
so a 4 m road is 4 m wide on a UTM scene, a geographic scene (where pixels are not square in
metres) and a custom projection alike. With ``width_m=4`` this reproduces solaris'
``road_mask(width=4, meters=True)`` exactly on the SpaceNet Vegas sample (IoU 1.0): solaris also
buffers by width / 2 in UTM with shapely's default round caps and burns pixels whose *centre*
falls inside the buffer (rasterio ``all_touched=False``). ``all_touched=True`` would add about
one pixel on each side (IoU 0.93 there).

Masks are returned as uint8 arrays with 1 = road, 0 = background. Every function accepts a
``window`` so training can cut chips out of large scenes without rasterising them whole.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.windows
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from roadprn.errors import InputError, one_line
from roadprn.outputs.atomic import ogr_path
from roadprn.raster.gdal_env import read_masks
from roadprn.raster.geometry import metric_crs_at
from roadprn.raster.masks import is_road
from roadprn.raster.scene import data_bands, open_raster

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb", ".gml", ".kml", ".sqlite"}
LINE_TYPES = {"LineString", "MultiLineString"}


@dataclass(frozen=True)
class SceneGrid:
    """The pixel grid labels are rasterised on: what a scene's profile says, nothing more."""

    transform: Affine
    width: int
    height: int
    crs: CRS | None

    def __post_init__(self) -> None:
        if self.crs is not None and not isinstance(self.crs, CRS):  # e.g. a rasterio CRS
            object.__setattr__(self, "crs", CRS.from_user_input(self.crs.to_wkt()))

    @classmethod
    def from_raster(cls, path: str | Path) -> SceneGrid:
        with open_raster(path) as ds:
            georeferenced = ds.crs is not None and ds.transform != Affine.identity()
            crs = CRS.from_user_input(ds.crs.to_wkt()) if georeferenced else None
            return cls(ds.transform, ds.width, ds.height, crs)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in the grid's CRS."""
        return _grid_bounds(self)

    def window(self, window: Window | None) -> SceneGrid:
        """The sub-grid of a window (the whole grid for None)."""
        if window is None:
            return self
        window = window.round_offsets().round_lengths()
        return SceneGrid(
            rasterio.windows.transform(window, self.transform),
            int(window.width),
            int(window.height),
            self.crs,
        )


def _grid_bounds(grid: SceneGrid) -> tuple[float, float, float, float]:
    xs, ys = zip(
        *(grid.transform * (c, r) for c in (0, grid.width) for r in (0, grid.height)),
        strict=True,
    )
    return min(xs), min(ys), max(xs), max(ys)


# --------------------------------------------------------------------------- vector labels


def read_centrelines(
    path: str | Path, layer: str | None = None, crs: str | None = None
) -> gpd.GeoDataFrame:
    """Road centrelines from a vector file, checked: CRS present and plausible, lines only.

    ``crs`` overrides a missing or wrong CRS in the file (e.g. ``"EPSG:32611"``).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"labels file not found: {path}")
    try:
        with ogr_path(path) as name:
            frame = gpd.read_file(name, layer=layer, engine="pyogrio")
    except Exception as exc:  # noqa: BLE001 - pyogrio/GDAL errors of a bad file
        reason = one_line(exc)
        raise InputError(f"cannot read labels {path}: {reason}") from exc
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise InputError(f"labels {path} contain no geometries")
    if crs is not None:
        frame = frame.set_crs(crs, allow_override=True)
    if frame.crs is None:
        raise InputError(f"labels {path} have no CRS; state it (e.g. crs='EPSG:4326')")
    check_crs_plausible(frame, str(path))
    types = set(frame.geom_type)
    if not types & LINE_TYPES:
        raise InputError(
            f"labels {path} hold {', '.join(sorted(types))} geometries, not road centrelines"
            " (LineString / MultiLineString)"
        )
    return frame[frame.geom_type.isin(LINE_TYPES)]


def check_crs_plausible(frame: gpd.GeoDataFrame, name: str) -> None:
    """InputError when coordinates cannot be in the declared CRS (metres declared as degrees)."""
    xmin, ymin, xmax, ymax = frame.total_bounds
    crs = CRS.from_user_input(frame.crs)
    if crs.is_geographic:
        if not (-180.0 <= xmin and xmax <= 360.0 and -90.0 <= ymin and ymax <= 90.0):
            raise InputError(
                f"labels {name} declare the geographic CRS {crs.name} but their coordinates "
                f"({xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g}) are not longitudes/latitudes;"
                " the file's CRS is wrong: state the right one"
            )
        return
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lons, lats = to_lonlat.transform([xmin, xmax, xmin, xmax], [ymin, ymin, ymax, ymax])
    if not np.all(np.isfinite(lons) & np.isfinite(lats)):
        raise InputError(
            f"labels {name}: coordinates ({xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g}) lie "
            f"outside the declared CRS {crs.name}; the file's CRS is wrong: state the right one"
        )


def local_metric_crs(grid: SceneGrid) -> CRS:
    """The local metric CRS (:func:`~roadprn.raster.geometry.metric_crs_at`) of the scene
    centre."""
    if grid.crs is None:
        raise InputError("the scene has no CRS, so labels in map coordinates cannot be placed")
    cx, cy = grid.transform * (grid.width / 2, grid.height / 2)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise InputError(f"the scene centre ({cx:.6g}, {cy:.6g}) is outside its CRS")
    return metric_crs_at(lon, lat)


def buffer_centrelines(
    lines: gpd.GeoDataFrame,
    grid: SceneGrid,
    width_m: float | None = 4.0,
    width_attribute: str | None = None,
    metres_per_unit: float = 1.0,
    name: str = "labels",
) -> gpd.GeoSeries:
    """Road polygons in the grid's CRS: each line buffered to its full road width in metres.

    Width per feature is ``attribute * metres_per_unit`` when ``width_attribute`` is given (e.g.
    ``lane_number`` with 3.5 m per lane), falling back to ``width_m`` where the attribute is
    missing or not positive.
    """
    widths = _feature_widths(lines, width_m, width_attribute, metres_per_unit, name)
    buffered = buffer_lines(lines.geometry, grid, widths, name)
    check_overlap(buffered, grid, name)
    return buffered


def buffer_lines(lines: gpd.GeoSeries, grid: SceneGrid, widths: float | np.ndarray,
                 name: str = "labels") -> gpd.GeoSeries:
    """Lines buffered to their full ``widths`` (metres) in the grid's local metric CRS (round
    caps), returned in the grid's CRS. Training labels and evaluation truth both come from
    here, so the same GeoPackage gives the same road polygons (and, burnt by :func:`burn`, the
    same pixels) whichever command reads it."""
    metric = local_metric_crs(grid)
    projected = lines.to_crs(metric)
    bounds = projected.total_bounds
    if len(projected) and not np.isfinite(bounds).all():
        raise InputError(f"{name}: coordinates cannot be reprojected to the scene's local metric "
                         f"CRS {_crs_text(metric)} (they lie outside the area it covers); the "
                         "file's CRS is wrong")
    return gpd.GeoSeries(projected.buffer(np.asarray(widths) / 2.0).values,
                         crs=metric).to_crs(grid.crs)


def _feature_widths(
    lines: gpd.GeoDataFrame,
    width_m: float | None,
    attribute: str | None,
    metres_per_unit: float,
    name: str,
) -> np.ndarray:
    fallback = np.nan if width_m is None else float(width_m)
    if width_m is not None and width_m <= 0:
        raise InputError(f"road width must be positive, got {width_m} m")
    if attribute is None:
        if width_m is None:
            raise InputError("give a road width in metres or an attribute to read it from")
        return np.full(len(lines), fallback)
    if attribute not in lines.columns:
        raise InputError(f"labels {name} have no attribute {attribute!r} to take road widths from")
    values = pd.to_numeric(lines[attribute], errors="coerce").to_numpy(float) * metres_per_unit
    widths = np.where(np.isfinite(values) & (values > 0), values, fallback)
    missing = int(np.isnan(widths).sum())
    if missing:
        raise InputError(
            f"labels {name}: {missing} feature(s) lack a positive {attribute!r}; give width_m as"
            " a fallback"
        )
    return widths


def check_overlap(geometries: gpd.GeoSeries, grid: SceneGrid, name: str = "labels") -> None:
    """InputError when no label touches the scene (wrong file, wrong CRS, wrong scene)."""
    scene = box(*grid.bounds)
    if not geometries.intersects(scene).any():
        xmin, ymin, xmax, ymax = geometries.total_bounds
        sxmin, symin, sxmax, symax = grid.bounds
        raise InputError(
            f"{name} (bounds {xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g}) do not overlap the"
            f" scene (bounds {sxmin:.6g}, {symin:.6g}, {sxmax:.6g}, {symax:.6g}) in"
            f" {_crs_text(grid.crs)}"
        )


def _crs_text(crs: CRS | None) -> str:
    if crs is None:
        return "pixel coordinates"
    authority = crs.to_authority()
    return f"{authority[0]}:{authority[1]}" if authority else crs.name


def rasterise(polygons: gpd.GeoSeries, grid: SceneGrid, window: Window | None = None) -> np.ndarray:
    """uint8 mask (1 inside a polygon) of the grid or one window of it.

    A pixel is road when its centre is inside a polygon (``all_touched=False``), as in solaris.
    """
    sub = grid.window(window)
    candidates = polygons.iloc[polygons.sindex.query(box(*sub.bounds))]
    return burn(candidates, sub.transform, (sub.height, sub.width))


def burn(polygons: Iterable[BaseGeometry], transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (rows, cols) mask placed by ``transform``: 1 where a pixel's centre is inside one of
    ``polygons`` (``all_touched=False``, as in solaris). The one rasteriser of road polygons:
    labels and evaluation's truth and ignore layers burn through it."""
    mask = np.zeros(shape, dtype=np.uint8)
    shapes = [(geom, 1) for geom in polygons]
    if shapes:
        rasterio.features.rasterize(shapes, out=mask, transform=transform, all_touched=False)
    return mask


def centrelines_to_mask(
    labels: str | Path | gpd.GeoDataFrame,
    grid: SceneGrid,
    width_m: float | None = 4.0,
    width_attribute: str | None = None,
    metres_per_unit: float = 1.0,
    window: Window | None = None,
    crs: str | None = None,
) -> np.ndarray:
    """Read (if a path), buffer in metres and rasterise road centrelines on ``grid``."""
    if isinstance(labels, gpd.GeoDataFrame):
        name = "labels"
        if labels.crs is None:
            raise InputError("labels have no CRS; state it (e.g. crs='EPSG:4326')")
        check_crs_plausible(labels, name)
        lines = labels[labels.geom_type.isin(LINE_TYPES)]
    else:
        name = f"labels {labels}"
        lines = read_centrelines(labels, crs=crs)
    polygons = buffer_centrelines(lines, grid, width_m, width_attribute, metres_per_unit, name)
    return rasterise(polygons, grid, window)


# --------------------------------------------------------------------------- raster labels


def read_mask_labels(
    path: str | Path,
    grid: SceneGrid,
    window: Window | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """A road mask raster on ``grid`` as uint8 {0, 1}; a pixel is road if any band > threshold.

    ``threshold`` None picks one from the data: 0.5 for float masks (probabilities), 127 for
    integer masks whose values exceed 1 ({0,255}, soft 0..255), 0 for {0,1} masks. Alpha bands
    are ignored. Georeferenced masks on another grid are resampled (nearest) onto ``grid``;
    masks without georeferencing (PNG, JPEG) must have the scene's size and are paired by pixel.
    """
    sub = grid.window(window)
    with open_raster(path) as ds:
        bands = list(data_bands(ds))
        ds_nodata = ds.nodata
        if threshold is None:
            threshold = _default_threshold(ds, bands)
        with _on_grid(ds, grid, path) as source:
            read_window = window.round_offsets().round_lengths() if window is not None else None
            data = source.read(
                bands,
                window=read_window,
                out_shape=(len(bands), sub.height, sub.width),
                boundless=read_window is not None and source is ds,
                fill_value=0,
            )
    road = is_road(data, threshold).any(axis=0)
    if ds_nodata is not None:  # nodata is "not labelled", never road
        road &= ~(data == ds_nodata).all(axis=0)
    return road.astype(np.uint8)


@contextlib.contextmanager
def _on_grid(
    ds: rasterio.io.DatasetReader, grid: SceneGrid, path: str | Path
) -> Iterator[rasterio.io.DatasetReader | WarpedVRT]:
    """The mask dataset itself when it matches the grid, else a WarpedVRT onto the grid."""
    georeferenced = ds.crs is not None and ds.transform != Affine.identity()
    same_shape = (ds.width, ds.height) == (grid.width, grid.height)
    if not georeferenced or grid.crs is None:
        if not same_shape:
            raise InputError(
                f"mask {path} is {ds.width}x{ds.height} px without georeferencing but the"
                f" scene is {grid.width}x{grid.height} px; they must match pixel for pixel"
            )
        yield ds
        return
    if (
        same_shape
        and CRS.from_user_input(ds.crs.to_wkt()) == grid.crs
        and ds.transform.almost_equals(grid.transform)
    ):
        yield ds
        return
    mask_bounds = gpd.GeoSeries([box(*ds.bounds)], crs=ds.crs.to_wkt())
    check_overlap(mask_bounds.to_crs(grid.crs), grid, f"mask {path}")
    with WarpedVRT(
        ds,
        crs=grid.crs.to_wkt(),
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling.nearest,
        nodata=0,
    ) as vrt:
        yield vrt


def _default_threshold(ds: rasterio.io.DatasetReader, bands: list[int]) -> float:
    """Nodata pixels do not count: a {0,1} mask with nodata 255 is still a {0,1} mask."""
    if np.dtype(ds.dtypes[bands[0] - 1]).kind == "f":
        return 0.5
    for _, block in ds.block_windows(bands[0]):
        values = ds.read(bands, window=block)
        valid = read_masks(ds, bands, window=block) > 0
        if (values[valid] > 1).any():
            return 127.0
    return 0.0


def is_vector_labels(path: str | Path) -> bool:
    """Whether a labels path is a vector file (by suffix); anything else is read as a raster."""
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def labels_to_mask(
    path: str | Path,
    grid: SceneGrid,
    width_m: float | None = 4.0,
    width_attribute: str | None = None,
    metres_per_unit: float = 1.0,
    window: Window | None = None,
    threshold: float | None = None,
    crs: str | None = None,
) -> np.ndarray:
    """The road mask of any supported labels file on ``grid`` (vector or raster)."""
    if is_vector_labels(path):
        return centrelines_to_mask(
            path, grid, width_m, width_attribute, metres_per_unit, window=window, crs=crs
        )
    return read_mask_labels(path, grid, window=window, threshold=threshold)
