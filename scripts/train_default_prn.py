"""Train the default PatchRefineNet shipped with the default base model (reproducible).

PRN must learn from base-model maps of scenes the base model never saw: the default base model
was trained on synthetic seeds 101-110 and the top 70 % of SpaceNet img33, so this script
synthesises fresh scenes (train seeds 500+, validation 600+, test 700+; varied resolution, data
type and nodata borders), runs the default base model on them with ``extract``'s tiled engine,
cuts 512² maps and trains PRN. The checkpoint is chosen on the validation scenes; the test
scenes are kept for ``scripts/eval_prn.py`` and never touch training.

    python scripts/train_default_prn.py                 # ~30 min on a busy 2-core CPU
    python scripts/eval_prn.py                          # the tables in docs/prn.md

Writes ``roadprn/data/models/default_prn.pt`` (unless ``--no-install``) and, in the work
folder, the maps (``maps_{train,val,test}_<map size>.npz``), the run state (``.state.pt``) and
per-epoch metrics (``.metrics.csv`` / ``.metrics.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roadprn.config import load_config  # noqa: E402
from roadprn.models.checkpoint import TrainingFile  # noqa: E402
from roadprn.models.loading import load_segmentation_model, resolve_model_path  # noqa: E402
from roadprn.outputs.atomic import file_sha256  # noqa: E402
from roadprn.prn.data import PRNMaps, load_maps, maps_from_scene, save_maps  # noqa: E402
from roadprn.prn.fusion import DEFAULT_FUSION, FUSION_RULES  # noqa: E402
from roadprn.prn.options import TrainPRNOptions  # noqa: E402
from roadprn.prn.train import fit_prn  # noqa: E402
from roadprn.synth import generate_scene  # noqa: E402

PACKAGE_MODELS = ROOT / "roadprn" / "data" / "models"
SPLIT_SEEDS = {"train": 500, "val": 600, "test": 700}
# cycled per scene: resolution (m), data type, nodata border; like the inputs extract meets
SCENE_LOOKS = [(0.5, "uint8", False), (0.4, "uint16", False), (0.6, "uint8", True),
               (0.5, "uint16", False), (0.3, "uint8", False), (0.45, "uint8", False),
               (0.55, "uint16", True)]

log = logging.getLogger("train_default_prn")


def scene_plan(split: str, count: int, realistic_every: int = 2
               ) -> list[tuple[int, float, str, bool, str]]:
    """(seed, resolution, dtype, nodata border, style) of each synthetic scene of a split.

    Every ``realistic_every``-th scene is in the realistic style (0: none): the base model's
    errors on real imagery (roofs, parking lots, occluded streets) are what PRN must see.
    """
    first = SPLIT_SEEDS[split]
    return [(first + i, *SCENE_LOOKS[i % len(SCENE_LOOKS)],
             "realistic" if realistic_every and i % realistic_every == realistic_every - 1
             else "classic")
            for i in range(count)]


def build_maps(work: Path, split: str, count: int, size: int, map_size: int,
               base_spec: str = "default", realistic_every: int = 2) -> PRNMaps:
    """Synthesise a split's scenes, run the base model, cut maps (cached in the work folder)."""
    cache = work / f"maps_{split}_{map_size}.npz"
    if cache.exists():
        return load_maps(cache)
    base = load_segmentation_model(base_spec)
    config = load_config(None, {"output.overwrite": True})
    parts = []
    for seed, res, dtype, border, style in scene_plan(split, count, realistic_every):
        image = work / "scenes" / f"synth_{seed}_{style}.tif"
        if not image.exists():
            generate_scene(image, width=size, seed=seed, resolution_m=res, dtype=dtype,
                           nodata_border=border, overwrite=True, style=style)
        part = maps_from_scene(image, image.with_name(f"{image.stem}_mask.tif"), base, config,
                               work / "probability", map_size)
        log.info("%s scene %d (%.2f m, %s): %d maps, %.1f %% road", split, seed, res, dtype,
                 len(part), 100 * part.truth.mean() if len(part) else 0)
        parts.append(part)
    maps = PRNMaps.concat(parts, map_size)
    save_maps(cache, maps)
    return maps


def training_files(work: Path, realistic_every: int, train: int, val: int
                   ) -> list[TrainingFile]:
    """The synthetic scenes and masks PRN learnt from, named relative to the work folder."""
    files = []
    for split, count in (("train", train), ("val", val)):
        for seed, *_, style in scene_plan(split, count, realistic_every):
            image = work / "scenes" / f"synth_{seed}_{style}.tif"
            for path, role in ((image, "scene"),
                               (image.with_name(f"{image.stem}_mask.tif"), "labels")):
                files.append(TrainingFile(path=str(path.relative_to(work)),
                                          sha256=file_sha256(path), role=role))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/roadprn-default-prn"))
    parser.add_argument("--variant", choices=["fast", "paper"], default="fast")
    parser.add_argument("--base", default="default",
                        help="base model whose maps PRN learns to refine (default: shipped)")
    parser.add_argument("--realistic-every", type=int, default=2,
                        help="every N-th scene in the realistic synthetic style (0: none)")
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--map-size", type=int, default=512)
    parser.add_argument("--scene-size", type=int, default=1536)
    parser.add_argument("--train-scenes", type=int, default=12)
    parser.add_argument("--val-scenes", type=int, default=3)
    parser.add_argument("--test-scenes", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--fusion", choices=FUSION_RULES, default=DEFAULT_FUSION,
                        help="fusion rule used to select the checkpoint on validation")
    parser.add_argument("--max-minutes", type=float, default=45.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for training (1: far faster on a busy machine)")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint (default: WORK/prn.pt)")
    parser.add_argument("--resume", action="store_true", help="continue WORK's saved run state")
    parser.add_argument("--no-install", action="store_true",
                        help=f"do not copy the checkpoint to {PACKAGE_MODELS}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or work / f"prn_{args.variant}.pt"

    t0 = time.perf_counter()
    maps = {split: build_maps(work, split, getattr(args, f"{split}_scenes"), args.scene_size,
                              args.map_size, args.base, args.realistic_every)
            for split in ("train", "val", "test")}
    log.info("maps: %s in %.0f s", {k: len(v) for k, v in maps.items()}, time.perf_counter() - t0)
    torch.set_num_threads(args.threads)  # extract's engine changed it for its own stages
    # (fit_prn sets options.threads again before training)

    base_path = resolve_model_path(args.base)
    base = load_segmentation_model(args.base)
    assert base.sha256 is not None
    options = TrainPRNOptions(
        variant=args.variant, grid=args.grid, map_size=args.map_size, epochs=args.epochs,
        lr=args.lr, seed=args.seed, fusion=args.fusion, max_minutes=args.max_minutes,
        threads=args.threads,
        notes=(f"default PRN ({args.variant}) for {base_path.name}: synthetic scenes seeds "
               f"{SPLIT_SEEDS['train']}+ (validation {SPLIT_SEEDS['val']}+); "
               "scripts/train_default_prn.py"))
    resume = out if args.resume and out.with_suffix(".state.pt").exists() else None
    result = fit_prn(maps["train"], maps["val"], options, out, base_model_sha256=base.sha256,
                     resume=resume, overwrite=True,
                     training_files=training_files(work, args.realistic_every,
                                                   args.train_scenes, args.val_scenes),
                     on_epoch_end=lambda row: log.info("epoch %d: %s", row["epoch"],
                                                       json.dumps(row)))
    log.info("wrote %s (%.2f MB, sha256 %s…), best epoch %d of %d, %.1f min", out,
             out.stat().st_size / 1e6, (result.checkpoint_sha256 or "?")[:12],
             result.best_epoch, len(result.history), (time.perf_counter() - t0) / 60)
    if not args.no_install:
        installed = PACKAGE_MODELS / "default_prn.pt"
        shutil.copyfile(out, installed)
        log.info("installed %s", installed)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
