"""Vectorised pseudo-labels against a plain per-patch, per-threshold loop."""

from __future__ import annotations

import numpy as np
import pytest

from roadprn.prn.pseudolabels import (
    THRESHOLDS,
    patch_thresholds,
    per_image_oracle,
    per_patch_oracle,
    pseudo_labels,
    threshold_bins,
)
from tests.helpers import loop_pseudo_labels


def random_maps(rng: np.random.Generator, n: int, height: int, width: int):
    # quantised probabilities put many pixels exactly on thresholds and create score ties
    prob = rng.integers(0, 21, size=(n, height, width)) / 20.0
    prob[: n // 2] = rng.random((n // 2, height, width))
    truth = rng.random((n, height, width)) < rng.random((n, 1, 1))
    truth[0, : height // 2] = False  # empty-truth patches
    return prob, truth


@pytest.mark.parametrize("patch", [8, 16, 32, 12])
def test_equals_plain_loop(patch: int) -> None:
    rng = np.random.default_rng(patch)
    prob, truth = random_maps(rng, 6, 32, 48)
    labels = pseudo_labels(prob, truth, patch)
    taus = patch_thresholds(prob, truth, patch)
    for i in range(len(prob)):
        want_labels, want_taus = loop_pseudo_labels(prob[i], truth[i], patch)
        np.testing.assert_array_equal(labels[i], want_labels)
        np.testing.assert_array_equal(taus[i], want_taus)


def test_ties_go_to_lowest_threshold() -> None:
    # every τ gives the same score: all-empty map with empty truth -> τ = 0.05
    prob = np.zeros((16, 16))
    truth = np.zeros((16, 16), dtype=bool)
    assert patch_thresholds(prob, truth, 8).tolist() == [[0.05, 0.05], [0.05, 0.05]]
    # probabilities all 0.5, truth all road: τ 0.05..0.45 tie at IoU 1 -> lowest
    prob = np.full((8, 8), 0.5)
    assert patch_thresholds(prob, np.ones((8, 8)), 8)[0, 0] == 0.05


def test_empty_truth_gives_empty_label() -> None:
    rng = np.random.default_rng(1)
    prob = rng.random((64, 64)) * 0.9  # below the top threshold everywhere
    labels = pseudo_labels(prob, np.zeros((64, 64)), 16)
    assert not labels.any()


def test_label_is_a_rethresholding_of_the_map() -> None:
    rng = np.random.default_rng(2)
    prob = rng.random((2, 64, 64)).astype(np.float32)
    truth = rng.random((2, 64, 64)) < 0.3
    labels = pseudo_labels(prob, truth, 16)
    taus = patch_thresholds(prob, truth, 16)
    per_pixel = np.kron(taus, np.ones((16, 16)))
    np.testing.assert_array_equal(labels, prob.astype(np.float64) > per_pixel)


def test_oracles_and_patch_equal_to_map() -> None:
    rng = np.random.default_rng(3)
    prob = rng.random((40, 40))
    truth = rng.random((40, 40)) < 0.2
    whole, _ = loop_pseudo_labels(prob, truth, 40)
    np.testing.assert_array_equal(per_image_oracle(prob, truth), whole)
    np.testing.assert_array_equal(pseudo_labels(prob, truth, 100), whole)  # patch > map
    np.testing.assert_array_equal(per_patch_oracle(prob, truth, 10), pseudo_labels(prob, truth, 10))


@pytest.mark.parametrize("patch", [(8, 12), (5, 7)])
def test_rectangular_and_partial_patches(patch: tuple[int, int]) -> None:
    rng = np.random.default_rng(4)
    prob, truth = random_maps(rng, 4, 24, 30)
    labels = pseudo_labels(prob, truth, patch)
    taus = patch_thresholds(prob, truth, patch)
    assert taus.shape == (4, -(-24 // patch[0]), -(-30 // patch[1]))
    for i in range(len(prob)):
        want_labels, want_taus = loop_pseudo_labels(prob[i], truth[i], patch)
        np.testing.assert_array_equal(labels[i], want_labels)
        np.testing.assert_array_equal(taus[i], want_taus)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_values_next_to_thresholds(dtype: type) -> None:
    taus = np.arange(1, 21) / 20.0
    near = np.concatenate([taus, np.nextafter(taus, 0), np.nextafter(taus, 2), [0.0, 1e-12]])
    near = near.astype(dtype)
    rng = np.random.default_rng(5)
    prob = rng.choice(near, size=(3, 32, 32))
    truth = rng.random((3, 32, 32)) < 0.4
    expected = (prob.astype(np.float64)[..., None] > taus).sum(axis=-1)
    np.testing.assert_array_equal(threshold_bins(prob), expected)
    for i in range(3):
        np.testing.assert_array_equal(
            pseudo_labels(prob[i], truth[i], 8), loop_pseudo_labels(prob[i], truth[i], 8)[0]
        )


def test_uint8_scaled_maps() -> None:
    rng = np.random.default_rng(6)
    prob = rng.integers(0, 256, size=(64, 64)).astype(np.float32) / 255
    truth = rng.random((64, 64)) < 0.2
    np.testing.assert_array_equal(
        pseudo_labels(prob, truth, 16), loop_pseudo_labels(prob, truth, 16)[0]
    )


def test_threshold_bins_strict() -> None:
    values = np.array([0.0, 0.05, 0.0500001, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(threshold_bins(values), [0, 0, 1, 9, 19, 20])
    assert THRESHOLDS[0] == 0.05 and THRESHOLDS[-1] == 1.0 and THRESHOLDS.size == 20


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        pseudo_labels(np.zeros((4, 4)), np.zeros((4, 5)), 2)
    with pytest.raises(ValueError, match="NaN"):
        pseudo_labels(np.full((4, 4), np.nan), np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="positive"):
        pseudo_labels(np.zeros((4, 4)), np.zeros((4, 4)), 0)


def test_thresholds_are_the_python_quotients() -> None:
    # the compiled kernels compare with (j + 1) / 20 computed on the fly
    assert THRESHOLDS.tolist() == [(j + 1) / 20 for j in range(20)]


def test_out_of_range_values() -> None:
    # ceil(20·p) of a huge p does not fit an integer: the kernel must clamp before rounding
    values = np.array([-1e300, -3e38, -2.0, -0.0, 1e-45, 1.0, 1.0000001, 1.05, 3e9, 3e38, 1e300])
    expected = (values[:, None] > THRESHOLDS).sum(axis=-1)
    np.testing.assert_array_equal(threshold_bins(values), expected)
    np.testing.assert_array_equal(threshold_bins(values[1:-1].astype(np.float32)), expected[1:-1])
    prob = np.resize(values, (6, 10))
    truth = np.arange(60).reshape(6, 10) % 3 == 0
    want, _ = loop_pseudo_labels(prob, truth, 4)
    np.testing.assert_array_equal(pseudo_labels(prob, truth, 4), want)
    for bad in (np.inf, -np.inf, np.nan):
        prob32 = np.zeros((2, 5, 5), np.float32)
        prob32[1, 4, 4] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            patch_thresholds(prob32, np.zeros((2, 5, 5)), 2)


@pytest.mark.parametrize("patch", [1, 3, None])
def test_tiny_maps(patch: int | None) -> None:
    for shape in [(1, 1), (1, 7), (5, 1), (2, 3)]:
        rng = np.random.default_rng(shape)
        prob = rng.random(shape)
        truth = rng.random(shape) < 0.5
        size = patch or max(shape)
        want_labels, want_taus = loop_pseudo_labels(prob, truth, size)
        np.testing.assert_array_equal(pseudo_labels(prob, truth, patch), want_labels)
        np.testing.assert_array_equal(patch_thresholds(prob, truth, patch), want_taus)


def test_any_layout_dtype_and_byte_order() -> None:
    rng = np.random.default_rng(7)
    prob, truth = random_maps(rng, 3, 30, 40)
    expected = pseudo_labels(prob, truth, (7, 9))
    strided = np.zeros((3, 60, 40))
    strided[:, ::2] = prob
    variants = [
        (strided[:, ::2], truth),  # non-contiguous
        (np.asfortranarray(prob), np.asfortranarray(truth)),
        (prob.astype(">f8"), truth.astype(np.uint8) * 255),  # big-endian, truth as 0/255
        (prob.tolist(), truth.tolist()),
    ]
    for p, g in variants:
        np.testing.assert_array_equal(pseudo_labels(p, g, (7, 9)), expected)
    flipped = pseudo_labels(prob[:, ::-1, ::-1], truth[:, ::-1, ::-1], (7, 9))
    for i in range(3):
        want, _ = loop_pseudo_labels(prob[i, ::-1, ::-1], truth[i, ::-1, ::-1], (7, 9))
        np.testing.assert_array_equal(flipped[i], want)


def test_empty_batch() -> None:
    assert pseudo_labels(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)), 4).shape == (0, 8, 8)
    assert patch_thresholds(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)), 4).shape == (0, 2, 2)


def test_compiles_without_a_writable_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # read-only package and home: numba finds no cache directory and cache=True would raise
    import numba
    from numba.core import caching

    from roadprn.prn.pseudolabels import _jit

    def read_only(self: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", read_only)
    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(lambda x: x + 1)
    assert _jit(lambda x: x + 1)(1) == 2
