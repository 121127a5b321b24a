"""Score the real pipeline on every real labelled image in ../shared/realdata (issue #15, item 3).

    python scripts/eval_real.py --json real.json --markdown real.md
    python scripts/eval_real.py --images img33 --set resolution.resample=false

For each image, ``extract`` runs twice through :func:`roadprn.extract.run_extract` (what the CLI
calls), with the default options plus --model / --prn / --set:

* ``base``: ``--refine none`` (base mask at the configured threshold and its road network);
* ``base+PRN``: ``--refine auto`` (the PRN is skipped when it does not belong to the
  base model, e.g. the panchromatic model: the row says so);
* ``base@best``: the base probability of the first run thresholded at the global threshold
  (0.05..0.95 step 0.05) with the best pixel IoU **against this image's own truth** (an oracle:
  an upper bound for one global threshold), vectorised with the same vectoriser and parameters.

Images: SpaceNet Vegas img33 (only its held-out bottom strip, rows 910..1299; the default model
trained on rows 0..909), the SpaceNet Vegas PAN chip (partial labels), DeepGlobe 104 and 113
(research licence: evaluation only). PNG/JPEG images get a temporary GeoTIFF with a plausible
UTM georeference at their true pixel size so ``extract`` treats them as normal scenes. Images
without truth vectors get truth centrelines from roadprn's own vectoriser run on the truth mask.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import geopandas as gpd  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402
from PIL import Image  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from roadprn import __version__  # noqa: E402
from roadprn.config import Config, load_config, parse_set_option  # noqa: E402
from roadprn.evaluate import io as eval_io  # noqa: E402
from roadprn.evaluate.apls import apls  # noqa: E402
from roadprn.evaluate.length import length_metrics  # noqa: E402
from roadprn.evaluate.pixel import binarize, confusion, scores_from_counts  # noqa: E402
from roadprn.infer.predictor import SegmentationModel  # noqa: E402
from roadprn.raster.gdal_env import read_masks  # noqa: E402
from roadprn.vectorize.params import VectorizeParams  # noqa: E402

REALDATA = Path(os.environ.get("ROADPRN_REALDATA", ROOT.parent / "shared" / "realdata"))
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
TOLERANCES_M = (3.0, 5.0)
IMG33_ROWS = slice(910, 1300)  # held out: the default model trained on rows 0..909
VARIANTS = ("base", "base+PRN", "base@best")

log = logging.getLogger("eval_real")


@dataclass
class Case:
    """One image: a GeoTIFF scene for extract, its truth mask (scene grid) and truth lines."""

    name: str
    scene: Path
    truth_mask: np.ndarray  # bool, scene grid
    truth_lines: gpd.GeoSeries  # any CRS
    notes: list[str]


# --------------------------------------------------------------------------- images


def write_geotiff(path: Path, bands: np.ndarray, crs: str, transform: Affine) -> Path:
    """A plain GeoTIFF (bands, rows, cols): a PNG/JPEG given the georeference it lacks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                       count=bands.shape[0], dtype=bands.dtype, crs=crs,
                       transform=transform) as ds:
        ds.write(bands)
    return path


def read_rgb(path: Path) -> np.ndarray:
    """(3, rows, cols) uint8 of a PNG/JPEG."""
    return np.moveaxis(np.asarray(Image.open(path).convert("RGB")), -1, 0)


def mask_centrelines(mask: np.ndarray, transform: Affine, crs: str | CRS,
                     params: VectorizeParams, name: str) -> gpd.GeoSeries:
    """Centrelines of a road mask by roadprn's vectoriser (truth without vectors, and the
    best-threshold variant): the same skeleton, pruning and simplification as extract's."""
    from roadprn.vectorize.attributes import network_frames
    from roadprn.vectorize.source import ArraySource
    from roadprn.vectorize.tiled import vectorize_source

    source = ArraySource(road=mask.astype(bool), transform=transform, crs=CRS.from_user_input(crs),
                         name=name)
    roads, _ = network_frames(vectorize_source(source, params), transform, source.crs, name)
    return roads.geometry


def img33_case(realdata: Path, work: Path, params: VectorizeParams) -> Case:
    """Held-out strip of img33 at its true 0.3 m in UTM 11N (Las Vegas)."""
    folder = realdata / "spacenet_vegas_img33"
    rgb = read_rgb(folder / "AOI_2_Vegas_img33.png")[:, IMG33_ROWS]
    soft = np.asarray(Image.open(folder / "mask_AOI_2_Vegas_img33.png").convert("L"))
    truth = np.asarray(soft[IMG33_ROWS] > 127, dtype=bool)
    crs, transform = "EPSG:32611", from_origin(667000.0, 4004000.0, 0.3, 0.3)
    scene = write_geotiff(work / "scenes" / "img33_strip.tif", rgb, crs, transform)
    return Case("img33", scene, truth, mask_centrelines(truth, transform, crs, params, "truth"),
                ["rows 910..1299 only (held out from the default model)",
                 "truth lines: roadprn's vectoriser on the truth mask (> 127)"])


def pan_case(realdata: Path, work: Path, params: VectorizeParams) -> Case:
    """The PAN chip as it is (already a GeoTIFF); truth lines are partial labels."""
    folder = realdata / "spacenet_vegas_pan"
    scene = folder / "road_mask_input.tif"
    with rasterio.open(folder / "sample_road_raster_mask.tif") as ds:
        truth = ds.read(1) > 0
    lines = eval_io.read_lines(folder / "sample_roads_for_masking.geojson")
    return Case("vegas_pan", scene, truth, lines,
                ["truth: 9 labelled lines, PARTIAL (precisions are lower bounds)"])


def deepglobe_case(tile: str) -> Callable[[Path, Path, VectorizeParams], Case]:
    """DeepGlobe tile at 0.5 m in UTM 47N (a plausible place; the tiles carry no location)."""

    def make(realdata: Path, work: Path, params: VectorizeParams) -> Case:
        folder = realdata / "deepglobe"
        rgb = read_rgb(folder / f"{tile}_sat.jpg")
        mask = np.asarray(Image.open(folder / f"{tile}_mask.png").convert("RGB"))
        truth = np.asarray((mask > 127).any(axis=-1), dtype=bool)
        crs, transform = "EPSG:32647", from_origin(600000.0, 1500000.0, 0.5, 0.5)
        scene = write_geotiff(work / "scenes" / f"deepglobe{tile}.tif", rgb, crs, transform)
        return Case(f"deepglobe{tile}", scene, truth,
                    mask_centrelines(truth, transform, crs, params, "truth"),
                    ["truth lines: roadprn's vectoriser on the truth mask",
                     "many dirt tracks unlabelled (DeepGlobe)"])

    return make


IMAGES: dict[str, Callable[[Path, Path, VectorizeParams], Case]] = {
    "img33": img33_case,
    "vegas_pan": pan_case,
    "deepglobe104": deepglobe_case("104"),
    "deepglobe113": deepglobe_case("113"),
}


# --------------------------------------------------------------------------- metrics


def read_raster(path: Path) -> tuple[np.ndarray, np.ndarray, Affine, CRS]:
    """Band 1, its validity mask, transform and CRS."""
    with rasterio.open(path) as ds:
        return ds.read(1), read_masks(ds, 1) > 0, ds.transform, ds.crs


def pixel_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """IoU, precision, recall of the prediction's valid pixels (roadprn.evaluate.pixel)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    s = scores_from_counts(confusion(pred, truth, valid))
    return {"iou": s["iou"], "precision": s["precision"], "recall": s["recall"]}


def best_global_threshold(prob: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
    """Threshold of THRESHOLDS with the best IoU on this image (ties: closest to 0.5)."""
    ious = np.array([pixel_scores(binarize(prob, t), truth, valid)["iou"] for t in THRESHOLDS])
    best = np.flatnonzero(ious == ious.max())
    return float(THRESHOLDS[best[np.argmin(np.abs(THRESHOLDS[best] - 0.5))]])


def network_scores(truth: gpd.GeoSeries, pred: gpd.GeoSeries) -> dict[str, float]:
    """Length recall/precision within each tolerance and APLS, in a local metric CRS."""
    crs = eval_io.local_utm_crs(truth, pred)
    truth_m = eval_io.to_metric(truth, crs, "truth").values
    pred_m = eval_io.to_metric(pred, crs, "prediction").values
    out: dict[str, float] = {}
    for tol in TOLERANCES_M:
        scores, counts = length_metrics(truth_m, pred_m, tol)
        out[f"len_recall_{tol:g}m"] = scores["completeness"]
        out[f"len_precision_{tol:g}m"] = scores["correctness"]
    out["truth_length_m"], out["pred_length_m"] = counts.truth_length, counts.pred_length
    out["apls"] = apls(truth_m, pred_m).apls
    return out


# --------------------------------------------------------------------------- pipeline


def extract_config(base: dict[str, Any], **overrides: Any) -> Config:
    """Defaults + the user's overrides + this run's (refine method)."""
    return load_config(None, {**base, **overrides})


def run_pipeline(case: Case, config: Config, out: Path, model: SegmentationModel) -> Any:
    """``extract`` of the case's scene into ``out`` (the real job, as the CLI runs it)."""
    from roadprn.extract import run_extract

    config.output.overwrite = True
    return run_extract(case.scene, config, out, base_model=model)


def load_model(case: Case, config: Config, cache: dict[str, SegmentationModel]
               ) -> SegmentationModel:
    """The base model extract would pick for this scene (pan model for 1-band), loaded once."""
    from roadprn.extract import model_spec_for_scene
    from roadprn.models.loading import load_segmentation_model

    spec = model_spec_for_scene(case.scene, config)
    if spec not in cache:
        cache[spec] = load_segmentation_model(spec)
    return cache[spec]


def score_run(case: Case, mask_path: Path, roads_path: Path | None) -> dict[str, float]:
    """Pixel and network scores of one extract output (mask + road network)."""
    mask, valid, _, _ = read_raster(mask_path)
    pred_lines = eval_io.read_lines(roads_path) if roads_path else gpd.GeoSeries([])
    return {**pixel_scores(mask == 1, case.truth_mask, valid),
            **network_scores(case.truth_lines, pred_lines)}


def evaluate_case(case: Case, user: dict[str, Any], work: Path,
                  models: dict[str, SegmentationModel]) -> tuple[list[dict[str, Any]], dict]:
    """The three variants' rows of one image, plus the models used."""
    base_cfg = extract_config(user, **{"refine.method": "none"})
    model = load_model(case, base_cfg, models)
    t0 = time.perf_counter()
    base = run_pipeline(case, base_cfg, work / case.name / "base", model)
    # the shipped PRN paired with this base (``auto``), unless the user forces one or names a file
    prn_cfg = extract_config({"refine.method": "auto", **user})
    prn = run_pipeline(case, prn_cfg, work / case.name / "prn", model)
    log.info("%s: two extract runs in %.1f s", case.name, time.perf_counter() - t0)

    rows = [{"variant": "base", "threshold": base_cfg.output.threshold,
             **score_run(case, base.files["mask"], base.files.get("roads"))}]
    refined = "refined_mask" in prn.files
    row = {"variant": "base+PRN", "threshold": prn_cfg.output.threshold, "refined": refined,
           **score_run(case, prn.files.get("refined_mask", prn.files["mask"]),
                       prn.files.get("roads"))}
    if not refined:
        case.notes.append("base+PRN: no PRN for this base model, refinement skipped")
    rows.append(row)

    prob8, valid, transform, crs = read_raster(base.files["probability"])
    prob = prob8.astype(np.float32) / np.float32(255.0)
    t = best_global_threshold(prob, case.truth_mask, valid)
    if t in (THRESHOLDS[0], THRESHOLDS[-1]):
        case.notes.append(f"base@best: {t:.2f} is the sweep's end (the optimum may lie beyond)")
    pred = binarize(prob, t) & valid
    lines = mask_centrelines(pred, transform, crs, base_cfg.vectorize, case.name)
    rows.append({"variant": "base@best", "threshold": t,
                 **pixel_scores(pred, case.truth_mask, valid),
                 **network_scores(case.truth_lines, lines)})
    used = {"base": model.name, "base_sha256": model.sha256, "prn_sha256": prn.prn_sha256}
    return rows, used


# --------------------------------------------------------------------------- report


COLUMNS = [("IoU", "iou"), ("P", "precision"), ("R", "recall"),
           ("len-R@3m", "len_recall_3m"), ("len-P@3m", "len_precision_3m"),
           ("len-R@5m", "len_recall_5m"), ("len-P@5m", "len_precision_5m"), ("APLS", "apls")]


def markdown(doc: dict[str, Any]) -> str:
    """One row per (image, variant), notes and provenance under the table."""
    head = "| image | variant | " + " | ".join(c for c, _ in COLUMNS) + " | threshold |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for image in doc["images"]:
        for row in image["rows"]:
            cells = " | ".join(f"{row[k]:.3f}" for _, k in COLUMNS)
            lines.append(f"| {image['name']} | {row['variant']} | {cells} | "
                         f"{row['threshold']:.2f} |")
    lines.append("")
    for image in doc["images"]:
        lines.append(f"- {image['name']}: " + "; ".join(image["notes"]))
    lines.append("- base@best: threshold with the best IoU on the image's own truth (oracle).")
    lines.append("- length metrics / APLS: roadprn.evaluate.length (buffer) and "
                 "roadprn.evaluate.apls (SpaceNet defaults), in a local UTM CRS.")
    used = {f"{m['base']} sha256 {m['base_sha256']}" for m in doc["models"].values()}
    used |= {f"PRN sha256 {m['prn_sha256']}" for m in doc["models"].values() if m["prn_sha256"]}
    lines.append(f"\nroadprn {doc['roadprn_version']}; models: {'; '.join(sorted(used))}; "
                 f"overrides: {doc['overrides'] or 'none'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", help="base model (extract --model)")
    p.add_argument("--prn", help="PRN checkpoint (extract --prn)")
    p.add_argument("--set", dest="set_items", action="append", default=[],
                   metavar="KEY=VALUE", help="config override passed to extract (repeatable)")
    p.add_argument("--images", nargs="+", choices=sorted(IMAGES), help="subset of images")
    p.add_argument("--realdata", type=Path, default=REALDATA)
    p.add_argument("--work-dir", type=Path, help="temporary files (default: a temp folder)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--markdown", type=Path, help="write the table here")
    p.add_argument("--threads", type=int, help="torch threads and vectoriser workers")
    return p.parse_args(argv)


def user_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set items, then --model / --prn / --threads as config keys."""
    overrides = parse_set_option(tuple(args.set_items))
    if args.model:
        overrides["model"] = args.model
    if args.prn:
        overrides["refine.model"] = args.prn
    if args.threads:
        overrides["inference.torch_threads"] = args.threads
        overrides["vectorize.workers"] = args.threads
    return overrides


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every selected image; print the table; return (and optionally write) the JSON."""
    from roadprn.runtime.settings import configure_process

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("pyogrio").setLevel(logging.WARNING)  # a line per layer written
    user = user_overrides(args)
    config = load_config(None, user)  # refuses a bad --set before any work
    configure_process(torch_threads=config.inference.torch_threads,
                      reader_threads=config.inference.reader_threads)
    with tempfile.TemporaryDirectory(prefix="eval_real_") as tmp:
        work = args.work_dir or Path(tmp)
        models: dict[str, SegmentationModel] = {}
        doc: dict[str, Any] = {"roadprn_version": __version__, "overrides": user,
                               "thresholds": THRESHOLDS.tolist(), "images": [], "models": {}}
        for name in args.images or list(IMAGES):
            # truth lines from the default vectoriser: a --set vectorize.* override changes
            # the prediction only, so sweeps compare against one truth
            case = IMAGES[name](args.realdata, work, VectorizeParams())
            rows, used = evaluate_case(case, user, work, models)
            doc["images"].append({"name": name, "scene": str(case.scene), "notes": case.notes,
                                  "rows": rows})
            doc["models"][name] = used
    text = markdown(doc)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=float))
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return doc


if __name__ == "__main__":
    main()
