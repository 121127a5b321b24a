"""Shared pieces of the reliability suite: a tiny model, small scenes, and checks that a failure
was clean (one line on stderr, the documented exit code, nothing left behind)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from roadprn.cli import main
from roadprn.outputs.atomic import TMP_MARKER

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def good_scene(tmp_path_factory) -> Path:
    from roadprn.synth import generate_scene

    folder = tmp_path_factory.mktemp("scene")
    return Path(generate_scene(folder / "good.tif", width=160, height=140, seed=3,
                               overviews=False).image_path)


def invoke(*args: object):
    """The CLI in-process; exceptions that escape the CLI's own handling fail the test."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def leftovers(folder: Path) -> list[Path]:
    """Every file under ``folder`` (after a failure there must be none)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(f"*{TMP_MARKER}*")) if folder.exists() else []


def assert_clean_failure(result, code: int, *words: str, out: Path | None = None) -> str:
    """Exit code as documented, exactly one line ``roadprn: error: …`` on stderr, no traceback,
    and (given ``out``) no file at all under the output folder."""
    stderr = result.stderr
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("roadprn: error: ")]
    assert len(errors) == 1 and len(lines) == 1, stderr
    assert "Traceback" not in result.output, result.output
    for word in words:
        assert word in errors[0], (word, errors[0])
    if out is not None:
        assert leftovers(out) == [], leftovers(out)
    return errors[0]


def wait_for_file(path: Path, proc: subprocess.Popen, seconds: float = 600) -> None:
    """Until ``path`` exists (a hook in ``proc`` reached its stage) or ``proc`` ends.

    The bound only catches a hang: a busy CI machine may take minutes to get there.
    """
    deadline = time.monotonic() + seconds
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), proc.communicate()


def cli_process(args: list[str], *, hook: str = "", env: dict[str, str] | None = None,
                **popen) -> subprocess.Popen:
    """``roadprn ARGS`` as a real process (signals, exit codes); ``hook`` is Python run first,
    to slow a stage down or inject a fault in that process only."""
    code = f"{hook}\nimport sys\nfrom roadprn.cli import main\nsys.exit(main())"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CI", None)
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
