"""The rural synth landscape: deterministic, window-independent, honest labels."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio import features

from roadprn.errors import ConfigError
from roadprn.synth import generate_scene, make_grid, rural


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def _scene(tmp_path, name="r.tif", **kwargs):
    options = {"width": 320, "height": 256, "seed": 3, "overviews": False,
               "style": "realistic", "landscape": "rural"}
    options.update(kwargs)
    return generate_scene(tmp_path / name, **options)


# determinism and window independence: parametrised over both landscapes in
# test_synth_realistic.py


def test_mixed_landscape_is_the_default(tmp_path):
    a = generate_scene(tmp_path / "a.tif", width=128, seed=5, overviews=False,
                       style="realistic")
    b = generate_scene(tmp_path / "b.tif", width=128, seed=5, overviews=False,
                       style="realistic", landscape="mixed")
    assert np.array_equal(_read(a.image_path), _read(b.image_path))


@pytest.mark.parametrize("seed", [1, 2, 6])
def test_road_fraction_sane_and_mostly_unpaved(tmp_path, seed):
    res = _scene(tmp_path, width=1024, height=1024, seed=seed, window_size=512)
    assert 0.01 <= res.road_fraction <= 0.15
    roads = gpd.read_file(res.roads_path)
    length = roads.length
    assert length[roads.surface == "dirt"].sum() > 0.6 * length.sum()
    assert roads.width_m.min() >= 3.0 and roads.width_m[roads.surface == "dirt"].max() <= 6.0


def test_mask_is_the_full_carriageway_and_field_boundaries_are_not_roads(tmp_path):
    res = _scene(tmp_path, width=512, height=512, seed=2)
    mask = _read(res.mask_path)[0]
    grid = make_grid(512, 512, "EPSG:32631", 0.5)
    network = rural.build_rural_network(grid.width_m, grid.height_m, 2)
    plan = rural.plan_rural(grid, network, 2, 3)
    base = plan.base
    expected = features.rasterize(shapely.buffer(base.lines, base.half_width, quad_segs=6),
                                  out_shape=(512, 512), fill=0, dtype="uint8")
    assert np.array_equal(mask, expected)
    xs = (np.arange(512) + 0.5) * 0.5
    fl = rural.fields(plan, xs, xs, 123, 8)
    boundary = (fl.edge_m < 1.0) & (fl.edge_kind > 0)
    assert boundary.mean() > 0.002
    assert (mask[boundary] == 1).mean() < 0.2  # boundaries are drawn, not labelled


def test_unknown_landscape_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="landscape"):
        _scene(tmp_path, landscape="alpine")


def test_classic_style_with_rural_network_works(tmp_path):
    res = _scene(tmp_path, style="classic", width=128, height=128)
    assert res.road_count >= 0
