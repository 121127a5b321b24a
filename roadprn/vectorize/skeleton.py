"""One window of road pixels → skeleton → centreline pieces owned by the window's core.

Pieces are runs of skeleton-path segments (pairs of 8-adjacent skeleton pixels). Every segment of
the scene belongs to exactly one tile: the tile whose core holds the segment's lexicographically
smaller pixel. Neighbouring tiles therefore emit pieces that meet at the very same pixel centre,
with neither a gap nor an overlap, which makes joining them across seams exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import skan
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from roadprn.vectorize.scale import PixelScale


@dataclass
class Piece:
    """A run of skeleton pixels (global row, col) with integrals for length-weighted attributes.

    ``width_int`` is ∫ width dl and ``prob_int`` is ∫ p dl over ``prob_len`` metres where p is
    known; dividing by the length gives means that stay exact when pieces are concatenated.
    """

    coords: np.ndarray  # (N, 2) float64 pixel (row, col) of pixel centres, N >= 2
    length_m: float
    width_int: float
    prob_int: float
    prob_len: float
    start_cut: bool  # this end is a tile-seam cut, not a skeleton node
    end_cut: bool


def _drop_isolated(skel: np.ndarray) -> np.ndarray:
    """Skeleton pixels with no 8-neighbour are zero-length; skan cannot graph them."""
    neighbours = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3), np.uint8),
                                  mode="constant")
    return skel & (neighbours > 1)


def road_width_m(road: np.ndarray, points: np.ndarray, scale: PixelScale) -> np.ndarray:
    """Road width in metres at skeleton pixels, from their distance to the nearest background.

    Same values as a Euclidean distance transform, but only the road's outer rim is indexed
    (a KD-tree over background pixels touching road), which is several times cheaper than a
    full-window EDT. A road w px across has d = w/2 (even w) or (w + 1)/2 (odd w) px at its
    centre, so 2d - 0.5 px is within half a pixel of w.
    """
    pixel_m = float(np.sqrt(scale.area_m2))
    rim = ndimage.binary_dilation(road, structure=np.ones((3, 3), bool)) & ~road
    rim_rc = np.argwhere(rim)
    if len(rim_rc) == 0:  # road fills the window: width unknown beyond the window size
        return np.full(len(points), float(min(road.shape)) * pixel_m)
    metric = np.array([scale.dy_m, scale.dx_m])
    dist, _ = cKDTree(rim_rc * metric).query(points * metric)
    return np.maximum(2.0 * dist - 0.5 * pixel_m, pixel_m)


def segment_lengths_m(coords: np.ndarray, scale: PixelScale) -> np.ndarray:
    """Length in metres of each step of a (row, col) pixel path."""
    step = np.diff(coords, axis=0)
    return np.hypot(step[:, 0] * scale.dy_m, step[:, 1] * scale.dx_m)


def window_pieces(road: np.ndarray, prob: np.ndarray | None, origin: tuple[int, int],
                  core: tuple[int, int, int, int], scale: PixelScale) -> list[Piece]:
    """Centreline pieces of a cleaned road window whose segments this tile's core owns.

    ``origin`` is the window's global (row, col); ``core`` the owned global box
    (row0, col0, row1, col1), half-open.
    """
    skel = _drop_isolated(skeletonize(road))
    if not skel.any():
        return []
    graph = skan.Skeleton(skel)
    coords_all = graph.coordinates.astype(np.int64)
    width_all = road_width_m(road, coords_all, scale)
    if prob is None:
        prob_all = np.full(len(coords_all), np.nan)
    else:
        prob_all = prob[coords_all[:, 0], coords_all[:, 1]].astype(np.float64)
    coords_all += np.asarray(origin, dtype=np.int64)
    r0, c0, r1, c1 = core
    pieces: list[Piece] = []
    for path in graph.paths_list():
        if len(path) < 2:
            continue
        pc = coords_all[path]
        a, b = pc[:-1], pc[1:]
        a_first = (a[:, 0] < b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] < b[:, 1]))
        owner = np.where(a_first[:, None], a, b)
        owned = ((owner[:, 0] >= r0) & (owner[:, 0] < r1)
                 & (owner[:, 1] >= c0) & (owner[:, 1] < c1))
        if not owned.any():
            continue
        seg_len = segment_lengths_m(pc.astype(np.float64), scale)
        w, p = width_all[path], prob_all[path]
        seg_w = 0.5 * (w[:-1] + w[1:]) * seg_len
        seg_p = 0.5 * (p[:-1] + p[1:]) * seg_len
        p_known = np.isfinite(seg_p)
        edges = np.diff(np.concatenate([[0], owned.astype(np.int8), [0]]))
        for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            sl = slice(s, e)
            pieces.append(Piece(
                coords=pc[s:e + 1].astype(np.float64),
                length_m=float(seg_len[sl].sum()),
                width_int=float(seg_w[sl].sum()),
                prob_int=float(seg_p[sl][p_known[sl]].sum()),
                prob_len=float(seg_len[sl][p_known[sl]].sum()),
                start_cut=s > 0,
                end_cut=e < len(owned),
            ))
    return pieces
