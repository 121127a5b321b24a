"""Wiedemann completeness / correctness / quality, worked by hand."""

from __future__ import annotations

import pytest
from shapely.affinity import translate
from shapely.geometry import LineString, MultiLineString

from roadprn.evaluate.length import length_metrics


def test_identical_and_empty():
    roads = [LineString([(0, 0), (100, 0)]), LineString([(50, -50), (50, 50)])]
    same, counts = length_metrics(roads, roads, 3.0)
    assert same == {"completeness": 1.0, "correctness": 1.0, "quality": 1.0}
    assert counts.truth_length == pytest.approx(200)
    empty, _ = length_metrics(roads, [], 3.0)
    assert empty == {"completeness": 0.0, "correctness": 0.0, "quality": 0.0}
    nothing, _ = length_metrics([], [], 3.0)
    assert nothing == {"completeness": 1.0, "correctness": 1.0, "quality": 1.0}


def test_partial_match_worked_by_hand():
    truth = [LineString([(0, 0), (100, 0)])]
    # 60 m along the truth, 40 m far away (spurious)
    pred = [LineString([(0, 1), (60, 1)]), LineString([(0, 500), (40, 500)])]
    m, c = length_metrics(truth, pred, 3.0)
    # the buffer is round: truth within 3 m of the prediction ends at x = 60 + sqrt(9 - 1)
    matched_truth = 60 + (9 - 1) ** 0.5
    assert c.truth_matched == pytest.approx(matched_truth, rel=1e-3)
    assert m["completeness"] == pytest.approx(matched_truth / 100, rel=1e-3)
    assert m["correctness"] == pytest.approx(60 / 100)
    assert m["quality"] == pytest.approx(60 / (100 + (100 - matched_truth)), rel=1e-3)
    swapped, _ = length_metrics(pred, truth, 3.0)
    assert swapped["completeness"] == pytest.approx(m["correctness"])
    assert swapped["correctness"] == pytest.approx(m["completeness"])


def test_buffer_tolerance_and_multilines():
    truth = [MultiLineString([[(0, 0), (100, 0)], [(100, 0), (100, 80)]])]
    offset = [translate(LineString([(0, 0), (100, 0), (100, 80)]), 2.0, 2.0)]
    within, _ = length_metrics(truth, offset, 3.0)
    assert within["completeness"] > 0.97 and within["correctness"] > 0.97
    beyond, _ = length_metrics(truth, offset, 1.0)
    assert beyond["completeness"] < 0.05 and beyond["correctness"] < 0.05
