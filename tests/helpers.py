"""Helpers shared by the whole suite: the CLI (in-process and as a real process), small rasters
and models, waiting on events, and checks that a failure was clean.

Fixtures live in the ``conftest.py`` files; plain functions and constants live here, so that no
test module imports from another test module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Bound of every wait on an event (a record, a file, a process ending): it only catches a hang.
# A busy 2-core CI machine once took over 60 s for the first scene of a batch.
BOUND_S = 600


def _realdata_dir() -> Path:
    env = os.environ.get("ROADPRN_REALDATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "realdata"


REALDATA = _realdata_dir()

# Every GeoTIFF of the real data.
# path: (width, height, bands, dtype, crs, resolution_m (x, y), nodata)
REAL_GEOTIFFS = {
    "spacenet_vegas_pan/road_mask_input.tif":
        (1300, 1300, 1, "uint16", "EPSG:4326", (0.243, 0.300), None),
    "spacenet_vegas_pan/sample_road_raster_mask.tif":
        (1300, 1300, 1, "uint8", "EPSG:4326", (0.243, 0.300), None),
    "robustness/pan1.tif": (600, 600, 1, "uint16", "EPSG:32631", (0.5, 0.5), None),
    "robustness/pan2.tif": (600, 600, 1, "uint16", "EPSG:32631", (0.5, 0.5), None),
    "robustness/pan3.tif": (600, 600, 1, "uint16", "EPSG:32631", (0.5, 0.5), None),
    "robustness/ms1.tif": (300, 300, 4, "float64", "EPSG:32631", (1.0, 1.0), None),
    "robustness/ms2.tif": (300, 300, 4, "float64", "EPSG:32631", (1.0, 1.0), None),
    "robustness/ms3.tif": (300, 300, 4, "float64", "EPSG:32631", (1.0, 1.0), None),
    "robustness/rgb_unmasked.tif": (200, 200, 3, "uint8", "EPSG:32631", (4.5, 4.5), None),
    "robustness/sample_geotiff.tif": (900, 900, 1, "uint16", "EPSG:32616", (0.5, 0.5), 0.0),
    "robustness/sample_geotiff_custom_proj.tif":
        (512, 512, 3, "int16", "custom (aea, no EPSG code)", (30.0, 30.0), -9999.0),
}


# --------------------------------------------------------------------------- the CLI


def invoke(*args: object, catch_exceptions: bool = False, **kwargs):
    """``roadprn ARGS`` in-process (click's CliRunner); stdout and stderr apart.

    Exceptions that escape the CLI's own handling fail the test unless ``catch_exceptions``.
    """
    from click.testing import CliRunner

    from roadprn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=catch_exceptions,
                              **kwargs)


def cli_process(args: list[str], *, hook: str = "", env: dict[str, str] | None = None,
                **popen) -> subprocess.Popen:
    """``roadprn ARGS`` as a real process through the console script's entry point
    (``roadprn.cli:run``: signals, exit codes); ``hook`` is Python run first, to slow a stage
    down or inject a fault in that process only. stdout and stderr are pipes (text)."""
    code = f"{hook}\nfrom roadprn.cli import run\nrun()"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CI", None)
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO_ROOT,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = BOUND_S) -> tuple[int, str, str]:
    """Wait for ``proc`` to end: (exit code, stdout, stderr)."""
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr


# --------------------------------------------------------------------------- waiting on events


def wait_for(condition: Callable[[], bool], what: str,
             proc: subprocess.Popen | None = None, seconds: float = BOUND_S) -> None:
    """Until ``condition()`` is true; fails early if ``proc`` ended first.

    The bound only catches a hang: a busy CI machine may take minutes to get there.
    """
    deadline = time.monotonic() + seconds
    while not condition():
        if proc is not None and proc.poll() is not None:
            if condition():
                return
            raise AssertionError(f"the process ended before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds} s")
        time.sleep(0.05)


def wait_for_file(path: Path, proc: subprocess.Popen, seconds: float = BOUND_S) -> None:
    """Until ``path`` exists (a hook in ``proc`` reached its stage) or ``proc`` ends."""
    wait_for(path.exists, f"file {path.name}", proc, seconds)


# --------------------------------------------------------------------------- clean failures


def leftovers(folder: Path) -> list[Path]:
    """Every file under ``folder`` (after a failure there must be none)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def temp_files(folder: Path) -> list[Path]:
    from roadprn.outputs.atomic import TMP_MARKER

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


# --------------------------------------------------------------------------- stage hooks

# A hook (run in a child process before the CLI, see ``cli_process``) that touches $MARKER
# when a stage starts, then holds the stage: stage -> (module or class, function, hold before
# or after the call, seconds held).
HOOKS = {
    # reader threads: a slow disk (the main thread waits for the read)
    "reading": ("roadprn.infer.base_stage", "read_window", "before", 2.0),
    # the model's batches, on the main thread
    "inference": ("roadprn.infer.predictor.Predictor", "__call__", "before", 60.0),
    # raw rasters -> COGs on a thread pool, temporary files open
    "writing_rasters": ("roadprn.infer.base_stage", "to_cog", "after", 2.0),
    # skeleton, graph, pruning of the mask (rasters already complete)
    "vectorizing": ("roadprn.vectorize.run", "vectorize_source", "before", 60.0),
    # the GeoPackage half written under its temporary name
    "writing_network": ("roadprn.vectorize.gpkg", "_write_layer", "after", 60.0),
}

# ``HOOK_CODE.format(spec=HOOKS[stage])``; a stage held to its end touches
# ``$MARKER.held_to_the_end`` (an event a test can check instead of a stopwatch).
HOOK_CODE = """
import importlib, os, pathlib, time
_module, _name, _when, _delay = {spec!r}
_parts = _module.split('.')
try:
    _owner = importlib.import_module(_module)
except ModuleNotFoundError:
    _owner = getattr(importlib.import_module('.'.join(_parts[:-1])), _parts[-1])
_original = getattr(_owner, _name)
def _slow(*args, **kwargs):
    marker = pathlib.Path(os.environ['MARKER'])
    if _when == 'after':
        result = _original(*args, **kwargs)
    marker.touch()
    deadline = time.monotonic() + _delay
    while time.monotonic() < deadline:
        time.sleep(0.05)
    marker.with_name(marker.name + '.held_to_the_end').touch()
    return result if _when == 'after' else _original(*args, **kwargs)
setattr(_owner, _name, _slow)
"""


# --------------------------------------------------------------------------- rasters, models


def write_test_raster(
    path: Path,
    data,
    *,
    crs: str | None = "EPSG:32631",
    transform=None,
    nodata=None,
    **profile,
) -> Path:
    """Write a small GeoTIFF from a (bands, h, w) or (h, w) array; for tests only."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if transform is None:
        transform = from_origin(600000.0, 5750000.0, 0.5, 0.5)
    meta = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    meta.update(profile)
    with rasterio.open(path, "w", **meta) as ds:
        ds.write(arr)
    return path


def make_checkpoint(path: Path, bands: int, tile: int = 128, halo: int = 16) -> Path:
    """A seeded tiny_unet base-model checkpoint for ``bands`` bands."""
    import torch

    from roadprn.models.base import build_model
    from roadprn.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("tiny_unet", in_channels=bands)
    meta = {
        "kind": "base",
        "arch": "tiny_unet",
        "arch_kwargs": {"in_channels": bands},
        "input": {
            "bands": list(range(1, bands + 1)),
            "normalization": {"mode": "percentile", "percentiles": [2.0, 98.0]},
            "gsd_m": 0.5,
            "tile_size": tile,
            "halo": halo,
        },
    }
    save_checkpoint(path, model, meta)
    return path


def make_prn(path: Path, base_sha: str, seed: int = 0, randomise: bool = True) -> Path:
    """A fast PatchRefineNet checkpoint paired with the base model of hash ``base_sha``."""
    import torch

    from roadprn.models.base import build_model
    from roadprn.models.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = build_model("prn", variant="fast", grid=2, map_size=128)
    if randomise:  # a fresh fast PRN starts at the identity; perturb it so the test means something
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(path, model, {"kind": "prn", "arch": "prn", "arch_kwargs": model.arch_kwargs,
                                  "base_model_sha256": base_sha})
    return path


def loop_pseudo_labels(prob, truth, patch: int | tuple[int, int]):
    """Pseudo-labels the obvious way (the reference): every patch, every τ, ties to the lowest τ."""
    import numpy as np

    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    height, width = prob.shape
    labels = np.zeros(prob.shape, dtype=bool)
    taus = np.zeros((-(-height // ph), -(-width // pw)))
    for pi, r in enumerate(range(0, height, ph)):
        for pj, c in enumerate(range(0, width, pw)):
            p = prob[r : r + ph, c : c + pw].astype(np.float64)
            g = truth[r : r + ph, c : c + pw] != 0
            best_score, best_tau = -1.0, None
            for k in range(1, 21):
                tau = k / 20.0
                b = p > tau
                score = (np.sum(b & g) + 1.0) / (np.sum(b | g) + 1.0)
                if score > best_score:
                    best_score, best_tau = score, tau
            labels[r : r + ph, c : c + pw] = p > best_tau
            taus[pi, pj] = best_tau
    return labels, taus
