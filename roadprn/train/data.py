"""Training chips cut from large scenes without loading them whole.

Each (scene, labels) pair is prepared once: the labels are rasterised block by block into a
uint8 label raster on the scene's grid (kept in a cache folder, reused while the inputs are
unchanged), the per-scene normalisation is estimated exactly as inference does it, and a coarse
grid of road pixel counts is kept so windows with roads can be oversampled. Chips are then read
window by window with :func:`roadprn.raster.read_window`, rescaled to the model's ground sample
distance (with scale jitter) and augmented. Every random choice derives from
``(seed, epoch, index)``, so a run is reproducible whatever the number of loader workers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from torch.utils.data import Dataset

from roadprn.config import NormalizationConfig
from roadprn.errors import ConfigError, InputError
from roadprn.outputs.atomic import atomic_output
from roadprn.raster.labels import (
    SceneGrid,
    buffer_centrelines,
    is_vector_labels,
    rasterise,
    read_centrelines,
    read_mask_labels,
)
from roadprn.raster.normalize import BandNormalizer, make_normalizer
from roadprn.raster.read import read_window
from roadprn.raster.scene import check_band_count, open_dataset, open_raster, open_scene
from roadprn.train.augment import Augmentation, augment_chip

LABEL_BLOCK = 1024  # label rasters are written in blocks of this many pixels
ROAD_CELL = 64  # oversampling picks windows around cells of this size that hold road pixels
CACHE_VERSION = 1
DEFAULT_AUGMENTATION = Augmentation()


# --------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class TrainingPair:
    """One scene and its labels; ``gsd_m`` is needed only for scenes without georeferencing."""

    scene: Path
    labels: Path
    split: str | None = None  # "train", "val" or None (decided by the validation fraction)
    gsd_m: float | None = None
    weight: float | None = None  # relative sampling weight; default: the scene's area


def read_pairs_csv(path: str | Path) -> list[TrainingPair]:
    """Pairs from a CSV with columns scene,labels[,split][,gsd_m][,weight]; paths relative to it."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read pairs file {path}: {exc.strerror}") from exc
    if not rows or not {"scene", "labels"} <= set(rows[0]):
        raise InputError(f"pairs file {path} needs a header with columns scene,labels[,split]")
    pairs = []
    for line, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip().lower() or None
        if split not in (None, "train", "val"):
            raise InputError(f"{path} line {line}: split must be train or val, got {split!r}")
        try:
            gsd = float(row["gsd_m"]) if (row.get("gsd_m") or "").strip() else None
            weight = float(row["weight"]) if (row.get("weight") or "").strip() else None
        except ValueError:
            raise InputError(f"{path} line {line}: gsd_m and weight must be numbers") from None
        pairs.append(
            TrainingPair(
                _relative_to(path, row["scene"]), _relative_to(path, row["labels"]),
                split, gsd, weight,
            )
        )
    return pairs


def _relative_to(csv_path: Path, value: str) -> Path:
    p = Path(value.strip())
    return p if p.is_absolute() else csv_path.parent / p


def split_pairs(
    pairs: Sequence[TrainingPair], val_fraction: float, seed: int
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Train/validation split *by scene*: explicit splits win, the rest is drawn by fraction.

    Chips of one scene never land on both sides, so validation measures generalisation to new
    places rather than to new windows of a place already seen.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    train = [p for p in pairs if p.split == "train"]
    val = [p for p in pairs if p.split == "val"]
    undecided = [p for p in pairs if p.split is None]
    if undecided and val_fraction > 0 and not val:
        order = np.random.default_rng(seed).permutation(len(undecided))
        n_val = min(len(undecided) - 1, max(1, round(val_fraction * len(undecided))))
        if len(undecided) + len(train) < 2:
            n_val = 0  # one scene: nothing to hold out
        picked = set(order[:n_val].tolist())
        val += [p for i, p in enumerate(undecided) if i in picked]
        undecided = [p for i, p in enumerate(undecided) if i not in picked]
    train += undecided
    if not train:
        raise ConfigError("no training scenes left after the validation split")
    return train, val


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelSpec:
    """How labels become masks: centreline buffer width in metres, or a mask threshold."""

    road_width_m: float | None = 4.0
    width_attribute: str | None = None
    metres_per_unit: float = 1.0
    mask_threshold: float | None = None
    labels_crs: str | None = None


@dataclass(frozen=True)
class PreparedScene:
    """A scene ready for sampling: where its labels raster is and what it holds."""

    scene: str
    labels: str
    label_raster: str
    bands: tuple[int, ...]
    normalizer: BandNormalizer
    width: int
    height: int
    gsd_m: float
    road_pixels: int
    labelled_pixels: int
    weight: float
    road_cells: np.ndarray = field(repr=False)  # (N, 3): row0, col0, road pixel count

    @property
    def road_fraction(self) -> float:
        return self.road_pixels / self.labelled_pixels if self.labelled_pixels else 0.0


def prepare_scene(
    pair: TrainingPair,
    *,
    bands: Sequence[int],
    normalization: NormalizationConfig,
    labels: LabelSpec,
    cache_dir: str | Path,
    target_gsd_m: float,
    allow_ungeoreferenced: bool = True,
) -> PreparedScene:
    """Validate a pair, write (or reuse) its label raster and measure it, block by block."""
    info = open_scene(pair.scene, allow_ungeoreferenced=allow_ungeoreferenced)
    chosen = check_band_count(info, list(bands), len(bands))
    gsd = pair.gsd_m
    if gsd is None:
        if info.resolution_m is None:
            raise InputError(
                f"{pair.scene}: no georeferencing, so its pixel size is unknown; give it with "
                "--scene-gsd-m or a gsd_m column in the pairs CSV"
            )
        gsd = float(np.sqrt(info.resolution_m[0] * info.resolution_m[1]))
    if not pair.labels.exists():
        raise InputError(f"labels file not found: {pair.labels}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    label_path = cache / f"{Path(pair.scene).stem}-{_cache_key(pair, labels)}.labels.tif"
    if not label_path.exists():
        _write_label_raster(pair, labels, label_path)
    road, labelled, cells = _measure_labels(label_path)
    with open_raster(pair.scene) as ds:
        normalizer = make_normalizer(ds, chosen, normalization)
    chips = (info.width * gsd / target_gsd_m) * (info.height * gsd / target_gsd_m)
    return PreparedScene(
        scene=str(pair.scene), labels=str(pair.labels), label_raster=str(label_path),
        bands=tuple(chosen), normalizer=normalizer, width=info.width, height=info.height,
        gsd_m=gsd, road_pixels=road, labelled_pixels=labelled,
        weight=float(pair.weight) if pair.weight is not None else chips, road_cells=cells,
    )


def _cache_key(pair: TrainingPair, spec: LabelSpec) -> str:
    """Changes whenever the inputs or the label options change, so stale rasters are not reused."""
    parts: dict[str, Any] = {"v": CACHE_VERSION, "spec": spec.__dict__}
    for name in ("scene", "labels"):
        p = Path(getattr(pair, name)).resolve()
        stat = p.stat()
        parts[name] = [str(p), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _write_label_raster(pair: TrainingPair, spec: LabelSpec, out: Path) -> None:
    grid = SceneGrid.from_raster(pair.scene)
    polygons = None
    if is_vector_labels(pair.labels):
        if grid.crs is None:
            raise InputError(
                f"{pair.scene} has no georeferencing, so vector labels {pair.labels} cannot be "
                "placed on it; give a mask raster of the same size instead"
            )
        lines = read_centrelines(pair.labels, crs=spec.labels_crs)
        polygons = buffer_centrelines(
            lines, grid, spec.road_width_m, spec.width_attribute, spec.metres_per_unit,
            name=f"labels {pair.labels}",
        )
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1,
        "dtype": "uint8", "tiled": True, "blockxsize": 256, "blockysize": 256,
        "compress": "deflate",
    }
    if grid.crs is not None:
        profile.update(crs=grid.crs.to_wkt(), transform=grid.transform)
    with atomic_output(out, overwrite=True) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for row0 in range(0, grid.height, LABEL_BLOCK):
            for col0 in range(0, grid.width, LABEL_BLOCK):
                window = Window(col0, row0, min(LABEL_BLOCK, grid.width - col0),
                                min(LABEL_BLOCK, grid.height - row0))
                if polygons is not None:
                    mask = rasterise(polygons, grid, window)
                else:
                    mask = read_mask_labels(pair.labels, grid, window, spec.mask_threshold)
                dst.write(mask, 1, window=window)


def _measure_labels(path: Path) -> tuple[int, int, np.ndarray]:
    """Road and total pixel counts, and the road cells (row0, col0, count) for oversampling."""
    road = labelled = 0
    cells: list[np.ndarray] = []
    with open_dataset(path) as ds:
        for row0 in range(0, ds.height, LABEL_BLOCK):
            for col0 in range(0, ds.width, LABEL_BLOCK):
                h, w = min(LABEL_BLOCK, ds.height - row0), min(LABEL_BLOCK, ds.width - col0)
                mask = ds.read(1, window=Window(col0, row0, w, h)) > 0
                road += int(mask.sum())
                labelled += mask.size
                ph, pw = -h % ROAD_CELL, -w % ROAD_CELL
                padded = np.pad(mask, ((0, ph), (0, pw)))
                counts = padded.reshape(
                    padded.shape[0] // ROAD_CELL, ROAD_CELL, padded.shape[1] // ROAD_CELL, ROAD_CELL
                ).sum(axis=(1, 3))
                rows, cols = np.nonzero(counts)
                cells.append(np.column_stack(
                    [row0 + rows * ROAD_CELL, col0 + cols * ROAD_CELL, counts[rows, cols]]
                ))
    return road, labelled, np.concatenate(cells) if cells else np.zeros((0, 3), np.int64)


# --------------------------------------------------------------------------- datasets


class _SceneReaders:
    """Open datasets per process (rasterio handles must not cross a fork)."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}

    def get(self, path: str) -> Any:
        ds = self._open.get(path)
        if ds is None:
            ds = open_dataset(path)
            self._open[path] = ds
        return ds

    def close(self) -> None:
        for ds in self._open.values():
            ds.close()
        self._open.clear()


class _ChipReader(Dataset):
    def __init__(self, scenes: Sequence[PreparedScene], chip_size: int, target_gsd_m: float):
        if not scenes:
            raise ConfigError("no scenes to cut chips from")
        self.scenes = list(scenes)
        self.chip_size = int(chip_size)
        self.target_gsd_m = float(target_gsd_m)
        self._readers = _SceneReaders()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = _SceneReaders()
        return state

    def source_size(self, scene: PreparedScene, scale: float = 1.0) -> int:
        """Window side in scene pixels that covers one chip at the model's resolution."""
        return max(4, round(self.chip_size * self.target_gsd_m / scene.gsd_m * scale))

    def read_chip(
        self, scene: PreparedScene, row0: int, col0: int, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised image, target and valid mask of a window, resampled to the chip size."""
        window = Window(col0, row0, size, size)
        data, valid = read_window(self._readers.get(scene.scene), window, bands=scene.bands)
        label, label_valid = read_window(self._readers.get(scene.label_raster), window,
                                         bands=(1,), pad_mode="constant")
        image = scene.normalizer(data)
        target = label[0]
        valid = valid & label_valid
        if size != self.chip_size:
            image, target, valid = _resize(image, target, valid, self.chip_size)
        return image, (target > 0.5).astype(np.float32), valid.astype(np.float32)

    def close(self) -> None:
        self._readers.close()


def _resize(
    image: np.ndarray, target: np.ndarray, valid: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    down = image.shape[-1] > size
    stack = torch.from_numpy(np.concatenate([image, target[None], valid[None].astype(np.float32)]))
    out = F.interpolate(stack[None], size=(size, size), mode="bilinear", align_corners=False,
                        antialias=down)[0].numpy()
    return out[:-2], out[-2], out[-1] > 0.99


class RandomChips(_ChipReader):
    """``length`` random chips per epoch, road windows oversampled; call :meth:`set_epoch`."""

    def __init__(
        self,
        scenes: Sequence[PreparedScene],
        *,
        chip_size: int,
        target_gsd_m: float,
        length: int,
        seed: int = 0,
        augmentation: Augmentation = DEFAULT_AUGMENTATION,
        road_oversample: float = 0.5,
    ) -> None:
        super().__init__(scenes, chip_size, target_gsd_m)
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        self.augmentation = augmentation
        self.road_oversample = float(road_oversample)
        weights = np.array([s.weight for s in self.scenes], dtype=float)
        if not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
            raise ConfigError("scene sampling weights must be non-negative and not all zero")
        self.scene_p = weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        scene = self.scenes[int(rng.choice(len(self.scenes), p=self.scene_p))]
        jitter = self.augmentation.scale_jitter
        scale = math.exp(rng.uniform(-1, 1) * math.log(jitter)) if jitter > 1 else 1.0
        size = self.source_size(scene, scale)
        if len(scene.road_cells) and rng.random() < self.road_oversample:
            cells = scene.road_cells
            cell = cells[rng.choice(len(cells), p=cells[:, 2] / cells[:, 2].sum())]
            row, col = self._road_pixel(scene, int(cell[0]), int(cell[1]), rng)
            shift = rng.uniform(-size / 4, size / 4, 2)  # the road need not sit at the centre
            row0, col0 = round(row + shift[0] - size / 2), round(col + shift[1] - size / 2)
        else:
            row0 = int(rng.integers(0, max(1, scene.height - size + 1)))
            col0 = int(rng.integers(0, max(1, scene.width - size + 1)))
        image, target, valid = self.read_chip(scene, row0, col0, size)
        image, target, valid = augment_chip(image, target, valid, rng, self.augmentation)
        return (torch.from_numpy(image), torch.from_numpy(target)[None],
                torch.from_numpy(valid.astype(np.float32))[None])


    def _road_pixel(self, scene: PreparedScene, row0: int, col0: int,
                    rng: np.random.Generator) -> tuple[float, float]:
        """A random road pixel of one oversampling cell (its centre if the read finds none)."""
        window = Window(col0, row0, min(ROAD_CELL, scene.width - col0),
                        min(ROAD_CELL, scene.height - row0))
        rows, cols = np.nonzero(self._readers.get(scene.label_raster).read(1, window=window))
        if not len(rows):
            return row0 + ROAD_CELL / 2, col0 + ROAD_CELL / 2
        k = int(rng.integers(len(rows)))
        return row0 + rows[k] + 0.5, col0 + cols[k] + 0.5


class GridChips(_ChipReader):
    """Chips tiling every scene once, without augmentation: the validation set."""

    def __init__(self, scenes: Sequence[PreparedScene], *, chip_size: int, target_gsd_m: float):
        super().__init__(scenes, chip_size, target_gsd_m)
        self.windows: list[tuple[int, int, int, int]] = []
        for i, scene in enumerate(self.scenes):
            size = self.source_size(scene)
            for row0 in _starts(scene.height, size):
                for col0 in _starts(scene.width, size):
                    self.windows.append((i, row0, col0, size))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, row0, col0, size = self.windows[index]
        image, target, valid = self.read_chip(self.scenes[i], row0, col0, size)
        return torch.from_numpy(image), torch.from_numpy(target)[None], torch.from_numpy(
            valid.astype(np.float32))[None]


def _starts(length: int, size: int) -> list[int]:
    """Window starts covering ``length`` with windows of ``size``; the last one flush with the end.

    Overlap at the end double-counts a strip in the metrics; cheaper and simpler than padding.
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size, size))
    return starts + [length - size]
