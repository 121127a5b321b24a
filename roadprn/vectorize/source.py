"""Where the tiled vectoriser reads road pixels from: a raster file (by windows) or an array.

A file source is small and picklable so Dask workers open the raster and read their own window;
the scene never travels between processes and is never held whole in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from roadprn.errors import InputError
from roadprn.raster.gdal_env import bounded_gdal_cache, read_masks
from roadprn.raster.masks import is_road
from roadprn.raster.scene import open_dataset

RasterKind = Literal["mask", "prob"]
SCAN_PIXELS = 1 << 20  # per window of the value scan
SCAN_MIN_ROWS = 64  # rows of strip-organised rasters read together
SCAN_GDAL_CACHE_MB = 8  # blocks are decoded once; the cache only needs one window's worth


@dataclass(frozen=True)
class TilePixels:
    """One window: road pixels (bool) and, for probability rasters, p in [0, 1] (else None)."""

    road: np.ndarray
    prob: np.ndarray | None


class RoadSource(Protocol):
    """Anything that can hand out windows of road pixels with their georeferencing."""

    # read-only: frozen dataclasses and properties both qualify
    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def transform(self) -> Affine: ...

    @property
    def crs(self) -> CRS | None: ...

    @property
    def name(self) -> str: ...

    def read(self, row: int, col: int, height: int, width: int) -> TilePixels: ...


@dataclass(frozen=True)
class ArraySource:
    """An in-memory road mask (and optional probability) — for tests, notebooks and baselines."""

    road: np.ndarray
    transform: Affine
    crs: CRS | None
    prob: np.ndarray | None = None
    name: str = "array"

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.road.shape[0]), int(self.road.shape[1]))

    def read(self, row: int, col: int, height: int, width: int) -> TilePixels:
        sl = (slice(row, row + height), slice(col, col + width))
        prob = None if self.prob is None else np.asarray(self.prob[sl], dtype=np.float32)
        return TilePixels(road=np.asarray(self.road[sl], dtype=bool), prob=prob)


@dataclass(frozen=True)
class FileSource:
    """A mask or probability GeoTIFF read by windows; nodata (and internal masks) are not road."""

    path: str
    kind: RasterKind
    scale: float  # divide raw values by this to get probability in [0, 1]
    threshold: float
    shape: tuple[int, int]
    transform: Affine
    crs: CRS | None
    name: str

    def read(self, row: int, col: int, height: int, width: int) -> TilePixels:
        window = Window(col, row, width, height)
        with open_dataset(self.path) as ds:
            raw = ds.read(1, window=window)
            valid = read_masks(ds, 1, window=window) > 0
        if self.kind == "mask":
            return TilePixels(road=(raw > 0) & valid, prob=None)
        prob = raw.astype(np.float32) / np.float32(self.scale)
        prob[~valid] = np.nan
        return TilePixels(road=valid & is_road(prob, self.threshold), prob=prob)


@dataclass(frozen=True)
class MaskProbabilitySource:
    """``extract``'s outputs: geometry from the (refined) mask, attributes from the probability.

    Both rasters share one grid; the mask's nodata and the probability's mask are not road.
    """

    mask_path: str
    prob_path: str | None
    shape: tuple[int, int]
    transform: Affine
    crs: CRS | None
    name: str

    @classmethod
    def from_paths(cls, mask_path: str | Path, prob_path: str | Path | None,
                   name: str) -> MaskProbabilitySource:
        with rasterio.open(mask_path) as ds:
            shape, transform, crs = (ds.height, ds.width), ds.transform, ds.crs
        if crs is None:
            raise InputError(f"{mask_path} has no CRS; vectorising needs georeferenced pixels")
        return cls(str(mask_path), str(prob_path) if prob_path else None, shape, transform, crs,
                   name)

    def read(self, row: int, col: int, height: int, width: int) -> TilePixels:
        window = Window(col, row, width, height)
        with rasterio.open(self.mask_path) as ds:
            road = (ds.read(1, window=window) == 1) & (read_masks(ds, 1, window=window) > 0)
        prob = None
        if self.prob_path is not None:
            with rasterio.open(self.prob_path) as ds:
                prob = ds.read(1, window=window).astype(np.float32) / np.float32(255.0)
                prob[read_masks(ds, 1, window=window) == 0] = np.nan
        return TilePixels(road=road, prob=prob)


def open_source(path: str | Path, threshold: float) -> FileSource:
    """Open a mask or probability raster and decide which it is from its values.

    uint8 {0,1} or {0,255} is a mask; other uint8 is probability v/255; float in [0, 1] is
    probability (or a mask when only 0 and 1 occur). Anything else is refused.
    """
    path = Path(path)
    # open_dataset: one-line errors, no network reached
    with bounded_gdal_cache(SCAN_GDAL_CACHE_MB), open_dataset(path) as ds:
        if ds.crs is None:
            raise InputError(f"{path} has no CRS; vectorising needs georeferenced pixels")
        if ds.count < 1:
            raise InputError(f"{path} has no bands")
        dtype = np.dtype(ds.dtypes[0])
        seen, lo, hi, n_valid = _scan_values(ds)
    if n_valid == 0:
        raise InputError(f"{path} is all nodata; nothing to vectorise")
    only = set(seen) if seen is not None else None
    if only is not None and (only <= {0, 1} or only <= {0, 255}):
        kind: RasterKind = "mask"
        scale = 1.0
    elif dtype == np.uint8:
        kind, scale = "prob", 255.0
    elif dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        kind, scale = "prob", 1.0
    else:
        raise InputError(
            f"{path}: values {lo:g}..{hi:g} ({dtype}) are neither a road mask ({{0,1}} or "
            "{0,255}) nor a probability (uint8 0-255 or float 0-1)")
    return FileSource(path=str(path), kind=kind, scale=scale, threshold=threshold,
                      shape=(ds.height, ds.width), transform=ds.transform, crs=ds.crs,
                      name=path.stem)


def scan_windows(height: int, width: int, block_shape: tuple[int, int],
                 max_pixels: int = SCAN_PIXELS) -> Iterator[Window]:
    """Block-aligned windows covering the raster, each ≲ ``max_pixels``, in row-major order.

    Each block is decoded exactly once, so the scan needs no block cache; whole-row strips of a
    wide raster held ~30 MB of arrays and filled a 64 MB cache at 16384².
    """
    block_h, block_w = block_shape
    if block_h * block_w > max_pixels:  # huge blocks (one strip for the whole image): rows
        rows, cols = max(1, max_pixels // width), width
    else:
        rows = block_h * max(1, SCAN_MIN_ROWS // block_h)  # group thin strips
        cols = block_w * max(1, max_pixels // (rows * block_w))
    for row in range(0, height, rows):
        for col in range(0, width, cols):
            yield Window(col, row, min(cols, width - col), min(rows, height - row))


def _scan_values(ds: rasterio.DatasetReader) -> tuple[list[float] | None, float, float, int]:
    """Distinct values (when few), min, max and count of valid pixels, read window by window."""
    distinct: set[float] | None = set()
    lo, hi, n_valid = np.inf, -np.inf, 0
    all_valid = ds.mask_flag_enums[0] == [MaskFlags.all_valid]
    for window in scan_windows(ds.height, ds.width, ds.block_shapes[0]):
        values = ds.read(1, window=window)
        if not all_valid:
            values = values[read_masks(ds, 1, window=window) > 0]
        if values.size == 0:
            continue
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
        n_valid += int(values.size)
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        if distinct is not None:
            if values.dtype == np.uint8:
                counts = np.bincount(values.ravel(), minlength=256)
                distinct.update(float(v) for v in np.flatnonzero(counts))
            else:
                distinct.update(float(v) for v in np.unique(values)[:3])
            if len(distinct) > 2:
                distinct = None
    return (sorted(distinct) if distinct is not None else None), lo, hi, n_valid
