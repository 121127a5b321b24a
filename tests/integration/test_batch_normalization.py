"""`batch --merge` stretches every scene of an archive alike (roadprn.batch.normalization).

A synthetic scene cut into 3 x 3 overlapping scenes: each cut alone has other 2-98 %
percentiles, so with per-scene stretches the model sees the overlaps differently; with
``batch.normalization: archive`` (the default with --merge) every scene runs with one stretch,
close to the whole scene's own.
"""

from __future__ import annotations

import json

import numpy as np
import rasterio
from rasterio.warp import Resampling

from roadprn.batch.manifest import MANIFEST_NAME, read_records
from roadprn.batch.normalization import NORMALIZATION_NAME
from roadprn.raster.normalize import estimate_percentiles
from tests.helpers import invoke
from tests.integration.test_merge import ORIGIN, cut_grid


def _normalizers(out) -> dict[str, dict]:
    found = {}
    for path in sorted(out.glob("g*/g*_probability.tif")):
        with rasterio.open(path) as ds:
            found[path.parent.name] = json.loads(ds.tags()["ROADPRN_NORMALIZATION"])
    return found


def test_merged_batch_shares_one_stretch_and_resumes_with_it(tmp_path, dask_client):
    assert invoke("-q", "synth", tmp_path / "s.tif", "--size", 768, "--origin", ORIGIN,
                  "--seed", 5).exit_code == 0
    cut_grid(tmp_path / "s.tif", tmp_path / "grid", 64, Resampling.bilinear)
    out = tmp_path / "out"
    args = ("-q", "batch", tmp_path / "grid", "-o", out, "--scheduler",
            dask_client.scheduler.address, "--json")
    result = invoke(*args, "--merge")
    assert result.exit_code == 0, result.stderr
    shared = _normalizers(out)
    assert len(shared) == 9 and len({json.dumps(n) for n in shared.values()}) == 1
    saved = json.loads((out / NORMALIZATION_NAME).read_text())
    (group,) = saved["groups"].values()
    assert group["scenes"] == 9
    with rasterio.open(tmp_path / "s.tif") as ds:  # the archive's stretch ~ the whole scene's
        lows, highs = estimate_percentiles(ds, [1, 2, 3], (2.0, 98.0))
    np.testing.assert_allclose(group["lows"], lows, atol=3)
    np.testing.assert_allclose(group["highs"], highs, atol=3)
    start = [r for r in read_records(out / MANIFEST_NAME) if r.get("event") == "start"]
    assert start[-1]["normalization"] == "archive"

    # a rerun resumes: the saved stretch keeps every scene's config hash
    again = json.loads(invoke(*args, "--merge").stdout)
    assert again["done"] == 0 and again["skipped"] == 9

    # each scene by its own percentiles: the cuts' stretches differ
    result = invoke(*args, "--no-resume", "--set", "batch.normalization=scene",
                    "--set", "output.overwrite=true")
    assert result.exit_code == 0, result.stderr
    own = _normalizers(out)
    assert len({json.dumps(n) for n in own.values()}) > 1
    start = [r for r in read_records(out / MANIFEST_NAME) if r.get("event") == "start"]
    assert start[-1]["normalization"] == "scene"
