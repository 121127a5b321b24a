"""`roadprn evaluate` end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.helpers import invoke, write_test_raster

GRID = from_origin(600000, 5800000, 0.5, 0.5)


def _write(path, data, transform=GRID, crs="EPSG:32631", **profile):
    return write_test_raster(path, data, transform=transform, crs=crs, **profile)


def _roads(shape=(128, 160)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[40:48, :] = 1
    m[:, 90:97] = 1
    return m


def test_identical_rasters_score_one_and_write_all_outputs(tmp_path):
    truth = _write(tmp_path / "truth.tif", _roads())
    prob = (_roads() * 200 + 20).astype(np.uint8)  # uint8 probability 0-255
    pred = _write(tmp_path / "pred.tif", prob)
    out = tmp_path / "out"
    r = invoke("evaluate", "--pred", pred, "--truth", truth, "--out", out, "--sweep",
               "--patch-size", "32")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "metrics.json").read_text())
    for key in ("iou", "precision", "recall", "f1", "relaxed_precision", "relaxed_recall"):
        assert doc[key] == 1.0, key
    assert 20 / 255 < doc["best_threshold"] <= 220 / 255
    assert len(doc["pr_curve"]["precision"]) == 101
    for name in ("report.md", "overlay.png", "patch_iou.png", "pr_curve.png"):
        assert (out / name).stat().st_size > 0, name
    assert "| iou | 1.0000 |" in r.output
    assert not list(out.glob("*.roadprn-tmp-*"))
    # existing outputs are kept unless --overwrite
    again = invoke("evaluate", "--pred", pred, "--truth", truth, "--out", out)
    assert again.exit_code == 4 and "--overwrite" in again.output


def test_empty_prediction_and_swapped_inputs(tmp_path):
    truth = _write(tmp_path / "truth.tif", _roads())
    half = _roads()
    half[:, :80] = 0
    half[60:70, 10:30] = 1  # a false positive
    pred = _write(tmp_path / "pred.tif", half)
    empty = _write(tmp_path / "empty.tif", np.zeros_like(half))
    r = invoke("evaluate", "--pred", empty, "--truth", truth, "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert doc["iou"] == doc["precision"] == doc["recall"] == doc["relaxed_recall"] == 0.0
    invoke("evaluate", "--pred", pred, "--truth", truth, "--out", tmp_path / "a", "--no-plots")
    invoke("evaluate", "--pred", truth, "--truth", pred, "--out", tmp_path / "b", "--no-plots")
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert 0 < a["precision"] < 1 and 0 < a["recall"] < 1
    assert a["precision"] == pytest.approx(b["recall"]) and a["recall"] == pytest.approx(
        b["precision"])


def test_nodata_and_ignore_mask_are_excluded(tmp_path):
    truth = _roads()
    pred = truth.copy()
    pred[0:20, 0:20] = 1  # false positives ...
    truth_path = _write(tmp_path / "truth.tif", truth)
    pred_path = _write(tmp_path / "pred.tif", pred)
    ignore = np.zeros_like(truth)
    ignore[0:20, 0:20] = 1  # ... all inside the ignored area
    ignore_path = _write(tmp_path / "ignore.tif", ignore)
    r = invoke("evaluate", "--pred", pred_path, "--truth", truth_path, "--ignore", ignore_path,
               "--out", tmp_path / "o", "--no-plots")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["iou"] == 1.0
    with_nodata = pred.copy()
    with_nodata[0:20, 0:20] = 255
    nd_path = _write(tmp_path / "nd.tif", with_nodata, nodata=255)
    r = invoke("evaluate", "--pred", nd_path, "--truth", truth_path, "--out", tmp_path / "n",
               "--no-plots")
    assert json.loads((tmp_path / "n" / "metrics.json").read_text())["iou"] == 1.0


def test_bad_inputs_give_one_line_errors(tmp_path):
    truth = _write(tmp_path / "truth.tif", _roads())
    far = _write(tmp_path / "far.tif", _roads(),
                 transform=from_origin(700000, 5800000, 0.5, 0.5))
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=160, height=128, count=1,
                       dtype="uint8") as ds:
        ds.write(_roads(), 1)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all")
    for pred, expect in ((far, "do not overlap"), (plain, "no georeferencing"),
                         (junk, "not a readable raster"), (tmp_path / "missing.tif",
                                                           "no such file")):
        r = invoke("evaluate", "--pred", pred, "--truth", truth, "--out", tmp_path / "x")
        assert r.exit_code == 3, r.output
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert len(lines) == 1 and expect in lines[0], r.output
    assert not (tmp_path / "x" / "metrics.json").exists()


@pytest.mark.realdata
def test_raster_vs_lines_matches_solaris_mask(realdata, tmp_path):
    d = realdata / "spacenet_vegas_pan"
    r = invoke("evaluate", "--pred", d / "sample_road_raster_mask.tif", "--truth",
               d / "sample_roads_for_masking.geojson", "--image", d / "road_mask_input.tif",
               "--out", tmp_path / "o", "--truth-width-m", "4")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert doc["iou"] > 0.99  # solaris' 4 m wide mask of the same lines
    wrong = invoke("evaluate", "--pred", d / "sample_road_raster_mask.tif", "--truth",
                   realdata / "robustness" / "geotiff_custom_proj_labels.geojson",
                   "--out", tmp_path / "w")
    assert wrong.exit_code == 3 and "CRS is wrong" in wrong.output


@pytest.mark.realdata
def test_vector_pairs_csv(realdata, tmp_path):
    rows = ["pred,truth,name"]
    for chip in sorted((realdata / "vectors" / "spacenet").glob("*.geojson")):
        rows.append(f"{realdata / 'vectors' / 'osm' / chip.name},{chip},{chip.stem}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    r = invoke("evaluate", "--pairs", tmp_path / "pairs.csv", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert len(doc["pairs"]) == 7
    assert 0 < doc["apls"] < 1 and 0 < doc["completeness"] < 1 and 0 < doc["correctness"] < 1
    assert doc["apls"] == pytest.approx(np.mean([p["apls"] for p in doc["pairs"]]))
    assert len(list((tmp_path / "o").glob("network_*.png"))) == 7
    assert "| AOI_2_Vegas_img99 |" in r.output


def test_overlay_of_a_large_scene_is_drawn_from_decimated_reads(tmp_path, monkeypatch):
    """The overlay and its image are read at plot size, never at scene size."""
    from roadprn.evaluate import io, windowed

    monkeypatch.setattr(windowed, "PLOT_SIDE", 40)
    truth = _write(tmp_path / "truth.tif", _roads())
    image = _write(tmp_path / "image.tif", (np.arange(128 * 160) % 251).astype(np.uint8)
                   .reshape(128, 160))
    shapes = []
    original = io.read_image_rgb

    def spy(path, shape, out_shape=None):
        rgb = original(path, shape, out_shape)
        shapes.append(rgb.shape)
        return rgb

    monkeypatch.setattr(io, "read_image_rgb", spy)
    r = invoke("evaluate", "--pred", truth, "--truth", truth, "--image", image,
               "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert shapes == [(32, 40, 3)]  # stride 4: ceil(128 / 4) x ceil(160 / 4)
    assert (tmp_path / "o" / "overlay.png").stat().st_size > 0
    wrong = _write(tmp_path / "small.tif", _roads((64, 64)))
    r = invoke("evaluate", "--pred", truth, "--truth", truth, "--image", wrong,
               "--out", tmp_path / "w")
    assert r.exit_code == 3 and "same grid" in r.output


def test_a_failure_after_some_figures_leaves_no_output(tmp_path, monkeypatch):
    """Figures, metrics.json and report.md are published together: a full disk while the
    second figure is written leaves none of them (the first used to stay)."""
    import errno

    from roadprn.evaluate import report

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "plot_patch_iou", full)
    truth = _write(tmp_path / "truth.tif", _roads())
    out = tmp_path / "out"
    r = invoke("evaluate", "--pred", truth, "--truth", truth, "--out", out)
    assert r.exit_code == 1
    assert "no space left on device" in r.output
    assert sorted(out.iterdir()) == []


def test_figures_named_after_results_never_replace_a_file_without_overwrite(tmp_path):
    truth = _write(tmp_path / "truth.tif", _roads())
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlay.png").write_bytes(b"the user's own picture")
    r = invoke("evaluate", "--pred", truth, "--truth", truth, "--out", out)
    assert r.exit_code == 4 and "overlay.png" in r.output
    assert (out / "overlay.png").read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in out.iterdir()) == ["overlay.png"]
