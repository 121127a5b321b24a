"""The pixel grid inference runs on: the scene's own, or one resampled to the model's GSD.

A model trained at 0.5 m sees roads of a certain width in pixels; fed 0.3 m imagery unchanged it
sees them 1.7x wider and degrades. When the scene's true resolution (in metres, per axis) differs
from the model's by more than a tolerance, inference runs on a grid with the same footprint and
CRS whose pixels are ``gsd_m`` square in metres, read through a GDAL warped VRT window by window,
and the outputs are resampled back to the scene grid at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from roadprn.errors import InputError, one_line
from roadprn.raster.gdal_env import GDAL_ERRORS
from roadprn.raster.read import read_valid, validity_sources
from roadprn.raster.scene import SceneInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    width: int
    height: int
    transform: Affine
    resampled: bool
    description: str

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def scene_grid(info: SceneInfo) -> Grid:
    return Grid(info.width, info.height, info.transform, False, "scene")


def inference_grid(info: SceneInfo, gsd_m: float | None, *, resample: bool, tolerance: float,
                   max_factor: float = 4.0,
                   native_range: tuple[float, float] | None = None,
                   force: bool = False) -> Grid:
    """The scene grid, or a grid at the model's GSD when the two differ by more than ``tolerance``.

    ``native_range``: the resolutions a model was trained across (widened by ``tolerance`` as
    the single-resolution rule is); scenes inside it keep their grid. Off by default
    (``resolution.native_in_range``): measured, even a multi-GSD model scores higher on scenes
    resampled to its own GSD (docs/model-card.md). Beyond ``max_factor`` (e.g. 30 m Landsat for
    a 0.5 m model) roads cannot be found: resampling would blow a 512² scene up to 30000², and
    the scene grid gives invented roads, so the scene is refused unless ``force`` (then it runs
    on its own grid, with a warning).
    """
    if gsd_m is None or info.resolution_m is None:
        return scene_grid(info)
    res_x, res_y = info.resolution_m
    fx, fy = res_x / gsd_m, res_y / gsd_m
    if max(fx, fy, 1.0 / fx, 1.0 / fy) > max_factor:
        low, high = gsd_m / max_factor, gsd_m * max_factor
        if not force:
            raise InputError(
                f"{info.path}: resolution {(res_x + res_y) / 2:.3g} m is more than {max_factor:g}x "
                f"away from the model's {gsd_m:g} m (it works on about {low:.3g}-{high:.3g} m "
                "imagery): roads cannot be found there; use a model for this resolution, or "
                "--force-resolution to run anyway")
        log.warning(
            "%s: resolution %.3g m is more than %gx away from the model's %g m; running on the "
            "scene grid as forced (results on such imagery are unreliable)", info.path,
            (res_x + res_y) / 2, max_factor, gsd_m)
        return scene_grid(info)
    if not resample:
        return scene_grid(info)
    if native_range is not None and all(
            native_range[0] / (1 + tolerance) <= r <= native_range[1] * (1 + tolerance)
            for r in (res_x, res_y)):
        return scene_grid(info)
    if max(abs(fx - 1.0), abs(fy - 1.0)) <= tolerance:
        return scene_grid(info)
    width = max(1, round(info.width * fx))
    height = max(1, round(info.height * fy))
    transform = info.transform * Affine.scale(info.width / width, info.height / height)
    text = (f"model grid {gsd_m:g} m (scene {res_x:.3g} x {res_y:.3g} m, "
            f"{info.width}x{info.height} -> {width}x{height} px)")
    return Grid(width, height, transform, True, text)


def warped(ds: DatasetReader, grid: Grid, *, downsampling: bool | None = None) -> WarpedVRT:
    """``ds``'s values seen on ``grid`` (bilinear up, average down), invalid sources left out.

    GDAL's warper takes the source's nodata, alpha band or mask as the validity of the pixels it
    interpolates from. No alpha band is added: rasterio refuses that for a source with one (the
    standard SpaceNet RGBA chips), and per-pixel validity comes from :class:`ResampledScene`.
    """
    if downsampling is None:
        downsampling = grid.width < ds.width or grid.height < ds.height
    resampling = Resampling.average if downsampling else Resampling.bilinear
    return WarpedVRT(ds, crs=ds.crs, transform=grid.transform, width=grid.width,
                     height=grid.height, resampling=resampling)


class ResampledScene:
    """A scene seen on a resampled grid (same CRS and footprint), for :func:`read_window`.

    Values come through a GDAL warped VRT; validity is the scene's own (every source of
    :class:`roadprn.raster.ValiditySources`) at the scene pixel under each grid pixel's centre,
    so the scene grid and the model grid agree on which pixels are valid. GDAL's warped alpha
    would not: it follows GDAL's single mask band, where nodata hides an alpha band and an
    internal mask hides both, and a pixel counts as valid when any one band is.
    """

    def __init__(self, ds: DatasetReader, grid: Grid) -> None:
        self.source = ds
        self.grid = grid
        try:
            self.vrt = warped(ds, grid)
        except GDAL_ERRORS as exc:
            raise InputError(f"{ds.name}: cannot resample onto the {grid.description} "
                             f"({one_line(exc)})") from None
        self.name = ds.name
        self.width, self.height = grid.width, grid.height
        self._scale_x = ds.width / grid.width
        self._scale_y = ds.height / grid.height

    def read_valid(self, bands: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Warped values of ``bands`` in ``window`` of the grid, and their validity."""
        data = self.vrt.read(list(bands), window=window)
        sources = validity_sources(self.source, bands)
        if sources.trivial:
            valid = np.ones(data.shape[1:], bool)
        else:
            rows = _source_index(window.row_off, window.height, self._scale_y, self.source.height)
            cols = _source_index(window.col_off, window.width, self._scale_x, self.source.width)
            src_window = Window(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                                int(rows[-1] - rows[0] + 1))
            _, src_valid = read_valid(self.source, bands, src_window, sources=sources)
            valid = src_valid[np.ix_(rows - rows[0], cols - cols[0])]
        if data.dtype.kind == "f":
            valid &= np.all(np.isfinite(data), axis=0)
        return data, valid

    def close(self) -> None:
        self.vrt.close()


def _source_index(offset: float, length: float, scale: float, size: int) -> np.ndarray:
    """Scene pixel index under the centre of each grid pixel ``offset .. offset + length``."""
    centres = (np.arange(int(offset), int(offset) + int(length)) + 0.5) * scale
    return np.clip(np.floor(centres).astype(np.int64), 0, size - 1)
