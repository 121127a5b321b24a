#!/usr/bin/env python
"""End-to-end ``roadprn extract`` throughput in km² per hour at 0.5 m on this machine's CPU.

Runs the whole default pipeline (base model, PRN refinement, vectorisation, COGs with
overviews) on a realistic-style synthetic RGB scene at 0.5 m and reports km²/h overall and per
stage, together with the bare forward time of the base model per 512² tile (one thread), which
is what the model's cost target in docs/model-card.md is about.

    python scripts/bench_throughput.py                       # 4096² px = 4.2 km², shipped models
    python scripts/bench_throughput.py --size 8192 --model default-v1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from roadprn.config import load_config
from roadprn.extract import run_extract
from roadprn.infer.predictor import Predictor
from roadprn.models.loading import load_segmentation_model
from roadprn.synth import generate_scene


def forward_seconds_per_tile(spec: str, repeats: int = 5, tile: int = 512) -> float:
    """Minimum over repeats of one 512² forward on one thread (as extract runs it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_segmentation_model(spec)
        predictor = Predictor(model.module, torch.device("cpu"),
                              outputs_logits=model.outputs_logits)
        x = np.random.default_rng(0).random((1, model.in_channels, tile, tile), np.float32)
        predictor(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            predictor(x)
            times.append(time.perf_counter() - t0)
        return min(times)
    finally:
        torch.set_num_threads(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="scene side in pixels at 0.5 m")
    parser.add_argument("--model", default="default")
    parser.add_argument("--compare", default="default-v1",
                        help="second model for the forward-cost ratio ('' to skip)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    report: dict = {"cpu_count": os.cpu_count(), "size_px": args.size, "model": args.model}
    report["forward_s_per_512_tile"] = forward_seconds_per_tile(args.model)
    if args.compare:
        report["compare"] = args.compare
        report["compare_forward_s_per_512_tile"] = forward_seconds_per_tile(args.compare)
        report["forward_ratio"] = (report["forward_s_per_512_tile"]
                                   / report["compare_forward_s_per_512_tile"])
    with tempfile.TemporaryDirectory() as tmp:
        scene = generate_scene(Path(tmp) / "scene.tif", width=args.size, seed=4242,
                               resolution_m=0.5, style="realistic").image_path
        config = load_config(None, {"model": args.model, "output.overwrite": True})
        t0 = time.perf_counter()
        run = run_extract(scene, config, Path(tmp) / "out")
        seconds = time.perf_counter() - t0
    area_km2 = (args.size * 0.5) ** 2 / 1e6
    report.update(area_km2=area_km2, seconds=seconds, km2_per_hour=area_km2 / seconds * 3600,
                  stage_seconds=run.stage_seconds, roads=run.roads,
                  km2_per_hour_by_stage={k: area_km2 / v * 3600
                                         for k, v in run.stage_seconds.items() if v > 0})
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
