"""The pixel grid inference runs on: the scene's own, or one resampled to the model's GSD.

A model trained at 0.5 m sees roads of a certain width in pixels; fed 0.3 m imagery unchanged it
sees them 1.7x wider and degrades. When the scene's true resolution (in metres, per axis) differs
from the model's by more than a tolerance, inference runs on a grid with the same footprint and
CRS whose pixels are ``gsd_m`` square in metres, read through a GDAL warped VRT window by window,
and the outputs are resampled back to the scene grid at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT

from roadprn.raster import SceneInfo

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
                   max_factor: float = 4.0) -> Grid:
    """The scene grid, or a grid at the model's GSD when the two differ by more than ``tolerance``.

    Beyond ``max_factor`` (e.g. 30 m Landsat for a 0.5 m model) resampling cannot recover roads
    and would blow a 512² scene up to 30000²: the scene grid is kept and a warning logged.
    """
    if not resample or gsd_m is None or info.resolution_m is None:
        return scene_grid(info)
    res_x, res_y = info.resolution_m
    fx, fy = res_x / gsd_m, res_y / gsd_m
    if max(abs(fx - 1.0), abs(fy - 1.0)) <= tolerance:
        return scene_grid(info)
    if max(fx, fy, 1.0 / fx, 1.0 / fy) > max_factor:
        log.warning(
            "%s: resolution %.3g m is more than %gx away from the model's %g m; not resampling "
            "(results on such imagery are unreliable)", info.path, (res_x + res_y) / 2,
            max_factor, gsd_m)
        return scene_grid(info)
    width = max(1, round(info.width * fx))
    height = max(1, round(info.height * fy))
    transform = info.transform * Affine.scale(info.width / width, info.height / height)
    text = (f"model grid {gsd_m:g} m (scene {res_x:.3g} x {res_y:.3g} m, "
            f"{info.width}x{info.height} -> {width}x{height} px)")
    return Grid(width, height, transform, True, text)


def warped(ds: DatasetReader, grid: Grid, *, downsampling: bool | None = None) -> WarpedVRT:
    """``ds`` seen on ``grid``; the alpha band carries the source's validity (nodata, masks)."""
    if downsampling is None:
        downsampling = grid.width < ds.width or grid.height < ds.height
    resampling = Resampling.average if downsampling else Resampling.bilinear
    return WarpedVRT(ds, crs=ds.crs, transform=grid.transform, width=grid.width,
                     height=grid.height, resampling=resampling, add_alpha=True)
