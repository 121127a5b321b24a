"""The extract pipeline for one scene: windows in, probability and mask COGs out.

Reading + normalising windows runs on a pool of reader threads (each with its own GDAL handle),
the model runs batches on one device in the calling thread, and finished row strips are written
by a writer thread, so I/O overlaps inference. Bounded queues between the stages keep memory set
by tile size × batch × prefetch, never by scene size. Outputs go to temporary names and are
renamed only when complete.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from roadprn import __version__
from roadprn.config import Config, NormalizationConfig, OutputConfig
from roadprn.errors import InputError, ModelError
from roadprn.grid import Grid, inference_grid, scene_grid
from roadprn.inference import (
    Predictor,
    SegmentationModel,
    configure_torch_threads,
    resolve_device,
)
from roadprn.io import atomic_output, check_writable, remove_with_sidecars, temporary_sibling
from roadprn.overviews import StreamedOverviews
from roadprn.raster import (
    DEFAULT_GDAL_CACHE_MB,
    GDAL_ERRORS,
    MASK_IO_LOCK,
    BandNormalizer,
    SceneInfo,
    check_band_count,
    check_blocks_readable,
    limit_gdal_cache,
    make_normalizer,
    open_dataset,
    open_raster,
    open_scene,
    read_valid,
    read_window,
    validity_sources,
)
from roadprn.stitch import Strip, StripStitcher
from roadprn.tile_reader import DaskBatchLoader, ThreadLocalReader
from roadprn.tiling import Tile, TilePlan

log = logging.getLogger(__name__)

MASK_NODATA = 255
WRITE_BLOCK = 256
COG_BLOCK = 512
# GDAL's block cache (MB) while writing: strips are full-width and block-aligned, so blocks are
# complete when written and need no caching; GDAL's default (5 % of RAM) would grow with the scene.
GDAL_CACHE_MB = DEFAULT_GDAL_CACHE_MB


@dataclass(frozen=True)
class ExtractPaths:
    folder: Path
    probability: Path
    mask: Path

    @classmethod
    def for_scene(cls, scene: str | Path, out_dir: str | Path | None = None) -> ExtractPaths:
        """Default folder: ``<scene folder>/<scene stem>_roadprn/``; files named after the scene."""
        scene = Path(str(scene))
        stem = scene.stem or "scene"
        folder = Path(out_dir) if out_dir is not None else scene.parent / f"{stem}_roadprn"
        return cls(folder, folder / f"{stem}_probability.tif", folder / f"{stem}_mask.tif")


@dataclass
class ExtractResult:
    scene: str
    paths: ExtractPaths
    width: int
    height: int
    tiles: int
    tile_size: int
    halo: int
    batch_size: int
    halo_fraction: float
    seconds: float
    model_seconds: float
    device: str
    road_fraction: float
    grid: str = "scene"
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def mpix_per_s(self) -> float:
        return self.width * self.height / 1e6 / max(self.seconds, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scene": self.scene,
            "probability": str(self.paths.probability) if self.paths.probability.exists() else None,
            "mask": str(self.paths.mask),
            "width": self.width,
            "height": self.height,
            "tiles": self.tiles,
            "tile_size": self.tile_size,
            "halo": self.halo,
            "batch_size": self.batch_size,
            "halo_fraction": round(self.halo_fraction, 4),
            "seconds": round(self.seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "mpix_per_s": round(self.mpix_per_s, 3),
            "device": self.device,
            "road_fraction": round(self.road_fraction, 5),
            "inference_grid": self.grid,
        }


@dataclass(frozen=True)
class TilingChoice:
    tile_size: int
    halo: int
    batch_size: int
    blend_radius: int


def choose_tiling(config: Config, model: SegmentationModel, device_type: str) -> TilingChoice:
    """Config wins, then the checkpoint's suggestion, then defaults."""
    tile = config.tiling.tile_size or model.tile_size or 512
    halo = config.tiling.halo if config.tiling.halo is not None else model.halo
    batch = config.tiling.batch_size or model.batch_size or (16 if device_type == "cuda" else 4)
    if tile <= 2 * halo:
        from roadprn.errors import ConfigError

        raise ConfigError(f"tiling.tile_size ({tile}) must be larger than 2 x tiling.halo ({halo})")
    blend = halo // 2 if config.tiling.blend == "hann" else 0
    return TilingChoice(tile, halo, batch, blend)


@dataclass(frozen=True)
class InferenceSetup:
    """Everything decided before the model runs on a scene: grid, tiles, bands, normalisation.

    Decided by one function so that the bands of a scene split across workers and the whole
    scene in ``extract`` compute exactly the same rows.
    """

    info: SceneInfo
    bands: tuple[int, ...]
    device: Any  # torch.device
    choice: TilingChoice
    grid: Grid
    plan: TilePlan
    normalizer: BandNormalizer


def open_scene_for_model(scene: str | Path, model: SegmentationModel,
                         config: Config) -> tuple[SceneInfo, tuple[int, ...]]:
    """Open and validate ``scene``; return it with the bands to feed ``model`` (checked)."""
    info = open_scene(scene, allow_ungeoreferenced=config.input.allow_ungeoreferenced)
    if not config.input.bands and model.bands and max(model.bands) > info.count:
        raise InputError(
            f"{info.path}: the model reads band(s) {list(model.bands)} ({model.in_channels}-band input) "
            f"but the scene has {info.count} band(s); pick bands with --bands (e.g. --bands "
            f"{','.join(['1'] * model.in_channels)}) or use a model for {info.count}-band imagery"
            + (" (--model default-pan)" if info.count == 1 else ""))
    bands = check_band_count(info, config.input.bands or model.bands, model.in_channels)
    unused = [b for b in info.data_bands if b not in bands]
    if not config.input.bands and unused:
        # a 16-band or R,G,B,NIR scene: the model's bands may not be the scene's colours
        log.warning("%s: %d data bands; the model reads band(s) %s (%s) and ignores %s; choose "
                    "others with --bands", info.path, len(info.data_bands),
                    ",".join(map(str, bands)),
                    ", ".join(info.colorinterp[b - 1] for b in bands),
                    _band_list(unused))
    return info, bands


def _band_list(bands: list[int]) -> str:
    """``[4]`` -> "band 4"; ``[4..16]`` -> "bands 4-16" (a short line for many bands)."""
    if len(bands) == 1:
        return f"band {bands[0]}"
    if bands == list(range(bands[0], bands[-1] + 1)):
        return f"bands {bands[0]}-{bands[-1]}"
    return "bands " + ",".join(map(str, bands))


def prepare_inference(info: SceneInfo, bands: tuple[int, ...], model: SegmentationModel,
                      config: Config) -> InferenceSetup:
    """Device, tiling, inference grid and normaliser of a scene (the normaliser reads a sample)."""
    device = resolve_device(config.inference.device)
    choice = choose_tiling(config, model, device.type)
    grid = inference_grid(info, model.gsd_m, resample=config.resolution.resample,
                          tolerance=config.resolution.tolerance,
                          max_factor=config.resolution.max_factor)
    if grid.resampled:
        log.info("%s: resampling on the fly to the %s", info.path, grid.description)
    plan = TilePlan(grid.width, grid.height, choice.tile_size, choice.halo, choice.blend_radius)
    spec = _normalization_spec(config, model)
    with open_raster(info.path) as ds:
        normalizer = make_normalizer(ds, bands, spec)
    return InferenceSetup(info, bands, device, choice, grid, plan, normalizer)


def extract_probability(
    scene: str | Path,
    model: SegmentationModel,
    config: Config,
    out_dir: str | Path | None = None,
    *,
    progress: bool = False,
    precomputed_strips: Iterator[Strip] | None = None,
) -> ExtractResult:
    """Run the base model over a whole scene; write probability (optional) and mask COGs.

    ``precomputed_strips``: the stitched probabilities of the inference grid, already computed
    elsewhere (the bands of a scene split across batch workers): full-width strips in row order
    covering the grid. The model is not run; everything else (outputs, tags, resampling back to
    the scene grid, statistics) is as for a whole-scene run.
    """
    t_start = time.perf_counter()
    limit_gdal_cache()
    info, bands = open_scene_for_model(scene, model, config)
    paths = ExtractPaths.for_scene(scene, out_dir)
    overwrite = config.output.overwrite
    check_writable(paths.mask, overwrite)
    if config.output.write_probability:
        check_writable(paths.probability, overwrite)

    setup = prepare_inference(info, bands, model, config)
    device, choice, grid, plan, normalizer = (setup.device, setup.choice, setup.grid, setup.plan,
                                              setup.normalizer)
    torch_threads = configure_torch_threads(config.inference.torch_threads, config.inference.reader_threads)
    predictor = None
    if precomputed_strips is None:
        predictor = Predictor(model.module, device, amp=config.inference.amp,
                              tta=config.inference.tta, compile=config.inference.compile,
                              outputs_logits=model.outputs_logits)
    log.info("%s: %dx%d px, %d tiles of %d px (halo %d, batch %d) on %s with %d torch threads%s",
             info.path, info.width, info.height, len(plan), plan.tile_size, plan.halo,
             choice.batch_size, device, torch_threads,
             "" if predictor is not None else " (precomputed probabilities)")
    tags = _output_tags(info, model, config, normalizer, choice, grid)

    tmp_files: list[Path] = []
    stats: dict[str, float] = {}
    try:
        with contextlib.ExitStack() as stack:
            mask_final = stack.enter_context(atomic_output(paths.mask, overwrite))
            prob_final = (stack.enter_context(atomic_output(paths.probability, overwrite))
                          if config.output.write_probability else None)
            raw_mask = temporary_sibling(paths.mask.with_name(f"{paths.mask.stem}_raw.tif"))
            raw_prob = temporary_sibling(paths.probability.with_name(
                f"{paths.probability.stem}_raw.tif"))
            tmp_files += [raw_mask, raw_prob]
            if predictor is not None:
                strips = predict_strips(
                    info.path, bands, plan, choice.batch_size, normalizer, predictor,
                    reader_threads=config.inference.reader_threads,
                    prefetch_batches=config.inference.prefetch_batches,
                    pad_mode=config.tiling.pad_mode, stats=stats, progress=progress, grid=grid,
                )
            else:
                stats["model_seconds"] = 0.0
                strips = _covering_grid(precomputed_strips, grid)
            sources = _write_outputs(strips, info, grid, config,
                                     raw_prob if prob_final else None, raw_mask, tags, stats,
                                     overviews=not grid.resampled)
            t_cog = time.perf_counter()
            if grid.resampled:  # back to the scene grid, still window by window
                back = temporary_sibling(paths.mask.with_name(f"{paths.mask.stem}_back.tif"))
                tmp_files.append(back)
                if prob_final is not None:
                    _resample_to_scene(raw_prob, back, info, config, tags, kind="probability",
                                       bands=bands)
                    _to_cog(back, prob_final, config.output, resampling="AVERAGE")
                    # the mask thresholds the resampled probability: smooth edges, not blocks
                    _resample_to_scene(raw_prob, back, info, config, tags, kind="mask",
                                       threshold=config.output.threshold, bands=bands)
                else:
                    _resample_to_scene(raw_mask, back, info, config, tags, kind="mask",
                                       bands=bands)
                _to_cog(back, mask_final, config.output, resampling="NEAREST")
            else:  # GDAL releases the GIL: both conversions run at once
                jobs = [(sources[raw_mask], mask_final, "NEAREST")]
                if prob_final is not None:
                    jobs.append((sources[raw_prob], prob_final, "AVERAGE"))
                with ThreadPoolExecutor(len(jobs), "roadprn-cog") as pool:
                    for done in [pool.submit(_to_cog, src, dst, config.output, resampling=r)
                                 for src, dst, r in jobs]:
                        done.result()
            stats["cog_seconds"] = time.perf_counter() - t_cog
    finally:
        for tmp in tmp_files:
            remove_with_sidecars(tmp)

    seconds = time.perf_counter() - t_start
    return ExtractResult(
        scene=info.path, paths=paths, width=info.width, height=info.height, tiles=len(plan),
        grid=grid.description,
        tile_size=plan.tile_size, halo=plan.halo, batch_size=choice.batch_size,
        halo_fraction=plan.halo_fraction, seconds=seconds, model_seconds=stats["model_seconds"],
        device=str(device), road_fraction=stats["road_pixels"] / max(1, stats["valid_pixels"]),
        timings={k: v for k, v in stats.items() if k.endswith("seconds")},
    )


def _normalization_spec(config: Config, model: SegmentationModel) -> NormalizationConfig:
    spec = config.input.normalization
    if spec.mode == "auto" and model.normalization:
        try:
            return NormalizationConfig.model_validate(model.normalization)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"model {model.name}: invalid normalisation in checkpoint ({exc})") from None
    return spec


def predict_strips(
    path: str,
    bands: tuple[int, ...],
    plan: TilePlan,
    batch_size: int,
    normalizer: BandNormalizer,
    predictor: Predictor,
    *,
    reader_threads: int = 2,
    prefetch_batches: int = 2,
    pad_mode: str = "reflect",
    stats: dict[str, float] | None = None,
    progress: bool = False,
    grid: Grid | None = None,
    tile_rows: tuple[int, int] | None = None,
) -> Iterator[Strip]:
    """Stitched float probabilities of the whole scene, as finished full-width row strips.

    Reads and normalisation run as Dask tasks on ``reader_threads`` threads, up to
    ``prefetch_batches`` batches ahead of the model (:class:`~roadprn.tile_reader.DaskBatchLoader`).
    ``tile_rows=(a, b)``: only scene rows ``[a, b) x stride`` (a band
    of a scene split across workers), computed with one tile row of context on each side so that
    they equal the same rows of the whole scene.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("model_seconds", 0.0)
    reader = ThreadLocalReader(path, grid)

    def read(tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        # the nominal core (stride²) even where the scene ends inside it, so every tile has the
        # same shape; read_window pads beyond the edge and marks it invalid
        nominal = Window(tile.core.col_off, tile.core.row_off, plan.stride, plan.stride)
        data, valid = read_window(reader.get(), nominal, bands=bands, halo=plan.halo, pad_mode=pad_mode)
        return normalizer(data), valid

    rows = range(plan.n_rows)
    keep = None
    if tile_rows is not None:
        rows = range(max(0, tile_rows[0] - 1), min(plan.n_rows, tile_rows[1] + 1))
        keep = (tile_rows[0] * plan.stride, min(tile_rows[1] * plan.stride, plan.height))
    stitcher = StripStitcher(plan, align=WRITE_BLOCK, first_row=rows.start)
    bar = _progress_bar(len(rows) * plan.n_cols, path, plan, progress)
    tiles = (plan.tile(r, c) for r in rows for c in range(plan.n_cols))
    batches = iter(lambda: list(itertools.islice(tiles, batch_size)), [])
    try:
        with DaskBatchLoader(batches, read, threads=reader_threads, depth=prefetch_batches,
                             collate=_stack_tiles) as loader:
            for batch_tiles, (data, valid) in loader:
                strips = _predict_batch(batch_tiles, data, valid, predictor, stitcher, stats, bar)
                yield from _keep_rows(strips, keep)
            yield from _keep_rows(stitcher.finish(rows.stop - 1), keep)
    finally:
        bar.close()
        reader.close()


def _covering_grid(strips: Iterator[Strip], grid: Grid) -> Iterator[Strip]:
    """``strips`` checked to tile ``grid`` exactly (in order, full width): no output with gaps."""
    next_row = 0
    for strip in strips:
        shape = (strip.prob.shape[0], grid.width)
        if strip.row_off != next_row or strip.prob.shape != shape or strip.valid.shape != shape:
            raise ValueError(f"precomputed strip at row {strip.row_off} ({strip.prob.shape}) does "
                             f"not continue a {grid.width}-px wide grid at row {next_row}")
        next_row += shape[0]
        yield strip
    if next_row != grid.height:
        raise ValueError(f"precomputed strips end at row {next_row} of a {grid.height}-row grid")


def _keep_rows(strips: Iterator[Strip], keep: tuple[int, int] | None) -> Iterator[Strip]:
    """Strips cut to scene rows ``keep = [start, stop)``; all of them when ``keep`` is None."""
    for strip in strips:
        if keep is None:
            yield strip
            continue
        lo = max(keep[0], strip.row_off)
        hi = min(keep[1], strip.row_off + strip.prob.shape[0])
        if hi > lo:
            a, b = lo - strip.row_off, hi - strip.row_off
            yield Strip(lo, strip.prob[a:b], strip.valid[a:b])


def _stack_tiles(loaded: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One (B, C, H, W) model input plus the per-tile validity masks."""
    return np.stack([data for data, _ in loaded]), [valid for _, valid in loaded]


def _predict_batch(tiles: list[Tile], data: np.ndarray, valid: list[np.ndarray],
                   predictor: Predictor, stitcher: StripStitcher, stats: dict[str, float],
                   bar: Any) -> Iterator[Strip]:
    t0 = time.perf_counter()
    prob = predictor(data)
    stats["model_seconds"] += time.perf_counter() - t0
    bar.update(len(tiles))
    for tile, tile_prob, tile_valid in zip(tiles, prob, valid, strict=True):
        yield from stitcher.add(tile, tile_prob, tile_valid)


def _write_outputs(
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
) -> dict[Path, Path]:
    """Write strips on a writer thread (so compression overlaps inference), at most two queued.

    Returns what to convert to a COG for each raw raster: with ``overviews`` a VRT that adds
    the overview levels built on the way (:mod:`roadprn.overviews`), else the raw file itself.
    """
    threshold = config.output.threshold
    profile = _raw_profile(info, grid, config.output.compress)
    stats.update(road_pixels=0.0, valid_pixels=0.0, write_wait_seconds=0.0)
    mask_levels: StreamedOverviews | None = None
    prob_levels: StreamedOverviews | None = None
    # exits in reverse: the writer thread finishes before anything it writes to is closed
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_MB), \
            _open_raw(raw_mask, profile, nodata=MASK_NODATA, tags=tags) as mask_ds, \
            _open_raw(raw_prob, profile, nodata=None, tags=tags) as prob_ds, \
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
            mask = (strip.prob > threshold).view(np.uint8)
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
                with MASK_IO_LOCK:
                    prob_ds.write_mask(strip.valid.view(np.uint8) * np.uint8(255),
                                       window=window)
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
    for levels in (mask_levels, prob_levels):
        if levels is not None:
            sources[levels.base] = levels.write_vrt(info.crs, grid.transform, tags)
    return sources


def _raw_profile(info: SceneInfo, grid: Grid, compress: str) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": "uint8",
        "crs": info.crs,
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": WRITE_BLOCK,
        "blockysize": WRITE_BLOCK,
        # temporary file, rewritten as the COG: the fastest codec GTiff has
        "compress": "zstd",
        "zstd_level": 1,
        "bigtiff": "IF_SAFER",
    }


@contextlib.contextmanager
def _open_raw(path: Path | None, profile: dict[str, Any], *, nodata: float | None,
              tags: dict[str, str]) -> Iterator[Any]:
    if path is None:
        yield None
        return
    with rasterio.open(path, "w", nodata=nodata, **profile) as ds:
        ds.update_tags(**tags)
        yield ds


def _resample_to_scene(source: Path, out: Path, info: SceneInfo, config: Config,
                       tags: dict[str, str], *, kind: str, threshold: float | None = None,
                       bands: tuple[int, ...] = ()) -> None:
    """Warp a model-grid output back onto the scene grid in row strips (bounded memory).

    ``kind="mask"`` with a ``threshold`` makes the mask from a probability source (bilinear, then
    thresholded); without one the source is a mask and is resampled nearest-neighbour. Pixels
    the scene itself marks invalid in ``bands`` (nodata, alpha, masks) stay invalid, whatever
    the round trip through the model grid interpolated there.
    """
    target = scene_grid(info)
    profile = _raw_profile(info, target, config.output.compress)
    out.unlink(missing_ok=True)
    nearest = kind == "mask" and threshold is None
    rows = WRITE_BLOCK * 4
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_MB), \
            open_dataset(source) as src, \
            WarpedVRT(src, crs=src.crs, transform=target.transform, width=target.width,
                      height=target.height, add_alpha=True,
                      resampling=Resampling.nearest if nearest else Resampling.bilinear) as vrt, \
            _open_raw(out, profile, nodata=MASK_NODATA if kind == "mask" else None,
                      tags=tags) as dst, \
            open_dataset(info.path) as scene:
        try:
            sources = validity_sources(scene, bands) if bands else None
        except GDAL_ERRORS as exc:
            raise InputError(f"{scene.name}: cannot read the scene's validity "
                             f"({' '.join(str(exc).split())[:200]})") from None
        for row in range(0, target.height, rows):
            window = Window(0, row, target.width, min(rows, target.height - row))
            values = vrt.read(1, window=window)
            valid = vrt.read(2, window=window) > 0
            if sources is not None and not sources.trivial:
                valid &= _scene_valid(scene, bands, window, sources)
            if kind == "mask":
                if threshold is not None:
                    values = values.astype(np.float32) / 255.0 > threshold
                dst.write(np.where(valid, values, MASK_NODATA).astype(np.uint8)[None], window=window)
            else:
                dst.write(np.where(valid, values, 0).astype(np.uint8)[None], window=window)
                dst.write_mask((valid * 255).astype(np.uint8), window=window)


def _scene_valid(scene: Any, bands: tuple[int, ...], window: Window, sources: Any) -> np.ndarray:
    """The scene's own validity in ``window`` (a GDAL failure names the scene, exit 3)."""
    try:
        return read_valid(scene, bands, window, sources=sources)[1]
    except GDAL_ERRORS as exc:
        raise InputError(f"{scene.name}: cannot read the scene's validity in rows "
                         f"{int(window.row_off)}..{int(window.row_off + window.height)} "
                         f"({' '.join(str(exc).split())[:200]})") from None


def _to_cog(src: Path, dst: Path, output: OutputConfig, resampling: str) -> None:
    """Rewrite a finished raster as a Cloud-Optimised GeoTIFF with overviews (GDAL streams it).

    A VRT from :func:`_write_outputs` brings its overviews along; anything else gets them
    computed here with ``resampling``.
    """
    options: dict[str, Any] = {"COMPRESS": output.compress.upper()}
    if output.compress != "zstd":
        options["PREDICTOR"] = "YES"
    if output.compress_level is not None and output.compress != "lzw":
        options["LEVEL"] = output.compress_level
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_MB):
        rasterio.shutil.copy(src, dst, driver="COG", BLOCKSIZE=COG_BLOCK, OVERVIEWS="AUTO",
                             RESAMPLING=resampling, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
                             **options)
    check_reads_back(dst)


def check_reads_back(path: Path) -> None:
    """Open a raster just written and read it back like a scene's validation, or raise.

    GDAL's COG driver can report success for a file it could not finish (seen on a full disk:
    the last directory missing, exit 0, a raster nobody can open). ``check_blocks_readable``
    reads the corner blocks of every level, where such a file is broken; our own output
    failing is an I/O error, not a bad input.
    """
    try:
        with rasterio.open(path) as ds:
            check_blocks_readable(ds)
    except (InputError, *GDAL_ERRORS) as exc:
        raise OSError(errno.EIO, f"the file written does not read back "
                      f"({' '.join(str(exc).split())[:200]})", str(path)) from exc


def _output_tags(info: SceneInfo, model: SegmentationModel, config: Config,
                 normalizer: BandNormalizer, choice: TilingChoice, grid: Grid) -> dict[str, str]:
    return {
        "ROADPRN_VERSION": __version__,
        "ROADPRN_SOURCE": info.path,
        "ROADPRN_GRID": "scene",
        "ROADPRN_INFERENCE_GRID": grid.description,
        "ROADPRN_MODEL": model.name,
        "ROADPRN_MODEL_SHA256": model.sha256 or "unknown",
        "ROADPRN_THRESHOLD": str(config.output.threshold),
        "ROADPRN_TILING": json.dumps(choice.__dict__),
        "ROADPRN_NORMALIZATION": json.dumps(normalizer.as_dict()),
        "ROADPRN_CONFIG": json.dumps(config.to_yaml_dict(), sort_keys=True),
    }


def _progress_bar(total: int, path: str, plan: TilePlan, enabled: bool):
    from tqdm import tqdm

    name = Path(path).name
    mpix_per_tile = plan.width * plan.height / 1e6 / max(total, 1)
    bar = tqdm(total=total, unit="tile", desc=name, disable=not enabled, dynamic_ncols=True,
               leave=False)
    original = bar.update

    def update(n: int = 1) -> None:
        original(n)
        rate = bar.format_dict.get("rate")
        if rate:
            bar.set_postfix_str(f"{rate * mpix_per_tile:.2f} MPix/s", refresh=False)

    bar.update = update  # type: ignore[method-assign]
    return bar
