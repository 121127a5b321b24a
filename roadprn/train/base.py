"""Training a base segmentation model: the loop behind ``roadprn train base``.

Outputs beside ``OUT.pt`` (the best model, a roadprn checkpoint):

* ``OUT.state.pt``: last weights, optimizer, scheduler and epoch counters as plain tensors and
  dicts (loads with ``weights_only=True``), written atomically after every epoch: ``--resume``;
* ``OUT.metrics.csv`` and ``OUT.metrics.json``: one row per epoch;
* ``OUT.cache/``: label rasters rasterised once per scene (reused by later runs).

The validation split is by scene; the best epoch is the one with the highest validation IoU
(lowest training loss when there is no validation scene), and training stops early after
``patience`` epochs without improvement.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from roadprn.config import NormalizationConfig
from roadprn.errors import ConfigError, ModelError, OutputError
from roadprn.infer.predictor import resolve_device
from roadprn.models.base import build_model, default_tiling, load_pretrained
from roadprn.models.checkpoint import (
    FORMAT_NAME,
    CheckpointMeta,
    InputSpec,
    TrainingData,
    TrainingFile,
    file_sha256,
    save_checkpoint,
)
from roadprn.outputs.atomic import atomic_output, check_writable
from roadprn.train.data import (
    Augmentation,
    GridChips,
    LabelSpec,
    PreparedScene,
    RandomChips,
    TrainingPair,
    prepare_scene,
    split_pairs,
)
from roadprn.train.losses import confusion_counts, dice_bce_loss, scores

log = logging.getLogger(__name__)

STATE_FORMAT = "roadprn-train-state"
STATE_VERSION = 1
# options that must not change when a run is resumed (they define the model or its inputs)
FROZEN_ON_RESUME = ("arch", "arch_kwargs", "bands", "normalization", "gsd_m", "chip_size")
CSV_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_iou", "val_precision",
               "val_recall", "val_f1", "chips_per_s", "seconds")


class TrainBaseOptions(BaseModel):
    """Everything that defines a training run; stored in the state file and the checkpoint."""

    model_config = ConfigDict(extra="forbid")

    arch: str = "dlinknet18"
    arch_kwargs: dict[str, Any] = {}
    pretrained: bool = Field(False, description="start from the architecture's ImageNet weights")
    bands: list[int] = Field([1, 2, 3], min_length=1)
    normalization: NormalizationConfig = NormalizationConfig(mode="percentile")
    gsd_m: float = Field(0.5, gt=0)
    chip_size: int = Field(256, ge=32, le=4096)
    tile_size: int = Field(512, ge=32, le=8192)
    halo: int = Field(32, ge=0)
    batch_size: int = Field(8, ge=1)
    epochs: int = Field(20, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    patience: int = Field(5, ge=0, description="epochs without improvement before stopping; 0 off")
    min_delta: float = Field(1e-3, ge=0)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    road_oversample: float = Field(0.5, ge=0, le=1)
    augmentation: dict[str, float | bool] = {}
    road_width_m: float | None = Field(4.0, gt=0)
    width_attribute: str | None = None
    metres_per_unit: float = Field(1.0, gt=0)
    mask_threshold: float | None = None
    labels_crs: str | None = None
    device: str = "auto"
    amp: bool = True
    threads: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)
    val_batch_size: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="stop after the epoch past this")
    notes: str = ""

    def augmentation_params(self) -> Augmentation:
        try:
            return Augmentation(**self.augmentation)
        except TypeError as exc:
            raise ConfigError(f"augmentation: {exc}") from None

    def label_spec(self) -> LabelSpec:
        return LabelSpec(self.road_width_m, self.width_attribute, self.metres_per_unit,
                         self.mask_threshold, self.labels_crs)

    def model_kwargs(self) -> dict[str, Any]:
        return {**self.arch_kwargs, "in_channels": len(self.bands)}


@dataclass(frozen=True)
class TrainPaths:
    checkpoint: Path
    state: Path
    metrics_csv: Path
    metrics_json: Path
    cache: Path

    @classmethod
    def for_output(cls, output: str | Path, cache_dir: str | Path | None = None) -> TrainPaths:
        out = Path(output)
        stem = out.with_suffix("")
        return cls(out, Path(f"{stem}.state.pt"), Path(f"{stem}.metrics.csv"),
                   Path(f"{stem}.metrics.json"),
                   Path(cache_dir) if cache_dir else Path(f"{stem}.cache"))


@dataclass(frozen=True)
class TrainResult:
    paths: TrainPaths
    history: list[dict[str, Any]]
    best_epoch: int
    best_metrics: dict[str, Any]
    stopped_early: bool
    checkpoint_sha256: str | None


def make_options(**values: Any) -> TrainBaseOptions:
    """Options from keyword values, with validation errors as one-line ConfigErrors.

    A tile size or halo that is missing or None is the architecture's default
    (:func:`roadprn.models.base.default_tiling`).
    """
    arch = values.get("arch") or TrainBaseOptions.model_fields["arch"].default
    tiling = default_tiling(arch) if isinstance(arch, str) else None
    for key, index in (("tile_size", 0), ("halo", 1)):
        if values.get(key) is None and tiling is not None:
            values[key] = tiling[index]
    try:
        return TrainBaseOptions(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"training option {where}: {err['msg']}") from None


# --------------------------------------------------------------------------- schedule


def lr_factor(step: int, total: int, schedule: str, warmup_fraction: float) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: linear warm-up, then cosine decay.

    ``onecycle`` is the one-cycle shape (30 % warm-up from 1/25 of the peak, cosine to ~0);
    written as a pure function of the step so the schedule survives ``--resume`` with a
    changed number of epochs.
    """
    if schedule == "constant":
        return 1.0
    warmup = 0.3 if schedule == "onecycle" else warmup_fraction
    floor = 1 / 25 if schedule == "onecycle" else 0.0
    warm_steps = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < warm_steps:
        return floor + (1 - floor) * (step + 1) / warm_steps
    progress = min(1.0, (step - warm_steps) / max(1, total - warm_steps))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- state file


def load_state(path: str | Path) -> dict[str, Any]:
    """A training state file, or the one beside a roadprn checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--resume: file not found: {path}")
    payload = _torch_load(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT_NAME:
        state_path = TrainPaths.for_output(path).state
        if not state_path.is_file():
            raise ModelError(
                f"--resume: {path} is a checkpoint but its training state {state_path} is missing"
            )
        payload = _torch_load(state_path)
        path = state_path
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ModelError(f"--resume: {path} is neither a roadprn checkpoint nor a training state")
    if payload.get("version") != STATE_VERSION:
        raise ModelError(f"--resume: {path} has state version {payload.get('version')!r}")
    return payload


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelError(f"--resume: cannot read {path}: {reason}") from exc


def _write_state(path: Path, payload: dict[str, Any]) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(payload, tmp)


def _check_resume_options(options: TrainBaseOptions, stored: dict[str, Any]) -> None:
    current = options.model_dump(mode="json")
    for key in FROZEN_ON_RESUME:
        if current[key] != stored.get(key):
            raise ConfigError(
                f"--resume: option {key} is {current[key]!r} but the run being resumed used "
                f"{stored.get(key)!r}; it cannot change mid-run"
            )


# --------------------------------------------------------------------------- training


def train_base(
    pairs: Sequence[TrainingPair],
    options: TrainBaseOptions,
    output: str | Path,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``options.arch`` on ``pairs`` and write the best model to ``output``."""
    paths = TrainPaths.for_output(output, cache_dir)
    if paths.checkpoint.suffix != ".pt":
        raise ConfigError(f"output {paths.checkpoint} must end in .pt")
    state = load_state(resume) if resume is not None else None
    if state is None:
        for path in (paths.checkpoint, paths.state, paths.metrics_csv, paths.metrics_json):
            check_writable(path, overwrite)
    else:
        _check_resume_options(options, state["options"])
        if Path(state["checkpoint"]).resolve() != paths.checkpoint.resolve():
            for path in (paths.checkpoint, paths.state):  # resuming into another output
                check_writable(path, overwrite)
    _seed_everything(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    use_amp = options.amp and device.type == "cuda"

    model = build_model(options.arch, **options.model_kwargs())  # fail early
    # pretrained weights only initialise a new run (a resumed one has its own); the
    # checkpoint holds every weight, so the package they come from is never needed again
    pretrained_note: str | None = None
    if state is not None:
        pretrained_note = state.get("pretrained_note")
    elif options.pretrained:
        pretrained_note = load_pretrained(model, options.arch)
        log.info("%s", pretrained_note)
    model = model.to(device)
    train_pairs, val_pairs = split_pairs(pairs, options.val_fraction, options.seed)
    train_scenes = [_prepare(p, options, paths) for p in train_pairs]
    val_scenes = [_prepare(p, options, paths) for p in val_pairs]
    log.info("training on %d scene(s), validating on %d", len(train_scenes), len(val_scenes))

    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr,
                                  weight_decay=options.weight_decay)
    total_steps = options.epochs * options.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, options.schedule,
                                          options.warmup_fraction))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "metrics": {}, "sha256": None}
    start_epoch = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        best = dict(state["best"])
        start_epoch = int(state["epoch"]) + 1
        torch.set_rng_state(state["torch_rng"])
        log.info("resuming after epoch %d (best so far: epoch %d)", start_epoch - 1, best["epoch"])

    train_data = RandomChips(
        train_scenes, chip_size=options.chip_size, target_gsd_m=options.gsd_m,
        length=options.steps_per_epoch * options.batch_size, seed=options.seed,
        augmentation=options.augmentation_params(), road_oversample=options.road_oversample)
    val_data = (GridChips(val_scenes, chip_size=options.chip_size, target_gsd_m=options.gsd_m)
                if val_scenes else None)
    summary = _training_summary(train_scenes, val_scenes, options, pretrained_note)

    stopped_early = False
    t_run = time.perf_counter()
    for epoch in range(start_epoch, options.epochs + 1):
        if best["epoch"] and options.patience and epoch - best["epoch"] > options.patience:
            log.info("no improvement for %d epochs: stopping early", options.patience)
            stopped_early = True
            break
        if options.max_minutes and time.perf_counter() - t_run > 60 * options.max_minutes:
            log.info("time budget of %g min used: stopping after epoch %d",
                     options.max_minutes, epoch - 1)
            stopped_early = True
            break
        t0 = time.perf_counter()
        train_data.set_epoch(epoch)
        train_loss, chips = _train_epoch(model, train_data, optimizer, scheduler, scaler, options,
                                         device, use_amp, progress, epoch)
        row: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                               "train_loss": train_loss}
        if val_data is not None:
            row.update(_validate(model, val_data, options, device, use_amp, progress))
        seconds = time.perf_counter() - t0
        row["chips_per_s"] = chips / seconds
        row["seconds"] = seconds
        history.append(row)
        score = row["val_iou"] if val_data is not None else -train_loss
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                                                  if k != "epoch"))
        if score > best["score"] + (options.min_delta if best["epoch"] else -math.inf):
            best = {"score": score, "epoch": epoch, "metrics": row, "sha256": None}
            best["sha256"] = save_checkpoint(
                paths.checkpoint, model, _meta(options, summary, row), overwrite=True)
        _write_metrics(paths, history)
        _write_state(paths.state, {
            "format": STATE_FORMAT, "version": STATE_VERSION, "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {},
            "history": history, "best": best, "options": options.model_dump(mode="json"),
            "torch_rng": torch.get_rng_state(), "checkpoint": str(paths.checkpoint),
            "pretrained_note": pretrained_note,
        })
    train_data.close()
    if val_data is not None:
        val_data.close()
    return TrainResult(paths, history, best["epoch"], best["metrics"], stopped_early,
                       best["sha256"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _prepare(pair: TrainingPair, options: TrainBaseOptions, paths: TrainPaths) -> PreparedScene:
    return prepare_scene(pair, bands=options.bands, normalization=options.normalization,
                         labels=options.label_spec(), cache_dir=paths.cache,
                         target_gsd_m=options.gsd_m)


def _loader(data, batch_size: int, options: TrainBaseOptions) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=False, drop_last=False,
                      num_workers=options.num_workers,
                      persistent_workers=False, pin_memory=False)


def _train_epoch(model: nn.Module, data: RandomChips, optimizer, scheduler, scaler,
                 options: TrainBaseOptions, device: torch.device, use_amp: bool,
                 progress: bool, epoch: int) -> tuple[float, int]:
    model.train()
    total, chips = 0.0, 0
    bar = tqdm(total=options.steps_per_epoch, desc=f"epoch {epoch}", unit="step",
               disable=not progress, leave=False)
    for image, target, valid in _loader(data, options.batch_size, options):
        image, target, valid = image.to(device), target.to(device), valid.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(image)
        loss = dice_bce_loss(logits, target, valid)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        value = loss.item()
        total += value * len(image)
        chips += len(image)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}")
    bar.close()
    return total / max(1, chips), chips


@torch.no_grad()
def _validate(model: nn.Module, data: GridChips, options: TrainBaseOptions,
              device: torch.device, use_amp: bool, progress: bool) -> dict[str, float]:
    model.eval()
    tp = fp = fn = 0
    loss_sum, n = 0.0, 0
    batch_size = options.val_batch_size or options.batch_size
    for image, target, valid in tqdm(_loader(data, batch_size, options), desc="validation",
                                     unit="batch", disable=not progress, leave=False):
        image, target, valid = image.to(device), target.to(device), valid.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(image)
        loss_sum += float(dice_bce_loss(logits, target, valid)) * len(image)
        n += len(image)
        counts = confusion_counts(logits, target, valid)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
    return {"val_loss": loss_sum / max(1, n), **{f"val_{k}": v for k, v in
                                                 scores(tp, fp, fn).items()}}


# --------------------------------------------------------------------------- outputs


def _training_summary(train: Sequence[PreparedScene], val: Sequence[PreparedScene],
                      options: TrainBaseOptions, pretrained_note: str | None = None
                      ) -> TrainingData:
    files = []
    for scene in train:
        files.append(TrainingFile(path=scene.scene, sha256=file_sha256(Path(scene.scene)),
                                  role="scene"))
        files.append(TrainingFile(path=scene.labels, sha256=file_sha256(Path(scene.labels)),
                                  role="labels"))
    road = sum(s.road_pixels for s in train)
    labelled = sum(s.labelled_pixels for s in train)
    val_text = ", ".join(Path(s.scene).name for s in val) or "none"
    notes = f"validation scenes (not trained on): {val_text}"
    if pretrained_note:
        notes = f"{pretrained_note}; {notes}"
    if options.notes:
        notes = f"{options.notes}; {notes}"
    return TrainingData(files=files, road_fraction=road / labelled if labelled else None,
                        labelled_pixels=labelled, notes=notes)


def _meta(options: TrainBaseOptions, summary: TrainingData, row: dict[str, Any]
          ) -> CheckpointMeta:
    metrics = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
    metrics["chip_size"] = options.chip_size
    return CheckpointMeta(
        kind="base", arch=options.arch, arch_kwargs=options.model_kwargs(),
        input=InputSpec(bands=options.bands, normalization=options.normalization,
                        gsd_m=options.gsd_m, tile_size=options.tile_size, halo=options.halo),
        training_data=summary, metrics=metrics)


def _write_metrics(paths: TrainPaths, history: list[dict[str, Any]]) -> None:
    try:
        with atomic_output(paths.metrics_csv, overwrite=True) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(history)
        with atomic_output(paths.metrics_json, overwrite=True) as tmp:
            tmp.write_text(json.dumps(history, indent=2))
    except OSError as exc:
        raise OutputError(f"cannot write training metrics: {exc.strerror}") from exc
