"""`roadprn info` end to end, on every GeoTIFF of the real data and on bad inputs."""

import json
import subprocess
import sys

import pytest

from tests.helpers import BOUND_S, REAL_GEOTIFFS, invoke


def test_every_real_geotiff_is_listed(realdata):
    found = {p.relative_to(realdata).as_posix() for p in realdata.rglob("*.tif")}
    assert found == set(REAL_GEOTIFFS), "update REAL_GEOTIFFS when the real data changes"


@pytest.mark.realdata
@pytest.mark.parametrize("rel", sorted(REAL_GEOTIFFS))
def test_info_json_on_real_geotiffs(realdata, rel):
    width, height, bands, dtype, crs, (xm, ym), nodata = REAL_GEOTIFFS[rel]
    result = invoke("info", str(realdata / rel), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["width"], info["height"], info["bands"]) == (width, height, bands)
    assert set(info["dtypes"]) == {dtype}
    assert info["crs"] == crs
    assert info["resolution_m"][0] == pytest.approx(xm, abs=2e-3)
    assert info["resolution_m"][1] == pytest.approx(ym, abs=2e-3)
    assert info["nodata"] == nodata
    west, south, east, north = info["footprint_wgs84"]
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90


@pytest.mark.realdata
def test_info_text_output(realdata):
    result = invoke("info", str(realdata / "spacenet_vegas_pan/road_mask_input.tif"))
    assert result.exit_code == 0
    assert "0.243 m x 0.300 m" in result.output and "EPSG:4326" in result.output
    assert "1300 x 1300 px" in result.output


@pytest.mark.realdata
def test_png_without_georeferencing(realdata):
    png = realdata / "spacenet_vegas_img33/AOI_2_Vegas_img33.png"
    refused = invoke("info", str(png))
    assert refused.exit_code == 3
    assert "no CRS" in refused.output and "--allow-ungeoreferenced" in refused.output
    allowed = invoke("info", str(png), "--allow-ungeoreferenced", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.output)["crs"].startswith("none")


def _bad_inputs(tmp_path, realdata):
    (tmp_path / "zero.tif").write_bytes(b"")
    (tmp_path / "text.tif").write_text("this is not a raster\n")
    pan = (realdata / "robustness/pan1.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(pan[: len(pan) // 2])
    return {
        "missing": (tmp_path / "missing.tif", "no such file"),
        "directory": (tmp_path, "is a directory"),
        "zero": (tmp_path / "zero.tif", "empty (0 bytes)"),
        "text": (tmp_path / "text.tif", "not a readable raster"),
        "truncated": (tmp_path / "truncated.tif", "truncated or corrupt"),
        "png": (realdata / "spacenet_vegas_img33/AOI_2_Vegas_img33.png", "no CRS"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "zero", "text", "truncated", "png"])
def test_bad_inputs_give_one_clear_line(tmp_path, realdata, case):
    """Through a real process: exactly one line on stderr, no traceback, exit code 3."""
    path, fragment = _bad_inputs(tmp_path, realdata)[case]
    proc = subprocess.run([sys.executable, "-m", "roadprn", "info", str(path)],
                          capture_output=True, text=True, timeout=BOUND_S)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("roadprn: error: ") and fragment in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_version_and_help():
    version = invoke("--version")
    assert version.exit_code == 0 and "roadprn" in version.output
    helptext = invoke("--help")
    assert helptext.exit_code == 0 and "info" in helptext.output


def test_help_lists_every_exit_code_of_the_readme():
    """The README's exit-code table and `roadprn --help` name the same codes (70 was missing)."""
    import re

    from tests.helpers import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| code | meaning |", 1)[1].split("\n\n", 1)[0]
    codes = re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)
    assert "70" in codes and "130" in codes
    helptext = " ".join(invoke("--help").output.split())
    listed = re.search(r"Exit codes: (.*?)\.", helptext).group(1)
    assert re.findall(r"(?:^|, )(\d+) ", listed) == codes, listed
