"""Process-wide settings, set once by whoever owns the process: the CLI (``roadprn`` and each
command that runs a model) and batch workers (at the start of each task, idempotently).

Library functions never change these; they read what is set (``torch.get_num_threads()``) or
use scoped settings (``raster.gdal_env.bounded_gdal_cache()``), so tests, notebooks and batch
workers calling the library keep their own process configuration.
"""

from __future__ import annotations

import os

from roadprn.runtime.parallel import available_cores

#: GDAL's block-cache cap in MB unless the user set GDAL_CACHEMAX (see :func:`limit_gdal_cache`)
DEFAULT_GDAL_CACHE_MB = 64


def limit_gdal_cache(megabytes: int = DEFAULT_GDAL_CACHE_MB) -> None:
    """Cap GDAL's block cache unless the user set GDAL_CACHEMAX.

    GDAL's default (5 % of RAM) fills up while a large scene streams through, so peak memory
    would grow with the scene; windows are read once (plus halos), so a small cache loses
    nothing. GDAL reads this when its cache is first used: call it before opening rasters.
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(megabytes))


def torch_thread_count(torch_threads: int | None, reader_threads: int) -> int:
    """Torch's intra-op threads: as asked, else the cores left to the reader threads (torch and
    readers would oversubscribe the CPU otherwise)."""
    return torch_threads or max(1, available_cores() - max(0, reader_threads - 1))


def configure_process(*, torch_threads: int | None = None, reader_threads: int | None = None,
                      gdal_cache_mb: int = DEFAULT_GDAL_CACHE_MB) -> int | None:
    """Set the process-wide state a model run needs: GDAL's cache cap, and (when
    ``reader_threads`` is given, i.e. a model will run) torch's thread count, which is
    returned. Safe to call again with the same values (batch workers call it per task)."""
    limit_gdal_cache(gdal_cache_mb)
    if reader_threads is None:
        return None
    import torch

    n = torch_thread_count(torch_threads, reader_threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
