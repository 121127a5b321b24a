"""The real-world input corpus: every raster in ``../shared/realdata`` and the layouts real archives
contain (``corpus.py``), each through ``extract`` with resampling to the model's GSD on and off,
and a subset through ``batch``. Each either works (outputs on the scene's grid, validity where
the layout has valid pixels, roads where the synthetic scene has roads) or ends with one
documented error line and exit code, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from roadprn.models.base import build_model
from roadprn.models.checkpoint import save_checkpoint
from roadprn.raster.read import read_valid
from roadprn.raster.scene import open_raster
from tests.helpers import assert_clean_failure, cli_process, finish, invoke

from . import corpus

MODES = ["resample", "scene_grid"]
NO_RESAMPLE = ("--set", "resolution.resample=false", "--force-resolution")
#: round trip scene -> model grid -> scene grid: pixels next to an invalid area may be lost
#: (never gained): at most this share of the valid pixels
RESAMPLED_VALID_LOSS = 0.02
MIN_ROAD_IOU = 0.4  # the default model on the synthetic scenes scores 0.5-0.8
#: also vectorised (resampled runs): lines in EPSG:4326 across 180°, gaps, NaN, world files
VECTORISED = {"antimeridian", "rgba_4326", "vrt_mosaic", "float_nan", "png_world"}


def tiny_checkpoint(path: Path, bands: int, gsd_m: float) -> Path:
    """An untrained 3-layer model at ``gsd_m`` with 256 px tiles: cheap on any scene size."""
    torch.manual_seed(0)
    meta = {"kind": "base", "arch": "tiny_unet", "arch_kwargs": {"in_channels": bands},
            "input": {"bands": list(range(1, bands + 1)),
                      "normalization": {"mode": "percentile", "percentiles": [2.0, 98.0]},
                      "gsd_m": gsd_m, "tile_size": 256, "halo": 16}}
    save_checkpoint(path, build_model("tiny_unet", in_channels=bands), meta)
    return path


def extract_json(scene: Path, out: Path, *args: object):
    result = invoke("extract", scene, "--out", out, "--json", *args)
    summary = json.loads(result.stdout) if result.exit_code == 0 else None
    return result, summary


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert "internal error" not in result.output, result.output


def assert_on_scene_grid(scene: Path, output: Path) -> None:
    with open_raster(scene) as src, rasterio.open(output) as out:
        assert out.crs == src.crs, (out.crs, src.crs)
        assert out.transform.almost_equals(src.transform, precision=1e-12), (out.transform,
                                                                              src.transform)
        assert out.shape == src.shape


def assert_grid_mode(summary: dict, mode: str) -> None:
    grid = summary["base"]["inference_grid"]
    assert grid.startswith("model grid") if mode == "resample" else grid == "scene", grid


def output_validity(mask: np.ndarray, expected: np.ndarray, resampled: bool) -> np.ndarray:
    """The output's valid pixels, checked against the layout's: exact on the scene grid; after
    the round trip through the model grid a subset missing at most a sliver at the edges."""
    valid = mask != 255
    if not resampled:
        np.testing.assert_array_equal(valid, expected)
    else:
        assert not (valid & ~expected).any(), "output valid where the scene is not"
        lost = np.count_nonzero(expected & ~valid)
        assert lost <= RESAMPLED_VALID_LOSS * max(1, np.count_nonzero(expected)), lost
    return valid


def assert_roads_on_the_scene(scene: Path, roads_path: Path) -> None:
    """Road lines exist, have finite positive lengths and lie on the scene's footprint."""
    import geopandas as gpd
    from shapely.geometry import box

    roads = gpd.read_file(roads_path, layer="roads")
    with open_raster(scene) as ds:
        footprint = box(*ds.bounds)
        assert roads.crs == ds.crs
    assert len(roads) > 0
    assert np.isfinite(roads["length_m"]).all() and (roads["length_m"] > 0).all()
    assert roads.geometry.within(footprint.buffer(footprint.length * 1e-6)).all()


def road_iou(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    pred, truth = pred & valid, truth & valid
    return float(np.count_nonzero(pred & truth) / max(1, np.count_nonzero(pred | truth)))


# --------------------------------------------------------------------------- generated layouts


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, corpus.Layout]:
    folder = tmp_path_factory.mktemp("corpus")
    return {name: corpus.build(name, folder) for name in corpus.BUILDERS}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(corpus.BUILDERS))
def test_layout_through_extract(layouts, tmp_path, name, mode, one_torch_thread):
    """The default model on each layout (scenes at 0.35 m, so resampling to its 0.5 m is on
    by default): works with roads found and validity kept, or one documented line."""
    layout = layouts[name]
    out = tmp_path / "out"
    extra = NO_RESAMPLE if mode == "scene_grid" else ()
    vectorise = name in VECTORISED and mode == "resample"
    result, summary = extract_json(layout.path, out, "--refine", "none",
                                   *(() if vectorise else ("--no-vectorize",)),
                                   *layout.args, *extra)
    assert_no_traceback(result)
    if layout.error is not None:
        code, words = layout.error
        assert_clean_failure(result, code, *words, out=out)
        return
    assert result.exit_code == 0, result.output
    assert_grid_mode(summary, mode)
    mask_path = Path(summary["files"]["mask"])
    for key in ("mask", "probability"):
        assert_on_scene_grid(layout.path, Path(summary["files"][key]))
    with rasterio.open(layout.truth) as ds:
        truth = ds.read(1)
    with rasterio.open(mask_path) as ds:
        mask = ds.read(1)
    with rasterio.open(summary["files"]["probability"]) as ds:
        prob_valid = ds.dataset_mask() > 0
    valid = output_validity(mask, truth != 255, mode == "resample")
    np.testing.assert_array_equal(prob_valid, valid)
    if layout.roads:
        iou = road_iou(mask == 1, truth == 1, valid)
        assert iou >= MIN_ROAD_IOU, (name, mode, iou)
    if vectorise:
        assert_roads_on_the_scene(layout.path, Path(summary["files"]["roads"]))
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    if name == "rgbn_uint16":
        assert len(warnings) == 1 and "ignores band 4" in warnings[0], warnings
    else:
        assert warnings == [], warnings


def test_rgba_in_epsg4326_resamples_with_a_tiny_model(layouts, tmp_path):
    """The SpaceNet layout (RGB + alpha, EPSG:4326) through the resampled path, quickly: the
    alpha band is the validity and no alpha band is added (GDAL's warper refused that)."""
    layout = layouts["rgba_4326"]
    model = tiny_checkpoint(tmp_path / "m.pt", 3, 0.5)
    result, summary = extract_json(layout.path, tmp_path / "out", "--model", model,
                                   "--refine", "none", "--no-vectorize")
    assert_no_traceback(result)
    assert result.exit_code == 0, result.output
    assert_grid_mode(summary, "resample")
    with rasterio.open(summary["files"]["mask"]) as ds, rasterio.open(layout.truth) as truth:
        output_validity(ds.read(1), truth.read(1) != 255, resampled=True)


def test_layouts_read_as_their_truth(layouts):
    """Every layout is what it claims: same grid as its truth, and (except the lossy JPEGs)
    GDAL reads the synthetic scene's values back."""
    for name, layout in layouts.items():
        with open_raster(layout.path) as ds, rasterio.open(layout.truth) as truth:
            assert ds.transform.almost_equals(truth.transform, precision=1e-12), name
            assert ds.crs == truth.crs and ds.shape == truth.shape, name
            data_bands = [i for i, c in enumerate(ds.colorinterp, 1) if c.name != "alpha"]
            _, valid = read_valid(ds, data_bands)
            np.testing.assert_array_equal(valid, truth.read(1) != 255, err_msg=name)


THREADED_OPENS = """
import sys
from concurrent.futures import ThreadPoolExecutor
from roadprn.raster.scene import open_raster
def opens(_):
    for _ in range(30):
        with open_raster(sys.argv[1]) as ds:
            ds.transform
with ThreadPoolExecutor(8) as pool:
    list(pool.map(opens, range(8)))
"""


def test_ungeoreferenced_files_opened_from_many_threads_print_no_warning(tmp_path):
    """Reader threads (and batch workers) open files at once: rasterio's NotGeoreferencedWarning
    got through the per-call ``catch_warnings()`` (not thread-safe) onto stderr."""
    import subprocess
    import sys

    from tests.helpers import BOUND_S, REPO_ROOT

    png = tmp_path / "plain.png"
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(
            png, "w", driver="PNG", width=64, height=64, count=3, dtype="uint8") as ds:
        ds.write(np.zeros((3, 64, 64), np.uint8))
    proc = subprocess.run([sys.executable, "-c", THREADED_OPENS, str(png)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=BOUND_S)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # nor when its outputs are written ("The given matrix is equal to Affine.identity…")
    model = tiny_checkpoint(tmp_path / "m.pt", 3, 0.5)
    code, _, stderr = finish(cli_process(["extract", png, "--out", tmp_path / "out", "--model",
                                          model, "--allow-ungeoreferenced", "--no-vectorize"]))
    assert code == 0 and "Warning" not in stderr, stderr


# --------------------------------------------------------------------------- the real data


REAL_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}


def real_rasters() -> list[str]:
    from tests.helpers import REALDATA

    if not REALDATA.is_dir():
        return ["(missing)"]
    return sorted(str(p.relative_to(REALDATA)) for p in REALDATA.rglob("*")
                  if p.suffix.lower() in REAL_SUFFIXES)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rel", real_rasters())
def test_every_real_raster_through_extract(realdata, tmp_path, rel, mode, one_torch_thread):
    """Tiny models at 1.6x the scene's GSD force resampling on; PNG/JPEG without georeferencing
    are refused with the flag that allows them, and work with it (pixel coordinates)."""
    scene = realdata / rel
    out = tmp_path / "out"
    from roadprn.raster.scene import open_scene

    info = open_scene(scene, allow_ungeoreferenced=True)
    bands = min(len(info.data_bands), 3)
    if info.resolution_m is None:
        result = invoke("extract", scene, "--model", tiny_checkpoint(tmp_path / "m.pt", bands, 0.5),
                        "--out", out)
        assert_clean_failure(result, 3, "no CRS", "--allow-ungeoreferenced", out=out)
        if mode == "resample":
            return  # no metres: nothing to resample; the scene-grid run covers the flag
        result, summary = extract_json(scene, out, "--model", tmp_path / "m.pt",
                                       "--allow-ungeoreferenced", "--refine", "none")
        assert_no_traceback(result)
        assert result.exit_code == 0, result.output
        with rasterio.open(summary["files"]["mask"]) as ds:
            assert ds.shape == (info.height, info.width) and ds.crs is None
        return
    gsd = 1.6 * sum(info.resolution_m) / 2 if mode == "resample" else 0.5
    model = tiny_checkpoint(tmp_path / "m.pt", bands, gsd)
    extra = NO_RESAMPLE if mode == "scene_grid" else ("--set", "resolution.max_factor=4")
    result, summary = extract_json(scene, out, "--model", model, "--refine", "none",
                                   "--no-vectorize", *extra)
    assert_no_traceback(result)
    assert result.exit_code == 0, result.output
    assert_grid_mode(summary, mode)
    assert_on_scene_grid(scene, Path(summary["files"]["mask"]))
    with open_raster(scene) as ds:
        _, expected = read_valid(ds, info.data_bands[:bands])
    with rasterio.open(summary["files"]["mask"]) as ds:
        output_validity(ds.read(1), expected, mode == "resample")


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("mode", MODES)
def test_spacenet_rgba_chip_with_the_default_model(realdata, tmp_path, mode, one_torch_thread):
    """The standard SpaceNet 3 layout (R,G,B + all-255 alpha, EPSG:4326, 0.24 x 0.30 m) with
    the default model: it used to crash in GDAL's warper; now roads lie on the labels."""
    scene = corpus.spacenet_rgba(realdata, tmp_path / "RGB-PanSharpen_img33.tif")
    out = tmp_path / "out"
    extra = NO_RESAMPLE + ("--refine", "none", "--no-vectorize") if mode == "scene_grid" else ()
    result, summary = extract_json(scene, out, *extra)
    assert_no_traceback(result)
    assert result.exit_code == 0, result.output
    assert_grid_mode(summary, mode)
    label = corpus.spacenet_label(realdata)
    key = "refined_mask" if "refined_mask" in summary["files"] else "mask"
    for name in summary["files"]:
        if name != "roads" and not name.endswith("_style"):
            assert_on_scene_grid(scene, Path(summary["files"][name]))
    with rasterio.open(summary["files"][key]) as ds:
        mask = ds.read(1)
    assert (mask != 255).all()  # the alpha band is 255 everywhere
    iou = road_iou(mask == 1, label, np.ones_like(label))
    assert iou >= 0.6, iou  # measured 0.70 (resampled) and 0.67 (scene grid)
    if mode == "resample":
        assert summary["roads"] > 0 and summary["road_length_m"] > 0


# --------------------------------------------------------------------------- batch


def batch_records(out: Path) -> dict[str, dict]:
    from roadprn.batch.manifest import MANIFEST_NAME, latest_scene_records

    return {r["scene"]: r for r in latest_scene_records(out / MANIFEST_NAME).values()}


def run_batch_cli(inputs: list[Path], out: Path, *args: object):
    result = invoke("-q", "batch", *inputs, "--out", out, "--workers", "1",
                    "--threads-per-worker", "1", "--set", "vectorize.enabled=false", *args)
    assert_no_traceback(result)
    return result, batch_records(out)


@pytest.mark.slow
def test_every_layout_through_batch(layouts, tmp_path):
    """batch makes extract's choices scene by scene: every layout done on its grid with its
    validity, the palette image failed with extract's line, a truncated TIFF failed as a bad
    input (a traceback from every worker before), exit 6. Layouts that need options of their
    own (``--bands`` for BGR) run in a batch of their own with them."""
    model = tiny_checkpoint(tmp_path / "m.pt", 3, 0.5)
    # cut where the overviews' TIFF directory was
    source = layouts["rgba_mask_overviews"].path
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(source.read_bytes()[:source.stat().st_size // 2])
    groups: dict[tuple[str, ...], list[corpus.Layout]] = {}
    for layout in layouts.values():
        groups.setdefault(layout.args, []).append(layout)
    for args, members in groups.items():
        out = tmp_path / f"batch{len(args)}"
        inputs = [layout.path for layout in members] + ([truncated] if not args else [])
        result, records = run_batch_cli(inputs, out, "--model", model, *args)
        failing = any(layout.error for layout in members) or not args
        assert result.exit_code == (6 if failing else 0), result.output
        assert set(records) == {str(p) for p in inputs}
        if not args:
            record = records[str(truncated)]
            assert record["status"] == "failed", record
            assert "truncated or corrupt" in record["error"], record
        for layout in members:
            record = records[str(layout.path)]
            if layout.error is not None:
                single = invoke("extract", layout.path, "--out", tmp_path / "single",
                                "--model", model, *args)
                line = assert_clean_failure(single, layout.error[0], *layout.error[1])
                assert record["status"] == "failed", record
                assert line == f"roadprn: error: {record['error']}", (line, record)
                continue
            assert record["status"] == "done", record
            mask = out / record["files"]["mask"]["path"]
            assert_on_scene_grid(layout.path, mask)
            with rasterio.open(mask) as ds, rasterio.open(layout.truth) as truth:
                output_validity(ds.read(1), truth.read(1) != 255, resampled=True)


@pytest.mark.slow
@pytest.mark.realdata
def test_every_real_raster_through_batch(realdata, tmp_path, capfd):
    """The real rasters in one batch with the default models: each scene ends as extract ends
    it, done on its grid with the model extract picks (the panchromatic twin for 1 band), or
    failed with extract's own line (no CRS; a GSD beyond the model's range). The workers (own
    processes, seen only by capfd) print no Python warning: rasterio's NotGeoreferencedWarning
    got through catch_warnings() when reader threads opened files at once."""
    from roadprn.models.loading import load_segmentation_model, model_for_scene
    from roadprn.raster.scene import open_scene

    # resolved as batch records them: ../shared may be a symlink (CI's is)
    scenes = [(realdata / rel).resolve() for rel in real_rasters()]
    out = tmp_path / "batch"
    result, records = run_batch_cli(scenes, out)
    workers_stderr = capfd.readouterr().err
    assert "Warning" not in workers_stderr + result.stderr, workers_stderr
    assert set(records) == {str(p) for p in scenes}
    failed = [p for p in scenes if records[str(p)]["status"] == "failed"]
    assert result.exit_code == (6 if failed else 0), result.output
    hashes: dict[str, str] = {}
    for scene in scenes:
        record = records[str(scene)]
        if record["status"] == "failed":
            single = invoke("extract", scene, "--out", tmp_path / "single", "--no-vectorize")
            line = assert_clean_failure(single, 3, out=tmp_path / "single")
            assert line == f"roadprn: error: {record['error']}", (line, record)
            continue
        assert record["status"] == "done", record
        assert_on_scene_grid(scene, out / record["files"]["mask"]["path"])
        spec = model_for_scene("default", len(open_scene(scene).data_bands))
        if spec not in hashes:
            hashes[spec] = load_segmentation_model(spec).sha256
        assert record["model_hashes"]["base"] == hashes[spec], (scene, spec)
    assert len(hashes) == 2  # 1-band scenes with the panchromatic twin, the others RGB
