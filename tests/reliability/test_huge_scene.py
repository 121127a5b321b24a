"""A scene far larger than memory (a 200000² VRT, 40 G pixels × 3 bands): `info` describes it at
once, `extract` plans it and starts producing tiles with memory set by the tile size, not the
scene, and Ctrl-C then leaves nothing behind."""

from __future__ import annotations

import signal
import time

import numpy as np
import psutil
import pytest

from ..conftest import write_test_raster
from .conftest import cli_process, invoke, leftovers

SIDE = 200_000


def huge_vrt(folder):
    """A VRT stretching a small GeoTIFF over 200000² pixels of 0.5 m (no such file exists)."""
    rng = np.random.default_rng(0)
    small = write_test_raster(folder / "small.tif", rng.integers(0, 255, (3, 250, 250), np.uint8),
                              tiled=True, blockxsize=256, blockysize=256)
    bands = "".join(f"""
  <VRTRasterBand dataType="Byte" band="{b}">
    <SimpleSource>
      <SourceFilename relativeToVRT="1">{small.name}</SourceFilename><SourceBand>{b}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="250" ySize="250"/>
      <DstRect xOff="0" yOff="0" xSize="{SIDE}" ySize="{SIDE}"/>
    </SimpleSource>
  </VRTRasterBand>""" for b in (1, 2, 3))
    vrt = folder / "huge.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="{SIDE}" rasterYSize="{SIDE}">
  <SRS>EPSG:32631</SRS>
  <GeoTransform>600000, 0.5, 0, 5800000, 0, -0.5</GeoTransform>{bands}
</VRTDataset>""")
    return vrt


def test_info_on_a_huge_vrt_reads_no_scene(tmp_path):
    """``info`` on 120 GB of pixels answers from the header (and a few validation blocks).
    The bound only catches a full decode, which would take hours; it is no stopwatch (a busy CI
    machine may be slow, never that slow)."""
    vrt = huge_vrt(tmp_path)
    t0 = time.perf_counter()
    result = invoke("info", vrt, "--json")
    assert result.exit_code == 0, result.output
    assert f'"width": {SIDE}' in result.stdout
    assert time.perf_counter() - t0 < 600


@pytest.mark.slow
def test_extract_on_a_huge_vrt_starts_in_bounded_memory(tmp_path, tiny_model):
    vrt = huge_vrt(tmp_path)
    out = tmp_path / "out"
    marker = tmp_path / "tiles_done"
    # touch the marker once the model has run 20 batches: tiles are flowing through the pipeline
    hook = ("import os, pathlib, roadprn.infer.predictor as _i\n"
            "_orig = _i.Predictor.__call__\n_n = [0]\n"
            "def _count(self, batch):\n"
            "    _n[0] += 1\n"
            "    if _n[0] == 20: pathlib.Path(os.environ['MARKER']).touch()\n"
            "    return _orig(self, batch)\n"
            "_i.Predictor.__call__ = _count\n")
    proc = cli_process(["extract", str(vrt), "--model", str(tiny_model), "--out", str(out),
                        "--tile-size", "256", "--halo", "16"],
                       hook=hook, env={"MARKER": str(marker)})
    watched = psutil.Process(proc.pid)
    peak = 0
    deadline = time.monotonic() + 600  # only catches a hang (busy CI machines are slow)
    while proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, watched.memory_info().rss)
        if marker.exists():
            break
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    for _ in range(20):  # keep watching while tiles flow
        peak = max(peak, watched.memory_info().rss)
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr
    # one full-width strip buffer of 200000 x (stride + halo + 256) floats is ~0.4 GB; the scene
    # itself would be 120 GB as uint8 and 480 GB as float32
    print(f"200000² VRT: peak RSS {peak / 2**20:.0f} MiB while tiles flowed")
    assert peak < 2.0 * 2**30, f"peak RSS {peak / 2**30:.2f} GiB"
    assert leftovers(out) == []
