"""Evaluate one prediction/truth pair, or a set, whatever their formats.

raster vs raster -> pixel metrics; vector vs vector -> network metrics (APLS, Wiedemann);
raster vs vector (either way round) -> pixel metrics with the lines buffered to a road width
and rasterised on the raster's grid. A set is pooled: pixel counts and lengths are summed
before the ratios are taken; APLS is the mean over pairs (as in SpaceNet).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from roadprn.errors import InputError
from roadprn.evaluate import io
from roadprn.evaluate.apls import APLSParams, apls_graphs
from roadprn.evaluate.graph import lines_to_graph
from roadprn.evaluate.length import LengthCounts, length_metrics, length_scores
from roadprn.evaluate.pixel import (
    PixelCounts,
    RelaxedCounts,
    best_threshold,
    binarize,
    patch_iou_grid,
    pixel_metrics,
    relaxed_scores,
    scores_from_counts,
    sweep_counts,
    sweep_scores,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalParams:
    """Every knob of ``roadprn evaluate``; see docs/metrics.md."""

    threshold: float = 0.5
    tolerance_m: float = 3.0  # relaxed precision/recall and Wiedemann buffer
    truth_width_m: float = 4.0  # road width when lines are rasterised
    patch_size: int = 64
    sweep: bool = False
    n_thresholds: int = 101
    pixel_size_m: tuple[float, float] | None = None  # only for rasters without georeferencing
    apls: APLSParams = field(default_factory=APLSParams)

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "tolerance_m": self.tolerance_m,
                "truth_width_m": self.truth_width_m, "patch_size": self.patch_size,
                "sweep": self.sweep, "n_thresholds": self.n_thresholds,
                "pixel_size_m": list(self.pixel_size_m) if self.pixel_size_m else None,
                "apls_control_spacing_m": self.apls.control_spacing_m,
                "apls_snap_m": self.apls.snap_m, "apls_min_path_m": self.apls.min_path_m}


@dataclass(frozen=True)
class Pair:
    pred: Path
    truth: Path
    name: str
    image: Path | None = None
    ignore: Path | None = None


@dataclass
class PairResult:
    """Scalar metrics of one pair plus what pooling and plots need."""

    pair: Pair
    kind: str  # "pixel" or "network"
    metrics: dict[str, float]
    pixel_counts: PixelCounts | None = None
    relaxed_counts: RelaxedCounts | None = None
    length_counts: LengthCounts | None = None
    sweep: dict[str, np.ndarray] | None = None  # counts: threshold, tp, fp, fn
    patch_iou: np.ndarray | None = None
    masks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # pred, truth, valid
    lines: tuple[gpd.GeoSeries, gpd.GeoSeries] | None = None  # truth, pred (metric CRS)


def evaluate_pair(pair: Pair, params: EvalParams) -> PairResult:
    pred_vec, truth_vec = io.is_vector(pair.pred), io.is_vector(pair.truth)
    if pred_vec and truth_vec:
        if pair.ignore is not None:
            log.warning("%s: the ignore mask applies to pixel metrics only", pair.ignore)
        return _network_pair(pair, params)
    return _pixel_pair(pair, params, pred_vec, truth_vec)


def _network_pair(pair: Pair, params: EvalParams) -> PairResult:
    truth = io.read_lines(pair.truth)
    pred = io.read_lines(pair.pred)
    metric_crs = io.local_utm_crs(truth, pred)
    truth_m = truth.to_crs(metric_crs) if len(truth) else gpd.GeoSeries([], crs=metric_crs)
    pred_m = pred.to_crs(metric_crs) if len(pred) else gpd.GeoSeries([], crs=metric_crs)
    if len(truth_m) and len(pred_m):
        io.check_overlap(tuple(truth_m.total_bounds), tuple(pred_m.total_bounds),
                         str(pair.truth), str(pair.pred))
    result = apls_graphs(lines_to_graph(truth_m.values), lines_to_graph(pred_m.values),
                         params.apls)
    lengths, counts = length_metrics(truth_m.values, pred_m.values, params.tolerance_m)
    metrics: dict[str, float] = {
        "apls": result.apls,
        "apls_truth_to_pred": result.truth_to_pred,
        "apls_pred_to_truth": result.pred_to_truth,
        **lengths,
        "truth_length_m": counts.truth_length,
        "pred_length_m": counts.pred_length,
        "n_paths_truth_to_pred": result.n_paths_truth_to_pred,
        "n_paths_pred_to_truth": result.n_paths_pred_to_truth,
    }
    return PairResult(pair, "network", metrics, length_counts=counts, lines=(truth_m, pred_m))


def _pixel_pair(pair: Pair, params: EvalParams, pred_vec: bool, truth_vec: bool) -> PairResult:
    if pred_vec:  # lines vs a truth raster: the truth's grid is the grid
        grid = io.read_raster(pair.truth)
        truth_mask, truth_valid = grid.values >= 0.5, grid.valid
        prob = _lines_on_grid(pair.pred, grid, params).astype(np.float32)
        valid = truth_valid
    else:
        grid = io.read_raster(pair.pred)
        prob, valid = grid.values, grid.valid
        if truth_vec:
            truth_mask = _lines_on_grid(pair.truth, grid, params)
        else:
            truth = io.align(io.read_raster(pair.truth), grid)
            truth_mask, valid = truth.values >= 0.5, valid & truth.valid
    if pair.ignore is not None:
        valid = valid & ~io.read_ignore(pair.ignore, grid)
    if not valid.any():
        raise InputError(f"{pair.pred} and {pair.truth}: no valid pixel in common "
                         "(nodata / ignore mask cover everything)")
    size = grid.pixel_size_m or params.pixel_size_m
    if size is None:
        log.warning("%s: no georeferencing and no --pixel-size-m; relaxed metrics skipped",
                    pair.pred)
    metrics, counts, relaxed = pixel_metrics(prob, truth_mask, valid, threshold=params.threshold,
                                             pixel_size_m=size, tolerance_m=params.tolerance_m)
    pred_mask = binarize(prob, params.threshold)
    sweep = None
    if params.sweep:
        sweep = sweep_counts(prob, truth_mask, valid, params.n_thresholds)
        t, f1 = best_threshold(sweep_scores(sweep), "f1")
        metrics.update(best_threshold=t, best_f1=f1)
    metrics.update(truth_fraction=float(truth_mask[valid].mean()),
                   pred_fraction=float(pred_mask[valid].mean()),
                   valid_fraction=float(valid.mean()))
    return PairResult(pair, "pixel", metrics, pixel_counts=counts, relaxed_counts=relaxed,
                      sweep=sweep,
                      patch_iou=patch_iou_grid(pred_mask, truth_mask, params.patch_size, valid),
                      masks=(pred_mask, truth_mask, valid))


def _lines_on_grid(path: Path, grid: io.RasterInput, params: EvalParams) -> np.ndarray:
    if grid.crs is None:
        raise InputError(f"{grid.path} has no georeferencing; cannot place the lines of {path} "
                         "on it")
    lines = io.read_lines(path)
    if len(lines):
        west, south, east, north = lines.to_crs(grid.crs).total_bounds
        io.check_overlap((west, south, east, north), grid.bounds, str(path), grid.path)
    return io.rasterize_lines(lines, grid.transform, grid.shape, grid.crs, params.truth_width_m)


def summarize(results: list[PairResult], params: EvalParams) -> dict[str, Any]:
    """Pooled metrics over a set, with plain names (iou, precision, ..., apls, completeness)."""
    out: dict[str, Any] = {"n_pairs": len(results)}
    pixel = [r for r in results if r.kind == "pixel"]
    network = [r for r in results if r.kind == "network"]
    if pixel:
        counts = pixel[0].pixel_counts
        for r in pixel[1:]:
            counts = counts + r.pixel_counts  # type: ignore[operator]
        out.update(scores_from_counts(counts))  # type: ignore[arg-type]
        out["mean_iou"] = float(np.mean([r.metrics["iou"] for r in pixel]))
        relaxed = [r.relaxed_counts for r in pixel if r.relaxed_counts is not None]
        if relaxed:
            pooled = relaxed[0]
            for rc in relaxed[1:]:
                pooled = pooled + rc
            out.update(relaxed_scores(pooled))
        sweeps = [r.sweep for r in pixel if r.sweep is not None]
        if sweeps:
            pooled_sweep = pooled_sweep_counts(sweeps)
            t, f1 = best_threshold(sweep_scores(pooled_sweep), "f1")
            out.update(best_threshold=t, best_f1=f1)
        out["n_pixel_pairs"] = len(pixel)
    if network:
        out["apls"] = float(np.mean([r.metrics["apls"] for r in network]))
        out["apls_truth_to_pred"] = float(np.mean([r.metrics["apls_truth_to_pred"]
                                                   for r in network]))
        out["apls_pred_to_truth"] = float(np.mean([r.metrics["apls_pred_to_truth"]
                                                   for r in network]))
        lengths = network[0].length_counts
        for r in network[1:]:
            lengths = lengths + r.length_counts  # type: ignore[operator]
        out.update(length_scores(lengths))  # type: ignore[arg-type]
        out["truth_length_m"] = lengths.truth_length  # type: ignore[union-attr]
        out["pred_length_m"] = lengths.pred_length  # type: ignore[union-attr]
        out["n_network_pairs"] = len(network)
    return out


def pooled_sweep_counts(sweeps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {"threshold": sweeps[0]["threshold"],
            "tp": np.sum([s["tp"] for s in sweeps], axis=0),
            "fp": np.sum([s["fp"] for s in sweeps], axis=0),
            "fn": np.sum([s["fn"] for s in sweeps], axis=0)}


def read_pairs_csv(path: str | Path) -> list[Pair]:
    """Pairs from a CSV with columns pred, truth and optional image, ignore, name.

    Relative paths are relative to the CSV's folder.
    """
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read pairs CSV ({exc})") from None
    if not rows or not {"pred", "truth"} <= set(rows[0]):
        raise InputError(f"{path}: pairs CSV needs a header with columns 'pred' and 'truth'")
    base = path.parent
    pairs = []
    for i, row in enumerate(rows, start=2):
        if not (row.get("pred") or "").strip() or not (row.get("truth") or "").strip():
            raise InputError(f"{path}: line {i} has an empty 'pred' or 'truth'")
        pred = _resolve(base, row, "pred")
        name = (row.get("name") or "").strip() or pred.stem  # type: ignore[union-attr]
        pairs.append(Pair(pred=pred, truth=_resolve(base, row, "truth"),  # type: ignore[arg-type]
                          name=name, image=_resolve(base, row, "image"),
                          ignore=_resolve(base, row, "ignore")))
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        pairs = [Pair(p.pred, p.truth, f"{i:03d}_{p.name}", p.image, p.ignore)
                 for i, p in enumerate(pairs)]
    return pairs


def _resolve(base: Path, row: dict[str, str], key: str) -> Path | None:
    value = (row.get(key) or "").strip()
    return (base / value) if value else None
