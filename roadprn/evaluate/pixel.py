"""Pixel metrics of a road mask against a truth mask, as pure numpy over arrays + a validity mask.

Conventions (documented in docs/metrics.md):

* Only pixels where ``valid`` is True count; nodata and ignored pixels neither count nor match.
* A ratio whose denominator is empty is 1.0 when prediction and truth are both empty there and
  0.0 otherwise (an empty prediction of a non-empty truth scores 0, never NaN), so swapping
  prediction and truth swaps precision and recall in every case.
* Relaxed metrics use true distances in metres: the pixel size is given per axis because
  pixels of a geographic CRS are not square in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from roadprn.raster.masks import counts_above, is_road


@dataclass(frozen=True)
class PixelCounts:
    """Confusion counts over valid pixels; sums of these give pooled metrics over a set."""

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                           self.tn + other.tn)


@dataclass(frozen=True)
class RelaxedCounts:
    """Predicted pixels near truth and truth pixels near a prediction, within the tolerance."""

    pred_matched: int
    pred_total: int
    truth_matched: int
    truth_total: int

    def __add__(self, other: RelaxedCounts) -> RelaxedCounts:
        return RelaxedCounts(self.pred_matched + other.pred_matched,
                             self.pred_total + other.pred_total,
                             self.truth_matched + other.truth_matched,
                             self.truth_total + other.truth_total)


def safe_ratio(numerator: float, denominator: float, both_empty: bool) -> float:
    """numerator/denominator; an empty denominator gives 1.0 if both sides are empty, else 0.0."""
    if denominator > 0:
        return float(numerator) / float(denominator)
    return 1.0 if both_empty else 0.0


def _valid(shape: tuple[int, ...], valid: np.ndarray | None) -> np.ndarray:
    if valid is None:
        return np.ones(shape, dtype=bool)
    if valid.shape != shape:
        raise ValueError(f"valid mask shape {valid.shape} differs from {shape}")
    return valid.astype(bool, copy=False)


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Road where probability is above threshold (:func:`roadprn.raster.masks.is_road`, the
    rule extract's masks are made by; threshold 0.5 keeps a {0, 1} mask unchanged)."""
    return is_road(np.asarray(prob), threshold)


def confusion(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> PixelCounts:
    """TP/FP/FN/TN of boolean masks over the valid pixels."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    v = _valid(pred.shape, valid)
    p, t = pred & v, truth & v
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = int(np.count_nonzero(v)) - tp - fp - fn
    return PixelCounts(tp, fp, fn, tn)


def scores_from_counts(c: PixelCounts) -> dict[str, float]:
    """IoU, precision, recall and F1 of (pooled) counts, with the empty-case rule above."""
    n_pred, n_truth = c.tp + c.fp, c.tp + c.fn
    both_empty = n_pred == 0 and n_truth == 0
    precision = safe_ratio(c.tp, n_pred, both_empty)
    recall = safe_ratio(c.tp, n_truth, both_empty)
    return {
        "iou": safe_ratio(c.tp, c.tp + c.fp + c.fn, both_empty),
        "precision": precision,
        "recall": recall,
        "f1": safe_ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, both_empty),
    }


def relaxed_counts(pred: np.ndarray, truth: np.ndarray, pixel_size_m: tuple[float, float],
                   tolerance_m: float, valid: np.ndarray | None = None) -> RelaxedCounts:
    """Count pixels of each mask lying within ``tolerance_m`` metres of the other mask.

    ``pixel_size_m`` is (x, y) in metres. Only valid pixels count and only valid pixels match.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    v = _valid(pred.shape, valid)
    p, t = pred & v, truth & v
    sampling = (float(pixel_size_m[1]), float(pixel_size_m[0]))  # (rows, cols)
    pred_matched = int(np.count_nonzero(p & _within(t, sampling, tolerance_m)))
    truth_matched = int(np.count_nonzero(t & _within(p, sampling, tolerance_m)))
    return RelaxedCounts(pred_matched, int(np.count_nonzero(p)), truth_matched,
                         int(np.count_nonzero(t)))


def _within(mask: np.ndarray, sampling: tuple[float, float], tolerance_m: float) -> np.ndarray:
    """Pixels whose centre is within tolerance_m of a True pixel centre of ``mask``."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    distance = ndimage.distance_transform_edt(~mask, sampling=sampling)
    return distance <= tolerance_m + 1e-9


def relaxed_scores(c: RelaxedCounts) -> dict[str, float]:
    """Relaxed precision, recall and their F1 with the empty-case rule."""
    both_empty = c.pred_total == 0 and c.truth_total == 0
    rp = safe_ratio(c.pred_matched, c.pred_total, both_empty)
    rr = safe_ratio(c.truth_matched, c.truth_total, both_empty)
    rf1 = 2 * rp * rr / (rp + rr) if rp + rr > 0 else 0.0
    return {"relaxed_precision": rp, "relaxed_recall": rr, "relaxed_f1": rf1}


def sweep_counts(prob: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None,
                 n_thresholds: int = 101) -> dict[str, np.ndarray]:
    """TP, FP and FN at thresholds evenly spaced in [0, 1]; sums over images pool a set.

    One pass instead of one pass per threshold (:func:`roadprn.raster.masks.counts_above`):
    TP and FP count road and background pixels whose probability is above each threshold.
    """
    prob = np.asarray(prob, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    v = _valid(prob.shape, valid)
    thresholds = np.linspace(0.0, 1.0, n_thresholds)
    tp = counts_above(prob[v & truth], thresholds)
    fp = counts_above(prob[v & ~truth], thresholds)
    return {"threshold": thresholds, "tp": tp, "fp": fp,
            "fn": int(np.count_nonzero(v & truth)) - tp}


def sweep_scores(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and IoU per threshold of (pooled) sweep counts."""
    scores = [scores_from_counts(PixelCounts(int(a), int(b), int(c), 0))
              for a, b, c in zip(counts["tp"], counts["fp"], counts["fn"], strict=True)]
    out = {"threshold": np.asarray(counts["threshold"])}
    for name in ("precision", "recall", "f1", "iou"):
        out[name] = np.array([s[name] for s in scores])
    return out


def threshold_sweep(prob: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None,
                    n_thresholds: int = 101) -> dict[str, np.ndarray]:
    """PR curve of one image: precision, recall, F1 and IoU per threshold."""
    return sweep_scores(sweep_counts(prob, truth, valid, n_thresholds))


def best_threshold(sweep: dict[str, np.ndarray], by: str = "f1") -> tuple[float, float]:
    """(threshold, score) maximising ``by``; ties go to the threshold closest to 0.5."""
    score = sweep[by]
    best = np.flatnonzero(score == score.max())
    pick = best[np.argmin(np.abs(sweep["threshold"][best] - 0.5))]
    return float(sweep["threshold"][pick]), float(score[pick])


def patch_iou_grid(pred: np.ndarray, truth: np.ndarray, patch_size: int,
                   valid: np.ndarray | None = None) -> np.ndarray:
    """IoU of each patch_size x patch_size block (edge blocks are partial).

    A block with no road in either mask is NaN (nothing to score), so the heat map shows
    where the model is wrong rather than where there are no roads.
    """
    if patch_size < 1:
        raise ValueError("patch_size must be >= 1")
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    v = _valid(pred.shape, valid)
    p, t = pred & v, truth & v
    inter = _block_sum(p & t, patch_size)
    union = _block_sum(p | t, patch_size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _block_sum(mask: np.ndarray, size: int) -> np.ndarray:
    """Sums per size x size block; no padding (a patch larger than the image is one block,
    not a padded array of patch_size² cells)."""
    rows = np.arange(0, mask.shape[0], size)
    cols = np.arange(0, mask.shape[1], size)
    return np.add.reduceat(np.add.reduceat(mask.astype(np.int64), rows, axis=0), cols, axis=1)


def pixel_metrics(prob: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None, *,
                  threshold: float = 0.5, pixel_size_m: tuple[float, float] | None = None,
                  tolerance_m: float = 3.0) -> tuple[dict[str, float], PixelCounts,
                                                     RelaxedCounts | None]:
    """All single-image scalar metrics; relaxed ones only when the pixel size is known."""
    pred = binarize(prob, threshold)
    counts = confusion(pred, truth, valid)
    metrics = scores_from_counts(counts)
    relaxed = None
    if pixel_size_m is not None:
        relaxed = relaxed_counts(pred, truth, pixel_size_m, tolerance_m, valid)
        metrics.update(relaxed_scores(relaxed))
    return metrics, counts, relaxed
