"""onnxruntime vs PyTorch on the CPU: seconds per 512² tile for the default model.

    python scripts/bench_onnx.py --threads 2 --repeats 5 --batch 1

Exports the model (``roadprn export --format onnx``) into a temporary folder, then runs both
the way ``roadprn extract`` does (``infer.predictor.Predictor``: PyTorch channels-last in
inference mode; onnxruntime's CPU provider with all graph optimisations) on the same random
tiles, in turns, repeat by repeat, so a neighbour's load on a shared machine hits both alike.
The minimum over repeats is the steadier figure; the ratio is onnxruntime's time / PyTorch's
(below 1: onnxruntime is faster). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from roadprn.infer.predictor import Predictor
from roadprn.models.export import export_model
from roadprn.models.loading import load_segmentation_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "model.onnx"
        export = export_model(args.model, "onnx", onnx_path)
        torch_model = load_segmentation_model(args.model)
        onnx_model = load_segmentation_model(str(onnx_path))
        cpu = torch.device("cpu")
        runners = {
            "torch": Predictor(torch_model.module, cpu, amp=False),
            "onnxruntime": Predictor(onnx_model.module, cpu, amp=False,
                                     outputs_logits=onnx_model.outputs_logits),
        }
        rng = np.random.default_rng(0)
        batch = rng.random((args.batch, torch_model.in_channels, args.tile, args.tile),
                           dtype=np.float32)
        outputs = {name: run(batch) for name, run in runners.items()}  # warm-up, and compare
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, run in runners.items():
                t0 = time.perf_counter()
                run(batch)
                times[name].append((time.perf_counter() - t0) / args.batch)
    best = {name: min(values) for name, values in times.items()}
    print(json.dumps({
        "model": args.model, "tile": args.tile, "batch": args.batch, "threads": args.threads,
        "repeats": args.repeats,
        "seconds_per_tile": {name: round(value, 4) for name, value in best.items()},
        "median_seconds_per_tile": {name: round(float(np.median(v)), 4)
                                    for name, v in times.items()},
        "ratio_onnxruntime_to_torch": round(best["onnxruntime"] / best["torch"], 3),
        "max_abs_prob_diff": float(np.abs(outputs["torch"] - outputs["onnxruntime"]).max()),
        "export_check_max_abs_diff": export.max_abs_diff,
    }))


if __name__ == "__main__":
    main()
