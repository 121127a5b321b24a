"""SIGINT / SIGTERM during each stage of a real `roadprn extract` process: it exits promptly with
130, leaves no temporary file and no file that looks complete but is not, and a rerun completes.

A hook (run in the child before the CLI) holds the process in the chosen stage, so the signal
lands there deterministically; the batch command's own test is
tests/integration/test_batch.py::test_sigterm_stops_cleanly_and_rerun_resumes.
"""

from __future__ import annotations

import signal

import pytest

from tests.helpers import (
    HOOK_CODE,
    HOOKS,
    cli_process,
    invoke,
    leftovers,
    temp_files,
    wait_for_file,
)

CASES = [("reading", signal.SIGTERM), ("inference", signal.SIGINT),
         ("writing_rasters", signal.SIGTERM), ("vectorizing", signal.SIGINT),
         ("writing_network", signal.SIGTERM)]


@pytest.mark.slow
@pytest.mark.parametrize("stage,signum", [
    pytest.param(stage, signum, id=f"{stage}-{signum.name}") for stage, signum in CASES])
def test_signal_during_stage(tmp_path, good_scene, tiny_model, stage, signum):
    out = tmp_path / "out"
    marker = tmp_path / "stage_reached"
    args = ["extract", str(good_scene), "--model", str(tiny_model), "--out", str(out)]
    proc = cli_process(args, hook=HOOK_CODE.format(spec=HOOKS[stage]), env={"MARKER": str(marker)})
    wait_for_file(marker, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr
    if HOOKS[stage][3] >= 60:
        # stopped promptly: the signal cut the held stage short (an event, not a stopwatch)
        assert not marker.with_name(marker.name + ".held_to_the_end").exists()
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert temp_files(out) == []
    # all or nothing: even outputs finished before the signal are removed, and the output
    # folder the run created is not left behind empty
    assert leftovers(out) == [] and not out.exists()
    # the same command again completes
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert {p.name for p in leftovers(out)} == {f"{good_scene.stem}_{s}" for s in (
        "mask.qml", "mask.tif", "probability.qml", "probability.tif", "roads.gpkg")}
