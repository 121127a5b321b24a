"""Time base-model forwards per 512² tile on the CPU: the shipped models vs other architectures.

    python scripts/bench_base_forward.py --threads 1 --repeats 5
    python scripts/bench_base_forward.py --arch effnet_lite0_linknet:decoder_width=24 --batch 1

Runs the models the way ``roadprn extract`` does (``inference.Predictor``: eval, channels-last,
inference mode, sigmoid) on random tiles. Models are timed in turns, repeat by repeat, so a
neighbour's load on a shared machine hits all of them alike; the minimum over repeats is the
steadier figure and the ratio to the default is what the issue's cost target (≤ 4×) is about.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from roadprn.infer.predictor import Predictor
from roadprn.models.base import build_model
from roadprn.models.loading import load_segmentation_model

DEFAULT_ARCHS = ("effnet_lite0_linknet", "effnet_lite1_linknet", "effnet_lite2_linknet")


def parse_arch(text: str) -> tuple[str, dict[str, int]]:
    """``name[:key=int,key=int]``."""
    name, _, rest = text.partition(":")
    kwargs = {k: int(v) for k, v in (item.split("=") for item in rest.split(",") if item)}
    return name, kwargs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", default=None,
                        help="name[:key=value,...]; repeatable (default: "
                             f"{', '.join(DEFAULT_ARCHS)})")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, action="append", default=None,
                        help="batch sizes (default: 1 and 4)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")

    models: dict[str, nn.Module] = {"default": load_segmentation_model("default").module,
                                    "default-v1": load_segmentation_model("default-v1").module}
    for text in args.arch or DEFAULT_ARCHS:
        name, kwargs = parse_arch(text)
        models[text] = build_model(name, **kwargs)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    predictors = {k: Predictor(m, device) for k, m in models.items()}

    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.size}² tiles, "
          f"min / median of {args.repeats} repeats, seconds per tile")
    print("| model | parameters | batch | s/tile (min) | s/tile (median) | × default-v1 |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch in args.batch or [1, 4]:
        x = rng.random((batch, 3, args.size, args.size), dtype=np.float32)
        times: dict[str, list[float]] = {k: [] for k in predictors}
        for predictor in predictors.values():
            predictor(x)  # warm-up: allocator and oneDNN primitive caches
        for _ in range(args.repeats):
            for key, predictor in predictors.items():
                t0 = time.perf_counter()
                predictor(x)
                times[key].append((time.perf_counter() - t0) / batch)
        base = min(times["default-v1"])  # roadprn 0.1's default: the cost target's unit
        for key, values in times.items():
            print(f"| {key} | {params[key] / 1e6:.2f} M | {batch} | {min(values):.4f} | "
                  f"{float(np.median(values)):.4f} | {min(values) / base:.2f} |")


if __name__ == "__main__":
    main()
