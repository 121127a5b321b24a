"""The ``rural`` landscape: fields, scattered villages and farmsteads, woods, dirt tracks.

Like DeepGlobe-style rural imagery at about 0.5 m: mostly fields (crop colours, stripes and
furrows, bare soil) separated by margins, bunds and tree lines (look-alike negatives, never
labelled), small villages and farmsteads (small roofs, garden trees, bare compounds), patches
of woodland, and a sparse network dominated by unpaved tracks 3-6 m wide (meandering, faint
to clear, some with two wheel ruts and a grassy middle) plus a few paved rural roads. The mask
is the full carriageway of every road, also where a track is faint.

The network is vector geometry built once per scene (:func:`build_rural_network`); the image
is rendered window by window (:func:`render_window`) from fields of absolute position and the
seed, with a halo and snapped to the 16-pixel JPEG grid, so a pixel does not depend on the
window it was rendered in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy.ndimage import gaussian_filter
from scipy.signal import lfilter
from shapely.geometry import LineString, Polygon, box

from roadprn.synth import network as net
from roadprn.synth.grid import SynthGrid
from roadprn.synth.lattice import buildings, landuse_at, near_road, tree_domes
from roadprn.synth.noise import derive_key, fbm, hash_uniform, stretch
from roadprn.synth.realistic import jpeg_like, render_on_jpeg_grid
from roadprn.synth.render import (
    SEGMENT_PX,
    ScenePlan,
    WindowPixels,
    _shift,
    _split,
    atmosphere,
    plan_scene,
    scene_key,
    sensor_noise,
)

# land use codes of a rural scene (reusing the network's codes): fields are the default
FIELDS, VILLAGE, FARMSTEAD, WOOD = net.RURAL, net.SUBURBAN, net.URBAN, net.FOREST

VILLAGE_CELL_M = 850.0
FARM_CELL_M = 420.0
WOOD_CELL_M = 520.0
FIELD_TRACK_CELL_M = 330.0
_TAG_VILLAGE, _TAG_FARM, _TAG_WOOD, _TAG_LINK, _TAG_PAVED, _TAG_TRACK, _TAG_LANE = \
    31, 32, 33, 34, 35, 36, 37


@dataclass(frozen=True)
class _Settlement:
    centre: np.ndarray
    radius: float
    landuse: int


def _blob(rng: np.random.Generator, centre: np.ndarray, radius: float, rough: float,
          stretch_xy: float = 1.0) -> Polygon:
    """An irregular closed outline: a circle with a few random harmonics in its radius."""
    ang = np.linspace(0.0, 2 * math.pi, 28, endpoint=False)
    r = np.ones_like(ang)
    for k in (2, 3, 5):
        r += rough / k * rng.normal() * np.cos(k * ang + rng.uniform(0, 2 * math.pi))
    r = radius * np.clip(r, 0.35, 1.8)
    turn = rng.uniform(0, math.pi)
    px, py = r * np.cos(ang) * stretch_xy, r * np.sin(ang) / stretch_xy
    pts = np.column_stack([centre[0] + px * math.cos(turn) - py * math.sin(turn),
                           centre[1] + px * math.sin(turn) + py * math.cos(turn)])
    poly = Polygon(pts)
    return poly if poly.is_valid else poly.buffer(0)


def _meander(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, amp: float,
             step: float = 8.0) -> LineString:
    """A wandering line from ``a`` to ``b``: low harmonics bow it, filtered noise kinks it."""
    d = b - a
    length = float(np.hypot(*d))
    n = max(3, int(length / step))
    t = np.linspace(0.0, 1.0, n)
    normal = np.array([-d[1], d[0]]) / max(length, 1e-9)
    off = np.zeros(n)
    for k in (1, 2, 3, 5):
        off += rng.normal(0.0, amp * length / k ** 1.3) * np.sin(k * math.pi * t)
    kinks = lfilter([1.0], [1.0, -0.9], rng.normal(0.0, 0.8, n))
    off += kinks * np.sin(math.pi * t)
    return LineString(a + d * t[:, None] + normal * off[:, None])


def _road(rng: np.random.Generator, line: LineString, lo: float, hi: float, kind: str,
          surface: int) -> net.Road:
    return net.Road(line, float(rng.uniform(lo, hi)), kind, surface,
                    float(rng.uniform(0.85, 1.15)))


def _village(seed: int, i: int, j: int) -> _Settlement | None:
    rng = net._rng(seed, _TAG_VILLAGE, i, j)
    draw = rng.random()
    centre = (np.array([i, j]) + rng.uniform(0.2, 0.8, 2)) * VILLAGE_CELL_M
    if draw < 0.6:
        return _Settlement(centre, float(rng.uniform(70.0, 170.0)), VILLAGE)
    return None


def _farm(seed: int, i: int, j: int) -> _Settlement | None:
    rng = net._rng(seed, _TAG_FARM, i, j)
    if rng.random() < 0.3:
        centre = (np.array([i, j]) + rng.uniform(0.15, 0.85, 2)) * FARM_CELL_M
        return _Settlement(centre, float(rng.uniform(22.0, 40.0)), FARMSTEAD)
    return None


def field_angle(seed: int) -> float:
    """Main direction of the field pattern (radians): tracks between fields follow it."""
    return float(np.random.default_rng([seed & 0xFFFFFFFF, 5151]).uniform(0, math.pi))


def build_rural_network(width_m: float, height_m: float, seed: int) -> net.SynthNetwork:
    """Settlements, woods and a sparse track-dominated network touching the scene, clipped."""
    scene = box(0.0, 0.0, width_m, height_m)
    reach = box(-900.0, -900.0, width_m + 900.0, height_m + 900.0)
    roads: list[net.Road] = []
    districts: list[net.District] = []
    taken = Polygon()
    # villages: lattice-anchored, linked to their right and lower neighbours
    ni, nj = int(math.ceil(width_m / VILLAGE_CELL_M)) + 1, int(math.ceil(height_m /
                                                                          VILLAGE_CELL_M)) + 1
    villages: dict[tuple[int, int], _Settlement] = {}
    for i in range(-1, ni + 1):
        for j in range(-1, nj + 1):
            v = _village(seed, i, j)
            if v is not None:
                villages[(i, j)] = v
    for (i, j), v in sorted(villages.items()):
        rng = net._rng(seed, _TAG_VILLAGE + 100, i, j)
        poly = _blob(rng, v.centre, v.radius, 0.35, float(rng.uniform(1.0, 1.5)))
        if poly.intersects(scene):
            districts.append(net.District(poly, VILLAGE))
            taken = taken.union(poly)
        # lanes inside the village
        for _ in range(int(rng.integers(2, 6))):
            start = v.centre + rng.uniform(-0.5, 0.5, 2) * v.radius
            lane = net._walk(rng, start, rng.uniform(0, 2 * math.pi),
                             rng.uniform(0.6, 1.4) * v.radius, 0.003, step=5.0,
                             max_curvature=0.03)
            roads.append(_road(rng, lane, 3.0, 5.0, "track", net.DIRT))
        # tracks out into the fields
        for _ in range(int(rng.integers(2, 5))):
            heading = rng.uniform(0, 2 * math.pi)
            start = v.centre + 0.3 * v.radius * np.array([math.cos(heading), math.sin(heading)])
            out = net._walk(rng, start, heading, rng.uniform(250.0, 900.0), 0.0015, step=8.0,
                            max_curvature=0.012)
            roads.append(_road(rng, out, 3.0, 5.0, "track", net.DIRT))
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            other = villages.get((i + di, j + dj))
            lrng = net._rng(seed, _TAG_LINK + 10 * di + dj, i, j)
            if other is None or lrng.random() > (0.75 if di + dj == 1 else 0.25):
                continue
            line = _meander(lrng, v.centre, other.centre, 0.05)
            if lrng.random() < 0.28:
                roads.append(_road(lrng, line, 5.0, 7.5, "curved", net.ASPHALT))
            else:
                roads.append(_road(lrng, line, 3.5, 6.0, "track", net.DIRT))
    # farmsteads with an access track
    fi = int(math.ceil(width_m / FARM_CELL_M)) + 1
    fj = int(math.ceil(height_m / FARM_CELL_M)) + 1
    for i in range(-1, fi + 1):
        for j in range(-1, fj + 1):
            f = _farm(seed, i, j)
            if f is None:
                continue
            rng = net._rng(seed, _TAG_FARM + 100, i, j)
            poly = _blob(rng, f.centre, f.radius, 0.25).difference(taken)
            if poly.is_empty:
                continue
            if poly.intersects(scene):
                districts.append(net.District(poly, FARMSTEAD))
                taken = taken.union(poly)
            heading = rng.uniform(0, 2 * math.pi)
            track = net._walk(rng, f.centre, heading, rng.uniform(150.0, 600.0), 0.001,
                              step=8.0, max_curvature=0.01)
            roads.append(_road(rng, track, 3.0, 4.5, "track", net.DIRT))
    # straight-ish field tracks along the field pattern
    angle = field_angle(seed)
    ti = int(math.ceil(width_m / FIELD_TRACK_CELL_M)) + 1
    tj = int(math.ceil(height_m / FIELD_TRACK_CELL_M)) + 1
    for i in range(-1, ti + 1):
        for j in range(-1, tj + 1):
            rng = net._rng(seed, _TAG_TRACK, i, j)
            if rng.random() > 0.3:
                continue
            start = (np.array([i, j]) + rng.uniform(0, 1, 2)) * FIELD_TRACK_CELL_M
            heading = angle + (math.pi / 2 if rng.random() < 0.5 else 0.0) + rng.normal(0, 0.05)
            heading += math.pi if rng.random() < 0.5 else 0.0
            line = net._walk(rng, start, heading, rng.uniform(150.0, 550.0), 0.0004,
                             step=8.0, max_curvature=0.004)
            roads.append(_road(rng, line, 3.0, 4.5, "track", net.DIRT))
    # one paved road through the area now and then
    rng = net._rng(seed, _TAG_PAVED)
    for _ in range(int(rng.poisson(max(0.5, width_m * height_m / 3e6)))):
        diag = math.hypot(width_m, height_m)
        centre = rng.uniform([0.15 * width_m, 0.15 * height_m], [0.85 * width_m, 0.85 * height_m])
        heading = rng.uniform(0, 2 * math.pi)
        back = centre - diag * np.array([math.cos(heading), math.sin(heading)])
        line = net._walk(rng, back, heading, 2.0 * diag, 0.0002, step=10.0,
                         max_curvature=0.003)
        roads.append(_road(rng, line, 5.5, 8.0, "curved", net.ASPHALT))
    # woods
    wi = int(math.ceil(width_m / WOOD_CELL_M)) + 1
    wj = int(math.ceil(height_m / WOOD_CELL_M)) + 1
    for i in range(-1, wi + 1):
        for j in range(-1, wj + 1):
            rng = net._rng(seed, _TAG_WOOD, i, j)
            if rng.random() > 0.28:
                continue
            centre = (np.array([i, j]) + rng.uniform(0, 1, 2)) * WOOD_CELL_M
            poly = _blob(rng, centre, float(rng.uniform(40.0, 200.0)), 0.5,
                         float(rng.uniform(1.0, 2.2))).difference(taken)
            if not poly.is_empty and poly.intersects(scene):
                districts.append(net.District(poly, WOOD))
                taken = taken.union(poly)
    clipped: list[net.Road] = []
    for road in roads:
        if not road.line.intersects(reach):
            continue
        for part in net._pieces(road.line.intersection(scene)):
            clipped.append(net.Road(part, road.width_m, road.kind, road.surface, road.tone))
    return net.SynthNetwork(clipped, districts, width_m, height_m)


# --- look ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuralPalette:
    name: str
    crops: tuple  # (R, G, B, NIR) of field types: green crops, ripe, bare soil, stubble
    margin: tuple  # grassy field margin
    bund: tuple  # darker earth bank / ditch
    village_ground: tuple  # (bare compound, grass)
    wood_floor: tuple
    dirt: tuple  # (brown, grey) track colours
    asphalt: tuple
    roofs: tuple
    tree: tuple


RURAL_PALETTES = (
    RuralPalette(
        "temperate",
        crops=((0.20, 0.30, 0.13, 0.55), (0.28, 0.36, 0.17, 0.55), (0.45, 0.42, 0.27, 0.45),
               (0.52, 0.46, 0.32, 0.45), (0.38, 0.31, 0.23, 0.35), (0.30, 0.25, 0.19, 0.30),
               (0.16, 0.24, 0.10, 0.50), (0.55, 0.52, 0.40, 0.48)),
        margin=(0.26, 0.32, 0.18, 0.48), bund=(0.22, 0.22, 0.16, 0.32),
        village_ground=((0.40, 0.37, 0.30, 0.38), (0.20, 0.27, 0.14, 0.45)),
        wood_floor=(0.09, 0.14, 0.07, 0.36),
        dirt=((0.56, 0.49, 0.39, 0.48), (0.55, 0.54, 0.50, 0.50)),
        asphalt=((0.20, 0.20, 0.21, 0.22), (0.36, 0.36, 0.36, 0.36)),
        roofs=((0.55, 0.27, 0.19, 0.35), (0.45, 0.25, 0.20, 0.32), (0.38, 0.38, 0.40, 0.35),
               (0.62, 0.60, 0.58, 0.55), (0.30, 0.30, 0.32, 0.28)),
        tree=(0.07, 0.14, 0.06, 0.52)),
    RuralPalette(
        "dry",
        crops=((0.42, 0.36, 0.27, 0.40), (0.50, 0.43, 0.33, 0.45), (0.36, 0.31, 0.24, 0.36),
               (0.30, 0.32, 0.20, 0.45), (0.55, 0.48, 0.37, 0.48), (0.46, 0.41, 0.34, 0.42),
               (0.24, 0.30, 0.16, 0.50), (0.39, 0.37, 0.30, 0.40)),
        margin=(0.38, 0.36, 0.27, 0.42), bund=(0.33, 0.29, 0.22, 0.34),
        village_ground=((0.55, 0.48, 0.38, 0.46), (0.35, 0.34, 0.24, 0.42)),
        wood_floor=(0.16, 0.19, 0.11, 0.36),
        dirt=((0.66, 0.57, 0.45, 0.55), (0.62, 0.60, 0.55, 0.55)),
        asphalt=((0.20, 0.20, 0.21, 0.22), (0.40, 0.39, 0.38, 0.40)),
        roofs=((0.70, 0.70, 0.70, 0.62), (0.52, 0.40, 0.32, 0.40), (0.42, 0.42, 0.44, 0.40),
               (0.60, 0.55, 0.48, 0.50), (0.30, 0.36, 0.42, 0.34)),
        tree=(0.10, 0.15, 0.07, 0.48)),
    RuralPalette(
        "tropical",
        crops=((0.18, 0.32, 0.14, 0.58), (0.24, 0.38, 0.18, 0.60), (0.13, 0.24, 0.12, 0.50),
               (0.36, 0.33, 0.24, 0.40), (0.30, 0.38, 0.22, 0.52), (0.22, 0.27, 0.22, 0.35),
               (0.42, 0.38, 0.28, 0.42), (0.28, 0.30, 0.20, 0.45)),
        margin=(0.22, 0.30, 0.16, 0.50), bund=(0.30, 0.28, 0.20, 0.38),
        village_ground=((0.46, 0.41, 0.33, 0.42), (0.16, 0.24, 0.11, 0.48)),
        wood_floor=(0.07, 0.13, 0.06, 0.40),
        dirt=((0.60, 0.52, 0.42, 0.50), (0.58, 0.56, 0.52, 0.52)),
        asphalt=((0.22, 0.22, 0.23, 0.24), (0.38, 0.38, 0.38, 0.38)),
        roofs=((0.72, 0.72, 0.72, 0.64), (0.55, 0.30, 0.22, 0.36), (0.35, 0.42, 0.50, 0.38),
               (0.45, 0.45, 0.45, 0.42), (0.62, 0.50, 0.40, 0.48)),
        tree=(0.05, 0.13, 0.05, 0.55)),
)

# per land use code (0 unused, 1 farmstead, 2 village, 3 fields, 4 wood)
TREE_DENSITY = np.array([0.0, 0.3, 0.3, 0.004, 0.7], dtype=np.float32)
STREET_TREE_DENSITY = np.array([0.0, 0.1, 0.12, 0.02, 0.0], dtype=np.float32)
HOUSE_DENSITY = np.array([0.0, 0.55, 0.5, 0.0, 0.0], dtype=np.float32)
BARN_DENSITY = np.array([0.0, 0.6, 0.08, 0.0, 0.0], dtype=np.float32)


@dataclass
class RuralPlan:
    base: ScenePlan
    palette: RuralPalette
    road_colour4: np.ndarray  # (4, n_ranks + 1)
    road_alpha: np.ndarray  # per rank: how clearly the surface shows (tracks: 0.35..1)
    road_ruts: np.ndarray  # per rank: two wheel ruts with a grassy middle
    road_dirt: np.ndarray  # per rank: unpaved
    verge_px: np.ndarray  # per piece: ragged edge width of tracks
    field_cos: float
    field_sin: float
    field_u: float  # field size along the main direction (m)
    field_v: float
    internal: list[int]
    blur_sigma: float
    noise_level: float
    jpeg_quality: int | None
    haze_amount: float
    halo: int


def plan_rural(grid: SynthGrid, network: net.SynthNetwork, seed: int, bands: int,
               nodata_border: bool = False, nodata_holes: bool = False) -> RuralPlan:
    base = plan_scene(grid, network, seed, bands, nodata_border, nodata_holes)
    res = grid.resolution_m
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 6161])
    palette = RURAL_PALETTES[int(rng.integers(len(RURAL_PALETTES)))]
    order = sorted(range(len(network.roads)), key=lambda k: (network.roads[k].width_m, k))
    n = len(order)
    colour = np.zeros((4, n + 1))
    alpha = np.ones(n + 1)
    ruts = np.zeros(n + 1, dtype=bool)
    dirt = np.zeros(n + 1, dtype=bool)
    verge = []
    brown, grey = np.asarray(palette.dirt[0]), np.asarray(palette.dirt[1])
    new, worn = np.asarray(palette.asphalt[0]), np.asarray(palette.asphalt[1])
    for rank, k in enumerate(order, start=1):
        road = network.roads[k]
        if road.surface == net.DIRT:
            colour[:, rank] = (brown + (grey - brown) * rng.uniform(0, 1)) * road.tone
            alpha[rank] = rng.uniform(0.35, 1.0)
            ruts[rank] = rng.random() < 0.3
            dirt[rank] = True
            edge_m = rng.uniform(0.5, 1.2)
        else:
            colour[:, rank] = new + (worn - new) * rng.uniform(0.0, 1.0)
            edge_m = 0.0
        line_px = shapely.transform(road.line, lambda c: c / res)
        verge += [edge_m / res] * len(_split(line_px, SEGMENT_PX))
    angle = field_angle(seed)
    blur = float(rng.uniform(0.5, 1.1))
    noise = float(rng.uniform(0.006, 0.02))
    jpeg = int(rng.integers(35, 90)) if rng.random() < 0.6 else None
    haze = float(rng.uniform(0.0, 0.45))
    field_u = float(rng.uniform(70.0, 170.0))
    field_v = field_u / float(rng.uniform(1.3, 3.0))
    halo = base.halo + int(math.ceil(3 * blur)) + 2
    return RuralPlan(
        base=base, palette=palette, road_colour4=colour.astype(np.float32), road_alpha=alpha,
        road_ruts=ruts, road_dirt=dirt, verge_px=np.array(verge, dtype=np.float64),
        field_cos=math.cos(angle), field_sin=math.sin(angle), field_u=field_u,
        field_v=field_v, internal=[0, 1, 2] if bands == 3 else [0, 1, 2, 3],
        blur_sigma=blur, noise_level=noise, jpeg_quality=jpeg, haze_amount=haze, halo=halo)


@dataclass
class Fields:
    crop: np.ndarray  # int per pixel: field type
    tone: np.ndarray  # float32 per pixel, [0, 1): per-field variation
    stripe: np.ndarray  # float32 per pixel, [0, 1]: furrows / crop rows (triangle wave)
    stripe_amp: np.ndarray  # float32 per pixel
    edge_m: np.ndarray  # float32 per pixel: distance to the field boundary (m)
    edge_kind: np.ndarray  # int8 per pixel: 0 none, 1 margin, 2 bund, 3 tree line


def fields(plan: RuralPlan, xs: np.ndarray, ys: np.ndarray, key: int, n_crops: int) -> Fields:
    """A Voronoi partition on an anisotropic jittered lattice aligned with the field angle.

    Only +, -, *, /, floor, sqrt on per-pixel data: exact in every window.
    """
    c, s = plan.field_cos, plan.field_sin
    cu, cv = plan.field_u, plan.field_v
    u = (xs[None, :] * c + ys[:, None] * s) / cu  # normalised lattice coordinates
    v = (ys[:, None] * c - xs[None, :] * s) / cv
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    u0, v0 = int(iu.min()) - 1, int(iv.min()) - 1
    gu = np.arange(u0, int(iu.max()) + 2)
    gv = np.arange(v0, int(iv.max()) + 2)
    su = gu[None, :] + np.float64(0.2) + np.float64(0.6) * hash_uniform(
        gu[None, :], gv[:, None], derive_key(key, 1))
    sv = gv[:, None] + np.float64(0.2) + np.float64(0.6) * hash_uniform(
        gu[None, :], gv[:, None], derive_key(key, 2))
    au, av = iu - u0, iv - v0
    best = np.full(u.shape, np.inf)
    second = np.full(u.shape, np.inf)
    bi = np.zeros(u.shape, dtype=np.int64)
    bj = np.zeros(u.shape, dtype=np.int64)
    si = np.zeros(u.shape, dtype=np.int64)
    sj = np.zeros(u.shape, dtype=np.int64)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            ci, cj = au + du, av + dv
            d = (u - su[cj, ci]) ** 2 + (v - sv[cj, ci]) ** 2
            is_best = d < best
            is_second = ~is_best & (d < second)
            second = np.where(is_best, best, np.where(is_second, d, second))
            si = np.where(is_best, bi, np.where(is_second, ci, si))
            sj = np.where(is_best, bj, np.where(is_second, cj, sj))
            best = np.where(is_best, d, best)
            bi = np.where(is_best, ci, bi)
            bj = np.where(is_best, cj, bj)
    # distance to the bisector of the two nearest seeds, in metres
    p1u, p1v, p2u, p2v = su[bj, bi], sv[bj, bi], su[sj, si], sv[sj, si]
    nu, nv = (p2u - p1u) / cu, (p2v - p1v) / cv  # the bisector's normal in metric units
    mu, mv = (p1u + p2u) * (0.5 * cu), (p1v + p2v) * (0.5 * cv)
    edge = np.abs(nu * (mu - u * cu) + nv * (mv - v * cv)) / np.sqrt(nu * nu + nv * nv)
    gi, gj = bi + u0, bj + v0
    field_hash = hash_uniform(gi, gj, derive_key(key, 3))
    crop = np.minimum((field_hash * n_crops).astype(np.int64), n_crops - 1)
    tone = hash_uniform(gi, gj, derive_key(key, 4))
    # stripes along one of the field's axes, spacing 1.5..7 m
    along_u = hash_uniform(gi, gj, derive_key(key, 5)) < 0.6
    spacing = np.float64(1.5) + np.float64(5.5) * hash_uniform(gi, gj, derive_key(key, 6))
    t = np.where(along_u, v * (cv / spacing), u * (cu / spacing))
    stripe = (np.abs(t - np.floor(t) - 0.5) * 2.0).astype(np.float32)
    amp = hash_uniform(gi, gj, derive_key(key, 7))
    amp = np.where(amp < 0.35, np.float32(0.0), amp * np.float32(0.18))
    # boundary kind from the pair of fields: symmetric in the two cells
    oi, oj = si + u0, sj + v0
    lo_first = (gi < oi) | ((gi == oi) & (gj < oj))
    ai, aj = np.where(lo_first, gi, oi), np.where(lo_first, gj, oj)
    bi2, bj2 = np.where(lo_first, oi, gi), np.where(lo_first, oj, gj)
    pair = hash_uniform(ai * 7919 + bi2, aj * 7919 + bj2, derive_key(key, 8))
    kind = np.select([pair < 0.35, pair < 0.72, pair < 0.84], [0, 1, 2], 3).astype(np.int8)
    # half the fields are split into parallel strips (different owners / crops)
    strip_w = np.float64(12.0) + np.float64(40.0) * hash_uniform(gi, gj, derive_key(key, 9))
    split = hash_uniform(gi, gj, derive_key(key, 10)) < 0.5
    ts = np.where(along_u, v * cv, u * cu) / strip_w
    strip = np.floor(ts).astype(np.int64)
    strip_edge = (np.minimum(ts - strip, strip + 1 - ts) * strip_w).astype(np.float32)
    strip_tone = hash_uniform(gi * 64 + strip, gj, derive_key(key, 11))
    tone = np.where(split, strip_tone, tone)
    crop = np.where(split & (strip_tone < 0.3),
                    np.minimum((strip_tone * (n_crops / 0.3)).astype(np.int64), n_crops - 1),
                    crop)
    inner = split & (strip_edge < edge)
    edge = np.where(inner, strip_edge, edge)
    kind = np.where(inner, np.int8(1), kind).astype(np.int8)
    return Fields(crop, tone, stripe, amp.astype(np.float32), edge.astype(np.float32), kind)


def render_window(plan: RuralPlan, col0: int, row0: int, width: int,
                  height: int) -> WindowPixels:
    """Image (noise and JPEG included) and mask of one window, snapped to the JPEG grid."""
    return render_on_jpeg_grid(_render, plan, plan.base, col0, row0, width, height)


def _render(plan: RuralPlan, col0: int, row0: int, width: int,
            height: int) -> tuple[np.ndarray, np.ndarray]:
    base = plan.base
    pal = plan.palette
    res = base.grid.resolution_m
    halo = plan.halo
    c0, r0 = col0 - halo, row0 - halo
    w, h = width + 2 * halo, height + 2 * halo
    xs, ys = (np.arange(c0, c0 + w) + 0.5) * res, (np.arange(r0, r0 + h) + 0.5) * res
    key = derive_key(scene_key(base.seed), 7000)
    to_px = Affine.translation(c0, r0)
    window_box = shapely.box(c0, r0, c0 + w, r0 + h)
    shape = (h, w)

    # roads: carriageway (the label), ragged track edges, inner core, grassy middle of ruts
    max_reach = base.max_half_width + float(plan.verge_px.max(initial=0.0)) + 1
    idx = base.road_tree.query(window_box.buffer(max_reach))
    idx.sort()
    road = np.zeros(shape, dtype=np.int32)
    verge = np.zeros(shape, dtype=np.int32)
    core = np.zeros(shape, dtype=bool)
    middle = np.zeros(shape, dtype=bool)
    if idx.size:
        lines, half = base.lines[idx], base.half_width[idx]
        ranks = base.road_value[idx]
        road = features.rasterize(zip(shapely.buffer(lines, half, quad_segs=6), ranks,
                                      strict=True),
                                  out_shape=shape, transform=to_px, fill=0, dtype="int32")
        vp = plan.verge_px[idx]
        has = vp > 0
        if has.any():
            verge = features.rasterize(
                zip(shapely.buffer(lines[has], half[has] + vp[has], quad_segs=4), ranks[has],
                    strict=True), out_shape=shape, transform=to_px, fill=0, dtype="int32")
            core = features.rasterize(
                shapely.buffer(lines[has], np.maximum(half[has] - vp[has], 0.5), quad_segs=4),
                out_shape=shape, transform=to_px, fill=0, dtype="uint8").astype(bool)
        rut = plan.road_ruts[ranks]
        if rut.any():
            middle = features.rasterize(
                shapely.buffer(lines[rut], np.maximum(half[rut] * 0.3, 0.5), quad_segs=4),
                out_shape=shape, transform=to_px, fill=0, dtype="uint8").astype(bool)
    is_road = road > 0
    any_rank = np.where(is_road, road, verge)
    dirt_here = plan.road_dirt[any_rank] & (any_rank > 0)
    ragged = fbm(xs, ys, 1.5, derive_key(key, 1), octaves=2) > np.float32(0.5)
    track_paint = dirt_here & (core | ragged)
    # a track fades in and out along its length
    fade = fbm(xs, ys, 45.0, derive_key(key, 2), octaves=2)
    fade *= np.float32(1.2)
    fade += np.float32(0.2)
    track_alpha = np.clip(plan.road_alpha.astype(np.float32)[any_rank] * fade, 0.12, 1.0)
    track_alpha = np.where(middle & (road == any_rank), track_alpha * np.float32(0.3),
                           track_alpha).astype(np.float32)

    landuse = np.full(shape, FIELDS, dtype=np.uint8)
    d_idx = base.district_tree.query(window_box)
    if d_idx.size:
        d_idx.sort()
        landuse = features.rasterize(zip(base.districts[d_idx], base.district_landuse[d_idx],
                                         strict=True),
                                     out_shape=shape, transform=to_px, fill=FIELDS,
                                     dtype="uint8")

    def landuse_of(x_m, y_m):
        return landuse_at(x_m / res, y_m / res, base.district_tree, base.district_landuse,
                          FIELDS)

    def on_road(x_m, y_m, reach_m):
        return near_road(x_m / res, y_m / res, np.asarray(reach_m) / res, base.road_tree,
                         base.lines, base.half_width, base.max_half_width)

    def fronting(setback_m):
        def blocked(x_m, y_m, reach_m):
            return on_road(x_m, y_m, reach_m) | ~on_road(x_m, y_m, np.asarray(reach_m)
                                                       + setback_m)
        return blocked

    crown = tree_domes(xs, ys, 6.0, derive_key(key, 3), TREE_DENSITY, STREET_TREE_DENSITY,
                       landuse_of, on_road)
    np.maximum(crown, tree_domes(xs, ys, 10.0, derive_key(key, 4), TREE_DENSITY,
                                 STREET_TREE_DENSITY, landuse_of, on_road), out=crown)
    houses = buildings(xs, ys, 16.0, derive_key(key, 5), HOUSE_DENSITY, landuse_of,
                       fronting(40.0), len(pal.roofs))
    barns = buildings(xs, ys, 30.0, derive_key(key, 6), BARN_DENSITY, landuse_of,
                      fronting(50.0), len(pal.roofs))

    fl = fields(plan, xs, ys, derive_key(key, 7), len(pal.crops))
    in_fields = landuse == FIELDS
    # tree lines along some field boundaries: lumpy crowns 2-4 m either side of the boundary
    lumps = fbm(xs, ys, 4.0, derive_key(key, 8), octaves=2)
    hedge = np.clip((np.float32(4.5) * lumps - np.float32(0.3) - fl.edge_m) * np.float32(0.9),
                    0, 1)
    gaps = fbm(xs, ys, 30.0, derive_key(key, 16), octaves=2) < np.float32(0.35)
    hedge[~((fl.edge_kind == 3) & in_fields) | gaps] = 0.0
    hedge[is_road] *= np.float32(0.6)  # trees overhang a track but leave it visible
    tree_edge = fbm(xs, ys, 2.5, derive_key(key, 9), octaves=2)
    tree_alpha = np.clip((crown - np.float32(0.25) * tree_edge) * np.float32(6.0), 0, 1)
    np.maximum(tree_alpha, hedge, out=tree_alpha)
    is_roof = (houses.roof > 0) | (barns.roof > 0)
    roof_id = np.where(houses.roof > 0, houses.roof, barns.roof)
    ridge = np.where(houses.roof > 0, houses.ridge, barns.ridge)
    tree_alpha[is_roof] = 0.0
    sx, sy = base.building_shadow
    tx, ty = base.tree_shadow
    shadow = np.maximum(_shift(tree_alpha, tx, ty), _shift(is_roof.astype(np.float32), sx, sy))
    shadow[is_roof] = 0.0
    shade = np.float32(1.0) - np.float32(0.5) * shadow

    # ground: fields (crop, per-field tone, stripes, moisture patches), margins, villages
    patches = fbm(xs, ys, 35.0, derive_key(key, 10), octaves=3)
    texture = fbm(xs, ys, 3.0, derive_key(key, 11), octaves=3)
    texture *= np.float32(0.3)
    texture += np.float32(0.85)
    grain = fbm(xs, ys, 1.2, derive_key(key, 12), octaves=2)
    field_gain = (np.float32(0.85) + np.float32(0.3) * fl.tone) * \
        (np.float32(0.88) + np.float32(0.24) * patches) * \
        (np.float32(1.0) + fl.stripe_amp * (fl.stripe - np.float32(0.5)))
    margin_w = np.float32(0.6) + np.float32(1.2) * lumps
    margin = in_fields & (((fl.edge_kind == 1) & (fl.edge_m < margin_w)) |
                          ((fl.edge_kind == 3) & (fl.edge_m < margin_w + np.float32(1.5))))
    bund = in_fields & (fl.edge_kind == 2) & (fl.edge_m < np.float32(0.7) + np.float32(0.6)
                                              * lumps)
    compound = stretch(fbm(xs, ys, 14.0, derive_key(key, 13), octaves=2), 0.35, 0.65)
    settled = (landuse == VILLAGE) | (landuse == FARMSTEAD)
    wood = landuse == WOOD

    illum, _, haze = atmosphere(xs, ys, derive_key(key, 14))
    illum *= np.float32(0.35)
    illum += np.float32(0.55)  # 0.75..1.0
    haze *= np.float32(plan.haze_amount)
    airlight = np.asarray((0.72, 0.75, 0.80, 0.62), dtype=np.float32)

    ch = plan.internal
    crops = np.asarray(pal.crops, dtype=np.float32)
    crops = (crops * np.float32(0.8) + crops.mean(axis=0) * np.float32(0.2))[:, ch].T
    roofs = np.asarray(((0, 0, 0, 0),) + pal.roofs, dtype=np.float32)[:, ch].T
    road_col = plan.road_colour4[ch]
    tree = np.asarray(pal.tree, dtype=np.float32)[ch]
    canopy = np.maximum(crown, hedge)
    tree_light = np.float32(0.45) + np.float32(1.2) * canopy * (
        np.float32(0.6) + np.float32(0.8) * tree_edge)
    # crowns in the shadow of their neighbours are darker: woods show single trees
    tree_light *= np.float32(1.0) - np.float32(0.45) * _shift(canopy, tx, ty) * (
        np.float32(1.0) - canopy)
    road_tex = np.float32(0.9) + np.float32(0.15) * fbm(xs, ys, 6.0, derive_key(key, 15),
                                                       octaves=3) + np.float32(0.06) * grain
    dirt_tex = np.float32(0.88) + np.float32(0.24) * grain
    paved = is_road & ~dirt_here
    crop_core = (slice(halo, halo + height), slice(halo, halo + width))
    rendered = []
    for b, c in enumerate(ch):
        v = crops[b][fl.crop] * field_gain
        np.copyto(v, v + (np.float32(pal.margin[c]) - v) * np.float32(0.8), where=margin)
        np.copyto(v, v + (np.float32(pal.bund[c]) - v) * np.float32(0.7), where=bund)
        bare, grass = pal.village_ground[0][c], pal.village_ground[1][c]
        vg = (np.float32(grass) + np.float32(bare - grass) * compound) * \
            (np.float32(0.9) + np.float32(0.2) * patches)
        np.copyto(v, vg, where=settled)
        np.copyto(v, np.float32(pal.wood_floor[c]) * (np.float32(0.8) + np.float32(0.4) *
                                                      patches), where=wood)
        v *= texture
        np.copyto(v, v + (road_col[b][any_rank] * dirt_tex - v) * track_alpha,
                  where=track_paint)
        np.copyto(v, road_col[b][road] * road_tex, where=paved)
        np.copyto(v, roofs[b][roof_id] * ridge, where=is_roof)
        v *= shade
        v += (tree[b] * tree_light - v) * tree_alpha
        v *= illum
        v *= np.float32(1.0) - haze
        v += haze * airlight[c]
        rendered.append(gaussian_filter(v, plan.blur_sigma, truncate=3.0)[crop_core])
    channels = base.channels[:, ch]
    out = []
    rows_c, cols_c = np.arange(row0, row0 + height), np.arange(col0, col0 + width)
    for k in range(len(channels)):
        acc = np.zeros((height, width), dtype=np.float32)
        for j, wgt in enumerate(channels[k]):
            if wgt:
                acc += np.float32(wgt) * rendered[j]
        acc += np.float32(plan.noise_level) * (
            sensor_noise(base.seed, k, rows_c, cols_c)
            + sensor_noise(base.seed, 100 + k, rows_c, cols_c))
        out.append(acc)
    if plan.jpeg_quality is not None:
        out = jpeg_like(out, plan.jpeg_quality, rgb=len(out) >= 3)
    return np.stack(out), is_road[crop_core].astype(np.uint8)
