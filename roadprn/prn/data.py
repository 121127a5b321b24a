"""PRN training data: base-model probability maps and their ground truth, cut into windows.

PRN learns the base model's bias, so its maps must come from the base model exactly as
``extract`` produces them (the tiled engine, the probability COG quantised to uint8 on the
scene grid) and from scenes the base model was **not** trained on: on its own training
images the base map is over-confident and PRN learns little. Maps are cut on a regular grid
of ``map_size`` windows (the last window of a row/column is moved back to end at the edge, so
every pixel is covered without padding); windows with too little labelled area are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio

from roadprn.config import Config
from roadprn.errors import ConfigError, InputError
from roadprn.prn.pseudolabels import pseudo_labels
from roadprn.raster.labels import SceneGrid, is_vector_labels, labels_to_mask
from roadprn.raster.scene import open_raster

if TYPE_CHECKING:
    from roadprn.infer.predictor import SegmentationModel
    from roadprn.prn.options import TrainPRNOptions
    from roadprn.train.data import TrainingPair

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
                       [(int(o[0]), int(o[1])) for o in data["origins"]])


# --------------------------------------------------------------------------- training arrays


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the last two axes (k in 0..7)."""
    x = np.rot90(x, k % 4, axes=(-2, -1))
    return x[..., ::-1] if k >= 4 else x


@dataclass(frozen=True)
class PRNTrainData:
    """Training maps with their per-patch pseudo-labels, computed once for the whole run.

    Flips and 90° rotations map a square patch grid onto itself, so a pseudo-label transformed
    with its map stays that map's pseudo-label: augmentation never recomputes them.
    """

    prob: np.ndarray  # (N, S, S) float32
    pseudo: np.ndarray  # (N, S, S) float32
    truth: np.ndarray  # (N, S, S) bool

    @classmethod
    def from_maps(cls, maps: PRNMaps, patch_size: int | None) -> PRNTrainData:
        prob = np.asarray(maps.prob, dtype=np.float32)
        return cls(prob, pseudo_labels(prob, maps.truth, patch_size), np.asarray(maps.truth) != 0)

    def __len__(self) -> int:
        return len(self.prob)

    def batches(self, seed: int, epoch: int, batch_size: int,
                augment: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(prob, pseudo, truth) batches of epoch ``epoch`` (0-based), from ``(seed, epoch)``.

        Every epoch's order and transforms depend only on the seed and the epoch, so a resumed
        run sees exactly what an uninterrupted one would.
        """
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            k = int(rng.integers(8)) if augment else 0
            yield tuple(np.ascontiguousarray(dihedral(a[idx], k))  # type: ignore[misc]
                        for a in (self.prob, self.pseudo, self.truth))


# --------------------------------------------------------------------------- a job's maps


def collect_maps(
    pairs: Sequence[TrainingPair],
    prob_maps: Sequence[tuple[str | Path, str | Path]],
    base_model: SegmentationModel,
    options: TrainPRNOptions,
    work_dir: str | Path,
    *,
    progress: bool = False,
) -> tuple[PRNMaps, PRNMaps]:
    """Training and validation maps of a ``train prn`` job.

    ``pairs`` run through the base model (:func:`maps_from_scene`); ``prob_maps`` are saved
    probability rasters, refused when written by another base model. A pair's ``split`` wins;
    the rest is split by :func:`split_maps` (no random split when any pair is marked ``val``).
    """
    from tqdm import tqdm

    from roadprn.config import load_config

    for pair in pairs:
        for path in (pair.scene, pair.labels):
            if not Path(path).exists():
                raise InputError(f"file not found: {path}")
    config = load_config(None, {"output.overwrite": True, "inference.device": options.device})
    size = options.map_size
    explicit: dict[str, list[PRNMaps]] = {"train": [], "val": []}
    undecided: list[PRNMaps] = []
    sources = [("pair", Path(p.scene), Path(p.labels), p.split) for p in pairs]
    sources += [("prob", Path(p), Path(t), None) for p, t in prob_maps]
    for kind, first, second, split in tqdm(sources, desc="base maps", unit="scene",
                                           disable=not progress):
        if kind == "pair":
            part = maps_from_scene(first, second, base_model, config, work_dir, size,
                                   road_width_m=options.road_width_m,
                                   mask_threshold=options.mask_threshold,
                                   labels_crs=options.labels_crs, progress=progress)
        else:
            check_prob_source(first, base_model.sha256)
            part = maps_from_rasters(first, second, size, mask_threshold=options.mask_threshold)
        if not len(part):
            log.warning("%s: no %d-pixel map with enough labelled area; skipped", first, size)
        (explicit[split] if split in explicit else undecided).append(part)
    train, val = split_maps(PRNMaps.concat(undecided, size),
                            0.0 if explicit["val"] else options.val_fraction, options.seed)
    train = PRNMaps.concat([train, *explicit["train"]], size)
    val = PRNMaps.concat([val, *explicit["val"]], size)
    if not len(train):
        raise InputError(f"no training maps of {size} px: scenes too small or unlabelled; "
                         "lower --map-size")
    return train, val


def check_prob_source(path: Path, base_sha256: str | None) -> None:
    """A probability raster written by ``extract`` names its base model: it must be this one."""
    from roadprn.raster.scene import open_dataset

    if not path.is_file():
        raise InputError(f"probability raster not found: {path}")
    with open_dataset(path) as ds:
        made_by = ds.tags().get("ROADPRN_MODEL_SHA256")
    if made_by and made_by != "unknown" and made_by != base_sha256:
        raise InputError(f"{path} was made by base model {made_by[:12]}…, not --base-model "
                         f"({(base_sha256 or '?')[:12]}…); PRN must learn the bias of the model "
                         "it refines")
