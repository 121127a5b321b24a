"""Random fields that are pure functions of absolute world coordinates and a key.

Every value is hashed from integer lattice coordinates, never drawn from a per-window RNG, so
a pixel gets the same value whatever window it is rendered in. Only IEEE-exact operations
(+, -, *, /, floor) touch per-pixel data: SIMD transcendental functions can round differently
in an array's vector body and its scalar tail, which would make pixels depend on the window.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_F1 = np.uint64(0xBF58476D1CE4E5B9)
_F2 = np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: avalanche all input bits into all output bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * _F1
    h = h ^ (h >> np.uint64(27))
    h = h * _F2
    return h ^ (h >> np.uint64(31))


def derive_key(seed: int, *tags: int) -> int:
    """A 64-bit key for one named random field of one scene."""
    h = np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for tag in tags:
            h = _mix(h ^ (np.uint64(tag & 0xFFFFFFFFFFFFFFFF) * _M1 + _M2))
        return int(_mix(h)[0])


def hash_uniform(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Uniform float32 in [0, 1) for each integer lattice point (broadcasting ix with iy)."""
    with np.errstate(over="ignore"):
        hx = np.asarray(ix).astype(np.int64).view(np.uint64) * _M1
        hy = np.asarray(iy).astype(np.int64).view(np.uint64) * _M2
        h = _mix(hx ^ _mix(hy ^ np.uint64(key)))
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _axis(coords: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Lattice index (relative to the first one) and smoothstep weight along one axis."""
    u = np.asarray(coords, dtype=np.float64) / scale
    cell = np.floor(u)
    frac = (u - cell).astype(np.float32)
    weight = frac * frac * (np.float32(3.0) - np.float32(2.0) * frac)
    cell = cell.astype(np.int64)
    first = int(cell.min())
    return cell - first, weight, first


def value_noise(xs: np.ndarray, ys: np.ndarray, scale: float, key: int) -> np.ndarray:
    """Smooth noise in [0, 1) on the grid ``ys × xs`` (metres), feature size ``scale`` metres.

    Separable: the lattice is hashed once per window, then interpolated along x and y, so the
    cost is a few operations per pixel whatever the scale.
    """
    jx, wx, x0 = _axis(xs, scale)
    jy, wy, y0 = _axis(ys, scale)
    gx = np.arange(x0, x0 + int(jx.max()) + 2)
    gy = np.arange(y0, y0 + int(jy.max()) + 2)
    lattice = hash_uniform(gx[None, :], gy[:, None], key)
    left = lattice[:, jx]
    along_x = left + (lattice[:, jx + 1] - left) * wx
    top = along_x[jy]
    return top + (along_x[jy + 1] - top) * wy[:, None]


def fbm(xs: np.ndarray, ys: np.ndarray, scale: float, key: int, octaves: int = 3,
        gain: float = 0.5) -> np.ndarray:
    """Fractal sum of value noise, rescaled to [0, 1); the largest features are ``scale``."""
    total = np.zeros((len(ys), len(xs)), dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        layer = value_noise(xs, ys, scale / (2.0**octave), derive_key(key, octave))
        total += layer * np.float32(amplitude)
        norm += amplitude
        amplitude *= gain
    total *= np.float32(1.0 / norm)
    return total


def stretch(field: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] to [0, 1] with a smoothstep, clipping outside (in place)."""
    field -= np.float32(low)
    field *= np.float32(1.0 / (high - low))
    np.clip(field, 0.0, 1.0, out=field)
    field *= field * (np.float32(3.0) - np.float32(2.0) * field)
    return field
