"""Radiometric augmentations: in range, deterministic, labels untouched, off means no draws."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from roadprn.train.augment import Augmentation, augment_chip, jpeg_round_trip

RADIOMETRIC = ("saturation", "hue", "haze", "blur", "noise", "jpeg")


def _chip(bands: int = 3, size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    image = rng.random((bands, size, size)).astype(np.float32)
    target = (rng.random((size, size)) > 0.8).astype(np.float32)
    return image, target, np.ones((size, size), bool)


@pytest.mark.parametrize("effect", RADIOMETRIC)
@pytest.mark.parametrize("bands", [1, 3, 4])
def test_each_effect_keeps_range_shape_and_labels(effect, bands):
    image, target, valid = _chip(bands)
    aug = dataclasses.replace(Augmentation.none(), **{effect: 1.0})
    out, out_target, out_valid = augment_chip(image, target, valid, np.random.default_rng(3), aug)
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.array_equal(out_target, target) and np.array_equal(out_valid, valid)
    colour_only = effect in ("saturation", "hue")
    if colour_only and bands == 1 or effect == "hue" and bands != 3 or \
            effect == "jpeg" and bands == 4:
        assert np.array_equal(out, image)  # not applicable to this band count: untouched
    else:
        assert not np.allclose(out, image)


def test_archive_set_is_deterministic_per_seed():
    image, target, valid = _chip()
    aug = Augmentation.archive()
    runs = [augment_chip(image, target, valid, np.random.default_rng(11), aug)[0]
            for _ in range(2)]
    other = augment_chip(image, target, valid, np.random.default_rng(12), aug)[0]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], other)


def test_effects_switched_off_draw_no_random_numbers():
    """Adding a new effect must not change the chips of runs that do not use it."""
    image, target, valid = _chip()
    used, replay = np.random.default_rng(5), np.random.default_rng(5)
    augment_chip(image, target, valid, used, Augmentation())
    # the draws of the classic effects, in order: turn, flip, band gains, grey, contrast,
    # brightness, gamma
    replay.integers(4), replay.random(), replay.uniform(size=3), replay.random()
    replay.uniform(), replay.uniform(), replay.uniform()
    assert used.random() == replay.random()


def test_blur_smooths_and_noise_roughens():
    edge = np.zeros((1, 16, 16), np.float32)
    edge[:, :, 8:] = 1.0
    target, valid = np.zeros((16, 16), np.float32), np.ones((16, 16), bool)
    blurred = augment_chip(edge, target, valid, np.random.default_rng(0),
                           dataclasses.replace(Augmentation.none(), blur=1.0))[0]
    assert 0.0 < blurred[0, 4, 7] < 1.0 and 0.0 < blurred[0, 4, 8] < 1.0
    flat = np.full((1, 16, 16), 0.5, np.float32)
    noisy = augment_chip(flat, target, valid, np.random.default_rng(0),
                         dataclasses.replace(Augmentation.none(), noise=1.0))[0]
    assert noisy.std() > 0.003


def test_jpeg_round_trip_is_lossy_but_close():
    rng = np.random.default_rng(2)
    smooth = np.clip(np.cumsum(rng.normal(0, 0.02, (3, 24, 24)), axis=-1) + 0.5, 0, 1)
    decoded = jpeg_round_trip(smooth.astype(np.float32), 40)
    assert decoded.shape == smooth.shape
    assert 0.0 < np.abs(decoded - smooth).mean() < 0.08
