"""Random changes to training chips that a model must be indifferent to.

Geometry (flips, 90° turns) and radiometry: colour balance, saturation and hue of other
sensors and seasons, contrast, brightness, gamma, haze, optics blur, sensor noise and JPEG
artefacts of archive imagery. With little real training data these are what teaches a model
that a road is a shape and a context, not one city's shade of asphalt. Every effect that is
switched off draws no random numbers, so adding one never changes the chips of a run that
does not use it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class Augmentation:
    """Strengths of each random change; 0 (or False) switches one off.

    Scale jitter is applied while reading (the window footprint is scaled by a factor in
    ``[1/scale_jitter, scale_jitter]``), so it costs no extra resampling.
    """

    flips: bool = True
    rotations: bool = True
    brightness: float = 0.1  # added offset, +- this
    contrast: float = 0.25  # factor around the chip mean in [1/(1+c), 1+c]
    gamma: float = 0.35  # exponent in [1/(1+g), 1+g]
    band_gain: float = 0.08  # per-band gain, +- this (colour balance of other sensors)
    grayscale: float = 0.1  # probability of replacing the bands by their mean (pan input)
    scale_jitter: float = 1.25
    saturation: float = 0.0  # colour saturation factor in [1/(1+s), 1+s] (3+ bands)
    hue: float = 0.0  # off-diagonal weights of a random 3x3 band mix, +- this (3 bands)
    haze: float = 0.0  # probability of a haze veil (blend towards a bright grey, up to 35 %)
    blur: float = 0.0  # probability of a Gaussian blur, sigma 0.4..1.4 px
    noise: float = 0.0  # probability of Gaussian sensor noise, std up to 0.04
    jpeg: float = 0.0  # probability of a JPEG round trip at quality 30..90

    @classmethod
    def none(cls) -> Augmentation:
        return cls(flips=False, rotations=False, brightness=0.0, contrast=0.0, gamma=0.0,
                   band_gain=0.0, grayscale=0.0, scale_jitter=1.0)

    @classmethod
    def archive(cls, scale_jitter: float = 2.0) -> Augmentation:
        """The strong set the default model is trained with: imagery from any sensor or city."""
        return cls(brightness=0.1, contrast=0.3, gamma=0.35, band_gain=0.12, grayscale=0.1,
                   scale_jitter=scale_jitter, saturation=0.5, hue=0.08, haze=0.15, blur=0.25,
                   noise=0.25, jpeg=0.2)


def augment_chip(
    image: np.ndarray, target: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
    aug: Augmentation,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``aug`` to a (C, H, W) image in [0, 1] and its (H, W) target and valid masks."""
    if aug.rotations:
        k = int(rng.integers(4))
        image, target, valid = (np.rot90(a, k, axes=(-2, -1)) for a in (image, target, valid))
    if aug.flips and rng.random() < 0.5:
        image, target, valid = (a[..., ::-1] for a in (image, target, valid))
    image = np.ascontiguousarray(image, dtype=np.float32)
    bands = image.shape[0]
    if aug.band_gain:
        image *= rng.uniform(1 - aug.band_gain, 1 + aug.band_gain, (bands, 1, 1))
    if aug.hue and bands == 3:
        image = _mix_bands(image, rng, aug.hue)
    if aug.saturation and bands >= 3:
        factor = math.exp(rng.uniform(-1, 1) * math.log1p(aug.saturation))
        grey = image.mean(axis=0, keepdims=True)
        image = grey + (image - grey) * factor
    if aug.grayscale and bands > 1 and rng.random() < aug.grayscale:
        image[:] = image.mean(axis=0, keepdims=True)
    if aug.contrast:
        factor = math.exp(rng.uniform(-1, 1) * math.log1p(aug.contrast))
        mean = float(image.mean())
        image = (image - mean) * factor + mean
    if aug.brightness:
        image += rng.uniform(-aug.brightness, aug.brightness)
    if aug.haze and rng.random() < aug.haze:
        veil = rng.uniform(0.6, 0.9) + rng.uniform(-0.03, 0.03, (bands, 1, 1))
        amount = rng.uniform(0.1, 0.35)
        image = image * (1 - amount) + veil * amount
    if aug.blur and rng.random() < aug.blur:
        image = gaussian_filter(image, sigma=(0.0, *(2 * [rng.uniform(0.4, 1.4)])), mode="nearest")
    if aug.noise and rng.random() < aug.noise:
        std = rng.uniform(0.005, 0.04)
        image = image + rng.normal(0.0, std, image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
    if aug.gamma:
        image **= math.exp(rng.uniform(-1, 1) * math.log1p(aug.gamma))
    if aug.jpeg and rng.random() < aug.jpeg and bands in (1, 3):
        image = jpeg_round_trip(image, int(rng.integers(30, 91)))
    return (image.astype(np.float32, copy=False), np.ascontiguousarray(target),
            np.ascontiguousarray(valid))


def _mix_bands(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A random near-identity 3x3 band mix whose rows sum to 1 (shifts hue, keeps brightness)."""
    mix = np.eye(3) + rng.uniform(-strength, strength, (3, 3))
    mix /= mix.sum(axis=1, keepdims=True)
    return np.tensordot(mix.astype(np.float32), image, axes=1)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """The chip as an 8-bit JPEG at ``quality`` would decode: blocks, ringing, chroma loss."""
    pixels = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    picture = Image.fromarray(pixels[0] if len(pixels) == 1 else np.moveaxis(pixels, 0, -1))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255.0
    return decoded[None] if decoded.ndim == 2 else np.moveaxis(decoded, -1, 0)
