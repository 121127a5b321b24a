"""PRN training data: base-model probability maps and their ground truth, cut into windows.

PRN learns the base model's bias, so its maps must come from the base model exactly as
``extract`` produces them (the tiled engine, the probability COG quantised to uint8 on the
scene grid) and from scenes the base model was **not** trained on: on its own training
images the base map is over-confident and PRN learns little. Maps are cut on a regular grid
of ``map_size`` windows (the last window of a row/column is moved back to end at the edge, so
every pixel is covered without padding); windows with too little labelled area are dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from roadprn.config import Config
from roadprn.errors import ConfigError, InputError
from roadprn.infer.predictor import SegmentationModel
from roadprn.prn.train import PRNTrainSettings, PRNTrainState
from roadprn.raster.labels import SceneGrid, is_vector_labels, labels_to_mask
from roadprn.raster.scene import open_raster

log = logging.getLogger(__name__)

MIN_VALID_FRACTION = 0.5  # windows with less labelled, valid area teach little


@dataclass
class PRNMaps:
    """(N, S, S) probability maps in [0, 1] and bool truth; ``sources[i]`` names map i's scene."""

    prob: np.ndarray
    truth: np.ndarray
    sources: list[str] = field(default_factory=list)
    origins: list[tuple[int, int]] = field(default_factory=list)  # (row, col) in the source

    def __post_init__(self) -> None:
        if self.prob.shape != self.truth.shape or self.prob.ndim != 3:
            raise ValueError(f"maps {self.prob.shape} and truth {self.truth.shape} must be (N,S,S)")
        if not self.sources:
            self.sources = ["maps"] * len(self.prob)
        if not self.origins:
            self.origins = [(0, 0)] * len(self.prob)

    def __len__(self) -> int:
        return len(self.prob)

    @property
    def map_size(self) -> int:
        return int(self.prob.shape[-1])

    def subset(self, index: Sequence[int] | np.ndarray) -> PRNMaps:
        index = np.asarray(index, dtype=int)
        return PRNMaps(self.prob[index], self.truth[index], [self.sources[i] for i in index],
                       [self.origins[i] for i in index])

    @staticmethod
    def concat(parts: Sequence[PRNMaps], map_size: int) -> PRNMaps:
        parts = [p for p in parts if len(p)]
        if not parts:
            empty = np.zeros((0, map_size, map_size), np.float32)
            return PRNMaps(empty, empty.astype(bool), [], [])
        return PRNMaps(
            np.concatenate([p.prob for p in parts]), np.concatenate([p.truth for p in parts]),
            [s for p in parts for s in p.sources], [o for p in parts for o in p.origins])


def window_starts(length: int, size: int) -> list[int]:
    """Non-overlapping starts, the last one moved back to end at ``length`` (one if it fits)."""
    if length < size:
        return []
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def cut_maps(
    prob: np.ndarray,
    truth: np.ndarray,
    map_size: int,
    *,
    valid: np.ndarray | None = None,
    source: str = "scene",
    min_valid_fraction: float = MIN_VALID_FRACTION,
) -> PRNMaps:
    """Windows of ``map_size`` from one (H, W) map pair; invalid pixels become 0 in both.

    A scene smaller than ``map_size`` is zero-padded (as ``extract`` pads beyond scene edges).
    """
    if prob.shape != truth.shape or prob.ndim != 2:
        raise ValueError(f"{source}: probability {prob.shape} and truth {truth.shape} differ")
    valid = np.ones(prob.shape, bool) if valid is None else valid
    prob = np.where(valid, prob, 0).astype(np.float32)
    truth = valid & (truth != 0)
    height, width = prob.shape
    if height < map_size or width < map_size:
        pad = ((0, max(0, map_size - height)), (0, max(0, map_size - width)))
        prob, truth, valid = (np.pad(a, pad) for a in (prob, truth, valid))
        height, width = prob.shape
    maps, truths, origins = [], [], []
    for row in window_starts(height, map_size):
        for col in window_starts(width, map_size):
            window = np.s_[row : row + map_size, col : col + map_size]
            if valid[window].mean() < min_valid_fraction:
                continue
            maps.append(prob[window])
            truths.append(truth[window])
            origins.append((row, col))
    if not maps:
        return PRNMaps.concat([], map_size)
    return PRNMaps(np.stack(maps), np.stack(truths), [source] * len(maps), origins)


def read_probability(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A probability raster as float [0, 1] (uint8 is read as 0–255) and its valid-pixel mask."""
    path = Path(path)
    with open_raster(path) as ds:
        data = ds.read(1, masked=True)
        dtype = ds.dtypes[0]
    values = np.asarray(data.filled(0), dtype=np.float32)
    if dtype == "uint8":
        values /= 255.0
    elif values.size and (values.min() < 0 or values.max() > 1):
        raise InputError(f"{path}: probabilities must be uint8 0-255 or floats in [0, 1]")
    return values, ~np.ma.getmaskarray(data)


def read_truth(
    labels: str | Path,
    grid_raster: str | Path,
    *,
    road_width_m: float = 4.0,
    mask_threshold: float | None = None,
    labels_crs: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Road mask on ``grid_raster``'s grid from vector or raster labels, and its valid mask.

    For a mask raster with nodata the default threshold is chosen from its *valid* values
    ({0,1} -> 0, {0,255} or soft 0..255 -> 127): roadprn's own masks mark nodata as 255.
    """
    grid = SceneGrid.from_raster(grid_raster)
    valid = np.ones((grid.height, grid.width), bool)
    if not is_vector_labels(labels):
        with open_raster(labels) as ds:
            nodata = ds.nodata
            data = ds.read(1) if nodata is not None and ds.shape == valid.shape else None
        if data is not None:
            valid = data != nodata
            if mask_threshold is None:
                top = data[valid].max(initial=0)
                mask_threshold = 0.5 if data.dtype.kind == "f" else (127.0 if top > 1 else 0.0)
    mask = labels_to_mask(labels, grid, width_m=road_width_m, threshold=mask_threshold,
                          crs=labels_crs)
    return (mask != 0) & valid, valid


def maps_from_rasters(
    prob_path: str | Path,
    truth_path: str | Path,
    map_size: int,
    *,
    mask_threshold: float | None = None,
) -> PRNMaps:
    """Saved probability raster + truth (mask raster or vector labels on its grid) -> maps."""
    prob, valid = read_probability(prob_path)
    truth, truth_valid = read_truth(truth_path, prob_path, mask_threshold=mask_threshold)
    if truth.shape != prob.shape:
        raise InputError(f"{truth_path}: truth {truth.shape} and {prob_path} {prob.shape} differ")
    return cut_maps(prob, truth, map_size, valid=valid & truth_valid, source=str(prob_path))


def maps_from_scene(
    scene: str | Path,
    labels: str | Path,
    base_model: SegmentationModel,
    config: Config,
    work_dir: str | Path,
    map_size: int,
    *,
    road_width_m: float = 4.0,
    mask_threshold: float | None = None,
    labels_crs: str | None = None,
    reuse: bool = True,
    progress: bool = False,
) -> PRNMaps:
    """Run the base model on a labelled scene with ``extract``'s engine, then cut maps.

    The probability COG goes to ``work_dir/<scene stem>_probability.tif``; with ``reuse`` an
    existing one written by the same base model (tag ``ROADPRN_MODEL_SHA256``) is read instead.
    """
    from roadprn.infer.base_stage import ExtractPaths, extract_probability

    paths = ExtractPaths.for_scene(scene, work_dir)
    if not (reuse and _written_by(paths.probability, base_model.sha256)):
        cfg = config.model_copy(update={"output": config.output.model_copy(
            update={"write_probability": True, "overwrite": True})})
        extract_probability(scene, base_model, cfg, work_dir, progress=progress)
    prob, valid = read_probability(paths.probability)
    truth, truth_valid = read_truth(labels, scene, road_width_m=road_width_m,
                                    mask_threshold=mask_threshold, labels_crs=labels_crs)
    return cut_maps(prob, truth, map_size, valid=valid & truth_valid, source=str(scene))


def _written_by(path: Path, sha256: str | None) -> bool:
    if not path.is_file() or not sha256:
        return False
    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
    except rasterio.errors.RasterioIOError:
        return False
    return any(v == sha256 for k, v in tags.items() if "SHA256" in k.upper())


def maps_from_pairs(
    pairs: Sequence[tuple[str | Path, str | Path]],
    base_model: SegmentationModel,
    config: Config,
    work_dir: str | Path,
    map_size: int,
    *,
    on_scene: Callable[[str, PRNMaps], None] | None = None,
    **options: object,
) -> PRNMaps:
    """:func:`maps_from_scene` over many (scene, labels) pairs, concatenated."""
    parts = []
    for scene, labels in pairs:
        part = maps_from_scene(scene, labels, base_model, config, work_dir, map_size,
                               **options)  # type: ignore[arg-type]
        if on_scene is not None:
            on_scene(str(scene), part)
        parts.append(part)
    return PRNMaps.concat(parts, map_size)


def split_maps(maps: PRNMaps, val_fraction: float, seed: int) -> tuple[PRNMaps, PRNMaps]:
    """Train/validation split by source scene when there are several, else by map.

    Whole scenes go to validation so the checkpoint is chosen on places PRN has not seen.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    n = len(maps)
    if val_fraction == 0 or n < 2:
        return maps, maps.subset([])
    sources = sorted(set(maps.sources))
    if len(sources) >= 2:
        order = rng.permutation(len(sources))
        n_val = min(len(sources) - 1, max(1, round(val_fraction * len(sources))))
        val_sources = {sources[i] for i in order[:n_val]}
        is_val = np.array([s in val_sources for s in maps.sources])
    else:
        order = rng.permutation(n)
        is_val = np.zeros(n, bool)
        is_val[order[: min(n - 1, max(1, round(val_fraction * n)))]] = True
    return maps.subset(np.flatnonzero(~is_val)), maps.subset(np.flatnonzero(is_val))


def save_maps(path: str | Path, maps: PRNMaps) -> None:
    """An ``.npz`` cache (probabilities stored as uint8, as the COG holds them)."""
    np.savez_compressed(
        path, prob=np.rint(maps.prob * 255).astype(np.uint8), truth=maps.truth,
        sources=np.array(maps.sources),
        origins=np.array(maps.origins, dtype=np.int64).reshape(-1, 2))


def load_maps(path: str | Path) -> PRNMaps:
    with np.load(path) as data:
        return PRNMaps(data["prob"].astype(np.float32) / 255.0, data["truth"].astype(bool),
                       [str(s) for s in data["sources"]],
                       [tuple(int(v) for v in o) for o in data["origins"]])


# --------------------------------------------------------------------------- run state + checkpoint


def save_train_state(path: str | Path, state: PRNTrainState) -> None:
    """The full training state (for ``--resume``), loadable with ``weights_only=True``."""
    from roadprn.outputs.atomic import atomic_output

    with atomic_output(Path(path), True) as tmp:
        torch.save(dataclasses.asdict(state), tmp)


def load_train_state(path: str | Path) -> PRNTrainState:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"PRN training state not found: {path}")
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
        return PRNTrainState(**data)
    except Exception as exc:  # noqa: BLE001 - damaged or foreign file
        reason = " ".join(str(exc).split())[:120]
        raise InputError(f"{path} is not a PRN training state: {reason}") from None


def write_prn_checkpoint(
    path: str | Path,
    state: PRNTrainState,
    base_model_sha256: str,
    *,
    metrics: dict[str, float] | None = None,
    notes: str = "",
    road_fraction: float | None = None,
    labelled_pixels: int | None = None,
    overwrite: bool = False,
) -> str:
    """The selected (best) weights as a PRN checkpoint paired with its base model; its sha256."""
    from roadprn.models.checkpoint import CheckpointMeta, TrainingData, save_checkpoint
    from roadprn.prn.train import best_model

    meta = CheckpointMeta(
        kind="prn", arch="prn", arch_kwargs=state.arch_kwargs,
        base_model_sha256=base_model_sha256, metrics=metrics or {},
        training_data=TrainingData(notes=notes, road_fraction=road_fraction,
                                   labelled_pixels=labelled_pixels),
    )
    return save_checkpoint(path, best_model(state), meta, overwrite=overwrite)


def fit_prn(
    arch_kwargs: dict[str, Any],
    train: PRNMaps,
    val: PRNMaps | None,
    settings: PRNTrainSettings,
    *,
    resume: PRNTrainState | None = None,
    max_minutes: float | None = None,
    on_epoch_end: Callable[[PRNTrainState], None] | None = None,
) -> PRNTrainState:
    """:func:`roadprn.prn.train.train_prn` one epoch at a time, stopping after ``max_minutes``.

    Each epoch's randomness comes from ``(seed, epoch)``, so stepping epoch by epoch gives the
    same result as one long call, and a stopped run resumes exactly.
    """
    from roadprn.prn.train import train_prn

    t0 = time.perf_counter()
    state = resume
    has_val = val is not None and len(val) > 0
    start = 0 if state is None else state.epoch
    if start >= settings.epochs:
        raise ConfigError(f"the resumed run already has {start} epochs; raise --epochs")
    for epoch in range(start, settings.epochs):
        state = train_prn(
            arch_kwargs, train.prob, train.truth,
            val.prob if has_val else None, val.truth if has_val else None,  # type: ignore[union-attr]
            dataclasses.replace(settings, epochs=epoch + 1), resume=state,
            on_epoch_end=on_epoch_end,
        )
        if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
            log.info("stopping after epoch %d: past --max-minutes %.1f", epoch + 1, max_minutes)
            break
    assert state is not None
    return state


def write_history(path: str | Path, history: list[dict[str, float]]) -> None:
    """Per-epoch metrics as CSV at ``path`` and JSON beside it (same stem)."""
    path = Path(path)
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    path.with_suffix(".json").write_text(json.dumps(history, indent=1))
