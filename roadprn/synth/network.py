"""The synthetic road network as vector geometry in a local metric frame.

Frame: metres from the scene's top-left corner, x to the right, y down (so pixel = metres /
resolution). The layout is anchored to that corner on a lattice of districts: arterials run
along jittered lattice edges, and each district gets a street grid, curved suburban streets
with cul-de-sacs, rural tracks, or forest. Built once per scene; cheap even for 10 km scenes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from scipy.signal import lfilter
from shapely.geometry import LineString, Polygon, box

DISTRICT_M = 700.0

# surfaces: index into the colour table of the renderer
ASPHALT, CONCRETE, DIRT = 0, 1, 2
SURFACES = ("asphalt", "concrete", "dirt")

# land use of a district (the renderer picks background and tree density from it)
URBAN, SUBURBAN, RURAL, FOREST = 1, 2, 3, 4

WIDTH_RANGE_M = {
    "highway": (16.0, 22.0),
    "arterial": (9.0, 14.0),
    "grid": (6.0, 9.0),
    "curved": (5.0, 7.5),
    "dead_end": (4.0, 6.0),
    "track": (3.0, 4.5),
}

_TAG_VERTEX, _TAG_EDGE, _TAG_DISTRICT, _TAG_HIGHWAY = 11, 12, 13, 14


@dataclass
class Road:
    line: LineString  # metres, local frame
    width_m: float
    kind: str
    surface: int
    tone: float  # per-road brightness factor: no two streets look exactly alike


@dataclass
class District:
    polygon: Polygon
    landuse: int


@dataclass
class SynthNetwork:
    roads: list[Road]
    districts: list[District]
    width_m: float
    height_m: float

    @property
    def length_m(self) -> float:
        return float(sum(r.line.length for r in self.roads))


def _rng(seed: int, tag: int, i: int = 0, j: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, tag,
                                  i + 10_000, j + 10_000])


def _vertex(seed: int, i: int, j: int) -> np.ndarray:
    jitter = _rng(seed, _TAG_VERTEX, i, j).uniform(-0.18, 0.18, 2) * DISTRICT_M
    return np.array([i * DISTRICT_M, j * DISTRICT_M]) + jitter


def _edge(seed: int, a: tuple[int, int], b: tuple[int, int], axis: int) -> np.ndarray:
    """Polyline between two lattice vertices with a gently bowed middle."""
    p, q = _vertex(seed, *a), _vertex(seed, *b)
    rng = _rng(seed, _TAG_EDGE + 100 * axis, *a)
    d = q - p
    normal = np.array([-d[1], d[0]]) / np.hypot(*d)
    t = np.linspace(0.0, 1.0, 9)[:, None]
    bow = rng.uniform(-0.08, 0.08) * DISTRICT_M * np.sin(np.pi * t)
    return p + d * t + normal * bow


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, length: float,
          wiggle: float, step: float = 8.0, max_curvature: float = 0.02) -> LineString:
    """A smooth random curve: curvature (rad/m) is a mean-reverting, bounded random walk."""
    n = max(2, int(length / step))
    curvature = lfilter([1.0], [1.0, -0.97], rng.normal(0.0, wiggle, n))
    curvature = np.clip(curvature, -max_curvature, max_curvature)
    angles = heading + np.cumsum(curvature * step)
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * step
    points = np.vstack([start, start + np.cumsum(steps, axis=0)])
    return LineString(points)


def _pieces(geom) -> list[LineString]:
    if geom.is_empty:
        return []
    parts = shapely.get_parts(shapely.line_merge(geom) if geom.geom_type != "LineString" else geom)
    return [p for p in parts if p.geom_type == "LineString" and p.length > 1.0]


def _road(rng: np.random.Generator, line: LineString, kind: str, surface: int) -> Road:
    lo, hi = WIDTH_RANGE_M[kind]
    return Road(line, float(rng.uniform(lo, hi)), kind, surface, float(rng.uniform(0.85, 1.15)))


def _street_grid(rng: np.random.Generator, poly: Polygon, axis_angle: float) -> list[Road]:
    """A rotated street grid clipped to the district; dropped blocks leave dead ends."""
    angle = axis_angle + rng.normal(0.0, 0.06)
    cx, cy = poly.centroid.x, poly.centroid.y
    radius = math.dist((cx, cy), poly.exterior.coords[0]) * 1.5
    roads: list[Road] = []
    surface = CONCRETE if rng.random() < 0.25 else ASPHALT
    ca, sa = math.cos(angle), math.sin(angle)
    for direction in (0, 1):
        spacing = rng.uniform(70.0, 140.0)
        cross = rng.uniform(70.0, 140.0)
        offsets = np.arange(-radius, radius, spacing) + rng.uniform(0, spacing)
        stops = np.arange(-radius, radius + cross, cross)
        for off in offsets:
            if rng.random() < 0.1:
                continue
            keep = rng.random(len(stops) - 1) > 0.1
            runs: list[list[float]] = []
            for k, kept in enumerate(keep):
                if not kept:
                    continue
                if runs and runs[-1][1] == stops[k]:
                    runs[-1][1] = stops[k + 1]
                else:
                    runs.append([stops[k], stops[k + 1]])
            for u0, u1 in runs:
                uv = np.array([[u0, off], [u1, off]]) if direction == 0 else \
                    np.array([[off, u0], [off, u1]])
                xy = np.column_stack([cx + uv[:, 0] * ca - uv[:, 1] * sa,
                                      cy + uv[:, 0] * sa + uv[:, 1] * ca])
                for part in _pieces(LineString(xy).intersection(poly)):
                    roads.append(_road(rng, part, "grid", surface))
    return roads


def _curved_streets(rng: np.random.Generator, poly: Polygon, n: int, kind: str, surface: int,
                    spurs: tuple[int, int]) -> list[Road]:
    roads: list[Road] = []
    boundary = poly.exterior
    centre = np.array(poly.centroid.coords[0])
    for _ in range(n):
        start = np.array(boundary.interpolate(rng.random(), normalized=True).coords[0])
        to_centre = centre - start
        heading = math.atan2(to_centre[1], to_centre[0]) + rng.normal(0.0, 0.4)
        # start a little outside so the street visibly joins the arterial on the boundary
        start = start - 6.0 * np.array([math.cos(heading), math.sin(heading)])
        line = _walk(rng, start, heading, rng.uniform(250.0, 900.0), 0.0006, max_curvature=0.012)
        for part in _pieces(line.intersection(poly)):
            roads.append(_road(rng, part, kind, surface))
            for _ in range(rng.integers(*spurs) if part.length > 100.0 else 0):
                at = rng.uniform(0.1, 0.9) * part.length
                p = np.array(part.interpolate(at).coords[0])
                q = np.array(part.interpolate(min(at + 2.0, part.length)).coords[0])
                tangent = math.atan2(q[1] - p[1], q[0] - p[0])
                side = math.pi / 2 if rng.random() < 0.5 else -math.pi / 2
                spur = _walk(rng, p, tangent + side + rng.normal(0, 0.2),
                             rng.uniform(40.0, 130.0), 0.002, step=5.0)
                spur_kind = "dead_end" if kind == "curved" else "track"
                for spart in _pieces(spur.intersection(poly)):
                    roads.append(_road(rng, spart, spur_kind, surface))
    return roads


def _highways(seed: int, width_m: float, height_m: float) -> list[Road]:
    rng = _rng(seed, _TAG_HIGHWAY)
    count = rng.poisson(max(0.7, width_m * height_m / 20e6))
    roads = []
    diag = math.hypot(width_m, height_m)
    for _ in range(count):
        centre = rng.uniform([0.2 * width_m, 0.2 * height_m], [0.8 * width_m, 0.8 * height_m])
        heading = rng.uniform(0, 2 * math.pi)
        back = centre - diag * np.array([math.cos(heading), math.sin(heading)])
        line = _walk(rng, back, heading, 2.2 * diag, 0.00005, step=20.0, max_curvature=0.0004)
        roads.append(_road(rng, line, "highway", ASPHALT))
    return roads


def build_network(width_m: float, height_m: float, seed: int) -> SynthNetwork:
    """All roads and districts touching the ``width_m × height_m`` scene, clipped to it."""
    scene = box(0.0, 0.0, width_m, height_m)
    ni = int(math.ceil(width_m / DISTRICT_M)) + 1
    nj = int(math.ceil(height_m / DISTRICT_M)) + 1
    roads: list[Road] = []
    districts: list[District] = []
    for i in range(-1, ni):
        for j in range(-1, nj):
            edges = {}
            for axis, (a, b) in enumerate((((i, j), (i + 1, j)), ((i, j), (i, j + 1)))):
                edges[axis] = _edge(seed, a, b, axis)
                rng = _rng(seed, _TAG_EDGE + 7 + axis, i, j)
                if rng.random() < 0.88:
                    line = LineString(edges[axis])
                    if line.intersects(scene):
                        roads.append(_road(rng, line, "arterial", ASPHALT))
            top, left = edges[0], edges[1]
            bottom = _edge(seed, (i, j + 1), (i + 1, j + 1), 0)
            right = _edge(seed, (i + 1, j), (i + 1, j + 1), 1)
            ring = np.vstack([top, right[1:], bottom[::-1][1:], left[::-1][1:-1]])
            poly = Polygon(ring)
            if not poly.is_valid:
                poly = poly.buffer(0)
            if not poly.intersects(scene):
                continue
            rng = _rng(seed, _TAG_DISTRICT, i, j)
            landuse = int(rng.choice([URBAN, SUBURBAN, RURAL, FOREST], p=[0.4, 0.25, 0.25, 0.1]))
            districts.append(District(poly, landuse))
            axis_angle = math.atan2(top[-1, 1] - top[0, 1], top[-1, 0] - top[0, 0])
            if landuse == URBAN:
                roads += _street_grid(rng, poly, axis_angle)
            elif landuse == SUBURBAN:
                roads += _curved_streets(rng, poly, int(rng.integers(2, 5)), "curved",
                                         ASPHALT, (1, 5))
            else:
                n = int(rng.integers(1, 3)) if landuse == RURAL else int(rng.integers(0, 2))
                roads += _curved_streets(rng, poly, n, "track", DIRT, (0, 2))
    roads += _highways(seed, width_m, height_m)
    clipped: list[Road] = []
    for road in roads:
        for part in _pieces(road.line.intersection(scene)):
            clipped.append(Road(part, road.width_m, road.kind, road.surface, road.tone))
    return SynthNetwork(clipped, districts, width_m, height_m)
