"""`roadprn evaluate` on hostile inputs and absurd options: one line on stderr, the documented
exit code, no traceback, nothing written (issue 21, "evaluate reads whole rasters")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import LineString

from tests.helpers import REPO_ROOT, assert_clean_failure, invoke, write_test_raster

UTM = from_origin(600000, 5800000, 0.5, 0.5)


def _write(path, data, transform=UTM, crs="EPSG:32631", **profile):
    return write_test_raster(path, data, transform=transform, crs=crs, **profile)


def _mask(shape=(256, 256)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[100:108, :] = 1
    m[:, 60:66] = 1
    return m


def _lines(path, coords, crs="EPSG:32631"):
    gpd.GeoSeries([LineString(c) for c in coords], crs=crs).to_file(path)
    return path


def _geojson(path, coords, epsg=32631):
    """Written by hand: writers refuse (or rewrite) coordinates such as 1e308."""
    path.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "LineString", "coordinates": coords}}]}))
    return path


@pytest.fixture
def truth(tmp_path):
    return _write(tmp_path / "truth.tif", _mask())


def evaluate(pred, truth, out, *args):
    return invoke("evaluate", "--pred", pred, "--truth", truth, "--out", out, *args)


# --------------------------------------------------------------------------- big rasters


def test_header_claiming_a_million_squared_pixels_is_refused_at_once(tmp_path, truth):
    """10⁶ x 10⁶ px (sparse, 12 MB on disk) gave MemoryError: Unable to allocate 931 GiB."""
    huge = tmp_path / "huge.tif"
    with rasterio.open(huge, "w", driver="GTiff", width=10**6, height=10**6, count=1,
                       dtype="uint8", crs="EPSG:32631", transform=UTM, tiled=True,
                       blockxsize=1024, blockysize=1024, sparse_ok=True, BIGTIFF="YES") as ds:
        ds.write(_mask((1024, 1024)), 1, window=rasterio.windows.Window(0, 0, 1024, 1024))
    out = tmp_path / "out"
    for pred, tru in ((huge, truth), (truth, huge)):
        assert_clean_failure(evaluate(pred, tru, out), 3, "huge.tif", "1000000 x 1000000",
                             "--pairs", out=out)


# --------------------------------------------------------------------------- broken rasters


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("layout", ["tiled", "stripped"])
def test_truncated_raster_is_a_bad_input_naming_the_file(tmp_path, truth, fraction, layout):
    """It said 'Read failed. See previous exception for details', exit 1."""
    rng = np.random.default_rng(0)
    kw = {"tiled": True, "blockxsize": 64, "blockysize": 64, "compress": "deflate"} \
        if layout == "tiled" else {}
    full = _write(tmp_path / "full.tif", rng.integers(0, 255, (256, 256), dtype=np.uint8), **kw)
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[:int(len(data) * fraction)])
    out = tmp_path / "out"
    assert_clean_failure(evaluate(cut, truth, out), 3, "cut.tif", out=out)
    assert_clean_failure(evaluate(full, cut, out), 3, "cut.tif", out=out)
    assert_clean_failure(evaluate(full, truth, out, "--ignore", cut), 3, "cut.tif", out=out)
    assert_clean_failure(evaluate(full, truth, out, "--image", cut, "--no-plots"), 3,
                         "cut.tif", out=out)


def test_corrupt_tile_in_the_middle_is_found_while_reading(tmp_path, truth):
    """First and last blocks are fine, so only the windowed read meets the bad tile."""
    rng = np.random.default_rng(1)
    full = _write(tmp_path / "full.tif", rng.integers(0, 255, (256, 256), dtype=np.uint8),
                  tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(full) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    data = bytearray(full.read_bytes())
    data[offset:offset + 200] = bytes(200)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert_clean_failure(evaluate(bad, truth, out), 3, "bad.tif", "corrupt", out=out)


def test_float_raster_outside_unit_interval_is_refused(tmp_path, truth):
    """A 0-5 'probability' was clipped to [0, 1] and scored as if it meant something."""
    rng = np.random.default_rng(2)
    five = _write(tmp_path / "five.tif", (rng.random((256, 256)) * 5).astype(np.float32))
    out = tmp_path / "out"
    assert_clean_failure(evaluate(five, truth, out), 3, "five.tif", "[0, 1]", out=out)


def test_integer_raster_scaled_below_threshold_warns_in_one_line(tmp_path, truth):
    classes = _write(tmp_path / "classes.tif", (_mask() * 5).astype(np.uint16))
    out = tmp_path / "out"
    result = evaluate(classes, truth, out, "--no-plots")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "classes.tif" in lines[0] and "65535" in lines[0], lines


def test_lines_in_a_crs_proj_cannot_relate_are_one_line(tmp_path):
    wkt = 'LOCAL_CS["local",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    local = _write(tmp_path / "local.tif", _mask(), crs=rasterio.crs.CRS.from_wkt(wkt))
    roads = _lines(tmp_path / "roads.geojson", [[(600000, 5799950), (600100, 5799950)]])
    out = tmp_path / "out"
    assert_clean_failure(evaluate(local, roads, out), 3, "roads.geojson", out=out)


# --------------------------------------------------------------------------- absurd lines


@pytest.mark.parametrize("value", [1e308, -1e308, 1e12])
def test_absurd_line_coordinates_are_refused(tmp_path, truth, value):
    """Coordinates near 1e308 gave an OverflowError traceback (exit 70 after the last-resort
    handler)."""
    bad = _geojson(tmp_path / "bad.geojson", [[600000, 5800000], [value, value]])
    ok = _lines(tmp_path / "ok.geojson", [[(600000, 5799950), (600100, 5799950)]])
    out = tmp_path / "out"
    for pred, tru in ((bad, ok), (ok, bad), (bad, truth), (truth, bad)):
        assert_clean_failure(evaluate(pred, tru, out), 3, "bad.geojson", out=out)


# --------------------------------------------------------------------------- absurd options


BAD_OPTIONS = [
    (["--patch-size", "100000"], "--patch-size"),  # allocated 74.5 GiB
    (["--patch-size", "0"], "--patch-size"),
    (["--control-spacing-m", "1e-9"], "--control-spacing-m"),  # ran with no end
    (["--control-spacing-m", "nan"], "--control-spacing-m"),
    (["--threshold", "nan"], "--threshold"),
    (["--threshold", "1.5"], "--threshold"),
    (["--tolerance-m", "inf"], "--tolerance-m"),
    (["--tolerance-m", "-1"], "--tolerance-m"),
    (["--truth-width-m", "0"], "--truth-width-m"),
    (["--truth-width-m", "1e9"], "--truth-width-m"),
    (["--snap-m", "nan"], "--snap-m"),
    (["--snap-m", "1e300"], "--snap-m"),
    (["--min-path-m", "-5"], "--min-path-m"),
    (["--pixel-size-m", "0"], "--pixel-size-m"),
    (["--pixel-size-m", "nan"], "--pixel-size-m"),
]


@pytest.mark.parametrize("args,option", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_absurd_options_are_refused_up_front(tmp_path, truth, args, option):
    out = tmp_path / "out"
    line = assert_clean_failure(evaluate(truth, truth, out, *args), 2, option, out=out)
    assert "range" in line or "allowed" in line, line


def test_usage_mistakes_are_one_line(tmp_path, truth):
    out = tmp_path / "out"
    assert_clean_failure(invoke("evaluate", "--pred", truth, "--out", out), 2, "--truth", out=out)
    assert_clean_failure(invoke("evaluate", "--pred", truth, "--truth", truth), 2, "--out")
    assert_clean_failure(invoke("evaluate", "--pred", tmp_path, "--truth", truth, "--out", out),
                         2, "directory", out=out)


def test_tolerance_of_too_many_pixels_is_refused(tmp_path, truth):
    """1000 m at 0.5 m pixels is a 2000 px halo on every window."""
    out = tmp_path / "out"
    assert_clean_failure(evaluate(truth, truth, out, "--tolerance-m", "1000"), 2,
                         "--tolerance-m", "pixels", out=out)


def test_control_spacing_too_fine_for_the_network_is_refused(tmp_path):
    """30 km of road at 1 m spacing would be 9e8 routes per direction."""
    roads = _lines(tmp_path / "long.geojson",
                   [[(600000 + 1000 * i, 5800000 + (i % 2) * 1000) for i in range(31)]])
    out = tmp_path / "out"
    line = assert_clean_failure(evaluate(roads, roads, out, "--control-spacing-m", "1"), 2,
                                "--control-spacing-m", "control points", out=out)
    assert "or more" in line
    ok = evaluate(roads, roads, out, "--no-plots")
    assert ok.exit_code == 0, ok.output


# --------------------------------------------------------------------------- memory


@pytest.mark.slow
def _evaluate_peak_rss_mb(tmp_path, side: int) -> float:
    """Peak RSS (MB) of a real ``roadprn evaluate --sweep`` process on a ``side``² scene."""
    pred = tmp_path / f"pred{side}.tif"
    with rasterio.open(pred, "w", driver="GTiff", width=side, height=side, count=1,
                       dtype="uint8", crs="EPSG:32631", transform=UTM, tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate") as ds:
        row = np.zeros((512, side), np.uint8)
        row[200:210, :] = 255
        row[:, ::997] = 255
        for r in range(0, side, 512):
            ds.write(row, 1, window=rasterio.windows.Window(0, r, side, 512))
    code = ("import resource, sys\nfrom roadprn.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(code)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / f"out{side}"
    proc = subprocess.run(
        [sys.executable, "-c", code, "evaluate", "--pred", pred, "--truth", pred, "--out",
         out, "--sweep"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=1800)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["iou"] == 1.0 and doc["relaxed_f1"] == 1.0
    return int(proc.stderr.split("RSS")[-1].split()[0]) / 1024


@pytest.mark.slow
def test_memory_is_flat_with_scene_size(tmp_path):
    """Peak RSS at 12288² (151 M px) is about that at 4096² (9x fewer pixels); whole arrays
    (float32 prediction + masks + distance transforms) would need several GB more. Compared in
    one run, because the baseline (libraries, allocator) moves with the machine."""
    small = _evaluate_peak_rss_mb(tmp_path, 4096)
    large = _evaluate_peak_rss_mb(tmp_path, 12288)
    print(f"evaluate peak RSS: 4096² {small:.0f} MB, 12288² {large:.0f} MB")
    assert large < 1.5 * small, (small, large)
    assert large < 3000, large


def test_zero_pixel_size_geotransform_is_a_bad_input(tmp_path, truth):
    """The red-team run got a ZeroDivisionError traceback from such a file."""
    vrt = tmp_path / "zero.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="256" rasterYSize="256"><SRS>EPSG:32631</SRS>
<GeoTransform>600000, 0, 0, 5800000, 0, -0.5</GeoTransform>
<VRTRasterBand dataType="Byte" band="1"><SimpleSource>
<SourceFilename relativeToVRT="1">{truth.name}</SourceFilename><SourceBand>1</SourceBand>
</SimpleSource></VRTRasterBand></VRTDataset>""")
    out = tmp_path / "out"
    assert_clean_failure(evaluate(vrt, truth, out), 3, "zero.vrt", "pixel size", out=out)
