"""One percentile stretch for an archive (roadprn.batch.normalization): pooled samples, weights,
the saved stretches that a resumed run reuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from roadprn.batch.inputs import SceneInput
from roadprn.batch.normalization import (
    NORMALIZATION_NAME,
    SceneSample,
    archive_normalizations,
    fixed_normalization,
    pooled_stretches,
    scene_sample_side,
)
from roadprn.config import Config
from roadprn.raster.normalize import make_normalizer, percentile_sample, stretch_normalizer
from tests.helpers import write_test_raster


class _Model:
    """What the archive's normalisation reads of a model."""

    in_channels = 3
    bands = ()
    normalization = {"mode": "percentile", "percentiles": [2.0, 98.0], "sample_size": 256}


def test_sample_side_shares_the_pool_by_area() -> None:
    assert scene_sample_side(100, 100, 1024) == 1024  # one scene: the whole sample
    # four equal scenes: each decimated by the same factor, together about 1024²
    assert scene_sample_side(25, 100, 1024) == 512
    assert scene_sample_side(1, 10**6, 1024) == 32  # never fewer than a few pixels a side


def test_pooled_percentiles_weight_each_scene_by_its_pixels() -> None:
    dark = np.zeros((1, 100))
    bright = np.full((1, 100), 100.0)
    # the dark scene stands for 9 times as many pixels: 90 % of the pool is 0
    samples = [SceneSample("a", "g", dark, 9.0), SceneSample("b", "g", bright, 1.0)]
    stretch = pooled_stretches(samples, {"g": (2.0, 89.0)})["g"]
    assert stretch["lows"] == [0.0] and stretch["highs"] == [0.0]
    stretch = pooled_stretches(samples, {"g": (2.0, 91.0)})["g"]
    assert stretch["highs"] == [100.0]


def test_fixed_normalization_is_the_percentile_stretch() -> None:
    spec = fixed_normalization([10.0, 0.0], [110.0, 50.0])
    assert spec.mode == "fixed"
    direct = stretch_normalizer([10.0, 0.0], [110.0, 50.0])
    assert spec.scale == list(direct.scale) and spec.offset == list(direct.offset)
    data = np.array([[[10.0, 60.0, 200.0]], [[0.0, 25.0, 50.0]]], np.float32)
    np.testing.assert_allclose(direct(data), [[[0.0, 0.5, 1.0]], [[0.0, 0.5, 1.0]]])


def test_percentile_sample_keeps_only_valid_pixels(tmp_path) -> None:
    data = np.arange(64, dtype=np.uint16).reshape(1, 8, 8)
    data[0, :4] = 0
    path = write_test_raster(tmp_path / "s.tif", data, nodata=0)
    import rasterio

    with rasterio.open(path) as ds:
        values, sampled = percentile_sample(ds, [1], 16)
    assert sampled == 64 and values.shape == (1, 32) and values.min() == 32


def _scenes(tmp_path, *levels: int) -> list[SceneInput]:
    rng = np.random.default_rng(0)
    out = []
    for k, level in enumerate(levels):
        data = (rng.integers(0, 50, (3, 64, 64)) + level).astype(np.uint16)
        path = write_test_raster(tmp_path / f"s{k}.tif", data)
        out.append(SceneInput(str(path), f"s{k}"))
    return out


def test_archive_stretch_is_shared_and_saved(tmp_path) -> None:
    scenes = _scenes(tmp_path, 100, 1000)
    config = Config()
    specs = {s.name: "m" for s in scenes}
    stretches = archive_normalizations(scenes, specs, {"m": _Model()}, config, tmp_path)
    assert set(stretches) == {"s0", "s1"}
    assert stretches["s0"] == stretches["s1"] and stretches["s0"].mode == "fixed"
    # the shared stretch spans both scenes: the dark one maps low, the bright one high
    import rasterio

    scale, offset = np.array(stretches["s0"].scale), np.array(stretches["s0"].offset)
    lows, highs = -offset / scale, (1 - offset) / scale
    assert np.all(lows < 110) and np.all(highs > 1000)
    own = []
    for scene in scenes:
        with rasterio.open(scene.path) as ds:
            own.append(make_normalizer(ds, [1, 2, 3], config.input.normalization))
    assert own[0].offset != own[1].offset  # each scene alone would be stretched differently
    saved = json.loads((tmp_path / NORMALIZATION_NAME).read_text())
    assert len(saved["groups"]) == 1
    assert next(iter(saved["groups"].values()))["scenes"] == 2


def test_a_resumed_run_reuses_the_saved_stretch(tmp_path) -> None:
    scenes = _scenes(tmp_path, 100, 1000)
    specs = {s.name: "m" for s in scenes}
    models = {"m": _Model()}
    first = archive_normalizations(scenes[:1], specs, models, Config(), tmp_path)
    # a scene added later joins the saved group unchanged (its scenes' config hashes hold) ...
    again = archive_normalizations(scenes, specs, models, Config(), tmp_path)
    assert again["s0"] == again["s1"] == first["s0"]
    # ... unless the run is redone from scratch
    fresh = archive_normalizations(scenes, specs, models, Config(), tmp_path, reuse=False)
    assert fresh["s0"] != first["s0"]


def test_groups_by_data_type_and_skips_other_modes(tmp_path) -> None:
    scenes = _scenes(tmp_path, 100)
    path = write_test_raster(tmp_path / "b.tif", np.ones((3, 32, 32), np.uint8) * 7)
    scenes.append(SceneInput(str(path), "b"))
    scenes.append(SceneInput(str(tmp_path / "missing.tif"), "missing"))
    specs = {s.name: "m" for s in scenes}
    stretches = archive_normalizations(scenes, specs, {"m": _Model()}, Config(), tmp_path)
    assert set(stretches) == {"s0", "b"} and stretches["s0"] != stretches["b"]
    saved = json.loads((tmp_path / NORMALIZATION_NAME).read_text())
    assert len(saved["groups"]) == 2
    dtype_config = Config.model_validate({"input": {"normalization": {"mode": "dtype"}}})
    assert archive_normalizations(scenes, specs, {"m": _Model()}, dtype_config,
                                  tmp_path / "other") == {}


def test_a_damaged_saved_file_is_recomputed(tmp_path, caplog) -> None:
    scenes = _scenes(tmp_path, 100)
    (tmp_path / NORMALIZATION_NAME).write_text("{not json")
    stretches = archive_normalizations(scenes, {"s0": "m"}, {"m": _Model()}, Config(), tmp_path)
    assert "s0" in stretches
    assert json.loads((tmp_path / NORMALIZATION_NAME).read_text())["format"] == 1


@pytest.mark.parametrize("levels", [(0,), (0, 5000)])
def test_every_scene_of_a_group_gets_the_same_stretch(tmp_path, levels) -> None:
    scenes = _scenes(tmp_path, *levels)
    specs = {s.name: "m" for s in scenes}
    stretches = archive_normalizations(scenes, specs, {"m": _Model()}, Config(), tmp_path)
    assert len({json.dumps(s.model_dump()) for s in stretches.values()}) == 1
