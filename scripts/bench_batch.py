#!/usr/bin/env python
"""Benchmark of `roadprn batch` scheduling overhead (issue 9).

Wall time of one `roadprn batch` run (LocalCluster, W workers x T/W threads, cluster start
included) over N synthetic scenes, divided by the sum of the wall times of `roadprn extract` run
once per scene with T torch threads, each in its own process (as a user would run them).
Target <= 1.05. Both sides run the same model, config and scenes.

With --split: one large scene, split across the batch workers in bands of tile rows
(`batch.split_tiles`), against the same scene in one `roadprn extract` with the same total
threads, and against `roadprn batch` with splitting off (the scene as one task on one worker).

    python scripts/bench_batch.py                               # 8 scenes of 4096², 2 threads
    python scripts/bench_batch.py --size 1024 --scenes 8 --workers 2 --threads 2 --json out.json
    python scripts/bench_batch.py --split --size 8192 --workers 2 --threads 2

The model is the shipped default when installed, else a tiny_unet checkpoint made on the fly
(random weights: speed does not depend on them; --arch dlinknet18 for a realistic model).
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

# `roadprn batch` through the library CLI, whether or not the command is registered yet
CLI = ("import sys; from roadprn.cli import main\n"
       "if 'batch' not in main.commands:\n"
       "    from roadprn.cli.batch import batch; main.add_command(batch)\n"
       "sys.exit(main())")


def make_model(folder: Path, arch: str) -> str:
    import torch

    from roadprn.models.base import build_model
    from roadprn.models.checkpoint import save_checkpoint
    from roadprn.models.loading import default_model_path

    if arch == "default" and default_model_path().is_file():
        return "default"
    arch = "tiny_unet" if arch == "default" else arch
    path = folder / f"{arch}.pt"
    if not path.exists():
        torch.manual_seed(0)
        meta = {"kind": "base", "arch": arch, "arch_kwargs": {"in_channels": 3},
                "input": {"bands": [1, 2, 3], "normalization": {"mode": "dtype"}, "gsd_m": 0.5,
                          "tile_size": 512, "halo": 32}}
        save_checkpoint(path, build_model(arch, in_channels=3), meta)
    return str(path)


def make_scenes(folder: Path, size: int, count: int) -> list[Path]:
    from roadprn.synth import generate_scene

    scenes = []
    for i in range(count):
        path = folder / "scenes" / f"scene{i}_{size}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            generate_scene(path, width=size, seed=100 + i)
        scenes.append(path)
    return scenes


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="total CPU threads of each side")
    parser.add_argument("--workers", type=int, default=2, help="batch worker processes")
    parser.add_argument("--arch", default="default")
    parser.add_argument("--folder", type=Path, help="keep scenes here (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--split", action="store_true",
                        help="one large scene split across workers vs the same scene in extract")
    parser.add_argument("--split-tiles", type=int, default=16,
                        help="batch.split_tiles of the --split run (scenes above it split)")
    args = parser.parse_args()
    if args.threads % args.workers:
        sys.exit("--threads must be a multiple of --workers")
    if args.split:
        return split_benchmark(args)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = make_model(folder, args.arch)
        scenes = make_scenes(folder, args.size, args.scenes)
        common = ["--model", model, "--set", "inference.device=cpu"]

        single = []
        for i, scene in enumerate(scenes):
            single.append(timed([sys.executable, "-m", "roadprn", "-q", "extract", str(scene),
                                 "--out", str(folder / "single" / str(i)), "--overwrite", *common,
                                 "--set", f"inference.torch_threads={args.threads}"]))
            print(f"extract {scene.name}: {single[-1]:.1f} s", flush=True)
        out = folder / "batch"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        batch = timed([sys.executable, "-c", CLI, "-q", "batch", *map(str, scenes), "--out",
                       str(out), *common, "--workers", str(args.workers),
                       "--threads-per-worker", str(args.threads // args.workers)])
        print(f"batch: {batch:.1f} s", flush=True)

    result = {
        "scenes": args.scenes, "size": args.size, "threads": args.threads,
        "workers": args.workers, "model": Path(model).name,
        "extract_seconds": [round(s, 2) for s in single],
        "extract_total_seconds": round(sum(single), 2),
        "batch_seconds": round(batch, 2),
        "ratio": round(batch / sum(single), 3),
        "target": 1.05,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def split_benchmark(args: argparse.Namespace) -> None:
    """One scene: `extract` with T threads vs `batch` split over W workers, and batch unsplit."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = make_model(folder, args.arch)
        scene = make_scenes(folder, args.size, 1)[0]
        common = ["--model", model, "--set", "inference.device=cpu"]
        extract = timed([sys.executable, "-m", "roadprn", "-q", "extract", str(scene), "--out",
                         str(folder / "single"), "--overwrite", *common,
                         "--set", f"inference.torch_threads={args.threads}"])
        print(f"extract: {extract:.1f} s", flush=True)
        runs = {}
        for label, split_tiles in (("split", args.split_tiles), ("unsplit", 0)):
            out = folder / f"batch-{label}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            runs[label] = timed([sys.executable, "-c", CLI, "-q", "batch", str(scene), "--out",
                                 str(out), *common, "--workers", str(args.workers),
                                 "--threads-per-worker", str(args.threads // args.workers),
                                 "--split-tiles", str(split_tiles)])
            print(f"batch {label}: {runs[label]:.1f} s", flush=True)
        record = scene_record(folder / "batch-split")

    result = {
        "mode": "split", "size": args.size, "threads": args.threads, "workers": args.workers,
        "model": Path(model).name, "tiles": record.get("tiles"), "bands": record.get("bands"),
        "stage_seconds": record.get("stage_seconds"),
        "extract_seconds": round(extract, 2),
        "batch_split_seconds": round(runs["split"], 2),
        "batch_unsplit_seconds": round(runs["unsplit"], 2),
        "split_vs_extract": round(runs["split"] / extract, 3),
        "split_vs_unsplit": round(runs["split"] / runs["unsplit"], 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def scene_record(out: Path) -> dict:
    """The newest scene record of a batch run's manifest."""
    from roadprn.batch.manifest import MANIFEST_NAME, latest_scene_records

    records = list(latest_scene_records(out / MANIFEST_NAME).values())
    return records[-1] if records else {}


if __name__ == "__main__":
    main()
