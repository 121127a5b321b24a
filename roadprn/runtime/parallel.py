"""How much parallelism this process may use: its CPU cores, and whether it is a Dask worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


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


class TaskFailed:
    """A task's exception, returned instead of raised (see :func:`reporting`)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def reporting(func: Callable[..., T]) -> Callable[..., T | TaskFailed]:
    """``func`` returning its exception as a :class:`TaskFailed` value instead of raising.

    Dask's threaded scheduler raises a task's error at once while the other tasks of the
    same ``dask.compute`` still run on its pool; the caller then went on to close dataset
    handles and reset GDAL settings under them (a segfault). Tasks that never raise make
    the compute end only when every task has; :func:`raise_first_failure` then raises.
    """

    def run(*args: Any, **kwargs: Any) -> T | TaskFailed:
        try:
            return func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by raise_first_failure
            return TaskFailed(exc)

    return run


def raise_first_failure(results: Sequence[Any]) -> None:
    """Raise the first :class:`TaskFailed` error among ``results`` (in task order)."""
    for result in results:
        if isinstance(result, TaskFailed):
            raise result.error
