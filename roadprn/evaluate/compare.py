"""Evaluate one prediction/truth pair, or a set, whatever their formats.

raster vs raster -> pixel metrics; vector vs vector -> network metrics (APLS, Wiedemann);
raster vs vector (either way round) -> pixel metrics with the lines buffered to a road width
and rasterised on the raster's grid. A set is pooled: pixel counts and lengths are summed
before the ratios are taken; APLS is the mean over pairs (as in SpaceNet). Line inputs lose
their OpenStreetMap features that are not roads first (:mod:`roadprn.evaluate.roadclass`),
counted per pair and over the set.
"""

from __future__ import annotations

import contextlib
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
    relaxed_scores,
    scores_from_counts,
    sweep_scores,
)
from roadprn.evaluate.roadclass import NON_ROAD_HIGHWAY, Dropped, summarise
from roadprn.evaluate.windowed import (
    MAX_PATCHES,
    WINDOW,
    Layer,
    relaxed_halo,
    windowed_pixel_metrics,
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
    #: ``highway`` values of line features dropped as not roads (empty: keep every feature)
    drop_highway: frozenset[str] = frozenset(NON_ROAD_HIGHWAY)
    window: int = WINDOW  # pixel metrics are computed in windows of this side (not a metric knob)

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "tolerance_m": self.tolerance_m,
                "truth_width_m": self.truth_width_m, "patch_size": self.patch_size,
                "sweep": self.sweep, "n_thresholds": self.n_thresholds,
                "pixel_size_m": list(self.pixel_size_m) if self.pixel_size_m else None,
                "apls_control_spacing_m": self.apls.control_spacing_m,
                "apls_snap_m": self.apls.snap_m, "apls_min_path_m": self.apls.min_path_m,
                "apls_junctions": self.apls.junctions,
                "drop_non_roads": bool(self.drop_highway),
                "non_road_highway": sorted(self.drop_highway)}


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
    #: pred, truth, valid of every stride-th pixel (at most windowed.PLOT_SIDE per side),
    #: bit-packed: a set of many pairs keeps 1 bit per overlay pixel until the plots are drawn
    packed_masks: tuple[np.ndarray, tuple[int, int]] | None = None
    patch_size: int | None = None  # of patch_iou (raised for huge scenes)
    grid_shape: tuple[int, int] | None = None  # (rows, cols) of the full grid

    @property
    def masks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The overlay's (pred, truth, valid) boolean masks."""
        if self.packed_masks is None:
            return None
        bits, shape = self.packed_masks
        flat = np.unpackbits(bits, count=3 * shape[0] * shape[1]).astype(bool)
        pred, truth, valid = flat.reshape(3, *shape)
        return pred, truth, valid
    lines: tuple[gpd.GeoSeries, gpd.GeoSeries] | None = None  # truth, pred (metric CRS)
    #: line features dropped as not roads, per side ("truth", "pred") that was lines
    dropped: dict[str, Dropped] = field(default_factory=dict)


def evaluate_pair(pair: Pair, params: EvalParams) -> PairResult:
    """Metrics of one pair: pixel metrics if either side is a raster, else network metrics."""
    pred_vec, truth_vec = io.is_vector(pair.pred), io.is_vector(pair.truth)
    if pred_vec and truth_vec:
        if pair.ignore is not None:
            log.warning("%s: the ignore mask applies to pixel metrics only", pair.ignore)
        return _network_pair(pair, params)
    return _pixel_pair(pair, params, pred_vec, truth_vec)


def _network_pair(pair: Pair, params: EvalParams) -> PairResult:
    truth, truth_out, truth_values = io.split_non_roads(*io.read_road_lines(pair.truth),
                                                        params.drop_highway)
    pred, pred_out, pred_values = io.split_non_roads(*io.read_road_lines(pair.pred),
                                                     params.drop_highway)
    metric_crs = io.local_utm_crs(truth, pred)
    truth_m = io.to_metric(truth, metric_crs, pair.truth)
    pred_m = io.to_metric(pred, metric_crs, pair.pred)
    dropped = {"truth": summarise(io.to_metric(truth_out, metric_crs, pair.truth).values,
                                  truth_values),
               "pred": summarise(io.to_metric(pred_out, metric_crs, pair.pred).values,
                                 pred_values)}
    for side, d in dropped.items():
        if d.features:
            log.info("%s: %s: %d features (%.0f m) left out as not roads (%s)", pair.name, side,
                     d.features, d.length_m, ", ".join(d.by_value))
    if len(truth_m) and len(pred_m):
        io.check_overlap(tuple(truth_m.total_bounds), tuple(pred_m.total_bounds),
                         str(pair.truth), str(pair.pred))
    junctions = params.apls.junctions
    result = apls_graphs(lines_to_graph(truth_m.values, junctions),
                         lines_to_graph(pred_m.values, junctions), params.apls)
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
    return PairResult(pair, "network", metrics, length_counts=counts, lines=(truth_m, pred_m),
                      dropped=dropped)


def _pixel_pair(pair: Pair, params: EvalParams, pred_vec: bool, truth_vec: bool) -> PairResult:
    """Pixel metrics window by window (memory set by the window, not the scene)."""
    with contextlib.ExitStack() as stack:
        grid_path = pair.truth if pred_vec else pair.pred
        grid_raster = stack.enter_context(
            io.RasterLayer(grid_path, role="truth" if pred_vec else "prediction"))
        grid = grid_raster.grid
        if pair.image is not None:
            io.check_image(pair.image, grid.shape)
        pred: Layer
        truth: Layer
        dropped: dict[str, Dropped] = {}
        if pred_vec:  # lines vs a truth raster: the truth's grid is the grid
            truth = grid_raster
            pred, dropped["pred"] = io.lines_layer(pair.pred, grid, params.truth_width_m,
                                                   params.drop_highway)
        else:
            pred = grid_raster
            if truth_vec:
                truth, dropped["truth"] = io.lines_layer(pair.truth, grid, params.truth_width_m,
                                                         params.drop_highway)
            else:
                truth_raster = stack.enter_context(io.RasterLayer(pair.truth, role="truth"))
                truth = io.align(truth_raster, grid)
        ignore: Layer | None = None
        if pair.ignore is not None and io.is_vector(pair.ignore):
            ignore = io.ignore_shapes(pair.ignore, grid)
        elif pair.ignore is not None:
            ignore_raster = stack.enter_context(io.RasterLayer(pair.ignore, role="ignore"))
            ignore = io.align(ignore_raster, grid)
        size = grid_raster.pixel_size_m or params.pixel_size_m
        if size is None:
            log.warning("%s: no georeferencing and no --pixel-size-m; relaxed metrics skipped",
                        pair.pred)
        halo = relaxed_halo(size, params.tolerance_m, str(grid_path))
        result = windowed_pixel_metrics(
            grid.shape, pred, truth, ignore, threshold=params.threshold, pixel_size_m=size,
            tolerance_m=params.tolerance_m, n_thresholds=params.n_thresholds if params.sweep else 0,
            patch_size=params.patch_size, window=params.window, halo=halo)
    if not result.n_valid:
        raise InputError(f"{pair.pred} and {pair.truth}: no valid pixel in common "
                         "(nodata / ignore mask cover everything)")
    if not pred_vec:
        _warn_all_below(grid_raster, result.max_prob, params.threshold)
    if result.patch_size != params.patch_size:
        log.warning("%s: %d x %d px: the patch IoU map uses %d px patches (at most %d patches)",
                    grid_path, grid.width, grid.height, result.patch_size, MAX_PATCHES)
    counts = result.counts
    metrics = scores_from_counts(counts)
    if result.relaxed is not None:
        metrics.update(relaxed_scores(result.relaxed))
    if result.sweep is not None:
        t, f1 = best_threshold(sweep_scores(result.sweep), "f1")
        metrics.update(best_threshold=t, best_f1=f1)
    metrics.update(truth_fraction=(counts.tp + counts.fn) / result.n_valid,
                   pred_fraction=(counts.tp + counts.fp) / result.n_valid,
                   valid_fraction=result.n_valid / result.n_pixels)
    return PairResult(pair, "pixel", metrics, pixel_counts=counts,
                      relaxed_counts=result.relaxed, sweep=result.sweep,
                      patch_iou=result.patch_iou,
                      packed_masks=(np.packbits(np.stack(result.overlay)), result.overlay[0].shape),
                      patch_size=result.patch_size, grid_shape=grid.shape, dropped=dropped)


def _warn_all_below(raster: io.RasterLayer, max_prob: float, threshold: float) -> None:
    """One line when an integer raster's scaling leaves every pixel below the threshold
    (a 0-5 class raster read as 0-5/255): the metrics would silently score an empty mask."""
    if raster.scale != 1.0 and max_prob < threshold:
        log.warning("%s: all values are below %g after dividing by %g (the %s maximum); is it a "
                    "probability or mask raster?", raster.path, threshold, raster.scale,
                    raster.dtype)


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
    sides = [side for side in ("truth", "pred") if any(side in r.dropped for r in results)]
    if sides:
        out["dropped_features"] = {side: sum((r.dropped[side] for r in results
                                              if side in r.dropped), Dropped()).as_dict()
                                   for side in sides}
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
