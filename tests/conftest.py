"""Shared fixtures: where the real data lives, small synthetic rasters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _realdata_dir() -> Path:
    env = os.environ.get("ROADPRN_REALDATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "realdata"


REALDATA = _realdata_dir()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 3-band tiny_unet checkpoint with 64 px tiles: fast enough for many runs."""
    from tests.integration.test_extract_cli import make_checkpoint

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
