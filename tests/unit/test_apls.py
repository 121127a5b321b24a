"""APLS: hand-worked small networks, invariances, real SpaceNet vs OSM chips."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.affinity import translate
from shapely.geometry import LineString, MultiLineString

from roadprn.evaluate.apls import APLSParams, apls, control_positions
from roadprn.evaluate.graph import lines_to_graph, split_edges
from roadprn.evaluate.io import local_utm_crs

# Default parameters: control points every 50 m, snap 4 m, routes >= 10 m.


def test_identical_networks_score_one_and_empty_prediction_zero():
    roads = [LineString([(0, 0), (300, 0)]), LineString([(150, -100), (150, 120)])]
    assert apls(roads, roads).apls == 1.0
    assert apls(roads, []).apls == 0.0
    assert apls([], roads).apls == 0.0
    assert apls([], []).apls == 1.0


def test_missing_edge_worked_by_hand():
    # Truth: an L of 200 m (one edge after merging) -> control points at 0, 50, 100, 150, 200 m.
    # Prediction: only the first leg (100 m) -> control points at 0, 50, 100 m.
    # truth->pred: 5*4 = 20 ordered routes; the 3 points on the first leg snap, the 2 on the
    #   missing leg do not: 6 routes exact, 14 score 0 -> 1 - 14/20 = 0.3.
    # pred->truth: 6 routes, all exact -> 1.0.  APLS = 2*0.3*1/(0.3+1) = 6/13.
    r = apls([LineString([(0, 0), (100, 0), (100, 100)])], [LineString([(0, 0), (100, 0)])])
    assert r.truth_to_pred == pytest.approx(0.3)
    assert r.pred_to_truth == pytest.approx(1.0)
    assert r.n_paths_truth_to_pred == 20 and r.n_paths_pred_to_truth == 6
    assert r.apls == pytest.approx(6 / 13)


def test_broken_junction_worked_by_hand():
    # Truth: T junction at (100, 0): three 100 m edges, control points = 4 nodes + 3 midpoints.
    # Prediction: the stem starts 10 m below the junction (gap > 4 m snap).
    # truth->pred: all 7 points snap; 42 ordered routes; the 20 routes between the bar
    #   (5 points) and the stem (2 points) have no path in the prediction -> 1 - 20/42 = 11/21.
    # pred->truth: bar (200 m, 5 points) and stem (90 m, ends + midpoint) are disconnected in
    #   the prediction, so only 20 + 6 routes exist, all reproduced exactly -> 1.0.
    # APLS = 2*(11/21)/(11/21 + 1) = 22/32.
    truth = [LineString([(0, 0), (200, 0)]), LineString([(100, 0), (100, 100)])]
    pred = [LineString([(0, 0), (200, 0)]), LineString([(100, 10), (100, 100)])]
    r = apls(truth, pred)
    assert r.truth_to_pred == pytest.approx(11 / 21)
    assert r.pred_to_truth == pytest.approx(1.0)
    assert r.n_paths_pred_to_truth == 26
    assert r.apls == pytest.approx(22 / 32)


def test_spurious_spur_worked_by_hand():
    # Truth: a 200 m road. Prediction: the same road plus a 60 m spur at x=100.
    # truth->pred: every truth route is reproduced -> 1.0.
    # pred->truth: 7 control points (5 on the road, spur midpoint at 30 m, spur end);
    #   42 routes, the 22 touching the spur's two points have no counterpart -> 20/42.
    # APLS = 2*(20/42)/(20/42 + 1) = 20/31.
    truth = [LineString([(0, 0), (200, 0)])]
    pred = [LineString([(0, 0), (200, 0)]), LineString([(100, 0), (100, 60)])]
    r = apls(truth, pred)
    assert r.truth_to_pred == pytest.approx(1.0)
    assert r.pred_to_truth == pytest.approx(20 / 42)
    assert r.apls == pytest.approx(20 / 31)


def test_detour_scores_path_length_difference():
    # Prediction replaces a straight 100 m road by a 140 m detour between the same ends.
    # truth->pred: only the two ends snap (the midpoint at (50, 0) is 20 m from the detour);
    #   routes end-end (2): |100-140|/100 = 0.4; 4 routes with the midpoint: 1.
    truth = [LineString([(0, 0), (100, 0)])]
    pred = [LineString([(0, 0), (0, 20), (100, 20), (100, 0)])]
    r = apls(truth, pred)
    assert r.truth_to_pred == pytest.approx(1 - (2 * 0.4 + 4 * 1.0) / 6)


def test_snap_tolerance():
    truth = [LineString([(0, 0), (300, 0)]), LineString([(150, -100), (150, 120)])]
    near = [translate(g, 0, 2.0) for g in truth]  # within 4 m: still a perfect match
    assert apls(truth, near).apls == pytest.approx(1.0, abs=0.02)
    far = [translate(g, 6.0, 6.0) for g in truth]
    assert apls(truth, far).apls == 0.0
    assert apls(truth, far, APLSParams(snap_m=10.0)).apls > 0.95


def test_swapping_swaps_the_halves():
    truth = [LineString([(0, 0), (200, 0)]), LineString([(100, 0), (100, 100)])]
    pred = [LineString([(0, 0), (200, 0)]), LineString([(100, 10), (100, 160)])]
    a, b = apls(truth, pred), apls(pred, truth)
    assert a.truth_to_pred == pytest.approx(b.pred_to_truth)
    assert a.pred_to_truth == pytest.approx(b.truth_to_pred)
    assert a.apls == pytest.approx(b.apls)


def test_feature_splitting_and_multilinestrings_do_not_matter():
    one = [LineString([(0, 0), (120, 0), (240, 30)]), LineString([(120, 0), (120, 150)])]
    pieces = [LineString([(0, 0), (60, 0)]), LineString([(60, 0), (120, 0)]),
              LineString([(120, 0), (240, 30)]), MultiLineString([[(120, 0), (120, 70)],
                                                                  [(120, 70), (120, 150)]])]
    g1, g2 = lines_to_graph(one), lines_to_graph(pieces)
    assert g1.n_nodes == g2.n_nodes == 4 and g1.u.size == g2.u.size == 3
    assert g1.total_length == pytest.approx(g2.total_length)
    pred = [LineString([(0, 1), (240, 31)])]
    assert apls(one, pred).apls == pytest.approx(apls(pieces, pred).apls)


def test_crossing_lines_are_noded_into_a_junction():
    g = lines_to_graph([LineString([(0, 0), (200, 0)]), LineString([(100, -100), (100, 100)])])
    assert g.n_nodes == 5 and g.u.size == 4
    assert sorted(np.round(g.length)) == [100, 100, 100, 100]


def test_control_point_rule():
    edge, pos = control_positions(np.array([30.0, 40.0, 50.0, 120.0, 150.0]), 50.0)
    assert edge.tolist() == [1, 2, 3, 3, 4, 4]
    assert pos.tolist() == pytest.approx([20.0, 25.0, 40.0, 80.0, 50.0, 100.0])


def test_split_edges_chain_lengths_and_merging():
    g = lines_to_graph([LineString([(0, 0), (100, 0)])])
    split, ids = split_edges(g, np.array([0, 0, 0, 0]), np.array([30.0, 30.0005, 0.0, 70.0]))
    assert ids[0] == ids[1]  # coincident points share a node
    assert ids[2] in (g.u[0], g.v[0]) and g.nodes[ids[2]].tolist() == [0.0, 0.0]
    assert split.n_nodes == 4
    assert sorted(split.length.tolist()) == pytest.approx([30.0, 30.0, 40.0])


@pytest.mark.realdata
def test_spacenet_vs_osm_chips(realdata, tmp_path):
    """APLS strictly in (0, 1) on every chip and independent of the input CRS."""
    from roadprn.evaluate.compare import EvalParams, Pair, evaluate_pair

    chips = sorted((realdata / "vectors" / "spacenet").glob("*.geojson"))
    assert len(chips) == 7
    saw_multi = False
    for chip in chips:
        osm = realdata / "vectors" / "osm" / chip.name
        truth = gpd.read_file(chip)
        saw_multi |= bool((truth.geom_type == "MultiLineString").any())
        geo = evaluate_pair(Pair(osm, chip, chip.stem), EvalParams()).metrics
        assert 0.0 < geo["apls"] < 1.0, chip.name
        assert 0.0 < geo["completeness"] < 1.0, chip.name
        # reproject both inputs to UTM first (and the prediction to web mercator): same scores
        utm = local_utm_crs(truth.geometry)
        truth.to_crs(utm).to_file(tmp_path / "t.gpkg")
        gpd.read_file(osm).to_crs(3857).to_file(tmp_path / "p.gpkg")
        projected = evaluate_pair(Pair(tmp_path / "p.gpkg", tmp_path / "t.gpkg", "x"),
                                  EvalParams()).metrics
        for key in ("apls", "apls_truth_to_pred", "apls_pred_to_truth", "completeness",
                    "correctness", "quality"):
            assert projected[key] == pytest.approx(geo[key], rel=1e-6), (chip.name, key)
        # MultiLineStrings exploded beforehand give the same scores
        exploded = truth.explode(index_parts=False)
        exploded.to_file(tmp_path / "e.geojson", driver="GeoJSON")
        again = evaluate_pair(Pair(osm, tmp_path / "e.geojson", "x"), EvalParams()).metrics
        assert again["apls"] == pytest.approx(geo["apls"], rel=1e-9)
    assert saw_multi


def test_apls_on_a_mid_sized_network():
    """A 10 x 10 block grid (44 km) with two streets missing. Its speed is measured by the
    benchmark in scripts/, not here: a stopwatch in a test fails on a busy machine."""
    lines = []
    for i in range(11):
        lines.append(LineString([(0, i * 200), (2000, i * 200)]))
        lines.append(LineString([(i * 200, 0), (i * 200, 2000)]))
    pred = [translate(g, 1.0, 1.0) for g in lines[:-2]]
    r = apls(lines, pred)
    assert 0.5 < r.apls < 1.0
    assert shapely.length(np.array(lines)).sum() == pytest.approx(44_000)
