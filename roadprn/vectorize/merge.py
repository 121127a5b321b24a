"""Road networks of neighbouring scenes joined into one, inside one metric window.

The archive merge (:mod:`roadprn.batch.merge`) hands each window (a cell of the archive plus a
halo) the roads of the scenes that reach it, already in one metric CRS. Here:

1. **Ownership** (one copy of each road in overlaps): every point belongs to the scene that sees
   it farthest from its border (largest signed distance to the scene's valid footprint; ties to
   the first scene). Each scene keeps only the parts of its roads it owns; a road is cut where
   the owner changes, i.e. on the line where two scenes' border distances are equal. Both
   scenes' copies of a road crossing an overlap are cut on that same line, so the two cut ends
   lie a pixel or two apart. This is the scene-level twin of the vectoriser's "pieces each
   tile's core owns".
2. **Joining** with the vectoriser's own rules (:mod:`roadprn.vectorize.graph`): cut ends (and
   road ends near an internal scene border) are flagged ``cut`` and snapped together by
   :func:`~roadprn.vectorize.graph.join_unmatched_seams`; then
   :func:`~roadprn.vectorize.graph.clean_graph` runs exactly as after tiling (contraction, spur
   pruning, junction merging, gap bridging, small networks, all in metres) and
   :func:`~roadprn.vectorize.graph.simplified_network` simplifies without new contacts.
   Graph units are pixels of ``unit_m`` metres (the archive's finest pixel), so the seam
   snapping distance is the vectoriser's in pixels, ``MERGE_SNAP_PX`` (a resampled scene's
   skeleton can sit a pixel further off than a tile's).
3. **What the window may report**: only roads whose midpoint lies in its core and junctions in
   its core (each therefore reported by exactly one window), and only when all of their geometry
   is at least :func:`reliable_margin_m` inside the window: every clean-up rule acts within that
   distance, so such a road is the same as in an unbounded window. A road reaching closer to the
   window's edge is ``unreliable``; the caller redoes the window with a larger halo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from roadprn.vectorize.graph import (
    SEAM_SNAP_PX,
    Edge,
    RoadGraph,
    RoadNetwork,
    _merge_nodes,
    clean_graph,
    join_unmatched_seams,
    simplified_network,
)
from roadprn.vectorize.params import VectorizeParams
from roadprn.vectorize.scale import PixelScale

#: cut ends of neighbouring scenes closer than this (pixels of the finest scene) are one point:
#: the vectoriser's seam snap, doubled for scenes resampled into another CRS
MERGE_SNAP_PX = 2 * SEAM_SNAP_PX
DENSIFY_PX = 1.0  # ownership is decided at least every pixel along a road


@dataclass(frozen=True)
class WindowScene:
    """One scene's share of a window: valid footprint and roads, in the window's metric CRS."""

    name: str
    footprint: BaseGeometry  # (Multi)Polygon of valid pixels
    lines: Sequence[shapely.LineString]
    width_m: Sequence[float]
    prob_mean: Sequence[float]


@dataclass
class WindowResult:
    """Roads and junctions a window owns (metric CRS) and whether it must be redone larger."""

    lines: list[np.ndarray] = field(default_factory=list)  # (N, 2) x, y in metres
    width_m: list[float] = field(default_factory=list)
    prob_mean: list[float] = field(default_factory=list)
    scene: list[str] = field(default_factory=list)  # owner at the road's midpoint
    junctions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    junction_degree: list[int] = field(default_factory=list)
    unreliable: int = 0  # owned roads/junctions too close to the window's edge
    cut_ends: int = 0  # ends cut by ownership or lying at an internal border (diagnostics)


def reliable_margin_m(params: VectorizeParams, unit_m: float) -> float:
    """Distance from a window's edge beyond which its clean-up equals an unbounded one's: twice
    the reach of the farthest-acting rule, plus the snap distance."""
    reach = max(params.spur_length_m, 2 * params.junction_merge_radius_m,
                params.bridge_max_gap_m, params.min_network_length_m,
                params.simplify_tolerance_m)
    return 2 * reach + MERGE_SNAP_PX * unit_m


def end_snap_m(params: VectorizeParams) -> float:
    """How far a cut end without a partner may lie from the road it joins: half the junction
    merge radius (at a junction in the overlap, one scene's stub towards the other's copy can
    be cut away, leaving the other's cut end a couple of metres short of the junction)."""
    return params.junction_merge_radius_m / 2


class Footprints(Sequence[BaseGeometry]):
    """A window's scene footprints with their boundaries and bounds computed once (a plain
    sequence of polygons works everywhere too; this saves recomputing them per road)."""

    def __init__(self, polygons: Sequence[BaseGeometry]) -> None:
        self.polygons = list(polygons)
        self.boundaries = [fp.boundary for fp in self.polygons]
        self.bounds = np.array([fp.bounds for fp in self.polygons], dtype=float).reshape(-1, 4)

    def __len__(self) -> int:
        return len(self.polygons)

    def __getitem__(self, index: Any) -> Any:
        return self.polygons[index]

    def depth(self, k: int, points: np.ndarray) -> np.ndarray:
        """Signed distance of ``points`` to footprint ``k``'s boundary: > 0 inside."""
        dist = shapely.distance(self.boundaries[k], shapely.points(points))
        inside = shapely.contains_xy(self.polygons[k], points[:, 0], points[:, 1])
        return np.where(inside, dist, -dist)

    def near(self, box: tuple[float, float, float, float], pad: float) -> list[int]:
        """Footprints whose bounds lie within ``pad`` of ``box``: only these can be closer than
        ``pad`` to (or contain) a point in ``box``."""
        b = self.bounds
        hit = ((b[:, 0] <= box[2] + pad) & (b[:, 2] >= box[0] - pad)
               & (b[:, 1] <= box[3] + pad) & (b[:, 3] >= box[1] - pad))
        return np.flatnonzero(hit).tolist()


def _footprints(footprints: Sequence[BaseGeometry]) -> Footprints:
    return footprints if isinstance(footprints, Footprints) else Footprints(footprints)


def border_depth(footprints: Sequence[BaseGeometry], points: np.ndarray) -> np.ndarray:
    """(scenes, points) signed distance to each footprint's boundary: > 0 inside."""
    fps = _footprints(footprints)
    depth = np.empty((len(fps), len(points)))
    for k in range(len(fps)):
        depth[k] = fps.depth(k, points)
    return depth


def owner_at(footprints: Sequence[BaseGeometry], points: np.ndarray) -> np.ndarray:
    """Index of the scene that sees each point farthest from its border (ties: first)."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.argmax(border_depth(footprints, points), axis=0)


def owned_parts(line: shapely.LineString, scene: int, footprints: Sequence[BaseGeometry],
                step_m: float) -> list[tuple[np.ndarray, bool, bool]]:
    """The parts of ``line`` (seen by ``scene``) that ``scene`` owns: (xy, start_cut, end_cut),
    ends on an owner change marked as cut.

    Only the scenes that can outrank ``scene`` somewhere on the line are measured along all of
    it: with ``d`` the least depth of the line in its own scene, a scene whose bounds lie
    farther than ``max(0, -d)`` from the line's bounds is shallower than ``scene`` at every
    point (the result is the same as measuring every scene; the cost no longer grows with the
    scenes in the window). Where the owner changes, the crossing is placed with every scene.
    """
    xy = shapely.get_coordinates(shapely.segmentize(line, step_m))
    if len(footprints) == 1:
        return [(xy, False, False)]
    fps = _footprints(footprints)
    own = fps.depth(scene, xy)
    box = (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()),
           float(xy[:, 1].max()))
    rivals = [j for j in fps.near(box, max(0.0, -float(own.min()))) if j != scene]
    if not rivals:
        return [(xy, False, False)]
    order = sorted([scene, *rivals])  # scene order kept: ties still go to the first scene
    depth = np.vstack([own if j == scene else fps.depth(j, xy) for j in order])
    keep = np.argmax(depth, axis=0) == order.index(scene)
    if keep.all():
        return [(xy, False, False)]
    if not keep.any():
        return []

    def margin(i: int) -> float:
        """``scene``'s depth minus the deepest other scene's at point ``i`` (every scene)."""
        full = border_depth(fps, xy[i:i + 1])[:, 0]
        return float(full[scene] - np.delete(full, scene).max())

    parts: list[tuple[np.ndarray, bool, bool]] = []
    idx = np.flatnonzero(keep)
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    for run in runs:
        i0, i1 = int(run[0]), int(run[-1])
        coords = [xy[i0:i1 + 1]]
        start_cut = end_cut = False
        if i0 > 0:  # entered from another owner between i0-1 and i0
            coords.insert(0, _crossing(xy[i0 - 1], xy[i0], margin(i0 - 1), margin(i0))[None])
            start_cut = True
        if i1 < len(xy) - 1:
            coords.append(_crossing(xy[i1], xy[i1 + 1], margin(i1), margin(i1 + 1))[None])
            end_cut = True
        part = np.vstack(coords)
        if len(part) >= 2 and float(np.hypot(*(part[-1] - part[0]))) > 0 or len(part) > 2:
            parts.append((part, start_cut, end_cut))
    return parts


def _crossing(a: np.ndarray, b: np.ndarray, fa: float, fb: float) -> np.ndarray:
    """Where the ownership margin changes sign between a and b (linear in between)."""
    denom = fa - fb
    t = 0.5 if denom == 0 or not math.isfinite(denom) else min(max(fa / denom, 0.0), 1.0)
    return a + t * (b - a)


def merge_window(scenes: Sequence[WindowScene], window: tuple[float, float, float, float],
                 core: tuple[float, float, float, float], params: VectorizeParams,
                 unit_m: float) -> WindowResult:
    """The merged network of ``scenes`` in ``window``, reduced to what ``core`` owns."""
    footprints = Footprints([s.footprint for s in scenes])
    scale = PixelScale(dx_m=unit_m, dy_m=unit_m)
    graph = RoadGraph(scale=scale)
    nodes: dict[tuple[float, float], int] = {}
    result = WindowResult()
    border_m = max(params.bridge_max_gap_m, MERGE_SNAP_PX * unit_m)
    step = DENSIFY_PX * unit_m

    def node_at(xy: np.ndarray, cut: bool) -> int:
        key = (float(xy[0]), float(xy[1]))
        node = nodes.get(key)
        if node is None:
            node = nodes[key] = graph.add_node(np.array([xy[1], xy[0]]) / unit_m, cut)
        else:
            graph.cut[node] = graph.cut[node] and cut
        return node

    wx0, wy0, wx1, wy1 = window
    for k, scene in enumerate(scenes):
        for line, width, prob in zip(scene.lines, scene.width_m, scene.prob_mean, strict=True):
            clipped = shapely.clip_by_rect(line, wx0, wy0, wx1, wy1)
            for piece in shapely.get_parts(shapely.line_merge(clipped)
                                           if clipped.geom_type == "MultiLineString"
                                           else clipped):
                if piece.is_empty or piece.geom_type != "LineString" or piece.length == 0:
                    continue
                for xy, start_cut, end_cut in owned_parts(piece, k, footprints, step):
                    cut_flags = [start_cut or _at_internal_border(xy[0], k, footprints, border_m),
                                 end_cut or _at_internal_border(xy[-1], k, footprints, border_m)]
                    result.cut_ends += sum(cut_flags)
                    u, v = node_at(xy[0], cut_flags[0]), node_at(xy[-1], cut_flags[1])
                    rc = xy[:, ::-1] / unit_m
                    length = graph.edge_length(rc)
                    if length <= 0:
                        continue
                    has_prob = prob is not None and math.isfinite(prob)
                    graph.add_edge(Edge(u, v, rc, length, float(width) * length,
                                        float(prob) * length if has_prob else 0.0,
                                        length if has_prob else 0.0))
    join_unmatched_seams(graph, MERGE_SNAP_PX)
    snap_cut_ends_to_roads(graph, max(MERGE_SNAP_PX, end_snap_m(params) / unit_m))
    clean_graph(graph, params, seam_snap_px=MERGE_SNAP_PX)
    network = simplified_network(graph, params.simplify_tolerance_m)
    _owned(network, footprints, [s.name for s in scenes], window, core, unit_m,
           reliable_margin_m(params, unit_m), result)
    return result


def snap_cut_ends_to_roads(graph: RoadGraph, radius_px: float) -> int:
    """Cut ends left without a partner that lie on another road join it (the road is split).

    A road running along the ownership line is cut wherever it wobbles across it, and the two
    scenes' copies cross it at points far apart along the road (a pixel of lateral offset is
    many along a nearly parallel line): one copy's cut end then lies beside the other copy, not
    at its end. Joined there, the overlapping stub is a short spur that the clean-up prunes.
    """
    loose = sorted(n for n in graph.incident if graph.cut[n] and graph.degree(n) == 1)
    if not loose:
        return 0
    eids = sorted(graph.edges)
    lines = [shapely.LineString(graph.edges[e].coords) for e in eids]
    tree = shapely.STRtree(lines)
    split: set[int] = set()
    joined = 0
    for node in loose:
        if node not in graph.incident or graph.degree(node) != 1:
            continue
        own = next(iter(graph.incident[node]))
        point = shapely.Point(graph.pos[node])
        best: tuple[float, int] | None = None
        for i in tree.query(point, predicate="dwithin", distance=radius_px).tolist():
            eid = eids[i]
            if eid == own or eid in split or eid not in graph.edges:
                continue
            dist = float(lines[i].distance(point))
            if best is None or dist < best[0]:
                best = (dist, i)
        if best is None:
            continue
        i = best[1]
        eid = eids[i]
        target = _split_edge(graph, eid, float(lines[i].project(point)))
        split.add(eid)
        _merge_nodes(graph, [node, target], graph.pos[target].copy(), drop_internal_below_m=0.0,
                     trim_m=0.0)
        joined += 1
    return joined


def _split_edge(graph: RoadGraph, eid: int, at: float) -> int:
    """The node at arc length ``at`` (graph units) along edge ``eid``: an end, or a new node
    splitting the edge in two (attributes shared by length)."""
    edge = graph.edges[eid]
    coords = edge.coords
    steps = np.hypot(*np.diff(coords, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(steps)])
    if at <= 1e-6:
        return edge.u
    if at >= cum[-1] - 1e-6:
        return edge.v
    k = int(np.searchsorted(cum, at, side="right") - 1)
    t = (at - cum[k]) / steps[k] if steps[k] > 0 else 0.0
    q = coords[k] + t * (coords[k + 1] - coords[k])
    graph.remove_edge(eid)
    mid = graph.add_node(q)
    for u, v, part in ((edge.u, mid, np.vstack([coords[:k + 1], q[None]])),
                       (mid, edge.v, np.vstack([q[None], coords[k + 1:]]))):
        length = graph.edge_length(part)
        frac = length / edge.length_m if edge.length_m > 0 else 0.0
        graph.add_edge(Edge(u, v, part, length, edge.width_int * frac, edge.prob_int * frac,
                            edge.prob_len * frac))
    return mid


def _at_internal_border(xy: np.ndarray, scene: int, footprints: Sequence[BaseGeometry],
                        border_m: float) -> bool:
    """A road end near its scene's border where another scene's footprint also reaches."""
    if len(footprints) < 2:
        return False
    fps = _footprints(footprints)
    point = xy[None]
    if fps.depth(scene, point)[0] > border_m:
        return False
    box = (float(xy[0]), float(xy[1]), float(xy[0]), float(xy[1]))
    # only a footprint whose bounds are within border_m of the point can reach that close
    return any(fps.depth(j, point)[0] >= -border_m
               for j in fps.near(box, border_m) if j != scene)


def _owned(network: RoadNetwork, footprints: Sequence[BaseGeometry], names: list[str],
           window: tuple[float, float, float, float], core: tuple[float, float, float, float],
           unit_m: float, margin_m: float, result: WindowResult) -> None:
    wx0, wy0, wx1, wy1 = window
    inner = (wx0 + margin_m, wy0 + margin_m, wx1 - margin_m, wy1 - margin_m)

    def in_box(x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float],
               closed: bool = True) -> np.ndarray:
        if closed:
            return (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
        return (x >= box[0]) & (x < box[2]) & (y >= box[1]) & (y < box[3])

    mids = []
    for rc, width, prob in zip(network.lines, network.width_m, network.prob_mean, strict=True):
        xy = rc[:, ::-1] * unit_m
        line = shapely.LineString(xy)
        mid = shapely.get_coordinates(shapely.line_interpolate_point(line, 0.5,
                                                                     normalized=True))[0]
        if not in_box(mid[:1], mid[1:], core, closed=False)[0]:
            continue
        if not in_box(xy[:, 0], xy[:, 1], inner).all():
            result.unreliable += 1
            continue
        result.lines.append(xy)
        result.width_m.append(float(width))
        result.prob_mean.append(float(prob))
        mids.append(mid)
    owners = owner_at(footprints, np.array(mids).reshape(-1, 2))
    result.scene = [names[int(i)] for i in owners]
    if len(network.junctions):
        jxy = network.junctions[:, ::-1] * unit_m
        mine = in_box(jxy[:, 0], jxy[:, 1], core, closed=False)
        ok = in_box(jxy[:, 0], jxy[:, 1], inner)
        result.unreliable += int((mine & ~ok).sum())
        keep = mine & ok
        result.junctions = jxy[keep]
        result.junction_degree = [int(d) for d, k in zip(network.junction_degree, keep,
                                                         strict=True) if k]
