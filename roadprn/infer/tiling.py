"""Tile grids with halos, and blending weights that sum to one. Pure numpy, no I/O.

A scene is cut into *cores* of ``stride = tile_size - 2 * halo`` pixels; each tile the model sees
is its core grown by ``halo`` on every side (padded beyond the scene edge), so every tile has the
same shape and batches stay uniform. Neighbouring tiles overlap by ``2 * halo``. Where they overlap,
predictions are mixed with a raised-cosine ramp of half-width ``blend_radius`` centred on the core
boundary: weights of neighbours sum to exactly 1, pixels nearer than ``halo - blend_radius`` to a
tile edge get weight 0, and ``blend_radius = 0`` is plain centre cropping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True)
class Tile:
    """One model input: ``read`` (tile_size², may extend beyond the scene) around ``core``."""

    row: int
    col: int
    core: Window
    read: Window


@dataclass(frozen=True)
class TilePlan:
    width: int
    height: int
    tile_size: int
    halo: int
    blend_radius: int = 0

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"scene must be at least 1x1 pixels, got {self.width}x{self.height}")
        if self.halo < 0 or self.stride < 1:
            raise ValueError(
                f"tile_size {self.tile_size} must exceed 2 x halo ({2 * self.halo})")
        if not 0 <= self.blend_radius <= self.halo:
            raise ValueError(f"blend radius {self.blend_radius} must be within 0..halo "
                             f"({self.halo})")
        if 2 * self.blend_radius > self.stride:
            raise ValueError(f"blend radius {self.blend_radius} too large for stride {self.stride}")

    @property
    def stride(self) -> int:
        return self.tile_size - 2 * self.halo

    @property
    def n_rows(self) -> int:
        return math.ceil(self.height / self.stride)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.width / self.stride)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def tile(self, row: int, col: int) -> Tile:
        s, h = self.stride, self.halo
        c0, r0 = col * s, row * s
        core = Window(c0, r0, min(s, self.width - c0), min(s, self.height - r0))
        return Tile(row, col, core, Window(c0 - h, r0 - h, self.tile_size, self.tile_size))

    def __iter__(self) -> Iterator[Tile]:
        for row in range(self.n_rows):
            for col in range(self.n_cols):
                yield self.tile(row, col)

    @property
    def computed_pixels(self) -> int:
        return len(self) * self.tile_size**2

    @property
    def halo_fraction(self) -> float:
        """Share of computed pixels that are not scene pixels of their own core (halo + padding)."""
        return 1.0 - (self.width * self.height) / self.computed_pixels

    def contribution_rows(self, row: int) -> tuple[int, int]:
        """Scene rows [start, stop) to which tiles of tile-row ``row`` give non-zero weight."""
        r = self.blend_radius
        start = 0 if row == 0 else row * self.stride - r
        stop = self.height if row == self.n_rows - 1 else (row + 1) * self.stride + r
        return start, min(stop, self.height)

    def contribution_cols(self, col: int) -> tuple[int, int]:
        r = self.blend_radius
        start = 0 if col == 0 else col * self.stride - r
        stop = self.width if col == self.n_cols - 1 else (col + 1) * self.stride + r
        return start, min(stop, self.width)

    def weights(self, tile: Tile) -> np.ndarray:
        """Blending weight of every pixel of the tile (tile_size², float32)."""
        wy = self._axis_weights(tile.row, self.n_rows)
        wx = self._axis_weights(tile.col, self.n_cols)
        return np.outer(wy, wx).astype(np.float32)

    def _axis_weights(self, index: int, count: int) -> np.ndarray:
        """1-D weights along one axis, in tile coordinates (0 = first pixel of the read window)."""
        # pixel centres relative to the start of the core
        x = np.arange(self.tile_size, dtype=np.float64) + 0.5 - self.halo
        w = np.ones(self.tile_size)
        if index > 0:
            w *= rising_ramp(x, self.blend_radius)
        else:
            w *= x > -self.halo  # scene edge: no neighbour, full weight (padding is cut anyway)
        if index < count - 1:
            w *= rising_ramp(self.stride - x, self.blend_radius)
        return w


def rising_ramp(t: np.ndarray, radius: float) -> np.ndarray:
    """0 for t <= -radius, 1 for t >= radius, sin² in between; ramp(t) + ramp(-t) == 1."""
    if radius <= 0:
        return (t > 0).astype(np.float64)
    u = np.clip((t + radius) / (2.0 * radius), 0.0, 1.0)
    return np.sin(0.5 * np.pi * u) ** 2
