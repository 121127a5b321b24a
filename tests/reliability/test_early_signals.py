"""Ctrl-C or SIGTERM while the CLI is still importing a command's libraries (seconds on a busy
machine): one line and exit 130, never a ``KeyboardInterrupt`` traceback or exit -15."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT, wait_for_file

# Holds the import of the extract command (torch, dask, ... behind it) until a signal arrives.
SLOW_IMPORT = """
import importlib.abc, os, pathlib, sys, time
class _Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "roadprn.cli.extract":
            pathlib.Path(os.environ["MARKER"]).touch()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return None
sys.meta_path.insert(0, _Slow())
from roadprn.cli import run
run()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_the_command_imports(tmp_path, signum):
    marker = tmp_path / "importing"
    env = {**os.environ, "MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_IMPORT, "extract", "x.tif"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_file(marker, proc, seconds=300)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["roadprn: error: interrupted; partial outputs were "
                                        "removed"], err


def test_the_cli_imports_no_heavy_library():
    """What makes the first seconds short: ``import roadprn.cli`` loads no torch, rasterio,
    dask or scipy (commands import them when they run)."""
    code = ("import sys, roadprn.cli; heavy = {'torch', 'rasterio', 'dask', 'scipy', 'numpy'}; "
            "print(sorted(heavy & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO_ROOT)
    assert done.stdout.strip() == "[]", done.stdout
