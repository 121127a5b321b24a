"""Tiles read and normalised as Dask tasks, a few batches ahead of the one model.

Windowed reads (GDAL decompression, warping) and normalisation (numpy) release the GIL, so Dask's
threaded scheduler runs them in parallel beside the model, which stays alone on its device.
A feeder thread computes one batch of tiles per ``dask.compute`` and keeps at most ``depth``
batches ready: reading, inference and writing overlap while memory stays bounded by a few
batches, whatever the scene size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import dask
from rasterio.io import DatasetReader

from roadprn.raster.grid import Grid, ResampledScene
from roadprn.raster.scene import open_dataset
from roadprn.runtime.parallel import raise_first_failure, reporting

Item = TypeVar("Item")
Result = TypeVar("Result")
_DONE = object()


class ThreadLocalReader:
    """GDAL handles are not thread-safe: each reader thread opens its own (a
    :class:`~roadprn.raster.grid.ResampledScene` on the model's grid when resampling)."""

    def __init__(self, path: str, grid: Grid | None = None) -> None:
        self.path = path
        self.grid = grid if grid is not None and grid.resampled else None
        self._local = threading.local()
        self._handles: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> DatasetReader | ResampledScene:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            ds = open_dataset(self.path)
            with self._lock:
                self._handles.append(ds)
            if self.grid is not None:
                ds = ResampledScene(ds, self.grid)
                with self._lock:
                    self._handles.append(ds)
            self._local.ds = ds
        return ds

    def close(self) -> None:
        with self._lock:
            for ds in reversed(self._handles):
                ds.close()
            self._handles.clear()


class DaskBatchLoader(Generic[Item, Result]):
    """Yields ``(items, collate([load(item) for item in items]))`` per batch, in order, ahead.

    ``collate`` (e.g. stacking tiles into one array) also runs on the feeder thread, off the
    consumer's critical path.

    Use as a context manager: leaving it (normally, on an error or on Ctrl-C) stops the feeder
    after the batch it is computing, so no read outlives the run.
    """

    def __init__(self, batches: Iterable[list[Item]], load: Callable[[Item], Result], *,
                 threads: int, depth: int,
                 collate: Callable[[list[Result]], Any] = list) -> None:
        self._batches = batches
        self._load = load
        self._collate = collate
        self._threads = threads
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name="roadprn-feed", daemon=True)

    def _compute(self, items: list[Item]) -> Any:
        # A failing task must not end the compute early: Dask's threaded scheduler raises the
        # first error at once while the batch's other reads still run on its pool, so the
        # caller went on to close the dataset handles (and reset GDAL's cache) under them, a
        # segfault. Every task reports its error as a value; the batch ends when all have.
        tasks = [dask.delayed(reporting(self._load), pure=False)(item) for item in items]
        loaded = dask.compute(*tasks, scheduler="threads", num_workers=self._threads)
        raise_first_failure(loaded)
        return self._collate(list(loaded))

    def _feed(self) -> None:
        try:
            for items in self._batches:
                if self._stop.is_set():
                    return
                self._put((items, self._compute(items)))
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __enter__(self) -> DaskBatchLoader[Item, Result]:
        self._feeder.start()
        return self

    def __iter__(self) -> Iterator[tuple[list[Item], Any]]:
        while True:
            item = self._ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._feeder.is_alive():
            self._feeder.join()
