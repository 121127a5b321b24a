"""Progress outside a terminal: a line every N seconds, tqdm's interface, a last line."""

from __future__ import annotations

import io
import subprocess
import sys

from roadprn.runtime.progress import LineProgress, mode_for_console


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_every_interval_and_a_final_line():
    out = io.StringIO()
    bar = LineProgress(total=4, desc="scene.tif base model", unit="tile", stream=out,
                       interval=0.0)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix_str("0.5 MPix/s")
    bar.update(1)  # the last step: only close() reports it, once
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("roadprn: scene.tif base model: 1/4 tiles (25 %), ")
    assert "ETA 0:00:00" in lines[0] or "ETA" in lines[0]
    assert len(lines) == 4
    assert lines[-1].startswith("roadprn: scene.tif base model: 4/4 tiles (100 %)")
    assert "done in 0:00:00" in lines[-1] and lines[-1].endswith("0.5 MPix/s")


def test_silent_until_the_interval_and_no_final_line_for_short_work():
    out = io.StringIO()
    with LineProgress(total=100, desc="x", stream=out, interval=3600) as bar:
        bar.update(50)
    assert out.getvalue() == ""


def test_iterating_and_large_numbers():
    out = io.StringIO()
    bar = LineProgress(range(3), desc="synth", unit="px", stream=out, interval=0.0)
    assert list(bar) == [0, 1, 2]
    assert out.getvalue().splitlines()[-1].startswith("roadprn: synth: 3/3 px (100 %)")
    big = LineProgress(total=16_777_216, unit="px", stream=io.StringIO(), interval=3600)
    big.update(2_097_152)
    assert big.line().startswith("2.1M/16.8M px (12 %)")


def test_mode_for_console(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert mode_for_console(quiet=True, stream=_Tty()) == "off"
    assert mode_for_console(quiet=False, stream=_Tty()) == "bar"
    assert mode_for_console(quiet=False, stream=io.StringIO()) == "lines"
    monkeypatch.setenv("CI", "true")
    assert mode_for_console(quiet=False, stream=_Tty()) == "lines"


def test_extract_outside_a_terminal_prints_progress_lines(tmp_path):
    """The real CLI with stderr piped (a batch job, nohup): progress lines, not silence."""
    scene = tmp_path / "s.tif"
    env = {"ROADPRN_PROGRESS_INTERVAL_S": "0", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "roadprn"]
    assert subprocess.run([*cmd, "synth", str(scene), "--size", "300"], env=env,
                          capture_output=True, check=True).returncode == 0
    result = subprocess.run([*cmd, "extract", str(scene), "-o", str(tmp_path / "o")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("roadprn: s.tif base model: 1/1 tiles (100 %)") for line in lines)
    assert any(line.startswith("roadprn: s vectorize: 1/1 tiles (100 %)") for line in lines), lines
    quiet = subprocess.run([*cmd, "-q", "extract", str(scene), "-o", str(tmp_path / "q")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and "roadprn: s.tif" not in quiet.stderr


def test_tqdm_methods_callers_use():
    out = io.StringIO()
    bar = LineProgress(total=2, desc="batch", unit="scene", stream=out, interval=0.0)
    bar.set_postfix(tiles=4, failed=0, refresh=False)
    bar.update(1)
    bar.write("a message")
    assert out.getvalue().splitlines() == [
        "roadprn: batch: 1/2 scenes (50 %), " + out.getvalue().split("scenes (50 %), ", 1)[1]
        .splitlines()[0], "a message"]
    assert "tiles=4, failed=0" in out.getvalue()
