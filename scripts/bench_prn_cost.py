"""Time one PatchRefineNet forward per 512² map against the base model, on CPU.

    python scripts/bench_prn_cost.py --threads 2 --repeats 3

Prints parameters and seconds per map (minimum and median of the repeats; the minimum is the
steadier figure on a shared machine) for the paper and fast variants, and the PRN/base ratio
against D-LinkNet34 (LinkNet with a ResNet34 encoder), the paper's base model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from roadprn.prn.network import PatchRefineNet, count_parameters


def time_forward(model: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    model.eval()
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: allocator and oneDNN primitive caches
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def base_model_builder() -> Callable[[], nn.Module] | None:
    try:
        from roadprn.models.dlinknet import dlinknet34
    except ImportError:
        return None
    return lambda: dlinknet34(in_channels=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--grid", type=int, default=8, help="8 = P64, 2 = P4, 0 = P0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true", help="the paper variant is slow")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    builder = base_model_builder()
    base_time = None
    if builder is not None:
        base = builder()
        best, median = time_forward(base, torch.rand(1, 3, args.size, args.size), args.repeats)
        base_time = best
        rows.append(("base D-LinkNet34", count_parameters(base), best, median))
    prob = torch.rand(1, 1, args.size, args.size)
    variants = ["fast"] if args.skip_paper else ["paper", "fast"]
    for variant in variants:
        model = PatchRefineNet(variant, grid=args.grid, map_size=args.size)
        best, median = time_forward(model, prob, args.repeats)
        a = model.arch
        label = f"PRN {a.name} {variant} (w={a.width:g}, ds={a.downsample}, head={a.head})"
        rows.append((label, count_parameters(model), best, median))

    print(f"{args.size}x{args.size}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'model':48s} {'params':>10s} {'min s':>8s} {'median s':>9s} {'ratio':>6s}")
    for label, params, best, median in rows:
        ratio = f"{best / base_time:6.2f}" if base_time else "   n/a"
        print(f"{label:48s} {params:10,d} {best:8.3f} {median:9.3f} {ratio}")
    if base_time is None:
        print("note: roadprn.models.dlinknet not available, no base-model reference")


if __name__ == "__main__":
    main()
