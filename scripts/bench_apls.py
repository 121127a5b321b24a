"""Benchmark: APLS and length metrics on a synthetic road network of >= 200 km.

Truth: a jittered street grid. Prediction: the same grid shifted by 1.5 m, with 5 % of the
blocks missing, gaps cut at 3 % of the junctions and spurious spurs added, so every APLS code
path (snapping, missing counterparts, disconnected routes) runs at scale.

    python scripts/bench_apls.py [--blocks 26] [--block-m 200] [--seed 0]
                                 [--junctions crossings|vertices]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from shapely.geometry import LineString

from roadprn.evaluate.apls import APLSParams, apls_graphs
from roadprn.evaluate.graph import JUNCTION_RULES, lines_to_graph
from roadprn.evaluate.length import length_metrics


def grid_network(blocks: int, block_m: float, rng: np.random.Generator) -> list[LineString]:
    """One LineString per block side, with a jittered intermediate vertex (curvy streets)."""
    lines = []
    for i in range(blocks + 1):
        for j in range(blocks):
            for horizontal in (True, False):
                a = np.array([j * block_m, i * block_m])
                b = a + np.array([block_m, 0.0])
                if not horizontal:
                    a, b = a[::-1], b[::-1]
                mid = (a + b) / 2 + rng.normal(0, 3, 2)
                lines.append(LineString([a, mid, b]))
    return lines


def perturb(lines: list[LineString], rng: np.random.Generator) -> list[LineString]:
    out = []
    for line in lines:
        u = rng.random()
        if u < 0.05:
            continue  # missing block
        coords = np.asarray(line.coords) + 1.5
        if u < 0.08:
            coords[0] = coords[0] + (coords[1] - coords[0]) * 0.1  # gap at a junction
        out.append(LineString(coords))
        if rng.random() < 0.05:  # spurious spur
            start = coords[1]
            out.append(LineString([start, start + rng.normal(0, 40, 2)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=26)
    ap.add_argument("--block-m", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--junctions", choices=JUNCTION_RULES, default="crossings")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    truth = grid_network(args.blocks, args.block_m, rng)
    pred = perturb(truth, rng)

    t0 = time.perf_counter()
    g_truth = lines_to_graph(truth, args.junctions)
    g_pred = lines_to_graph(pred, args.junctions)
    t1 = time.perf_counter()
    result = apls_graphs(g_truth, g_pred, APLSParams(junctions=args.junctions))
    t2 = time.perf_counter()
    lengths, _ = length_metrics(truth, pred, tolerance_m=3.0)
    t3 = time.perf_counter()
    print(json.dumps({
        "junctions": args.junctions, "truth_km": round(g_truth.total_length / 1000, 1),
        "pred_km": round(g_pred.total_length / 1000, 1),
        "truth_nodes": g_truth.n_nodes, "truth_edges": int(g_truth.u.size),
        "control_points_truth": result.n_control_truth,
        "control_points_pred": result.n_control_pred,
        "paths_scored": result.n_paths_truth_to_pred + result.n_paths_pred_to_truth,
        "apls": round(result.apls, 4), "apls_truth_to_pred": round(result.truth_to_pred, 4),
        "apls_pred_to_truth": round(result.pred_to_truth, 4),
        **{k: round(v, 4) for k, v in lengths.items()},
        "seconds_graphs": round(t1 - t0, 2), "seconds_apls": round(t2 - t1, 2),
        "seconds_length_metrics": round(t3 - t2, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
