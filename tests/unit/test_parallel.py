"""Tasks on Dask's threaded scheduler: an error is raised only when every task of the compute
has ended, so no read outlives the call that owns the dataset handles and GDAL settings."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin

from roadprn.runtime.parallel import TaskFailed, raise_first_failure, reporting
from roadprn.vectorize import ArraySource, VectorizeParams
from roadprn.vectorize.tiled import vectorize_source


def test_reporting_returns_the_error_and_raise_first_failure_raises_it_in_order():
    def work(x: int) -> int:
        if x % 2:
            raise ValueError(f"odd {x}")
        return x

    results = [reporting(work)(x) for x in range(4)]
    assert results[0] == 0 and isinstance(results[1], TaskFailed)
    with pytest.raises(ValueError, match="odd 1"):
        raise_first_failure(results)
    raise_first_failure([0, 2])  # nothing failed: nothing raised


class _FailingTileSource(ArraySource):
    """Tile (0, 0) fails; on a thread pool every other tile first waits (a little) for that,
    so that they are still running when it fails. Run inline (one thread: a Dask worker or a
    one-core machine) nothing waits: a tile after the failing one must still run."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "failed", threading.Event())
        object.__setattr__(self, "finished", [])

    def read(self, row: int, col: int, height: int, width: int):  # noqa: ANN201
        if row <= 0 and col <= 0:
            self.failed.set()
            raise OSError("tile unreadable")
        if threading.current_thread() is not threading.main_thread():
            self.failed.wait(2)
        pixels = super().read(row, col, height, width)
        self.finished.append((row, col))
        return pixels


def test_a_failing_tile_raises_only_after_the_other_tiles_ended():
    road = np.zeros((512, 512), bool)
    road[250:262, :] = True
    source = _FailingTileSource(road, from_origin(500000, 5000000, 0.5, 0.5),
                                CRS.from_epsg(32631))
    params = VectorizeParams(tile_size_px=128)
    with pytest.raises(OSError, match="tile unreadable"):
        vectorize_source(source, params, workers=4, scheduler="threads")
    assert len(source.finished) == 15  # 4 x 4 tiles, all but the failing one
