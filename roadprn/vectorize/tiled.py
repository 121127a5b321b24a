"""Scene-scale vectorisation: tile by tile with a halo under Dask, joined across seams.

Each task reads its own window (tile core + halo), cleans and skeletonises it, and returns only
the centreline pieces its core owns (see :mod:`.skeleton`). Memory is therefore bounded by
(tile + 2·halo)² per worker plus the vector result, never by the scene size. Pieces from all
tiles meet at shared pixel centres and are joined and cleaned as one graph (:mod:`.graph`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dask
from dask.callbacks import Callback

from roadprn.raster.gdal_env import bounded_gdal_cache
from roadprn.runtime.memory import bounded_heap, release_free_memory
from roadprn.runtime.parallel import local_thread_count, raise_first_failure, reporting
from roadprn.vectorize.cleanup import clean_mask
from roadprn.vectorize.graph import RoadNetwork, clean_graph, from_pieces, simplified_network
from roadprn.vectorize.params import VectorizeParams
from roadprn.vectorize.scale import PixelScale, pixel_scale
from roadprn.vectorize.skeleton import Piece, window_pieces
from roadprn.vectorize.source import RoadSource


@dataclass(frozen=True)
class TileBox:
    """A tile's owned core and the larger window read around it (global pixel boxes)."""

    core: tuple[int, int, int, int]  # row0, col0, row1, col1 (half-open)
    window: tuple[int, int, int, int]


def tile_grid(shape: tuple[int, int], tile_px: int, halo_px: int) -> list[TileBox]:
    """Cores tile the scene without overlap; windows add the halo, clipped to the scene."""
    rows, cols = shape
    boxes = []
    for r0 in range(0, rows, tile_px):
        for c0 in range(0, cols, tile_px):
            r1, c1 = min(r0 + tile_px, rows), min(c0 + tile_px, cols)
            window = (max(r0 - halo_px, 0), max(c0 - halo_px, 0),
                      min(r1 + halo_px, rows), min(c1 + halo_px, cols))
            boxes.append(TileBox(core=(r0, c0, r1, c1), window=window))
    return boxes


def halo_pixels(params: VectorizeParams, scale: PixelScale) -> int:
    return max(params.min_halo_px, math.ceil(params.halo_m / scale.min_m))


def tile_pieces(source: RoadSource, box: TileBox, scale: PixelScale,
                params: VectorizeParams) -> list[Piece]:
    """One Dask task: read, clean, skeletonise one window; keep the pieces its core owns."""
    wr0, wc0, wr1, wc1 = box.window
    pixels = source.read(wr0, wc0, wr1 - wr0, wc1 - wc0)
    if not pixels.road.any():
        return []
    road = clean_mask(pixels.road, params.min_component_area_m2 / scale.area_m2,
                      params.min_hole_area_m2 / scale.area_m2)
    pieces = window_pieces(road, pixels.prob, (wr0, wc0), box.core, scale)
    del pixels, road
    release_free_memory()  # the window's temporaries, so kept pieces do not pin them
    return pieces


class _TileProgress(Callback):
    """A tqdm bar advanced by each finished tile task (Dask's local schedulers)."""

    def __init__(self, total: int, name: str, enabled: bool) -> None:
        super().__init__()
        from roadprn.runtime.progress import progress_bar

        self.bar = progress_bar(total=total, unit="tile", desc=f"{name} vectorize",
                                enabled=enabled, dynamic_ncols=True, leave=False)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self.bar.update(1)

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        self.bar.close()


def vectorize_source(source: RoadSource, params: VectorizeParams, workers: int | None = None,
                     scheduler: str | None = None, progress: bool = False) -> RoadNetwork:
    """Road network of a whole scene, computed tile by tile.

    ``workers`` threads (default: one per core, 1 inside a Dask worker) share one process:
    reading, labelling and skeletonising release the GIL, so threads scale about as well as
    processes without their start-up cost or per-process copies of the libraries.
    ``scheduler`` is any Dask scheduler name to override that ("processes", "sync");
    ``progress`` shows a bar of tiles done.
    """
    workers = local_thread_count(workers)
    scale = pixel_scale(source.transform, source.crs, source.shape, source.name)
    boxes = tile_grid(source.shape, params.tile_size_px, halo_pixels(params, scale))
    # every tile ends before an error is raised: none may read while GDAL's cache is reset
    run_tile = reporting(tile_pieces)
    tasks = [dask.delayed(run_tile, pure=True)(source, box, scale, params) for box in boxes]
    chosen = scheduler or ("threads" if workers > 1 else "sync")
    # windows are read once: a large GDAL cache would only grow memory
    with bounded_heap(), bounded_gdal_cache():
        with _TileProgress(len(tasks), source.name, progress):
            per_tile = dask.compute(*tasks, scheduler=chosen, num_workers=workers)
        raise_first_failure(per_tile)
        graph = from_pieces((p for pieces in per_tile for p in pieces), scale)
        del per_tile
        clean_graph(graph, params)
        return simplified_network(graph, params.simplify_tolerance_m)


def vectorize_whole(source: RoadSource, params: VectorizeParams) -> RoadNetwork:
    """The same pipeline on the scene as a single tile (reference for seam tests)."""
    whole = params.model_copy(update={"tile_size_px": max(source.shape)})
    return vectorize_source(source, whole, workers=1)
