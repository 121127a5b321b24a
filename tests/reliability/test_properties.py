"""Property-based tests (hypothesis) of the pure pieces that every scene goes through.

Already covered elsewhere, not repeated here: tile cores cover every pixel exactly once for any
scene/tile/halo sizes (tests/unit/test_tiling.py::test_cores_cover_every_pixel_exactly_once) and
blending weights sum to one (::test_blend_weights_sum_to_one).
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.crs import CRS
from rasterio.transform import from_origin

from roadprn.evaluate.apls import APLSParams, apls
from roadprn.evaluate.length import length_metrics
from roadprn.evaluate.pixel import patch_iou_grid, pixel_metrics, threshold_sweep
from roadprn.prn.pseudolabels import patch_thresholds, pseudo_labels
from roadprn.vectorize import ArraySource, VectorizeParams, network_frames, vectorize_source
from tests.helpers import loop_pseudo_labels

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def prob_truth(draw, max_side: int = 40):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    quantised = draw(st.booleans())  # values on the thresholds themselves: ties and edges
    if quantised:
        prob = draw(arrays(np.int64, (h, w), elements=st.integers(0, 20))) / 20.0
    else:
        prob = draw(arrays(np.float64, (h, w), elements=st.floats(0, 1)))
    truth = draw(arrays(np.bool_, (h, w)))
    return prob, truth


@FAST
@given(prob_truth(), st.integers(1, 17), st.integers(1, 17))
def test_pseudo_labels_equal_the_brute_force_definition(pt, ph, pw):
    prob, truth = pt
    want_labels, want_taus = loop_pseudo_labels(prob, truth, (ph, pw))
    np.testing.assert_array_equal(pseudo_labels(prob[None], truth[None], (ph, pw))[0], want_labels)
    np.testing.assert_array_equal(patch_thresholds(prob[None], truth[None], (ph, pw))[0], want_taus)


# --------------------------------------------------------------------------- vectorisation

UTM = CRS.from_epsg(32631)


@st.composite
def road_masks(draw):
    """Random masks: noise, blobs and strokes, at random sizes and resolutions."""
    h = draw(st.integers(1, 90))
    w = draw(st.integers(1, 90))
    kind = draw(st.sampled_from(["noise", "strokes", "full", "empty"]))
    if kind == "noise":
        density = draw(st.floats(0.0, 1.0))
        seed = draw(st.integers(0, 2**31))
        mask = np.random.default_rng(seed).random((h, w)) < density
    elif kind == "strokes":
        mask = np.zeros((h, w), bool)
        for _ in range(draw(st.integers(1, 6))):
            r0, r1 = draw(st.integers(0, h - 1)), draw(st.integers(0, h - 1))
            c0, c1 = draw(st.integers(0, w - 1)), draw(st.integers(0, w - 1))
            width = draw(st.integers(0, 4))
            n = max(abs(r1 - r0), abs(c1 - c0)) + 1
            for r, c in zip(np.linspace(r0, r1, n).round().astype(int),
                            np.linspace(c0, c1, n).round().astype(int), strict=True):
                mask[max(r - width, 0):r + width + 1, max(c - width, 0):c + width + 1] = True
    else:
        mask = np.full((h, w), kind == "full")
    res = draw(st.sampled_from([0.3, 0.5, 1.0, 3.0]))
    return mask, res


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(road_masks(), st.booleans())
def test_vectorising_random_masks_gives_valid_linestrings(mask_res, tiled):
    mask, res = mask_res
    source = ArraySource(mask, from_origin(600000.0, 5750000.0, res, res), UTM)
    # tiled: 64 px tiles with seams to join; untiled: one tile; no length floor, so that even
    # the smallest pieces reach the output and are checked
    params = VectorizeParams(tile_size_px=64 if tiled else 2048, min_network_length_m=0.0,
                             min_component_area_m2=0.0)
    network = vectorize_source(source, params)
    roads, junctions = network_frames(network, source.transform, source.crs, "p")
    if not mask.any():
        assert len(roads) == 0
    geoms = roads.geometry.to_numpy()
    assert all(g.geom_type == "LineString" for g in geoms)
    assert shapely.is_valid(geoms).all() and not shapely.is_empty(geoms).any()
    assert all(len(g.coords) >= 2 and g.length > 0 for g in geoms)
    coords = shapely.get_coordinates(geoms)
    assert np.isfinite(coords).all()
    # every vertex lies on the scene
    west, north = 600000.0, 5750000.0
    east, south = west + (mask.shape[1] + 1) * res, north - (mask.shape[0] + 1) * res
    assert ((coords[:, 0] >= west - res) & (coords[:, 0] <= east)).all()
    assert ((coords[:, 1] <= north + res) & (coords[:, 1] >= south)).all()
    assert (roads["length_m"] > 0).all() and np.isfinite(roads["length_m"]).all()
    assert (junctions["degree"] >= 1).all() if len(junctions) else True


# --------------------------------------------------------------------------- metrics


def _in_unit_interval(values):
    for key, value in values.items():
        if isinstance(value, float) and not math.isnan(value):
            assert 0.0 <= value <= 1.0, (key, value)


@FAST
@given(prob_truth(), st.floats(0, 1), st.booleans(), st.floats(0, 10))
def test_pixel_metrics_stay_in_the_unit_interval(pt, threshold, with_valid, tolerance):
    prob, truth = pt
    valid = (np.random.default_rng(int(prob.size)).random(prob.shape) > 0.3) if with_valid else None
    metrics, _, _ = pixel_metrics(prob, truth, valid, threshold=threshold,
                                  pixel_size_m=(0.5, 0.7), tolerance_m=tolerance)
    _in_unit_interval(metrics)
    for name, curve in threshold_sweep(prob, truth, valid).items():
        curve = np.asarray(curve, float)
        assert (curve[~np.isnan(curve)] >= 0).all() and (curve[~np.isnan(curve)] <= 1).all(), name
    grid = patch_iou_grid(prob > threshold, truth, 7, valid)
    assert ((grid[~np.isnan(grid)] >= 0) & (grid[~np.isnan(grid)] <= 1)).all()


coordinate = st.floats(0, 400, allow_nan=False)
polyline = st.lists(st.tuples(coordinate, coordinate), min_size=2, max_size=6).map(
    shapely.LineString).filter(lambda g: g.length > 0.5)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(polyline, max_size=6), st.lists(polyline, max_size=6), st.floats(0.5, 20))
def test_network_metrics_stay_in_the_unit_interval(truth, pred, tolerance):
    assume(truth or pred)
    metrics, _ = length_metrics(truth, pred, tolerance)
    _in_unit_interval(metrics)
    result = apls(truth, pred, APLSParams(control_spacing_m=40.0))
    _in_unit_interval(result.as_dict())
