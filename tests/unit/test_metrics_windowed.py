"""Pixel metrics computed window by window equal the whole-array computation, with windows
that do not divide the image, patches that straddle windows and relaxed halos at the edges."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from roadprn.errors import ConfigError
from roadprn.evaluate import io, windowed
from roadprn.evaluate.compare import EvalParams, Pair, evaluate_pair
from roadprn.evaluate.pixel import (
    binarize,
    confusion,
    patch_iou_grid,
    relaxed_counts,
    sweep_counts,
)
from roadprn.evaluate.windowed import ArrayLayer, windowed_pixel_metrics


def _random_case(seed: int, shape=(53, 71)):
    rng = np.random.default_rng(seed)
    prob = rng.random(shape).astype(np.float32)
    # sparse, clustered roads so relaxed matches happen both inside and across windows
    truth = (rng.random(shape) < 0.04) | (np.roll(prob, 3, axis=1) > 0.93)
    valid = rng.random(shape) > 0.1
    ignore = np.zeros(shape, bool)
    ignore[5:12, 40:60] = True
    return prob, truth, valid, ignore


@pytest.mark.parametrize("window", [8, 13, 16, 100])
@pytest.mark.parametrize("seed", [0, 1])
def test_windowed_equals_whole_array(window, seed):
    prob, truth, valid, ignore = _random_case(seed)
    size, tol, threshold = (0.3, 0.5), 1.1, 0.6
    result = windowed_pixel_metrics(
        prob.shape, ArrayLayer(prob, valid), ArrayLayer(truth.astype(np.float32)),
        ArrayLayer(ignore.astype(np.float32)), threshold=threshold, pixel_size_m=size,
        tolerance_m=tol, n_thresholds=101, patch_size=7, window=window)
    eff = valid & ~ignore
    pred = binarize(prob, threshold)
    assert result.counts == confusion(pred, truth, eff)
    assert result.relaxed == relaxed_counts(pred, truth, size, tol, eff)
    assert result.relaxed.pred_matched > 0 and result.relaxed.truth_matched > 0
    whole = sweep_counts(prob, truth, eff, 101)
    for key in ("threshold", "tp", "fp", "fn"):
        np.testing.assert_array_equal(result.sweep[key], whole[key])
    np.testing.assert_array_equal(result.patch_iou, patch_iou_grid(pred, truth, 7, eff))
    assert result.stride == 1
    np.testing.assert_array_equal(result.overlay[0], pred)
    np.testing.assert_array_equal(result.overlay[1], truth)
    np.testing.assert_array_equal(result.overlay[2], eff)
    assert result.n_valid == int(eff.sum()) and result.n_pixels == prob.size


def test_relaxed_matches_across_window_edges_and_scene_edges():
    """A truth pixel just across a window edge matches; nothing beyond the scene edge does."""
    prob = np.zeros((20, 20), np.float32)
    truth = np.zeros((20, 20), np.float32)
    prob[9, 7] = 1  # window 8: row 9 is in the second window row ...
    truth[7, 7] = 1  # ... truth two rows up, in the first
    prob[0, 19] = 1  # corner pixel: its halo lies outside the scene
    layer = windowed_pixel_metrics((20, 20), ArrayLayer(prob), ArrayLayer(truth),
                                   pixel_size_m=(1.0, 1.0), tolerance_m=2.0, window=8)
    assert layer.relaxed.pred_matched == 1 and layer.relaxed.pred_total == 2
    assert layer.relaxed.truth_matched == 1


def test_overlay_is_decimated_and_patch_grid_bounded(monkeypatch):
    monkeypatch.setattr(windowed, "PLOT_SIDE", 16)
    monkeypatch.setattr(windowed, "MAX_PATCHES", 25)
    prob, truth, valid, _ = _random_case(3, shape=(61, 45))
    result = windowed_pixel_metrics(prob.shape, ArrayLayer(prob, valid),
                                    ArrayLayer(truth.astype(np.float32)), patch_size=2, window=9)
    s = result.stride
    assert s == 4
    np.testing.assert_array_equal(result.overlay[0], (prob >= 0.5)[::s, ::s])
    np.testing.assert_array_equal(result.overlay[2], valid[::s, ::s])
    assert result.patch_iou.size <= 25 and result.patch_size > 2
    np.testing.assert_array_equal(
        result.patch_iou, patch_iou_grid(prob >= 0.5, truth, result.patch_size, valid))


def test_patch_iou_grid_huge_patch_is_one_block():
    """A patch far larger than the image (it used to allocate patch_size² cells)."""
    pred = np.zeros((5, 6), bool)
    pred[1, 1] = True
    grid = patch_iou_grid(pred, pred, 10**9)
    assert grid.shape == (1, 1) and grid[0, 0] == 1.0


def test_relaxed_halo_is_bounded():
    assert windowed.relaxed_halo((0.5, 0.3), 3.0, "x") == 11
    with pytest.raises(ConfigError, match="--tolerance-m"):
        windowed.relaxed_halo((0.01, 0.01), 100.0, "scene.tif")


# --------------------------------------------------------------------------- files

UTM = from_origin(600000, 5800000, 0.5, 0.5)


def _write(path, data, transform=UTM, crs="EPSG:32631", nodata=None, **kw):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=data.dtype, crs=crs, transform=transform, nodata=nodata,
                       **kw) as ds:
        ds.write(data, 1)
    return path


def _scene(tmp_path):
    rng = np.random.default_rng(7)
    shape = (90, 130)
    truth = np.zeros(shape, np.uint8)
    truth[30:36, :] = 1
    truth[:, 70:75] = 1
    prob = np.clip(truth * 180 + rng.integers(0, 120, shape), 0, 254).astype(np.uint8)
    prob[:5, :5] = 255  # nodata
    pred = _write(tmp_path / "pred.tif", prob, nodata=255)
    truth_path = _write(tmp_path / "truth.tif", truth)
    # the truth again on another grid: EPSG:4326, coarser, shifted
    from rasterio.warp import calculate_default_transform, reproject

    dst_t, w, h = calculate_default_transform("EPSG:32631", "EPSG:4326", shape[1], shape[0],
                                              *rasterio.transform.array_bounds(*shape, UTM))
    geo = np.zeros((h, w), np.uint8)
    reproject(truth, geo, src_transform=UTM, src_crs="EPSG:32631", dst_transform=dst_t,
              dst_crs="EPSG:4326")
    geo_truth = _write(tmp_path / "truth_4326.tif", geo, transform=dst_t, crs="EPSG:4326")
    lines = tmp_path / "roads.geojson"
    import geopandas as gpd
    from shapely.geometry import LineString

    x0, y0 = 600000, 5800000
    gpd.GeoSeries([LineString([(x0, y0 - 16.5), (x0 + 65, y0 - 16.5)]),
                   LineString([(x0 + 36, y0), (x0 + 36.2, y0 - 45)])],
                  crs="EPSG:32631").to_crs("EPSG:4326").to_file(lines)
    ignore = tmp_path / "ignore.geojson"
    from shapely.geometry import box

    gpd.GeoSeries([box(x0 + 5, y0 - 40, x0 + 20, y0 - 25)], crs="EPSG:32631").to_file(ignore)
    return pred, truth_path, geo_truth, lines, ignore


@pytest.mark.parametrize("which,tolerance", [("same_grid", 3.0), ("other_grid", 3.0),
                                             ("other_grid", 0.0), ("lines", 3.0),
                                             ("pred_lines", 3.0)])
def test_file_metrics_do_not_depend_on_the_window(tmp_path, which, tolerance):
    pred, truth, geo_truth, lines, ignore = _scene(tmp_path)
    pair = {"same_grid": Pair(pred, truth, "p", ignore=ignore),
            "other_grid": Pair(pred, geo_truth, "p"),
            "lines": Pair(pred, lines, "p", ignore=ignore),
            "pred_lines": Pair(lines, truth, "p")}[which]
    results = [evaluate_pair(pair, EvalParams(window=w, sweep=True, patch_size=16,
                                              tolerance_m=tolerance))
               for w in (7, 32, 4096)]
    for r in results[1:]:
        assert r.metrics == results[0].metrics
        assert r.pixel_counts == results[0].pixel_counts
        np.testing.assert_array_equal(r.patch_iou, results[0].patch_iou)
    m = results[0].metrics
    assert 0.3 < m["iou"] <= 1 and m["relaxed_recall"] >= m["recall"]


def test_reads_are_bounded_by_the_window(tmp_path, monkeypatch):
    """Memory follows the window: no read (scale scan included) is larger than window + halo
    or the scan window, whatever the scene size."""
    pred, truth, *_ = _scene(tmp_path)
    sizes: list[int] = []
    original = io.RasterLayer._raw

    def spy(self, col0, row0, width, height, out_shape=None):
        sizes.append(width * height)
        return original(self, col0, row0, width, height, out_shape)

    monkeypatch.setattr(io.RasterLayer, "_raw", spy)
    monkeypatch.setattr(io, "_SCAN", 40)
    evaluate_pair(Pair(pred, truth, "p"), EvalParams(window=16))
    halo = windowed.relaxed_halo((0.5, 0.5), 3.0, "x")
    assert sizes and max(sizes) <= max((16 + 2 * halo) ** 2, 40 * 40)
