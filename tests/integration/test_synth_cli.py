"""``roadprn synth`` end to end through the real command group."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio

from tests.helpers import invoke


def test_synth_writes_three_outputs_and_reports_them(tmp_path):
    out = tmp_path / "scene.tif"
    result = invoke("synth", str(out), "--size", "300x200", "--seed", "4", "--bands", "4",
                    "--dtype", "uint16", "--crs", "EPSG:3857", "--resolution", "1",
                    "--origin", "490000,6800000", "--nodata-border")
    assert result.exit_code == 0, result.output
    mask, roads = tmp_path / "scene_mask.tif", tmp_path / "scene_roads.gpkg"
    for path in (out, mask, roads):
        assert str(path) in result.output
    assert "road length:" in result.output and "km" in result.output
    with rasterio.open(out) as img, rasterio.open(mask) as msk:
        assert (img.width, img.height, img.count, img.dtypes[0]) == (300, 200, 4, "uint16")
        assert img.crs.to_epsg() == 3857 and img.nodata == 0
        assert img.transform == msk.transform and msk.crs == img.crs
        # EPSG:3857 is in metres: 1 m resolution gives a 1-unit transform
        assert img.transform.a == 1.0 and (img.transform.c, img.transform.f) == (490000, 6800000)
        assert set(np.unique(msk.read(1))) <= {0, 1, 255}
    lines = gpd.read_file(roads, layer="roads")
    assert lines.crs.to_epsg() == 3857 and len(lines) > 0
    assert not list(tmp_path.glob("*roadprn-tmp*"))


def test_synth_is_deterministic_through_the_cli(tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    for path in (a, b):
        assert invoke("--quiet", "synth", str(path), "--size", "256", "--seed", "8").exit_code == 0
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        assert np.array_equal(ra.read(), rb.read())


def test_existing_output_fails_with_one_line_and_exit_4(tmp_path):
    out = tmp_path / "s.tif"
    assert invoke("synth", str(out), "--size", "64").exit_code == 0
    result = invoke("synth", str(out), "--size", "64")
    assert result.exit_code == 4
    assert "exists" in result.output and "--overwrite" in result.output
    assert invoke("synth", str(out), "--size", "64", "--overwrite").exit_code == 0


def test_bad_options_exit_2(tmp_path):
    bad_size = invoke("synth", str(tmp_path / "s.tif"), "--size", "12x")
    assert bad_size.exit_code == 2 and "--size" in bad_size.output
    bad_crs = invoke("synth", str(tmp_path / "s.tif"), "--crs", "EPSG:999999")
    assert bad_crs.exit_code == 2 and "EPSG:999999" in bad_crs.output
    assert not list(tmp_path.iterdir())
