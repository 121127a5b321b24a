"""Training data: scene-wise splits, label rasters, chip sampling, augmentation, loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from roadprn.config import NormalizationConfig
from roadprn.errors import ConfigError, InputError
from roadprn.raster.labels import SceneGrid, labels_to_mask
from roadprn.synth import generate_scene
from roadprn.train.base import lr_factor
from roadprn.train.data import (
    Augmentation,
    GridChips,
    LabelSpec,
    RandomChips,
    TrainingPair,
    augment_chip,
    prepare_scene,
    read_pairs_csv,
    split_pairs,
)
from roadprn.train.losses import confusion_counts, dice_bce_loss, scores

PERCENTILE = NormalizationConfig(mode="percentile")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    result = generate_scene(folder / "s.tif", width=256, seed=3, resolution_m=0.25,
                            overviews=False)
    return result


def _prepare(scene, tmp_path, labels=None, **kwargs):
    pair = TrainingPair(scene.image_path, labels or scene.roads_path)
    return prepare_scene(pair, bands=[1, 2, 3], normalization=PERCENTILE,
                         labels=LabelSpec(road_width_m=kwargs.pop("width", 4.0)),
                         cache_dir=tmp_path / "cache", target_gsd_m=0.5, **kwargs)


# --------------------------------------------------------------------------- pairs and splits


def _pairs(n, split=None):
    return [TrainingPair(f"s{i}.tif", f"l{i}.gpkg", split) for i in range(n)]


def test_split_is_by_scene_and_respects_explicit_splits():
    pairs = _pairs(10)
    train, val = split_pairs(pairs, 0.3, seed=1)
    assert len(val) == 3 and len(train) == 7
    assert not {p.scene for p in train} & {p.scene for p in val}
    assert split_pairs(pairs, 0.3, seed=1) == (train, val)  # deterministic
    explicit = [TrainingPair("a", "b", "val"), *_pairs(3, "train")]
    train, val = split_pairs(explicit, 0.5, seed=0)
    assert [p.scene for p in val] == ["a"] and len(train) == 3


def test_single_scene_is_never_held_out_and_bad_fraction_fails():
    train, val = split_pairs(_pairs(1), 0.5, seed=0)
    assert len(train) == 1 and val == []
    with pytest.raises(ConfigError):
        split_pairs(_pairs(3), 1.0, seed=0)


def test_pairs_csv_paths_are_relative_to_the_csv(tmp_path):
    csv = tmp_path / "sub" / "pairs.csv"
    csv.parent.mkdir()
    csv.write_text("scene,labels,split,gsd_m\na.tif,a.gpkg,val,0.3\n/abs/b.tif,b.png,,\n")
    pairs = read_pairs_csv(csv)
    assert pairs[0].scene == csv.parent / "a.tif" and pairs[0].split == "val"
    assert pairs[0].gsd_m == 0.3 and pairs[1].gsd_m is None
    assert str(pairs[1].scene) == "/abs/b.tif" and pairs[1].split is None
    csv.write_text("scene,labels,split\na.tif,a.gpkg,test\n")
    with pytest.raises(InputError, match="line 2"):
        read_pairs_csv(csv)


# --------------------------------------------------------------------------- label rasters


def test_label_raster_matches_whole_scene_rasterisation_and_is_cached(scene, tmp_path):
    prepared = _prepare(scene, tmp_path)
    grid = SceneGrid.from_raster(scene.image_path)
    expected = labels_to_mask(scene.roads_path, grid, width_m=4.0)
    with rasterio.open(prepared.label_raster) as ds:
        assert np.array_equal(ds.read(1), expected)
        assert ds.crs == rasterio.open(scene.image_path).crs
    assert prepared.road_pixels == int(expected.sum()) > 0
    assert prepared.labelled_pixels == expected.size
    assert prepared.road_cells[:, 2].sum() == prepared.road_pixels
    assert prepared.gsd_m == pytest.approx(0.25)
    written = Path(prepared.label_raster).stat().st_mtime_ns
    again = _prepare(scene, tmp_path)
    assert again.label_raster == prepared.label_raster
    assert Path(again.label_raster).stat().st_mtime_ns == written  # reused, not rewritten
    wider = _prepare(scene, tmp_path, width=8.0)  # other label options: another raster
    assert wider.label_raster != prepared.label_raster
    assert wider.road_pixels > prepared.road_pixels


def test_mask_raster_labels_and_missing_gsd(scene, tmp_path):
    prepared = _prepare(scene, tmp_path, labels=scene.mask_path)
    with rasterio.open(scene.mask_path) as ds:
        truth = ds.read(1) == 1
    with rasterio.open(prepared.label_raster) as ds:
        assert np.array_equal(ds.read(1) == 1, truth)
    # a scene without georeferencing needs its pixel size stated
    plain = tmp_path / "plain.tif"
    with rasterio.open(scene.image_path) as src:
        data = src.read()
    with rasterio.open(plain, "w", driver="GTiff", width=256, height=256, count=3,
                       dtype="uint8") as dst:
        dst.write(data)
    with pytest.raises(InputError, match="gsd_m"):
        prepare_scene(TrainingPair(plain, scene.mask_path), bands=[1, 2, 3],
                      normalization=PERCENTILE, labels=LabelSpec(), cache_dir=tmp_path / "c",
                      target_gsd_m=0.5)


# --------------------------------------------------------------------------- chips


def test_random_chips_are_reproducible_and_change_per_epoch(scene, tmp_path):
    prepared = _prepare(scene, tmp_path)
    data = RandomChips([prepared], chip_size=32, target_gsd_m=0.5, length=6, seed=7)
    image, target, valid = data[2]
    assert image.shape == (3, 32, 32) and target.shape == valid.shape == (1, 32, 32)
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert set(torch.unique(target).tolist()) <= {0.0, 1.0}
    again = RandomChips([prepared], chip_size=32, target_gsd_m=0.5, length=6, seed=7)
    for a, b in zip(data[2], again[2], strict=True):
        assert torch.equal(a, b)
    data.set_epoch(1)
    assert not torch.equal(data[2][0], image)


def test_oversampling_finds_roads_more_often(scene, tmp_path):
    prepared = _prepare(scene, tmp_path)

    def road_share(oversample):
        data = RandomChips([prepared], chip_size=16, target_gsd_m=0.5, length=60, seed=0,
                           augmentation=Augmentation.none(), road_oversample=oversample)
        return np.mean([float(data[i][1].max()) for i in range(len(data))])

    assert road_share(1.0) == 1.0  # every chip is centred near a road pixel
    assert road_share(1.0) > road_share(0.0)


def test_chips_are_resampled_to_the_model_resolution(scene, tmp_path):
    prepared = _prepare(scene, tmp_path)  # 0.25 m scene, 0.5 m model: 2x2 pixels per chip px
    data = GridChips([prepared], chip_size=64, target_gsd_m=0.5)
    assert data.source_size(prepared) == 128
    assert len(data) == 4  # a 256 px scene is 2x2 windows of 128 px
    image, target, valid = data[0]
    assert image.shape == (3, 64, 64) and bool(valid.all())
    with rasterio.open(prepared.label_raster) as ds:
        full = ds.read(1, window=((0, 128), (0, 128))).astype(float)
    coarse = full.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    # bilinear 2x downsampling of the labels, then > 0.5: agrees with block means almost always
    agree = ((coarse > 0.5) == (target[0].numpy() > 0.5)).mean()
    assert agree > 0.95


def test_geometric_augmentation_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(0)
    target = (rng.random((16, 16)) > 0.7).astype(np.float32)
    image = np.repeat(target[None], 3, axis=0)
    valid = np.ones((16, 16), bool)
    geometric = Augmentation(brightness=0, contrast=0, gamma=0, band_gain=0, grayscale=0)
    seen = set()
    for seed in range(12):
        out_image, out_target, _ = augment_chip(image, target, valid,
                                                np.random.default_rng(seed), geometric)
        assert np.array_equal(out_image[0], out_target)
        seen.add(out_target.tobytes())
    assert len(seen) > 3  # rotations and flips really happen


def test_colour_augmentation_stays_in_range_and_changes_values():
    rng = np.random.default_rng(1)
    image = rng.random((3, 8, 8)).astype(np.float32)
    out, _, _ = augment_chip(image, np.zeros((8, 8), np.float32), np.ones((8, 8), bool), rng,
                             Augmentation(flips=False, rotations=False))
    assert 0 <= out.min() and out.max() <= 1 and not np.allclose(out, image)


# --------------------------------------------------------------------------- loss and schedule


def test_loss_prefers_the_truth_and_ignores_invalid_pixels():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:4, :] = 1
    good = (target * 2 - 1) * 6
    bad = -good
    assert dice_bce_loss(good, target) < 0.1 < dice_bce_loss(bad, target)
    valid = torch.ones_like(target)
    valid[..., 6:, :] = 0
    changed = good.clone()
    changed[..., 6:, :] = 10  # wrong, but only where pixels are invalid
    assert dice_bce_loss(changed, target, valid) == pytest.approx(
        float(dice_bce_loss(good, target, valid)))
    tp, fp, fn = confusion_counts(changed, target, valid)
    assert (tp, fp, fn) == (16, 0, 0)
    assert scores(tp, fp, fn)["iou"] == 1.0


def test_schedule_warms_up_then_decays():
    values = [lr_factor(s, 100, "cosine", 0.1) for s in range(100)]
    assert values[0] < values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert values[-1] < 0.05
    one = [lr_factor(s, 100, "onecycle", 0.0) for s in range(100)]
    assert one[0] < 0.1 and max(one) == pytest.approx(1.0)
    assert one.index(max(one)) in (29, 30)  # the peak ends the 30 % warm-up
    assert lr_factor(50, 100, "constant", 0.1) == 1.0
