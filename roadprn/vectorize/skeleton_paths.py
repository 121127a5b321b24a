"""Skeleton image → its paths (pixel runs from junction/end to junction/end), with numpy + scipy.

The decomposition is exactly skan's (``skan.Skeleton(skel).paths``, same paths, same pixel
order, same path order): 8-connected pixel graph, clusters of junction pixels reduced to their
minimum spanning tree, one path per run through degree-2 pixels, isolated cycles last. skan
walks the paths with numba-compiled loops that cost every process ~1 s and ~90 MB of JIT (plus
numba and pandas imports, ~70 MB) before its first tile; here the walk is list ranking by
pointer doubling over directed pixel steps, all whole-array numpy, so tiles pay only for their
pixels. ``tests/test_skeleton_paths.py`` checks the equivalence with skan on many skeletons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

#: forward 8-neighbour steps (row, col) and their lengths in pixels, as skan weighs them
_FORWARD_STEPS = ((0, 1), (1, -1), (1, 0), (1, 1))
_STEP_LENGTH = {0: 1.0, 1: float(np.sqrt(2.0)), 2: 1.0, 3: float(np.sqrt(2.0))}


@dataclass(frozen=True)
class SkeletonPaths:
    """Paths as CSR rows: ``indices[indptr[i]:indptr[i + 1]]`` are the pixels of path i, in
    walking order, as rows of ``coordinates`` (raster order). A cycle repeats its first pixel."""

    coordinates: np.ndarray  # (N, 2) int64 (row, col)
    indptr: np.ndarray  # (P + 1,) int64
    indices: np.ndarray  # (sum of path lengths,) int64

    @property
    def n_paths(self) -> int:
        return len(self.indptr) - 1


def _pixel_edges(skel: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, ...]:
    """Undirected 8-neighbour edges (i < j in raster order) and their lengths in pixels."""
    width = skel.shape[1] + 2  # raveled in a one-pixel frame, so no step wraps a row
    flat = (coords[:, 0] + 1) * width + coords[:, 1] + 1  # ascending: coords are in raster order
    first, second, length = [], [], []
    for step, (dr, dc) in enumerate(_FORWARD_STEPS):
        target = flat + (dr * width + dc)
        at = np.minimum(np.searchsorted(flat, target), len(flat) - 1)
        found = np.flatnonzero(flat[at] == target)
        first.append(found)
        second.append(at[found])
        length.append(np.full(len(found), _STEP_LENGTH[step]))
    return np.concatenate(first), np.concatenate(second), np.concatenate(length)


def _junction_spanning_tree(i: np.ndarray, j: np.ndarray, length: np.ndarray,
                            degree: np.ndarray) -> np.ndarray:
    """Which edges to keep: edges between junction pixels (degree >= 3) survive only if they are
    in the minimum spanning tree of the junction pixels (skan's ``_mst_junctions``)."""
    keep = np.ones(len(i), dtype=bool)
    between = np.flatnonzero((degree[i] >= 3) & (degree[j] >= 3))
    if len(between) == 0:
        return keep
    n = len(degree)
    # the same matrix skan hands to scipy (both directions, canonical CSR), so ties break alike
    rows = np.concatenate([i[between], j[between]])
    cols = np.concatenate([j[between], i[between]])
    weights = np.concatenate([length[between], length[between]])
    junction_graph = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))
    junction_graph.sum_duplicates()
    tree = csgraph.minimum_spanning_tree(junction_graph).tocoo()
    tree_key = np.minimum(tree.row, tree.col).astype(np.int64) * n + np.maximum(tree.row,
                                                                               tree.col)
    keep[between] = np.isin(i[between] * n + j[between], tree_key)
    return keep


def _rank_steps(successor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For chains of steps linked by ``successor`` (-1 ends a chain): each step's first step
    and its distance from it. Pointer doubling: O(steps · log(longest chain)), all numpy."""
    n_steps = len(successor)
    linked = np.flatnonzero(successor >= 0)
    ancestor = np.arange(n_steps)
    ancestor[successor[linked]] = linked
    distance = (ancestor != np.arange(n_steps)).astype(np.int64)
    while True:
        grand = ancestor[ancestor]
        if np.array_equal(grand, ancestor):
            return ancestor, distance
        distance = distance + distance[ancestor]
        ancestor = grand


def _last_steps(head: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """For each chain's first step (indexed by it): the chain's last step."""
    longest = np.zeros(len(head), dtype=np.int64)
    np.maximum.at(longest, head, distance)
    is_last = np.flatnonzero(distance == longest[head])
    last = np.full(len(head), -1, dtype=np.int64)
    last[head[is_last]] = is_last
    return last


def skeleton_paths(skel: np.ndarray) -> SkeletonPaths:
    """Paths of a 2-D boolean skeleton, identical to ``skan.Skeleton(skel).paths``."""
    coords = np.argwhere(skel).astype(np.int64)
    n = len(coords)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return SkeletonPaths(coords.reshape(0, 2), np.zeros(1, dtype=np.int64), empty)
    i, j, length = _pixel_edges(skel, coords)
    degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    kept = _junction_spanning_tree(i, j, length, degree)
    i, j = i[kept], j[kept]

    # directed steps in CSR order (by pixel, then neighbour): step k goes src[k] → dst[k]
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    n_steps = len(src)
    degree = np.bincount(src, minlength=n)
    first_step = np.concatenate([[0], np.cumsum(degree)])
    key = src * n + dst
    reverse = np.searchsorted(key, dst * n + src)  # step k walked backwards

    # a walk arriving at a degree-2 pixel leaves by its other step
    successor = np.full(n_steps, -1, dtype=np.int64)
    through = np.flatnonzero(degree == 2)
    out_a, out_b = first_step[through], first_step[through] + 1
    successor[reverse[out_a]] = out_b
    successor[reverse[out_b]] = out_a

    # isolated cycles (components without a junction or end): start at their first pixel,
    # towards its first neighbour, and stop on returning to it
    n_comp, component = csgraph.connected_components(
        sparse.csr_matrix((np.ones(n_steps, dtype=np.int8), dst, first_step), shape=(n, n)),
        directed=False)
    has_node = np.bincount(component, weights=(degree != 2), minlength=n_comp) > 0
    _, comp_first_pixel = np.unique(component, return_index=True)
    cycle_start = comp_first_pixel[~has_node & (degree[comp_first_pixel] > 0)]
    forward, backward = first_step[cycle_start], first_step[cycle_start] + 1
    successor[reverse[forward]] = -1
    successor[reverse[backward]] = -1

    head, distance = _rank_steps(successor)
    # a path between nodes is found from both of its ends: skan keeps the walk it meets first
    is_node_start = (degree[src] != 2) & (head == np.arange(n_steps))
    starts = np.flatnonzero(is_node_start)
    end_step = _last_steps(head, distance)
    emitted = np.concatenate([starts[starts < reverse[end_step[starts]]], forward])

    rank_of_head = np.full(n_steps, -1, dtype=np.int64)
    rank_of_head[emitted] = np.arange(len(emitted))
    member = np.flatnonzero(rank_of_head[head] >= 0)
    member = member[np.lexsort((distance[member], rank_of_head[head[member]]))]
    steps_per_path = np.bincount(rank_of_head[head[member]], minlength=len(emitted))
    indptr = np.concatenate([[0], np.cumsum(steps_per_path + 1)]).astype(np.int64)
    indices = np.empty(indptr[-1], dtype=np.int64)
    is_first = np.zeros(indptr[-1], dtype=bool)
    is_first[indptr[:-1]] = True
    indices[indptr[:-1]] = src[emitted]
    indices[~is_first] = dst[member]
    return SkeletonPaths(coords, indptr, indices)
