#!/usr/bin/env python
"""Benchmark: base-model training throughput (chips/s) and default-model inference (MPix/s).

Training: ``train_base`` for a few epochs on a synthetic scene with the default model's
settings (D-LinkNet18 width 16, 256 px chips, batch 8, augmentation on); chips/s of the epochs
after the first (the first includes label rasterisation and warm-up).
Inference: ``roadprn extract``'s probability stage (``extract_probability``) with the shipped
default model on a synthetic RGB scene, end to end (reads, normalisation, model, stitching, COG).

    python scripts/bench_train.py --threads 1 --json bench_train.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roadprn.config import load_config  # noqa: E402
from roadprn.infer.base_stage import extract_probability  # noqa: E402
from roadprn.models.loading import load_segmentation_model  # noqa: E402
from roadprn.synth import generate_scene  # noqa: E402
from roadprn.train import TrainingPair, make_options, train_base  # noqa: E402


def bench_training(work: Path, args: argparse.Namespace) -> dict:
    scene = generate_scene(work / "train.tif", width=1024, seed=11, overwrite=True)
    options = make_options(
        arch="dlinknet18", arch_kwargs={"width": args.width}, chip_size=args.chip_size,
        batch_size=args.batch_size, epochs=args.epochs, steps_per_epoch=args.steps,
        val_fraction=0.0, threads=args.threads, num_workers=args.workers, device="cpu",
        augmentation={"scale_jitter": 1.5})
    result = train_base([TrainingPair(scene.image_path, scene.mask_path)], options,
                        work / "bench.pt", overwrite=True)
    later = result.history[1:] or result.history
    chips = sum(options.steps_per_epoch * options.batch_size for _ in later)
    seconds = sum(row["seconds"] for row in later)
    return {"arch": f"dlinknet18(width={args.width})", "chip_size": args.chip_size,
            "batch_size": args.batch_size, "epochs_timed": len(later),
            "chips_per_s": chips / seconds,
            "mpix_per_s": chips * args.chip_size**2 / seconds / 1e6}


def bench_inference(work: Path, args: argparse.Namespace) -> dict:
    scene = generate_scene(work / "infer.tif", width=args.scene_size, seed=12, overwrite=True)
    model = load_segmentation_model(args.model)
    overrides = {"output.overwrite": True, "inference.device": "cpu"}
    if args.threads:
        overrides["inference.torch_threads"] = args.threads
    config = load_config(None, overrides)
    extract_probability(scene.image_path, model, config, work / "warm")  # warm-up
    t0 = time.perf_counter()
    result = extract_probability(scene.image_path, model, config, work / "out")
    seconds = time.perf_counter() - t0
    mpix = args.scene_size**2 / 1e6
    # the model alone on one 512 px tile
    x = torch.rand(1, model.in_channels, 512, 512)
    with torch.inference_mode():
        model.module(x)
        t1 = time.perf_counter()
        for _ in range(3):
            model.module(x)
    tile_s = (time.perf_counter() - t1) / 3
    return {"model": model.name, "scene_px": args.scene_size, "seconds": seconds,
            "mpix_per_s": mpix / seconds, "model_seconds": result.model_seconds,
            "tile512_forward_s": tile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--scene-size", type=int, default=2048)
    parser.add_argument("--model", default="default")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_training:
            report["training"] = bench_training(work, args)
        report["inference"] = bench_inference(work, args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
