"""`roadprn batch` on the shared LocalCluster (2 worker processes, tests/integration/conftest.py):
isolation, resume, equality, signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given
from hypothesis import strategies as st

from roadprn.batch import collect_inputs, run_batch
from roadprn.batch.inputs import SceneInput, scene_folder, scene_folder_name
from roadprn.batch.manifest import (
    MANIFEST_NAME,
    ManifestWriter,
    latest_scene_records,
    read_records,
)
from roadprn.config import load_config
from roadprn.errors import InputError
from roadprn.outputs.atomic import TMP_MARKER
from tests.helpers import BOUND_S, cli_process, invoke, wait_for

# --------------------------------------------------------------------------- inputs (fast)


def test_inputs_files_dirs_globs_lists_and_remote(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    files = [tmp_path / "a" / "one.tif", tmp_path / "a" / "deep" / "two.tif",
             tmp_path / "three.tif"]
    for f in files:
        f.write_bytes(b"x")
    (tmp_path / "a" / "notes.txt.bak").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# scenes\nthree.tif\n\n/vsis3/bucket/key/scene.tif\n")
    table = tmp_path / "table.csv"
    table.write_text("id,path\n1,a/one.tif\n2,/vsicurl/https://host/x/y.tif?sig=1\n")

    found = collect_inputs([str(tmp_path / "a")])
    assert [s.path for s in found] == sorted(str(f.resolve()) for f in files[:2])
    assert len(collect_inputs([str(tmp_path / "a")], recursive=False)) == 1
    assert [s.path for s in collect_inputs([str(tmp_path / "**" / "t*.tif")])] == \
        sorted(str(f) for f in (files[1], files[2]))
    paths = [s.path for s in collect_inputs([str(listing), str(table), str(files[2])])]
    # remote paths untouched, duplicates dropped, relative paths relative to the list file
    assert paths == [str(files[2]), "/vsis3/bucket/key/scene.tif", str(files[0]),
                     "/vsicurl/https://host/x/y.tif?sig=1"]
    with pytest.raises(InputError, match="nope.tif"):
        collect_inputs([str(tmp_path / "nope.tif")])
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.tif\n")
    with pytest.raises(InputError, match="'path' column"):
        collect_inputs([str(bad)])


def test_folder_names_are_stable_and_distinct():
    a = scene_folder_name("/data/2020/tile.tif")
    assert a == scene_folder_name("/data/2020/tile.tif") and a.startswith("tile-")
    assert a != scene_folder_name("/data/2021/tile.tif")
    assert scene_folder_name("/vsicurl/https://h/p/img.tif?x=1").startswith("img-")


@given(st.text(min_size=0, max_size=80))
def test_derived_folder_never_escapes_out(tmp_path_factory, text):
    out = tmp_path_factory.getbasetemp() / "out"
    for path in (text, "../" + text, "/x/../../" + text + "/..", text + "/.."):
        folder = scene_folder(out, scene_folder_name(path))
        assert folder.parent == out and folder.name not in ("", ".", "..")


@pytest.mark.parametrize("name", ["..", ".", "../etc", "a/b", "", "x\\..\\y", "/abs"])
def test_unsafe_folder_names_refused(tmp_path, name):
    with pytest.raises(InputError):
        scene_folder(tmp_path, name)


def test_manifest_survives_a_line_cut_short(tmp_path):
    path = tmp_path / MANIFEST_NAME
    with ManifestWriter(path) as writer:
        writer.append({"type": "scene", "name": "a", "status": "done"})
    with open(path, "a") as fh:  # a crash in the middle of a write
        fh.write('{"type": "scene", "name": "b", "sta')
    with ManifestWriter(path) as writer:
        writer.append({"type": "scene", "name": "c", "status": "failed"})
    assert [r["name"] for r in read_records(path)] == ["a", "c"]
    assert set(latest_scene_records(path)) == {"a", "c"}


# --------------------------------------------------------------------------- on a cluster


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """4 good synthetic scenes, one truncated, one without CRS."""
    from roadprn.synth import generate_scene

    folder = tmp_path_factory.mktemp("scenes")
    good = [generate_scene(folder / f"good{i}.tif", width=200 + 24 * i, height=180,
                           seed=i).image_path for i in range(4)]
    truncated = folder / "truncated.tif"
    shutil.copy(good[0], truncated)
    with open(truncated, "r+b") as fh:
        fh.truncate(truncated.stat().st_size // 3)
    no_crs = folder / "nocrs.tif"
    with rasterio.open(good[1]) as src:
        profile = src.profile
        profile.update(crs=None, transform=rasterio.Affine.identity())
        with rasterio.open(no_crs, "w", **profile) as dst:
            dst.write(src.read())
    return {"good": [Path(p) for p in good], "truncated": truncated, "no_crs": no_crs}


def scene_records(out: Path) -> dict[str, dict]:
    return {Path(r["scene"]).name: r for r in latest_scene_records(out / MANIFEST_NAME).values()}


@pytest.mark.slow
def test_failures_isolated_then_resume_and_redo(dask_client, scenes, tiny_model, tmp_path):
    out = tmp_path / "out"
    inputs = [*scenes["good"], scenes["truncated"], scenes["no_crs"]]
    address = dask_client.scheduler.address
    result = invoke("-q", "batch", *inputs, "--out", out, "--model", tiny_model,
                    "--scheduler", address)
    assert result.exit_code == 6, result.output
    records = scene_records(out)
    assert {n: r["status"] for n, r in records.items()} == {
        **{p.name: "done" for p in scenes["good"]}, "truncated.tif": "failed",
        "nocrs.tif": "failed"}
    assert "truncated or corrupt" in records["truncated.tif"]["error"]
    assert "no CRS" in records["nocrs.tif"]["error"]
    assert "truncated.tif" in result.output and "no CRS" in result.output
    assert "4 done, 0 skipped" in result.output
    failed_lines = [line for line in result.output.splitlines() if line.startswith("failed ")]
    assert len(failed_lines) == 2
    for line in failed_lines:  # each failure names its scene once, then the reason
        scene = line.split()[1].rstrip(":")
        assert line.count(scene) == 1, line
    for record in records.values():
        folder = out / record["name"]
        if record["status"] == "failed":
            assert not folder.exists()  # failures leave nothing behind
            continue
        assert set(record["files"]) == {"mask", "probability", "roads", "mask_style",
                                        "probability_style"}
        assert record["road_length_m"] > 0 and record["stage_seconds"]["base"] > 0
        assert len(record["config_hash"]) == 64 and len(record["model_hashes"]["base"]) == 64
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            Path(f["path"]).name for f in record["files"].values())
    # models load once per worker process, not once per scene (the cluster is shared: other
    # tests' runs count too, and each model must still appear once per worker)
    from roadprn.batch.worker import model_loads

    loads = dask_client.run(model_loads)
    assert all(len(v) == len(set(v)) for v in loads.values()), loads
    assert any(str(tiny_model) in spec for v in loads.values() for spec, _ in v), loads

    # rerun: everything done is skipped, the two bad scenes are tried again and fail again
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    result = invoke("-q", "batch", *inputs, "--out", out, "--model", tiny_model,
                    "--scheduler", address, "--json")
    assert result.exit_code == 6
    report = json.loads(result.stdout)
    assert (report["done"], report["skipped"], len(report["failed"])) == (0, 4, 2)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")} == mtimes

    # deleting one output redoes exactly that scene
    victim = records[scenes["good"][2].name]
    (out / victim["files"]["mask"]["path"]).unlink()
    result = invoke("-q", "batch", *scenes["good"], "--out", out, "--model", tiny_model,
                    "--scheduler", address, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["done"], report["skipped"]) == (1, 3)
    assert scene_records(out)[scenes["good"][2].name]["status"] == "done"
    assert (out / victim["files"]["mask"]["path"]).exists()
    assert all(json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines())


@pytest.mark.slow
def test_batch_outputs_equal_extract_outputs(dask_client, scenes, tiny_model, tmp_path):
    import geopandas as gpd

    from roadprn.extract import run_extract

    scene = scenes["good"][3]
    config = load_config(None, {"model": str(tiny_model)})
    summary = run_batch([SceneInput(str(scene), scene_folder_name(str(scene)))], config,
                        tmp_path / "batch", client=dask_client)
    assert summary.as_dict()["done"] == 1
    single = run_extract(scene, config, tmp_path / "single")
    record = summary.records[0]
    assert record["road_length_m"] == pytest.approx(single.road_length_m, abs=0.01)
    for key in ("mask", "probability"):
        with rasterio.open(tmp_path / "batch" / record["files"][key]["path"]) as a, \
                rasterio.open(single.files[key]) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.transform == b.transform and a.crs == b.crs
    roads_a = gpd.read_file(tmp_path / "batch" / record["files"]["roads"]["path"], layer="roads")
    roads_b = gpd.read_file(single.files["roads"], layer="roads")
    assert len(roads_a) == len(roads_b) and roads_a.geometry.geom_equals(roads_b.geometry).all()


@pytest.mark.slow
def test_worker_killed_mid_run_still_completes(dask_client, scenes, tiny_model, tmp_path):
    out = tmp_path / "out"
    inputs = [SceneInput(str(p), scene_folder_name(str(p))) for p in scenes["good"]]
    config = load_config(None, {"model": str(tiny_model)})
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault(
        "summary", run_batch(inputs, config, out, client=dask_client)))
    runner.start()
    killed: list[str] = []

    def killed_a_busy_worker() -> bool:
        busy = [w for w, keys in dask_client.processing().items() if keys]
        if busy:
            pid = dask_client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(busy[0])
        return bool(killed) or not runner.is_alive()

    wait_for(killed_a_busy_worker, "busy worker")
    runner.join(BOUND_S)
    assert killed and not runner.is_alive()
    summary = result["summary"]
    assert summary.as_dict()["done"] == 4 and not summary.failed
    # the shared cluster as it was: the nanny has started its worker again
    dask_client.wait_for_workers(2, timeout=BOUND_S)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_rerun_resumes(dask_client, scenes, tiny_model, tmp_path):
    """A real `roadprn batch` process with its own LocalCluster (the command's, under test),
    stopped by SIGTERM mid-run; the rerun resumes on the shared cluster."""
    out = tmp_path / "out"
    inputs = [*scenes["good"], *scenes["good"]]  # duplicates are dropped: 4 scenes
    proc = cli_process(["-q", "batch", *map(str, inputs), "--out", str(out),
                        "--model", str(tiny_model), "--workers", "1"])
    manifest = out / MANIFEST_NAME
    # wait for the event (a scene recorded done), however long a loaded machine takes for it
    wait_for(lambda: manifest.exists() and '"status": "done"' in manifest.read_text(),
             "scene recorded done", proc)
    if proc.poll() == 0:
        pytest.skip("the run finished before SIGTERM could be sent")
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=BOUND_S)
    records = read_records(manifest)  # every line parses
    done = {r["name"] for r in records if r.get("status") == "done"}
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 130, stderr
    # exactly the one documented line: no Dask shutdown noise, no traceback
    assert len(stderr.splitlines()) == 1 and stderr.startswith("roadprn: error: interrupted; "), \
        stderr
    assert records[-1]["event"] == "end" and records[-1]["interrupted"]
    assert 1 <= len(done) < 4
    assert not list(out.rglob(f"*{TMP_MARKER}*"))
    # only complete scene folders remain
    assert {p.name for p in out.iterdir() if p.is_dir()} == done

    summary = run_batch(collect_inputs(list(map(str, inputs))),
                        load_config(None, {"model": str(tiny_model)}), out, client=dask_client)
    assert summary.as_dict()["skipped"] == len(done)
    assert summary.as_dict()["done"] == 4 - len(done)


def test_bad_batch_options_are_one_line_errors(tmp_path, tiny_model):
    (tmp_path / "x.tif").write_bytes(b"x")
    result = invoke("batch", tmp_path / "x.tif", "--out", tmp_path / "o", "--model", tiny_model,
                    "--workers", "0")
    assert result.exit_code == 2 and "workers" in result.output
    result = invoke("batch", tmp_path / "none*.tif", "--out", tmp_path / "o", "--model",
                    tiny_model)
    assert result.exit_code == 3 and "no scenes found" in result.output


# --------------------------------------------------------------------------- bands of tile rows


@pytest.mark.parametrize("bands", [[(0, 2), (2, 5), (5, 99)], [(0, 1), (1, 2), (2, 3), (3, 99)]])
def test_bands_of_tile_rows_equal_the_whole_scene(tmp_path, tiny_model, bands):
    """The building block for splitting a large scene across workers: band rows == whole rows."""
    from roadprn.infer.base_stage import predict_strips
    from roadprn.infer.predictor import Predictor
    from roadprn.infer.tiling import TilePlan
    from roadprn.models.loading import load_segmentation_model
    from roadprn.raster.normalize import make_normalizer
    from roadprn.synth import generate_scene

    scene = generate_scene(tmp_path / "s.tif", width=90, height=117, seed=5).image_path
    model = load_segmentation_model(str(tiny_model))
    import torch

    predictor = Predictor(model.module, torch.device("cpu"), amp=False)
    plan = TilePlan(90, 117, tile_size=32, halo=8, blend_radius=4)  # stride 16: 8 tile rows
    with rasterio.open(scene) as ds:
        normalizer = make_normalizer(ds, (1, 2, 3), load_config().input.normalization)

    def stack(tile_rows=None):
        strips = list(predict_strips(str(scene), (1, 2, 3), plan, 3, normalizer, predictor,
                                     tile_rows=tile_rows))
        rows = [s.row_off for s in strips]
        assert rows == sorted(rows)
        return (strips[0].row_off if strips else 0,
                np.concatenate([s.prob for s in strips]), np.concatenate([s.valid for s in strips]))

    _, whole, whole_valid = stack()
    assert whole.shape == (117, 90)
    parts = [stack((a, min(b, plan.n_rows))) for a, b in bands]
    assert [p[0] for p in parts] == [a * plan.stride for a, _ in bands]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole)
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), whole_valid)
