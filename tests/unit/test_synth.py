"""Synthetic scenes: determinism, window independence, georeferencing, ground truth."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Geod
from rasterio import features
from scipy import stats

from roadprn.errors import ConfigError, OutputError
from roadprn.synth import build_network, generate_scene, make_grid
from roadprn.synth import scene as scene_module
from roadprn.synth.network import WIDTH_RANGE_M
from roadprn.synth.noise import fbm, value_noise
from roadprn.synth.render import atmosphere, scene_key


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile


def _scene(tmp_path, name="s.tif", **kwargs):
    options = {"width": 320, "height": 256, "seed": 3, "overviews": False}
    options.update(kwargs)
    return generate_scene(tmp_path / name, **options)


# --- random fields ---------------------------------------------------------------------------

def test_value_noise_is_a_function_of_position_not_of_the_window():
    xs, ys = np.arange(0, 600) * 0.5 + 0.25, np.arange(0, 400) * 0.5 + 0.25
    whole = fbm(xs, ys, 37.0, key=99, octaves=4)
    part = fbm(xs[123:456], ys[77:301], 37.0, key=99, octaves=4)
    assert np.array_equal(whole[77:301, 123:456], part)
    assert 0.0 <= whole.min() and whole.max() < 1.0
    assert whole.std() > 0.05


def test_value_noise_changes_with_key_and_is_smooth_at_its_scale():
    xs = ys = np.arange(0, 200, 1.0)
    a, b = value_noise(xs, ys, 50.0, 1), value_noise(xs, ys, 50.0, 2)
    assert not np.allclose(a, b)
    assert np.abs(np.diff(a, axis=1)).max() < 0.1  # neighbours 1 m apart on a 50 m field


def test_illumination_contrast_and_haze_vary_over_hundreds_of_metres():
    xs = ys = np.arange(0, 4000, 20.0)
    illum, contrast, haze = atmosphere(xs, ys, scene_key(1))
    for field, spread in ((illum, 0.4), (contrast, 0.3), (haze, 0.2)):
        assert np.percentile(field, 95) - np.percentile(field, 5) > spread
        # low frequency: neighbours 20 m apart differ by a small share of the range
        assert np.abs(np.diff(field, axis=0)).mean() < 0.05 * np.ptp(field)
    assert illum.min() >= 0.55 - 1e-6 and illum.max() <= 1.3 + 1e-6


# --- network ---------------------------------------------------------------------------------

def test_network_has_junctions_dead_ends_curves_and_widths_in_range():
    net = build_network(3000.0, 3000.0, seed=5)
    kinds = {r.kind for r in net.roads}
    assert {"arterial", "grid"} <= kinds and kinds & {"curved", "track", "dead_end"}
    for road in net.roads:
        lo, hi = WIDTH_RANGE_M[road.kind]
        assert lo <= road.width_m <= hi
        assert road.line.within(shapely.box(-1e-6, -1e-6, 3000 + 1e-6, 3000 + 1e-6))
    assert net.length_m > 20_000
    again = build_network(3000.0, 3000.0, seed=5)
    assert [r.line.wkb for r in again.roads] == [r.line.wkb for r in net.roads]


# --- whole scenes ----------------------------------------------------------------------------

def test_same_seed_same_scene_other_seed_other_scene(tmp_path):
    a = _scene(tmp_path, "a.tif")
    b = _scene(tmp_path, "b.tif")
    c = _scene(tmp_path, "c.tif", seed=4)
    img_a, _ = _read(a.image_path)
    assert np.array_equal(img_a, _read(b.image_path)[0])
    assert np.array_equal(_read(a.mask_path)[0], _read(b.mask_path)[0])
    assert not np.array_equal(img_a, _read(c.image_path)[0])
    lines_a = gpd.read_file(a.roads_path)
    assert lines_a.geometry.equals(gpd.read_file(b.roads_path).geometry)


@pytest.mark.parametrize("resolution_m", [0.3, 0.08])
def test_pixels_do_not_depend_on_the_window_size(tmp_path, resolution_m):
    kwargs = {"width": 400, "height": 272, "nodata_border": True, "nodata_holes": True,
              "resolution_m": resolution_m}
    ref = _scene(tmp_path, "w1024.tif", window_size=1024, **kwargs)
    img_ref, mask_ref = _read(ref.image_path)[0], _read(ref.mask_path)[0]
    for size in (64, 144):
        other = _scene(tmp_path, f"w{size}.tif", window_size=size, **kwargs)
        assert np.array_equal(_read(other.image_path)[0], img_ref), size
        assert np.array_equal(_read(other.mask_path)[0], mask_ref), size


def test_georeferencing_projected(tmp_path):
    res = _scene(tmp_path, crs="EPSG:32631", resolution_m=0.5, origin=(600000.0, 5760000.0))
    for path in (res.image_path, res.mask_path):
        with rasterio.open(path) as ds:
            assert ds.crs.to_epsg() == 32631
            assert ds.transform.a == 0.5 and ds.transform.e == -0.5
            assert (ds.transform.c, ds.transform.f) == (600000.0, 5760000.0)
            assert (ds.width, ds.height) == (320, 256)
            assert ds.profile["tiled"] and ds.profile["blockxsize"] == 512
            assert ds.compression is not None
    assert gpd.read_file(res.roads_path).crs.to_epsg() == 32631


def test_georeferencing_geographic_has_square_pixels_in_metres(tmp_path):
    res = _scene(tmp_path, crs="EPSG:4326", resolution_m=0.5, origin=(4.4, 51.9))
    with rasterio.open(res.image_path) as ds:
        assert ds.crs.to_epsg() == 4326
        t = ds.transform
    geod = Geod(ellps="WGS84")
    lon0, lat0 = t * (0, 0)
    _, _, dx = geod.inv(lon0, lat0, *(t * (1, 0)))
    _, _, dy = geod.inv(lon0, lat0, *(t * (0, 1)))
    assert dx == pytest.approx(0.5, rel=1e-3) and dy == pytest.approx(0.5, rel=1e-3)
    assert abs(t.a) > 1.5 * abs(t.e)  # at 52° N a metre spans more degrees of longitude
    lines = gpd.read_file(res.roads_path)
    minx, miny, maxx, maxy = lines.total_bounds
    left, bottom, right, top = rasterio.transform.array_bounds(256, 320, t)
    assert left - 1e-9 <= minx and maxx <= right + 1e-9 and bottom - 1e-9 <= miny


def test_mask_is_the_gpkg_lines_buffered_by_half_their_width(tmp_path):
    res = _scene(tmp_path, width=512, height=512, seed=11)
    layers = [name for name, _ in pyogrio.list_layers(res.roads_path)]
    assert layers == ["roads"]
    lines = gpd.read_file(res.roads_path, layer="roads")
    assert set(lines.geom_type) == {"LineString"}
    assert {"width_m", "kind", "surface"} <= set(lines.columns)
    mask, profile = _read(res.mask_path)
    shapes = lines.geometry.buffer(lines["width_m"] / 2.0)
    expected = features.rasterize(shapes, out_shape=mask.shape[1:], transform=profile["transform"])
    got = mask[0] == 1
    assert set(np.unique(mask[0])) <= {0, 1}
    iou = (got & (expected == 1)).sum() / (got | (expected == 1)).sum()
    assert iou > 0.97
    assert res.road_fraction == pytest.approx(got.mean())


def test_roads_are_visible_but_not_trivially(tmp_path):
    res = _scene(tmp_path, width=768, height=768, seed=2)
    img = _read(res.image_path)[0].astype(np.float32)
    mask = _read(res.mask_path)[0][0] == 1
    brightness = img.mean(axis=0)
    road, ground = brightness[mask], brightness[~mask]
    assert stats.ks_2samp(road, ground).statistic > 0.2
    # occluding trees: the image is not the mask recoloured (road pixel values overlap ground)
    assert np.percentile(road, 95) > np.percentile(ground, 5)


def test_road_contrast_varies_between_patches(tmp_path):
    """Illumination/haze/contrast fields make the same kind of road faint in some patches."""
    res = _scene(tmp_path, width=1024, height=1024, seed=7, resolution_m=2.0)
    img = _read(res.image_path)[0].astype(np.float32).mean(axis=0)
    mask = _read(res.mask_path)[0][0] == 1
    spreads = []
    for r in range(0, 1024, 256):
        for c in range(0, 1024, 256):
            patch, m = img[r:r + 256, c:c + 256], mask[r:r + 256, c:c + 256]
            spreads.append(patch[~m].std())
    assert max(spreads) > 1.6 * min(spreads)


@pytest.mark.parametrize(("bands", "dtype", "top"), [(1, "uint8", 255), (4, "uint16", 2047)])
def test_band_count_and_dtype(tmp_path, bands, dtype, top):
    res = _scene(tmp_path, bands=bands, dtype=dtype)
    img, profile = _read(res.image_path)
    assert profile["count"] == bands and profile["dtype"] == dtype
    assert img.min() >= 1 and img.max() <= top
    assert profile["nodata"] is None
    if dtype == "uint16":
        assert img.max() > 255  # really uses the 11-bit range
    if bands == 4:
        with rasterio.open(res.image_path) as ds:
            assert ds.descriptions[3] == "NIR"


def test_nodata_border_and_holes(tmp_path):
    res = _scene(tmp_path, width=512, height=512, nodata_border=True, nodata_holes=True,
                 resolution_m=2.0)
    img, profile = _read(res.image_path)
    mask, mask_profile = _read(res.mask_path)
    assert profile["nodata"] == 0 and mask_profile["nodata"] == 255
    nodata = (img == 0).all(axis=0)
    assert 0.01 < nodata.mean() < 0.5
    assert nodata[0, 0] and nodata[0, -1] and nodata[-1, 0] and nodata[-1, -1]  # slanted border
    assert np.array_equal(mask[0] == 255, nodata)
    assert ((img == 0).any(axis=0) == nodata).all()  # a valid pixel never has a 0 band


def test_overviews_are_built(tmp_path):
    res = _scene(tmp_path, width=600, height=600, overviews=True)
    with rasterio.open(res.image_path) as ds:
        assert ds.overviews(1) == [2]


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="bands"):
        _scene(tmp_path, bands=2)
    with pytest.raises(ConfigError, match="dtype"):
        _scene(tmp_path, dtype="float32")
    with pytest.raises(ConfigError, match="crs"):
        _scene(tmp_path, crs="EPSG:999999")
    with pytest.raises(ConfigError, match=".tif"):
        _scene(tmp_path, name="scene.png")
    for resolution in (0.0, -1.0, 30.0, float("nan")):
        with pytest.raises(ConfigError, match="resolution"):
            make_grid(10, 10, resolution_m=resolution)


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
    first = _scene(tmp_path)
    before = first.image_path.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        _scene(tmp_path, seed=9)
    assert first.image_path.read_bytes() == before
    _scene(tmp_path, seed=9, overwrite=True)
    assert first.image_path.read_bytes() != before


def test_a_failure_leaves_no_partial_outputs(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = scene_module.render_window

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(scene_module, "render_window", failing)
    with pytest.raises(KeyboardInterrupt):
        _scene(tmp_path, window_size=128)
    assert list(tmp_path.iterdir()) == []


def test_trees_hide_roads_in_the_image_but_not_in_the_mask(tmp_path):
    res = _scene(tmp_path, width=768, height=768, seed=5, bands=4)
    img = _read(res.image_path)[0].astype(np.float32)
    mask = _read(res.mask_path)[0][0] == 1
    red, nir = img[0], img[3]
    vegetation = nir > 1.8 * red  # trees and grass; road surfaces have NIR close to red
    assert 0.005 < vegetation[mask].mean() < 0.3
    assert vegetation[~mask].mean() > 3 * vegetation[mask].mean()
