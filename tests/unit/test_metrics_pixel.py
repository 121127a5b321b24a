"""Pixel metrics: hand-counted cases, empty cases, symmetry, anisotropic relaxed tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from roadprn.evaluate.io import to_unit_interval
from roadprn.evaluate.pixel import (
    PixelCounts,
    best_threshold,
    confusion,
    patch_iou_grid,
    pixel_metrics,
    relaxed_counts,
    relaxed_scores,
    scores_from_counts,
    sweep_counts,
    threshold_sweep,
)

ALL = ("iou", "precision", "recall", "f1", "relaxed_precision", "relaxed_recall", "relaxed_f1")


def _road(shape=(40, 50)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[10:13, :] = True
    m[:, 20:22] = True
    return m


def test_identical_scores_one_everywhere():
    truth = _road()
    metrics, _, _ = pixel_metrics(truth.astype(float), truth, pixel_size_m=(0.3, 0.3))
    assert all(metrics[k] == 1.0 for k in ALL)


def test_empty_prediction_scores_zero_and_both_empty_scores_one():
    truth = _road()
    metrics, counts, _ = pixel_metrics(np.zeros(truth.shape), truth, pixel_size_m=(1, 1))
    assert counts.tp == 0 and counts.fn == truth.sum()
    assert all(metrics[k] == 0.0 for k in ALL)
    both, _, _ = pixel_metrics(np.zeros((5, 5)), np.zeros((5, 5), bool), pixel_size_m=(1, 1))
    assert all(both[k] == 1.0 for k in ALL)


def test_hand_counted_confusion():
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 1]], bool)
    truth = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    c = confusion(pred, truth)
    assert c == PixelCounts(tp=2, fp=2, fn=1, tn=3)
    s = scores_from_counts(c)
    assert s["iou"] == pytest.approx(2 / 5)
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))


def test_invalid_pixels_are_excluded():
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 1]], bool)
    truth = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    valid = np.ones_like(pred)
    valid[:, 1:] = False  # keep only the first column: two TPs
    metrics, counts, relaxed = pixel_metrics(pred, truth, valid, pixel_size_m=(1, 1),
                                             tolerance_m=10)
    assert counts == PixelCounts(2, 0, 0, 0)
    assert metrics["iou"] == 1.0
    assert relaxed.pred_total == 2 and relaxed.truth_total == 2


@settings(max_examples=40, deadline=None)
@given(arrays(bool, (12, 15)), arrays(bool, (12, 15)),
       st.floats(0.2, 2.0), st.floats(0.2, 2.0), st.floats(0.0, 4.0))
def test_swapping_prediction_and_truth_swaps_precision_and_recall(a, b, sx, sy, tol):
    m_ab, _, _ = pixel_metrics(a, b, pixel_size_m=(sx, sy), tolerance_m=tol)
    m_ba, _, _ = pixel_metrics(b, a, pixel_size_m=(sx, sy), tolerance_m=tol)
    assert m_ab["precision"] == m_ba["recall"] and m_ab["recall"] == m_ba["precision"]
    assert m_ab["relaxed_precision"] == m_ba["relaxed_recall"]
    assert m_ab["relaxed_recall"] == m_ba["relaxed_precision"]
    assert m_ab["iou"] == m_ba["iou"] and m_ab["f1"] == m_ba["f1"]
    # relaxing can only help
    assert m_ab["relaxed_precision"] >= m_ab["precision"]
    assert m_ab["relaxed_recall"] >= m_ab["recall"]


def test_relaxed_tolerance_uses_metres_per_axis():
    truth = np.zeros((30, 30), bool)
    truth[:, 10] = True  # vertical road
    one_col = np.roll(truth, 1, axis=1)  # 1 pixel east
    two_cols = np.roll(truth, 2, axis=1)
    # pixels 2 m wide, 0.5 m tall (not square in metres)
    size = (2.0, 0.5)
    r1 = relaxed_scores(relaxed_counts(one_col, truth, size, tolerance_m=3.0))
    r2 = relaxed_scores(relaxed_counts(two_cols, truth, size, tolerance_m=3.0))
    assert r1["relaxed_precision"] == 1.0 and r1["relaxed_recall"] == 1.0
    assert r2["relaxed_precision"] == 0.0 and r2["relaxed_recall"] == 0.0  # 4 m > 3 m
    horizontal = np.zeros((30, 30), bool)
    horizontal[10, :] = True
    moved_rows = np.roll(horizontal, 5, axis=0)  # 5 rows x 0.5 m = 2.5 m
    r3 = relaxed_scores(relaxed_counts(moved_rows, horizontal, size, tolerance_m=3.0))
    assert r3["relaxed_precision"] == 1.0
    assert pixel_metrics(moved_rows, horizontal)[0]["iou"] == 0.0


def test_sweep_matches_direct_thresholding():
    rng = np.random.default_rng(1)
    truth = _road()
    prob = np.clip(truth * 0.6 + rng.random(truth.shape) * 0.5, 0, 1)
    valid = rng.random(truth.shape) > 0.1
    sweep = threshold_sweep(prob, truth, valid, n_thresholds=11)
    for i, t in enumerate(sweep["threshold"]):
        direct, _, _ = pixel_metrics(prob, truth, valid, threshold=t)
        for k in ("precision", "recall", "f1", "iou"):
            assert sweep[k][i] == pytest.approx(direct[k]), (t, k)
    t_best, f1_best = best_threshold(sweep, "f1")
    assert f1_best == pytest.approx(sweep["f1"].max())
    assert 0.5 <= t_best <= 0.7  # road pixels are >= 0.6, background < 0.5
    counts = sweep_counts(prob, truth, valid, n_thresholds=11)
    assert counts["tp"][0] == (truth & valid).sum()  # threshold 0: everything is road


def test_patch_iou_grid_values_and_empty_patches():
    truth = np.zeros((8, 12), bool)
    pred = np.zeros((8, 12), bool)
    truth[0:2, 0:4] = True  # patch (0, 0): 8 truth pixels
    pred[0:2, 0:2] = True  # 4 of them predicted
    pred[5, 9] = True  # patch (1, 2): one FP only
    grid = patch_iou_grid(pred, truth, 4)
    assert grid.shape == (2, 3)
    assert grid[0, 0] == pytest.approx(0.5)
    assert grid[1, 2] == 0.0
    assert np.isnan(grid[0, 1]) and np.isnan(grid[1, 0])
    partial = patch_iou_grid(pred[:7, :11], truth[:7, :11], 4)  # ragged edges
    assert partial.shape == (2, 3) and partial[0, 0] == pytest.approx(0.5)


def test_pooled_iou_differs_from_mean_iou():
    a_truth = np.ones((1, 10), bool)
    a_pred = a_truth.copy()  # IoU 1 on a big image
    b_truth = np.zeros((1, 10), bool)
    b_truth[0, 0] = True
    b_pred = np.zeros((1, 10), bool)  # IoU 0 on a tiny road
    ca, cb = confusion(a_pred, a_truth), confusion(b_pred, b_truth)
    pooled = scores_from_counts(ca + cb)["iou"]
    mean = (scores_from_counts(ca)["iou"] + scores_from_counts(cb)["iou"]) / 2
    assert pooled == pytest.approx(10 / 11) and mean == pytest.approx(0.5)


def test_unit_interval_conversion():
    assert to_unit_interval(np.array([0, 1], np.uint8)).tolist() == [0.0, 1.0]
    assert to_unit_interval(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]
    assert to_unit_interval(np.array([0, 128], np.uint8))[1] == pytest.approx(128 / 255)
    assert to_unit_interval(np.array([0.2, np.nan], np.float32)).tolist() == pytest.approx(
        [0.2, 0.0])


def test_unit_interval_ignores_nodata_when_deciding_the_scale():
    data = np.array([0, 1, 255], np.uint8)  # {0, 1} mask, 255 = nodata
    out = to_unit_interval(data, np.array([True, True, False]))
    assert out[:2].tolist() == [0.0, 1.0]
