"""Pixel metrics window by window, so memory is set by the window size and not by the scene.

A scene is cut into core windows; each layer (prediction, truth, ignore mask) is read for the
core grown by a halo of the relaxation radius, so relaxed precision/recall see every pixel
within the tolerance and the counts equal those of the whole image at once. Confusion counts,
relaxed counts, sweep histograms and per-patch sums are added up; the overlay keeps only
every ``stride``-th pixel (at most :data:`PLOT_SIDE` per side).

Layers return ``(values, valid)`` for any pixel rectangle of the grid, also one reaching beyond
its edges (there: 0 and invalid):

* :class:`ArrayLayer`: arrays in memory (tests, small data);
* :class:`RasterLayer`: band 1 of a raster file on the grid itself, scaled to [0, 1];
* :class:`WarpedLayer`: a raster on another grid, reprojected per window (nearest neighbour);
* :class:`ShapesLayer`: polygons burnt onto the grid per window (buffered lines, ignore areas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from rasterio.crs import CRS as RioCRS
from rasterio.enums import Resampling

from roadprn.errors import ConfigError
from roadprn.evaluate.pixel import PixelCounts, RelaxedCounts
from roadprn.raster.labels import burn
from roadprn.raster.masks import counts_above, is_road

#: truth values (0..1) above this are road, as in :func:`roadprn.raster.labels.read_mask_labels`
TRUTH_THRESHOLD = 0.5
#: core window side in pixels (the halo comes on top)
WINDOW = 1024
#: the largest relaxation radius in pixels; beyond it a window's halo would dwarf its core
MAX_HALO = 512
#: the per-patch IoU grid and the overlay keep at most this many cells / pixels per side
PLOT_SIDE = 2048
MAX_PATCHES = PLOT_SIDE * PLOT_SIDE


@dataclass(frozen=True)
class GridSpec:
    """The pixel grid metrics are computed on (the prediction's, or the truth's for lines)."""

    path: str
    width: int
    height: int
    transform: Affine
    crs: RioCRS | None  # None: no georeferencing (pixel for pixel only)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def window_transform(self, col0: int, row0: int) -> Affine:
        return self.transform * Affine.translation(col0, row0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return corner_bounds(self.transform, self.shape)


def corner_bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a ``shape`` (rows, cols) raster placed by ``transform``."""
    xs, ys = zip(*(transform * (c, r) for c, r in ((0, 0), (shape[1], 0), (0, shape[0]),
                                                  (shape[1], shape[0]))), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


class Layer(Protocol):
    """Anything that yields values in [0, 1] and validity for a rectangle of the grid."""

    def read(self, col0: int, row0: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(values float32, valid bool), both (height, width); outside the grid 0 and invalid."""
        ...


def clip_rect(col0: int, row0: int, width: int, height: int, grid_w: int,
              grid_h: int) -> tuple[int, int, int, int] | None:
    """The part (c0, r0, c1, r1) of a rectangle inside a grid, or None if it lies outside."""
    c0, r0 = max(col0, 0), max(row0, 0)
    c1, r1 = min(col0 + width, grid_w), min(row0 + height, grid_h)
    return None if c1 <= c0 or r1 <= r0 else (c0, r0, c1, r1)


class ArrayLayer:
    """Arrays held in memory; used by tests to compare against whole-array metrics."""

    def __init__(self, values: np.ndarray, valid: np.ndarray | None = None) -> None:
        self.values = np.asarray(values, dtype=np.float32)
        self.valid = (np.ones(self.values.shape, bool) if valid is None
                      else np.asarray(valid, dtype=bool))

    def read(self, col0: int, row0: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        values = np.zeros((height, width), np.float32)
        valid = np.zeros((height, width), bool)
        rect = clip_rect(col0, row0, width, height, self.values.shape[1], self.values.shape[0])
        if rect is not None:
            c0, r0, c1, r1 = rect
            dst = (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))
            values[dst] = self.values[r0:r1, c0:c1]
            valid[dst] = self.valid[r0:r1, c0:c1]
        return values, valid


class ShapesLayer:
    """Polygons (in the grid's CRS) burnt as 1 on the grid, window by window (by the labels'
    rasteriser, :func:`roadprn.raster.labels.burn`: a pixel whose centre is inside).

    Only the polygons whose bounding box meets the window are rasterised there, so a window
    costs what it contains. Inside the grid every pixel is valid.
    """

    def __init__(self, polygons: np.ndarray, grid: GridSpec) -> None:
        geoms = np.asarray(polygons, dtype=object)
        self.geoms = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))] \
            if geoms.size else geoms
        self.tree = shapely.STRtree(self.geoms)
        self.grid = grid

    def read(self, col0: int, row0: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        valid = np.zeros((height, width), bool)
        rect = clip_rect(col0, row0, width, height, self.grid.width, self.grid.height)
        if rect is not None:
            c0, r0, c1, r1 = rect
            valid[r0 - row0:r1 - row0, c0 - col0:c1 - col0] = True
        transform = self.grid.window_transform(col0, row0)
        hits = self.tree.query(shapely.box(*corner_bounds(transform, (height, width))))
        if not hits.size:
            return np.zeros((height, width), np.float32), valid
        burnt = burn(self.geoms[np.sort(hits)], transform, (height, width))
        return (burnt & valid).astype(np.float32), valid


class SourceRaster(Protocol):
    """A raster layer on its own grid (what :class:`WarpedLayer` reprojects)."""

    grid: GridSpec

    def read(self, col0: int, row0: int, width: int, height: int,
             out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class WarpedLayer:
    """A raster on another grid, reprojected onto this one window by window (nearest).

    For each window the source pixels under it (plus 2 px) are read and warped with an exact
    transformer, so the result equals a reprojection of the whole raster. A source much finer
    than the grid (over 4x per axis) is read decimated, keeping memory bounded.
    """

    def __init__(self, source: SourceRaster, grid: GridSpec) -> None:
        assert source.grid.crs is not None and grid.crs is not None
        self.source = source
        self.grid = grid

    def read(self, col0: int, row0: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        values = np.zeros((height, width), np.float32)
        covered = np.zeros((height, width), np.uint8)
        src_grid = self.source.grid
        dst_transform = self.grid.window_transform(col0, row0)
        try:
            bounds = rasterio.warp.transform_bounds(
                self.grid.crs, src_grid.crs, *corner_bounds(dst_transform, (height, width)),
                densify_pts=21)
        except Exception:  # noqa: BLE001 - this window cannot be placed in the source's CRS
            return values, covered > 0
        if not all(math.isfinite(b) for b in bounds):
            return values, covered > 0
        inverse = ~src_grid.transform
        cols, rows = zip(*(inverse * (x, y) for x in (bounds[0], bounds[2])
                           for y in (bounds[1], bounds[3])), strict=True)
        rect = clip_rect(math.floor(min(cols)) - 2, math.floor(min(rows)) - 2,
                         math.ceil(max(cols)) - math.floor(min(cols)) + 5,
                         math.ceil(max(rows)) - math.floor(min(rows)) + 5,
                         src_grid.width, src_grid.height)
        if rect is None:
            return values, covered > 0
        c0, r0, c1, r1 = rect
        sw, sh = c1 - c0, r1 - r0
        fx, fy = max(1, sw // (4 * width)), max(1, sh // (4 * height))
        out_shape = (math.ceil(sh / fy), math.ceil(sw / fx))
        src_values, src_valid = self.source.read(
            c0, r0, sw, sh, out_shape=None if (fx, fy) == (1, 1) else out_shape)
        src_transform = src_grid.window_transform(c0, r0) * Affine.scale(
            sw / src_values.shape[1], sh / src_values.shape[0])
        common = dict(src_transform=src_transform, src_crs=src_grid.crs,
                      dst_transform=dst_transform, dst_crs=self.grid.crs,
                      resampling=Resampling.nearest, tolerance=0)
        rasterio.warp.reproject(src_values, values, **common)
        rasterio.warp.reproject(src_valid.astype(np.uint8), covered, dst_nodata=0, **common)
        return values, covered > 0


def relaxed_halo(pixel_size_m: tuple[float, float] | None, tolerance_m: float,
                 what: str) -> int:
    """Pixels of halo a window needs so that relaxed metrics see every pixel within tolerance.

    Refused (exit 2) beyond :data:`MAX_HALO` pixels: windows would be mostly halo.
    """
    if pixel_size_m is None:
        return 0
    smallest = min(pixel_size_m)
    if not (math.isfinite(smallest) and smallest > 0):
        raise ConfigError(f"{what}: pixel size {pixel_size_m} m is not usable for relaxed metrics")
    halo = math.ceil(tolerance_m / smallest) + 1
    if halo > MAX_HALO:
        raise ConfigError(
            f"--tolerance-m {tolerance_m:g} is {halo} pixels at the {smallest:.3g} m pixels of "
            f"{what}; relaxed metrics allow at most {MAX_HALO} pixels "
            f"(--tolerance-m up to {(MAX_HALO - 1) * smallest:.3g} here)")
    return halo


def patch_size_for(shape: tuple[int, int], patch_size: int) -> int:
    """``patch_size``, raised just enough that the patch grid has at most MAX_PATCHES cells."""
    h, w = shape
    size = max(patch_size, math.ceil(math.sqrt(h * w / MAX_PATCHES)))
    while math.ceil(h / size) * math.ceil(w / size) > MAX_PATCHES:
        size += 1
    return size


@dataclass
class WindowedResult:
    """Everything one pass over the grid yields (sums, patch grid, decimated overlay)."""

    counts: PixelCounts
    relaxed: RelaxedCounts | None
    sweep: dict[str, np.ndarray] | None
    patch_iou: np.ndarray
    patch_size: int
    overlay: tuple[np.ndarray, np.ndarray, np.ndarray]  # pred, truth, valid (every stride-th)
    stride: int
    n_valid: int
    n_pixels: int
    max_prob: float  # over valid pixels (for warnings about the value range)


def _within(mask: np.ndarray, sampling: tuple[float, float], tolerance_m: float) -> np.ndarray:
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~mask, sampling=sampling)
    return distance <= tolerance_m + 1e-9


def _block_sums(mask: np.ndarray, row0: int, col0: int, size: int) -> np.ndarray:
    """Sums of ``mask`` (a window at row0, col0) per global patch of ``size`` it touches."""
    rows = np.r_[0, np.arange((-row0) % size or size, mask.shape[0], size)]
    cols = np.r_[0, np.arange((-col0) % size or size, mask.shape[1], size)]
    rows, cols = np.unique(rows[rows < mask.shape[0]]), np.unique(cols[cols < mask.shape[1]])
    return np.add.reduceat(np.add.reduceat(mask.astype(np.int64), rows, axis=0), cols, axis=1)


def windowed_pixel_metrics(shape: tuple[int, int], pred: Layer, truth: Layer,
                           ignore: Layer | None = None, *, threshold: float = 0.5,
                           pixel_size_m: tuple[float, float] | None = None,
                           tolerance_m: float = 3.0, n_thresholds: int = 0,
                           patch_size: int = 64, window: int = WINDOW,
                           halo: int | None = None) -> WindowedResult:
    """Pixel metrics of ``pred`` against ``truth`` over a grid of ``shape``, one window at a time.

    Equal to the whole-array functions of :mod:`roadprn.evaluate.pixel` (``confusion``,
    ``relaxed_counts``, ``sweep_counts``, ``patch_iou_grid``); memory is O(window + halo).
    ``n_thresholds`` > 0 adds sweep counts. Truth is road above 0.5 (``TRUTH_THRESHOLD``, the
    labels' rule for float masks), an ignore layer where > 0.
    """
    height, width = shape
    if halo is None:
        halo = relaxed_halo(pixel_size_m, tolerance_m, "the grid")
    relaxed = pixel_size_m is not None
    sampling = ((float(pixel_size_m[1]), float(pixel_size_m[0])) if pixel_size_m is not None
                else (1.0, 1.0))
    size = patch_size_for(shape, patch_size)
    inter = np.zeros((math.ceil(height / size), math.ceil(width / size)), np.int64)
    union = np.zeros_like(inter)
    stride = max(1, math.ceil(max(shape) / PLOT_SIDE))
    small = (math.ceil(height / stride), math.ceil(width / stride))
    over = [np.zeros(small, bool) for _ in range(3)]
    thresholds = np.linspace(0.0, 1.0, n_thresholds) if n_thresholds else None
    tp_s = np.zeros(max(n_thresholds, 1), np.int64)
    fp_s = np.zeros_like(tp_s)
    n_road = 0
    tp = fp = fn = tn = 0
    pm = pt = tm = tt = 0
    max_prob = 0.0
    for row0 in range(0, height, window):
        for col0 in range(0, width, window):
            h, w = min(window, height - row0), min(window, width - col0)
            args = (col0 - halo, row0 - halo, w + 2 * halo, h + 2 * halo)
            prob, pred_valid = pred.read(*args)
            truth_values, truth_valid = truth.read(*args)
            valid = pred_valid & truth_valid
            if ignore is not None:
                ignore_values, ignore_valid = ignore.read(*args)
                valid &= ~((ignore_values > 0) & ignore_valid)
            p_all = is_road(prob, threshold)
            t_all = is_road(truth_values, TRUTH_THRESHOLD)
            p, t = p_all & valid, t_all & valid
            core = (slice(halo, halo + h), slice(halo, halo + w))
            pc, tc, vc = p[core], t[core], valid[core]
            n_tp = int(np.count_nonzero(pc & tc))
            n_p, n_t, n_v = int(np.count_nonzero(pc)), int(np.count_nonzero(tc)), \
                int(np.count_nonzero(vc))
            tp, fp, fn = tp + n_tp, fp + n_p - n_tp, fn + n_t - n_tp
            tn += n_v - n_p - n_t + n_tp
            if n_v:
                max_prob = max(max_prob, float(prob[core][vc].max()))
            if relaxed:
                pt, tt = pt + n_p, tt + n_t
                if n_p and t.any():
                    pm += int(np.count_nonzero(pc & _within(t, sampling, tolerance_m)[core]))
                if n_t and p.any():
                    tm += int(np.count_nonzero(tc & _within(p, sampling, tolerance_m)[core]))
            if thresholds is not None:
                values = prob[core]
                tp_s += counts_above(values[tc], thresholds)
                fp_s += counts_above(values[vc & ~tc], thresholds)
                n_road += n_t
            i0, j0 = row0 // size, col0 // size
            block_i = _block_sums(pc & tc, row0, col0, size)
            block_u = _block_sums(pc | tc, row0, col0, size)
            inter[i0:i0 + block_i.shape[0], j0:j0 + block_i.shape[1]] += block_i
            union[i0:i0 + block_u.shape[0], j0:j0 + block_u.shape[1]] += block_u
            r_start, c_start = (-row0) % stride, (-col0) % stride
            if r_start < h and c_start < w:
                sel = (slice(halo + r_start, halo + h, stride),
                       slice(halo + c_start, halo + w, stride))
                dst_r, dst_c = (row0 + r_start) // stride, (col0 + c_start) // stride
                for target, mask in zip(over, (p_all, t_all, valid), strict=True):
                    part = mask[sel]
                    target[dst_r:dst_r + part.shape[0], dst_c:dst_c + part.shape[1]] = part
    sweep = None
    if thresholds is not None:
        sweep = {"threshold": thresholds, "tp": tp_s, "fp": fp_s, "fn": n_road - tp_s}
    with np.errstate(invalid="ignore", divide="ignore"):
        patch_iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return WindowedResult(
        counts=PixelCounts(tp, fp, fn, tn),
        relaxed=RelaxedCounts(pm, pt, tm, tt) if relaxed else None,
        sweep=sweep, patch_iou=patch_iou, patch_size=size,
        overlay=(over[0], over[1], over[2]), stride=stride, n_valid=tp + fp + fn + tn,
        n_pixels=height * width, max_prob=max_prob)
