"""Evaluation: pixel metrics, APLS and length metrics, reports and plots (docs/metrics.md)."""

from roadprn.evaluate.apls import APLSParams, APLSResult, apls, apls_graphs
from roadprn.evaluate.compare import EvalParams, Pair, PairResult, evaluate_pair, summarize
from roadprn.evaluate.graph import MetricGraph, lines_to_graph
from roadprn.evaluate.length import length_metrics
from roadprn.evaluate.pixel import patch_iou_grid, pixel_metrics, threshold_sweep

__all__ = [
    "APLSParams", "APLSResult", "EvalParams", "Pair", "PairResult", "MetricGraph", "apls",
    "apls_graphs", "evaluate_pair", "length_metrics", "lines_to_graph", "patch_iou_grid",
    "pixel_metrics", "summarize", "threshold_sweep",
]
