"""Per-patch optimal binarisation of probability maps (PRN pseudo-labels and oracle baselines).

For every patch the threshold τ ∈ {0.05, 0.10, …, 1.00} that maximises the smoothed IoU
``(|B∧G| + 1) / (|B∨G| + 1)`` of ``B = P > τ`` (strict) against the truth ``G`` is chosen;
ties go to the lowest τ. The label of the patch is ``P > τ*``.

Why it is fast: each pixel is reduced once to its *threshold bin* ``b`` = the number of
thresholds strictly below its probability, so ``P > τ_j ⇔ b > j``. Compiled numba kernels
then make one pass over each band of patch rows: a vectorised loop bins a row, a second counts
(truth, bin) per patch; the reversed cumulative sums of those 2 × 21 counts are |B| and |B∧G|
for all 20 thresholds at once, and the labels ``b > j*`` are written while the band's bins
are still in cache. That is about a nanosecond per pixel on one thread, O(pixels) rather
than O(pixels × thresholds), with no temporary larger than one band; the kernels release the
GIL. The first call in a process compiles them (a few seconds) or loads them from numba's
on-disk cache (a fraction of a second).

Comparisons are made in float64 against ``k / 20`` (so a float32 0.05 is *above* τ = 0.05).
Truth pixels are roads where non-zero. When the patch size does not divide the map, the last
row/column of patches is smaller (partial patches are scored on their own pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

#: Candidate thresholds τ_j = (j + 1) / 20, ascending, float64.
THRESHOLDS: np.ndarray = np.arange(1, 21, dtype=np.float64) / 20.0
_N_BINS = THRESHOLDS.size + 1  # bin b ∈ [0, 20]

PatchSize = int | tuple[int, int] | None
_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    """``njit`` with numba's on-disk cache, or without it where no cache directory is writable.

    numba tries ``__pycache__`` beside this file, then the user's cache directory; when neither
    is writable (read-only install and home) ``cache=True`` raises at decoration time, which
    would make this module unimportable, so compile in memory on every run instead.
    """
    try:
        return cast(_F, numba.njit(cache=True, nogil=True)(func))
    except RuntimeError:
        return cast(_F, numba.njit(nogil=True)(func))


@_jit
def _bins_row(prob: np.ndarray, out: np.ndarray, exact_guess: bool) -> bool:
    """Threshold bins of a 1-D run of probabilities into ``out``; False if any is NaN or ±inf.

    ``ceil(20·p) − 1`` clamped to [0, 20] is exact when ``20·p`` is, as for float32
    (``exact_guess``); a float64 within rounding error of ``k/20`` may be one bin off, so the
    guess is checked against ``(b + 1)/20`` and ``b/20``, the very float64 values of THRESHOLDS.
    Branch-free, so that the loop vectorises. NaN gets bin 0.
    """
    bad = False
    for x in range(prob.size):
        p = float(prob[x])
        bad |= not (p - p == 0.0)
        s = p * 20.0  # clamped before ceil makes an int, so NaN (to 0) and huge p stay in range
        s = s if s > 0.0 else 0.0
        s = s if s < 21.0 else 21.0
        b = max(math.ceil(s), 1) - 1
        if not exact_guess:
            b += (b < 20) & (p > (b + 1) / 20.0)
            b -= (b > 0) & (p <= b / 20.0)
        out[x] = b
    return not bad


@_jit
def _count_row(
    bins: np.ndarray, truth: np.ndarray, pw: int, codes: np.ndarray, hist: np.ndarray
) -> None:
    """Add one row to its patches' counts ``hist[patch, lane, truth·21 + bin]``.

    The (truth, bin) codes come from a vectorised loop; the increments rotate over 4 lanes
    because equal neighbours (flat areas) would otherwise wait on each other's store (~3×).
    """
    width = bins.size
    for x in range(width):
        codes[x] = bins[x] + np.uint8(_N_BINS) * truth[x]
    for c in range(hist.shape[0]):
        h0, h1, h2, h3 = hist[c, 0], hist[c, 1], hist[c, 2], hist[c, 3]
        x, end = c * pw, min(c * pw + pw, width)  # the last patch may be narrower
        while x + 4 <= end:
            h0[codes[x]] += 1
            h1[codes[x + 1]] += 1
            h2[codes[x + 2]] += 1
            h3[codes[x + 3]] += 1
            x += 4
        for tail in range(x, end):
            h0[codes[tail]] += 1


@_jit
def _best_bin(hist: np.ndarray) -> int:
    """Index j of the best τ_j from one patch's lane counts; ties go to the lowest j."""
    counts = hist.sum(axis=0)  # [truth·21 + bin]
    n_true = counts[_N_BINS : 2 * _N_BINS].sum()  # |G|
    pred, inter = 0, 0  # |B|, |B ∧ G| for B = bin > j, grown from the top threshold down
    best, best_score = 0, -1.0
    for j in range(_N_BINS - 2, -1, -1):
        pred += counts[j + 1] + counts[_N_BINS + j + 1]
        inter += counts[_N_BINS + j + 1]
        score = (inter + 1.0) / (pred + n_true - inter + 1.0)
        if score >= best_score:  # scanning downwards, so >= keeps the lowest maximiser
            best, best_score = j, score
    return best


@_jit
def _label_row(bins: np.ndarray, best: np.ndarray, out: np.ndarray) -> None:
    """``out = bins > best`` elementwise (``P > τ*`` of each pixel's patch); vectorises."""
    for x in range(bins.size):
        out[x] = bins[x] > best[x]


@_jit
def _search_kernel(
    prob: np.ndarray,
    truth: np.ndarray,
    ph: int,
    pw: int,
    exact_guess: bool,
    best: np.ndarray,
    labels: np.ndarray,
) -> bool:
    """Fill ``best`` (N, rows, cols) and, unless it has no maps, ``labels`` (N, H, W) from
    ``prob`` and uint8 ``truth`` (N, H, W); False if a probability is NaN or infinite.

    Works a band of ``ph`` rows at a time, so that its bins are still in cache for labelling.
    """
    n, height, width = prob.shape
    rows, cols = best.shape[1], best.shape[2]
    bins = np.empty((ph, width), np.uint8)  # the current band
    codes = np.empty(width, np.uint8)
    row_best = np.empty(width, np.uint8)  # τ* index of each column's patch in the band
    hist = np.empty((cols, 4, 2 * _N_BINS), np.int32)  # see _search
    for i in range(n):
        for r in range(rows):
            y0 = r * ph
            band = min(ph, height - y0)
            hist[:] = 0
            for dy in range(band):
                if not _bins_row(prob[i, y0 + dy], bins[dy], exact_guess):
                    return False
                _count_row(bins[dy], truth[i, y0 + dy], pw, codes, hist)
            for c in range(cols):
                best[i, r, c] = _best_bin(hist[c])
                row_best[c * pw : (c + 1) * pw] = best[i, r, c]
            if labels.shape[0]:
                for dy in range(band):
                    _label_row(bins[dy], row_best, labels[i, y0 + dy])
    return True


def _as_float(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Native C-contiguous float32 (from float16/32) or float64 (anything else), and whether
    the float32 shortcut is exact. Copies only where needed, and keeps to two kernel builds."""
    if values.dtype in (np.float16, np.float32):
        return np.ascontiguousarray(values, dtype=np.float32), True
    return np.ascontiguousarray(values, dtype=np.float64), False


def threshold_bins(prob: Any) -> np.ndarray:
    """Number of thresholds strictly below each probability (uint8, same shape as ``prob``).

    For float32 (or narrower) input ``20·p`` is exact in float64 and a float32 never lies
    within rounding distance of ``k/20`` unless equal to it, so ``ceil(20·p) − 1`` is exact.
    Float64 input is corrected by exact comparisons with ``k/20`` where that guess is one off.
    """
    values, exact_guess = _as_float(np.asarray(prob))
    out = np.empty(values.shape, dtype=np.uint8)
    _bins_row(values.reshape(-1), out.reshape(-1), exact_guess)
    return out


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
    truth_arr = truth_arr if truth_arr.dtype == np.bool_ else truth_arr != 0
    return prob_arr, np.ascontiguousarray(truth_arr), single


def _patch_shape(patch_size: PatchSize, height: int, width: int) -> tuple[int, int]:
    if patch_size is None:
        return height, width
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    if ph < 1 or pw < 1:
        raise ValueError(f"patch size must be positive, got {patch_size}")
    return min(ph, height), min(pw, width)


def _search(
    prob: np.ndarray, truth: np.ndarray, ph: int, pw: int, want_labels: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Best threshold index per patch (N, rows, cols) and, if asked, the label maps (N, H, W)."""
    n, height, width = prob.shape
    ph, pw = max(ph, 1), max(pw, 1)  # an empty map gives 0 here
    if ph * pw >= 2**31:  # int32 counters are ~8 % faster than int64 ones
        raise ValueError(f"patches of {ph}x{pw} pixels are too large to count in int32")
    best = np.zeros((n, -(-height // ph), -(-width // pw)), dtype=np.int64)
    labels = np.empty((n if want_labels else 0, height, width), dtype=bool)
    values, exact_guess = _as_float(prob)
    if prob.size and not _search_kernel(
        values, truth.view(np.uint8), ph, pw, exact_guess, best, labels
    ):
        raise ValueError("probability map contains NaN or infinite values")
    return best, labels if want_labels else None


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
