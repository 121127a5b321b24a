"""APLS against the official CosmiQ code (issue #17): the junction rules, OpenStreetMap
features that are not roads, each documented difference as a minimal case, and the official
values on the 7 real SpaceNet-vs-OSM chips (docs/metrics.md, "Compared with the official code").
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString

from roadprn.evaluate.apls import APLSParams, apls, snap_points, with_control_points
from roadprn.evaluate.compare import EvalParams, Pair, evaluate_pair
from roadprn.evaluate.graph import lines_to_graph
from tests.helpers import invoke

#: the official command line's defaults: snap 4 m, control points every 50 m, min path 0.001 m
OFFICIAL = dict(control_spacing_m=50.0, snap_m=4.0, min_path_m=0.001)

#: official APLS (CosmiQ/apls at 4a78807, networkx 3 / shapely 2 patches only), SpaceNet truth
#: vs OpenStreetMap proposal, from issue #17
OFFICIAL_APLS = {"img99": 0.7806, "img990": 0.6115, "img991": 0.7643, "img995": 0.7266,
                 "img997": 0.5751, "img998": 0.6597, "img999": 0.4250}


# ------------------------------------------------------------------ a crossing without a vertex

def test_crossing_without_shared_vertex_per_rule():
    road = LineString([(0, 0), (200, 0)])
    across = LineString([(100, -100), (100, 100)])  # crosses the road, no vertex there
    crossings = lines_to_graph([road, across])
    vertices = lines_to_graph([road, across], "vertices")
    assert (crossings.n_nodes, crossings.u.size) == (5, 4)  # a junction at (100, 0)
    assert (vertices.n_nodes, vertices.u.size) == (4, 2)  # a bridge: two separate roads
    # with a vertex at the crossing in both lines, both rules make the junction
    road_v = LineString([(0, 0), (100, 0), (200, 0)])
    across_v = LineString([(100, -100), (100, 0), (100, 100)])
    shared = lines_to_graph([road_v, across_v], "vertices")
    assert (shared.n_nodes, shared.u.size) == (5, 4)
    # a line ending on another's segment (no vertex there) is not joined under "vertices"
    t = lines_to_graph([road, LineString([(100, 0), (100, 100)])], "vertices")
    assert (t.n_nodes, t.u.size) == (4, 2)
    with pytest.raises(ValueError, match="junctions"):
        lines_to_graph([road], "nearest")


def test_stop_line_across_a_road_worked_by_hand():
    # Truth: a 200 m road. Prediction: the same road and a 10 m stop line drawn across it at
    # x=100 without a shared vertex; its ends are 5 m from the road (beyond the 4 m snap).
    truth = [LineString([(0, 0), (200, 0)])]
    pred = truth + [LineString([(100, -5), (100, 5)])]
    # crossings: the stop line is two 5 m dead-end spurs at a junction at x=100; 7 control
    #   points (0, 50, 100, 150, 200 and the two spur ends), 42 routes; the 22 with a spur end
    #   have no counterpart -> 20/42.
    c = apls(truth, pred, APLSParams(**OFFICIAL))
    assert c.truth_to_pred == pytest.approx(1.0)
    assert c.pred_to_truth == pytest.approx(20 / 42)
    # vertices: the stop line is a separate 10 m road; its 2 ends have one route each way,
    #   both without counterparts; the road's 5 points make 20 exact routes -> 20/22.
    v = apls(truth, pred, APLSParams(**OFFICIAL, junctions="vertices"))
    assert v.pred_to_truth == pytest.approx(20 / 22)


def _write_osm(path, features):
    gdf = gpd.GeoDataFrame({"highway": [h for h, _ in features]},
                           geometry=[g for _, g in features], crs="EPSG:32611")
    gdf.to_file(path, driver="GeoJSON")
    return path


def test_osm_features_that_are_not_roads_are_dropped_and_reported(tmp_path):
    road = LineString([(600000, 4000000), (600200, 4000000)])
    stop = LineString([(600100, 3999995), (600100, 4000005)])
    truth = _write_osm(tmp_path / "truth.geojson", [("residential", road)])
    pred = _write_osm(tmp_path / "pred.geojson", [("residential", road), ("stopline", stop),
                                                  ("crossing", stop), ("None", stop)])
    pair = Pair(pred, truth, "p")
    params = EvalParams(apls=APLSParams(**OFFICIAL))
    kept = evaluate_pair(pair, params)
    # the stop line and the crossing go; a value that is not listed ("None") stays
    d = kept.dropped["pred"]
    assert d.features == 2 and d.length_m == pytest.approx(20.0)
    assert d.by_value == {"crossing": {"features": 1, "length_m": pytest.approx(10.0)},
                          "stopline": {"features": 1, "length_m": pytest.approx(10.0)}}
    assert kept.dropped["truth"].features == 0
    everything = evaluate_pair(pair, EvalParams(apls=APLSParams(**OFFICIAL),
                                                drop_highway=frozenset()))
    assert everything.dropped["pred"].features == 0
    assert everything.metrics["apls_pred_to_truth"] == pytest.approx(20 / 42)
    only_stops = EvalParams(apls=APLSParams(**OFFICIAL), drop_highway=frozenset({"stopline",
                                                                                 "crossing",
                                                                                 "none"}))
    assert evaluate_pair(pair, only_stops).metrics["apls"] == pytest.approx(1.0)
    # the CLI: dropped by default, reported in metrics.json and report.md; options recorded
    out = tmp_path / "out"
    r = invoke("evaluate", "--pred", pred, "--truth", truth, "--out", out, "--no-plots",
               "--apls-junctions", "vertices")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["params"]["apls_junctions"] == "vertices"
    assert doc["params"]["drop_non_roads"] is True
    assert doc["dropped_features"]["pred"]["features"] == 2
    assert doc["dropped_features"]["pred"]["by_value"]["stopline"]["features"] == 1
    assert doc["pairs"][0]["dropped_features"]["truth"]["features"] == 0
    assert "Features dropped as not roads" in (out / "report.md").read_text()
    r = invoke("evaluate", "--pred", pred, "--truth", truth, "--out", tmp_path / "all",
               "--no-plots", "--keep-all-features")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert doc["params"]["drop_non_roads"] is False
    assert doc["dropped_features"]["pred"]["features"] == 0


# ------------------------------------------------------------------ a loop road

def test_loop_road_is_kept_and_scored():
    # A 100 m road ending in a 200 m cul-de-sac loop (a 50 m square). roadprn keeps the loop
    # (the official deletes it: its redundant-edge clean-up removes both copies).
    road = LineString([(0, 0), (100, 0)])
    loop = LineString([(100, 0), (150, 0), (150, 50), (100, 50), (100, 0)])
    for rule in ("crossings", "vertices"):
        g = lines_to_graph([road, loop], rule)
        assert g.n_nodes == 2 and sorted(g.length.tolist()) == pytest.approx([100.0, 200.0])
        assert int((g.u == g.v).sum()) == 1
        params = APLSParams(**OFFICIAL, junctions=rule)
        assert apls([road, loop], [road, loop], params).apls == pytest.approx(1.0)
        # Without the loop in the prediction: truth has 6 control points (2 nodes, 50 m on
        # the road, 3 on the loop); the 3 on the loop have no counterpart: 6 of 30 routes
        # are exact -> 0.2 (the official, having deleted the loop, would score 1).
        r = apls([road, loop], [road], params)
        assert r.n_control_truth == 6
        assert r.truth_to_pred == pytest.approx(6 / 30)
        assert r.pred_to_truth == pytest.approx(1.0)


# ------------------------------------------------------------------ a segment digitised twice

def test_segment_digitised_twice_is_one_road():
    road = LineString([(0, 0), (60, 5), (120, 0)])
    side = LineString([(60, 5), (60, 100)])
    for rule in ("crossings", "vertices"):
        once = lines_to_graph([road, side], rule)
        twice = lines_to_graph([road, side, road, LineString(road.coords[::-1])], rule)
        assert twice.n_nodes == once.n_nodes == 4 and twice.u.size == once.u.size == 3
        assert twice.total_length == pytest.approx(once.total_length)
        params = APLSParams(**OFFICIAL, junctions=rule)
        assert apls([road, side], [road, side, road], params).apls == pytest.approx(1.0)


# ------------------------------------------------------------------ two points onto one node

def test_two_control_points_snapping_onto_one_node_both_keep_it():
    pred = lines_to_graph([LineString([(0, 0), (100, 0)])])
    _, node = snap_points(np.array([[50.0, 1.0], [50.0, -1.0], [100.0, 3.0], [100.0, 0.0]]),
                          pred, 4.0)
    assert node[0] == node[1] >= 0 and node[2] == node[3] >= 0  # shared, both matched
    # Truth: a 200 m road and a 3 m stub at its middle; control points A (0, 0), B (50, 0),
    # C (100, 0), E (150, 0), F (200, 0) and the stub's end D (100, 3). D snaps onto C's
    # counterpart (the official renames that node and counts C as unmatched). Of the 30 routes
    # only D's differ: D-A and D-F 103 m vs 100, D-B and D-E 53 vs 50, D-C 3 vs 0 (both ways).
    truth = [LineString([(0, 0), (200, 0)]), LineString([(100, 0), (100, 3)])]
    split, _ = with_control_points(lines_to_graph(truth), 50.0)
    assert split.n_nodes == 6
    r = apls(truth, [LineString([(0, 0), (200, 0)])], APLSParams(**OFFICIAL))
    assert r.snapped_truth_to_pred == 1.0 and r.n_paths_truth_to_pred == 30
    assert r.truth_to_pred == pytest.approx(1 - 2 * (6 / 103 + 6 / 53 + 1.0) / 30)


# ------------------------------------------------------------------ the official values

def _chip_scores(realdata, junctions: str, drop: bool) -> dict[str, float]:
    chips = sorted((realdata / "vectors" / "spacenet").glob("*.geojson"))
    assert len(chips) == 7
    params = EvalParams(apls=APLSParams(**OFFICIAL, junctions=junctions),
                        **({} if drop else {"drop_highway": frozenset()}))
    scores = {}
    for chip in chips:
        result = evaluate_pair(Pair(realdata / "vectors" / "osm" / chip.name, chip, chip.stem),
                               params)
        scores[chip.stem.rsplit("_", 1)[-1]] = result.metrics["apls"]
    return scores


@pytest.mark.realdata
def test_vertices_rule_reproduces_the_official_values(realdata):
    # the official code has no road-class filter: every feature is scored, as there
    scores = _chip_scores(realdata, "vertices", drop=False)
    for chip in ("img990", "img991", "img995", "img997"):
        assert scores[chip] == pytest.approx(OFFICIAL_APLS[chip], abs=0.01), chip


@pytest.mark.realdata
def test_default_rule_with_osm_filter_matches_the_official_values(realdata):
    scores = _chip_scores(realdata, "crossings", drop=True)
    close = [c for c, s in scores.items() if abs(s - OFFICIAL_APLS[c]) <= 0.01]
    assert len(close) >= 6, scores
    assert np.mean(list(scores.values())) == pytest.approx(
        np.mean(list(OFFICIAL_APLS.values())), abs=0.005)


@pytest.mark.realdata
def test_the_19_stop_lines_of_the_osm_chips_are_dropped(realdata):
    total = 0
    for path in sorted((realdata / "vectors" / "osm").glob("*.geojson")):
        truth = realdata / "vectors" / "spacenet" / path.name
        result = evaluate_pair(Pair(path, truth, path.stem), EvalParams())
        assert set(result.dropped["pred"].by_value) <= {"stopline"}
        total += result.dropped["pred"].features
    assert total == 19
