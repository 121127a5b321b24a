"""A scene far larger than memory (a 200000² VRT, 40 G pixels × 3 bands): `info` describes it at
once, `extract` plans it and starts producing tiles with memory set by the tile size, not the
scene, and Ctrl-C then leaves nothing behind."""

from __future__ import annotations

import signal

import numpy as np
import psutil
import pytest

from tests.helpers import cli_process, invoke, leftovers, wait_for, write_test_raster

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


def test_info_on_a_huge_vrt_reads_no_scene(tmp_path, monkeypatch):
    """``info`` on 120 GB of pixels answers from the header and a few validation blocks: every
    pixel it reads is counted (a count, not a stopwatch: a busy CI machine may be slow)."""
    import rasterio.io

    vrt = huge_vrt(tmp_path)
    read_pixels = []

    def counting(method):
        def read(self, *args, **kwargs):
            data = method(self, *args, **kwargs)
            read_pixels.append(np.asarray(data).size)
            return data
        return read

    for name in ("read", "read_masks"):
        monkeypatch.setattr(rasterio.io.DatasetReader, name,
                            counting(getattr(rasterio.io.DatasetReader, name)))
    result = invoke("info", vrt, "--json")
    assert result.exit_code == 0, result.output
    assert f'"width": {SIDE}' in result.stdout
    assert read_pixels, "the validation blocks were not read through rasterio"
    # a few 256 x 256 blocks at most; the scene is 4 x 10^10 pixels per band
    assert sum(read_pixels) <= 16 * 256 * 256, read_pixels


@pytest.mark.slow
def test_extract_on_a_huge_vrt_starts_in_bounded_memory(tmp_path, tiny_model):
    vrt = huge_vrt(tmp_path)
    out = tmp_path / "out"
    marker, more = tmp_path / "tiles_done20", tmp_path / "tiles_done25"
    # touch a marker once the model has run 20 batches (tiles are flowing through the pipeline),
    # another at 25
    hook = ("import os, pathlib, roadprn.infer.predictor as _i\n"
            "_orig = _i.Predictor.__call__\n_n = [0]\n"
            "def _count(self, batch):\n"
            "    _n[0] += 1\n"
            "    if _n[0] in (20, 25): pathlib.Path(os.environ['MARKER'] + str(_n[0])).touch()\n"
            "    return _orig(self, batch)\n"
            "_i.Predictor.__call__ = _count\n")
    proc = cli_process(["extract", str(vrt), "--model", str(tiny_model), "--out", str(out),
                        "--tile-size", "256", "--halo", "16"],
                       hook=hook, env={"MARKER": str(tmp_path / "tiles_done")})
    watched = psutil.Process(proc.pid)
    peak = [0]

    def watched_until(path):
        def reached() -> bool:
            peak[0] = max(peak[0], watched.memory_info().rss)
            return path.exists()
        return reached

    wait_for(watched_until(marker), "20 batches through the model", proc)
    # keep watching while tiles flow: until 5 more batches have gone through the model
    wait_for(watched_until(more), "25 batches through the model", proc)
    peak = peak[0]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr
    # one full-width strip buffer of 200000 x (stride + halo + 256) floats is ~0.4 GB; the scene
    # itself would be 120 GB as uint8 and 480 GB as float32
    print(f"200000² VRT: peak RSS {peak / 2**20:.0f} MiB while tiles flowed")
    assert peak < 2.0 * 2**30, f"peak RSS {peak / 2**30:.2f} GiB"
    assert leftovers(out) == []
