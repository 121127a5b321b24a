"""The ``realistic`` rendering style: scenes that look more like real very-high-resolution imagery.

Same network, same mask (the carriageway of every road, also where trees or cars hide it), but
drawn with what real errors point at: wide multi-lane arterials with lane markings and cars,
kerbs and sidewalks, parking lots with stalls and parked cars, flat grey roofs with shadows,
concrete yards, gardens and street trees overhanging the road, dirt tracks with ragged edges,
a per-scene palette (desert, green suburb, grey European city) and sensor effects (blur, noise,
haze, JPEG-like 8x8 block quantisation).

Like the classic style, every value is a function of absolute position and the seed: a window
is rendered with a halo (and snapped to the 16-pixel JPEG block grid), then cropped, so a pixel
does not depend on the window it was rendered in. Per-road details (markings, cars) are drawn
from a generator keyed by the road piece, so they are built lazily for the pieces a window
touches and memory stays flat with the scene size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy.ndimage import gaussian_filter

from roadprn.synth import network as net
from roadprn.synth.grid import SynthGrid
from roadprn.synth.lattice import FAR, Cells, buildings, landuse_at, near_road, tree_domes
from roadprn.synth.noise import derive_key, fbm, hash_uniform, stretch
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
    window_validity,
)

PlanT = TypeVar("PlanT")

KINDS = ("highway", "arterial", "grid", "curved", "dead_end", "track")
LANE_M = 3.5
DASH_M, GAP_M = 3.0, 9.0
LINE_M = 0.15
JPEG_BLOCK = 16  # windows are snapped to this grid (8x8 luma blocks, 2x2-subsampled chroma)

# (R, G, B, NIR) reflectances
WHITE_PAINT = (0.78, 0.78, 0.74, 0.70)
YELLOW_PAINT = (0.72, 0.60, 0.22, 0.62)
CAR_COLOURS = ((0.85, 0.85, 0.84, 0.70), (0.06, 0.06, 0.07, 0.08), (0.55, 0.56, 0.58, 0.50),
               (0.35, 0.36, 0.38, 0.33), (0.55, 0.10, 0.08, 0.35), (0.12, 0.18, 0.40, 0.25),
               (0.90, 0.88, 0.82, 0.75), (0.20, 0.20, 0.21, 0.20), (0.70, 0.70, 0.72, 0.60))
SIDEWALK = (0.52, 0.51, 0.48, 0.50)


@dataclass(frozen=True)
class Palette:
    name: str
    ground_low: tuple  # per land use (index 0 unused), (R, G, B, NIR)
    ground_high: tuple
    asphalt: tuple  # range of asphalt colours (new, worn)
    dirt: tuple
    roofs: tuple
    flat_roofs: tuple
    tree: tuple
    tree_density: tuple  # per land use
    street_tree_density: tuple
    house_density: tuple
    block_density: tuple  # large flat-roofed buildings
    lot_density: tuple  # parking lots
    yard_density: tuple  # concrete yards / driveways
    yellow_centre: bool  # US-style yellow centre lines


PALETTES = (
    Palette(
        "desert",
        ground_low=((0, 0, 0, 0), (0.50, 0.44, 0.36, 0.45), (0.55, 0.47, 0.37, 0.48),
                    (0.62, 0.52, 0.40, 0.52), (0.45, 0.40, 0.30, 0.45)),
        ground_high=((0, 0, 0, 0), (0.62, 0.56, 0.47, 0.55), (0.40, 0.42, 0.30, 0.50),
                     (0.70, 0.60, 0.47, 0.60), (0.30, 0.33, 0.22, 0.45)),
        asphalt=((0.16, 0.16, 0.17, 0.18), (0.38, 0.37, 0.36, 0.38)),
        dirt=(0.66, 0.56, 0.44, 0.56),
        roofs=((0.70, 0.66, 0.60, 0.60), (0.60, 0.45, 0.35, 0.42), (0.45, 0.43, 0.40, 0.40),
               (0.80, 0.78, 0.74, 0.70), (0.55, 0.50, 0.44, 0.47)),
        flat_roofs=((0.78, 0.78, 0.76, 0.70), (0.40, 0.40, 0.40, 0.38),
                    (0.28, 0.28, 0.29, 0.27), (0.60, 0.58, 0.55, 0.55)),
        tree=(0.10, 0.15, 0.07, 0.45),
        tree_density=(0, 0.04, 0.12, 0.01, 0.25), street_tree_density=(0, 0.08, 0.15, 0.0, 0),
        house_density=(0, 0.5, 0.75, 0.02, 0), block_density=(0, 0.6, 0.1, 0.0, 0),
        lot_density=(0, 0.5, 0.15, 0.0, 0), yard_density=(0, 0.3, 0.3, 0.02, 0),
        yellow_centre=True),
    Palette(
        "green",
        ground_low=((0, 0, 0, 0), (0.30, 0.31, 0.28, 0.32), (0.17, 0.30, 0.12, 0.52),
                    (0.40, 0.33, 0.24, 0.40), (0.08, 0.14, 0.06, 0.35)),
        ground_high=((0, 0, 0, 0), (0.22, 0.30, 0.16, 0.45), (0.28, 0.38, 0.18, 0.55),
                     (0.22, 0.38, 0.13, 0.62), (0.14, 0.22, 0.09, 0.42)),
        asphalt=((0.10, 0.10, 0.11, 0.12), (0.30, 0.30, 0.31, 0.31)),
        dirt=(0.50, 0.42, 0.32, 0.46),
        roofs=((0.50, 0.24, 0.18, 0.33), (0.34, 0.34, 0.36, 0.32), (0.60, 0.60, 0.58, 0.56),
               (0.20, 0.20, 0.22, 0.20), (0.45, 0.40, 0.34, 0.38)),
        flat_roofs=((0.70, 0.70, 0.69, 0.62), (0.35, 0.35, 0.36, 0.33),
                    (0.22, 0.22, 0.23, 0.21), (0.50, 0.49, 0.47, 0.46)),
        tree=(0.06, 0.15, 0.05, 0.55),
        tree_density=(0, 0.1, 0.45, 0.12, 0.9), street_tree_density=(0, 0.3, 0.45, 0.1, 0),
        house_density=(0, 0.5, 0.55, 0.03, 0), block_density=(0, 0.5, 0.05, 0.0, 0),
        lot_density=(0, 0.35, 0.1, 0.0, 0), yard_density=(0, 0.25, 0.2, 0.03, 0),
        yellow_centre=True),
    Palette(
        "european",
        ground_low=((0, 0, 0, 0), (0.33, 0.33, 0.32, 0.33), (0.20, 0.28, 0.14, 0.48),
                    (0.36, 0.32, 0.25, 0.40), (0.09, 0.14, 0.07, 0.36)),
        ground_high=((0, 0, 0, 0), (0.42, 0.41, 0.39, 0.40), (0.30, 0.34, 0.20, 0.46),
                     (0.25, 0.34, 0.15, 0.55), (0.15, 0.21, 0.10, 0.40)),
        asphalt=((0.14, 0.14, 0.15, 0.16), (0.33, 0.33, 0.34, 0.34)),
        dirt=(0.46, 0.41, 0.33, 0.44),
        roofs=((0.55, 0.25, 0.17, 0.34), (0.62, 0.30, 0.20, 0.38), (0.30, 0.30, 0.32, 0.28),
               (0.42, 0.40, 0.38, 0.38), (0.50, 0.32, 0.25, 0.36)),
        flat_roofs=((0.45, 0.45, 0.45, 0.42), (0.30, 0.30, 0.31, 0.28),
                    (0.20, 0.20, 0.21, 0.19), (0.58, 0.57, 0.55, 0.52)),
        tree=(0.07, 0.14, 0.06, 0.52),
        tree_density=(0, 0.12, 0.35, 0.1, 0.9), street_tree_density=(0, 0.35, 0.35, 0.1, 0),
        house_density=(0, 0.4, 0.5, 0.03, 0), block_density=(0, 0.75, 0.1, 0.0, 0),
        lot_density=(0, 0.2, 0.08, 0.0, 0), yard_density=(0, 0.35, 0.2, 0.03, 0),
        yellow_centre=False),
)

# quantisation tables of the JPEG standard (Annex K), quality 50
_Q_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float64)
_Q_CHROMA = np.full((8, 8), 99.0)
_Q_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def _dct_matrix() -> np.ndarray:
    k = np.arange(8)
    m = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    m[0] /= np.sqrt(2)
    return m


_DCT = _dct_matrix()


@dataclass
class RealisticPlan:
    base: ScenePlan  # grid, road pieces, districts, shadows, nodata
    palette: Palette
    piece_road: np.ndarray  # index of the road each piece belongs to
    piece_start: np.ndarray  # pixels along the road where the piece starts
    piece_kind: np.ndarray  # index into KINDS
    piece_surface: np.ndarray
    piece_width: np.ndarray  # metres
    road_colour4: np.ndarray  # (4, n_ranks + 1)
    road_centre_yellow: np.ndarray  # per road rank: centre line yellow
    road_marked: np.ndarray  # per road rank: has a centre line (grid streets: some)
    road_traffic: np.ndarray  # per road rank: cars per 100 m of lane
    verge_px: np.ndarray  # per piece: sidewalk (paved) or ragged edge (dirt) width
    internal: list[int]  # which of R, G, B, NIR are rendered
    blur_sigma: float
    noise_level: float
    jpeg_quality: int | None
    haze_amount: float
    halo: int


def widen_network(network: net.SynthNetwork, seed: int) -> net.SynthNetwork:
    """Arterials of the realistic style are wider (9-25 m, 2-6 lanes): main streets."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 4242])
    factors = rng.uniform(1.0, 1.8, len(network.roads))
    roads = [dataclasses.replace(r, width_m=round(r.width_m * f, 3)) if r.kind == "arterial"
             else r for r, f in zip(network.roads, factors, strict=True)]
    return net.SynthNetwork(roads, network.districts, network.width_m, network.height_m)


def plan_realistic(grid: SynthGrid, network: net.SynthNetwork, seed: int, bands: int,
                   nodata_border: bool = False, nodata_holes: bool = False) -> RealisticPlan:
    base = plan_scene(grid, network, seed, bands, nodata_border, nodata_holes)
    res = grid.resolution_m
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 909])
    palette = PALETTES[int(rng.integers(len(PALETTES)))]
    order = sorted(range(len(network.roads)), key=lambda k: (network.roads[k].width_m, k))
    n = len(order)
    colour = np.zeros((4, n + 1))
    yellow = np.zeros(n + 1, dtype=bool)
    marked = np.zeros(n + 1, dtype=bool)
    traffic = np.zeros(n + 1)
    road_of, start, kind, surface, width, verge = [], [], [], [], [], []
    new, worn = np.asarray(palette.asphalt[0]), np.asarray(palette.asphalt[1])
    for rank, k in enumerate(order, start=1):
        road = network.roads[k]
        if road.surface == net.DIRT:
            colour[:, rank] = np.asarray(palette.dirt) * road.tone
        elif road.surface == net.CONCRETE:
            colour[:, rank] = np.asarray(SIDEWALK) * 0.9 * road.tone
        else:
            colour[:, rank] = new + (worn - new) * rng.uniform(0.0, 1.0)
        major = road.kind in ("highway", "arterial")
        yellow[rank] = palette.yellow_centre and road.kind != "highway"
        marked[rank] = major or (road.kind == "grid" and rng.random() < 0.5)
        traffic[rank] = {"highway": 4.0, "arterial": 3.0, "grid": 1.2, "curved": 0.6,
                         "dead_end": 0.5}.get(road.kind, 0.0) * rng.uniform(0.3, 1.6)
        line_px = shapely.transform(road.line, lambda c: c / res)
        if road.surface == net.DIRT:
            edge_m = 0.9
        elif road.kind in ("arterial", "grid"):
            edge_m = rng.uniform(1.5, 3.0) if rng.random() < 0.8 else 0.0
        else:
            edge_m = 0.0
        along = 0.0
        for chunk in _split(line_px, SEGMENT_PX):
            road_of.append(rank)
            start.append(along)
            along += float(np.hypot(*np.diff(chunk, axis=0).T).sum())
            kind.append(KINDS.index(road.kind))
            surface.append(road.surface)
            width.append(road.width_m)
            verge.append(edge_m / res)
    blur = float(rng.uniform(0.45, 1.1))
    noise = float(rng.uniform(0.006, 0.022))
    jpeg = int(rng.integers(35, 90)) if rng.random() < 0.6 else None
    haze = float(rng.uniform(0.0, 0.6))
    internal = [0, 1, 2] if bands == 3 else [0, 1, 2, 3]
    car_shadow = 2
    halo = base.halo + int(math.ceil(3 * blur)) + car_shadow + 2
    verge_arr = np.array(verge, dtype=np.float64)
    return RealisticPlan(
        base=base, palette=palette, piece_road=np.array(road_of, dtype=np.int32),
        piece_start=np.array(start), piece_kind=np.array(kind, dtype=np.int8),
        piece_surface=np.array(surface, dtype=np.int8), piece_width=np.array(width),
        road_colour4=colour.astype(np.float32), road_centre_yellow=yellow, road_marked=marked,
        road_traffic=traffic, verge_px=verge_arr, internal=internal, blur_sigma=blur,
        noise_level=noise, jpeg_quality=jpeg, haze_amount=haze, halo=halo)


# --- per-piece details: lane markings and cars -----------------------------------------------

def _lanes(width_m: float, kind: str) -> int:
    if kind in ("highway", "arterial"):
        return max(2, 2 * round(width_m / LANE_M / 2))
    return 2


def _offset(line: shapely.LineString, d: float):
    if abs(d) < 1e-9:
        return line
    out = shapely.offset_curve(line, d)
    if out.is_empty or out.geom_type != "LineString":
        return None
    return out


def _dash_pieces(line, phase: float, dash: float, period: float) -> list:
    starts = np.arange(-phase % period, line.length - dash, period)
    if not starts.size:
        return []
    a = shapely.get_coordinates(shapely.line_interpolate_point(line, starts))
    b = shapely.get_coordinates(shapely.line_interpolate_point(line, starts + dash))
    return list(shapely.linestrings(np.stack([a, b], axis=1)))


def piece_details(plan: RealisticPlan, i: int) -> tuple[list, list, list, list]:
    """(marking lines, marking colour ids, car polygons, car colour ids) of road piece ``i``.

    Pixel coordinates. Marking colour 1 = white, 2 = yellow. Drawn from a generator keyed by
    the piece, so any window touching the piece gets the same details.
    """
    base = plan.base
    res = base.grid.resolution_m
    line = base.lines[i]
    rank = int(plan.piece_road[i])
    kind = KINDS[plan.piece_kind[i]]
    width_m = float(plan.piece_width[i])
    width_px = width_m / res
    lanes = _lanes(width_m, kind)
    lane_px = width_px / lanes
    marks, mcol, cars, ccol = [], [], [], []
    phase = float(plan.piece_start[i])
    dash, period = DASH_M / res, (DASH_M + GAP_M) / res
    if plan.road_marked[rank] and plan.piece_surface[i] != net.DIRT:
        yellow = bool(plan.road_centre_yellow[rank])
        for k in range(1, lanes):
            off = -width_px / 2 + k * lane_px
            centre = k * 2 == lanes
            if centre and (yellow or kind == "highway"):
                gap = 0.25 / res if yellow else 0.0
                for d in ((off - gap, off + gap) if yellow else (off,)):
                    ln = _offset(line, d)
                    if ln is not None:
                        marks.append(ln)
                        mcol.append(2 if yellow else 1)
            else:
                ln = _offset(line, off)
                if ln is not None:
                    pieces = _dash_pieces(ln, phase, dash, period)
                    marks += pieces
                    mcol += [1] * len(pieces)
        if kind in ("highway", "arterial"):
            for d in (width_px / 2 - 0.4 / res, -width_px / 2 + 0.4 / res):
                ln = _offset(line, d)
                if ln is not None:
                    marks.append(ln)
                    mcol.append(1)
    traffic = float(plan.road_traffic[rank])
    if traffic > 0 and plan.piece_surface[i] != net.DIRT:
        rng = np.random.default_rng([plan.base.seed & 0xFFFFFFFF, 3131, i])
        length_m = line.length * res
        for k in range(lanes):
            off = -width_px / 2 + (k + 0.5) * lane_px
            ln = _offset(line, off)
            if ln is None or ln.length < 2:
                continue
            count = rng.poisson(traffic * length_m / 100.0)
            if not count:
                continue
            big = rng.random(count) < 0.06
            car_len = np.where(big, rng.uniform(8, 12, count), rng.uniform(4.0, 5.0, count)) / res
            car_w = np.where(big, 2.5, rng.uniform(1.7, 1.9, count)) / res
            s = rng.uniform(0, ln.length, count)
            a = shapely.line_interpolate_point(ln, np.clip(s - car_len / 2, 0, ln.length))
            b = shapely.line_interpolate_point(ln, np.clip(s + car_len / 2, 0, ln.length))
            seg = shapely.linestrings(np.stack([shapely.get_coordinates(a),
                                                shapely.get_coordinates(b)], axis=1))
            ok = shapely.length(seg) > 0.5 * car_len
            if not ok.any():
                continue
            polys = shapely.buffer(seg[ok], car_w[ok] / 2, cap_style="flat")
            cars += list(polys)
            ccol += list(1 + rng.integers(0, len(CAR_COLOURS), int(ok.sum())))
        if kind == "grid" and rng.random() < 0.6:  # cars parked along the kerb
            for d in (width_px / 2 - 1.1 / res, -width_px / 2 + 1.1 / res):
                ln = _offset(line, d)
                if ln is None or ln.length < 2:
                    continue
                count = rng.poisson(4.0 * length_m / 100.0)
                s = np.sort(rng.uniform(0, ln.length, count))
                car_len = rng.uniform(4.0, 4.8, count) / res
                a = shapely.line_interpolate_point(ln, np.clip(s - car_len / 2, 0, ln.length))
                b = shapely.line_interpolate_point(ln, np.clip(s + car_len / 2, 0, ln.length))
                if count:
                    seg = shapely.linestrings(np.stack([shapely.get_coordinates(a),
                                                        shapely.get_coordinates(b)], axis=1))
                    cars += list(shapely.buffer(seg, 0.9 / res, cap_style="flat"))
                    ccol += list(1 + rng.integers(0, len(CAR_COLOURS), count))
    return marks, mcol, cars, ccol


# --- lattice objects: parking lots and paved yards --------------------------------------------

@dataclass
class Lots:
    present: np.ndarray  # bool per pixel
    u: np.ndarray  # metres from the lot's left edge, per pixel
    v: np.ndarray  # metres from the lot's top edge
    gx: np.ndarray  # lattice cell of the pixel's lot (int64 per pixel)
    gy: np.ndarray
    tone: np.ndarray  # per pixel, [0, 1)


def rect_lattice(xs: np.ndarray, ys: np.ndarray, cell_m: float, key: int, density: np.ndarray,
                 landuse_of, on_road, size: tuple[float, float], clearance: float) -> Lots:
    """Axis-aligned rectangles, one per lattice cell at most, kept ``clearance`` m off roads."""
    cells = Cells.cover(xs, ys, cell_m)
    cx0, cy0 = cells.centres()
    cx_grid, cy_grid = np.meshgrid(cx0, cy0)
    present = cells.uniform(derive_key(key, 1)) < density[landuse_of(cx_grid, cy_grid)]
    lo, hi = size
    hx = cell_m * (lo + (hi - lo) * cells.uniform(derive_key(key, 2))) / 2
    hy = cell_m * (lo + (hi - lo) * cells.uniform(derive_key(key, 3))) / 2
    cx = cells.gx[None, :] * cell_m + hx + (cell_m - 2 * hx) * cells.uniform(derive_key(key, 4))
    cy = cells.gy[:, None] * cell_m + hy + (cell_m - 2 * hy) * cells.uniform(derive_key(key, 5))
    if present.any():
        idx = np.flatnonzero(present)
        reach = clearance + np.hypot(hx.ravel()[idx], hy.ravel()[idx])
        blocked = on_road(cx.ravel()[idx], cy.ravel()[idx], reach)
        present.ravel()[idx[blocked]] = False
    x0 = np.where(present, cx - hx, FAR)
    y0 = cy - hy
    u = xs[None, :] - cells.per_pixel(x0)
    v = ys[:, None] - cells.per_pixel(y0)
    inside = (u >= 0) & (u < cells.per_pixel(2 * hx)) & (v >= 0) & (v < cells.per_pixel(2 * hy))
    gx = np.broadcast_to(cells.gx[cells.jx][None, :], inside.shape)
    gy = np.broadcast_to(cells.gy[cells.jy][:, None], inside.shape)
    tone = cells.per_pixel(cells.uniform(derive_key(key, 6)))
    return Lots(inside, u.astype(np.float32), v.astype(np.float32), gx, gy, tone)


# --- sensor ------------------------------------------------------------------------------------

def _blockwise(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply the 8x8 transform ``m`` to every 8x8 block of ``a`` (rows and columns); elementwise
    sums in a fixed order, so a block's result does not depend on the array around it."""
    h, w = a.shape
    b = a.reshape(h // 8, 8, w // 8, 8)
    rows = np.zeros_like(b)
    for u in range(8):
        acc = rows[:, u]
        for k in range(8):
            acc += m[u, k] * b[:, k]
    out = np.zeros_like(b)
    for u in range(8):
        acc = out[:, :, :, u]
        for k in range(8):
            acc += m[u, k] * rows[:, :, :, k]
    return out.reshape(h, w)


def _quantise(a: np.ndarray, table: np.ndarray) -> np.ndarray:
    """DCT, quantise, inverse DCT of one channel in 0..255 units."""
    h, w = a.shape
    coef = _blockwise(a - 128.0, _DCT)
    q = np.tile(table, (h // 8, w // 8))
    coef = np.round(coef / q) * q
    return _blockwise(coef, _DCT.T) + 128.0


def jpeg_like(channels: list[np.ndarray], quality: int, rgb: bool) -> list[np.ndarray]:
    """JPEG's lossy step on 16-aligned arrays of reflectance: YCbCr, 2x2 chroma subsampling,
    8x8 DCT quantisation with the standard tables scaled to ``quality``."""
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    ql = np.clip(np.floor((_Q_LUMA * scale + 50) / 100), 1, 255)
    qc = np.clip(np.floor((_Q_CHROMA * scale + 50) / 100), 1, 255)
    out = [c.astype(np.float64) * 255.0 for c in channels]
    if rgb:
        r, g, b = out[:3]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = -0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 0.5 * r - 0.418688 * g - 0.081312 * b
        h, w = y.shape
        y = _quantise(y, ql)
        sub = []
        for c in (cb, cr):
            small = c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) + 128.0
            small = _quantise(small, qc) - 128.0
            sub.append(np.repeat(np.repeat(small, 2, axis=0), 2, axis=1))
        cb, cr = sub
        out[0] = y + 1.402 * cr
        out[1] = y - 0.344136 * cb - 0.714136 * cr
        out[2] = y + 1.772 * cb
        rest = range(3, len(out))
    else:
        rest = range(len(out))
    for k in rest:
        out[k] = _quantise(out[k], ql)
    return [(c / 255.0).astype(np.float32) for c in out]


# --- one window --------------------------------------------------------------------------------

def render_window(plan: RealisticPlan, col0: int, row0: int, width: int,
                  height: int) -> WindowPixels:
    """Image (noise and JPEG included) and mask of one window, snapped to the JPEG grid."""
    return render_on_jpeg_grid(_render, plan, plan.base, col0, row0, width, height)


def render_on_jpeg_grid(render: Callable[[PlanT, int, int, int, int],
                                         tuple[np.ndarray, np.ndarray]],
                        plan: PlanT, base: ScenePlan, col0: int, row0: int, width: int,
                        height: int) -> WindowPixels:
    """``render`` on the window grown to whole JPEG blocks, cropped back: a pixel's JPEG block
    (and so its value) does not depend on where a window starts."""
    a0, b0 = col0 - col0 % JPEG_BLOCK, row0 - row0 % JPEG_BLOCK
    a1 = -(-(col0 + width) // JPEG_BLOCK) * JPEG_BLOCK
    b1 = -(-(row0 + height) // JPEG_BLOCK) * JPEG_BLOCK
    image, mask = render(plan, a0, b0, a1 - a0, b1 - b0)
    crop = (slice(row0 - b0, row0 - b0 + height), slice(col0 - a0, col0 - a0 + width))
    return WindowPixels(np.ascontiguousarray(image[:, crop[0], crop[1]]),
                        np.ascontiguousarray(mask[crop]),
                        window_validity(base, col0, row0, width, height))


def _render(plan: RealisticPlan, col0: int, row0: int, width: int,
            height: int) -> tuple[np.ndarray, np.ndarray]:
    base = plan.base
    pal = plan.palette
    res = base.grid.resolution_m
    halo = plan.halo
    c0, r0 = col0 - halo, row0 - halo
    w, h = width + 2 * halo, height + 2 * halo
    cols, rows = np.arange(c0, c0 + w), np.arange(r0, r0 + h)
    xs, ys = (cols + 0.5) * res, (rows + 0.5) * res
    key = derive_key(scene_key(base.seed), 5000)
    to_px = Affine.translation(c0, r0)
    window_box = shapely.box(c0, r0, c0 + w, r0 + h)
    shape = (h, w)

    # roads: carriageway (the label), verge (sidewalk / ragged dirt edge), inner dirt core
    max_reach = base.max_half_width + float(plan.verge_px.max(initial=0.0)) + 1
    idx = base.road_tree.query(window_box.buffer(max_reach))
    idx.sort()
    road = np.zeros(shape, dtype=np.int32)
    verge = np.zeros(shape, dtype=np.int32)
    dirt_core = np.zeros(shape, dtype=bool)
    marks_img = np.zeros(shape, dtype=np.int32)
    mark_colour = np.zeros(shape, dtype=np.uint8)
    car_id = np.zeros(shape, dtype=np.int32)
    car_table = [0]
    if idx.size:
        lines, half = base.lines[idx], base.half_width[idx]
        ranks = base.road_value[idx]
        road = features.rasterize(zip(shapely.buffer(lines, half, quad_segs=6), ranks,
                                      strict=True),
                                  out_shape=shape, transform=to_px, fill=0, dtype="int32")
        vp = plan.verge_px[idx]
        has_verge = vp > 0
        if has_verge.any():
            verge = features.rasterize(
                zip(shapely.buffer(lines[has_verge], half[has_verge] + vp[has_verge],
                                   quad_segs=4), ranks[has_verge], strict=True),
                out_shape=shape, transform=to_px, fill=0, dtype="int32")
        dirt = (plan.piece_surface[idx] == net.DIRT) & has_verge
        if dirt.any():
            core = np.maximum(half[dirt] - vp[dirt], 0.5)
            dirt_core = features.rasterize(
                shapely.buffer(lines[dirt], core, quad_segs=4), out_shape=shape,
                transform=to_px, fill=0, dtype="uint8").astype(bool)
        marks, mranks, mcols, cars, ccols = [], [], [], [], []
        for i in idx:
            m, mc, c, cc = piece_details(plan, int(i))
            marks += m
            mranks += [int(plan.piece_road[i])] * len(m)
            mcols += mc
            cars += c
            ccols += cc
        if marks:
            mpolys = shapely.buffer(np.array(marks, dtype=object),
                                    max(LINE_M / 2 / res, 0.5), quad_segs=2)
            marks_img = features.rasterize(zip(mpolys, mranks, strict=True), out_shape=shape,
                                           transform=to_px, fill=0, dtype="int32")
            mark_colour = features.rasterize(zip(mpolys, mcols, strict=True), out_shape=shape,
                                             transform=to_px, fill=0, dtype="uint8")
        if cars:
            car_id = features.rasterize(zip(cars, range(1, len(cars) + 1), strict=True),
                                        out_shape=shape, transform=to_px, fill=0,
                                        dtype="int32")
            car_table += ccols
    is_road = road > 0
    # markings only on their own road (not across a wider road crossing it), cars on roads only
    marked = (marks_img > 0) & (marks_img == road)
    car_colour = np.asarray(car_table, dtype=np.int32)[car_id]
    car_colour[~is_road] = 0

    landuse = np.full(shape, net.RURAL, dtype=np.uint8)
    d_idx = base.district_tree.query(window_box)
    if d_idx.size:
        d_idx.sort()
        landuse = features.rasterize(zip(base.districts[d_idx], base.district_landuse[d_idx],
                                         strict=True),
                                     out_shape=shape, transform=to_px, fill=net.RURAL,
                                     dtype="uint8")

    def landuse_of(x_m, y_m):
        return landuse_at(x_m / res, y_m / res, base.district_tree, base.district_landuse,
                          net.RURAL)

    def on_road(x_m, y_m, reach_m):
        return near_road(x_m / res, y_m / res, np.asarray(reach_m) / res, base.road_tree,
                         base.lines, base.half_width, base.max_half_width)

    dens = {name: np.asarray(getattr(pal, name), dtype=np.float32) for name in (
        "tree_density", "street_tree_density", "house_density", "block_density",
        "lot_density", "yard_density")}
    crown = tree_domes(xs, ys, 7.0, derive_key(key, 1), dens["tree_density"],
                       dens["street_tree_density"], landuse_of, on_road)
    np.maximum(crown, tree_domes(xs, ys, 11.0, derive_key(key, 2), dens["tree_density"],
                                 dens["street_tree_density"], landuse_of, on_road), out=crown)
    def fronting(setback_m):
        """Objects stand clear of roads but face a street: not further than the setback."""
        def blocked(x_m, y_m, reach_m):
            return on_road(x_m, y_m, reach_m) | ~on_road(x_m, y_m, np.asarray(reach_m)
                                                       + setback_m)
        return blocked

    houses = buildings(xs, ys, 22.0, derive_key(key, 3), dens["house_density"], landuse_of,
                       fronting(45.0), len(pal.roofs))
    blocks = buildings(xs, ys, 48.0, derive_key(key, 4), dens["block_density"], landuse_of,
                       fronting(60.0), len(pal.flat_roofs))
    lots = rect_lattice(xs, ys, 40.0, derive_key(key, 5), dens["lot_density"], landuse_of,
                        fronting(30.0), (0.5, 0.95), 2.0)
    yards = rect_lattice(xs, ys, 26.0, derive_key(key, 6), dens["yard_density"], landuse_of,
                         fronting(30.0), (0.3, 0.8), 1.0)

    # parking lot layout: rows of 5 m stalls either side of a 6 m aisle, stalls 2.6 m wide
    vm = np.mod(lots.v, np.float32(16.0))
    um = np.mod(lots.u, np.float32(2.6))
    in_row = (vm < 5.0) | (vm >= 11.0)
    line_w = max(LINE_M, res)
    stall_line = lots.present & in_row & (um < line_w) & (lots.v > 0.5)
    stall_x = np.floor(lots.u / np.float32(2.6)).astype(np.int64)
    stall_y = (np.floor(lots.v / np.float32(16.0)).astype(np.int64) * 2 + (vm >= 11.0))
    occupancy = np.float32(0.15) + np.float32(0.8) * lots.tone
    draw = hash_uniform(stall_x + lots.gx * 64, stall_y + lots.gy * 64, derive_key(key, 7))
    in_stall = (np.abs(um - np.float32(1.3)) < 0.88) & \
        (np.abs(np.where(vm < 5.0, vm, vm - np.float32(11.0)) - np.float32(2.5)) < 2.2)
    lot_car = lots.present & in_row & in_stall & (draw < occupancy)
    lot_car_colour = 1 + (hash_uniform(stall_x + lots.gx * 64, stall_y + lots.gy * 64,
                                       derive_key(key, 8)) * len(CAR_COLOURS)).astype(np.int32)
    all_car = np.where(car_colour > 0, car_colour, np.where(lot_car, lot_car_colour, 0))

    # shadows
    tree_edge = fbm(xs, ys, 2.5, derive_key(key, 9), octaves=2)
    tree_alpha = np.clip((crown - np.float32(0.25) * tree_edge) * np.float32(6.0), 0, 1)
    is_roof = (houses.roof > 0) | (blocks.roof > 0)
    tree_alpha[is_roof] = 0.0  # buildings stand taller than the garden trees beside them
    sx, sy = base.building_shadow
    tx, ty = base.tree_shadow
    tall = _shift((blocks.roof > 0).astype(np.float32), 2 * sx, 2 * sy)
    steps = max(3, int(2 * max(abs(sx), abs(sy)) / 3))
    for f in np.linspace(0.0, 2.0, steps + 1)[1:-1]:  # tall blocks cast long shadows: fill
        np.maximum(tall, _shift((blocks.roof > 0).astype(np.float32), round(f * sx),
                                round(f * sy)), out=tall)
    shadow = np.maximum(_shift(tree_alpha, tx, ty),
                        _shift((houses.roof > 0).astype(np.float32), sx, sy))
    np.maximum(shadow, tall, out=shadow)
    cx_s = int(np.sign(sx) * min(abs(sx), max(1, round(0.8 / res))))
    cy_s = int(np.sign(sy) * min(abs(sy), max(1, round(0.8 / res))))
    np.maximum(shadow, np.float32(0.8) * _shift((all_car > 0).astype(np.float32), cx_s, cy_s),
               out=shadow)
    shadow[is_roof] = 0.0
    shade = np.float32(1.0) - np.float32(0.55) * shadow

    veg = stretch(fbm(xs, ys, 120.0, derive_key(key, 10), octaves=3), 0.25, 0.75)
    fields = Cells.cover(xs, ys, 60.0)
    crop = fields.per_pixel(fields.uniform(derive_key(key, 11)))
    furrow_x = np.abs(((xs / 3.0) % 1.0) - 0.5).astype(np.float32)
    furrow_y = np.abs(((ys / 3.0) % 1.0) - 0.5).astype(np.float32)
    furrow = np.where(fields.per_pixel(fields.uniform(derive_key(key, 12))) < 0.5,
                      furrow_x[None, :], furrow_y[:, None])
    crop += np.float32(0.25) * furrow
    mix = np.where(landuse == net.RURAL, crop * np.float32(0.8), veg)
    texture = fbm(xs, ys, 3.0, derive_key(key, 13), octaves=3)
    texture *= np.float32(0.4)
    texture += np.float32(0.8)
    grain = fbm(xs, ys, 1.2, derive_key(key, 14), octaves=2)
    road_tex = np.float32(0.88) + np.float32(0.2) * fbm(xs, ys, 6.0, derive_key(key, 15),
                                                       octaves=3) \
        + np.float32(0.08) * grain
    ragged = fbm(xs, ys, 1.5, derive_key(key, 16), octaves=2) > np.float32(0.5)
    dirt_visible = dirt_core | ((road > 0) | (verge > 0)) & ragged
    dirt_rank = np.where(road > 0, road, verge)
    dirt_ranks = np.zeros(len(plan.road_colour4[0]), dtype=bool)
    dirt_ranks[plan.piece_road[plan.piece_surface == net.DIRT]] = True
    dirt_here = dirt_ranks[dirt_rank] & ((road > 0) | (verge > 0))
    # a dirt road shows where its core or the ragged edge noise says so; the rest is ground
    road_paint = np.where(dirt_here, dirt_visible, is_road)
    sidewalk = (verge > 0) & ~is_road & ~dirt_ranks[verge]

    illum, contrast, haze = atmosphere(xs, ys, derive_key(key, 17))
    illum *= np.float32(0.45)
    illum += np.float32(0.45)  # milder than classic: 0.7..1.05
    haze *= np.float32(plan.haze_amount)
    airlight = np.asarray((0.72, 0.75, 0.80, 0.62), dtype=np.float32)

    ch = plan.internal
    low = np.asarray(pal.ground_low, dtype=np.float32)[:, ch].T
    high = np.asarray(pal.ground_high, dtype=np.float32)[:, ch].T
    roofs = np.asarray(((0, 0, 0, 0),) + pal.roofs, dtype=np.float32)[:, ch].T
    flat = np.asarray(((0, 0, 0, 0),) + pal.flat_roofs, dtype=np.float32)[:, ch].T
    cars_tab = np.asarray(((0, 0, 0, 0),) + CAR_COLOURS, dtype=np.float32)[:, ch].T
    paint = np.asarray((WHITE_PAINT, WHITE_PAINT, YELLOW_PAINT), dtype=np.float32)[:, ch].T
    road_col = plan.road_colour4[ch]
    asphalt_lot = np.asarray(pal.asphalt, dtype=np.float32)[:, ch].T
    concrete = np.asarray(SIDEWALK, dtype=np.float32)[ch]
    tree = np.asarray(pal.tree, dtype=np.float32)[ch]
    tree_light = np.float32(0.5) + np.float32(0.7) * crown * (np.float32(0.7) + np.float32(0.6)
                                                              * tree_edge)
    flat_ridge = np.where(blocks.ridge < 0.88, np.float32(1.12), np.float32(1.0))
    paint_alpha = np.float32(min(1.0, LINE_M / max(LINE_M, res)) * 0.9 + 0.1)
    stall_alpha = np.float32(min(1.0, LINE_M / line_w) * 0.85 + 0.15)
    lot_tone = lots.tone
    yard_tone = np.float32(0.85) + np.float32(0.3) * yards.tone
    crop_core = (slice(halo, halo + height), slice(halo, halo + width))
    rendered = []
    for b in range(len(ch)):
        base_v = low[b][landuse]
        v = base_v + (high[b][landuse] - base_v) * mix
        v *= texture
        np.copyto(v, concrete[b] * yard_tone, where=yards.present)
        lot_v = asphalt_lot[b, 0] + (asphalt_lot[b, 1] - asphalt_lot[b, 0]) * lot_tone
        np.copyto(v, lot_v * road_tex, where=lots.present)
        np.copyto(v, v + (paint[b, 1] - v) * stall_alpha, where=stall_line)
        np.copyto(v, concrete[b] * road_tex, where=sidewalk)
        np.copyto(v, road_col[b][dirt_rank] * (np.float32(0.9) + np.float32(0.2) * grain),
                  where=road_paint & dirt_here)
        np.copyto(v, road_col[b][road] * road_tex, where=is_road & ~dirt_here)
        np.copyto(v, v + (paint[b][mark_colour] - v) * paint_alpha, where=marked)
        np.copyto(v, cars_tab[b][all_car] * (np.float32(0.9) + np.float32(0.2) * grain),
                  where=all_car > 0)
        np.copyto(v, roofs[b][houses.roof] * houses.ridge, where=houses.roof > 0)
        np.copyto(v, flat[b][blocks.roof] * flat_ridge, where=blocks.roof > 0)
        v *= shade
        v += (tree[b] * tree_light - v) * tree_alpha
        v *= illum
        v *= np.float32(1.0) - haze
        v += haze * airlight[ch[b]]
        rendered.append(gaussian_filter(v, plan.blur_sigma, truncate=3.0)[crop_core])
    channels = base.channels[:, ch]
    out = []
    for k in range(len(channels)):
        acc = np.zeros((height, width), dtype=np.float32)
        for j, wgt in enumerate(channels[k]):
            if wgt:
                acc += np.float32(wgt) * rendered[j]
        rows_c, cols_c = np.arange(row0, row0 + height), np.arange(col0, col0 + width)
        acc += np.float32(plan.noise_level) * (
            sensor_noise(base.seed, k, rows_c, cols_c)
            + sensor_noise(base.seed, 100 + k, rows_c, cols_c))
        out.append(acc)
    if plan.jpeg_quality is not None:
        out = jpeg_like(out, plan.jpeg_quality, rgb=len(out) >= 3)
    mask = is_road[crop_core].astype(np.uint8)
    return np.stack(out), mask


