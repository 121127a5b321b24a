"""The realistic synth style: deterministic, window-independent, honest labels."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely

from roadprn.errors import ConfigError
from roadprn.synth import build_network, generate_scene, make_grid, realistic
from roadprn.synth.realistic import jpeg_like, plan_realistic, widen_network


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def _scene(tmp_path, name="r.tif", **kwargs):
    options = {"width": 320, "height": 256, "seed": 3, "overviews": False, "style": "realistic"}
    options.update(kwargs)
    return generate_scene(tmp_path / name, **options)


LANDSCAPES = ["mixed", "rural"]


@pytest.mark.parametrize("landscape", LANDSCAPES)
def test_same_seed_same_scene_other_seed_other_scene(tmp_path, landscape):
    a = _scene(tmp_path, "a.tif", landscape=landscape)
    b = _scene(tmp_path, "b.tif", landscape=landscape)
    c = _scene(tmp_path, "c.tif", seed=4, landscape=landscape)
    assert np.array_equal(_read(a.image_path), _read(b.image_path))
    assert np.array_equal(_read(a.mask_path), _read(b.mask_path))
    assert not np.array_equal(_read(a.image_path), _read(c.image_path))


@pytest.mark.parametrize("landscape", LANDSCAPES)
def test_pixels_do_not_depend_on_the_window_size(tmp_path, landscape):
    a = _scene(tmp_path, "a.tif", width=300, height=200, window_size=1024, landscape=landscape)
    b = _scene(tmp_path, "b.tif", width=300, height=200, window_size=64, landscape=landscape)
    assert np.array_equal(_read(a.mask_path), _read(b.mask_path))
    assert np.array_equal(_read(a.image_path), _read(b.image_path))


def test_mask_is_the_same_carriageway_as_the_classic_style_of_the_widened_network(tmp_path):
    res = _scene(tmp_path, width=256, height=256, seed=7)
    mask = _read(res.mask_path)[0]
    grid = make_grid(256, 256, "EPSG:32631", 0.5)
    network = widen_network(build_network(grid.width_m, grid.height_m, 7), 7)
    plan = plan_realistic(grid, network, 7, 3)
    pixels = realistic.render_window(plan, 0, 0, 256, 256)
    assert np.array_equal(pixels.mask, mask)
    assert set(np.unique(mask)) <= {0, 1}


def test_arterials_are_wider_than_classic():
    network = build_network(3000.0, 3000.0, 2)
    wide = widen_network(network, 2)
    before = [r.width_m for r in network.roads if r.kind == "arterial"]
    after = [r.width_m for r in wide.roads if r.kind == "arterial"]
    assert max(after) > max(before) and min(after) >= min(before)
    assert [r.width_m for r in network.roads if r.kind != "arterial"] == \
        [r.width_m for r in wide.roads if r.kind != "arterial"]


def _window_layers(seed, size=512, res=0.5):
    grid = make_grid(size, size, "EPSG:32631", res)
    network = widen_network(build_network(grid.width_m, grid.height_m, seed), seed)
    plan = plan_realistic(grid, network, seed, 3)
    return plan, realistic.render_window(plan, 0, 0, size, size)


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_cars_and_markings_lie_on_roads_and_lots_are_not_roads(seed, monkeypatch):
    seen = {}
    original = realistic.rect_lattice

    def spy(xs, ys, cell_m, *args, **kwargs):
        lots = original(xs, ys, cell_m, *args, **kwargs)
        seen.setdefault(cell_m, []).append(lots.present)
        return lots
    monkeypatch.setattr(realistic, "rect_lattice", spy)
    plan, pixels = _window_layers(seed)
    halo = plan.halo
    mask = pixels.mask.astype(bool)
    for present in seen[40.0] + seen[26.0]:  # parking lots, concrete yards
        core = present[halo:halo + 512, halo:halo + 512]
        assert not (core & mask).any()
    # every car and marking vector of the roads lies inside the carriageway (1 px tolerance)
    for i in range(len(plan.base.lines)):
        marks, _, cars, _ = realistic.piece_details(plan, i)
        road_poly = shapely.buffer(plan.base.lines[i], plan.base.half_width[i] + 1.0)
        for geom in marks + cars:
            assert shapely.difference(geom, road_poly).area < 0.05 * max(geom.area, 1.0)


def test_parking_lots_and_roofs_exist_and_are_not_in_the_mask(monkeypatch):
    count = {"lots": 0, "roofs": 0}
    original_lots, original_buildings = realistic.rect_lattice, realistic.buildings
    masks = []

    def lots_spy(xs, ys, cell_m, *args, **kwargs):
        out = original_lots(xs, ys, cell_m, *args, **kwargs)
        masks.append(("lots", out.present))
        return out

    def buildings_spy(*args, **kwargs):
        out = original_buildings(*args, **kwargs)
        masks.append(("roofs", out.roof > 0))
        return out
    monkeypatch.setattr(realistic, "rect_lattice", lots_spy)
    monkeypatch.setattr(realistic, "buildings", buildings_spy)
    for seed in range(4):
        masks.clear()
        plan, pixels = _window_layers(seed, size=768)
        h = plan.halo
        road = pixels.mask.astype(bool)
        for name, present in masks:
            core = present[h:h + 768, h:h + 768]
            count[name] += int(core.sum())
            assert not (core & road).any()
    assert count["lots"] > 0 and count["roofs"] > 0


def test_road_fraction_is_sane_and_roads_darker_or_distinct(tmp_path):
    fractions = []
    for seed in range(3):
        res = _scene(tmp_path, f"f{seed}.tif", width=512, height=512, seed=seed)
        fractions.append(res.road_fraction)
    assert all(0.02 < f < 0.5 for f in fractions)


@pytest.mark.parametrize(("bands", "dtype", "top"), [(1, "uint8", 255), (3, "uint8", 255),
                                                      (3, "uint16", 2047), (1, "uint16", 2047),
                                                      (4, "uint8", 255)])
def test_band_count_and_dtype(tmp_path, bands, dtype, top):
    res = _scene(tmp_path, width=160, height=144, bands=bands, dtype=dtype, seed=11)
    img = _read(res.image_path)
    assert img.shape == (bands, 144, 160) and img.dtype == np.dtype(dtype)
    assert img.min() >= 1 and img.max() <= top
    assert img.std() > 0.03 * top


def test_nodata_border_works(tmp_path):
    res = _scene(tmp_path, nodata_border=True, nodata_holes=True)
    img, mask = _read(res.image_path), _read(res.mask_path)[0]
    assert (img[:, mask == 255] == 0).all() and (mask == 255).any()


def test_unknown_style_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        _scene(tmp_path, style="fancy")


def test_jpeg_like_is_blockwise_and_lossy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, (3, 32, 48)).astype(np.float32)
    out = jpeg_like(list(a), 40, rgb=True)
    assert not np.allclose(np.stack(out), a)
    assert np.abs(np.stack(out) - a).mean() < 0.2
    # a block's result depends only on that block (16x16 with chroma subsampling)
    part = jpeg_like([c[16:32, 16:48] for c in a], 40, rgb=True)
    assert np.array_equal(np.stack(part), np.stack(out)[:, 16:32, 16:48])
    smooth = np.full((1, 16, 16), 0.5, dtype=np.float32)
    assert np.allclose(jpeg_like(list(smooth), 40, rgb=False)[0], 0.5, atol=0.01)
