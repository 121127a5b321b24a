"""The scene's road graph built from tile pieces, and its clean-up in metres.

Nodes are pixel positions; edges carry their pixel path. Clean-up runs on the joined graph of the
whole scene (it is small: thousands of edges), so seams cannot influence pruning, junction
merging, bridging or simplification, and tiled and whole-scene results are the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy.spatial import cKDTree

from roadprn.vectorize.params import VectorizeParams
from roadprn.vectorize.scale import PixelScale
from roadprn.vectorize.skeleton import Piece, segment_lengths_m

SEAM_SNAP_PX = 1.5  # cut ends of neighbouring tiles closer than this are the same point


@dataclass
class Edge:
    u: int
    v: int
    coords: np.ndarray  # (N, 2) pixel (row, col), from u to v
    length_m: float
    width_int: float
    prob_int: float
    prob_len: float

    def oriented_from(self, node: int) -> np.ndarray:
        return self.coords if self.u == node else self.coords[::-1]


@dataclass
class RoadGraph:
    """A multigraph with self-loops: pixel-path edges between junction/end nodes."""

    scale: PixelScale
    pos: dict[int, np.ndarray] = field(default_factory=dict)
    cut: dict[int, bool] = field(default_factory=dict)
    edges: dict[int, Edge] = field(default_factory=dict)
    incident: dict[int, set[int]] = field(default_factory=dict)
    _next_node: int = 0
    _next_edge: int = 0

    # ---- construction -------------------------------------------------------------------
    def add_node(self, position: np.ndarray, cut: bool = False) -> int:
        node = self._next_node
        self._next_node += 1
        self.pos[node] = np.asarray(position, dtype=np.float64)
        self.cut[node] = cut
        self.incident[node] = set()
        return node

    def add_edge(self, edge: Edge) -> int:
        eid = self._next_edge
        self._next_edge += 1
        self.edges[eid] = edge
        self.incident[edge.u].add(eid)
        self.incident[edge.v].add(eid)
        return eid

    def remove_edge(self, eid: int) -> Edge:
        edge = self.edges.pop(eid)
        self.incident[edge.u].discard(eid)
        self.incident[edge.v].discard(eid)
        return edge

    def remove_node(self, node: int) -> None:
        for eid in list(self.incident[node]):
            self.remove_edge(eid)
        del self.incident[node], self.pos[node], self.cut[node]

    def degree(self, node: int) -> int:
        return sum(2 if self.edges[e].u == self.edges[e].v else 1 for e in self.incident[node])

    def metres(self, points: np.ndarray) -> np.ndarray:
        """Pixel (row, col) → local metric (x, y) frame for distances and angles."""
        return np.column_stack([points[..., 1] * self.scale.dx_m,
                                points[..., 0] * self.scale.dy_m])

    def edge_length(self, coords: np.ndarray) -> float:
        return float(segment_lengths_m(coords, self.scale).sum())

    def drop_isolated_nodes(self) -> None:
        for node in [n for n, inc in self.incident.items() if not inc]:
            del self.incident[node], self.pos[node], self.cut[node]


def from_pieces(pieces: Iterable[Piece], scale: PixelScale) -> RoadGraph:
    """Pieces meeting at the same pixel share a node: that is the exact seam join."""
    graph = RoadGraph(scale=scale)
    by_pixel: dict[tuple[int, int], int] = {}

    def node_at(point: np.ndarray, cut: bool) -> int:
        key = (int(point[0]), int(point[1]))
        node = by_pixel.get(key)
        if node is None:
            node = by_pixel[key] = graph.add_node(point, cut)
        else:
            graph.cut[node] = graph.cut[node] and cut
        return node

    for piece in pieces:
        u = node_at(piece.coords[0], piece.start_cut)
        v = node_at(piece.coords[-1], piece.end_cut)
        graph.add_edge(Edge(u, v, piece.coords, piece.length_m, piece.width_int,
                            piece.prob_int, piece.prob_len))
    return graph


# ---- topology edits ---------------------------------------------------------------------
def _reattach(graph: RoadGraph, coords: np.ndarray, target: np.ndarray,
              trim_m: float) -> np.ndarray:
    """Path ending at ``target`` instead of its last vertex; vertices within trim_m go."""
    if trim_m > 0 and len(coords) > 2:
        dist = np.hypot(*(graph.metres(coords) - graph.metres(target[None])).T)
        keep = len(coords)
        while keep > 2 and dist[keep - 1] <= trim_m + 1e-9:
            keep -= 1
        coords = coords[:keep]
    if not np.array_equal(coords[-1], target):
        coords = np.vstack([coords, target[None]])
    return coords


def _move_end(graph: RoadGraph, eid: int, old: int, new: int, trim_m: float = 0.0) -> None:
    """Re-attach the end(s) of an edge at node ``old`` to node ``new``, keeping mean attributes."""
    edge = graph.edges[eid]
    mean_w = edge.width_int / edge.length_m if edge.length_m > 0 else 0.0
    mean_p = edge.prob_int / edge.prob_len if edge.prob_len > 0 else 0.0
    frac = min(edge.prob_len / edge.length_m, 1.0) if edge.length_m > 0 else 0.0
    target = graph.pos[new]
    if edge.v == old:
        edge.coords, edge.v = _reattach(graph, edge.coords, target, trim_m), new
    if edge.u == old:
        edge.coords = _reattach(graph, edge.coords[::-1], target, trim_m)[::-1]
        edge.u = new
    graph.incident[old].discard(eid)
    graph.incident[new].add(eid)
    edge.length_m = graph.edge_length(edge.coords)
    edge.width_int = mean_w * edge.length_m
    edge.prob_len = frac * edge.length_m
    edge.prob_int = mean_p * edge.prob_len


def contract(graph: RoadGraph) -> None:
    """Splice edges through every node of degree 2: roads run from junction/end to junction/end."""
    for node in list(graph.incident):
        if node not in graph.incident:
            continue
        inc = graph.incident[node]
        if len(inc) != 2:
            continue
        e1, e2 = (graph.edges[e] for e in sorted(inc))
        if e1.u == e1.v or e2.u == e2.v:
            continue
        a_coords = e1.oriented_from(node)[::-1]  # ends at node
        b_coords = e2.oriented_from(node)  # starts at node
        a = e1.u if e1.v == node else e1.v
        b = e2.v if e2.u == node else e2.u
        for eid in list(inc):
            graph.remove_edge(eid)
        del graph.incident[node], graph.pos[node], graph.cut[node]
        graph.add_edge(Edge(a, b, np.vstack([a_coords, b_coords[1:]]),
                            e1.length_m + e2.length_m, e1.width_int + e2.width_int,
                            e1.prob_int + e2.prob_int, e1.prob_len + e2.prob_len))


def _merge_nodes(graph: RoadGraph, members: list[int], position: np.ndarray,
                 drop_internal_below_m: float, trim_m: float) -> int:
    """Replace ``members`` by one node at ``position``; short edges among them disappear."""
    new = graph.add_node(position)
    member_set = set(members)
    for eid in sorted({e for m in members for e in graph.incident[m]}):
        edge = graph.edges[eid]
        if edge.u in member_set and edge.v in member_set and \
                edge.length_m <= drop_internal_below_m:
            graph.remove_edge(eid)
            continue
        for end in {edge.u, edge.v} & member_set:
            _move_end(graph, eid, end, new, trim_m)
    for m in members:
        graph.remove_node(m)
    return new


def join_unmatched_seams(graph: RoadGraph, snap_px: float = SEAM_SNAP_PX) -> None:
    """Cut ends left dangling (skeletons differing by a pixel across a seam) snap together.

    ``snap_px``: how close two cut ends must be (graph units); the archive merge
    (:mod:`roadprn.vectorize.merge`) passes its own for ends cut at scene borders."""
    loose = sorted(n for n in graph.incident if graph.cut[n] and graph.degree(n) == 1)
    if len(loose) < 2:
        return
    points = np.array([graph.pos[n] for n in loose])
    pairs = sorted(cKDTree(points).query_pairs(snap_px, output_type="ndarray").tolist(),
                   key=lambda p: (float(np.hypot(*(points[p[0]] - points[p[1]]))), p))
    used: set[int] = set()
    for i, j in pairs:
        if i in used or j in used:
            continue
        used.update((i, j))
        _merge_nodes(graph, [loose[i], loose[j]], points[i], drop_internal_below_m=0.0,
                     trim_m=0.0)


def _dead_end_edge_of(graph: RoadGraph, node: int) -> int:
    """The edge of a node known to be a dead end."""
    eid = _dead_end_edge(graph, node)
    if eid is None:
        raise ValueError(f"node {node} is not a dead end")
    return eid


def _dead_end_edge(graph: RoadGraph, node: int) -> int | None:
    inc = graph.incident[node]
    if len(inc) != 1:
        return None
    eid = next(iter(inc))
    return None if graph.edges[eid].u == graph.edges[eid].v else eid


def prune_spurs(graph: RoadGraph, max_length_m: float) -> bool:
    """Remove short dead-end branches at junctions, keeping every junction at degree >= 2.

    Returns whether anything changed (callers repeat until stable).
    """
    if max_length_m <= 0:
        return False
    changed = False
    for node in sorted(graph.incident):
        if node not in graph.incident or graph.degree(node) < 3:
            continue
        spurs = []
        for eid in graph.incident[node]:
            edge = graph.edges[eid]
            other = edge.v if edge.u == node else edge.u
            if other != node and edge.length_m < max_length_m and \
                    _dead_end_edge(graph, other) == eid:
                spurs.append((edge.length_m, eid, other))
        for _, eid, other in sorted(spurs):
            if graph.degree(node) <= 2:
                break
            graph.remove_edge(eid)
            graph.remove_node(other)
            changed = True
    return changed


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)

    def groups(self) -> Iterator[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return iter(out.values())


def merge_junctions(graph: RoadGraph, radius_m: float) -> bool:
    """Junctions within ``radius_m`` of each other become one, at their centroid."""
    if radius_m <= 0:
        return False
    junctions = sorted(n for n in graph.incident if graph.degree(n) >= 3)
    if len(junctions) < 2:
        return False
    points = np.array([graph.pos[n] for n in junctions])
    pairs = cKDTree(graph.metres(points)).query_pairs(radius_m, output_type="ndarray")
    if len(pairs) == 0:
        return False
    uf = _UnionFind(len(junctions))
    for i, j in pairs:
        uf.union(int(i), int(j))
    for group in uf.groups():
        if len(group) < 2:
            continue
        members = [junctions[i] for i in group]
        centre = points[group].mean(axis=0)
        _merge_nodes(graph, members, centre, drop_internal_below_m=2 * radius_m,
                     trim_m=radius_m / 2)
    return True


def _end_direction(graph: RoadGraph, node: int, eid: int, reach_m: float) -> np.ndarray:
    """Unit vector (metres frame) pointing out of the dead end ``node`` along its edge."""
    coords = graph.metres(graph.edges[eid].oriented_from(node))
    dist = np.hypot(*(coords - coords[0]).T)
    far = np.flatnonzero(dist >= min(reach_m, dist.max()))
    vec = coords[0] - coords[far[0] if len(far) else -1]
    norm = float(np.hypot(*vec))
    return vec / norm if norm > 0 else vec


def bridge_gaps(graph: RoadGraph, max_gap_m: float, max_angle_deg: float) -> bool:
    """Join dead ends that face each other across a short gap (greedy, shortest gap first)."""
    if max_gap_m <= 0:
        return False
    ends = sorted(n for n in graph.incident if _dead_end_edge(graph, n) is not None)
    if len(ends) < 2:
        return False
    points = np.array([graph.pos[n] for n in ends])
    metric = graph.metres(points)
    pairs = cKDTree(metric).query_pairs(max_gap_m, output_type="ndarray")
    cos_max = math.cos(math.radians(max_angle_deg))
    candidates = []
    for i, j in pairs.tolist():
        ei, ej = _dead_end_edge(graph, ends[i]), _dead_end_edge(graph, ends[j])
        if ei is None or ej is None or ei == ej:  # every end here has one (filtered above)
            continue
        gap = metric[j] - metric[i]
        length = float(np.hypot(*gap))
        if length == 0:
            candidates.append((0.0, i, j))
            continue
        di = _end_direction(graph, ends[i], ei, 5.0)
        dj = _end_direction(graph, ends[j], ej, 5.0)
        if di @ gap / length >= cos_max and dj @ (-gap) / length >= cos_max:
            candidates.append((length, i, j))
    used: set[int] = set()
    for length, i, j in sorted(candidates):
        if i in used or j in used:
            continue
        used.update((i, j))
        edge_i, edge_j = (graph.edges[_dead_end_edge_of(graph, ends[k])] for k in (i, j))
        mean_w = ((edge_i.width_int + edge_j.width_int)
                  / max(edge_i.length_m + edge_j.length_m, 1e-9))
        graph.add_edge(Edge(ends[i], ends[j], np.vstack([points[i], points[j]]), length,
                            mean_w * length, 0.0, 0.0))
    return bool(used)


def drop_small_networks(graph: RoadGraph, min_length_m: float) -> None:
    """Connected pieces of network shorter than ``min_length_m`` in total are noise."""
    nodes = sorted(graph.incident)
    index = {n: i for i, n in enumerate(nodes)}
    uf = _UnionFind(len(nodes))
    for edge in graph.edges.values():
        uf.union(index[edge.u], index[edge.v])
    total: dict[int, float] = {}
    for edge in graph.edges.values():
        root = uf.find(index[edge.u])
        total[root] = total.get(root, 0.0) + edge.length_m
    for node in nodes:
        if total.get(uf.find(index[node]), 0.0) < min_length_m:
            graph.remove_node(node)


def clean_graph(graph: RoadGraph, params: VectorizeParams,
                seam_snap_px: float = SEAM_SNAP_PX) -> RoadGraph:
    """Seam join, then spur pruning / junction merging until stable, bridging, small networks."""
    join_unmatched_seams(graph, seam_snap_px)
    contract(graph)
    for _ in range(100):
        changed = prune_spurs(graph, params.spur_length_m)
        contract(graph)
        changed |= merge_junctions(graph, params.junction_merge_radius_m)
        contract(graph)
        graph.drop_isolated_nodes()
        if not changed:
            break
    if bridge_gaps(graph, params.bridge_max_gap_m, params.bridge_max_angle_deg):
        contract(graph)
    drop_small_networks(graph, params.min_network_length_m)
    graph.drop_isolated_nodes()
    return graph


# ---- output -----------------------------------------------------------------------------
@dataclass
class RoadNetwork:
    """Clean, simplified roads and junctions in pixel (row, col) coordinates of the scene."""

    lines: list[np.ndarray]
    width_m: list[float]
    prob_mean: list[float]
    junctions: np.ndarray  # (M, 2) pixel (row, col)
    junction_degree: list[int]


#: lines (or line pairs) handled at once while simplifying: bounds the GEOS copies held
SIMPLIFY_CHUNK = 4096

#: original lines by index → their geometries (built on demand, so the scene's full-detail
#: lines never exist all at once)
LineSource = Callable[[np.ndarray], np.ndarray]


def _new_contacts(original: LineSource, after: np.ndarray) -> np.ndarray:
    """Indices of lines in ``after`` that meet another line in a way they did not originally.

    Edges of the road graph meet only at shared end nodes; a pair is suspect when its
    simplified lines intersect while the originals did not, or their interiors now intersect.
    """
    tree = shapely.STRtree(after)
    i, j = tree.query(after, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    bad_parts = []
    for start in range(0, len(i), SIMPLIFY_CHUNK):
        ci, cj = i[start:start + SIMPLIFY_CHUNK], j[start:start + SIMPLIFY_CHUNK]
        ids, where = np.unique(np.concatenate([ci, cj]), return_inverse=True)
        before = original(ids)
        bi, bj = before[where[:len(ci)]], before[where[len(ci):]]
        was_apart = ~shapely.intersects(bi, bj)
        interiors_meet = ~shapely.touches(after[ci], after[cj]) & shapely.touches(bi, bj)
        bad = was_apart | interiors_meet
        bad_parts += [ci[bad], cj[bad]]
    if not bad_parts:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(bad_parts))


def _simplify_lines(original: LineSource, count: int, tolerance_m: float) -> np.ndarray:
    """Douglas-Peucker per line, redone at smaller tolerances where lines would newly meet."""
    after = np.empty(count, dtype=object)
    for start in range(0, count, SIMPLIFY_CHUNK):
        ids = np.arange(start, min(count, start + SIMPLIFY_CHUNK))
        after[ids] = shapely.simplify(original(ids), tolerance_m, preserve_topology=True)
    tolerance = tolerance_m
    for _ in range(4):
        suspects = _new_contacts(original, after)
        if len(suspects) == 0:
            return after
        tolerance /= 2
        after[suspects] = shapely.simplify(original(suspects), tolerance, preserve_topology=True)
    suspects = _new_contacts(original, after)
    after[suspects] = original(suspects)
    return after


def simplify_without_new_contacts(lines: list[shapely.LineString],
                                  tolerance_m: float) -> list[shapely.LineString]:
    """Douglas-Peucker per line, redone at smaller tolerances where lines would newly meet.

    Simplifying all lines as one geometry (GEOS' topology-preserving simplifier) does the same
    but indexes every vertex of the scene at once: ~100 MB per 100 km of road. Here each line
    is simplified alone (keeping itself valid) and only the few lines that then touch or cross
    a neighbour they did not before are redone with half the tolerance, finally unsimplified.
    """
    before = np.asarray(lines, dtype=object)
    return list(_simplify_lines(lambda ids: before[ids], len(before), tolerance_m))


def simplified_network(graph: RoadGraph, tolerance_m: float) -> RoadNetwork:
    """Simplification that keeps the topology: no new crossings or contacts between roads."""
    eids = sorted(graph.edges, key=lambda e: tuple(graph.edges[e].coords[0]) +
                  tuple(graph.edges[e].coords[-1]) + (graph.edges[e].length_m,))
    edges = [graph.edges[e] for e in eids if graph.edges[e].length_m > 0]
    sx, sy = graph.scale.dx_m, graph.scale.dy_m

    def metric_lines(ids: np.ndarray) -> np.ndarray:
        out = np.empty(len(ids), dtype=object)
        out[:] = [shapely.LineString(np.column_stack([edges[k].coords[:, 1] * sx,
                                                      edges[k].coords[:, 0] * sy]))
                  for k in ids.tolist()]
        return out

    if tolerance_m > 0 and edges:
        # pixel paths stay the source: full-detail GEOS copies exist one chunk at a time
        metric = _simplify_lines(metric_lines, len(edges), tolerance_m)
    else:
        metric = metric_lines(np.arange(len(edges)))
    lines, widths, probs = [], [], []
    for edge, geom in zip(edges, metric, strict=True):
        xy = shapely.get_coordinates(geom)
        if len(xy) < 2 or geom.length == 0:
            continue
        lines.append(np.column_stack([xy[:, 1] / sy, xy[:, 0] / sx]))
        widths.append(edge.width_int / edge.length_m)
        probs.append(edge.prob_int / edge.prob_len if edge.prob_len > 0 else math.nan)
    junctions = sorted(n for n in graph.incident if graph.degree(n) >= 3)
    return RoadNetwork(
        lines=lines, width_m=widths, prob_mean=probs,
        junctions=np.array([graph.pos[n] for n in junctions]).reshape(-1, 2),
        junction_degree=[graph.degree(n) for n in junctions],
    )
