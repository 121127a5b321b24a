"""Overviews built while strips stream: same levels as GDAL's COG driver, values as averaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

from roadprn.raster.overviews import StreamedOverviews, overview_factors, reduce_2x2

PROFILE = dict(driver="GTiff", count=1, dtype="uint8", crs="EPSG:32631", tiled=True,
               blockxsize=64, blockysize=64, compress="zstd")


def write_raw(path: Path, values: np.ndarray, valid: np.ndarray | None, nodata=None) -> dict:
    profile = {**PROFILE, "width": values.shape[1], "height": values.shape[0],
               "transform": from_origin(500000, 4600000, 0.5, 0.5), "nodata": nodata}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds:
        ds.write(values[None])
        if valid is not None:
            ds.write_mask(valid.view(np.uint8) * np.uint8(255))
        ds.update_tags(ROADPRN_TEST="kept")
    return profile


@pytest.mark.parametrize("shape", [(1000, 300), (257, 257), (128, 128), (513, 2000)])
def test_levels_match_gdal_cog_driver(tmp_path: Path, shape: tuple[int, int]) -> None:
    values = np.zeros(shape, np.uint8)
    write_raw(tmp_path / "raw.tif", values, None)
    rasterio.shutil.copy(tmp_path / "raw.tif", tmp_path / "cog.tif", driver="COG",
                         BLOCKSIZE=128, OVERVIEWS="AUTO")
    with rasterio.open(tmp_path / "cog.tif") as ds:
        expected = ds.overviews(1)
    assert overview_factors(shape[1], shape[0], 128) == expected


def test_average_ignores_invalid_pixels_and_rounds_half_up() -> None:
    values = np.array([[10, 11, 200], [12, 250, 7]], np.uint8)
    valid = np.array([[True, True, True], [True, False, False]])
    small, small_valid = reduce_2x2(values, valid, "average")
    assert small.tolist() == [[11, 200]]  # (10+11+12)/3 = 11; odd column: its one valid pixel
    assert small_valid.tolist() == [[True, True]]
    none_valid = reduce_2x2(values, np.zeros_like(valid), "average")[1]
    assert not none_valid.any()


@pytest.mark.parametrize("strip_rows", [7, 64, 1000])
def test_streamed_cog_equals_cascaded_reduction_and_is_a_cog(tmp_path: Path,
                                                             strip_rows: int) -> None:
    rng = np.random.default_rng(0)
    height, width = 601, 1033
    values = rng.integers(0, 256, (height, width), dtype=np.uint8)
    valid = rng.random((height, width)) > 0.1
    values[~valid] = 0
    raw = tmp_path / "raw.tif"
    profile = write_raw(raw, values, valid)
    pyramid = StreamedOverviews(raw, width, height, profile, "average", blocksize=128)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        for row in range(0, height, strip_rows):
            pyramid.add(values[row:row + strip_rows], valid[row:row + strip_rows])
        pyramid.close()
        vrt = pyramid.write_vrt(rasterio.crs.CRS.from_epsg(32631), profile["transform"],
                                {"ROADPRN_TEST": "kept"})
        rasterio.shutil.copy(vrt, tmp_path / "cog.tif", driver="COG", BLOCKSIZE=128,
                             OVERVIEWS="AUTO", COMPRESS="DEFLATE")
    with rasterio.open(tmp_path / "cog.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.overviews(1) == overview_factors(width, height, 128) == [2, 4, 8, 16]
        assert ds.tags()["ROADPRN_TEST"] == "kept"
        assert ds.crs.to_epsg() == 32631
        np.testing.assert_array_equal(ds.read(1), values)
        np.testing.assert_array_equal(ds.read_masks(1) > 0, valid)
        expected, expected_valid = values, valid
        for factor in (2, 4, 8, 16):
            expected, expected_valid = reduce_2x2(expected, expected_valid, "average")
            shape = (-(-height // factor), -(-width // factor))
            assert expected.shape == shape
            level = ds.read(1, out_shape=shape)
            np.testing.assert_array_equal(level, np.where(expected_valid, expected, 0))
            # the mask's overviews are the COG driver's own, from the full-resolution mask
            level_mask = ds.read_masks(1, out_shape=shape) > 0
            assert level_mask.shape == shape and level_mask.mean() > 0.5


def test_nearest_with_nodata_keeps_the_nodata_value(tmp_path: Path) -> None:
    mask = np.tile(np.array([[0, 1], [255, 1]], np.uint8), (200, 300))
    raw = tmp_path / "mask.tif"
    profile = write_raw(raw, mask, None, nodata=255)
    pyramid = StreamedOverviews(raw, 600, 400, {**profile, "nodata": None}, "nearest",
                                nodata=255, blocksize=128)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        pyramid.add(mask, mask != 255)
        pyramid.close()
        vrt = pyramid.write_vrt(None, profile["transform"], {})
        rasterio.shutil.copy(vrt, tmp_path / "cog.tif", driver="COG", BLOCKSIZE=128)
    with rasterio.open(tmp_path / "cog.tif") as ds:
        assert ds.nodata == 255
        assert ds.overviews(1) == overview_factors(600, 400, 128) == [2, 4, 8]
        assert set(np.unique(ds.read(1, out_shape=(200, 300))).tolist()) == {0}
