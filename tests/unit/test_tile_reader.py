"""The batch loader that feeds the model: order, bounded look-ahead, and no read outliving it."""

from __future__ import annotations

import threading

import pytest

from roadprn.infer.tile_reader import DaskBatchLoader


def test_batches_come_in_order_with_their_items():
    batches = [[1, 2, 3], [4, 5], [6]]
    with DaskBatchLoader(iter(batches), lambda x: x * 10, threads=2, depth=1) as loader:
        got = list(loader)
    assert got == [([1, 2, 3], [10, 20, 30]), ([4, 5], [40, 50]), ([6], [60])]


def test_a_failing_read_ends_the_batch_only_when_its_other_reads_have():
    """Dask's threaded scheduler raised the first error while the batch's other reads still ran:
    the caller then closed the dataset handles under them (a segfault in GDAL, seen in CI)."""
    release = threading.Event()
    finished: list[int] = []

    def load(item: int) -> int:
        if item == 0:
            release.set()
            raise ValueError("unreadable window")
        assert release.wait(30), "the failing read never ran"
        finished.append(item)
        return item

    with pytest.raises(ValueError, match="unreadable window"):
        with DaskBatchLoader(iter([[0, 1, 2, 3]]), load, threads=4, depth=1) as loader:
            list(loader)
    assert sorted(finished) == [1, 2, 3]


def test_leaving_early_stops_the_feeder():
    started: list[int] = []

    def load(item: int) -> int:
        started.append(item)
        return item

    batches = ([i] for i in range(1000))
    with DaskBatchLoader(batches, load, threads=1, depth=1) as loader:
        first = next(iter(loader))
    assert first == ([0], [0])
    assert len(started) < 10  # a few batches ahead at most, not the whole scene
