"""Large scenes split across batch workers: bands of tile rows, computed apart, joined at the end.

A band of tile rows ``[a, b)`` runs the base model on its tiles plus one tile row of context on
each side (:func:`roadprn.infer.base_stage.predict_strips` with ``tile_rows``), so its scene
rows are
bit-for-bit those of a whole-scene run. Each band writes its float32 probabilities and validity
to a *piece* GeoTIFF in a temporary folder inside the scene's output folder; the scene's final
task reads the pieces back in row order (:func:`read_pieces`) and hands them to
:func:`roadprn.extract.run_extract`, which writes the usual outputs. Only the base model is
split: refinement and vectorisation run in the final task, as in ``extract``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

from roadprn.config import Config
from roadprn.infer.base_stage import (
    choose_tiling,
    open_scene_for_model,
    predict_strips,
    prepare_inference,
)
from roadprn.infer.predictor import Predictor, SegmentationModel
from roadprn.infer.stitch import Strip
from roadprn.infer.tiling import TilePlan
from roadprn.outputs.atomic import TMP_MARKER, temporary_sibling
from roadprn.raster.gdal_env import gdal_cache_bounded, read_masks, write_mask
from roadprn.raster.grid import Grid, inference_grid
from roadprn.raster.scene import open_scene
from roadprn.raster.write import WRITE_BLOCK

PIECE_ROWS_TAG = "ROADPRN_PIECE_ROWS"  # "start stop": the inference-grid rows a piece holds
# fewer tile rows per band and the one row of context on each side costs more than it gains
MIN_BAND_TILE_ROWS = 4
BANDS_PER_WORKER = 2  # a little more bands than workers keeps every worker busy to the end


def pieces_folder(scene_folder: Path, attempt: int) -> Path:
    """Where the bands of one attempt put their pieces; the name marks it temporary."""
    return scene_folder / f"base{TMP_MARKER}pieces-{attempt}"


def piece_path(folder: Path, index: int, tile_rows: tuple[int, int]) -> Path:
    return folder / f"band{index:04d}_rows{tile_rows[0]}-{tile_rows[1]}.tif"


def scene_tile_plan(scene: str, model: SegmentationModel, config: Config) -> TilePlan:
    """The tile plan a scene will run with, from its header only (no pixels read)."""
    info = open_scene(scene, allow_ungeoreferenced=True, check_readable=False)
    choice = choose_tiling(config, model, "cpu")  # the device only changes the batch size
    grid = inference_grid(info, model.gsd_m, resample=config.resolution.resample,
                          tolerance=config.resolution.tolerance,
                          max_factor=config.resolution.max_factor,
                          native_range=model.gsd_range_m if config.resolution.native_in_range
                          else None, force=config.resolution.force)
    return TilePlan(grid.width, grid.height, choice.tile_size, choice.halo, choice.blend_radius)


def band_ranges(tile_rows: int, workers: int, *, min_rows: int = MIN_BAND_TILE_ROWS,
                bands_per_worker: int = BANDS_PER_WORKER) -> list[tuple[int, int]]:
    """Tile-row ranges ``[a, b)`` of nearly equal size covering ``range(tile_rows)``.

    ``bands_per_worker × workers`` bands, but none with fewer than ``min_rows`` tile rows (each
    band also computes one tile row of context on either side); one band means "do not split".
    """
    count = max(1, min(workers * bands_per_worker, tile_rows // max(1, min_rows)))
    edges = [round(i * tile_rows / count) for i in range(count + 1)]
    return [(edges[i], edges[i + 1]) for i in range(count)]


@dataclass(frozen=True)
class BandResult:
    tile_rows: tuple[int, int]
    rows: tuple[int, int]  # inference-grid rows written to the piece
    tiles: int  # tiles run by the model, context rows included
    model_seconds: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"tile_rows": list(self.tile_rows), "rows": list(self.rows), "tiles": self.tiles,
                "model_seconds": round(self.model_seconds, 3), "seconds": round(self.seconds, 3)}


@gdal_cache_bounded
def predict_band(scene: str, config: Config, model: SegmentationModel,
                 tile_rows: tuple[int, int], piece: Path) -> BandResult:
    """Base-model probabilities of tile rows ``[a, b)`` of ``scene``, written to ``piece``.

    Same grid, tiling and normalisation as :func:`roadprn.infer.base_stage.extract_probability`. The
    piece appears under its final name only when complete, and only if its folder still exists
    (a scene given up meanwhile gets no stray files).
    """
    t_start = time.perf_counter()
    info, bands = open_scene_for_model(scene, model, config)
    setup = prepare_inference(info, bands, model, config)
    plan, grid = setup.plan, setup.grid
    a, b = tile_rows
    if not 0 <= a < b <= plan.n_rows:
        raise ValueError(f"{scene}: tile rows {a}-{b} are outside the scene's {plan.n_rows} rows")
    predictor = Predictor(model.module, setup.device, amp=config.inference.amp,
                          tta=config.inference.tta, compile=config.inference.compile,
                          outputs_logits=model.outputs_logits)
    stats: dict[str, float] = {}
    strips = predict_strips(
        info.path, bands, plan, setup.choice.batch_size, setup.normalizer, predictor,
        reader_threads=config.inference.reader_threads,
        prefetch_batches=config.inference.prefetch_batches, pad_mode=config.tiling.pad_mode,
        stats=stats, grid=grid, tile_rows=(a, b),
    )
    rows = (a * plan.stride, min(b * plan.stride, plan.height))
    write_piece(strips, piece, grid, info.crs, rows)
    computed = (min(plan.n_rows, b + 1) - max(0, a - 1)) * plan.n_cols
    return BandResult((a, b), rows, computed, stats["model_seconds"], time.perf_counter() - t_start)


def write_piece(strips: Iterator[Strip], piece: Path, grid: Grid, crs: Any,
                rows: tuple[int, int]) -> None:
    """Write grid rows ``[start, stop)`` from ``strips`` to a float32 GeoTIFF + validity mask."""
    start, stop = rows
    profile = {
        "driver": "GTiff", "width": grid.width, "height": stop - start, "count": 1,
        "dtype": "float32", "crs": crs, "transform": grid.transform * Affine.translation(0, start),
        "tiled": True, "blockxsize": WRITE_BLOCK, "blockysize": WRITE_BLOCK,
        "compress": "zstd", "zstd_level": 1, "bigtiff": "IF_SAFER",
    }
    tmp = temporary_sibling(piece)
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=256), \
                rasterio.open(tmp, "w", **profile) as ds:
            ds.update_tags(**{PIECE_ROWS_TAG: f"{start} {stop}"})
            written = start
            for strip in strips:
                if strip.row_off != written:
                    raise ValueError(f"{piece.name}: strip at row {strip.row_off}, "
                                     f"expected {written}")
                window = Window(0, strip.row_off - start, grid.width, strip.prob.shape[0])
                ds.write(strip.prob.astype(np.float32, copy=False)[None], window=window)
                write_mask(ds, (strip.valid * 255).astype(np.uint8), window=window)
                written += strip.prob.shape[0]
            if written != stop:
                raise ValueError(f"{piece.name}: strips ended at row {written}, expected {stop}")
        os.replace(tmp, piece)
    except BaseException:
        for leftover in tmp.parent.glob(tmp.name + "*"):
            leftover.unlink(missing_ok=True)
        raise


def piece_rows(ds: Any) -> tuple[int, int]:
    start, stop = map(int, ds.tags()[PIECE_ROWS_TAG].split())
    return start, stop


def read_pieces(pieces: Sequence[Path], rows_per_strip: int = WRITE_BLOCK * 2) -> Iterator[Strip]:
    """Full-width strips of the grid from its pieces, in row order, aligned to ``rows_per_strip``.

    The pieces must cover rows ``0..height`` without gap or overlap (checked); memory is one
    strip, whatever the scene size.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=256))
        spans = sorted(((*piece_rows(ds), ds) for ds in
                        (stack.enter_context(rasterio.open(p)) for p in pieces)),
                       key=lambda span: span[0])
        expected = 0
        for start, stop, ds in spans:
            if start != expected or ds.height != stop - start:
                raise ValueError(f"{ds.name}: holds rows {start}-{stop}, expected a piece from "
                                 f"row {expected}")
            expected = stop
        for row in range(0, expected, rows_per_strip):
            end = min(row + rows_per_strip, expected)
            probs, valids = [], []
            for start, stop, ds in spans:
                lo, hi = max(row, start), min(end, stop)
                if hi <= lo:
                    continue
                window = Window(0, lo - start, ds.width, hi - lo)
                probs.append(ds.read(1, window=window))
                valids.append(read_masks(ds, 1, window=window) > 0)
            yield Strip(row, np.concatenate(probs), np.concatenate(valids))


def header_tile_plan(scene: str, model: SegmentationModel, config: Config) -> TilePlan | None:
    """:func:`scene_tile_plan`, or None when the header cannot be read (the scene's own task
    then reports the error)."""
    try:
        return scene_tile_plan(scene, model, config)
    except Exception:  # noqa: BLE001
        return None


def choose_splits(plans: dict[str, TilePlan | None], split_tiles: int,
                  workers: int) -> dict[str, list[tuple[int, int]]]:
    """The bands of each scene worth splitting, by scene name; scenes not listed run whole.

    A scene is split when it has more than ``split_tiles`` tiles (0: never) *and* more than its
    fair share of the run (all tiles / workers): only then would it keep one worker busy after
    the others ran out of work. An archive of many similar scenes therefore runs one task per
    scene and pays nothing for the context rows bands compute twice.
    """
    if split_tiles <= 0:
        return {}
    share = sum(len(plan) for plan in plans.values() if plan is not None) / max(1, workers)
    splits = {}
    for name, plan in plans.items():
        if plan is None or len(plan) <= split_tiles or len(plan) <= share:
            continue
        bands = band_ranges(plan.n_rows, workers)
        if len(bands) > 1:
            splits[name] = bands
    return splits
