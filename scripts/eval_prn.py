"""Evaluate a PatchRefineNet against the spec's baselines on held-out maps.

    python scripts/train_default_prn.py      # writes the maps and the PRN into the work folder
    python scripts/eval_prn.py               # tables -> WORK/eval_prn.md, figure, JSON

Rows (same held-out maps for all): base @ 0.5; base @ the best global threshold chosen on PRN's
*training* maps; base + PRN with each fusion rule (paper, global, local, mean); per-image
oracle; per-patch oracle (upper bound). Columns: pooled IoU (sum of intersections / sum of
unions, the paper's "mIoU"), mean per-image IoU (an image with neither truth nor prediction
scores 1), precision, recall. The synthetic test scenes (seeds 700+) were used neither for the
base model nor for PRN training or checkpoint selection.

Also evaluated, whole-scene through the ``extract`` windows (halo, core cropping): the same
test scenes, and the real SpaceNet Vegas img33 bottom 30 % (held out from the base model; the
PNG has no georeferencing, so it is given its true 0.3 m pixel size in a UTM grid and the
pipeline resamples it to the base model's 0.5 m as ``extract`` would).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from roadprn.config import load_config  # noqa: E402
from roadprn.infer.base_stage import extract_probability  # noqa: E402
from roadprn.models.loading import load_segmentation_model  # noqa: E402
from roadprn.prn.data import PRNMaps, load_maps, read_probability  # noqa: E402
from roadprn.prn.pseudolabels import per_image_oracle, per_patch_oracle  # noqa: E402
from roadprn.prn.refine import FUSION_RULES, fuse, prn_probabilities  # noqa: E402
from roadprn.prn.refine_scene import load_refine_model  # noqa: E402
from roadprn.prn.train import predict_maps  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
IMG33_VAL_ROWS = slice(910, None)  # the base model trained on rows 0..909
IMG33_GSD_M = 0.3

log = logging.getLogger("eval_prn")


# --------------------------------------------------------------------------- metrics


def counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, 3) true positives, false positives, false negatives per image."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    axes = tuple(range(1, pred.ndim))
    return np.stack([(pred & truth).sum(axes), (pred & ~truth).sum(axes),
                     (~pred & truth).sum(axes)], axis=1).astype(np.int64)


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    c = counts(pred, truth)
    tp, fp, fn = c.sum(axis=0)
    union = c.sum(axis=1)
    per_image = np.where(union > 0, c[:, 0] / np.maximum(union, 1), 1.0)
    return {"pooled_iou": tp / max(1, tp + fp + fn), "mean_image_iou": float(per_image.mean()),
            "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn)}


def best_global_threshold(prob: np.ndarray, truth: np.ndarray) -> float:
    """The threshold with the best pooled IoU (ties: closest to 0.5)."""
    ious = np.array([scores(prob > t, truth)["pooled_iou"] for t in THRESHOLDS])
    best = np.flatnonzero(ious == ious.max())
    return float(THRESHOLDS[best[np.argmin(np.abs(THRESHOLDS[best] - 0.5))]])


def rows_for(prob: np.ndarray, truth: np.ndarray, global_map: np.ndarray,
             local_map: np.ndarray | None, tau: float, patch: int) -> dict[str, dict]:
    rows = {"base @ 0.5": scores(prob > 0.5, truth),
            f"base @ best global threshold {tau:.2f} (PRN training maps)":
                scores(prob > tau, truth)}
    for rule in FUSION_RULES:
        if local_map is None and rule in ("local", "mean"):
            continue
        rows[f"base + PRN, fusion {rule}"] = scores(fuse(global_map, local_map, rule), truth)
    rows["per-image oracle threshold"] = scores(per_image_oracle(prob, truth), truth)
    rows[f"per-patch oracle threshold ({patch} px)"] = scores(
        per_patch_oracle(prob, truth, patch), truth)
    return rows


def markdown(rows: dict[str, dict], title: str) -> str:
    lines = [f"**{title}**", "",
             "| method | pooled IoU | mean per-image IoU | precision | recall |",
             "|---|---|---|---|---|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['pooled_iou']:.4f} | {s['mean_image_iou']:.4f} | "
                     f"{s['precision']:.4f} | {s['recall']:.4f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- data


def scene_maps(work: Path, maps: PRNMaps) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Whole-scene base probability and truth of the scenes the maps came from."""
    from roadprn.prn.data import read_truth

    scenes = []
    for source in dict.fromkeys(maps.sources):
        scene = Path(source)
        prob, valid = read_probability(work / "probability" / f"{scene.stem}_probability.tif")
        truth, truth_valid = read_truth(scene.with_name(f"{scene.stem}_mask.tif"), scene)
        keep = valid & truth_valid
        scenes.append((scene.stem, np.where(keep, prob, 0).astype(np.float32), truth & keep))
    return scenes


def img33_probability(work: Path, realdata: Path) -> tuple[np.ndarray, np.ndarray]:
    """Default base model's probability on img33's held-out bottom rows, via extract's engine."""
    folder = realdata / "spacenet_vegas_img33"
    with rasterio.open(folder / "AOI_2_Vegas_img33.png") as src:
        image = src.read()[:, IMG33_VAL_ROWS]
    with rasterio.open(folder / "mask_AOI_2_Vegas_img33.png") as src:
        truth = src.read(1)[IMG33_VAL_ROWS] > 127
    path = work / "img33" / "img33_val_utm.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": image.shape[2], "height": image.shape[1],
               "count": 3, "dtype": "uint8", "crs": "EPSG:32611",
               "transform": from_origin(660000, 4000000, IMG33_GSD_M, IMG33_GSD_M)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    config = load_config(None, {"output.overwrite": True})
    result = extract_probability(path, load_segmentation_model("default"), config, path.parent)
    prob, _ = read_probability(result.paths.probability)
    return prob, truth


def forward_seconds(module: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Fastest of ``repeats`` forwards (the steadiest figure on a shared machine)."""
    module.eval()
    times = []
    with torch.inference_mode():
        module(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - t0)
    return min(times)


# --------------------------------------------------------------------------- figure


def patch_iou_figure(out: Path, prob: np.ndarray, truth: np.ndarray, refined: np.ndarray,
                     tau: float, patch: int, names: list[str]) -> None:
    """Per-patch IoU change (PRN minus base @ best global threshold) on a few test maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from roadprn.evaluate.pixel import patch_iou_grid

    n = len(prob)
    fig, axes = plt.subplots(3, n, figsize=(3.2 * n, 9.6), squeeze=False)
    for i in range(n):
        base_grid = patch_iou_grid(prob[i] > tau, truth[i], patch)
        prn_grid = patch_iou_grid(refined[i], truth[i], patch)
        delta = np.nan_to_num(prn_grid, nan=1.0) - np.nan_to_num(base_grid, nan=1.0)
        axes[0, i].imshow(prob[i], cmap="magma", vmin=0, vmax=1)
        axes[0, i].set_title(f"{names[i]}\nbase probability", fontsize=8)
        axes[1, i].imshow(truth[i], cmap="gray")
        axes[1, i].set_title("ground truth", fontsize=8)
        image = axes[2, i].imshow(delta, cmap="RdBu", vmin=-0.5, vmax=0.5,
                                  extent=(0, prob.shape[2], prob.shape[1], 0))
        axes[2, i].set_title(f"patch IoU: PRN − base@{tau:.2f}", fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(image, ax=axes[2, :].tolist(), shrink=0.8, label="IoU change per patch")
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/roadprn-default-prn"))
    parser.add_argument("--prn", type=Path, action="append", default=None,
                        help="PRN checkpoint(s) (default: WORK/prn_fast.pt); repeatable")
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown table (default WORK/eval_prn.md)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure-maps", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = args.work_dir
    out = args.out or work / "eval_prn.md"
    prn_paths = args.prn or [work / "prn_fast.pt"]
    img33 = None
    if args.realdata.is_dir():
        img33 = img33_probability(work, args.realdata)
    torch.set_num_threads(args.threads)

    base = load_segmentation_model("default")
    report: dict = {"models": {}}
    sections = []
    for prn_path in prn_paths:
        prn = load_refine_model(prn_path)
        model = prn.module
        arch = model.arch
        train_maps = load_maps(work / f"maps_train_{arch.map_size}.npz")
        test_maps = load_maps(work / f"maps_test_{arch.map_size}.npz")
        tau = best_global_threshold(train_maps.prob, train_maps.truth)
        sections.append(f"Best global threshold on PRN's {len(train_maps)} training maps "
                        f"({arch.map_size} px): {tau:.2f}.")
        patch = arch.map_size // max(1, arch.grid)
        name = f"{prn_path.name} ({arch.variant}, {arch.name}, {arch.map_size} px)"
        t0 = time.perf_counter()
        g, loc = predict_maps(model, test_maps.prob)
        seconds = (time.perf_counter() - t0) / len(test_maps)
        rows = rows_for(test_maps.prob, test_maps.truth, g, loc, tau, patch)
        size = arch.map_size
        prn_s = forward_seconds(model, torch.rand(1, 1, size, size))
        base_s = forward_seconds(base.module, torch.rand(1, base.in_channels, size, size))
        entry = {"maps": rows, "prn_seconds_per_map": seconds, "best_global_threshold": tau,
                 "train_maps": len(train_maps), "test_maps": len(test_maps),
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "forward_seconds": {"prn": prn_s, "base": base_s, "ratio": prn_s / base_s}}
        sections.append(f"{prn_path.name}: {entry['parameters']:,} parameters; one {size}² "
                        f"forward on CPU ({args.threads} thread(s)): PRN {prn_s:.3f} s, default "
                        f"base model {base_s:.3f} s, ratio {prn_s / base_s:.2f}.")
        sections.append(markdown(rows, f"{name}: {len(test_maps)} held-out synthetic maps of "
                                       f"{arch.map_size} px (PRN {seconds:.2f} s per map)"))
        scenes = scene_maps(work, test_maps)
        scene_rows = None
        if scenes and all(s[1].shape == scenes[0][1].shape for s in scenes):
            prob = np.stack([s[1] for s in scenes])
            truth = np.stack([s[2] for s in scenes])
            outs = [prn_probabilities(model, p) for p in prob]
            sg = np.stack([o[0] for o in outs])
            sl = None if outs[0][1] is None else np.stack([o[1] for o in outs])
            scene_rows = rows_for(prob, truth, sg, sl, tau, patch)
            entry["scenes"] = scene_rows
            sections.append(markdown(scene_rows, f"{name}: {len(scenes)} whole held-out "
                                                 "synthetic scenes through extract's PRN windows"))
        if img33 is not None:
            prob, truth = img33
            ig, il = prn_probabilities(model, prob)
            img_rows = rows_for(prob[None], truth[None], ig[None],
                                None if il is None else il[None], tau, patch)
            entry["img33"] = img_rows
            sections.append(markdown(img_rows, f"{name}: SpaceNet Vegas img33 bottom 30 % (real, "
                                               "held out from the base model; one image)"))
        report["models"][str(prn_path)] = entry
        figure = out.with_name(f"{out.stem}_{prn_path.stem}_patch_iou.png")
        pick = _figure_maps(test_maps, args.figure_maps)
        refined = fuse(g[pick], None if loc is None else loc[pick], "global")
        patch_iou_figure(figure, test_maps.prob[pick], test_maps.truth[pick], refined, tau, patch,
                         [f"{Path(test_maps.sources[i]).stem} @{test_maps.origins[i]}"
                          for i in pick])
        log.info("figure: %s", figure)
    out.write_text("\n\n".join(sections) + "\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float))
    print(out.read_text())


def _figure_maps(maps: PRNMaps, n: int) -> list[int]:
    """Maps with a fair amount of road, spread over different scenes."""
    road = maps.truth.mean(axis=(1, 2))
    order = [int(i) for i in np.argsort(-road)]
    picked, seen = [], set()
    for i in order:
        if maps.sources[i] not in seen:
            picked.append(i)
            seen.add(maps.sources[i])
        if len(picked) == n:
            break
    return sorted(picked)


if __name__ == "__main__":
    main()
