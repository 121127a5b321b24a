"""`roadprn batch` when scenes, workers, the manifest or the user misbehave (issue 21).

Real `roadprn batch` processes with their own LocalCluster; faults are injected into the worker
processes by a Dask preload module written by the test (``DASK_DISTRIBUTED__WORKER__PRELOAD``),
so the code under test is the shipped code. Waits are on events (a manifest record, a process
exit) with generous bounds, never fixed sleeps: the CI machine is a busy 2-core box.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio

from roadprn.batch import collect_inputs, find_scenes, run_batch
from roadprn.batch.inputs import LOG_FOLDER, SceneInput, scene_folder_name
from roadprn.batch.manifest import (
    MANIFEST_NAME,
    ManifestWriter,
    latest_scene_records,
    mismatch_reason,
    read_records,
)
from roadprn.config import load_config
from tests.helpers import BOUND_S, cli_process, finish, invoke, wait_for

# Runs in every worker process before it takes tasks. Faults, chosen by environment variables:
#   RP_BUG=<text>    run_extract raises a ZeroDivisionError (a bug) for scenes whose path has it
#   RP_KILL=<text>   the worker SIGKILLs itself when it starts a scene whose path has it
#   RP_DIE_ONCE=<f>  the first worker to start (file f does not exist yet) SIGKILLs itself
#   RP_HOLD=<f>      a worker starting a scene touches file f, then holds the scene (up to 600 s)
HOOK = '''
import os, signal, time

def dask_setup(worker):
    flag = os.environ.get("RP_DIE_ONCE")
    if flag:
        try:
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)

import roadprn.batch.worker as _worker
import roadprn.extract as _extract

_process_scene, _run_extract = _worker.process_scene, _extract.run_extract

def process_scene(task):
    if os.environ.get("RP_KILL") and os.environ["RP_KILL"] in task.path:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("RP_HOLD"):
        open(os.environ["RP_HOLD"], "a").close()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(0.05)
    return _process_scene(task)

def run_extract(scene, *args, **kwargs):
    if os.environ.get("RP_BUG") and os.environ["RP_BUG"] in str(scene):
        return 1 / 0
    return _run_extract(scene, *args, **kwargs)

_worker.process_scene, _extract.run_extract = process_scene, run_extract
'''


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    """Three small 3-band synthetic scenes (only the images, not their truth files)."""
    from roadprn.synth import generate_scene

    made = tmp_path_factory.mktemp("synth")
    return [Path(generate_scene(made / f"s{i}.tif", width=160 + 16 * i, height=150,
                                seed=10 + i).image_path) for i in range(3)]


def scene_folder_with(tmp_path: Path, scene_files: list[Path], extra: dict[str, Path]) -> Path:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for path in scene_files:
        shutil.copy(path, folder / path.name)
    for name, path in extra.items():
        shutil.copy(path, folder / name)
    return folder


def batch_process(args: list[str], env: dict[str, str] | None = None,
                  hook_dir: Path | None = None) -> subprocess.Popen:
    """``roadprn -q batch ARGS`` as a real process; ``hook_dir``: its workers run :data:`HOOK`."""
    full = dict(env or {})
    if hook_dir is not None:
        (hook_dir / "rp_fault_hook.py").write_text(HOOK)
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir),
                                                           os.environ.get("PYTHONPATH")]))
        full["DASK_DISTRIBUTED__WORKER__PRELOAD"] = '["rp_fault_hook"]'
    return cli_process(["-q", "batch", *args], env=full)


def records_by_file(out: Path) -> dict[str, dict]:
    return {Path(r["scene"]).name: r for r in latest_scene_records(out / MANIFEST_NAME).values()}


# --------------------------------------------------------------------------- fast, no cluster


def test_own_outputs_under_out_are_never_new_scenes(tmp_path):
    inputs = tmp_path / "in"
    out = inputs / "out"
    scene = inputs / "a.tif"
    named = out / "a-0123abcd"  # a scene folder the manifest names
    unnamed = out / "z_z-89abcdef"  # a run killed before its record: only roadprn's files
    user = out / "site-12345678"  # a user folder that merely looks like a scene folder
    for path in (scene, out / "direct.tif", named / "a_mask.tif", named / "anything.tif",
                 unnamed / "z_probability.tif", unnamed / ".roadprn-staging-1" / "q.tif",
                 out / LOG_FOLDER / "x.tif", out / "x.roadprn-tmp-1.tif",
                 user / "scene.tif"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    with ManifestWriter(out / MANIFEST_NAME) as writer:
        writer.append({"type": "scene", "name": named.name, "status": "done"})
    found = {Path(s.path) for s in collect_inputs([str(inputs)], "*", out_dir=out)}
    assert found == {scene.resolve(), (out / "direct.tif").resolve(),
                     (user / "scene.tif").resolve()}
    # without --out nothing is filtered (the filter is about this run's own folder)
    assert len(collect_inputs([str(inputs)], "*")) == 10


def test_malformed_manifest_records_are_skipped_and_resume_never_hangs(tmp_path, caplog):
    out = tmp_path / "out"
    (out / "s-00000001").mkdir(parents=True)
    good = out / "s-00000001" / "s_mask.tif"
    good.write_bytes(b"0123456789")
    os.mkfifo(out / "s-00000001" / "fifo.tif")
    (out / "s-00000001" / "zero.tif").symlink_to("/dev/zero")
    from roadprn.outputs.atomic import file_sha256

    sha = file_sha256(good)
    hashes = {"base": "m"}
    base = {"type": "scene", "status": "done", "config_hash": "c", "model_hashes": hashes}

    def entry(path: str, size: int = 10, digest: str = sha) -> dict:
        return {"files": {"mask": {"path": path, "sha256": digest, "bytes": size}}}

    manifest = out / MANIFEST_NAME
    with ManifestWriter(manifest) as writer:
        writer.append({**base, "name": ["not", "a", "name"]})
        writer.append({**base, "name": "files-not-a-dict", "files": "x"})
        writer.append({**base, "name": "bytes-a-string", **entry("s-00000001/s_mask.tif"),
                       "files": {"mask": {"path": "s", "sha256": sha, "bytes": "10"}}})
        writer.append({**base, "name": "status-odd", "status": 3})
    with caplog.at_level("WARNING", logger="roadprn.batch.manifest"):
        latest = latest_scene_records(manifest)
    assert latest == {}
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 4

    cases = {
        "s-00000001/s_mask.tif": None,  # intact
        "/dev/zero": "outside",
        "../../../../dev/zero": "outside",
        "s-00000001/zero.tif": "not a regular file",  # a link to /dev/zero inside OUT
        "s-00000001/fifo.tif": "not a regular file",  # would block a plain open()
        "s-00000001/missing.tif": "missing",
    }
    results: dict[str, str | None] = {}

    def check() -> None:
        for path in cases:
            results[path] = mismatch_reason({**base, "name": "s-00000001", **entry(path)},
                                            out, "c", hashes)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(BOUND_S)
    assert not worker.is_alive(), "resume hung on a record"
    for path, expected in cases.items():
        assert (results[path] is None) if expected is None else (expected in results[path]), \
            (path, results[path])
    # a file grown or changed in place is redone, never trusted
    assert "changed size" in mismatch_reason({**base, "name": "s", **entry(
        "s-00000001/s_mask.tif", size=5)}, out, "c", hashes)
    assert "checksum" in mismatch_reason({**base, "name": "s", **entry(
        "s-00000001/s_mask.tif", digest="0" * 64)}, out, "c", hashes)
    # unknown model (the scene's header cannot be read now): redone, not skipped
    assert mismatch_reason({**base, "name": "s", **entry("s-00000001/s_mask.tif")}, out, "c",
                           None) is not None


def test_failure_fields_log_bugs_only(tmp_path, tiny_model):
    """Bugs (also a band's, which its split scene reports) get a crash log; user and I/O
    errors get their one line only."""
    import errno

    from roadprn.batch.worker import SceneTask, failure_fields
    from roadprn.errors import InputError

    task = SceneTask("/x/s.tif", "s-00000001", str(tmp_path), load_config(), None, {}, "c")
    try:
        {}["missing"]
    except KeyError as exc:
        bug = failure_fields(exc, task, "batch scene /x/s.tif, tile rows 0-4")
    assert bug["error"] == "KeyError: 'missing'" and not bug["transient"]
    log = tmp_path / bug["log"]
    assert log.parent == tmp_path / LOG_FOLDER and "tile rows 0-4" in log.read_text()
    assert "Traceback (most recent call last)" in log.read_text()
    full = failure_fields(OSError(errno.ENOSPC, "No space left on device", "/o/a.tif"), task, "")
    assert full["error"] == "/o/a.tif: no space left on device" and "log" not in full
    user = failure_fields(InputError("/x/s.tif: no CRS"), task, "")
    assert user["error"] == "/x/s.tif: no CRS" and "log" not in user
    assert len(list((tmp_path / LOG_FOLDER).iterdir())) == 1


def test_a_bad_model_stops_the_run_before_any_scene(tmp_path, scene_files):
    result = invoke("batch", scene_files[0], "--out", tmp_path / "o",
                    "--model", tmp_path / "missing.pt")
    assert result.exit_code == 5, result.output
    assert not (tmp_path / "o" / MANIFEST_NAME).exists() or not [
        r for r in read_records(tmp_path / "o" / MANIFEST_NAME) if r.get("type") == "scene"]


def test_no_worker_left_fails_the_waiting_scenes(tmp_path, scene_files, tiny_model, monkeypatch):
    """A cluster without a single worker (all died, none restarts): scenes fail, no endless wait.

    Its own in-process cluster: the shared one has workers, and this one must have none.
    """
    from distributed import Client, LocalCluster

    import roadprn.batch.run as batch_run

    monkeypatch.setattr(batch_run, "NO_WORKER_GRACE_S", 1.0)
    monkeypatch.setattr(batch_run, "POLL_S", 0.1)
    looks: list[str | None] = []
    gone_for_good = batch_run._WorkerWatch.gone_for_good

    def look(self):
        looks.append(gone_for_good(self))
        return looks[-1]

    monkeypatch.setattr(batch_run._WorkerWatch, "gone_for_good", look)
    scenes = [SceneInput(str(p), scene_folder_name(str(p))) for p in scene_files]
    config = load_config(None, {"model": str(tiny_model)})
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster) as client:
        summary = run_batch(scenes, config, tmp_path / "out", client=client)
    # the driver stopped waiting at the first look that found the workers gone for good
    assert looks and looks[-1] is not None and looks.count(None) == len(looks) - 1, looks
    assert len(summary.failed) == 3 and not summary.by_status("done")
    assert all("no Dask worker left" in r["error"] for r in summary.failed)
    records = read_records(tmp_path / "out" / MANIFEST_NAME)
    assert records[-1]["event"] == "end" and records[-1]["failed"] == 3


# --------------------------------------------------------------------------- real processes


@pytest.mark.slow
def test_a_bug_is_one_line_and_a_crash_log_and_out_inside_the_inputs(tmp_path, scene_files,
                                                                     tiny_model):
    """A scene hitting a bug: one console line naming a log with the traceback; rerun resumes.

    ``--out`` lies inside the input folder: the rerun finds the same scenes, not its outputs.
    """
    folder = scene_folder_with(tmp_path, scene_files, {"buggy.tif": scene_files[0]})
    out = folder / "out"
    args = [str(folder), "--out", str(out), "--model", str(tiny_model), "--workers", "1"]
    code, stdout, stderr = finish(batch_process(args, {"RP_BUG": "buggy"}, tmp_path))
    assert code == 6, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert stderr.splitlines() == [f"roadprn: error: 1 of 4 scene(s) failed; see "
                                   f"{out / MANIFEST_NAME}"]
    failed_lines = [line for line in stdout.splitlines() if line.startswith("failed")]
    assert len(failed_lines) == 1 and "buggy.tif: ZeroDivisionError: division by zero" in \
        failed_lines[0] and "(details: " in failed_lines[0]
    record = records_by_file(out)["buggy.tif"]
    assert record["status"] == "failed" and record["error_type"] == "ZeroDivisionError"
    assert record["error"] == "ZeroDivisionError: division by zero"
    log = out / record["log"]
    assert log.parent == out / LOG_FOLDER and str(log) in failed_lines[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "1 / 0" in text and "buggy.tif" in text
    assert not (out / record["name"]).exists()

    # the rerun, without the bug: the same 4 scenes (none of the outputs), 3 skipped, 1 done
    code, stdout, stderr = finish(batch_process(args + ["--json"]))
    assert code == 0, (stdout, stderr)
    report = json.loads(stdout)
    assert (report["done"], report["skipped"], report["failed"]) == (1, 3, [])
    assert len(collect_inputs([str(folder)], out_dir=out)) == 4


@pytest.mark.slow
def test_workers_that_keep_dying_end_every_scene_and_rerun_resumes(tmp_path, scene_files,
                                                                  tiny_model):
    """Workers SIGKILLed on every try of two scenes, and one killed while the cluster starts."""
    folder = scene_folder_with(tmp_path, scene_files,
                               {"victim1.tif": scene_files[1], "victim2.tif": scene_files[2]})
    out = tmp_path / "out"
    args = [str(folder), "--out", str(out), "--model", str(tiny_model), "--workers", "2"]
    env = {"RP_KILL": "victim", "RP_DIE_ONCE": str(tmp_path / "died-once"),
           # 2 deaths per scene instead of Dask's 4 keep the test short; the path is the same
           "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    code, stdout, stderr = finish(batch_process(args, env, tmp_path))
    assert (tmp_path / "died-once").exists()  # a worker did die while the cluster started
    assert code == 6, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert stderr.splitlines()[-1] == f"roadprn: error: 2 of 5 scene(s) failed; see " \
                                      f"{out / MANIFEST_NAME}"
    assert all("did not start" in line for line in stderr.splitlines()[:-1])
    records = records_by_file(out)
    assert {n: r["status"] for n, r in records.items()} == {
        **{p.name: "done" for p in scene_files}, "victim1.tif": "failed", "victim2.tif": "failed"}
    for name in ("victim1.tif", "victim2.tif"):
        assert records[name]["error"] == \
            "worker died 2 times while processing this scene (KilledWorker)"
        assert f"{name}: worker died 2 times" in stdout
    end = read_records(out / MANIFEST_NAME)[-1]
    assert end["event"] == "end" and (end["done"], end["failed"]) == (3, 2)

    code, stdout, stderr = finish(batch_process(args + ["--json"]))
    assert code == 0, (stdout, stderr)
    report = json.loads(stdout)
    assert (report["done"], report["skipped"], report["failed"]) == (2, 3, [])


@pytest.mark.slow
@pytest.mark.parametrize("when", ["cluster_starting", "scenes_running"])
def test_sigterm_prints_the_one_documented_line(tmp_path, scene_files, tiny_model, when):
    """SIGTERM while the local cluster starts, or while workers run scenes: one line, exit 130.

    (Before: a traceback from Dask's atexit hook, or its shutdown noise, after the line.)
    """
    import signal

    out = tmp_path / "out"
    marker = tmp_path / "a-scene-runs"
    proc = batch_process([*map(str, scene_files), "--out", str(out), "--model",
                          str(tiny_model), "--workers", "2"],
                         {"RP_HOLD": str(marker)}, tmp_path)
    manifest = out / MANIFEST_NAME
    if when == "cluster_starting":  # the start record is written just before the cluster starts
        wait_for(lambda: manifest.exists() and '"event": "start"' in manifest.read_text(),
                 "run start record", proc)
    else:
        wait_for(marker.exists, "scene started on a worker", proc)
    proc.send_signal(signal.SIGTERM)
    code, stdout, stderr = finish(proc)
    assert code == 130, (stdout, stderr)
    assert stderr.splitlines() == [f"roadprn: error: interrupted; 3 unfinished scene(s) removed, "
                                   f"a rerun resumes from {manifest}"]
    records = read_records(manifest)
    assert records[-1]["event"] == "end" and records[-1]["interrupted"] is True
    assert not [p for p in out.iterdir() if p.is_dir()]  # no scene folder left


# --------------------------------------------------------------------------- as extract


@pytest.mark.slow
def test_mixed_1_and_3_band_folder_gets_the_models_extract_picks(tmp_path):
    """`batch` on a folder of 1- and 3-band scenes == `extract` on each: model and mask pixels."""
    from roadprn.models.loading import DEFAULT_PAN_MODEL, default_model_path
    from roadprn.synth import generate_scene

    if not default_model_path(DEFAULT_PAN_MODEL).is_file():
        pytest.skip("the panchromatic default model is not installed")
    made, folder = tmp_path / "made", tmp_path / "scenes"
    made.mkdir()
    folder.mkdir()
    for name, bands, seed in (("pan_a", 1, 1), ("rgb_a", 3, 2), ("pan_b", 1, 3)):
        image = generate_scene(made / f"{name}.tif", width=192, height=160, seed=seed,
                               bands=bands).image_path
        shutil.copy(image, folder / f"{name}.tif")
    out = tmp_path / "batch"
    result = invoke("-q", "batch", str(folder), "--out", str(out),
                    "--workers", "2", "--json")
    assert result.exit_code == 0, result.output
    records = records_by_file(out)
    assert {r["status"] for r in records.values()} == {"done"}
    hashes = set()
    for scene in sorted(folder.glob("*.tif")):
        single = tmp_path / "single" / scene.stem
        result = invoke("-q", "extract", str(scene), "--out", str(single))
        assert result.exit_code == 0, result.output
        record = records[scene.name]
        with rasterio.open(single / f"{scene.stem}_mask.tif") as a, \
                rasterio.open(out / record["files"]["mask"]["path"]) as b:
            assert a.tags()["ROADPRN_MODEL_SHA256"] == b.tags()["ROADPRN_MODEL_SHA256"] \
                == record["model_hashes"]["base"]
            np.testing.assert_array_equal(a.read(), b.read())
        hashes.add((scene.stem[:3], record["model_hashes"]["base"]))
    # the two pan scenes share one model, the RGB scene has another
    assert len({h for kind, h in hashes if kind == "pan"}) == 1
    assert len({h for _, h in hashes}) == 2
    # a rerun skips all three: each scene's own model hash matches its record
    result = invoke("-q", "batch", str(folder), "--out", str(out), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["skipped"] == 3


def test_gpus_per_worker_without_a_gpu_is_refused(tmp_path, scene_files, tiny_model,
                                                  monkeypatch):
    """Silently accepted before: workers claimed a GPU resource and every scene ran on CPU."""
    import roadprn.batch.cluster as cluster

    monkeypatch.setattr(cluster, "_cuda_device_count", lambda: 0)
    out = tmp_path / "o"
    result = invoke("batch", str(scene_files[0]), "--out", str(out),
                    "--model", str(tiny_model), "--gpus-per-worker", "1")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("roadprn: error: --gpus-per-worker 1: this machine has 0 CUDA")
    assert not [r for r in read_records(out / MANIFEST_NAME) if r.get("type") == "scene"] \
        if (out / MANIFEST_NAME).exists() else True


def test_a_second_batch_on_the_same_out_is_refused(tmp_path, scene_files, tiny_model):
    """Two drivers on one --out would interleave manifest records and clear each other's
    scene folders: the manifest is locked while a run holds it (and freed when it dies)."""
    from roadprn.batch.manifest import ManifestWriter

    out = tmp_path / "o"
    with ManifestWriter(out / MANIFEST_NAME):  # the first run
        result = invoke("batch", str(scene_files[0]), "--out", str(out),
                        "--model", str(tiny_model))
    assert result.exit_code == 4, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "another roadprn batch run is writing" in lines[0], lines
    assert not [p for p in out.iterdir() if p.is_dir()]


def test_synth_labels_roadprn_outputs_and_excluded_files_are_skipped_with_reasons(tmp_path):
    """A folder made by `synth` holds labels beside the scenes, a user's folder may hold an
    earlier extract's rasters: both known by their tags, wherever they lie; --exclude too."""
    from tests.helpers import invoke, write_test_raster

    inputs = tmp_path / "in"
    inputs.mkdir()
    assert invoke("synth", inputs / "a.tif", "--size", "64").exit_code == 0
    assert invoke("synth", inputs / "b_nir.tif", "--size", "64").exit_code == 0
    extracted = invoke("extract", inputs / "a.tif", "-o", inputs / "old", "--no-vectorize")
    assert extracted.exit_code == 0, extracted.output
    user_mask = write_test_raster(inputs / "field_mask.tif", np.zeros((1, 8, 8), np.uint8))
    found = find_scenes([str(inputs)], exclude=["*_nir.tif"])
    assert [Path(s.path).name for s in found.scenes] == ["a.tif", "field_mask.tif"]
    reasons = {str(Path(p).relative_to(inputs.resolve())): r for p, r in found.skipped}
    assert reasons == {
        "b_nir.tif": "matches --exclude",
        "a_mask.tif": "a roadprn synth label, not a scene",
        "b_nir_mask.tif": "a roadprn synth label, not a scene",
        "old/a_mask.tif": "a roadprn output, not a scene",
        "old/a_probability.tif": "a roadprn output, not a scene",
    }
    assert user_mask.exists()
