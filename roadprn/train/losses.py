"""Dice + BCE for road segmentation, with an ignore mask for nodata and padding.

BCE alone is dominated by the ~90 % background and learns to say "no road"; soft dice is
computed over the whole batch (not per chip) so chips without roads do not produce 0/0 noise.
Works on logits (``binary_cross_entropy_with_logits``), which is safe under CUDA autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DICE_SMOOTH = 1.0


def dice_bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    bce_weight: float = 0.5,
    dice_weight: float = 0.5,
) -> torch.Tensor:
    """``bce_weight·BCE + dice_weight·(1 − soft dice)`` over valid pixels of (B, 1, H, W) maps."""
    logits = logits.float()
    target = target.float()
    weight = torch.ones_like(target) if valid is None else valid.float()
    n_valid = weight.sum().clamp_min(1.0)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * weight).sum() / n_valid
    prob = torch.sigmoid(logits) * weight
    intersection = (prob * target).sum()
    dice = (2 * intersection + DICE_SMOOTH) / (prob.sum() + (target * weight).sum() + DICE_SMOOTH)
    return bce_weight * bce + dice_weight * (1 - dice)


def confusion_counts(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, threshold: float = 0.5
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of ``sigmoid(logits) > threshold``."""
    pred = torch.sigmoid(logits.float()) > threshold
    truth = target > 0.5
    keep = torch.ones_like(truth) if valid is None else valid > 0.5
    tp = int((pred & truth & keep).sum())
    fp = int((pred & ~truth & keep).sum())
    fn = int((~pred & truth & keep).sum())
    return tp, fp, fn


def scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """IoU, precision, recall and F1 from pixel counts (0 where undefined)."""
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"iou": iou, "precision": precision, "recall": recall, "f1": f1}
