"""GDAL settings and failures shared by every raster reader and writer: the block-cache cap,
the exceptions GDAL raises through rasterio (their one-line reason: ``errors.gdal_reason``)."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from roadprn.runtime.settings import DEFAULT_GDAL_CACHE_MB

P = ParamSpec("P")
R = TypeVar("R")


#: Held around every GDAL mask-band read and write (:func:`read_masks`, :func:`write_mask`, the
#: only way the code touches masks): reader threads reading a scene's masks while the writer
#: thread writes an output's mask segfaulted one CI run inside GDAL's mask code, even on
#: separate dataset handles. Mask calls are short next to the pixel reads around them.
MASK_IO_LOCK = threading.Lock()


def read_masks(ds: Any, *args: Any, **kwargs: Any) -> Any:
    """``ds.read_masks(...)`` under :data:`MASK_IO_LOCK` (the thread-safety rule: every mask
    read goes through here, on any thread)."""
    with MASK_IO_LOCK:
        return ds.read_masks(*args, **kwargs)


def write_mask(ds: Any, mask: Any, **kwargs: Any) -> None:
    """``ds.write_mask(mask, ...)`` under :data:`MASK_IO_LOCK` (every mask write goes here)."""
    with MASK_IO_LOCK:
        ds.write_mask(mask, **kwargs)

#: What GDAL raises through rasterio: rasterio's own errors, and the CPLE_* errors that escape
#: from attribute reads (a truncated TIFF fails in ``ds.colorinterp`` when the next directory is
#: read). Every GDAL call after opening catches both and says which file failed.
GDAL_ERRORS: tuple[type[BaseException], ...] = (RasterioError, CPLE_BaseError)


def bounded_gdal_cache(megabytes: int = DEFAULT_GDAL_CACHE_MB) -> rasterio.Env:
    """A ``rasterio.Env`` that caps GDAL's block cache while it is active (library calls).

    Scanning a scene keeps every block it read in the cache (5 % of RAM by default), so a scan
    of a 16384² raster held ~600 MB. The user's own GDAL_CACHEMAX wins.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return rasterio.Env()
    return rasterio.Env(GDAL_CACHEMAX=megabytes)


def gdal_cache_bounded(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` inside :func:`bounded_gdal_cache`: the scoped cap of a library function
    that streams a scene (the process-wide one is the CLI's, ``runtime.settings``)."""

    @functools.wraps(func)
    def bounded(*args: P.args, **kwargs: P.kwargs) -> R:
        with bounded_gdal_cache():
            return func(*args, **kwargs)

    return bounded
