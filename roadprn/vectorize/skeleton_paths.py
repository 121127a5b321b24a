"""Skeleton image → its paths (pixel runs from junction/end to junction/end), with numpy + scipy.

The decomposition is exactly skan's (``skan.Skeleton(skel).paths``, same paths, same pixel
order, same path order): 8-connected pixel graph, clusters of junction pixels reduced to their
minimum spanning tree, one path per run through degree-2 pixels, isolated cycles last. skan
walks the paths with numba-compiled loops that cost every process ~1 s and ~90 MB of JIT (plus
numba and pandas imports, ~70 MB) before its first tile; here the walk is list ranking by
pointer doubling over directed pixel steps, all whole-array numpy, so tiles pay only for their
pixels. ``tests/unit/test_skeleton_paths.py`` checks the equivalence with skan on many skeletons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

#: forward 8-neighbour steps (row, col, length in pixels, as skan weighs them)
_FORWARD_STEPS = ((0, 1, 1.0), (1, -1, float(np.sqrt(2.0))), (1, 0, 1.0),
                  (1, 1, float(np.sqrt(2.0))))


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
    for dr, dc, step_length in _FORWARD_STEPS:
        target = flat + (dr * width + dc)
        at = np.minimum(np.searchsorted(flat, target), len(flat) - 1)
        found = np.flatnonzero(flat[at] == target)
        first.append(found)
        second.append(at[found])
        length.append(np.full(len(found), step_length))
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
    low, high = np.minimum(tree.row, tree.col), np.maximum(tree.row, tree.col)
    tree_key = low.astype(np.int64) * n + high
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


def _successors(src: np.ndarray, dst: np.ndarray, first_step: np.ndarray,
                degree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each step's next step along a path (-1 where the walk reaches a junction or end), and
    each step's reverse. A walk arriving at a degree-2 pixel leaves by its other step."""
    n = len(degree)
    reverse = np.searchsorted(src * n + dst, dst * n + src)  # steps are sorted by (src, dst)
    successor = np.full(len(src), -1, dtype=np.int64)
    through = np.flatnonzero(degree == 2)
    out_a, out_b = first_step[through], first_step[through] + 1
    successor[reverse[out_a]] = out_b
    successor[reverse[out_b]] = out_a
    return successor, reverse


def _open_isolated_cycles(successor: np.ndarray, reverse: np.ndarray, dst: np.ndarray,
                          first_step: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """Cut each junction-free cycle at its first pixel (in place); returns the step each cycle's
    path starts with: from that pixel towards its first neighbour, as skan walks it."""
    n = len(degree)
    adjacency = sparse.csr_matrix((np.ones(len(dst), dtype=np.int8), dst, first_step),
                                  shape=(n, n))
    n_comp, component = csgraph.connected_components(adjacency, directed=False)
    has_node = np.bincount(component, weights=(degree != 2), minlength=n_comp) > 0
    _, comp_first_pixel = np.unique(component, return_index=True)
    cycle_start = comp_first_pixel[~has_node]
    forward, backward = first_step[cycle_start], first_step[cycle_start] + 1
    successor[reverse[forward]] = -1  # both walking directions end on returning to the start
    successor[reverse[backward]] = -1
    return forward


def _assemble(src: np.ndarray, dst: np.ndarray, head: np.ndarray, distance: np.ndarray,
              path_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, pixel indices) of the paths that begin with ``path_starts``, in that order."""
    n_steps = len(src)
    path_of_head = np.full(n_steps, -1, dtype=np.int64)
    path_of_head[path_starts] = np.arange(len(path_starts))
    member = np.flatnonzero(path_of_head[head] >= 0)
    member = member[np.lexsort((distance[member], path_of_head[head[member]]))]
    steps_per_path = np.bincount(path_of_head[head[member]], minlength=len(path_starts))
    indptr = np.concatenate([[0], np.cumsum(steps_per_path + 1)]).astype(np.int64)
    indices = np.empty(indptr[-1], dtype=np.int64)
    is_first = np.zeros(indptr[-1], dtype=bool)
    is_first[indptr[:-1]] = True
    indices[is_first] = src[path_starts]
    indices[~is_first] = dst[member]
    return indptr, indices


def skeleton_paths(skel: np.ndarray) -> SkeletonPaths:
    """Paths of a 2-D boolean skeleton, identical to ``skan.Skeleton(skel).paths``."""
    coords = np.argwhere(skel).astype(np.int64)
    n = len(coords)
    if n == 0:
        return SkeletonPaths(coords.reshape(0, 2), np.zeros(1, dtype=np.int64),
                             np.zeros(0, dtype=np.int64))
    i, j, length = _pixel_edges(skel, coords)
    degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    kept = _junction_spanning_tree(i, j, length, degree)
    i, j = i[kept], j[kept]

    # directed steps in CSR order (by pixel, then neighbour): step k goes src[k] → dst[k]
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    degree = np.bincount(src, minlength=n)
    first_step = np.concatenate([[0], np.cumsum(degree)])
    successor, reverse = _successors(src, dst, first_step, degree)
    cycle_starts = _open_isolated_cycles(successor, reverse, dst, first_step, degree)
    head, distance = _rank_steps(successor)

    # a path between nodes (junctions, ends) is walked from both ends; skan keeps the walk
    # whose first step comes first, then the cycles by first pixel
    node_starts = np.flatnonzero((degree[src] != 2) & (head == np.arange(len(src))))
    end_step = _last_steps(head, distance)
    kept_starts = node_starts[node_starts < reverse[end_step[node_starts]]]
    indptr, indices = _assemble(src, dst, head, distance,
                                np.concatenate([kept_starts, cycle_starts]))
    return SkeletonPaths(coords, indptr, indices)
