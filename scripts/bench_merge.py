"""Benchmark of ``roadprn merge``: time and peak memory for archives of N synthetic scenes.

    python scripts/bench_merge.py [--size 2048] [--scenes 16,64] [--workers 2] [--work DIR]
                                  [--profile]

One synthetic truth mask big enough for the largest archive is made (``roadprn synth``, written
window by window: a k x k grid of scenes of ``--size`` px overlapping by 128 px, k = sqrt of the
largest N) and cut into k x k overlapping scenes; each scene's network is vectorised from its
own cut of the mask (``roadprn.vectorize.run.vectorize_file``, as ``roadprn vectorize`` does),
so every scene holds distinct roads and every overlap really holds two copies of the same roads,
vectorised separately. The archive of N scenes is the top-left sqrt(N) x sqrt(N) block of that
grid (a run folder with its manifest pointing at the shared scene folders). Each merge runs in
a fresh process; its wall time, time per scene, peak resident memory (its own ``ru_maxrss``)
are printed, and the memory ratio of the largest to the smallest archive (the issue's target:
64 vs 16 scenes <= 1.2). ``--profile`` also runs the largest merge under cProfile (in one
thread) and prints the top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

OVERLAP_PX = 128
RES_M = 0.5
ORIGIN = (700000.0, 5000000.0)
CRS = "EPSG:32631"


def truth_mask(work: Path, side_px: int) -> Path:
    """The big synthetic scene's truth mask (panchromatic image, no overviews)."""
    mask = work / "big" / "big_mask.tif"
    if mask.exists():
        return mask
    (work / "big").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "roadprn", "-q", "synth", str(work / "big" / "big.tif"),
                    "--size", str(side_px), "--origin", f"{ORIGIN[0]},{ORIGIN[1]}",
                    "--crs", CRS, "--resolution", str(RES_M), "--bands", "1",
                    "--no-overviews"], check=True)
    (work / "big" / "big.tif").unlink()  # only the mask is needed
    return mask


def cut_scene(args: tuple[str, str, int, int, int]) -> dict[str, object]:
    """Scene ``name``: its window of the truth mask written, then vectorised from that cut."""
    import rasterio
    from rasterio.windows import Window

    from roadprn.vectorize.params import VectorizeParams
    from roadprn.vectorize.run import vectorize_file

    mask_path, folder, row, col, size = args
    out = Path(folder)
    name = out.name
    scene_mask = out / f"{name}_mask.tif"
    roads = out / f"{name}_mask_roads.gpkg"
    if not roads.exists():
        out.mkdir(parents=True, exist_ok=True)
        with rasterio.open(mask_path) as src:
            win = Window(col, row, size, size)
            profile = {"driver": "GTiff", "width": size, "height": size, "count": 1,
                       "dtype": "uint8", "crs": src.crs, "nodata": 255,
                       "transform": src.window_transform(win), "compress": "deflate",
                       "tiled": True, "blockxsize": 256, "blockysize": 256}
            with rasterio.open(scene_mask, "w", **profile) as dst:
                dst.write(src.read(1, window=win), 1)
        vectorize_file(scene_mask, out, VectorizeParams(), workers=1, overwrite=True)
    return {"type": "scene", "status": "done", "name": name, "scene": str(scene_mask),
            "files": {"roads": {"path": f"../scenes/{name}/{roads.name}", "sha256": "0",
                                "bytes": 0},
                      "mask": {"path": f"../scenes/{name}/{scene_mask.name}", "sha256": "0",
                               "bytes": 0}}}


def make_scenes(work: Path, side: int, size: int, jobs: int) -> dict[tuple[int, int], dict]:
    """The side x side scenes cut from one truth mask, each vectorised (kept between runs)."""
    step = size - OVERLAP_PX
    mask = truth_mask(work, side * step + OVERLAP_PX)
    cells = [(i, j) for i in range(side) for j in range(side)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        records = list(pool.map(cut_scene, [
            (str(mask), str(work / "scenes" / f"s{i:02d}{j:02d}"), i * step, j * step, size)
            for i, j in cells]))
    print(f"{len(cells)} scenes cut and vectorised in {time.perf_counter() - started:.0f} s",
          flush=True)
    return dict(zip(cells, records, strict=True))


def make_archive(work: Path, scenes: dict[tuple[int, int], dict], n: int) -> Path:
    """A run folder whose manifest lists the top-left sqrt(n) x sqrt(n) scenes."""
    side = math.isqrt(n)
    run_dir = work / f"run{n}"
    run_dir.mkdir(exist_ok=True)
    records = [scenes[(i, j)] for i in range(side) for j in range(side)]
    (run_dir / "roadprn_manifest.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "roadprn_network.gpkg").unlink(missing_ok=True)
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
    return {"seconds": round(seconds, 2), "merge_seconds": summary["seconds"],
            "s_per_scene": round(summary["seconds"] / summary["scenes"], 2),
            "peak_rss_mib": round(summary["peak_kib"] / 1024, 1),
            "roads": summary["roads"], "km": round(summary["road_length_m"] / 1000, 1),
            "cells": summary["cells"], "cells_redone": summary["cells_redone"]}


def profile_once(run_dir: Path, top: int = 25) -> None:
    """The merge under cProfile with every cell run in this thread (cProfile sees one thread),
    and one line per cell task: halo, scenes, roads kept, seconds."""
    import cProfile
    import pstats
    from concurrent.futures import Future

    from roadprn.batch import merge

    cells: list[tuple[int, float, int, int, float]] = []

    class InThread:
        def __init__(self, client: object, threads: int) -> None:
            pass

        def __enter__(self):  # noqa: ANN204 - the executor's protocol
            def submit(task: merge.CellTask) -> Future:
                started = time.perf_counter()
                result = merge.merge_cell(task)
                cells.append((task.index, task.halo_m, len(task.scenes), len(result.roads),
                              time.perf_counter() - started))
                future: Future = Future()
                future.set_result(result)
                return future
            return submit

        def __exit__(self, *exc: object) -> None:
            pass

    merge._executor = InThread  # type: ignore[assignment,misc]
    profiler = cProfile.Profile()
    profiler.enable()
    merge.merge_run(run_dir, workers=1)
    profiler.disable()
    for index, halo, scenes, roads, seconds in cells:
        print(f"cell {index:3d} halo {halo:5.0f} m: {scenes:2d} scenes, {roads:4d} roads, "
              f"{seconds:6.2f} s")
    print(f"{len(cells)} cell tasks, {sum(c[4] for c in cells):.1f} s")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="scene side in pixels")
    parser.add_argument("--scenes", default="4,16", help="archive sizes, squares, ascending")
    parser.add_argument("--workers", type=int, default=2, help="merge threads")
    parser.add_argument("--jobs", type=int, default=2, help="processes vectorising the scenes")
    parser.add_argument("--work", type=Path, help="working folder (kept; default: temporary)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the largest merge (cProfile, one thread)")
    parser.add_argument("--profile-only", action="store_true",
                        help="only profile the largest archive (no timed merges)")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.scenes.split(","))
    for n in sizes:
        if math.isqrt(n) ** 2 != n:
            raise SystemExit(f"--scenes takes squares (16, 64, ...), not {n}")
    with tempfile.TemporaryDirectory(prefix="roadprn-bench-merge-") as tmp:
        work = args.work or Path(tmp)
        scenes = make_scenes(work, math.isqrt(sizes[-1]), args.size, args.jobs)
        results = {}
        for n in [] if args.profile_only else sizes:
            results[n] = merge_once(make_archive(work, scenes, n), args.workers)
            print(f"{n:4d} scenes of {args.size}²: {json.dumps(results[n])}", flush=True)
        if len(results) > 1:
            big, small = results[sizes[-1]], results[sizes[0]]
            print(f"{sizes[-1]} vs {sizes[0]} scenes: peak memory ratio "
                  f"{big['peak_rss_mib'] / small['peak_rss_mib']:.2f}, time ratio "
                  f"{big['merge_seconds'] / small['merge_seconds']:.2f} "
                  f"(scenes {sizes[-1] / sizes[0]:.0f}x)")
        if args.profile or args.profile_only:
            profile_once(make_archive(work, scenes, sizes[-1]))


if __name__ == "__main__":
    main()
