"""Ctrl-C or SIGTERM while the CLI is still importing a command's libraries (seconds on a busy
machine): one line and exit 130, never a ``KeyboardInterrupt`` traceback or exit -15."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, cli_process, finish, wait_for_file

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


@pytest.mark.parametrize("option", ["--version", "--help"])
def test_version_and_help_import_neither_torch_nor_matplotlib(option):
    """``roadprn --version`` took 5-13 s and 255 MB when every command was imported up front."""
    code = ("import sys\nfrom roadprn.cli import main\ntry:\n"
            f"    main([{option!r}], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "heavy = {'torch', 'matplotlib', 'rasterio', 'numpy', 'dask', 'scipy'}\n"
            "print(sorted(heavy & set(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO_ROOT)
    assert done.stderr.strip() == "[]", done.stderr
    assert ("extract" in done.stdout) == (option == "--help")


def test_command_list_matches_each_commands_own_help():
    """The static list ``roadprn --help`` prints says what each command's docstring says."""
    import click

    from roadprn.cli import COMMAND_HELP, COMMANDS, main

    ctx = click.Context(main)
    assert set(COMMAND_HELP) == set(COMMANDS)
    for name in COMMANDS:
        assert COMMAND_HELP[name] == main.get_command(ctx, name).get_short_help_str(limit=150)


# A SIGINT the process sends itself at exit, once its outcome is printed.
LATE_SIGINT = ("import atexit, os, signal\n"
               "atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))\n")


@pytest.mark.parametrize("bad", [True, False], ids=["failure", "success"])
def test_a_signal_once_the_outcome_is_printed_changes_nothing(tmp_path, good_scene, bad):
    """A batch stopped by SIGTERM while its cluster started got a SIGINT from a thread of its
    own while Dask shut down, after its one line: it died by SIGINT (exit -2, not 130) when the
    signal came after Python had reset its handlers. Once the outcome is decided, signals are
    ignored: the one line and the exit code stand."""
    scene = tmp_path / "x.tif" if bad else good_scene
    if bad:
        scene.write_text("not a raster")
    code, stdout, stderr = finish(cli_process(["info", scene], hook=LATE_SIGINT))
    assert code == (3 if bad else 0), stderr
    assert "KeyboardInterrupt" not in stderr and "Exception ignored" not in stderr, stderr
    if bad:
        assert stderr.strip().splitlines()[0].startswith("roadprn: error: ")
        assert len(stderr.strip().splitlines()) == 1, stderr
    else:
        assert stderr == "" and stdout
