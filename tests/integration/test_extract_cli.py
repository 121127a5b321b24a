"""`roadprn extract` end to end through the CLI, on real GeoTIFFs and edge-case scenes."""

import json

import numpy as np
import pytest
import rasterio

from tests.helpers import REAL_GEOTIFFS, invoke, make_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {n: make_checkpoint(folder / f"tiny{n}.pt", n) for n in (1, 3, 4)}


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("rel", sorted(REAL_GEOTIFFS))
def test_extract_on_every_real_geotiff(realdata, tmp_path, checkpoints, rel):
    scene = realdata / rel
    with rasterio.open(scene) as src:
        crs, transform, shape, count = src.crs, src.transform, src.shape, src.count
        valid_in = src.dataset_mask() > 0
    # the 4.5 m and 30 m rasters are far from the 0.3 m models: refused unless forced
    # (test_a_landsat_scene_is_refused...); forced, they run on the scene grid like the rest
    result = invoke("extract", scene, "--model", checkpoints[count], "--out", tmp_path, "--json",
                    "--force-resolution")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["files"]) == {"probability", "mask", "roads", "probability_style",
                                     "mask_style"}
    for key in ("probability", "mask"):
        with rasterio.open(summary["files"][key]) as ds:
            assert ds.crs == crs and ds.transform == transform and ds.shape == shape
            assert ds.tags()["ROADPRN_GRID"] == "scene"
            out_valid = ds.dataset_mask() > 0
        # nodata areas stay nodata, valid pixels stay valid
        np.testing.assert_array_equal(out_valid, valid_in)


def test_band_mismatch_is_clear(realdata, tmp_path, checkpoints):
    result = invoke("extract", str(realdata / "robustness/pan1.tif"),
                    "--model", str(checkpoints[3]), "--out", str(tmp_path))
    assert result.exit_code == 3
    assert "the scene has 1 band(s)" in result.output and "--bands" in result.output
    assert not list(tmp_path.iterdir())


def test_band_selection_on_four_band_scene(realdata, tmp_path, checkpoints):
    result = invoke("extract", realdata / "robustness/ms1.tif", "--model", checkpoints[3],
                    "--bands", "3,2,1", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("shape", [(1, 1), (5, 700), (130, 129)])
def test_tiny_and_odd_scenes(make_raster, tmp_path, checkpoints, shape):
    rng = np.random.default_rng(0)
    path = make_raster(rng.integers(0, 255, (3, *shape)).astype(np.uint8))
    result = invoke("extract", path, "--model", checkpoints[3], "--out", tmp_path / "o", "--json")
    assert result.exit_code == 0, result.output
    with rasterio.open(json.loads(result.stdout)["files"]["mask"]) as ds:
        assert ds.shape == shape
        assert set(np.unique(ds.read(1))) <= {0, 1}


def test_missing_default_model_or_bad_model_path(make_raster, tmp_path):
    path = make_raster(np.ones((3, 8, 8), np.uint8))
    result = invoke("extract", str(path), "--model", str(tmp_path / "nope.pt"))
    assert result.exit_code == 5 and "nope.pt" in result.output


def test_bad_config_value_names_key(make_raster):
    path = make_raster(np.ones((3, 8, 8), np.uint8))
    result = invoke("extract", str(path), "--set", "tiling.blend=gauss")
    assert result.exit_code == 2 and "tiling.blend" in result.output


def test_extract_writes_network_next_to_rasters(tmp_path, checkpoints):
    """A synthetic scene through the whole job: rasters + GeoPackage in one folder, same CRS."""
    import geopandas as gpd
    import pyogrio

    from roadprn.synth import generate_scene

    synth = generate_scene(tmp_path / "scene.tif", width=300, height=260, seed=2)
    out = tmp_path / "out"
    result = invoke("extract", synth.image_path, "--model", checkpoints[3], "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    gpkg = out / "scene_roads.gpkg"
    assert summary["files"]["roads"] == str(gpkg)
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    assert {"roads", "junctions", "runs", "layer_styles"} <= layers
    roads = gpd.read_file(gpkg, layer="roads")
    with rasterio.open(synth.image_path) as ds:
        assert roads.crs == ds.crs
    assert set(roads.geom_type) <= {"LineString"}
    runs = gpd.read_file(gpkg, layer="runs")
    assert runs["command"].iloc[0] == "extract"
    # a rerun without --overwrite refuses before doing any work
    again = invoke("extract", str(synth.image_path), "--model", str(checkpoints[3]),
                   "--out", str(out))
    assert again.exit_code == 4 and "--overwrite" in again.output


def test_info_describes_a_checkpoint(checkpoints):
    result = invoke("info", str(checkpoints[3]))
    assert result.exit_code == 0, result.output
    assert "tiny_unet" in result.output and "sha256" in result.output
    assert "0.5 m per pixel" in result.output
    as_json = invoke("info", str(checkpoints[1]), "--json")
    assert json.loads(as_json.stdout)["bands"] == "1"


def test_info_on_corrupt_checkpoint(tmp_path, checkpoints):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(checkpoints[3].read_bytes()[:2000])
    result = invoke("info", str(broken))
    assert result.exit_code == 5 and "broken.pt" in result.output


def test_no_probability_skips_auto_refinement_but_refuses_forced(tmp_path, make_raster):
    """--no-probability with the default (auto) refinement writes the base mask only;
    an explicit --refine prn needs the probability raster and says so before any work."""
    path = make_raster(np.full((3, 40, 40), 120, np.uint8))
    ok = invoke("extract", str(path), "--no-probability", "--no-vectorize",
                "--out", str(tmp_path / "a"), "--json")
    assert ok.exit_code == 0, ok.output
    assert set(json.loads(ok.stdout)["files"]) == {"mask", "mask_style"}
    forced = invoke("extract", str(path), "--no-probability", "--refine", "prn",
                    "--out", str(tmp_path / "b"))
    assert forced.exit_code == 2 and "--no-probability" in forced.output
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())
    # the usage error comes before any model is opened (a missing model is not reached)
    early = invoke("extract", str(path), "--no-probability", "--refine", "prn",
                   "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "c"))
    assert early.exit_code == 2 and "--no-probability" in early.output


def test_text_output_names_the_model_and_explains_an_empty_network(tmp_path, make_raster):
    """A GIS user sees which model ran (the 1-band switch included) and why 0 roads."""
    flat = make_raster(np.full((3, 96, 96), 120, np.uint8))
    result = invoke("extract", str(flat), "--out", str(tmp_path / "rgb"))
    assert result.exit_code == 0, result.output
    assert "effnet_lite0_linknet (default_base.pt)" in result.output
    assert "0 roads" in result.output and "no roads found" in result.output
    pan = make_raster(np.full((1, 96, 96), 120, np.uint8))
    result = invoke("extract", str(pan), "--out", str(tmp_path / "pan"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["base"]["model"].endswith("(default_base_pan.pt)")


@pytest.mark.realdata
def test_a_landsat_scene_is_refused_for_the_default_model_unless_forced(realdata, tmp_path):
    """30 m imagery with a 0.5 m model: one line naming both resolutions, exit 3, no outputs;
    --force-resolution runs it on the scene grid."""
    scene = realdata / "robustness" / "sample_geotiff_custom_proj.tif"
    out = tmp_path / "out"
    result = invoke("extract", str(scene), "--out", str(out), "--no-vectorize")
    assert result.exit_code == 3, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "30 m" in line and "0.5 m" in line and "--force-resolution" in line
    assert not out.exists() or not list(out.iterdir())
    forced = invoke("extract", str(scene), "--out", str(out), "--no-vectorize",
                    "--force-resolution", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["base"]["inference_grid"] == "scene"
