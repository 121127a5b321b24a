#!/usr/bin/env python
"""Benchmarks of the tiled extract pipeline (issue: scene-scale tiled inference).

1. Overhead: wall time of the pipeline up to the probability/mask COGs on a synthetic scene,
   divided by a bare loop that runs the same model on the same number of tensors of the same
   batch shape, in the same process with the same torch thread settings. Target <= 1.15 on CPU.
2. Memory: peak RSS of extract on a small and a large synthetic scene, each in its own child
   process (os.wait4). Target: large <= 1.2 x small.

    python scripts/bench_extract.py                                # defaults below
    python scripts/bench_extract.py --overhead-size 8192 --memory-sizes 4096 20000
    python scripts/bench_extract.py --skip-memory --json out.json

The model is the shipped default when present (else a randomly initialised D-LinkNet18 with the
same tile settings: speed does not depend on the weights). The memory runs may use a cheaper
model (--memory-model tiny_unet) since RSS is set by the pipeline's buffers, not the model.
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

import numpy as np


def load_model(spec: str):
    import torch

    from roadprn.infer.predictor import SegmentationModel
    from roadprn.models.base import build_model
    from roadprn.models.loading import default_model_path, load_segmentation_model

    if spec == "default" and default_model_path().is_file():
        return load_segmentation_model("default")
    if spec in ("default", "dlinknet18", "tiny_unet", "dlinknet34"):
        arch = "dlinknet18" if spec == "default" else spec
        torch.manual_seed(0)
        return SegmentationModel(build_model(arch, in_channels=3), in_channels=3, name=arch,
                                 tile_size=512, halo=32, normalization={"mode": "dtype"})
    return load_segmentation_model(spec)


def make_scene(folder: Path, size: int) -> Path:
    from roadprn.synth import generate_scene

    path = folder / f"bench_{size}.tif"
    if not path.exists():
        generate_scene(path, width=size, seed=7, overviews=True)
    return path


def overhead(args: argparse.Namespace, folder: Path) -> dict:
    import torch

    from roadprn.config import load_config
    from roadprn.infer.base_stage import choose_tiling, extract_probability
    from roadprn.infer.predictor import Predictor, configure_torch_threads, resolve_device
    from roadprn.infer.tiling import TilePlan

    scene = make_scene(folder, args.overhead_size)
    model = load_model(args.model)
    config = load_config(overrides={"output.overwrite": True, "vectorize.enabled": False,
                                    "inference.device": "cpu"})
    out = folder / "out_overhead"
    # warm-up (allocator, first-call costs) on a small crop-size scene is not needed: the bare
    # loop below runs after the pipeline in the same process, so the pipeline pays warm-up.
    t0 = time.perf_counter()
    result = extract_probability(scene, model, config, out)
    pipeline_s = time.perf_counter() - t0

    device = resolve_device("cpu")
    choice = choose_tiling(config, model, device.type)
    plan = TilePlan(args.overhead_size, args.overhead_size, choice.tile_size, choice.halo,
                    choice.blend_radius)
    threads = configure_torch_threads(config.inference.torch_threads,
                                      config.inference.reader_threads)
    predictor = Predictor(model.module, device, amp=False)
    rng = np.random.default_rng(0)
    batch = rng.random((choice.batch_size, model.in_channels, plan.tile_size, plan.tile_size),
                       dtype=np.float32)
    n_batches, rest = divmod(len(plan), choice.batch_size)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        predictor(batch)
    if rest:
        predictor(batch[:rest])
    bare_s = time.perf_counter() - t0
    return {
        "scene_px": args.overhead_size, "tiles": len(plan), "tile_size": plan.tile_size,
        "halo": plan.halo, "batch_size": choice.batch_size, "torch_threads": threads,
        "model": model.name, "halo_fraction": round(plan.halo_fraction, 4),
        "pipeline_s": round(pipeline_s, 2), "bare_model_loop_s": round(bare_s, 2),
        "overhead_ratio": round(pipeline_s / bare_s, 3),
        "pipeline_mpix_per_s": round(args.overhead_size**2 / 1e6 / pipeline_s, 3),
        "stage_seconds": {k: round(v, 2) for k, v in result.timings.items()},
        "torch": torch.__version__,
    }


CHILD = """
import sys
from roadprn.config import load_config
from roadprn.infer.base_stage import extract_probability
sys.path.insert(0, {scripts!r})
from bench_extract import load_model
model = load_model({model!r})
config = load_config(overrides={{"output.overwrite": True, "inference.device": "cpu"}})
r = extract_probability({scene!r}, model, config, {out!r})
print(r.seconds, r.tiles)
"""


def memory(args: argparse.Namespace, folder: Path) -> list[dict]:
    rows = []
    for size in args.memory_sizes:
        scene = make_scene(folder, size)
        code = CHILD.format(scripts=str(Path(__file__).parent), model=args.memory_model,
                            scene=str(scene), out=str(folder / f"out_{size}"))
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"extract at {size}² failed: {proc.stderr.read().decode()[-2000:]}")
        seconds, tiles = proc.stdout.read().decode().split()
        rows.append({"scene_px": size, "tiles": int(tiles), "model": args.memory_model,
                     "wall_s": round(wall, 1), "extract_s": round(float(seconds), 1),
                     "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                     "mpix_per_s": round(size * size / 1e6 / float(seconds), 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--overhead-size", type=int, default=8192)
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[4096, 20000])
    parser.add_argument("--memory-model", default="tiny_unet")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                        "python": platform.python_version()}
        if not args.skip_overhead:
            report["overhead"] = overhead(args, folder)
            print(json.dumps(report["overhead"], indent=2), flush=True)
        if not args.skip_memory:
            rows = memory(args, folder)
            report["memory"] = rows
            report["memory_ratio"] = round(rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3)
            print(f"peak RSS ratio {rows[-1]['scene_px']}² / {rows[0]['scene_px']}²: "
                  f"{report['memory_ratio']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
