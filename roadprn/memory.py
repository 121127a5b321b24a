"""Giving freed heap memory back to the operating system promptly (glibc).

Tile workers allocate and free window-sized temporaries (MB each) on several threads while
the small results they keep land in the same heaps. glibc's defaults then keep much of the freed
memory resident: its trim and mmap thresholds grow with the largest block freed (up to 32/64
MB) and each worker thread's arena keeps its free top that large, so resident memory grows with
the number of threads and tiles instead of with what the process holds. A fixed 64 KiB trim
threshold, which dask.distributed sets for its workers (MALLOC_TRIM_THRESHOLD_), keeps it
bounded; ``malloc_trim`` returns free pages at once. A user's own MALLOC_* settings win.
Elsewhere (macOS, Windows, musl) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

#: glibc mallopt parameter number (malloc.h)
_M_TRIM_THRESHOLD = -1
TRIM_THRESHOLD_BYTES = 64 * 1024
_USER_SETTINGS = {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"}


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


@functools.cache
def bound_heap_growth() -> bool:
    """Fix glibc's trim threshold (once per process); False when not applied."""
    libc = _glibc()
    if libc is None or _USER_SETTINGS & os.environ.keys() \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Return free heap pages to the OS now; True when the C library could do it."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
