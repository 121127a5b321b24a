"""Render one window of a synthetic scene: textures, roads, buildings, trees, shadows, and
the spatially varying illumination, contrast and haze that give a model patch-wise bias.

Everything is computed on the window plus a halo (for the optical blur and the shadow offset)
from fields that are functions of absolute position, then the halo is cropped: a pixel's value
does not depend on the window it was rendered in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy.ndimage import gaussian_filter
from shapely import STRtree

from roadprn.synth import network as net
from roadprn.synth.grid import SynthGrid
from roadprn.synth.lattice import Cells, buildings, landuse_at, near_road, tree_domes
from roadprn.synth.noise import derive_key, fbm, hash_uniform, stretch

# Reflectance (R, G, B, NIR) of the scene's materials.
ASPHALT = (0.13, 0.13, 0.14, 0.16)
CONCRETE = (0.42, 0.41, 0.39, 0.42)
DIRT = (0.48, 0.40, 0.31, 0.45)
SURFACE_COLOURS = (ASPHALT, CONCRETE, DIRT)
TREE = (0.06, 0.15, 0.05, 0.55)
ROOFS = ((0.55, 0.25, 0.18, 0.35), (0.36, 0.36, 0.37, 0.33), (0.62, 0.62, 0.60, 0.58),
         (0.22, 0.22, 0.24, 0.22), (0.48, 0.42, 0.36, 0.40))
AIRLIGHT = (0.72, 0.75, 0.80, 0.62)
MARKING = (0.80, 0.80, 0.76, 0.75)
MARKING_WIDTH_M, DASH_M, DASH_PERIOD_M = 0.15, 3.0, 12.0
# ground colour range per land use (index = land-use code; 0 unused), mixed by a noise field
GROUND_LOW = ((0, 0, 0, 0), (0.30, 0.30, 0.29, 0.30), (0.16, 0.27, 0.11, 0.50),
              (0.40, 0.32, 0.24, 0.38), (0.10, 0.16, 0.08, 0.35))
GROUND_HIGH = ((0, 0, 0, 0), (0.20, 0.28, 0.14, 0.45), (0.30, 0.33, 0.18, 0.42),
               (0.20, 0.36, 0.12, 0.62), (0.16, 0.22, 0.10, 0.40))
TREE_DENSITY = np.array([0.0, 0.08, 0.35, 0.12, 0.9], dtype=np.float32)
STREET_TREE_DENSITY = np.array([0.0, 0.3, 0.35, 0.1, 0.0], dtype=np.float32)
BUILDING_DENSITY = np.array([0.0, 0.8, 0.35, 0.03, 0.0], dtype=np.float32)

PAN_WEIGHTS = (0.25, 0.35, 0.15, 0.25)
CHANNELS = {1: np.array([PAN_WEIGHTS]), 3: np.eye(4)[:3], 4: np.eye(4)}

SEGMENT_PX = 256.0  # road pieces are cut to this length so a window only touches a few
BLUR_SIGMA_PX = 0.6  # optical blur of the sensor


@dataclass
class ScenePlan:
    """Everything a window needs, prepared once per scene (vector data, colour tables)."""

    grid: SynthGrid
    seed: int
    channels: np.ndarray  # (bands, 4) weights of R, G, B, NIR
    lines: np.ndarray  # road pieces in pixel coordinates, in drawing order
    half_width: np.ndarray  # pixels
    road_value: np.ndarray  # int32 colour-table index of each piece
    road_tree: STRtree
    road_colour: np.ndarray  # (bands, n_roads + 1)
    districts: np.ndarray  # polygons in pixel coordinates
    district_landuse: np.ndarray
    district_tree: STRtree
    markings: np.ndarray  # lane-marking lines in pixel coordinates
    marking_tree: STRtree
    marking_half_width: float  # pixels; drawn at least one pixel wide ...
    marking_alpha: float  # ... so blended by the true width's share of that
    valid_area: shapely.Polygon | None  # pixel coordinates; None = no nodata border
    nodata_holes: bool
    tree_shadow: tuple[int, int]  # (dx, dy) pixels
    building_shadow: tuple[int, int]
    halo: int

    @property
    def max_half_width(self) -> float:
        return float(self.half_width.max()) if self.half_width.size else 0.0

    def colours(self, table) -> np.ndarray:
        """(bands, len(table)) float32 colours of a reflectance table in this scene's bands."""
        return (self.channels @ np.asarray(table, dtype=np.float64).T).astype(np.float32)


def _split(line: shapely.LineString, max_len: float) -> list[np.ndarray]:
    coords = shapely.get_coordinates(shapely.segmentize(line, max_len / 8.0))
    step = 8
    return [coords[i:i + step + 1] for i in range(0, len(coords) - 1, step)]


def _dashes(line: shapely.LineString, offset: float, dash: float, period: float) -> list:
    if offset:
        line = shapely.offset_curve(line, offset)
        if line.is_empty or line.geom_type != "LineString":
            return []
    starts = np.arange(0.0, line.length - dash, period)
    if not starts.size:
        return []
    a = shapely.get_coordinates(shapely.line_interpolate_point(line, starts))
    b = shapely.get_coordinates(shapely.line_interpolate_point(line, starts + dash))
    return list(shapely.linestrings(np.stack([a, b], axis=1)))


def _lane_markings(line_px: shapely.LineString, width_px: float, kind: str,
                   res: float) -> list:
    """Dashed lane dividers: arterials in the centre; highways two lanes each way, solid middle."""
    dash, period = DASH_M / res, DASH_PERIOD_M / res
    if kind == "arterial":
        return _dashes(line_px, 0.0, dash, period)
    if kind == "highway":
        solid = [shapely.linestrings(c) for c in _split(line_px, SEGMENT_PX)]
        return solid + _dashes(line_px, width_px / 4, dash, period) + \
            _dashes(line_px, -width_px / 4, dash, period)
    return []


def plan_scene(grid: SynthGrid, network: net.SynthNetwork, seed: int, bands: int,
               nodata_border: bool = False, nodata_holes: bool = False) -> ScenePlan:
    res = grid.resolution_m
    channels = CHANNELS[bands]
    order = sorted(range(len(network.roads)), key=lambda k: (network.roads[k].width_m, k))
    pieces, half, value, marks = [], [], [], []
    colour = np.zeros((4, len(order) + 1))
    for rank, k in enumerate(order, start=1):
        road = network.roads[k]
        colour[:, rank] = np.asarray(SURFACE_COLOURS[road.surface]) * road.tone
        line_px = shapely.transform(road.line, lambda c: c / res)
        for chunk in _split(line_px, SEGMENT_PX):
            pieces.append(shapely.linestrings(chunk))
            half.append(road.width_m / 2.0 / res)
            value.append(rank)
        marks += _lane_markings(line_px, road.width_m / res, road.kind, res)
    lines = np.array(pieces, dtype=object)
    markings = np.array(marks, dtype=object)
    marking_half_width = max(MARKING_WIDTH_M / 2.0 / res, 0.5)
    districts = np.array([shapely.transform(d.polygon, lambda c: c / res)
                          for d in network.districts], dtype=object)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 77])
    sun = rng.uniform(0, 2 * math.pi)
    # shadow offsets set the halo, so they are capped in pixels for very fine resolutions
    tree_len, building_len = min(2.5 / res, 20.0), min(5.0 / res, 40.0)
    tree_shadow = (round(tree_len * math.cos(sun)), round(tree_len * math.sin(sun)))
    building_shadow = (round(building_len * math.cos(sun)), round(building_len * math.sin(sun)))
    halo = 3 + max(abs(v) for v in building_shadow + tree_shadow)
    valid = None
    if nodata_border:
        w, h = grid.width, grid.height
        inset = rng.uniform(0.02, 0.12, 4) * np.array([w, h, w, h])
        valid = shapely.Polygon([(inset[0], 0), (w, inset[1]), (w - inset[2], h),
                                 (0, h - inset[3])])
    return ScenePlan(
        grid=grid, seed=seed, channels=channels, lines=lines,
        half_width=np.array(half, dtype=np.float64), road_value=np.array(value, dtype=np.int32),
        road_tree=STRtree(lines), road_colour=(channels @ colour).astype(np.float32),
        districts=districts,
        district_landuse=np.array([d.landuse for d in network.districts], dtype=np.uint8),
        district_tree=STRtree(districts), markings=markings, marking_tree=STRtree(markings),
        marking_half_width=marking_half_width,
        marking_alpha=min(1.0, MARKING_WIDTH_M / (2.0 * marking_half_width * res)),
        valid_area=valid, nodata_holes=nodata_holes,
        tree_shadow=tree_shadow, building_shadow=building_shadow, halo=halo)


def _shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """out[r, c] = a[r - dy, c - dx], zero where that falls outside."""
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        a[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


@dataclass
class WindowPixels:
    image: np.ndarray  # (bands, h, w) float32 reflectance
    mask: np.ndarray  # (h, w) uint8 {0, 1}
    valid: np.ndarray | None  # (h, w) bool, None = all valid


def render_window(plan: ScenePlan, col0: int, row0: int, width: int, height: int) -> WindowPixels:
    res = plan.grid.resolution_m
    halo = plan.halo
    c0, r0 = col0 - halo, row0 - halo
    w, h = width + 2 * halo, height + 2 * halo
    cols = np.arange(c0, c0 + w)
    rows = np.arange(r0, r0 + h)
    xs = (cols + 0.5) * res  # pixel centres, metres
    ys = (rows + 0.5) * res
    key = scene_key(plan.seed)
    to_px = Affine.translation(c0, r0)

    # roads: one colour-table index per pixel, wider roads drawn last (on top)
    idx = plan.road_tree.query(shapely.box(c0, r0, c0 + w, r0 + h).buffer(plan.max_half_width + 1))
    idx.sort()
    road = np.zeros((h, w), dtype=np.int32)
    if idx.size:
        polys = shapely.buffer(plan.lines[idx], plan.half_width[idx], quad_segs=6)
        road = features.rasterize(zip(polys, plan.road_value[idx], strict=True), out_shape=(h, w),
                                  transform=to_px, fill=0, dtype="int32")

    marked = np.zeros((h, w), dtype=bool)
    m_idx = plan.marking_tree.query(shapely.box(c0, r0, c0 + w, r0 + h).buffer(2.0))
    if m_idx.size:
        m_idx.sort()
        polys = shapely.buffer(plan.markings[m_idx], plan.marking_half_width, quad_segs=2)
        marked = features.rasterize(polys, out_shape=(h, w), transform=to_px, fill=0,
                                    dtype="uint8").astype(bool)

    landuse = np.full((h, w), net.RURAL, dtype=np.uint8)
    d_idx = plan.district_tree.query(shapely.box(c0, r0, c0 + w, r0 + h))
    if d_idx.size:
        d_idx.sort()
        shapes = zip(plan.districts[d_idx], plan.district_landuse[d_idx], strict=True)
        landuse = features.rasterize(shapes, out_shape=(h, w), transform=to_px, fill=net.RURAL,
                                     dtype="uint8")

    def landuse_of(x_m, y_m):
        return landuse_at(x_m / res, y_m / res, plan.district_tree, plan.district_landuse,
                          net.RURAL)

    def on_road(x_m, y_m, reach_m):
        return near_road(x_m / res, y_m / res, np.asarray(reach_m) / res, plan.road_tree,
                         plan.lines, plan.half_width, plan.max_half_width)

    # trees (two overlapping lattices) and buildings, with their shadows
    crown = tree_domes(xs, ys, 7.0, derive_key(key, 1), TREE_DENSITY, STREET_TREE_DENSITY,
                       landuse_of, on_road)
    np.maximum(crown, tree_domes(xs, ys, 10.5, derive_key(key, 2), TREE_DENSITY,
                                 STREET_TREE_DENSITY, landuse_of, on_road), out=crown)
    houses = buildings(xs, ys, 24.0, derive_key(key, 3), BUILDING_DENSITY, landuse_of, on_road,
                       len(ROOFS))
    tree_alpha = np.minimum(crown * np.float32(5.0), np.float32(1.0))
    shadow = np.maximum(_shift(tree_alpha, *plan.tree_shadow),
                        _shift((houses.roof > 0).astype(np.float32), *plan.building_shadow))
    shadow[houses.roof > 0] = 0.0
    shade = np.float32(1.0) - np.float32(0.5) * shadow
    tree_light = np.float32(0.55) + np.float32(0.6) * crown

    # ground: noise-mixed colours per land use; rural land is a patchwork of ploughed fields
    veg = stretch(fbm(xs, ys, 150.0, derive_key(key, 4), octaves=2), 0.3, 0.7)
    fields = Cells.cover(xs, ys, 55.0)
    crop = fields.per_pixel(fields.uniform(derive_key(key, 5)))
    furrow_x = np.abs(((xs / 3.0) % 1.0) - 0.5).astype(np.float32)
    furrow_y = np.abs(((ys / 3.0) % 1.0) - 0.5).astype(np.float32)
    furrow = np.where(fields.per_pixel(fields.uniform(derive_key(key, 6))) < 0.5,
                      furrow_x[None, :], furrow_y[:, None])
    crop += np.float32(0.3) * furrow
    mix = np.where(landuse == net.RURAL, crop * np.float32(0.8), veg)
    texture = fbm(xs, ys, 4.0, derive_key(key, 7), octaves=3)
    texture *= np.float32(0.5)
    texture += np.float32(0.75)

    illum, contrast, haze = atmosphere(xs, ys, key)
    # v -> (mean + (v - mean) * contrast) * illum * (1 - haze) + haze * airlight
    gain = illum * (np.float32(1.0) - haze)
    mean_part = (np.float32(1.0) - contrast) * gain
    gain *= contrast

    low, high = plan.colours(GROUND_LOW), plan.colours(GROUND_HIGH)
    roofs = plan.colours(((0, 0, 0, 0),) + ROOFS)
    tree_colour = plan.colours((TREE,))[:, 0]
    marking = plan.colours((MARKING,))[:, 0]
    airlight = plan.colours((AIRLIGHT,))[:, 0]
    mean_level = plan.colours(((0.3, 0.3, 0.3, 0.35),))[:, 0]
    is_road = road > 0
    is_roof = houses.roof > 0
    crop_window = (slice(halo, halo + height), slice(halo, halo + width))
    image = np.empty((len(plan.channels), height, width), dtype=np.float32)
    for b in range(len(plan.channels)):
        base = low[b][landuse]
        v = base + (high[b][landuse] - base) * mix
        np.copyto(v, plan.road_colour[b][road], where=is_road)
        np.copyto(v, v + (marking[b] - v) * np.float32(plan.marking_alpha), where=marked)
        np.copyto(v, roofs[b][houses.roof] * houses.ridge, where=is_roof)
        v *= texture
        v *= shade
        v += (tree_colour[b] * tree_light - v) * tree_alpha
        v *= gain
        v += mean_part * mean_level[b] + haze * airlight[b]
        image[b] = gaussian_filter(v, BLUR_SIGMA_PX, truncate=3.0)[crop_window]

    mask = is_road[crop_window].astype(np.uint8)
    return WindowPixels(image, mask, window_validity(plan, col0, row0, width, height))


def window_validity(plan: ScenePlan, col0: int, row0: int, width: int,
                    height: int) -> np.ndarray | None:
    """Valid pixels of a window (nodata border and holes), the same in every style; None = all."""
    if plan.valid_area is None and not plan.nodata_holes:
        return None
    valid = np.ones((height, width), dtype=bool)
    if plan.valid_area is not None:
        valid &= features.geometry_mask([plan.valid_area], out_shape=(height, width),
                                        transform=Affine.translation(col0, row0), invert=True)
    if plan.nodata_holes:
        res = plan.grid.resolution_m
        xs = (np.arange(col0, col0 + width) + 0.5) * res
        ys = (np.arange(row0, row0 + height) + 0.5) * res
        holes = fbm(xs, ys, 300.0, derive_key(scene_key(plan.seed), 11), octaves=2)
        valid &= holes < np.float32(0.72)
    return valid


def scene_key(seed: int) -> int:
    """Root key of all per-pixel random fields of a scene."""
    return derive_key(seed, 1000)


def atmosphere(xs: np.ndarray, ys: np.ndarray, key: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Illumination (0.55..1.3), contrast (0.35..1) and haze (0..0.55) on the grid ys × xs.

    Slow fields (hundreds of metres), so one road is crisp here and faint there: the
    patch-wise bias that PatchRefineNet's per-patch thresholds correct.
    """
    illum = stretch(fbm(xs, ys, 500.0, derive_key(key, 8), octaves=2), 0.25, 0.75)
    illum *= np.float32(0.75)
    illum += np.float32(0.55)
    contrast = stretch(fbm(xs, ys, 350.0, derive_key(key, 9), octaves=2), 0.25, 0.75)
    contrast *= np.float32(0.65)
    contrast += np.float32(0.35)
    haze = stretch(fbm(xs, ys, 800.0, derive_key(key, 10), octaves=2), 0.4, 0.8)
    haze *= np.float32(0.55)
    return illum, contrast, haze


def sensor_noise(seed: int, band: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Per-pixel noise in [-0.5, 0.5) from a fixed 251×257 tile (cheap, position-keyed)."""
    tile = hash_uniform(np.arange(257)[None, :], np.arange(251)[:, None],
                        derive_key(seed, 2000, band)) - np.float32(0.5)
    return tile[(rows % 251)[:, None], (cols % 257)[None, :]]
