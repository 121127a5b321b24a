"""Merging tile predictions into full-width row strips with bounded memory.

Tiles arrive row-major. Their weighted predictions are added into a band of rows a little taller
than one tile row; once a tile row is complete, every scene row above the next tile row's reach is
final and is handed out (aligned to the output block height so that the GeoTIFF writer never sees
a half-written block). Memory is ``width × (stride + 2·blend_radius + align)`` floats, whatever
the scene height.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from roadprn.infer.tiling import Tile, TilePlan


@dataclass(frozen=True)
class Strip:
    """Finished scene rows ``[row_off, row_off + prob.shape[0])`` over the full width."""

    row_off: int
    prob: np.ndarray  # float32 in [0, 1]
    valid: np.ndarray  # bool


class StripStitcher:
    def __init__(self, plan: TilePlan, align: int = 256, first_row: int = 0) -> None:
        """``first_row``: the first tile row that will arrive (a band of a split scene)."""
        self.plan = plan
        self.align = max(1, align)
        cap = plan.stride + 2 * plan.blend_radius + self.align + 1
        self._prob = np.zeros((cap, plan.width), np.float32)
        self._valid = np.zeros((cap, plan.width), bool)
        # scene row of buffer row 0 (== rows already handed out)
        self._start = plan.contribution_rows(first_row)[0] if first_row else 0
        self._weights: dict[tuple[bool, bool, bool, bool], np.ndarray] = {}
        self._pending = np.zeros(plan.n_rows, np.int64)

    def add(self, tile: Tile, prob: np.ndarray, valid: np.ndarray) -> Iterator[Strip]:
        """Add one tile's prediction (tile_size²) and its validity; yield strips that became
        final."""
        plan = self.plan
        r0, r1 = plan.contribution_rows(tile.row)
        c0, c1 = plan.contribution_cols(tile.col)
        ty, tx = r0 - int(tile.read.row_off), c0 - int(tile.read.col_off)
        weights = self._tile_weights(tile)
        b0 = r0 - self._start
        if b0 < 0:
            raise RuntimeError("tiles must arrive in row-major order")
        self._prob[b0:b0 + r1 - r0, c0:c1] += (weights * prob)[ty:ty + r1 - r0, tx:tx + c1 - c0]
        core = tile.core
        h = plan.halo
        cr0 = int(core.row_off) - self._start
        c0, height, width = int(core.col_off), int(core.height), int(core.width)
        self._valid[cr0:cr0 + height, c0:c0 + width] = valid[h:h + height, h:h + width]
        self._pending[tile.row] += 1
        if self._pending[tile.row] == plan.n_cols:
            yield from self._release(tile.row)

    def _tile_weights(self, tile: Tile) -> np.ndarray:
        plan = self.plan
        key = (tile.row == 0, tile.row == plan.n_rows - 1, tile.col == 0,
               tile.col == plan.n_cols - 1)
        if key not in self._weights:
            self._weights[key] = plan.weights(tile)
        return self._weights[key]

    def finish(self, row: int) -> Iterator[Strip]:
        """After tile row ``row``, the last of a band: hand out every row it completed,
        unaligned."""
        if row < self.plan.n_rows - 1:
            final = self.plan.contribution_rows(row + 1)[0]
            n = final - self._start
            if n > 0:
                yield Strip(self._start, self._prob[:n].copy(), self._valid[:n].copy())
                self._start = final

    def _release(self, row: int) -> Iterator[Strip]:
        plan = self.plan
        if row == plan.n_rows - 1:
            final = plan.height
        else:
            reach = plan.contribution_rows(row + 1)[0]
            final = (reach // self.align) * self.align
        n = final - self._start
        if n <= 0:
            return
        # in block-height chunks: a strip of a wide scene is a copy of width x rows floats, and
        # the writer may hold a couple of them; keeping them short keeps memory flat with width
        for off in range(0, n, self.align):
            rows = slice(off, min(off + self.align, n))
            yield Strip(self._start + off, self._prob[rows].copy(), self._valid[rows].copy())
        keep = self._prob.shape[0] - n
        self._prob[:keep] = self._prob[n:]
        self._prob[keep:] = 0.0
        self._valid[:keep] = self._valid[n:]
        self._valid[keep:] = False
        self._start = final
