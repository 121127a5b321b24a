"""How much parallelism this process may use: its CPU cores, and whether it is a Dask worker."""

from __future__ import annotations

import os
import sys


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. taskset or cgroups cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def inside_dask_worker() -> bool:
    """True inside a dask.distributed task, whose worker already owns its share of the cores."""
    if "distributed" not in sys.modules:  # never import distributed just to ask
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def local_thread_count(requested: int | None, cap: int = 8) -> int:
    """``requested`` threads, or by default one per core (up to ``cap``), 1 in a Dask worker."""
    if requested is not None:
        return requested
    return 1 if inside_dask_worker() else max(1, min(cap, available_cores()))
