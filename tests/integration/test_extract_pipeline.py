"""The tiled extract pipeline against a whole-image forward, and its outputs' georeferencing."""

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from roadprn.config import load_config
from roadprn.errors import InputError
from roadprn.infer.base_stage import ExtractPaths, extract_probability, predict_strips
from roadprn.infer.predictor import Predictor, SegmentationModel
from roadprn.infer.tiling import TilePlan
from roadprn.raster.normalize import BandNormalizer


def conv_model(in_channels: int, seed: int = 0) -> nn.Module:
    """Translation-equivariant, receptive-field radius 3 px."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 1, 3, padding=1),
    )


def whole_image_forward(module: nn.Module, image: np.ndarray, halo: int) -> np.ndarray:
    """One forward over the whole scene, mirrored at the edges as the tiled reader does."""
    padded = np.pad(image, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    with torch.inference_mode():
        logits = module(torch.from_numpy(padded[None].astype(np.float32)))
    prob = torch.sigmoid(logits)[0, 0].numpy()
    return prob[halo:-halo, halo:-halo]


@pytest.mark.parametrize("blend_radius", [0, 8])
@pytest.mark.parametrize("shape", [(301, 450), (64, 64), (1, 1), (17, 300)])
def test_tiled_equals_whole_image_forward(make_raster, shape, blend_radius):
    rng = np.random.default_rng(3)
    image = rng.random((3, *shape)).astype(np.float32)
    path = make_raster(image)
    module = conv_model(3)
    plan = TilePlan(shape[1], shape[0], tile_size=64, halo=16, blend_radius=blend_radius)
    predictor = Predictor(module, torch.device("cpu"))
    identity = BandNormalizer((1.0,) * 3, (0.0,) * 3, clip=False)
    out = np.full(shape, np.nan, np.float32)
    for strip in predict_strips(str(path), (1, 2, 3), plan, 3, identity, predictor):
        out[strip.row_off:strip.row_off + strip.prob.shape[0]] = strip.prob
        assert strip.valid.all()
    expected = whole_image_forward(module, image, plan.halo)
    assert np.abs(out - expected).max() < 1e-4


def small_model(in_channels=3, **kw) -> SegmentationModel:
    return SegmentationModel(conv_model(in_channels), in_channels=in_channels, name="test-conv",
                             sha256="0" * 64, tile_size=64, halo=16, batch_size=4, **kw)


def test_extract_writes_georeferenced_cogs_with_nodata(make_raster, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (3, 200, 333)).astype(np.uint8)
    data[:, 50:60, 70:90] = 0  # nodata hole
    transform = from_origin(500000.0, 4000000.0, 0.3, 0.3)
    path = make_raster(data, crs="EPSG:32633", transform=transform, nodata=0)
    cfg = load_config(overrides={"input.normalization.mode": "dtype"})
    result = extract_probability(path, small_model(), cfg, tmp_path / "out")
    for out in (result.paths.probability, result.paths.mask):
        with rasterio.open(out) as ds:
            assert ds.crs.to_epsg() == 32633 and ds.transform == transform
            assert (ds.width, ds.height) == (333, 200)
            assert ds.overviews(1) == [] or ds.overviews(1)[0] == 2
            assert ds.tags()["ROADPRN_MODEL_SHA256"] == "0" * 64
            assert ds.profile["tiled"] and ds.profile["compress"] == "deflate"
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    with rasterio.open(result.paths.mask) as ds:
        mask = ds.read(1)
        assert ds.nodata == 255
    assert (mask[50:60, 70:90] == 255).all()
    assert set(np.unique(mask[:50])) <= {0, 1}
    with rasterio.open(result.paths.probability) as ds:
        prob = ds.read(1)
        valid = ds.read_masks(1)
    assert (valid[50:60, 70:90] == 0).all() and (prob[50:60, 70:90] == 0).all()
    assert (valid[:50] == 255).all()
    # the mask is the probability thresholded (up to uint8 rounding at the threshold)
    agree = (mask[:50] == 1) == (prob[:50] > 127)
    assert agree.mean() > 0.99
    assert not list(tmp_path.joinpath("out").glob("*roadprn-tmp*"))


def test_existing_output_needs_overwrite(make_raster, tmp_path):
    from roadprn.errors import OutputError

    path = make_raster(np.ones((3, 40, 40), np.uint8))
    cfg = load_config(overrides={"input.normalization.mode": "dtype"})
    extract_probability(path, small_model(), cfg, tmp_path)
    with pytest.raises(OutputError, match="--overwrite"):
        extract_probability(path, small_model(), cfg, tmp_path)
    cfg2 = load_config(overrides={"input.normalization.mode": "dtype", "output.overwrite": True})
    extract_probability(path, small_model(), cfg2, tmp_path)


def test_default_output_folder_is_next_to_scene(tmp_path):
    paths = ExtractPaths.for_scene(tmp_path / "city" / "scene_01.tif")
    assert paths.folder == tmp_path / "city" / "scene_01_roadprn"
    assert paths.mask.name == "scene_01_mask.tif"


def test_resampling_to_model_gsd_and_back(make_raster, tmp_path):
    rng = np.random.default_rng(0)
    transform = from_origin(500000.0, 4000000.0, 0.25, 0.25)
    path = make_raster(rng.integers(1, 255, (3, 150, 210)).astype(np.uint8), transform=transform,
                       crs="EPSG:32633")
    cfg = load_config(overrides={"input.normalization.mode": "dtype"})
    result = extract_probability(path, small_model(gsd_m=0.5), cfg, tmp_path / "r")
    assert "model grid 0.5 m" in result.grid and "210x150 -> 105x75" in result.grid
    for out in (result.paths.probability, result.paths.mask):
        with rasterio.open(out) as ds:
            assert ds.transform == transform and ds.shape == (150, 210)
            assert "model grid" in ds.tags()["ROADPRN_INFERENCE_GRID"]
            assert ds.dataset_mask().all()
    with rasterio.open(result.paths.mask) as ds:
        assert set(np.unique(ds.read(1))) <= {0, 1}
    # turned off, or within tolerance: the scene grid is used
    off = load_config(overrides={"input.normalization.mode": "dtype", "resolution.resample": False})
    assert extract_probability(path, small_model(gsd_m=0.5), off, tmp_path / "s").grid == "scene"
    close = extract_probability(path, small_model(gsd_m=0.27), cfg, tmp_path / "t")
    assert close.grid == "scene"
    # 120x away: refused (exit 3 on the CLI) naming both resolutions, unless forced
    with pytest.raises(InputError, match=r"more than 4x away from the model's 30 m.*"
                                         r"--force-resolution"):
        extract_probability(path, small_model(gsd_m=30.0), cfg, tmp_path / "u")
    forced = cfg.model_copy(deep=True)
    forced.resolution.force = True
    far = extract_probability(path, small_model(gsd_m=30.0), forced, tmp_path / "u")
    assert far.grid == "scene"  # forced: the scene grid, with a warning
