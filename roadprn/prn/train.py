"""Train a PatchRefineNet on base-model probability maps and their ground truth.

Maps must come from images the base model was not trained on (its own training images give
over-confident maps and PRN learns little). Pseudo-labels are computed once per map with the
model's patch size; flips and 90° rotations are applied jointly to map, pseudo-label and truth
(they map a square patch grid onto itself, so the pseudo-labels stay valid). The checkpoint is
selected on a held-out split by pooled IoU of the fused output, not by training loss.

Deterministic: the model is built after seeding, and each epoch's shuffling and augmentation
come from ``(seed, epoch)``, so a run resumed from an epoch state continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from roadprn.prn.loss import prn_loss
from roadprn.prn.network import PatchRefineNet
from roadprn.prn.pseudolabels import pseudo_labels
from roadprn.prn.refine import fuse


@dataclass
class PRNTrainSettings:
    epochs: int = 50
    learning_rate: float = 8e-4
    batch_size: int = 1
    seed: int = 0
    augment: bool = True
    fusion: str = "paper"
    device: str = "cpu"


@dataclass
class PRNTrainState:
    """Everything needed to continue or publish a run (plain tensors and numbers)."""

    arch_kwargs: dict[str, Any]
    epoch: int  # epochs completed
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)


def _check_maps(prob: np.ndarray, truth: np.ndarray, size: int, name: str) -> None:
    if prob.ndim != 3 or prob.shape != truth.shape or prob.shape[1:] != (size, size):
        raise ValueError(
            f"{name}: expected probability and truth of shape (N, {size}, {size}), "
            f"got {prob.shape} and {truth.shape}"
        )


def _patch_size(model: PatchRefineNet) -> int | None:
    arch = model.arch
    return arch.map_size // arch.grid if arch.grid > 0 else None


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the last two axes (k in 0..7)."""
    x = np.rot90(x, k % 4, axes=(-2, -1))
    return x[..., ::-1] if k >= 4 else x


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
    g, loc = predict_maps(model, prob, device=device)
    truth = truth != 0
    metrics = {"val_iou": pooled_iou(fuse(g, loc, fusion), truth)}
    metrics["val_iou_global"] = pooled_iou(g > 0.5, truth)
    if loc is not None:
        metrics["val_iou_local"] = pooled_iou(loc > 0.5, truth)
    return metrics


def train_prn(
    arch_kwargs: dict[str, Any],
    train_prob: np.ndarray,
    train_truth: np.ndarray,
    val_prob: np.ndarray | None = None,
    val_truth: np.ndarray | None = None,
    settings: PRNTrainSettings | None = None,
    *,
    resume: PRNTrainState | None = None,
    on_epoch_end: Callable[[PRNTrainState], None] | None = None,
) -> PRNTrainState:
    """Train from (N, S, S) maps; returns the final state with the best weights in ``best_state``.

    Without a validation split the best epoch is the one with the lowest training loss.
    ``on_epoch_end`` receives the state after every epoch (for checkpoints and progress).
    """
    settings = settings or PRNTrainSettings()
    torch.manual_seed(settings.seed)
    model = PatchRefineNet(**arch_kwargs).to(settings.device)
    size = model.arch.map_size
    _check_maps(train_prob, train_truth, size, "training maps")
    has_val = val_prob is not None and val_truth is not None
    if has_val:
        assert val_prob is not None and val_truth is not None
        _check_maps(val_prob, val_truth, size, "validation maps")
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    if resume is not None:
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer_state)
        state = copy.deepcopy(resume)
    else:
        state = PRNTrainState(
            arch_kwargs=model.arch_kwargs,
            epoch=0,
            model_state=copy.deepcopy(model.state_dict()),
            optimizer_state=copy.deepcopy(optimizer.state_dict()),
            best_state=copy.deepcopy(model.state_dict()),
            best_epoch=0,
            best_score=-math.inf,
        )
    train_prob = np.asarray(train_prob, dtype=np.float32)
    train_pseudo = pseudo_labels(train_prob, train_truth, _patch_size(model))
    train_truth = np.asarray(train_truth) != 0

    for epoch in range(state.epoch, settings.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng([settings.seed, epoch])
        order = rng.permutation(len(train_prob))
        model.train()
        losses = []
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            k = int(rng.integers(8)) if settings.augment else 0
            maps = [_dihedral(a[idx], k) for a in (train_prob, train_pseudo, train_truth)]
            prob, pseudo, truth = (
                torch.from_numpy(np.ascontiguousarray(m)[:, None]).float().to(settings.device)
                for m in maps
            )
            loss = prn_loss(model(prob), pseudo, truth)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        record: dict[str, float] = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        if has_val:
            assert val_prob is not None and val_truth is not None
            record.update(
                evaluate_prn(model, val_prob, val_truth, settings.fusion, settings.device)
            )
            score = record["val_iou"]
        else:
            score = -record["train_loss"]
        record["seconds"] = time.perf_counter() - t0
        state.history.append(record)
        state.epoch = epoch + 1
        if score > state.best_score:
            state.best_score, state.best_epoch = score, epoch + 1
            state.best_state = copy.deepcopy(model.state_dict())
        state.model_state = copy.deepcopy(model.state_dict())
        state.optimizer_state = copy.deepcopy(optimizer.state_dict())
        if on_epoch_end is not None:
            on_epoch_end(state)
    return state


def best_model(state: PRNTrainState) -> PatchRefineNet:
    """The selected model, in eval mode."""
    model = PatchRefineNet(**state.arch_kwargs)
    model.load_state_dict(state.best_state)
    return model.eval()
