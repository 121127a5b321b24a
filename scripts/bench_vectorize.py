"""Benchmark: tiled vectoriser (Dask, N worker threads) vs a whole-array baseline.

The baseline is what one would write without tiling: read the whole mask, skimage
``skeletonize`` + ``skan.Skeleton`` on the full array. Each variant runs in its own child process;
peak memory is the sampled sum over the child and any worker processes (RSS and PSS; PSS counts
pages shared between forked workers once; ``--scheduler processes`` compares process workers).
Optionally the same pipeline as one whole tile (``--whole``) checks that tiling does not change
the result (total length, junction count).
Two more children only load each variant's libraries (the baseline's includes skan's numba JIT,
~0.3 GB; the tiled vectoriser builds skeleton paths with numpy + scipy and loads ~0.19 GB), so the
memory that grows with the scene can be compared on its own.

    python scripts/bench_vectorize.py --size 16384 --workers 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

RES = 0.5
X0, Y0 = 500000.0, 4000000.0


def synthetic_roads(size_px: int, seed: int = 0) -> list[tuple[shapely.Geometry, float]]:
    """A town-like network: jittered grid, diagonals and arcs, half widths 2-6 m."""
    rng = np.random.default_rng(seed)
    extent = size_px * RES
    roads = []
    for axis in (0, 1):
        pos = rng.uniform(40, 120)
        while pos < extent - 20:
            a, b = (X0 + pos, Y0 + 5), (X0 + pos + rng.uniform(-30, 30), Y0 - extent - 5)
            if axis:
                a, b = (X0 - 5, Y0 - pos), (X0 + extent + 5, Y0 - pos + rng.uniform(-30, 30))
            roads.append((shapely.LineString([a, b]), rng.uniform(2, 6)))
            pos += rng.uniform(120, 400)
    for _ in range(max(2, size_px // 2048)):
        x, y = rng.uniform(0, extent, 2)
        roads.append((shapely.LineString([(X0 + x, Y0 - y), (X0 + extent - y, Y0 - x)]), 3.0))
        t = np.linspace(0, rng.uniform(1, 3), 80)
        r = rng.uniform(100, 600)
        cx, cy = rng.uniform(0, extent, 2)
        roads.append((shapely.LineString(np.c_[X0 + cx + r * np.cos(t), Y0 - cy - r * np.sin(t)]),
                      2.5))
    return roads


def write_mask(path: Path, size_px: int, block: int = 2048) -> float:
    """Rasterise block by block (never the whole mask in memory); returns the road fraction."""
    transform = from_origin(X0, Y0, RES, RES)
    shapes = [(geom.buffer(half), 1) for geom, half in synthetic_roads(size_px)]
    profile = dict(driver="GTiff", height=size_px, width=size_px, count=1, dtype="uint8",
                   crs="EPSG:32611", transform=transform, tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", nodata=None)
    road = 0
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size_px, block):
            for c in range(0, size_px, block):
                win = Window(c, r, min(block, size_px - c), min(block, size_px - r))
                data = rasterize(shapes, out_shape=(win.height, win.width),
                                 transform=window_transform(win, transform), dtype="uint8")
                road += int(data.sum())
                dst.write(data, 1, window=win)
    return road / size_px**2


def run_baseline(path: str) -> dict:
    import skan
    from skimage.morphology import skeletonize

    with rasterio.open(path) as src:
        mask = src.read(1) > 0
    skel = skeletonize(mask)
    del mask
    graph = skan.Skeleton(skel)
    return {"paths": int(graph.n_paths), "skeleton_length_m": float(graph.path_lengths().sum())
            * RES}


def run_tiled(path: str, workers: int, tile: int, whole: bool, scheduler: str) -> dict:
    from roadprn.vectorize import VectorizeParams, network_frames, open_source
    from roadprn.vectorize.tiled import vectorize_source, vectorize_whole

    source = open_source(path, 0.5)
    params = VectorizeParams(tile_size_px=tile)
    net = (vectorize_whole(source, params) if whole
           else vectorize_source(source, params, workers=workers, scheduler=scheduler))
    roads, junctions = network_frames(net, source.transform, source.crs, source.name)
    return {"roads": len(roads), "length_m": float(roads.length_m.sum()),
            "junctions_deg3": int((junctions.degree >= 3).sum())}


def run_libraries(kind: str) -> dict:
    """What a variant pays before any pixel: its libraries (and, for skan, its numba JIT)."""
    cross = np.zeros((32, 32), bool)
    cross[16, 4:28] = cross[4:28, 16] = True
    if kind == "baseline_libraries":
        import skan
        from skimage.morphology import skeletonize

        skan.Skeleton(skeletonize(cross)).path_lengths()
    else:
        import roadprn.vectorize.attributes  # noqa: F401  (geopandas, for the output frames)
        from roadprn.vectorize.skeleton_paths import skeleton_paths

        skeleton_paths(cross)
    return {}


def _child(queue: mp.Queue, kind: str, path: str, workers: int, tile: int,
           scheduler: str) -> None:
    if kind.endswith("_libraries"):
        out = run_libraries(kind)
    elif kind == "baseline":
        out = run_baseline(path)
    else:
        out = run_tiled(path, workers, tile, whole=kind == "whole", scheduler=scheduler)
    queue.put(out)


def measure(kind: str, path: Path, workers: int, tile: int, scheduler: str = "threads") -> dict:
    """Wall time and peak summed RSS/PSS of a child process tree."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    start = time.perf_counter()
    proc = ctx.Process(target=_child, args=(queue, kind, str(path), workers, tile, scheduler))
    proc.start()
    root = psutil.Process(proc.pid)
    peak_rss = peak_pss = 0
    tick = 0
    while proc.is_alive():
        rss = pss = 0
        full = tick % 10 == 0  # PSS reads /proc/*/smaps: costly, so only every 0.5 s
        tick += 1
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    if full:
                        info = p.memory_full_info()
                        rss, pss = rss + info.rss, pss + info.pss
                    else:
                        rss += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except psutil.NoSuchProcess:
            break
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        if not queue.empty():
            break
        time.sleep(0.05)
    result = queue.get()
    wall = time.perf_counter() - start
    proc.join()
    return {"kind": kind, "wall_s": round(wall, 2), "peak_rss_mb": round(peak_rss / 2**20),
            "peak_pss_mb": round(peak_pss / 2**20), **result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tile", type=int, default=None,
                    help="core tile size (default: the product default)")
    ap.add_argument("--scheduler", choices=["threads", "processes"], default="threads")
    ap.add_argument("--whole", action="store_true",
                    help="also run the pipeline as one whole tile (slow, memory hungry)")
    ap.add_argument("--json", type=Path, help="write results here")
    args = ap.parse_args()
    if args.tile is None:
        from roadprn.vectorize import VectorizeParams

        args.tile = VectorizeParams().tile_size_px
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"synthetic_{args.size}.tif"
        t = time.perf_counter()
        fraction = write_mask(path, args.size)
        print(f"mask {args.size}² written in {time.perf_counter() - t:.1f} s, "
              f"{100 * fraction:.1f} % road", flush=True)
        results = [measure("tiled", path, args.workers, args.tile, args.scheduler)]
        print(json.dumps(results[-1]), flush=True)
        results.append(measure("baseline", path, args.workers, args.tile))
        print(json.dumps(results[-1]), flush=True)
        for libs in ("tiled_libraries", "baseline_libraries"):
            results.append(measure(libs, path, args.workers, args.tile))
            print(json.dumps(results[-1]), flush=True)
        if args.whole:
            results.append(measure("whole", path, args.workers, args.tile))
            print(json.dumps(results[-1]), flush=True)
    tiled, base, tiled_libs, base_libs = results[:4]
    summary = {"size": args.size, "workers": args.workers, "tile": args.tile,
               "scheduler": args.scheduler,
               "time_ratio": round(tiled["wall_s"] / base["wall_s"], 3),
               "rss_ratio": round(tiled["peak_rss_mb"] / base["peak_rss_mb"], 3),
               "pss_ratio": round(tiled["peak_pss_mb"] / base["peak_pss_mb"], 3),
               # memory each variant needs beyond its own libraries (+ JIT): what scales
               "rss_above_libraries_ratio": round(
                   (tiled["peak_rss_mb"] - tiled_libs["peak_rss_mb"])
                   / max(1, base["peak_rss_mb"] - base_libs["peak_rss_mb"]), 3)}
    if args.whole:
        whole = results[4]
        summary["length_rel_diff"] = round(abs(tiled["length_m"] / whole["length_m"] - 1), 5)
        summary["same_junctions"] = tiled["junctions_deg3"] == whole["junctions_deg3"]
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
