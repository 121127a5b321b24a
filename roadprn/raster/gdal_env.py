"""GDAL settings and failures shared by every raster reader and writer: the block-cache cap,
the exceptions GDAL raises through rasterio (their one-line reason: ``errors.gdal_reason``)."""

from __future__ import annotations

import os
import threading

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

DEFAULT_GDAL_CACHE_MB = 64

#: Held around GDAL mask-band reads and writes that run on different threads at once (reader
#: threads reading a scene's masks while the writer thread writes an output's mask): one CI run
#: segfaulted with the two inside GDAL's mask code together. Both calls are short.
MASK_IO_LOCK = threading.Lock()

#: What GDAL raises through rasterio: rasterio's own errors, and the CPLE_* errors that escape
#: from attribute reads (a truncated TIFF fails in ``ds.colorinterp`` when the next directory is
#: read). Every GDAL call after opening catches both and says which file failed.
GDAL_ERRORS: tuple[type[BaseException], ...] = (RasterioError, CPLE_BaseError)


def limit_gdal_cache(megabytes: int = DEFAULT_GDAL_CACHE_MB) -> None:
    """Cap GDAL's block cache unless the user set GDAL_CACHEMAX.

    GDAL's default (5 % of RAM) fills up while a large scene streams through, so peak memory
    would grow with the scene; windows are read once (plus halos), so a small cache loses
    nothing. GDAL reads this when its cache is first used: call it before opening rasters.
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(megabytes))


def bounded_gdal_cache(megabytes: int = DEFAULT_GDAL_CACHE_MB) -> rasterio.Env:
    """A ``rasterio.Env`` that caps GDAL's block cache while it is active (library calls).

    Scanning a scene keeps every block it read in the cache (5 % of RAM by default), so a scan
    of a 16384² raster held ~600 MB. The user's own GDAL_CACHEMAX wins.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return rasterio.Env()
    return rasterio.Env(GDAL_CACHEMAX=megabytes)

