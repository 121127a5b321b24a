"""Per-patch optimal binarisation of probability maps (PRN pseudo-labels and oracle baselines).

For every patch the threshold τ ∈ {0.05, 0.10, …, 1.00} that maximises the smoothed IoU
``(|B∧G| + 1) / (|B∨G| + 1)`` of ``B = P > τ`` (strict) against the truth ``G`` is chosen;
ties go to the lowest τ. The label of the patch is ``P > τ*``.

Why it is fast: each pixel is reduced once to its *threshold bin* ``b`` = the number of
thresholds strictly below its probability, so ``P > τ_j ⇔ b > j``. One ``bincount`` over
(patch, truth, bin) codes gives per-patch histograms; their reversed cumulative sums are
|B| and |B∧G| for all 20 thresholds at once. The cost is O(pixels), not O(pixels × thresholds),
and the temporaries are a few bytes per pixel of one map.

Comparisons are made in float64 against ``k / 20`` (so a float32 0.05 is *above* τ = 0.05).
Truth pixels are roads where non-zero. When the patch size does not divide the map, the last
row/column of patches is smaller (partial patches are scored on their own pixels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Candidate thresholds τ_j = (j + 1) / 20, ascending, float64.
THRESHOLDS: np.ndarray = np.arange(1, 21, dtype=np.float64) / 20.0
_N_BINS = THRESHOLDS.size + 1  # bin b ∈ [0, 20]

PatchSize = int | tuple[int, int] | None


def threshold_bins(prob: Any) -> np.ndarray:
    """Number of thresholds strictly below each probability (uint8, same shape as ``prob``).

    For float32 (or narrower) input ``20·p`` is exact in float64 and a float32 never lies
    within rounding distance of ``k/20`` unless equal to it, so ``ceil(20·p) − 1`` is exact.
    Float64 input is redone with an exact search where ``20·p`` is within rounding error of
    an integer.
    """
    values = np.asarray(prob)
    scaled = values.astype(np.float64) * float(THRESHOLDS.size)
    ceiled = np.ceil(scaled)
    if values.dtype == np.float64:
        gap = ceiled - scaled
        near = (gap < 1e-9) | (gap > 1 - 1e-9)
        near &= values != 0  # exact zeros are common and need no search
    else:
        near = None
    np.clip(ceiled, 1, THRESHOLDS.size + 1, out=ceiled)
    bins = ceiled.astype(np.uint8)
    bins -= 1
    if near is not None and near.any():
        bins[near] = np.searchsorted(THRESHOLDS, values[near], side="left")
    return bins


def _as_batch(prob: Any, truth: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    prob_arr = np.asarray(prob)
    truth_arr = np.asarray(truth)
    if prob_arr.shape != truth_arr.shape:
        raise ValueError(
            f"probability shape {prob_arr.shape} differs from truth shape {truth_arr.shape}"
        )
    if prob_arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (N, H, W) map, got shape {prob_arr.shape}")
    single = prob_arr.ndim == 2
    if single:
        prob_arr, truth_arr = prob_arr[None], truth_arr[None]
    if prob_arr.size and not np.isfinite(prob_arr).all():
        raise ValueError("probability map contains NaN or infinite values")
    return prob_arr, np.ascontiguousarray(truth_arr != 0), single


def _patch_shape(patch_size: PatchSize, height: int, width: int) -> tuple[int, int]:
    if patch_size is None:
        return height, width
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    if ph < 1 or pw < 1:
        raise ValueError(f"patch size must be positive, got {patch_size}")
    return min(ph, height), min(pw, width)


# Histogram lanes: consecutive pixels of a flat patch would hit one counter and serialise
# bincount on its own increments; spreading columns over lanes keeps it fast.
_LANES = 4


def _histogram_codes(height: int, width: int, ph: int, pw: int) -> tuple[np.ndarray, int, int]:
    """Per-pixel offset (lane, patch) × 42 to which ``truth·21 + bin`` is added."""
    rows, cols = -(-height // ph), -(-width // pw)
    patch = (np.arange(height)[:, None] // ph) * cols + (np.arange(width)[None, :] // pw)
    lane = (np.arange(width) % _LANES)[None, :]
    return ((lane * rows * cols + patch) * 2 * _N_BINS).astype(np.int64), rows, cols


def _search(
    prob: np.ndarray, truth: np.ndarray, ph: int, pw: int, want_labels: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Best threshold index per patch (N, rows, cols) and, if asked, the label maps (N, H, W).

    Maps are processed one at a time so that every temporary stays in cache.
    """
    n, height, width = prob.shape
    offsets, rows, cols = _histogram_codes(height, width, ph, pw)
    n_patches = rows * cols
    divisible = height % ph == 0 and width % pw == 0
    patch_of_pixel = (offsets // (2 * _N_BINS)) % n_patches
    best = np.empty((n, rows, cols), dtype=np.int64)
    labels = np.empty(prob.shape, dtype=bool) if want_labels else None
    code = np.empty((height, width), dtype=np.int64)
    for i in range(n):
        bins = threshold_bins(prob[i])
        value = truth[i].view(np.uint8) * np.uint8(_N_BINS)
        value += bins
        np.add(offsets, value, out=code)
        hist = np.bincount(code.ravel(), minlength=_LANES * n_patches * 2 * _N_BINS)
        hist = hist.reshape(_LANES, n_patches, 2, _N_BINS).sum(axis=0)
        # above[:, g, j] = pixels with bin > j (i.e. P > τ_j) and truth g, for j = 0..19
        above = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1][..., 1:]
        inter = above[:, 1]  # |B ∧ G|
        pred = above[:, 0] + inter  # |B|
        n_true = hist[:, 1].sum(axis=-1, keepdims=True)  # |G|
        score = (inter + 1.0) / (pred + n_true - inter + 1.0)
        patch_best = np.argmax(score, axis=-1)  # first maximum = lowest τ
        best[i] = patch_best.reshape(rows, cols)
        if labels is not None:
            # P > τ_j  ⇔  bin > j
            index = patch_best.astype(np.uint8)
            if divisible:
                np.greater(
                    bins.reshape(rows, ph, cols, pw),
                    index.reshape(rows, 1, cols, 1),
                    out=labels[i].reshape(rows, ph, cols, pw),
                )
            else:
                np.greater(bins, index[patch_of_pixel], out=labels[i])
    return best, labels


def patch_thresholds(prob: Any, truth: Any, patch_size: PatchSize) -> np.ndarray:
    """Optimal τ per patch: (rows, cols) for one map, (N, rows, cols) for a batch.

    ``patch_size`` is an int, an (h, w) pair, or None for the whole map (per-image oracle).
    """
    prob_arr, truth_arr, single = _as_batch(prob, truth)
    ph, pw = _patch_shape(patch_size, *prob_arr.shape[1:])
    best, _ = _search(prob_arr, truth_arr, ph, pw, want_labels=False)
    taus = THRESHOLDS[best]
    return taus[0] if single else taus


def pseudo_labels(prob: Any, truth: Any, patch_size: PatchSize) -> np.ndarray:
    """Per-patch optimal binarisation ``P > τ*(patch)`` as a bool map of ``prob``'s shape.

    These are PRN's training targets and the per-patch oracle baseline.
    """
    prob_arr, truth_arr, single = _as_batch(prob, truth)
    ph, pw = _patch_shape(patch_size, *prob_arr.shape[1:])
    _, labels = _search(prob_arr, truth_arr, ph, pw, want_labels=True)
    assert labels is not None
    return labels[0] if single else labels


def per_patch_oracle(prob: Any, truth: Any, patch_size: PatchSize) -> np.ndarray:
    """Upper-bound baseline: the best threshold per patch (same as :func:`pseudo_labels`)."""
    return pseudo_labels(prob, truth, patch_size)


def per_image_oracle(prob: Any, truth: Any) -> np.ndarray:
    """Upper-bound baseline: the best single threshold per image."""
    return pseudo_labels(prob, truth, None)
