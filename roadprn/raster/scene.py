"""Opening and validating scenes: readable, not truncated, georeferenced, bands as expected.

Every reader in roadprn opens scenes through here, so all stages agree on what a usable scene
is; nothing here reads a whole scene."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.windows import Window

from roadprn.errors import InputError, gdal_reason
from roadprn.raster.gdal_env import GDAL_ERRORS, read_masks
from roadprn.raster.geometry import footprint_wgs84, pixel_size_m
from roadprn.raster.read import explicit_mask_bands
from roadprn.raster.sources import open_guarded, refuse_embedded_code, refuse_network_sources
from roadprn.runtime import gdal_guard
from roadprn.runtime.gdal_guard import is_network_path


@dataclass(frozen=True)
class SceneInfo:
    """What roadprn needs to know about a scene before reading any pixels."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: CRS | None
    transform: Affine
    nodata: float | None
    block_shape: tuple[int, int]
    overviews: tuple[int, ...]
    colorinterp: tuple[str, ...]
    mask_flags: tuple[tuple[str, ...], ...]
    resolution_m: tuple[float, float] | None
    footprint_wgs84: tuple[float, float, float, float] | None
    data_bands: tuple[int, ...] = field(default=())

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def crs_name(self) -> str:
        if self.crs is None:
            return "none (pixel coordinates)"
        epsg = self.crs.to_epsg()
        if epsg is not None:
            return f"EPSG:{epsg}"
        name = self.crs.to_dict().get("proj")
        if not name:
            known = self.crs.is_geographic or self.crs.is_projected
            name = "custom" if known else "local engineering"
        return f"custom ({name}, no EPSG code)"

    def as_dict(self) -> dict[str, Any]:
        """Plain types only: for JSON output and raster tags."""
        return {
            "path": self.path,
            "driver": self.driver,
            "width": self.width,
            "height": self.height,
            "bands": self.count,
            "data_bands": list(self.data_bands),
            "dtypes": list(self.dtypes),
            "crs": self.crs_name,
            "crs_wkt": self.crs.to_wkt() if self.crs else None,
            "transform": list(self.transform)[:6],
            "resolution": list(self.res),
            "resolution_m": list(self.resolution_m) if self.resolution_m else None,
            "nodata": self.nodata,
            "block_shape": list(self.block_shape),
            "overviews": list(self.overviews),
            "colorinterp": list(self.colorinterp),
            "mask_flags": [list(f) for f in self.mask_flags],
            "footprint_wgs84": list(self.footprint_wgs84) if self.footprint_wgs84 else None,
        }


def _check_path(path: str | Path) -> str:
    text = str(path)
    if text.startswith("/vsi") or "://" in text:
        return text  # GDAL virtual / remote path: let GDAL decide
    p = Path(text)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a raster file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    return text


def open_dataset(path: str | Path) -> DatasetReader:
    """rasterio.open with a clear one-line error instead of a GDAL traceback; caller closes it.

    A local file may not make GDAL reach the network: GDAL itself refuses (see
    :mod:`roadprn.runtime.gdal_guard`), and :func:`refuse_network_sources` checks the file's
    references first, so the user learns which path was refused. Only a network path the user
    gave opens with network access.
    """
    gdal_guard.install()
    text = _check_path(path)
    if is_network_path(text):
        return open_guarded(text, text)
    key = _file_key(text)
    checked = key is not None and key in _VERIFIED_LOCAL
    if not checked:
        # before GDAL opens it: a warped VRT opens its source inside rasterio.open
        refuse_embedded_code(text, text)
    ds = open_guarded(text, text)
    if not checked:
        try:
            refuse_network_sources(ds, text)
        except BaseException:
            ds.close()
            raise
        if key is not None:
            _VERIFIED_LOCAL.add(key)
    return ds


# Local files already checked by refuse_network_sources in this process, by (path, mtime, size):
# every reader thread and every vectoriser tile opens the scene again, and following a large
# VRT mosaic's thousands of sources each time would cost more than the reads.
_VERIFIED_LOCAL: set[tuple[str, int, int]] = set()


def _file_key(path: str) -> tuple[str, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)




@contextlib.contextmanager
def open_raster(path: str | Path) -> Iterator[DatasetReader]:
    """:func:`open_dataset` as a context manager."""
    with open_dataset(path) as ds:
        yield ds


def scene_info(ds: DatasetReader) -> SceneInfo:
    """Everything about ``ds`` but its pixels; a file GDAL cannot describe is a bad input.

    GDAL reads some of a TIFF's directories lazily (overviews, masks), so a truncated file can
    open and then fail in ``ds.colorinterp`` or ``ds.overviews``: those errors name the file.
    """
    try:
        return _scene_info(ds)
    except GDAL_ERRORS as exc:
        raise InputError(f"{ds.name}: raster is unreadable, file truncated or corrupt "
                         f"({gdal_reason(exc)})") from None


def _scene_info(ds: DatasetReader) -> SceneInfo:
    crs = ds.crs if _has_georeferencing(ds) else None
    transform = ds.transform
    geometry_ok = crs is not None and _usable_transform(transform)
    resolution = None
    if geometry_ok and crs is not None:
        try:
            resolution = pixel_size_m(crs, transform, ds.width, ds.height)
        except InputError as exc:
            raise InputError(f"{ds.name}: {exc}") from None
    return SceneInfo(
        path=ds.name,
        driver=ds.driver,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtypes=tuple(ds.dtypes),
        crs=crs,
        transform=transform,
        nodata=ds.nodata,
        block_shape=tuple(ds.block_shapes[0]) if ds.count else (0, 0),
        overviews=tuple(ds.overviews(1)) if ds.count else (),
        colorinterp=tuple(ci.name for ci in ds.colorinterp),
        mask_flags=tuple(tuple(f.name for f in flags) for flags in ds.mask_flag_enums),
        resolution_m=resolution,
        footprint_wgs84=footprint_wgs84(crs, ds.bounds) if geometry_ok and crs else None,
        data_bands=data_bands(ds),
    )


def _usable_transform(transform: Affine) -> bool:
    """Finite coefficients and a non-zero pixel size on both axes (else no metres, no grid)."""
    return (all(math.isfinite(v) for v in tuple(transform)[:6])
            and math.hypot(transform.a, transform.d) > 0
            and math.hypot(transform.b, transform.e) > 0)


def _has_georeferencing(ds: DatasetReader) -> bool:
    return ds.crs is not None and ds.transform != Affine.identity()


def data_bands(ds: DatasetReader) -> tuple[int, ...]:
    """1-based indexes of bands carrying data (alpha bands are masks, not model input)."""
    return tuple(i for i, ci in enumerate(ds.colorinterp, start=1) if ci != ColorInterp.alpha)


def open_scene(
    path: str | Path,
    *,
    allow_ungeoreferenced: bool = False,
    check_readable: bool = True,
) -> SceneInfo:
    """Open and validate a scene; the dataset is closed again (readers reopen per thread)."""
    with open_raster(path) as ds:
        info = scene_info(ds)
        validate_scene(ds, info, allow_ungeoreferenced=allow_ungeoreferenced)
        if check_readable:
            check_blocks_readable(ds)
    return info


def validate_scene(ds: DatasetReader, info: SceneInfo, *, allow_ungeoreferenced: bool) -> None:
    if info.width < 1 or info.height < 1 or info.count < 1:
        raise InputError(f"{info.path}: raster is empty ({info.width}x{info.height}, "
                         f"{info.count} bands)")
    if not info.data_bands:
        raise InputError(f"{info.path}: raster has only alpha bands, no data bands")
    if info.crs is None and not allow_ungeoreferenced:
        raise InputError(
            f"{info.path}: raster has no CRS/georeferencing; pass --allow-ungeoreferenced "
            "to work in pixel coordinates"
        )
    if info.crs is not None:
        _validate_georeferencing(ds, info)
    for dtype in info.dtypes:
        if np.dtype(dtype).kind == "c":
            raise InputError(f"{info.path}: complex-valued bands ({dtype}) are not imagery")


#: latitudes a hair beyond ±90 come from rounding in pixel-is-point / edge-of-pixel footprints
_LATITUDE_SLACK = 1e-6


def _validate_georeferencing(ds: DatasetReader, info: SceneInfo) -> None:
    """Refuse georeferencing that would give NaN metres or a degenerate inference grid."""
    t = info.transform
    if not _usable_transform(t):
        raise InputError(f"{info.path}: the geotransform has a zero or non-finite pixel size "
                         f"({', '.join(f'{v:g}' for v in tuple(t)[:6])}); georeferencing is broken")
    if info.crs is not None and info.crs.is_geographic:
        left, bottom, right, top = ds.bounds
        south, north = min(bottom, top), max(bottom, top)
        if south < -90 - _LATITUDE_SLACK or north > 90 + _LATITUDE_SLACK:
            raise InputError(f"{info.path}: latitudes {south:.6g} .. {north:.6g} lie beyond "
                             f"±90° in {info.crs_name}; the geotransform or CRS is wrong")
    if info.resolution_m is not None and not all(
            math.isfinite(v) and v > 0 for v in info.resolution_m):
        raise InputError(f"{info.path}: pixel size in metres is undefined at the scene centre "
                         f"({info.resolution_m[0]:g} x {info.resolution_m[1]:g} m); the "
                         "geotransform or CRS is wrong")


def check_blocks_readable(ds: DatasetReader) -> None:
    """Read the first and last block of every level: catches truncated files cheaply.

    GDAL writes a level's blocks in order, and overviews and masks after (or, in a COG, before)
    the full-resolution data, so a file cut anywhere loses the last block of some level: the
    full-resolution bands (first and last band, for band-separate files), the mask and each
    overview level. That is two blocks per level, however large the scene.
    """
    try:
        _read_level_corners(ds, ds.name)
        for level in range(len(ds.overviews(1))):
            with gdal_guard.network_allowed(ds.name), \
                    rasterio.open(ds.name, overview_level=level) as ovr:
                _read_level_corners(ovr, ds.name)
    except GDAL_ERRORS as exc:
        raise InputError(f"{ds.name}: raster data is unreadable, file truncated or corrupt "
                         f"({gdal_reason(exc)})") from None


def _read_level_corners(ds: DatasetReader, name: str) -> None:
    bh, bw = ds.block_shapes[0]
    bh, bw = min(bh, ds.height), min(bw, ds.width)
    last = Window(ds.width - bw, ds.height - bh, bw, bh)
    explicit_mask = explicit_mask_bands(ds, (1,))
    for window in (Window(0, 0, bw, bh), last):
        ds.read(1, window=window)
        if explicit_mask:
            read_masks(ds, 1, window=window)
    if ds.count > 1:
        ds.read(ds.count, window=last)


def missing_model_bands(scene: str, model_bands: Sequence[int], band_count: int) -> str | None:
    """Why a scene of ``band_count`` bands cannot feed a model that reads ``model_bands`` (None
    when it can): the one wording of this mismatch, with the two ways out."""
    if not model_bands or max(model_bands) <= band_count:
        return None
    n = len(model_bands)
    return (f"{scene}: the model reads band(s) {list(model_bands)} ({n}-band input) but the "
            f"scene has {band_count} band(s); pick bands with --bands (e.g. --bands "
            f"{','.join(['1'] * n)}) or use a model for {band_count}-band imagery"
            + (" (--model default-pan)" if band_count == 1 else ""))


def check_band_count(info: SceneInfo, bands: Sequence[int] | None, expected: int | None,
                     model_bands: Sequence[int] = ()) -> tuple[int, ...]:
    """The 1-based bands to read, checked against the scene and what the model expects: the
    one band check of extract, batch and training. ``bands`` are the user's choice; without
    one, the model's own ``model_bands`` (if any), else the scene's data bands."""
    # a palette image first: its way out (expand to RGB) also fixes a band-count mismatch,
    # while "--bands 1,1,1" would feed colour-table indexes to the model
    _refuse_palette_bands(info, bands or model_bands or info.data_bands)
    if not bands and model_bands:
        problem = missing_model_bands(info.path, model_bands, info.count)
        if problem:
            raise InputError(problem)
        bands = model_bands
    if bands:
        bad = [b for b in bands if b < 1 or b > info.count]
        if bad:
            raise InputError(f"{info.path}: band(s) {bad} do not exist; the scene has "
                             f"{info.count} band(s)")
        chosen = tuple(bands)
    else:
        chosen = info.data_bands
        if expected is not None and len(chosen) > expected:
            raise InputError(
                f"{info.path}: scene has {len(chosen)} bands but the model expects {expected}; "
                "choose them with --bands (e.g. --bands "
                f"{','.join(map(str, range(1, expected + 1)))})"
            )
    if expected is not None and len(chosen) != expected:
        raise InputError(
            f"{info.path}: {len(chosen)} band(s) selected but the model expects {expected}"
        )
    return chosen


def _refuse_palette_bands(info: SceneInfo, bands: Sequence[int]) -> None:
    palette = sorted({b for b in bands
                      if 1 <= b <= len(info.colorinterp) and info.colorinterp[b - 1] == "palette"})
    if palette:
        # colour-table indexes are labels, not intensities: any model would see noise
        raise InputError(
            f"{info.path}: band(s) {palette} hold colour-table (palette) indexes, not intensities; "
            "expand them to RGB first, e.g. gdal_translate -of VRT -expand rgb "
            f"{Path(info.path).name} {Path(info.path).stem}_rgb.vrt")
