"""The extract pipeline for one scene: windows in, probability and mask COGs out.

Reading + normalising windows runs on a pool of reader threads (each with its own GDAL handle),
the model runs batches on one device in the calling thread, and finished row strips are written
by a writer thread, so I/O overlaps inference. Bounded queues between the stages keep memory set
by tile size × batch × prefetch, never by scene size. Outputs go to temporary names and are
renamed only when complete.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from roadprn import __version__
from roadprn.config import Config, NormalizationConfig
from roadprn.errors import ModelError
from roadprn.infer.predictor import (
    BatchPredictor,
    Predictor,
    SegmentationModel,
    resolve_device,
)
from roadprn.infer.stitch import Strip, StripStitcher
from roadprn.infer.tile_reader import DaskBatchLoader, ThreadLocalReader
from roadprn.infer.tiling import Tile, TilePlan
from roadprn.infer.writer import write_strips
from roadprn.outputs.atomic import (
    atomic_output,
    check_writable,
    remove_with_sidecars,
    temporary_sibling,
)
from roadprn.raster.gdal_env import gdal_cache_bounded
from roadprn.raster.grid import Grid, inference_grid
from roadprn.raster.normalize import BandNormalizer, make_normalizer
from roadprn.raster.read import read_window
from roadprn.raster.scene import SceneInfo, check_band_count, open_raster, open_scene
from roadprn.raster.styles import mask_qml, probability_qml, write_style
from roadprn.raster.write import WRITE_BLOCK, resample_to_scene, source_tag, to_cog

log = logging.getLogger(__name__)


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
    model: str = ""  # the base model that ran (name and file)

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
            "model": self.model,
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
    device_default = 16 if device_type == "cuda" else (model.cpu_batch_size or 4)
    batch = config.tiling.batch_size or model.batch_size or device_default
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
    bands = check_band_count(info, config.input.bands, model.in_channels, model.bands or ())
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
                      config: Config, *, statistics_from: str | Path | None = None
                      ) -> InferenceSetup:
    """Device, tiling, inference grid and normaliser of a scene (the normaliser reads a sample).

    ``statistics_from``: the raster whose values set a percentile normalisation (the whole
    scene when ``info`` is an area cut from it, so that the area's pixels are normalised, and
    so predicted, as in a whole-scene run); default ``info``'s own.
    """
    device = resolve_device(config.inference.device)
    choice = choose_tiling(config, model, device.type)
    grid = inference_grid(info, model.gsd_m, resample=config.resolution.resample,
                          tolerance=config.resolution.tolerance,
                          max_factor=config.resolution.max_factor,
                          native_range=model.gsd_range_m if config.resolution.native_in_range
                          else None, force=config.resolution.force)
    if grid.resampled:
        log.info("%s: resampling on the fly to the %s", info.path, grid.description)
    plan = TilePlan(grid.width, grid.height, choice.tile_size, choice.halo, choice.blend_radius)
    spec = normalization_spec(config, model)
    with open_raster(str(statistics_from or info.path)) as ds:
        normalizer = make_normalizer(ds, bands, spec)
    return InferenceSetup(info, bands, device, choice, grid, plan, normalizer)


@gdal_cache_bounded
def extract_probability(
    scene: str | Path,
    model: SegmentationModel,
    config: Config,
    out_dir: str | Path | None = None,
    *,
    progress: bool = False,
    precomputed_strips: Iterator[Strip] | None = None,
    extra_tags: dict[str, str] | None = None,
    statistics_from: str | Path | None = None,
) -> ExtractResult:
    """Run the base model over a whole scene; write probability (optional) and mask COGs.

    ``extra_tags``: added to (or replacing) the outputs' tags, e.g. the real source and window
    of a scene cut to an area of interest; ``statistics_from``: see :func:`prepare_inference`.

    ``precomputed_strips``: the stitched probabilities of the inference grid, already computed
    elsewhere (the bands of a scene split across batch workers): full-width strips in row order
    covering the grid. The model is not run; everything else (outputs, tags, resampling back to
    the scene grid, statistics) is as for a whole-scene run.
    """
    t_start = time.perf_counter()
    info, bands = open_scene_for_model(scene, model, config)
    paths = ExtractPaths.for_scene(scene, out_dir)
    overwrite = config.output.overwrite
    check_writable(paths.mask, overwrite)
    if config.output.write_probability:
        check_writable(paths.probability, overwrite)

    setup = prepare_inference(info, bands, model, config, statistics_from=statistics_from)
    device, choice, grid, plan, normalizer = (setup.device, setup.choice, setup.grid, setup.plan,
                                              setup.normalizer)
    torch_threads = torch.get_num_threads()  # set by the CLI / batch worker (runtime.settings)
    predictor = None
    if precomputed_strips is None:
        predictor = Predictor(model.module, device, amp=config.inference.amp,
                              tta=config.inference.tta, compile=config.inference.compile,
                              outputs_logits=model.outputs_logits)
    log.info("%s: %dx%d px, %d tiles of %d px (halo %d, batch %d) on %s with %d torch threads%s",
             info.path, info.width, info.height, len(plan), plan.tile_size, plan.halo,
             choice.batch_size, device, torch_threads,
             "" if predictor is not None else " (precomputed probabilities)")
    tags = {**_output_tags(info, model, config, normalizer, choice, grid), **(extra_tags or {})}

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
                assert precomputed_strips is not None  # no predictor only when precomputed
                stats["model_seconds"] = 0.0
                strips = _covering_grid(precomputed_strips, grid)
            sources = write_strips(strips, info, grid, config,
                                     raw_prob if prob_final else None, raw_mask, tags, stats,
                                     overviews=not grid.resampled)
            t_cog = time.perf_counter()
            if grid.resampled:  # back to the scene grid, still window by window
                back = temporary_sibling(paths.mask.with_name(f"{paths.mask.stem}_back.tif"))
                tmp_files.append(back)
                if prob_final is not None:
                    resample_to_scene(raw_prob, back, info, config, tags, kind="probability",
                                       bands=bands)
                    to_cog(back, prob_final, config.output, resampling="AVERAGE")
                    # the mask thresholds the resampled probability: smooth edges, not blocks
                    resample_to_scene(raw_prob, back, info, config, tags, kind="mask",
                                       threshold=config.output.threshold, bands=bands)
                else:
                    resample_to_scene(raw_mask, back, info, config, tags, kind="mask",
                                       bands=bands)
                to_cog(back, mask_final, config.output, resampling="NEAREST")
            else:  # GDAL releases the GIL: both conversions run at once
                jobs = [(sources[raw_mask], mask_final, "NEAREST")]
                if prob_final is not None:
                    jobs.append((sources[raw_prob], prob_final, "AVERAGE"))
                with ThreadPoolExecutor(len(jobs), "roadprn-cog") as pool:
                    for done in [pool.submit(to_cog, src, dst, config.output, resampling=r)
                                 for src, dst, r in jobs]:
                        done.result()
            stats["cog_seconds"] = time.perf_counter() - t_cog
            # QGIS's default styles beside the COGs (renamed with them: after them, inside)
            write_style(paths.mask, mask_qml(), overwrite)
            if prob_final is not None:
                write_style(paths.probability, probability_qml(), overwrite)
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
        timings={k: v for k, v in stats.items() if k.endswith("seconds")}, model=model.name,
    )


def normalization_spec(config: Config, model: SegmentationModel) -> NormalizationConfig:
    """The normalisation a scene gets: the config's, or with ``auto`` the checkpoint's own."""
    spec = config.input.normalization
    if spec.mode == "auto" and model.normalization:
        try:
            return NormalizationConfig.model_validate(model.normalization)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"model {model.name}: invalid normalisation in checkpoint "
                             f"({exc})") from None
    return spec


def predict_strips(
    path: str,
    bands: tuple[int, ...],
    plan: TilePlan,
    batch_size: int,
    normalizer: BandNormalizer,
    predictor: BatchPredictor,
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
    ``prefetch_batches`` batches ahead of the model
    (:class:`~roadprn.infer.tile_reader.DaskBatchLoader`).
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
        data, valid = read_window(reader.get(), nominal, bands=bands, halo=plan.halo,
                                  pad_mode=pad_mode)
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


def _stack_tiles(
        loaded: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One (B, C, H, W) model input plus the per-tile validity masks."""
    return np.stack([data for data, _ in loaded]), [valid for _, valid in loaded]


def _predict_batch(tiles: list[Tile], data: np.ndarray, valid: list[np.ndarray],
                   predictor: BatchPredictor, stitcher: StripStitcher, stats: dict[str, float],
                   bar: Any) -> Iterator[Strip]:
    t0 = time.perf_counter()
    prob = predictor(data)
    stats["model_seconds"] += time.perf_counter() - t0
    bar.update(len(tiles))
    for tile, tile_prob, tile_valid in zip(tiles, prob, valid, strict=True):
        yield from stitcher.add(tile, tile_prob, tile_valid)


def _output_tags(info: SceneInfo, model: SegmentationModel, config: Config,
                 normalizer: BandNormalizer, choice: TilingChoice, grid: Grid) -> dict[str, str]:
    return {
        "ROADPRN_VERSION": __version__,
        "ROADPRN_SOURCE": source_tag(info.path),
        "ROADPRN_GRID": "scene",
        "ROADPRN_INFERENCE_GRID": grid.description,
        "ROADPRN_MODEL": model.name,
        "ROADPRN_MODEL_SHA256": model.sha256 or "unknown",
        "ROADPRN_THRESHOLD": str(config.output.threshold),
        "ROADPRN_TILING": json.dumps(choice.__dict__),
        "ROADPRN_NORMALIZATION": json.dumps(normalizer.as_dict()),
        "ROADPRN_CONFIG": json.dumps(config.pipeline_dict(), sort_keys=True),
    }


def _progress_bar(total: int, path: str, plan: TilePlan, enabled: bool):
    from roadprn.runtime.progress import progress_bar

    name = Path(path).name
    mpix_per_tile = plan.width * plan.height / 1e6 / max(total, 1)
    bar = progress_bar(total=total, unit="tile", desc=f"{name} base model", enabled=enabled,
                       dynamic_ncols=True, leave=False)
    original = bar.update

    def update(n: int = 1) -> None:
        original(n)
        rate = bar.format_dict.get("rate")
        if rate:
            bar.set_postfix_str(f"{rate * mpix_per_tile:.2f} MPix/s", refresh=False)

    bar.update = update
    return bar
