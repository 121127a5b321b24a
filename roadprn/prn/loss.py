"""PatchRefineNet loss (Nagendra et al.), arguments always (prediction, target).

    L       = 0.7 · mean_b L_patch(Y_b, pseudo_label) + 0.3 · mean_b L_gt(Y_b, truth)
    L_patch = 0.7 · focal(α=0.25, γ=2) + 0.3 · BCE(edge(Y), edge(pseudo_label))
    edge(x) = relu(tanh(laplacian_3×3(x)))
    L_gt    = BCE weighted 1.12 on road pixels, 1.0 on background

Predictions are probabilities. Logs are taken of ``p + ε`` and ``1 − p + ε`` rather than of a
clamped ``p``: the value and gradient stay finite at exactly 0 or 1, and a saturated wrong
pixel still gets a gradient (a clamp would zero it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-6
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
ROAD_WEIGHT = 1.12
PATCH_WEIGHT, GT_WEIGHT = 0.7, 0.3
FOCAL_WEIGHT, EDGE_WEIGHT = 0.7, 0.3

# 8-neighbour Laplacian: positive on the inner rim of a mask, zero inside and outside it
_LAPLACIAN = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])


def _log_terms(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.log(pred + EPS), torch.log1p(EPS - pred)


def binary_cross_entropy(
    pred: torch.Tensor, target: torch.Tensor, road_weight: float = 1.0
) -> torch.Tensor:
    """Mean BCE; target pixels weighted by ``road_weight·t + (1 − t)``."""
    log_p, log_q = _log_terms(pred)
    loss = -(target * log_p + (1 - target) * log_q)
    if road_weight != 1.0:
        loss = loss * (1 + (road_weight - 1) * target)
    return loss.mean()


def focal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """Mean binary focal loss (Lin et al.): α on roads, 1 − α on background."""
    log_p, log_q = _log_terms(pred)
    pos = alpha * (1 - pred).clamp_min(0).pow(gamma) * log_p
    neg = (1 - alpha) * pred.clamp_min(0).pow(gamma) * log_q
    return -(target * pos + (1 - target) * neg).mean()


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """relu(tanh(Laplacian)) of (B, 1, H, W) maps, zero padding: soft inner boundary in [0, 1)."""
    kernel = _LAPLACIAN.to(dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    return torch.relu(torch.tanh(F.conv2d(x, kernel, padding=1)))


def patch_loss(pred: torch.Tensor, pseudo_label: torch.Tensor) -> torch.Tensor:
    """Focal loss plus BCE between the edge maps of prediction and pseudo-label."""
    edge = binary_cross_entropy(edge_map(pred), edge_map(pseudo_label))
    return FOCAL_WEIGHT * focal_loss(pred, pseudo_label) + EDGE_WEIGHT * edge


def truth_loss(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """BCE against ground truth, road pixels weighted 1.12."""
    return binary_cross_entropy(pred, truth, road_weight=ROAD_WEIGHT)


def prn_loss(
    preds: torch.Tensor | Sequence[torch.Tensor | None],
    pseudo_label: torch.Tensor,
    truth: torch.Tensor,
) -> torch.Tensor:
    """Total loss over the branches in ``preds`` (a PRNOutput, a list, or one map).

    Branches that are None (P0 has no local branch) are skipped; all maps are (B, 1, H, W).
    """
    branches = [preds] if isinstance(preds, torch.Tensor) else [p for p in preds if p is not None]
    if not branches:
        raise ValueError("prn_loss needs at least one prediction map")
    pseudo_label = pseudo_label.to(branches[0].dtype)
    truth = truth.to(branches[0].dtype)
    patch = torch.stack([patch_loss(y, pseudo_label) for y in branches]).mean()
    gt = torch.stack([truth_loss(y, truth) for y in branches]).mean()
    return PATCH_WEIGHT * patch + GT_WEIGHT * gt
