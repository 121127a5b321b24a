"""Vectoriser: cleanup, skeleton graph clean-up in metres, seam joining, attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import shapely
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import from_origin

from roadprn.vectorize import (
    ArraySource,
    VectorizeParams,
    network_frames,
    pixel_scale,
    vectorize_source,
    vectorize_whole,
)
from roadprn.vectorize.cleanup import clean_mask

UTM = CRS.from_epsg(32611)
X0, Y0 = 500000.0, 4000000.0


def draw(lines: list[tuple[shapely.LineString, float]], n: int = 400, res: float = 0.5,
         ) -> ArraySource:
    """Roads as lines buffered by their half width in metres, on a UTM grid."""
    transform = from_origin(X0, Y0, res, res)
    road = rasterize([(line.buffer(half), 1) for line, half in lines], out_shape=(n, n),
                     transform=transform, dtype="uint8").astype(bool)
    return ArraySource(road, transform, UTM)


def line(*xy: tuple[float, float]) -> shapely.LineString:
    """A line in metres relative to the grid's top-left corner (y grows downwards)."""
    return shapely.LineString([(X0 + x, Y0 - y) for x, y in xy])


def roads_of(src: ArraySource, params: VectorizeParams | None = None, tiled: bool = False):
    params = params or VectorizeParams()
    net = vectorize_source(src, params) if tiled else vectorize_whole(src, params)
    return network_frames(net, src.transform, src.crs, "t")


def synthetic_network(n: int, res: float, seed: int) -> ArraySource:
    """Grid roads of random widths, a diagonal, an arc and a dead end inside the scene."""
    rng = np.random.default_rng(seed)
    size = n * res
    lines = []
    for k in (1, 2, 3):
        y, x = size * k / 4 + rng.uniform(-15, 15), size * k / 4 + rng.uniform(-15, 15)
        lines.append((line((-5, y), (size + 5, y)), rng.uniform(2, 5)))
        lines.append((line((x, -5), (x, size + 5)), rng.uniform(2, 5)))
    lines.append((line((10, 10), (size - 30, size - 40)), 3.0))
    t = np.linspace(0, np.pi, 60)
    arc = np.c_[size * 0.6 + size * 0.3 * np.cos(t), size * 0.55 - size * 0.3 * np.sin(t)]
    lines.append((line(*map(tuple, arc)), 2.5))
    lines.append((line((size * 0.1, size * 0.9), (size * 0.2, size * 0.85)), 2.0))
    return draw(lines, n=n, res=res)


def test_pixel_scale_is_not_square_on_epsg4326() -> None:
    transform = from_origin(-115.2338076, 36.1423377, 2.7e-6, 2.7e-6)
    scale = pixel_scale(transform, CRS.from_epsg(4326), (1300, 1300))
    geod = Geod(ellps="WGS84")
    lat = 36.1423377 - 650 * 2.7e-6
    assert scale.dx_m == pytest.approx(geod.inv(0, lat, 2.7e-6, lat)[2], rel=1e-6)
    assert scale.dx_m == pytest.approx(0.243, abs=0.002)
    assert scale.dy_m == pytest.approx(0.2997, abs=0.002)
    utm = pixel_scale(from_origin(X0, Y0, 0.5, 0.5), UTM, (10, 10))
    assert (utm.dx_m, utm.dy_m) == (0.5, 0.5)


def test_cleanup_uses_areas_and_keeps_what_touches_the_window_edge() -> None:
    road = np.zeros((60, 60), bool)
    road[10:13, 10:13] = True  # 9 px blob: removed
    road[30:50, 30:50] = True  # 400 px block with a 4 px hole and a 25 px hole
    road[35:37, 35:37] = False
    road[40:45, 40:45] = False
    road[0:2, 50:53] = True  # 6 px blob on the window edge: kept (may continue outside)
    out = clean_mask(road, min_area_px=20, min_hole_px=10)
    assert not out[10:13, 10:13].any()
    assert out[35:37, 35:37].all() and not out[40:45, 40:45].any()
    assert out[0:2, 50:53].all()


def test_tiled_and_whole_scene_agree_and_no_line_ends_at_a_seam() -> None:
    src = synthetic_network(n=1024, res=0.5, seed=3)
    tile = 200
    roads_w, junc_w = roads_of(src)
    roads_t, junc_t = roads_of(src, VectorizeParams(tile_size_px=tile), tiled=True)
    assert roads_t.length_m.sum() == pytest.approx(roads_w.length_m.sum(), rel=0.01)
    assert (junc_t.degree >= 3).sum() == (junc_w.degree >= 3).sum() >= 9
    # dead ends (endpoints used once) away from the scene border never sit on a seam
    inv = ~src.transform
    ends: dict[tuple[float, float], int] = {}
    for geom in roads_t.geometry:
        for x, y in (geom.coords[0], geom.coords[-1]):
            key = (round(x, 6), round(y, 6))
            ends[key] = ends.get(key, 0) + 1
    n = src.shape[0]
    dead = [inv * key for key, count in ends.items() if count == 1]
    inner = [(c, r) for c, r in dead if 12 < c < n - 12 and 12 < r < n - 12]
    assert len(inner) == 6  # diagonal, arc and the inner dead-end road: 2 ends each
    for c, r in inner:
        assert min(c % tile, tile - c % tile, r % tile, tile - r % tile) > 3


def test_lines_follow_roads_with_width_and_are_valid_linestrings() -> None:
    src = draw([(line((0, 100), (200, 100)), 3.0), (line((100, 0), (100, 100)), 2.0)])
    roads, junctions = roads_of(src)
    assert set(roads.geom_type) == {"LineString"}
    assert roads.is_valid.all() and not roads.is_empty.any()
    assert list(junctions.degree) == [3]
    assert roads.length_m.sum() == pytest.approx(300, rel=0.03)
    wide = roads[roads.length_m > 90].sort_values("width_m")
    assert wide.width_m.iloc[-1] == pytest.approx(6.0, abs=0.5)
    truth = shapely.union_all([line((0, 100), (200, 100)), line((100, 0), (100, 100))])
    assert shapely.hausdorff_distance(shapely.union_all(roads.geometry.values), truth) < 3.5
    assert roads.prob_mean.isna().all()  # a mask carries no probability


def test_short_spurs_pruned_long_branches_kept() -> None:
    main = (line((0, 100), (200, 100)), 3.0)
    short = draw([main, (line((60, 100), (60, 107)), 1.5)])  # 4 m beyond the road edge
    long = draw([main, (line((60, 100), (60, 150)), 1.5)])
    roads_short, junc_short = roads_of(short)
    roads_long, junc_long = roads_of(long)
    assert len(roads_short) == 1 and len(junc_short) == 0
    assert len(roads_long) == 3 and list(junc_long.degree) == [3]


def test_wide_crossing_is_one_junction_of_degree_four() -> None:
    src = draw([(line((0, 100), (200, 100)), 6.0), (line((100, 0), (100, 200)), 6.0)])
    roads, junctions = roads_of(src, VectorizeParams(spur_length_m=0.0))
    assert list(junctions.degree) == [4]
    assert len(roads) == 4


@pytest.mark.parametrize("gap_m,bridge,expect", [(6.0, 12.0, 1), (6.0, 0.0, 2), (20.0, 12.0, 2)])
def test_gap_bridging_has_a_length_limit(gap_m: float, bridge: float, expect: int) -> None:
    left = line((0, 100), (95 - gap_m / 2, 100))
    right = line((95 + gap_m / 2, 100), (200, 100))
    src = draw([(left, 2.0), (right, 2.0)])
    roads, _ = roads_of(src, VectorizeParams(bridge_max_gap_m=bridge))
    assert len(roads) == expect


def test_gap_bridging_needs_ends_facing_each_other() -> None:
    # two dead ends 5 m apart but side by side (parallel offset), not facing: no bridge
    src = draw([(line((0, 100), (100, 100)), 1.5), (line((100, 105), (200, 105)), 1.5)])
    p = VectorizeParams(bridge_max_gap_m=12.0, bridge_max_angle_deg=30)
    roads, _ = roads_of(src, p)
    assert len(roads) == 2


def test_simplification_in_metres_keeps_straight_roads_few_vertices() -> None:
    diagonal = line((5, 5), (190, 140))
    roads, _ = roads_of(draw([(diagonal, 2.5)]))
    assert len(roads) == 1
    geom = roads.geometry.iloc[0]
    assert len(geom.coords) <= 4
    assert shapely.hausdorff_distance(geom, diagonal) < 3.0


def test_probability_mean_is_sampled_along_the_line() -> None:
    src = draw([(line((0, 100), (200, 100)), 3.0)])
    prob = np.where(src.road, 0.8, 0.1).astype(np.float32)
    net = vectorize_whole(ArraySource(src.road, src.transform, UTM, prob=prob),
                          VectorizeParams())
    roads, _ = network_frames(net, src.transform, UTM, "p")
    assert roads.prob_mean.iloc[0] == pytest.approx(0.8, abs=0.01)


def test_degenerate_masks_do_not_crash() -> None:
    empty = ArraySource(np.zeros((50, 50), bool), from_origin(X0, Y0, 1, 1), UTM)
    roads, junctions = roads_of(empty)
    assert len(roads) == 0 and len(junctions) == 0
    full = ArraySource(np.ones((300, 300), bool), from_origin(X0, Y0, 1, 1), UTM)
    for tiled in (False, True):
        roads, _ = roads_of(full, VectorizeParams(tile_size_px=128), tiled=tiled)
        assert roads.is_valid.all() and not roads.is_empty.any()
    dot = np.zeros((50, 50), bool)
    dot[20, 20] = True
    roads, _ = roads_of(ArraySource(dot, from_origin(X0, Y0, 1, 1), UTM))
    assert len(roads) == 0
    thin = np.zeros((50, 50), bool)
    thin[25, 5:45] = True  # a one-pixel-wide road, 40 m long
    roads, _ = roads_of(ArraySource(thin, from_origin(X0, Y0, 1, 1), UTM))
    assert len(roads) == 1 and roads.length_m.iloc[0] == pytest.approx(39, abs=1.5)


def test_lengths_are_geodesic_on_epsg4326() -> None:
    res = 2.7e-6
    transform = from_origin(-115.2338, 36.1423, res, res)
    road = np.zeros((600, 600), bool)
    road[295:305, 20:580] = True
    src = ArraySource(road, transform, CRS.from_epsg(4326))
    roads, _ = roads_of(src)
    lon0, lon1 = transform * (20.5, 300)
    lon_end = transform * (579.5, 300)
    expected = Geod(ellps="WGS84").inv(lon0, lon1, lon_end[0], lon_end[1])[2]
    assert roads.length_m.sum() == pytest.approx(expected, rel=0.03)
    assert roads.width_m.iloc[0] == pytest.approx(10 * 0.2997, rel=0.1)
    assert roads.crs.to_epsg() == 4326


def test_simplification_never_makes_roads_meet_that_did_not() -> None:
    """A bent road simplified alone at 2 m would run through a road ending 1 m from its bend."""
    from roadprn.vectorize.graph import simplify_without_new_contacts

    a = shapely.LineString([(0, 0), (20, 1.5), (40, 0)])
    b = shapely.LineString([(20, 0.5), (20, -5)])
    far = shapely.LineString(np.c_[np.linspace(0, 40, 81), 50 + 0.1 * np.sin(np.arange(81))])
    assert not a.intersects(b)
    assert shapely.simplify(a, 2.0).crosses(b)  # what must not happen
    out = simplify_without_new_contacts([a, b, far], 2.0)
    assert not out[0].intersects(out[1])
    assert all(shapely.is_valid(out))
    assert len(shapely.get_coordinates(out[2])) == 2  # lines with room are still simplified
    assert out[0].hausdorff_distance(a) <= 2.0 + 1e-9


def test_boolean_shift_morphology_equals_scipy() -> None:
    from scipy import ndimage

    from roadprn.vectorize.skeleton import dilate8

    rng = np.random.default_rng(3)
    mask = rng.random((57, 91)) < 0.05
    eight = np.ones((3, 3), bool)
    assert np.array_equal(dilate8(mask), ndimage.binary_dilation(mask, structure=eight))


def test_thread_count_defaults_to_cores_and_respects_a_request() -> None:
    from roadprn.runtime.parallel import available_cores, local_thread_count

    assert local_thread_count(3) == 3
    assert local_thread_count(None) == max(1, min(8, available_cores()))


@pytest.mark.parametrize(("shape", "block"), [((1000, 3000), (256, 256)), ((70, 5000), (1, 5000)),
                                              ((513, 17), (512, 512)), ((1, 1), (1, 1)),
                                              ((3000, 2000), (3000, 2000))])
def test_scan_windows_cover_the_raster_once_on_block_edges(shape: tuple[int, int],
                                                           block: tuple[int, int]) -> None:
    from roadprn.vectorize.source import SCAN_PIXELS, scan_windows

    seen = np.zeros(shape, np.uint8)
    for w in scan_windows(*shape, block):
        if block[0] * block[1] <= SCAN_PIXELS:
            assert w.row_off % block[0] == 0 and w.col_off % block[1] == 0
        assert w.height * w.width <= max(SCAN_PIXELS, 64 * block[0] * block[1])
        seen[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    assert (seen == 1).all()


def test_heap_helpers_are_safe_and_user_malloc_settings_win(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from roadprn.runtime import memory

    on_glibc = memory._glibc() is not None
    assert memory.release_free_memory() is on_glibc
    assert on_glibc is sys.platform.startswith("linux")  # CI and the Docker image are glibc
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    with memory.bounded_heap() as applied:
        assert applied is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    with memory.bounded_heap() as applied:
        assert applied is on_glibc


def test_progress_bar_counts_every_tile(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from functools import partialmethod

    import tqdm

    # draw every update (tqdm otherwise redraws at most every 0.1 s)
    monkeypatch.setattr(tqdm.tqdm, "__init__", partialmethod(tqdm.tqdm.__init__, mininterval=0))
    src = synthetic_network(n=400, res=0.5, seed=1)
    quiet = vectorize_source(src, VectorizeParams(tile_size_px=100), workers=2)
    shown = vectorize_source(src, VectorizeParams(tile_size_px=100), workers=2, progress=True)
    err = capsys.readouterr().err
    assert "array vectorize" in err and "16/16" in err
    assert len(shown.lines) == len(quiet.lines)
    vectorize_source(src, VectorizeParams(tile_size_px=100), workers=2)
    assert capsys.readouterr().err == ""


_READS: list[tuple[int, int]] = []


@dataclass(frozen=True)
class _RecordingSource:
    """Records the window sizes read (module-level: Dask may copy task arguments)."""

    inner: Any
    shape: tuple[int, int]
    transform: Any
    crs: Any
    name: str

    def read(self, row: int, col: int, height: int, width: int) -> Any:
        _READS.append((height, width))
        return self.inner.read(row, col, height, width)


def test_tiles_read_only_their_window(tmp_path) -> None:
    """Memory is bounded by the tile: no read is larger than a tile plus its halo."""
    import rasterio

    from roadprn.vectorize import open_source
    from roadprn.vectorize.tiled import halo_pixels

    src = synthetic_network(n=1024, res=0.5, seed=5)
    path = tmp_path / "mask.tif"
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=1,
                       dtype="uint8", crs=src.crs, transform=src.transform) as ds:
        ds.write(src.road.astype("uint8"), 1)
    file_source = open_source(path, 0.5)
    recording = _RecordingSource(file_source, file_source.shape, file_source.transform,
                                 file_source.crs, file_source.name)
    params = VectorizeParams(tile_size_px=256)
    _READS.clear()
    tiled = vectorize_source(recording, params, workers=2)
    halo = halo_pixels(params, pixel_scale(src.transform, src.crs, src.shape, "t"))
    assert len(_READS) == 16
    assert max(h * w for h, w in _READS) <= (256 + 2 * halo) ** 2
    assert len(tiled.lines) == len(vectorize_source(src, params, workers=1).lines) > 10
