"""Models trained across resolutions run scenes inside their range natively (no resampling)."""

from __future__ import annotations

import pytest
from affine import Affine
from pydantic import ValidationError
from rasterio.crs import CRS

from roadprn.config import NormalizationConfig
from roadprn.errors import InputError
from roadprn.models.checkpoint import InputSpec
from roadprn.raster.grid import inference_grid
from roadprn.raster.scene import SceneInfo
from roadprn.train.base import trained_gsd_range
from roadprn.train.options import TrainBaseOptions


def scene(res_x: float, res_y: float | None = None, size: int = 1000) -> SceneInfo:
    res_y = res_x if res_y is None else res_y
    return SceneInfo(
        path="scene.tif", driver="GTiff", width=size, height=size, count=3,
        dtypes=("uint8",) * 3, crs=CRS.from_epsg(32611),
        transform=Affine(res_x, 0, 500000, 0, -res_y, 4000000), nodata=None,
        block_shape=(256, 256), overviews=(), colorinterp=("red", "green", "blue"),
        mask_flags=(("all_valid",),) * 3, resolution_m=(res_x, res_y),
        footprint_wgs84=None)


def grid(info: SceneInfo, native_range: tuple[float, float] | None):
    return inference_grid(info, 0.5, resample=True, tolerance=0.25, native_range=native_range)


@pytest.mark.parametrize("res", [0.21, 0.25, 0.3, 0.5, 0.8, 1.0, 1.2])
def test_scenes_inside_the_trained_range_keep_their_grid(res):
    assert not grid(scene(res), (0.25, 1.0)).resampled


@pytest.mark.parametrize("res", [0.15, 0.19, 1.3, 2.0])
def test_scenes_outside_the_range_are_resampled_to_the_model_gsd(res):
    out = grid(scene(res), (0.25, 1.0))
    assert out.resampled
    assert out.transform.a == pytest.approx(0.5, rel=0.01)
    assert out.width == round(1000 * res / 0.5)


def test_both_axes_must_lie_inside_the_range_widened_by_the_tolerance():
    # an EPSG:4326 chip's pixels are not square in metres: 0.24 m x 0.30 m at Las Vegas
    assert not grid(scene(0.24, 0.30), (0.25, 1.0)).resampled
    assert grid(scene(0.18, 0.30), (0.25, 1.0)).resampled
    assert grid(scene(0.5, 1.3), (0.25, 1.0)).resampled


def test_models_without_a_range_keep_the_tolerance_rule():
    assert grid(scene(0.3), None).resampled  # 40 % away from 0.5 m
    assert not grid(scene(0.55), None).resampled  # within 25 %


def test_resample_false_keeps_the_scene_grid():
    out = inference_grid(scene(0.2), 0.5, resample=False, tolerance=0.25, native_range=None)
    assert not out.resampled


@pytest.mark.parametrize("res", [0.1, 2.5, 30.0])
@pytest.mark.parametrize("resample", [True, False])
def test_resolutions_beyond_max_factor_are_refused_unless_forced(res, resample):
    with pytest.raises(InputError, match=r"more than 4x away from the model's 0.5 m.*"
                                         r"0.125-2 m.*--force-resolution"):
        inference_grid(scene(res), 0.5, resample=resample, tolerance=0.25)
    forced = inference_grid(scene(res), 0.5, resample=resample, tolerance=0.25, force=True)
    assert not forced.resampled


def test_input_spec_range_must_contain_the_model_gsd():
    norm = NormalizationConfig(mode="percentile")
    InputSpec(bands=[1, 2, 3], normalization=norm, gsd_m=0.5, gsd_range_m=(0.25, 1.0))
    for bad in ((0.6, 1.0), (0.1, 0.4), (0.0, 1.0), (1.0, 0.25)):
        with pytest.raises(ValidationError, match="gsd_range_m"):
            InputSpec(bands=[1, 2, 3], normalization=norm, gsd_m=0.5, gsd_range_m=bad)


def test_trained_range_follows_scale_jitter():
    def options(jitter: float) -> TrainBaseOptions:
        return TrainBaseOptions(arch="tiny_unet", bands=[1, 2, 3], gsd_m=0.5,
                                augmentation={"scale_jitter": jitter})

    assert trained_gsd_range(options(2.0)) == (0.25, 1.0)
    assert trained_gsd_range(options(1.5)) == (0.3333, 0.75)
    assert trained_gsd_range(options(1.0)) is None
