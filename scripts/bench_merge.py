"""Benchmark of ``roadprn merge``: time and peak memory for archives of N synthetic scenes.

    python scripts/bench_merge.py [--size 2048] [--scenes 16,64] [--workers 2] [--work DIR]

One synthetic scene is made (``roadprn synth``) and its truth mask vectorised; the archive is a
grid of sqrt(N) x sqrt(N) copies of that scene's network, overlapping by 128 px (each with its
own all-valid mask for the footprint and a run manifest), so the merge sees N scenes of real
road density without running the model N times. Each merge runs in a fresh process; its peak
resident memory (its own ``ru_maxrss``) and wall time are printed, and the memory ratio of the
largest to the smallest archive (the issue's target: 64 vs 16 scenes <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OVERLAP_PX = 128
RES_M = 0.5
ORIGIN = (700000.0, 5000000.0)


def base_network(work: Path, size: int) -> Path:
    """The synthetic scene's truth network, vectorised from its mask like a scene's output."""
    roads = work / "base" / "base_mask_roads.gpkg"
    if roads.exists():
        return roads
    (work / "base").mkdir(parents=True, exist_ok=True)
    run = [sys.executable, "-m", "roadprn", "-q"]
    subprocess.run([*run, "synth", str(work / "base" / "base.tif"), "--size", str(size),
                    "--origin", f"{ORIGIN[0]},{ORIGIN[1]}", "--no-overviews"], check=True)
    subprocess.run([*run, "vectorize", str(work / "base" / "base_mask.tif"), "-o",
                    str(work / "base")], check=True)
    return roads


def make_archive(work: Path, roads_path: Path, scenes: int, size: int) -> Path:
    """A run folder of ``scenes`` shifted copies of the base network, manifest included."""
    import geopandas as gpd
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    side = math.isqrt(scenes)
    if side * side != scenes:
        raise SystemExit(f"--scenes takes squares (16, 64, ...), not {scenes}")
    run_dir = work / f"run{scenes}"
    if (run_dir / "roadprn_manifest.jsonl").exists():
        return run_dir
    run_dir.mkdir(parents=True)
    base = gpd.read_file(roads_path, layer="roads")
    step = (size - OVERLAP_PX) * RES_M
    zeros = np.zeros((size, size), dtype=np.uint8)
    records = []
    for i in range(side):
        for j in range(side):
            name = f"s{i:02d}{j:02d}"
            folder = run_dir / name
            folder.mkdir()
            dx, dy = j * step, -i * step
            shifted = base.copy()
            shifted["geometry"] = base.geometry.translate(dx, dy)
            shifted["scene"] = name
            shifted.to_file(folder / f"{name}_roads.gpkg", layer="roads", driver="GPKG")
            profile = {"driver": "GTiff", "width": size, "height": size, "count": 1,
                       "dtype": "uint8", "crs": "EPSG:32631", "nodata": 255,
                       "transform": from_origin(ORIGIN[0] + dx, ORIGIN[1] + dy, RES_M, RES_M),
                       "compress": "deflate", "tiled": True}
            with rasterio.open(folder / f"{name}_mask.tif", "w", **profile) as dst:
                dst.write(zeros, 1)
            records.append({"type": "scene", "status": "done", "name": name, "scene": name,
                            "files": {"roads": {"path": f"{name}/{name}_roads.gpkg",
                                                "sha256": "0", "bytes": 0},
                                      "mask": {"path": f"{name}/{name}_mask.tif",
                                               "sha256": "0", "bytes": 0}}})
    (run_dir / "roadprn_manifest.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def merge_once(run_dir: Path, workers: int) -> dict[str, float]:
    """One merge in a fresh process: wall seconds and that process's peak RSS (MiB)."""
    code = ("import sys, json, resource; from roadprn.batch.merge import merge_run; "
            "s = merge_run(sys.argv[1], workers=int(sys.argv[2])); "
            "print(json.dumps({**s.as_dict(), "
            "'peak_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(run_dir), str(workers)], check=True,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(summary["peak_kib"] / 1024, 1),
            "roads": summary["roads"], "km": round(summary["road_length_m"] / 1000, 1),
            "cells": summary["cells"], "merge_seconds": summary["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="scene side in pixels")
    parser.add_argument("--scenes", default="4,16", help="archive sizes, squares, ascending")
    parser.add_argument("--workers", type=int, default=2, help="merge threads")
    parser.add_argument("--work", type=Path, help="working folder (kept; default: temporary)")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.scenes.split(","))
    with tempfile.TemporaryDirectory(prefix="roadprn-bench-merge-") as tmp:
        work = args.work or Path(tmp)
        roads = base_network(work, args.size)
        results = {}
        for n in sizes:
            run_dir = make_archive(work, roads, n, args.size)
            results[n] = merge_once(run_dir, args.workers)
            print(f"{n:4d} scenes of {args.size}²: {json.dumps(results[n])}", flush=True)
        if len(sizes) > 1:
            ratio = results[sizes[-1]]["peak_rss_mib"] / results[sizes[0]]["peak_rss_mib"]
            print(f"peak memory {sizes[-1]} vs {sizes[0]} scenes: ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
