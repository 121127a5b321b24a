"""PRN refinement at scene scale: equal to the in-memory windowed refinement, wired into extract."""

import json

import numpy as np
import rasterio

from roadprn.config import load_config
from roadprn.prn.refine import refine
from roadprn.prn.refine_scene import load_refine_model, refine_scene
from tests.helpers import invoke, make_checkpoint, make_prn


def test_scene_refinement_equals_in_memory_refinement(make_raster, tmp_path):
    rng = np.random.default_rng(0)
    smooth = rng.random((1, 300, 410))
    prob = (np.clip(smooth, 0, 1) * 255).astype(np.uint8)
    path = make_raster(prob)
    prn = load_refine_model(make_prn(tmp_path / "prn.pt", "b" * 64))
    for fusion in ("paper", "global", "mean"):
        cfg = load_config(overrides={"refine.fusion": fusion, "output.overwrite": True})
        out = tmp_path / f"refined_{fusion}.tif"
        refine_scene(path, out, prn, cfg)
        with rasterio.open(out) as ds:
            refined = ds.read(1)
            assert ds.nodata == 255 and ds.shape == (300, 410)
        expected = refine(prn.module, prob[0], rule=fusion, halo=cfg.refine.halo)
        agree = (refined == expected.astype(np.uint8)).mean()
        if fusion == "paper":
            # the paper rule's 3x3 dilation runs per window, seeing that window's own halo, so
            # it may differ on the one-pixel rim along window core boundaries
            assert agree > 0.999
        else:
            assert agree == 1.0


def test_extract_with_prn_writes_refined_mask_and_vectorises_it(tmp_path, caplog):
    from roadprn.models.checkpoint import file_sha256
    from roadprn.synth import generate_scene

    base = make_checkpoint(tmp_path / "base.pt", 3)
    prn = make_prn(tmp_path / "prn.pt", file_sha256(base))
    scene = generate_scene(tmp_path / "s.tif", width=260, height=200, seed=4).image_path
    result = invoke("extract", str(scene), "--model", str(base), "--prn",
                    str(prn), "--out", str(tmp_path / "o"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["files"]) == {"probability", "mask", "refined_mask", "roads",
                                     "probability_style", "mask_style", "refined_mask_style"}
    with rasterio.open(summary["files"]["refined_mask"]) as ds, rasterio.open(scene) as src:
        assert ds.crs == src.crs and ds.transform == src.transform
    import geopandas as gpd

    runs = gpd.read_file(summary["files"]["roads"], layer="runs")
    assert "prn" in json.loads(runs["model_hashes_json"].iloc[0])


def test_prn_for_another_base_model_warns(tmp_path, caplog):
    from roadprn.synth import generate_scene

    base = make_checkpoint(tmp_path / "base.pt", 3)
    prn = make_prn(tmp_path / "prn.pt", "c" * 64)
    scene = generate_scene(tmp_path / "s.tif", width=64, height=64, seed=1).image_path
    with caplog.at_level("WARNING", logger="roadprn"):
        result = invoke("extract", str(scene), "--model", str(base), "--prn",
                        str(prn), "--out", str(tmp_path / "o"), "--no-vectorize")
    assert result.exit_code == 0, result.output
    assert "trained on base model" in result.output or "trained on base model" in caplog.text


def test_refine_prn_without_prn_is_clear(tmp_path, make_raster):
    base = make_checkpoint(tmp_path / "base.pt", 3)
    path = make_raster(np.ones((3, 32, 32), np.uint8))
    result = invoke("extract", str(path), "--model", str(base), "--refine",
                    "prn", "--prn", str(base), "--out", str(tmp_path / "o"))
    assert result.exit_code == 5 and "not a PatchRefineNet" in result.output
