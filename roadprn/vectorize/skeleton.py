"""One window of road pixels → skeleton → centreline pieces owned by the window's core.

Pieces are runs of skeleton-path segments (pairs of 8-adjacent skeleton pixels). Every segment of
the scene belongs to exactly one tile: the tile whose core holds the segment's lexicographically
smaller pixel. Neighbouring tiles therefore emit pieces that meet at the very same pixel centre,
with neither a gap nor an overlap, which makes joining them across seams exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from roadprn.vectorize.scale import PixelScale
from roadprn.vectorize.skeleton_paths import skeleton_paths


@dataclass
class Piece:
    """A run of skeleton pixels (global row, col) with integrals for length-weighted attributes.

    ``width_int`` is ∫ width dl and ``prob_int`` is ∫ p dl over ``prob_len`` metres where p is
    known; dividing by the length gives means that stay exact when pieces are concatenated.
    """

    coords: np.ndarray  # (N, 2) int32 pixel (row, col) of pixel centres, N >= 2 (exact, compact)
    length_m: float
    width_int: float
    prob_int: float
    prob_len: float
    start_cut: bool  # this end is a tile-seam cut, not a skeleton node
    end_cut: bool


def dilate8(mask: np.ndarray) -> np.ndarray:
    """Binary dilation by a 3×3 square, via boolean shifts (~30× faster than scipy.ndimage)."""
    p = np.pad(mask, 1)
    both = p[:-2] | p[2:] | p[1:-1]
    return both[:, :-2] | both[:, 1:-1] | both[:, 2:]


def road_width_m(road: np.ndarray, points: np.ndarray, scale: PixelScale) -> np.ndarray:
    """Road width in metres at skeleton pixels, from their distance to the nearest background.

    Same values as a Euclidean distance transform, but only the road's outer rim is indexed
    (a KD-tree over background pixels touching road), which is several times cheaper than a
    full-window EDT. A road w px across has d = w/2 (even w) or (w + 1)/2 (odd w) px at its
    centre, so 2d - 0.5 px is within half a pixel of w.
    """
    pixel_m = float(np.sqrt(scale.area_m2))
    rim = dilate8(road) & ~road
    rim_rc = np.argwhere(rim)
    if len(rim_rc) == 0:  # road fills the window: width unknown beyond the window size
        return np.full(len(points), float(min(road.shape)) * pixel_m)
    metric = np.array([scale.dy_m, scale.dx_m])
    dist, _ = cKDTree(rim_rc * metric).query(points * metric)
    return np.maximum(2.0 * dist - 0.5 * pixel_m, pixel_m)


def step_lengths_m(step: np.ndarray, scale: PixelScale) -> np.ndarray:
    """Length in metres of (row, col) pixel steps."""
    step = np.asarray(step, dtype=np.float64)
    return np.hypot(step[:, 0] * scale.dy_m, step[:, 1] * scale.dx_m)


def segment_lengths_m(coords: np.ndarray, scale: PixelScale) -> np.ndarray:
    """Length in metres of each step of a (row, col) pixel path."""
    return step_lengths_m(np.diff(coords, axis=0), scale)


def window_pieces(road: np.ndarray, prob: np.ndarray | None, origin: tuple[int, int],
                  core: tuple[int, int, int, int], scale: PixelScale) -> list[Piece]:
    """Centreline pieces of a cleaned road window whose segments this tile's core owns.

    ``origin`` is the window's global (row, col); ``core`` the owned global box
    (row0, col0, row1, col1), half-open.
    """
    graph = skeleton_paths(skeletonize(road))  # pixels without a neighbour are in no path
    if graph.n_paths == 0:
        return []
    coords = graph.coordinates  # window pixels
    width_all = road_width_m(road, coords, scale)
    if prob is None:
        prob_all = np.full(len(coords), np.nan)
    else:
        prob_all = prob[coords[:, 0], coords[:, 1]].astype(np.float64)
    return _owned_pieces(graph.indptr, graph.indices, coords + np.asarray(origin), width_all,
                         prob_all, core, scale)


def _owned_pieces(indptr: np.ndarray, indices: np.ndarray, coords_all: np.ndarray,
                  width_all: np.ndarray, prob_all: np.ndarray,
                  core: tuple[int, int, int, int], scale: PixelScale) -> list[Piece]:
    """Cut skeleton paths (CSR rows of pixel indices, in path order) into owned runs.

    Vectorised over all segments of all paths at once; Python only loops over the resulting
    pieces (a per-path loop of small numpy calls dominated the tile time).
    """
    n_pix = np.diff(indptr)
    path_of = np.repeat(np.arange(len(n_pix)), n_pix)  # path id per position in ``indices``
    last_pos = indptr[1:] - 1  # position of each path's last pixel
    # segment j joins positions j and j + 1 of the same path
    seg = np.flatnonzero(path_of[:-1] == path_of[1:])
    if len(seg) == 0:
        return []
    pc = coords_all[indices]
    a, b = pc[seg], pc[seg + 1]
    a_first = (a[:, 0] < b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] < b[:, 1]))
    owner = np.where(a_first[:, None], a, b)
    r0, c0, r1, c1 = core
    owned = ((owner[:, 0] >= r0) & (owner[:, 0] < r1)
             & (owner[:, 1] >= c0) & (owner[:, 1] < c1))
    if not owned.any():
        return []
    seg_len = step_lengths_m(b - a, scale)
    w, p = width_all[indices], prob_all[indices]
    seg_w = 0.5 * (w[seg] + w[seg + 1]) * seg_len
    seg_p = 0.5 * (p[seg] + p[seg + 1]) * seg_len
    p_known = np.isfinite(seg_p)
    seg_p = np.where(p_known, seg_p, 0.0)
    seg_p_len = np.where(p_known, seg_len, 0.0)
    # runs of owned segments that are consecutive within one path
    keep = np.flatnonzero(owned)
    pos = seg[keep]
    breaks = np.flatnonzero(np.diff(pos) != 1) + 1
    run_first = np.concatenate([[0], breaks])  # index into ``keep``
    run_last = np.concatenate([breaks - 1, [len(keep) - 1]])
    sums = [np.add.reduceat(arr[keep], run_first)
            for arr in (seg_len, seg_w, seg_p, seg_p_len)]
    start_pos, end_pos = pos[run_first], pos[run_last] + 1  # pixel positions in ``indices``
    start_cut = start_pos != indptr[path_of[start_pos]]
    end_cut = end_pos != last_pos[path_of[end_pos]]
    coords_i = pc.astype(np.int32)  # the scene's whole skeleton lives in these: keep it small
    return [Piece(coords=coords_i[s:e + 1], length_m=float(length), width_int=float(wi),
                  prob_int=float(pi), prob_len=float(pl), start_cut=bool(sc), end_cut=bool(ec))
            for s, e, length, wi, pi, pl, sc, ec in zip(
                start_pos.tolist(), end_pos.tolist(), *(x.tolist() for x in sums),
                start_cut.tolist(), end_cut.tolist(), strict=True)]
