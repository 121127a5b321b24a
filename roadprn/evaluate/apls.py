"""APLS (Average Path Length Similarity), the SpaceNet roads metric (Van Etten et al. 2018).

For one direction ("source" graph A onto "target" graph B):

1. Control points: every node of A plus points inserted along each edge of A about every
   ``control_spacing_m`` (SpaceNet's rule: edges shorter than 0.75 x spacing get none, edges up
   to the spacing get their midpoint, longer edges ceil(L / spacing) - 1 evenly spaced points).
2. Each control point is snapped onto the nearest edge of B if within ``snap_m``; B is split
   there. Points farther away have no counterpart.
3. For every ordered pair (s, t) of control points with a path in A of length L >= ``min_path_m``,
   the path length L' between their counterparts in B gives 1 - min(1, |L - L'| / L); a missing
   counterpart or no path in B scores 0.
4. The direction's score is the mean over pairs. APLS is the harmonic mean of the
   truth->prediction and prediction->truth scores (0 if either is 0).

Shortest paths come from scipy's C Dijkstra, run in chunks of sources so memory stays bounded.
Compared with the official code (CosmiQ/apls; docs/metrics.md, "Compared with the official
code"): its command line also puts control points on every edge; roadprn departs on purpose in
the junction rule by default (every crossing is a junction; ``junctions="vertices"`` is the
official rule), keeps a segment digitised twice and loop roads (the official deletes both copies
of a duplicated edge), lets two control points snapped onto one node both keep it (the official
renames the node and loses the first), measures lengths on the metric geometry (the official:
great-circle edge lengths), and applies ``min_path_m`` to every pair, also when the source
point has no counterpart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import shapely
from scipy.sparse.csgraph import dijkstra
from shapely.geometry.base import BaseGeometry

from roadprn.errors import ConfigError
from roadprn.evaluate.graph import MetricGraph, SplitGraph, lines_to_graph, split_edges

#: cap on the number of path lengths held at once (float64): ~160 MB per matrix
_MAX_CELLS = 20_000_000
#: control points per graph at most: routes grow with its square (20 000² = 4e8 routes take a
#: few minutes); more means the spacing is absurd for the network or the area needs tiles
MAX_CONTROL_POINTS = 20_000


@dataclass(frozen=True)
class APLSParams:
    """Parameters of APLS. Spacing and snap are the official defaults; the official command
    line's minimum path is 0.001 m (roadprn's default skips routes under 10 m)."""

    control_spacing_m: float = 50.0
    snap_m: float = 4.0
    min_path_m: float = 10.0
    junctions: str = "crossings"  # graph.JUNCTION_RULES: crossings or vertices (official)


@dataclass(frozen=True)
class APLSResult:
    apls: float
    truth_to_pred: float
    pred_to_truth: float
    n_paths_truth_to_pred: int
    n_paths_pred_to_truth: int
    n_control_truth: int
    n_control_pred: int
    snapped_truth_to_pred: float  # fraction of truth control points with a counterpart
    snapped_pred_to_truth: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def control_positions(lengths: np.ndarray, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(edge index, distance along edge) of the control points inserted along edges."""
    edge_ids: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    for e, length in enumerate(lengths):
        if length < 0.75 * spacing_m:
            continue
        if length <= spacing_m:
            pos = np.array([0.5 * length])
        else:
            n_points = int(np.ceil(length / spacing_m)) + 1
            pos = np.linspace(0.0, length, n_points)[1:-1]
        edge_ids.append(np.full(pos.size, e, dtype=np.int64))
        positions.append(pos)
    if not edge_ids:
        return np.empty(0, np.int64), np.empty(0)
    return np.concatenate(edge_ids), np.concatenate(positions)


def count_control_points(graph: MetricGraph, spacing_m: float) -> int:
    """How many control points :func:`with_control_points` would make, without making them."""
    length = graph.length
    inserted = np.where(length < 0.75 * spacing_m, 0,
                        np.where(length <= spacing_m, 1,
                                 np.ceil(length / spacing_m) - 1))
    return graph.n_nodes + int(inserted.sum())


def check_control_points(graph: MetricGraph, spacing_m: float, name: str) -> None:
    """Refuse (exit 2) a spacing that would make APLS run for hours on this network."""
    n = count_control_points(graph, spacing_m)
    if n <= MAX_CONTROL_POINTS:
        return
    room = MAX_CONTROL_POINTS - graph.n_nodes
    if room <= 0:
        hint = (f"its {graph.n_nodes} junctions and ends alone are too many: split the area "
                "into tiles (--pairs)")
    else:
        needed = float(np.ceil(graph.total_length / room))
        hint = (f"use --control-spacing-m {needed:g} or more, or split the area into tiles "
                "(--pairs)")
    raise ConfigError(f"APLS would place {n} control points on the {name} network "
                      f"({graph.total_length / 1000:.1f} km at --control-spacing-m {spacing_m:g}); "
                      f"at most {MAX_CONTROL_POINTS}: {hint}")


def with_control_points(graph: MetricGraph, spacing_m: float) -> tuple[SplitGraph, np.ndarray]:
    """The graph split at its control points, and the coordinates of all its nodes."""
    edge, pos = control_positions(graph.length, spacing_m)
    split, node_ids = split_edges(graph, edge, pos)
    coords = np.empty((split.n_nodes, 2))
    coords[: graph.n_nodes] = graph.nodes
    if edge.size:
        points = shapely.line_interpolate_point(graph.geometry[edge], pos)
        coords[node_ids] = shapely.get_coordinates(points)
    return split, coords


def snap_points(points: np.ndarray, graph: MetricGraph,
                snap_m: float) -> tuple[SplitGraph, np.ndarray]:
    """Insert each point into ``graph`` at its projection on the nearest edge within snap_m.

    Returns the split graph and, per point, its node there (-1 when nothing is near enough).
    """
    node_of_point = np.full(points.shape[0], -1, dtype=np.int64)
    if graph.u.size == 0 or points.shape[0] == 0:
        return SplitGraph(graph.n_nodes, graph.u, graph.v, graph.length), node_of_point
    tree = shapely.STRtree(graph.geometry)
    geoms = shapely.points(points)
    (point_idx, edge_idx), _ = tree.query_nearest(geoms, max_distance=snap_m,
                                                  return_distance=True, all_matches=False)
    pos = shapely.line_locate_point(graph.geometry[edge_idx], geoms[point_idx])
    split, nodes = split_edges(graph, edge_idx, pos)
    node_of_point[point_idx] = nodes
    return split, node_of_point


@dataclass(frozen=True)
class _Half:
    score: float
    n_paths: int
    n_control: int
    snapped_fraction: float


def _half(source: MetricGraph, target: MetricGraph, params: APLSParams) -> _Half:
    """Score of the source graph's routes as reproduced by the target graph."""
    native, coords = with_control_points(source, params.control_spacing_m)
    prime, counterpart = snap_points(coords, target, params.snap_m)
    n = native.n_nodes
    native_csr, prime_csr = native.to_csr(), prime.to_csr()
    has_counterpart = counterpart >= 0
    chunk = max(1, _MAX_CELLS // max(n, prime.n_nodes, 1))
    total, count = 0.0, 0
    for start in range(0, n, chunk):
        sources = np.arange(start, min(n, start + chunk))
        length = dijkstra(native_csr, directed=False, indices=sources)
        eligible = np.isfinite(length) & (length >= params.min_path_m)
        if not eligible.any():
            continue
        length_b = np.full(length.shape, np.inf)
        rows = np.flatnonzero(has_counterpart[sources])
        if rows.size and has_counterpart.any():
            unique_src, inverse = np.unique(counterpart[sources[rows]], return_inverse=True)
            d_b = dijkstra(prime_csr, directed=False, indices=unique_src)
            cols = np.flatnonzero(has_counterpart)
            length_b[np.ix_(rows, cols)] = d_b[inverse.reshape(-1)][:, counterpart[cols]]
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = np.minimum(1.0, np.abs(length - length_b) / length)
        diff = np.where(np.isfinite(length_b), diff, 1.0)
        total += float(diff[eligible].sum())
        count += int(eligible.sum())
    score = 1.0 - total / count if count else 1.0  # no route to get wrong
    snapped = float(has_counterpart.mean()) if n else 1.0
    return _Half(score, count, n, snapped)


def apls_graphs(truth: MetricGraph, pred: MetricGraph,
                params: APLSParams | None = None) -> APLSResult:
    """APLS of two road graphs in the same metric CRS."""
    params = params or APLSParams()
    truth_empty, pred_empty = truth.u.size == 0, pred.u.size == 0
    if truth_empty or pred_empty:
        value = 1.0 if truth_empty and pred_empty else 0.0
        return APLSResult(value, value, value, 0, 0, 0, 0, value, value)
    check_control_points(truth, params.control_spacing_m, "truth")
    check_control_points(pred, params.control_spacing_m, "predicted")
    t2p = _half(truth, pred, params)
    p2t = _half(pred, truth, params)
    if t2p.score <= 0 or p2t.score <= 0:
        total = 0.0
    else:
        total = 2.0 / (1.0 / t2p.score + 1.0 / p2t.score)
    return APLSResult(total, t2p.score, p2t.score, t2p.n_paths, p2t.n_paths, t2p.n_control,
                      p2t.n_control, t2p.snapped_fraction, p2t.snapped_fraction)


def apls(truth_lines: Iterable[BaseGeometry | None], pred_lines: Iterable[BaseGeometry | None],
         params: APLSParams | None = None) -> APLSResult:
    """APLS of two sets of (Multi)LineStrings in the same metric CRS (metres)."""
    params = params or APLSParams()
    return apls_graphs(lines_to_graph(truth_lines, params.junctions),
                       lines_to_graph(pred_lines, params.junctions), params)
