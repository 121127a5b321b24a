"""`extract --window / --bbox` (and `batch`): outputs cover exactly the area, georeferenced,
with the whole-scene run's roads inside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from tests.helpers import assert_clean_failure, invoke, leftovers


def _relaxed(found: np.ndarray, reference: np.ndarray, radius: float = 3.0) -> float:
    """Share of ``found`` road pixels within ``radius`` px of a ``reference`` road pixel."""
    if not found.any():
        return 1.0
    distance = ndimage.distance_transform_edt(~reference)
    return float((found & (distance <= radius)).sum() / found.sum())


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    """A synthetic scene with roads, extracted whole and through a --window."""
    folder = tmp_path_factory.mktemp("aoi")
    scene = folder / "scene.tif"
    assert invoke("synth", scene, "--size", "1024", "--seed", "3").exit_code == 0
    full = invoke("extract", scene, "-o", folder / "full", "--json")
    assert full.exit_code == 0, full.output
    window = invoke("extract", scene, "-o", folder / "win", "--window", "300,260,600,520",
                    "--json")
    assert window.exit_code == 0, window.output
    return scene, json.loads(full.stdout), json.loads(window.stdout)


def test_window_outputs_cover_exactly_the_window(synthetic_runs):
    scene, _, run = synthetic_runs
    assert run["window"] == "300,260,600,520"
    assert run["base"]["scene"] == str(scene)
    with rasterio.open(scene) as src, rasterio.open(run["files"]["mask"]) as mask, \
            rasterio.open(run["files"]["probability"]) as prob:
        for out in (mask, prob):
            assert (out.width, out.height) == (600, 520)
            assert out.crs == src.crs
            assert out.transform == src.transform * src.transform.translation(300, 260)
        tags = mask.tags()
        assert tags["ROADPRN_WINDOW"] == "300,260,600,520"
        assert tags["ROADPRN_SOURCE"] == str(scene.resolve())
        left, bottom, right, top = mask.bounds
    import geopandas as gpd

    roads = gpd.read_file(run["files"]["roads"], layer="roads")
    assert len(roads) > 0
    minx, miny, maxx, maxy = roads.total_bounds
    assert left - 1 <= minx and maxx <= right + 1 and bottom - 1 <= miny and maxy <= top + 1
    # the staging folder's VRT of the window is not an output
    assert not list(mask_folder(run).glob("*.vrt"))


def mask_folder(run):
    from pathlib import Path

    return Path(run["files"]["mask"]).parent


def test_window_has_the_whole_scene_runs_roads(synthetic_runs):
    """Same roads as the whole-scene run inside the window (tile positions differ, so road
    edges may move by a pixel; the normalisation is the whole scene's)."""
    _, full, run = synthetic_runs
    with rasterio.open(full["files"]["mask"]) as whole, rasterio.open(run["files"]["mask"]) as part:
        reference = whole.read(1)[260:780, 300:900] == 1
        found = part.read(1) == 1
        assert (whole.tags()["ROADPRN_NORMALIZATION"] == part.tags()["ROADPRN_NORMALIZATION"])
    assert reference.sum() > 2000  # the window holds roads
    assert _relaxed(found, reference) > 0.97
    assert _relaxed(reference, found) > 0.97


@pytest.mark.slow
@pytest.mark.realdata
def test_bbox_in_wgs84_on_the_real_pan_chip(realdata, tmp_path):
    """A lon/lat box on the SpaceNet PAN chip (EPSG:4326, resampled to the model's GSD):
    the outputs are the whole pixels the box covers, with the whole-scene run's roads."""
    scene = realdata / "spacenet_vegas_pan" / "road_mask_input.tif"
    box = (-115.2330, 36.1395, -115.2315, 36.1410)
    full = invoke("extract", scene, "-o", tmp_path / "full", "--no-vectorize", "--json")
    part = invoke("extract", scene, "-o", tmp_path / "box", "--no-vectorize", "--json",
                  "--bbox", ",".join(map(str, box)), "--bbox-crs", "EPSG:4326")
    assert full.exit_code == 0 and part.exit_code == 0, (full.output, part.output)
    col, row, width, height = map(int, json.loads(part.stdout)["window"].split(","))
    with rasterio.open(scene) as src, rasterio.open(tmp_path / "box" /
                                                    "road_mask_input_mask.tif") as out:
        res_x, res_y = src.res
        left, bottom, right, top = out.bounds
        assert out.crs == src.crs and (out.width, out.height) == (width, height)
        # covers the box, by less than a pixel more on every side
        assert left <= box[0] < left + res_x and right - res_x < box[2] <= right
        assert bottom <= box[1] < bottom + res_y and top - res_y < box[3] <= top
        found = out.read(1) == 1
    with rasterio.open(tmp_path / "full" / "road_mask_input_mask.tif") as whole:
        reference = whole.read(1)[row:row + height, col:col + width] == 1
    assert reference.sum() > 1000
    assert _relaxed(found, reference) > 0.9 and _relaxed(reference, found) > 0.9


@pytest.mark.parametrize("args, code, words", [
    (["--window", "5000,0,10,10"], 3, ["lies outside the scene"]),
    (["--bbox", "0,0,1,1"], 3, ["does not overlap the scene", "EPSG:32631"]),
    (["--bbox", "3.0,52.0,3.1,52.1", "--bbox-crs", "EPSG:4326"], 3, ["does not overlap"]),
    (["--window", "1,2,3"], 2, ["COL,ROW,WIDTH,HEIGHT"]),
    (["--window", "0,0,0,10"], 2, ["sizes >= 1"]),
    (["--bbox", "1,2,nan,4"], 2, ["MINX,MINY,MAXX,MAXY"]),
    (["--bbox", "5,0,1,4"], 2, ["MINX < MAXX"]),
    (["--bbox", "1,2,3,4", "--window", "0,0,4,4"], 2, ["not both"]),
    (["--bbox-crs", "EPSG:4326"], 2, ["give input.bbox too"]),
    (["--bbox", "1,2,3,4", "--bbox-crs", "NOPE:1"], 2, ["not a CRS"]),
])
def test_bad_areas_fail_in_one_line_and_leave_no_folder(make_raster, tmp_path, args, code,
                                                        words):
    scene = make_raster(np.full((3, 64, 64), 120, np.uint8))
    out = tmp_path / "out"
    result = invoke("extract", scene, "-o", out, *args)
    assert_clean_failure(result, code, *words)
    assert not out.exists(), leftovers(out)


def test_window_running_off_the_edge_is_clipped_with_a_warning(make_raster, tmp_path):
    scene = make_raster(np.full((3, 80, 100), 120, np.uint8))
    result = invoke("extract", scene, "-o", tmp_path / "o", "--window", "60,50,100,100",
                    "--no-vectorize", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["window"] == "60,50,40,30"
    assert "runs off the scene" in result.stderr
    with rasterio.open(tmp_path / "o" / f"{scene.stem}_mask.tif") as mask:
        assert (mask.width, mask.height) == (40, 30)


def test_window_keeps_the_scenes_alpha(make_raster, tmp_path):
    """An RGBA scene (SpaceNet's layout): pixels its alpha hides stay nodata in the window."""
    data = np.full((4, 96, 96), 120, np.uint8)
    data[3] = 255
    data[3, :, 60:] = 0
    scene = make_raster(data, photometric="RGB", alpha="YES")
    result = invoke("extract", scene, "-o", tmp_path / "o", "--window", "40,0,56,96",
                    "--no-vectorize")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "o" / f"{scene.stem}_mask.tif") as mask:
        values = mask.read(1)
    assert (values[:, 20:] == 255).all() and (values[:, :20] != 255).all()


@pytest.mark.slow
def test_batch_with_a_bbox_runs_the_scenes_it_touches_and_skips_the_others(tmp_path):
    """An area of interest over a tiled archive: the tile it overlaps is cut to it, the tile
    around it is skipped with its reason (not failed), and the run exits 0."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, origin in (("west", "500000,4650000"), ("east", "500256,4650000")):
        made = invoke("synth", inputs / f"{name}.tif", "--size", "256", "--origin", origin)
        assert made.exit_code == 0, made.output
    # a box inside the west tile (128 m wide at 0.5 m): pixels 20..120 x 30..130
    box = "500010,4649935,500060,4649985"
    result = invoke("batch", inputs, "-o", tmp_path / "out", "--bbox", box, "--workers", "1",
                    "--no-vectorize", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["done"] == 1
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in report["skipped_files"]}
    assert reasons["east.tif"] == "outside --bbox"
    assert "skipped " in result.stderr and "east.tif: outside --bbox" in result.stderr
    [mask] = (tmp_path / "out").glob("west-*/west_mask.tif")
    with rasterio.open(mask) as ds:
        assert (ds.width, ds.height) == (100, 100)
        assert ds.bounds == (500010.0, 4649935.0, 500060.0, 4649985.0)
    missed = invoke("batch", inputs, "-o", tmp_path / "out2", "--bbox", "0,0,1,1")
    assert_clean_failure(missed, 3, "misses every one of the 2 scene(s)")


def test_a_csv_scene_list_gives_each_scene_its_own_area(dask_client, make_raster, tiny_model,
                                                        tmp_path):
    """`window` / `bbox` columns of a CSV list: per scene, in its config hash (a changed area
    reruns that scene only), an empty cell = the run's own area."""
    from roadprn.batch import find_scenes, run_batch
    from roadprn.config import load_config

    a = make_raster(np.full((3, 96, 96), 120, np.uint8), name="a.tif")
    b = make_raster(np.full((3, 80, 80), 120, np.uint8), name="b.tif")
    listing = tmp_path / "scenes.csv"
    listing.write_text(f"path,window,bbox\n{a.name},10,20,30,40,\n{b.name},,\n".replace(
        "10,20,30,40", '"10,20,30,40"'))
    found = find_scenes([str(listing)])
    assert [s.area for s in found.scenes] == [{"window": [10, 20, 30, 40]}, None]
    config = load_config(None, {"model": str(tiny_model), "vectorize": {"enabled": False}})
    out = tmp_path / "out"
    summary = run_batch(found.scenes, config, out, client=dask_client)
    assert summary.as_dict()["done"] == 2, summary.as_dict()
    shapes = {}
    for record in summary.records:
        with rasterio.open(out / record["files"]["mask"]["path"]) as mask:
            shapes[Path(record["scene"]).name] = (mask.width, mask.height)
    assert shapes == {"a.tif": (30, 40), "b.tif": (80, 80)}
    listing.write_text(f'path,window\n{a.name},"0,0,50,50"\n{b.name},\n')
    again = run_batch(find_scenes([str(listing)]).scenes, config, out, client=dask_client)
    assert {Path(r["scene"]).name: r["status"] for r in again.records} == {
        "a.tif": "done", "b.tif": "skipped"}
