"""Trees and buildings placed per lattice cell, so each is a pure function of world position.

Every object lies entirely inside its own cell, so a pixel only has to look at the one cell it
falls in: one gather per parameter per pixel, whatever the object count. Which cells hold an
object is decided from the cell's hash and an exact geometric test (land use at the cell
centre, distance to the nearest road), so the result never depends on the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely import STRtree

from roadprn.synth.noise import derive_key, fbm, hash_uniform

FAR = np.float32(1e9)


@dataclass
class Cells:
    """Lattice cells covering one window (metres): index ranges and cell-centre coordinates."""

    size: float
    gx: np.ndarray  # absolute cell indices along x
    gy: np.ndarray
    jx: np.ndarray  # per pixel column: index into gx
    jy: np.ndarray

    @classmethod
    def cover(cls, xs: np.ndarray, ys: np.ndarray, size: float) -> Cells:
        ix = np.floor(xs / size).astype(np.int64)
        iy = np.floor(ys / size).astype(np.int64)
        gx = np.arange(ix[0], ix[-1] + 1)
        gy = np.arange(iy[0], iy[-1] + 1)
        return cls(size, gx, gy, ix - ix[0], iy - iy[0])

    def uniform(self, key: int) -> np.ndarray:
        return hash_uniform(self.gx[None, :], self.gy[:, None], key)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.gx + 0.5) * self.size, (self.gy + 0.5) * self.size

    def per_pixel(self, values: np.ndarray) -> np.ndarray:
        return values[self.jy][:, self.jx]


def landuse_at(x: np.ndarray, y: np.ndarray, districts: STRtree, landuse: np.ndarray,
               default: int) -> np.ndarray:
    """Land-use code at each point (exact point-in-polygon)."""
    points = shapely.points(x.ravel(), y.ravel())
    out = np.full(points.shape, default, dtype=np.uint8)
    p_idx, d_idx = districts.query(points, predicate="within")
    out[p_idx] = landuse[d_idx]
    return out.reshape(x.shape)


def near_road(x: np.ndarray, y: np.ndarray, reach: np.ndarray | float, roads: STRtree,
              lines: np.ndarray, half_width: np.ndarray, max_half_width: float) -> np.ndarray:
    """True where a point is within ``half_width + reach`` of a road centreline."""
    points = shapely.points(x, y)
    reach = np.broadcast_to(np.asarray(reach, dtype=np.float64), points.shape)
    out = np.zeros(points.shape, dtype=bool)
    if points.size == 0:
        return out
    p_idx, r_idx = roads.query(points, predicate="dwithin",
                               distance=max_half_width + float(reach.max()))
    if p_idx.size:
        close = shapely.distance(points[p_idx], lines[r_idx]) < half_width[r_idx] + reach[p_idx]
        out[p_idx[close]] = True
    return out


def tree_domes(xs: np.ndarray, ys: np.ndarray, cell_m: float, key: int, density: np.ndarray,
               street_density: np.ndarray, landuse_of, on_road) -> np.ndarray:
    """Crown height in [0, 1] (0 = no tree) of one lattice layer of round trees.

    ``density`` maps land-use code to the probability that a cell holds a tree; it is modulated
    by a large-scale noise so woods and clearings alternate. Cells along a road edge get
    ``street_density`` more: street trees, whose crowns hide the road in the image.
    """
    cells = Cells.cover(xs, ys, cell_m)
    cx0, cy0 = cells.centres()
    cx_grid, cy_grid = np.meshgrid(cx0, cy0)
    clump = fbm(cx0, cy0, 180.0, derive_key(key, 1), octaves=2)
    landuse = landuse_of(cx_grid, cy_grid)
    prob = density[landuse] * (clump * np.float32(2.2) - np.float32(0.35))
    draw = cells.uniform(derive_key(key, 2))
    present = draw < prob + street_density[landuse]
    radius = cell_m * (0.25 + 0.23 * cells.uniform(derive_key(key, 3)))
    free = cell_m - 2.0 * radius
    cx = (cells.gx[None, :] * cell_m + radius + free * cells.uniform(derive_key(key, 4)))
    cy = (cells.gy[:, None] * cell_m + radius + free * cells.uniform(derive_key(key, 5)))
    if present.any():
        # a tree may overhang a road but does not stand in the middle of it
        idx = np.flatnonzero(present)
        x, y = cx.ravel()[idx], cy.ravel()[idx]
        blocked = on_road(x, y, 0.5)
        by_street = on_road(x, y, 0.5 + radius.ravel()[idx])
        wild = draw.ravel()[idx] < prob.ravel()[idx]
        present.ravel()[idx[blocked | ~(wild | by_street)]] = False
    cx = np.where(present, cx, FAR).astype(np.float32)
    cy = np.where(present, cy, FAR).astype(np.float32)
    inv_r2 = (1.0 / (radius * radius)).astype(np.float32)
    dx = xs.astype(np.float32)[None, :] - cells.per_pixel(cx)
    dy = ys.astype(np.float32)[:, None] - cells.per_pixel(cy)
    dx *= dx
    dy *= dy
    dx += dy
    dx *= cells.per_pixel(inv_r2)
    np.subtract(np.float32(1.0), dx, out=dx)
    np.maximum(dx, 0.0, out=dx)
    return dx


@dataclass
class Buildings:
    roof: np.ndarray  # int16 per pixel: 0 = no building, k = palette entry k
    ridge: np.ndarray  # float32 per pixel: roof shading (1 at the ridge, lower at eaves)


def buildings(xs: np.ndarray, ys: np.ndarray, cell_m: float, key: int, density: np.ndarray,
              landuse_of, on_road, palette_size: int) -> Buildings:
    """Rectangular buildings, one per lattice cell at most, kept clear of roads."""
    cells = Cells.cover(xs, ys, cell_m)
    cx0, cy0 = cells.centres()
    cx_grid, cy_grid = np.meshgrid(cx0, cy0)
    present = cells.uniform(derive_key(key, 1)) < density[landuse_of(cx_grid, cy_grid)]
    hx = cell_m * (0.18 + 0.25 * cells.uniform(derive_key(key, 2)))
    hy = cell_m * (0.18 + 0.25 * cells.uniform(derive_key(key, 3)))
    cx = cells.gx[None, :] * cell_m + hx + (cell_m - 2 * hx) * cells.uniform(derive_key(key, 4))
    cy = cells.gy[:, None] * cell_m + hy + (cell_m - 2 * hy) * cells.uniform(derive_key(key, 5))
    if present.any():
        idx = np.flatnonzero(present)
        reach = 1.5 + np.hypot(hx.ravel()[idx], hy.ravel()[idx])
        blocked = on_road(cx.ravel()[idx], cy.ravel()[idx], reach)
        present.ravel()[idx[blocked]] = False
    colour = 1 + (cells.uniform(derive_key(key, 6)) * palette_size).astype(np.int16)
    colour = np.where(present, colour, 0).astype(np.int16)
    cx = np.where(present, cx, FAR).astype(np.float32)
    cy = cells.per_pixel(cy.astype(np.float32))
    dx = np.abs(xs.astype(np.float32)[None, :] - cells.per_pixel(cx))
    dy = np.abs(ys.astype(np.float32)[:, None] - cy)
    hx_px = cells.per_pixel(hx.astype(np.float32))
    hy_px = cells.per_pixel(hy.astype(np.float32))
    inside = (dx < hx_px) & (dy < hy_px)
    roof = np.where(inside, cells.per_pixel(colour), np.int16(0))
    # gable roof along the longer side: brightest on the ridge
    along_y = hx_px < hy_px
    ridge = np.where(along_y, dx / hx_px, dy / hy_px)
    ridge *= np.float32(-0.25)
    ridge += np.float32(1.1)
    return Buildings(roof, ridge)
