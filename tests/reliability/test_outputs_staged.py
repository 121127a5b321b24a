"""All-or-nothing outputs against faults no handler can catch (SIGKILL), a real full disk,
concurrent runs on the same outputs, bugs (the last-resort handler) and odd file names."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from roadprn.outputs.staging import MARKER_SUFFIX, STAGING_PREFIX
from tests.helpers import (
    HOOK_CODE,
    HOOKS,
    assert_clean_failure,
    cli_process,
    invoke,
    leftovers,
    temp_files,
    wait_for_file,
)

OUTPUTS = ("mask.qml", "mask.tif", "probability.qml", "probability.tif", "roads.gpkg")


def _final_outputs(out: Path) -> list[str]:
    """Files under their final names (not hidden staging, marker or temporary files)."""
    return sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) \
        if out.exists() else []


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["vectorizing", "writing_network"])
def test_sigkill_leaves_no_final_names_and_a_rerun_replaces_it(tmp_path, good_scene, tiny_model,
                                                                stage):
    """SIGKILL after the rasters were finished: before, they stayed under their final names
    and a rerun refused with exit 4; now nothing is published and a plain rerun completes."""
    out, marker = tmp_path / "out", tmp_path / "stage_reached"
    args = ["extract", str(good_scene), "--model", str(tiny_model), "--out", str(out)]
    proc = cli_process(args, hook=HOOK_CODE.format(spec=HOOKS[stage]), env={"MARKER": str(marker)})
    wait_for_file(marker, proc, seconds=300)
    proc.kill()
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert _final_outputs(out) == []
    hidden = _hidden(out)
    assert any(name.endswith(MARKER_SUFFIX) for name in hidden), hidden
    assert any(name.startswith(STAGING_PREFIX) for name in hidden), hidden

    again = invoke(*args)  # no --overwrite needed: the earlier run never finished
    assert again.exit_code == 0, again.output
    assert "interrupted" in again.stderr
    assert _final_outputs(out) == sorted(f"{good_scene.stem}_{s}" for s in OUTPUTS)
    assert _hidden(out) == [] and temp_files(out) == []


@pytest.mark.slow
def test_sigkill_during_refinement(tmp_path, good_scene):
    """The default model and its PRN: killed while refining, nothing has a final name."""
    out, marker = tmp_path / "out", tmp_path / "stage_reached"
    hook = HOOK_CODE.format(spec=("roadprn.prn.refine_scene", "refine_scene", "before", 120.0))
    args = ["extract", str(good_scene), "--refine", "auto", "--out", str(out)]
    proc = cli_process(args, hook=hook, env={"MARKER": str(marker)})
    wait_for_file(marker, proc, seconds=300)
    # the base rasters are complete in the staging folder, none under a final name
    staged = [p.name for p in out.glob(f"{STAGING_PREFIX}*/*")]
    assert f"{good_scene.stem}_mask.tif" in staged, staged
    proc.kill()
    proc.communicate(timeout=600)
    assert _final_outputs(out) == []
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert f"{good_scene.stem}_refined_mask.tif" in _final_outputs(out)
    assert _hidden(out) == []


@pytest.mark.slow
def test_a_second_run_on_the_same_outputs_is_refused(tmp_path, good_scene, tiny_model):
    out, marker = tmp_path / "out", tmp_path / "stage_reached"
    args = ["extract", str(good_scene), "--model", str(tiny_model), "--out", str(out)]
    first = cli_process(args, hook=HOOK_CODE.format(spec=HOOKS["inference"]),
                        env={"MARKER": str(marker)})
    try:
        wait_for_file(marker, first, seconds=300)
        second = invoke(*args, "--overwrite")  # even --overwrite never writes under a live run
        assert_clean_failure(second, 4, "another roadprn run", f"pid {first.pid}")
        assert _final_outputs(out) == []
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=600)
    assert first.returncode == 130
    assert leftovers(out) == []


def test_a_marker_of_a_live_process_on_another_host_is_respected(tmp_path, good_scene, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    marker = out / f".{good_scene.stem}{MARKER_SUFFIX}"
    marker.write_text(json.dumps({"pid": 1, "host": "elsewhere", "phase": "running",
                                  "outputs": [], "staging": STAGING_PREFIX + "x"}))
    result = invoke("extract", good_scene, "--model", tiny_model, "--out", out)
    assert_clean_failure(result, 4, "another roadprn run", str(marker))
    assert marker.exists()  # not ours to remove


def test_a_stale_marker_while_publishing_removes_the_half_published_files(tmp_path, good_scene,
                                                                         tiny_model):
    """Killed between two renames: the outputs it had published are a mixture; a rerun
    removes them (they are listed in the marker) and writes a complete set."""
    out = tmp_path / "out"
    out.mkdir()
    mask = out / f"{good_scene.stem}_mask.tif"
    mask.write_bytes(b"half a run")
    outside = tmp_path / "precious.txt"
    outside.write_text("never touched")
    staging = out / f"{STAGING_PREFIX}{good_scene.stem}-deadbeef"
    staging.mkdir()
    (staging / "leftover.tif").write_bytes(b"x")
    (out / f".{good_scene.stem}{MARKER_SUFFIX}").write_text(json.dumps(
        {"pid": 2 ** 22 + 7, "host": os.uname().nodename, "phase": "publishing",
         "staging": staging.name, "outputs": [mask.name, "../precious.txt"]}))
    result = invoke("extract", good_scene, "--model", tiny_model, "--out", out)
    assert result.exit_code == 0, result.output
    assert outside.read_text() == "never touched"
    assert mask.read_bytes()[:4] in (b"II*\0", b"MM\0*")  # a real GeoTIFF now
    assert _hidden(out) == []


def test_an_existing_complete_run_still_needs_overwrite(tmp_path, good_scene, tiny_model):
    """A stale marker from a run killed while *running* does not license deleting the
    complete outputs of an earlier finished run."""
    out = tmp_path / "out"
    args = ["extract", good_scene, "--model", tiny_model, "--out", out]
    assert invoke(*args).exit_code == 0
    (out / f".{good_scene.stem}{MARKER_SUFFIX}").write_text(json.dumps(
        {"pid": 2 ** 22 + 7, "host": os.uname().nodename, "phase": "running",
         "staging": STAGING_PREFIX + "gone", "outputs": []}))
    result = invoke(*args)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[-1].endswith("exists; pass --overwrite to replace it")
    assert _final_outputs(out) == sorted(f"{good_scene.stem}_{s}" for s in OUTPUTS)


# --------------------------------------------------------------------------- disk full


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def full_run_bytes(tmp_path_factory, good_scene) -> int:
    """What a complete run of ``good_scene`` writes, to size the small file systems below."""
    out = tmp_path_factory.mktemp("full") / "out"
    assert invoke("extract", good_scene, "--out", out).exit_code == 0
    return sum(p.stat().st_size for p in out.iterdir())


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount")
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_really_full_disk_is_one_line_and_leaves_nothing(tmp_path, good_scene, full_run_bytes,
                                                           fraction):
    """A real full file system (not an injected errno), full at different stages of the run:
    GDAL's libtiff messages, Python's write() and SQLite's "database or disk is full" (or its
    later "no such table") all end as one line naming the folder, exit 1, nothing left."""
    size = max(16, int(full_run_bytes * fraction / 1024))
    with _tmpfs(tmp_path / "small", f"{size}k") as small:
        out = small / "out"
        proc = cli_process(["extract", str(good_scene), "--out", str(out)])
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 1, stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines == [f"roadprn: error: cannot write the outputs in {out}: no space left on "
                         "device; nothing was left"], stderr
        assert leftovers(out) == [] and _hidden(out) == []


def test_permission_lost_mid_write(monkeypatch, tmp_path, good_scene, tiny_model):
    import errno

    import roadprn.infer.base_stage as pipeline

    def denied(src, dst, *args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(pipeline, "to_cog", denied)
    out = tmp_path / "out"
    result = invoke("extract", good_scene, "--model", tiny_model, "--out", out)
    assert_clean_failure(result, 1, "permission denied", str(out), out=out)


# --------------------------------------------------------------------------- last resort


def test_a_bug_is_one_line_naming_a_log_with_the_traceback(monkeypatch, tmp_path, good_scene,
                                                           tiny_model):
    import roadprn.infer.base_stage as pipeline

    def buggy(*args, **kwargs):
        raise RuntimeError("an unexpected\nmulti-line failure")

    monkeypatch.setattr(pipeline, "prepare_inference", buggy)
    monkeypatch.setenv("ROADPRN_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "out"
    result = invoke("extract", good_scene, "--model", tiny_model, "--out", out)
    assert result.exit_code == 70, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("roadprn: internal error: RuntimeError: an unexpected "
                               "multi-line failure (details: ")
    log_path = Path(lines[0].rsplit("(details: ", 1)[1].rstrip(")"))
    assert log_path.parent == tmp_path / "logs"
    text = log_path.read_text()
    assert "Traceback (most recent call last)" in text and "buggy" in text
    assert leftovers(out) == []


def test_verbose_shows_the_traceback_of_a_bug(monkeypatch, tmp_path, good_scene, tiny_model):
    import roadprn.infer.base_stage as pipeline

    monkeypatch.setattr(pipeline, "prepare_inference",
                        lambda *a, **k: (_ for _ in ()).throw(KeyError("oops")))
    monkeypatch.setenv("ROADPRN_LOG_DIR", str(tmp_path / "logs"))
    result = invoke("-v", "extract", good_scene, "--model", tiny_model, "--out", tmp_path / "o")
    assert result.exit_code == 70
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("roadprn: internal error: KeyError")


def test_a_bug_with_no_writable_log_folder_still_ends_in_one_line(monkeypatch, tmp_path):
    from roadprn.runtime.crashlog import write_crash_log

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ROADPRN_LOG_DIR", str(blocker / "logs"))
    try:
        raise ValueError("x")
    except ValueError as exc:
        path = write_crash_log(exc)
    assert path is not None and path.exists()  # fell back to the temporary folder
    path.unlink()


# --------------------------------------------------------------------------- file names

ODD_NAMES = ["scene[1].tif", "a;b.tif", "new\nline.tif", "spaces and ünïcode.tif",
             "what?.tif", "50%,x!.tif", "-dash.tif"]


@pytest.mark.parametrize("name", ODD_NAMES, ids=[repr(n) for n in ODD_NAMES])
def test_odd_scene_names_work_and_leave_nothing_behind(tmp_path, good_scene, tiny_model, name):
    scene = tmp_path / name
    shutil.copy(good_scene, scene)
    out = tmp_path / f"out {name.removesuffix('.tif')}".replace("\n", "")
    result = invoke("extract", "--model", tiny_model, "--out", out, "--", scene)
    assert result.exit_code == 0, result.output
    stem = name.removesuffix(".tif")
    assert _final_outputs(out) == sorted(f"{stem}_{s}" for s in OUTPUTS)
    assert _hidden(out) == [] and temp_files(out) == []


def test_an_output_folder_with_a_newline_is_refused_up_front(tmp_path, good_scene, tiny_model):
    """GDAL's GeoPackage driver drops the newline from the path and fails at the very end."""
    out = tmp_path / "out\nfolder"
    result = invoke("extract", good_scene, "--model", tiny_model, "--out", out)
    line = assert_clean_failure(result, 4, "control character", "\\n")
    assert "\n" not in line
    assert not out.exists()
