"""Time roadprn's compiled pseudo-labels against a plain per-patch Python loop.

    python scripts/bench_pseudolabels.py --maps 100 --size 512 --patch 64

Both produce the same labels (checked here on every map); the loop mirrors the reference
implementation's per-patch, per-threshold search. The first call in a process compiles the
numba kernels (or loads them from numba's cache), so it is timed apart as a warm-up; the
kernels are single-threaded, the fast time is the median of --repeat runs, the loop runs once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from roadprn.prn import pseudolabels
from roadprn.prn.pseudolabels import pseudo_labels


def loop_pseudo_labels(prob: np.ndarray, truth: np.ndarray, patch: int) -> np.ndarray:
    labels = np.zeros(prob.shape, dtype=bool)
    for r in range(0, prob.shape[0], patch):
        for c in range(0, prob.shape[1], patch):
            p = prob[r : r + patch, c : c + patch].astype(np.float64)
            g = truth[r : r + patch, c : c + patch] != 0
            best_score, best_tau = -1.0, 1.0
            for k in range(1, 21):
                tau = k / 20.0
                b = p > tau
                score = (np.sum(b & g) + 1.0) / (np.sum(b | g) + 1.0)
                if score > best_score:
                    best_score, best_tau = score, tau
            labels[r : r + patch, c : c + patch] = p > best_tau
    return labels


def synthetic_maps(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blurry road-like truth plus a probability map with a smooth spatial bias."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    prob = np.empty((n, size, size), dtype=np.float32)
    truth = np.empty((n, size, size), dtype=bool)
    for i in range(n):
        fx, fy, ph = rng.uniform(2, 6), rng.uniform(2, 6), rng.uniform(0, 6.3)
        road = (np.abs(np.sin(fx * np.pi * xx + ph)) < 0.04) | (
            np.abs(np.sin(fy * np.pi * yy)) < 0.04
        )
        bias = 0.3 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)))
        p = 0.15 + 0.6 * road + bias + 0.15 * rng.standard_normal((size, size))
        prob[i] = np.clip(p, 0, 1)
        truth[i] = road
    return prob, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the fast path")
    args = parser.parse_args()

    prob, truth = synthetic_maps(args.maps, args.size, args.seed)
    t0 = time.perf_counter()
    pseudo_labels(prob[:1], truth[:1], args.patch)  # warm-up: JIT compile or cache load
    t_first = time.perf_counter() - t0
    hits = sum(pseudolabels._search_kernel.stats.cache_hits.values())
    first = "loaded from numba's cache" if hits else "JIT compile"

    fast_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        fast = pseudo_labels(prob, truth, args.patch)
        fast_times.append(time.perf_counter() - t0)
    t_fast = statistics.median(fast_times)

    t0 = time.perf_counter()
    slow = np.stack(
        [loop_pseudo_labels(p, g, args.patch) for p, g in zip(prob, truth, strict=True)]
    )
    t_loop = time.perf_counter() - t0

    differ = [i for i in range(args.maps) if not np.array_equal(fast[i], slow[i])]
    if differ:
        raise SystemExit(f"compiled and loop pseudo-labels differ on maps {differ[:10]}")
    ms = 1e3 / args.maps
    speedup = t_loop / t_fast
    print(
        f"{args.maps} maps {args.size}x{args.size}, patch {args.patch}; labels identical on "
        f"every map\n"
        f"  first call    {t_first:.2f} s ({first}, not counted below)\n"
        f"  compiled      {t_fast * ms:.3f} ms/map ({t_fast:.3f} s, median of {args.repeat}, "
        f"1 thread)\n"
        f"  python loop   {t_loop * ms:.2f} ms/map ({t_loop:.2f} s)\n"
        f"  speed-up      {speedup:.0f}x (target >= 50x): "
        f"{'met' if speedup >= 50 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
