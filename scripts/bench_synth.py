#!/usr/bin/env python
"""Time and peak memory of ``roadprn synth`` at several sizes, each in its own child process.

Memory must stay flat with scene size (windowed rendering): the script prints the ratio of the
largest to the smallest size's peak RSS and exits non-zero when it exceeds --max-ratio.

    python scripts/bench_synth.py                      # 4096² and 20000²
    python scripts/bench_synth.py --sizes 1024 4096 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(size: int, seed: int, bands: int, folder: Path) -> dict:
    out = folder / f"synth_{size}.tif"
    cmd = [sys.executable, "-m", "roadprn", "--quiet", "synth", str(out), "--size", str(size),
           "--seed", str(seed), "--bands", str(bands), "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"roadprn synth --size {size} failed ({proc.returncode}): {stderr}")
    sizes = {p.name: p.stat().st_size for p in folder.glob(f"synth_{size}*")}
    for p in folder.glob(f"synth_{size}*"):
        p.unlink()
    return {
        "size": size, "pixels": size * size, "bands": bands, "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "mpix_per_s": round(size * size / 1e6 / wall, 2),
        "output_mib": round(sum(sizes.values()) / 2**20, 1),
        "summary": stdout.strip().splitlines()[-1] if stdout.strip() else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 20000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--max-ratio", type=float, default=1.2)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the scenes are written (deleted after each run)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = []
        for size in args.sizes:
            print(f"running roadprn synth --size {size} ...", file=sys.stderr, flush=True)
            results.append(run_one(size, args.seed, args.bands, Path(tmp)))
    smallest, largest = results[0], results[-1]
    ratio = largest["peak_rss_mib"] / smallest["peak_rss_mib"]
    print("| size | bands | wall (s) | CPU (s) | Mpx/s | peak RSS (MiB) | outputs (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['size']}² | {r['bands']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['mpix_per_s']} | {r['peak_rss_mib']} | {r['output_mib']} |")
    print(f"\npeak RSS ratio {largest['size']}² / {smallest['size']}²: {ratio:.3f} "
          f"(limit {args.max_ratio})")
    report = {"results": results, "rss_ratio": round(ratio, 3), "max_ratio": args.max_ratio,
              "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
