"""`batch` soak at a small scale: scripts/soak_batch.py with faults injected at every stage.

The 50-scene run and its RSS numbers are in docs/reliability.md (same script, --scenes 50).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.slow
def test_soak_every_good_scene_done_every_bad_one_recorded(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "soak_batch.py"), "--scenes", "10",
         "--fail-every", "2", "--size", "96", "--seed", "1", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=1200, cwd=REPO_ROOT)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, (report["problems"], proc.stderr[-3000:])
    outcome = report["outcome"]
    faults = report["faults"]
    # the shuffled rounds put every stage among the five faulty scenes
    assert sorted(faults.values()) == sorted(["open", "validate", "read", "write", "vectorize"])
    assert {s for s, o in outcome.items() if o["status"] == "done"} == set(outcome) - set(faults)
    for stem in faults:
        assert outcome[stem]["status"] == "failed" and outcome[stem]["error"]
        assert not list((tmp_path / "batch").glob(f"{stem}-*"))  # nothing left of a failed scene
    assert not list((tmp_path / "batch").rglob("*.roadprn-tmp-*"))
    assert report["summary"]["done"] == 5
    assert report["rss"] and all(w["max_mib"] > 0 for w in report["rss"].values())
