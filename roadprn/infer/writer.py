"""Stitched strips to raw tiled GeoTIFFs on a writer thread, overview levels built on the way.

Compression overlaps inference; at most two strips wait, so memory does not grow with the scene."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from roadprn.config import Config
from roadprn.infer.stitch import Strip
from roadprn.raster.gdal_env import write_mask
from roadprn.raster.grid import Grid
from roadprn.raster.masks import is_road
from roadprn.raster.overviews import StreamedOverviews
from roadprn.raster.scene import SceneInfo
from roadprn.raster.styles import MASK_STYLE, PROBABILITY_STYLE, BandStyle
from roadprn.raster.write import COG_BLOCK, GDAL_CACHE_MB, MASK_NODATA, open_raw, raw_profile


def write_strips(
    strips: Iterator[Strip],
    info: SceneInfo,
    grid: Grid,
    config: Config,
    raw_prob: Path | None,
    raw_mask: Path,
    tags: dict[str, str],
    stats: dict[str, float],
    *,
    overviews: bool = True,
    mask_style: BandStyle = MASK_STYLE,
) -> dict[Path, Path]:
    """Write strips on a writer thread (so compression overlaps inference), at most two queued.

    Returns what to convert to a COG for each raw raster: with ``overviews`` a VRT that adds
    the overview levels built on the way (:mod:`roadprn.raster.overviews`), else the raw file
    itself. The mask's band carries ``mask_style`` (description, colour table), the
    probability's :data:`~roadprn.raster.styles.PROBABILITY_STYLE`.
    """
    threshold = config.output.threshold
    profile = raw_profile(info, grid, config.output.compress)
    stats.update(road_pixels=0.0, valid_pixels=0.0, write_wait_seconds=0.0)
    mask_levels: StreamedOverviews | None = None
    prob_levels: StreamedOverviews | None = None
    # exits in reverse: the writer thread finishes before anything it writes to is closed
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_MB), \
            open_raw(raw_mask, profile, nodata=MASK_NODATA, tags=tags,
                     style=mask_style) as mask_ds, \
            open_raw(raw_prob, profile, nodata=None, tags=tags,
                     style=PROBABILITY_STYLE) as prob_ds, \
            contextlib.ExitStack() as closing, \
            ThreadPoolExecutor(1, "roadprn-write") as writer_pool:
        if overviews:
            mask_levels = StreamedOverviews(raw_mask, grid.width, grid.height, profile,
                                            "nearest", nodata=MASK_NODATA, blocksize=COG_BLOCK)
            closing.callback(mask_levels.close)
            if raw_prob is not None:
                prob_levels = StreamedOverviews(raw_prob, grid.width, grid.height, profile,
                                                "average", blocksize=COG_BLOCK)
                closing.callback(prob_levels.close)

        def write(strip: Strip) -> None:
            # uint8 throughout: a full-width strip of a wide scene is tens of MB per copy
            invalid = ~strip.valid
            window = Window(0, strip.row_off, grid.width, strip.prob.shape[0])
            mask = is_road(strip.prob, threshold).view(np.uint8)
            mask[invalid] = MASK_NODATA
            mask_ds.write(mask[None], window=window)
            if mask_levels is not None:
                mask_levels.add(mask, strip.valid)
            if prob_ds is not None:
                # in place: the strip is this writer's own copy, and a scaled copy of a wide
                # strip would be the largest temporary of the run
                owned = strip.prob.dtype == np.float32 and strip.prob.flags.writeable
                scaled = np.multiply(strip.prob, 255.0, out=strip.prob if owned else None,
                                     dtype=np.float32)
                np.rint(scaled, out=scaled)
                prob = scaled.astype(np.uint8)
                prob[invalid] = 0
                prob_ds.write(prob[None], window=window)
                write_mask(prob_ds, strip.valid.view(np.uint8) * np.uint8(255), window=window)
                if prob_levels is not None:
                    prob_levels.add(prob, strip.valid)
            stats["road_pixels"] += float(np.count_nonzero(mask == 1))
            stats["valid_pixels"] += float(np.count_nonzero(strip.valid))

        pending: deque[Future] = deque()
        try:
            for strip in strips:
                while len(pending) >= 2:
                    t0 = time.perf_counter()
                    pending.popleft().result()
                    stats["write_wait_seconds"] += time.perf_counter() - t0
                pending.append(writer_pool.submit(write, strip))
            while pending:
                pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
    # the levels were closed (odd rows flushed) on leaving the block above
    sources = {raw: raw for raw in (raw_mask, raw_prob) if raw is not None}
    for levels, style in ((mask_levels, mask_style), (prob_levels, PROBABILITY_STYLE)):
        if levels is not None:
            sources[levels.base] = levels.write_vrt(info.crs, grid.transform, tags,
                                                    style.vrt_xml())
    return sources
