"""Fixtures of the whole suite: the real data, a tiny model, small rasters (their helpers are in
tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REALDATA, make_checkpoint, write_test_raster

# Outside a terminal roadprn prints a progress line every 30 s; a command that takes that long
# on a loaded machine would add lines to stderrs the tests read line by line. Progress lines
# have tests of their own (tests/unit/test_progress.py, which sets its own interval).
os.environ.setdefault("ROADPRN_PROGRESS_INTERVAL_S", "86400")


@pytest.fixture(autouse=True)
def _library_progress_mode():
    """Every test starts with the library's own progress mode (tqdm bars when asked): an
    in-process CLI call sets the process's mode (lines outside a terminal) for what follows."""
    from roadprn.runtime.progress import set_progress_mode

    set_progress_mode("bar")
    yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 3-band tiny_unet checkpoint with 64 px tiles: fast enough for many runs."""
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny3.pt", 3, tile=64, halo=8)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata beside the checkout (override with ROADPRN_REALDATA).

    CI always has it; a test needing it fails loudly there rather than skipping silently.
    """
    if not REALDATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data folder missing: {REALDATA}")
        pytest.skip(f"real data folder missing: {REALDATA}")
    return REALDATA


@pytest.fixture
def make_raster(tmp_path):
    """Factory: make_raster(array, name="x.tif", **kw) -> Path of a written GeoTIFF."""
    counter = {"n": 0}

    def _make(data, name: str | None = None, **kw) -> Path:
        counter["n"] += 1
        return write_test_raster(tmp_path / (name or f"raster{counter['n']}.tif"), data, **kw)

    return _make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions on a shared 2-core machine run fastest (and steadiest) on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
