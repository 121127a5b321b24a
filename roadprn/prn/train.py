"""Train a PatchRefineNet on base-model probability maps and their ground truth.

Maps must come from images the base model was not trained on (its own training images give
over-confident maps and PRN learns little). The run follows the loop pattern shared with base
training (:mod:`roadprn.train.loop`: state file, metrics files, resume, time budget, patience,
best-epoch checkpoint). Pseudo-labels are computed once per run with the model's patch size;
the model and optimiser are built once. Flips and 90° rotations are applied jointly to map,
pseudo-label and truth (:class:`roadprn.prn.data.PRNTrainData`). The checkpoint is selected on
a held-out split by pooled IoU of the fused output, not by training loss.

Deterministic: the model is built after seeding, and each epoch's shuffling and augmentation
come from ``(seed, epoch)``, so a run resumed from its state file continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roadprn.errors import ConfigError, ModelError
from roadprn.prn.data import PRNMaps, PRNTrainData, collect_maps
from roadprn.prn.loss import prn_loss
from roadprn.prn.network import PatchRefineNet, prn_arch, prn_arch_kwargs
from roadprn.prn.options import PRN_FROZEN_ON_RESUME, TrainPRNOptions
from roadprn.prn.refine import fuse
from roadprn.raster.masks import is_road
from roadprn.runtime.progress import progress_bar
from roadprn.train.loop import (
    TrainPaths,
    TrainResult,
    check_outputs,
    check_resume_options,
    checkpoint_metrics,
    load_state,
    run_epochs,
    seed_everything,
    trainable_parameters,
)

log = logging.getLogger(__name__)

CSV_COLUMNS = ("epoch", "lr", "train_loss", "val_iou", "val_iou_global", "val_iou_local",
               "maps_per_s", "seconds")


@dataclass(frozen=True)
class PRNTrainResult(TrainResult):
    base_model_sha256: str = ""
    train_maps: int = 0
    val_maps: int = 0


def pooled_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Sum of intersections / sum of unions (the paper's "mIoU")."""
    inter = np.logical_and(pred, truth).sum()
    union = np.logical_or(pred, truth).sum()
    return float(inter / union) if union else 1.0


def predict_maps(
    model: PatchRefineNet, prob: np.ndarray, batch_size: int = 4, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Global and local maps for (N, S, S) probability maps of the model's window size."""
    model.eval()
    outs_g, outs_l = [], []
    with torch.inference_mode():
        for start in range(0, len(prob), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(prob[start : start + batch_size]))
            out = model(x[:, None].float().to(device))
            outs_g.append(out.global_map[:, 0].cpu().numpy())
            if out.local_map is not None:
                outs_l.append(out.local_map[:, 0].cpu().numpy())
    return np.concatenate(outs_g), (np.concatenate(outs_l) if outs_l else None)


def evaluate_prn(
    model: PatchRefineNet, prob: np.ndarray, truth: np.ndarray, fusion: str, device: str
) -> dict[str, float]:
    """Pooled IoU of the fused, global and local outputs on held-out maps."""
    g, loc = predict_maps(model, prob, device=device)
    truth = truth != 0
    metrics = {"val_iou": pooled_iou(fuse(g, loc, fusion), truth)}
    metrics["val_iou_global"] = pooled_iou(is_road(g, 0.5), truth)
    if loc is not None:
        metrics["val_iou_local"] = pooled_iou(is_road(loc, 0.5), truth)
    return metrics


def arch_kwargs_of(options: TrainPRNOptions) -> dict[str, Any]:
    """PatchRefineNet keyword arguments of the options (variant preset, grid, size, extras)."""
    extra = {k: v for k, v in options.arch_kwargs.items() if k not in ("variant", "grid",
                                                                        "map_size")}
    try:
        arch = prn_arch(options.variant, grid=options.grid, map_size=options.map_size, **extra)
    except ValueError as exc:
        raise ConfigError(f"--variant/--grid/--map-size/arch_kwargs: {exc}") from None
    return prn_arch_kwargs(arch)


def train_prn_model(
    pairs: Sequence[Any],
    options: TrainPRNOptions,
    output: str | Path,
    *,
    prob_maps: Sequence[tuple[str | Path, str | Path]] = (),
    resume: str | Path | None = None,
    overwrite: bool = False,
    work_dir: str | Path | None = None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
) -> PRNTrainResult:
    """The whole ``train prn`` job: base maps of ``pairs`` / ``prob_maps``, then :func:`fit_prn`.

    ``pairs`` are :class:`roadprn.train.TrainingPair` (scene, labels, optional split) the base
    model ``options.base_model`` did not train on; their probability rasters are kept in
    ``work_dir`` (default ``OUT.maps/``) and reused while the base model is the same.
    ``report`` receives the human lines (map counts, one line per epoch; default: the log).
    """
    from roadprn.models.loading import load_segmentation_model

    paths = TrainPaths.for_output(output)
    state = load_state(resume, "prn") if resume is not None else None
    check_outputs(paths, state, overwrite)
    arch_kwargs_of(options)  # refuse a bad architecture before any base-model run
    if not pairs and not prob_maps:
        raise ConfigError("give training data with --pair SCENE LABELS, --pairs CSV or "
                          "--prob-maps PROB TRUTH")
    base = load_segmentation_model(options.base_model)
    if not base.sha256:
        raise ModelError(f"base model {options.base_model}: no sha256 to pair the PRN with")
    maps_dir = Path(work_dir) if work_dir else Path(f"{paths.checkpoint}.maps")
    train, val = collect_maps(pairs, prob_maps, base, options, maps_dir, progress=progress)
    (report or log.info)(f"PRN maps: {len(train)} train, {len(val)} validation "
                         f"({options.map_size} px)")
    result = fit_prn(train, val, options, output, base_model_sha256=base.sha256,
                     resume=state, overwrite=True, progress=progress,
                     training_files=training_files(pairs, prob_maps), report=report)
    return result


def training_files(pairs: Sequence[Any],
                   prob_maps: Sequence[tuple[str | Path, str | Path]] = ()) -> list[Any]:
    """The files a PRN run learns from, as the checkpoint records them (absolute path +
    sha256): each pair's scene and labels, each saved probability raster (role ``other``) and
    its truth. Maps are split into training and validation windows after they are cut, so every
    file given is listed (the split is in the training notes)."""
    from roadprn.models.checkpoint import TrainingFile
    from roadprn.outputs.atomic import file_sha256

    files: list[Any] = []
    entries = [e for p in pairs for e in ((p.scene, "scene"), (p.labels, "labels"))]
    entries += [e for prob, truth in prob_maps for e in ((prob, "other"), (truth, "labels"))]
    for path, role in entries:
        full = Path(path).resolve()
        files.append(TrainingFile(path=str(full), sha256=file_sha256(full), role=role))
    return files


def fit_prn(
    train: PRNMaps,
    val: PRNMaps | None,
    options: TrainPRNOptions,
    output: str | Path,
    *,
    base_model_sha256: str,
    resume: str | Path | dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    training_files: Sequence[Any] = (),
    report: Callable[[str], None] | None = None,
) -> PRNTrainResult:
    """Train on in-memory maps; the best epoch goes to ``output`` as a PRN checkpoint.

    ``resume`` is a state file (or its checkpoint) or a state already loaded. Without
    validation maps the best epoch is the one with the lowest training loss.
    ``training_files``: :class:`roadprn.models.checkpoint.TrainingFile` records of the files the
    maps came from, kept in the checkpoint's training data. ``report``: one line per epoch
    (default: the log at INFO).
    """
    paths = TrainPaths.for_output(output)
    state = load_state(resume, "prn") if isinstance(resume, str | Path) else resume
    check_outputs(paths, state, overwrite)
    if state is not None:
        check_resume_options(options, state["options"], PRN_FROZEN_ON_RESUME)
        if state.get("base_model_sha256") != base_model_sha256:
            raise ConfigError(f"--resume: the run being resumed refines base model "
                              f"{str(state.get('base_model_sha256'))[:12]}…, not "
                              f"{base_model_sha256[:12]}…")
    arch_kwargs = arch_kwargs_of(options)
    seed_everything(options.seed, options.threads)
    from roadprn.infer.predictor import resolve_device

    device = str(resolve_device(options.device))
    model = PatchRefineNet(**arch_kwargs).to(device)
    size = model.arch.map_size
    _check_maps(train, size, "training maps")
    has_val = val is not None and len(val) > 0
    if has_val:
        assert val is not None
        _check_maps(val, size, "validation maps")
    arch = model.arch
    data = PRNTrainData.from_maps(train, arch.map_size // arch.grid if arch.grid > 0 else None)
    runner = _PRNRunner(model, data, val if has_val else None, options, device, paths,
                        base_model_sha256, progress, list(training_files))
    if state is not None:
        model.load_state_dict(state["model"])
        runner.optimizer.load_state_dict(state["optimizer"])
    result = run_epochs(runner, options, paths, kind="prn", columns=CSV_COLUMNS, resume=state,
                        extra_state={"base_model_sha256": base_model_sha256,
                                     "arch_kwargs": model.arch_kwargs},
                        on_epoch_end=on_epoch_end, report=report)
    return PRNTrainResult(**vars(result), base_model_sha256=base_model_sha256,
                          train_maps=len(train), val_maps=len(val) if val is not None else 0)


def _check_maps(maps: PRNMaps, size: int, name: str) -> None:
    if maps.prob.ndim != 3 or maps.prob.shape[1:] != (size, size):
        raise ValueError(f"{name}: expected maps of shape (N, {size}, {size}), "
                         f"got {maps.prob.shape}")


class _PRNRunner:
    """One epoch of Adam over the maps (batches from ``(seed, epoch)``), then validation."""

    rate_column = "maps_per_s"

    def __init__(self, model: PatchRefineNet, data: PRNTrainData, val: PRNMaps | None,
                 options: TrainPRNOptions, device: str, paths: TrainPaths,
                 base_model_sha256: str, progress: bool,
                 training_files: list[Any] | None = None) -> None:
        self.model, self.data, self.val, self.options = model, data, val, options
        self.device, self.paths, self.progress = device, paths, progress
        self.base_model_sha256 = base_model_sha256
        self.training_files = training_files or []
        self.optimizer = torch.optim.Adam(trainable_parameters(model), lr=options.lr)
        self.fusion = options.selection_fusion()

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], int]:
        self.model.train()
        losses = []
        steps = -(-len(self.data) // self.options.batch_size)
        batches = self.data.batches(self.options.seed, epoch - 1, self.options.batch_size,
                                    self.options.augment)
        for maps in progress_bar(batches, total=steps, desc=f"epoch {epoch}", unit="step",
                                 enabled=self.progress, leave=False):
            prob, pseudo, truth = (torch.from_numpy(m[:, None]).float().to(self.device)
                                   for m in maps)
            loss = prn_loss(self.model(prob), pseudo, truth)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        row: dict[str, Any] = {"lr": self.optimizer.param_groups[0]["lr"],
                               "train_loss": float(np.mean(losses))}
        if self.val is not None:
            row.update(evaluate_prn(self.model, self.val.prob, self.val.truth, self.fusion,
                                    self.device))
        return row, len(self.data)

    def score(self, row: dict[str, Any]) -> float:
        return float(row["val_iou"] if self.val is not None else -row["train_loss"])

    def save_best(self, row: dict[str, Any]) -> str:
        truth = self.data.truth
        return write_prn_checkpoint(
            self.paths.checkpoint, self.model, self.base_model_sha256,
            metrics=checkpoint_metrics(row, best_epoch=row["epoch"],
                                       map_size=self.model.arch.map_size),
            notes="; ".join(filter(None, [
                self.options.notes, f"{len(self.data)} train / "
                f"{len(self.val) if self.val is not None else 0} validation maps of "
                f"{self.model.arch.map_size} px, selected by validation IoU "
                f"({self.fusion} fusion)"])),
            road_fraction=float(truth.mean()), labelled_pixels=int(truth.size), overwrite=True,
            files=self.training_files)

    def state(self) -> dict[str, Any]:
        return {"model": {k: v.detach().cpu().clone() for k, v in
                          self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": {}, "scaler": {}}


def write_prn_checkpoint(
    path: str | Path,
    model: PatchRefineNet,
    base_model_sha256: str,
    *,
    metrics: dict[str, Any] | None = None,
    notes: str = "",
    road_fraction: float | None = None,
    labelled_pixels: int | None = None,
    overwrite: bool = False,
    files: Sequence[Any] = (),
) -> str:
    """``model``'s weights as a PRN checkpoint paired with its base model; its sha256.

    ``files``: the :class:`~roadprn.models.checkpoint.TrainingFile` records of its data."""
    from roadprn.models.checkpoint import CheckpointMeta, TrainingData, save_checkpoint

    meta = CheckpointMeta(
        kind="prn", arch="prn", arch_kwargs=model.arch_kwargs,
        base_model_sha256=base_model_sha256, metrics=metrics or {},
        training_data=TrainingData(files=list(files), notes=notes, road_fraction=road_fraction,
                                   labelled_pixels=labelled_pixels),
    )
    return save_checkpoint(path, model, meta, overwrite=overwrite)
