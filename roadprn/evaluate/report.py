"""Reports of an evaluation: metrics.json for machines, Markdown for people, PNG figures.

Figures are drawn on matplotlib ``Figure`` objects (Agg canvas, no pyplot state), so this
works headless and inside workers. Every file goes through ``atomic_output``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from roadprn.evaluate.compare import EvalParams, PairResult, pooled_sweep_counts
from roadprn.evaluate.pixel import sweep_scores
from roadprn.outputs.atomic import atomic_output

#: metrics shown in tables, in this order (others stay in the JSON)
TABLE_METRICS = ("iou", "mean_iou", "precision", "recall", "f1", "relaxed_precision",
                 "relaxed_recall", "relaxed_f1", "best_threshold", "best_f1", "apls",
                 "apls_truth_to_pred", "apls_pred_to_truth", "completeness", "correctness",
                 "quality")
_MAX_PLOT_SIDE = 2048
TP_RGB, FP_RGB, FN_RGB = (0, 200, 0), (230, 0, 0), (0, 120, 255)


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_document(summary: dict[str, Any], results: list[PairResult],
                     params: EvalParams) -> dict[str, Any]:
    """The metrics.json content: pooled metrics at the top level under plain names."""
    doc: dict[str, Any] = dict(summary)
    doc["params"] = params.as_dict()
    doc["pairs"] = [{"name": r.pair.name, "pred": str(r.pair.pred), "truth": str(r.pair.truth),
                     "kind": r.kind, **r.metrics,
                     **({"dropped_features": {side: d.as_dict() for side, d in r.dropped.items()}}
                        if r.dropped else {})} for r in results]
    sweeps = [r.sweep for r in results if r.sweep is not None]
    if sweeps:
        doc["pr_curve"] = sweep_scores(pooled_sweep_counts(sweeps))
    return _clean(doc)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(summary: dict[str, Any], results: list[PairResult]) -> str:
    """Pooled metrics as a two-column table, then one row per pair when there are several."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(summary[k])} |" for k in TABLE_METRICS if k in summary]
    if len(results) > 1:
        cols = [k for k in TABLE_METRICS if any(k in r.metrics for r in results)]
        lines += ["", "| pair | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for r in results:
            lines.append(f"| {r.pair.name} | "
                         + " | ".join(_fmt(r.metrics.get(k)) for k in cols) + " |")
    return "\n".join(lines)


def markdown_report(summary: dict[str, Any], results: list[PairResult], params: EvalParams,
                    figures: list[str]) -> str:
    parts = ["# roadprn evaluation", "",
             f"{len(results)} pair(s). Pooled over the set: pixel counts and lengths are summed "
             "before taking ratios; APLS is the mean over pairs. Definitions: docs/metrics.md.",
             "", markdown_table(summary, results), "", "## Parameters", "",
             "| parameter | value |", "|---|---|"]
    parts += [f"| {k} | {_fmt(', '.join(v) if isinstance(v, list) else v)} |"
              for k, v in params.as_dict().items()]
    parts += dropped_section(results)
    parts += ["", "## Inputs", ""]
    parts += [f"- `{r.pair.name}`: prediction `{r.pair.pred}`, truth `{r.pair.truth}` "
              f"({r.kind} metrics)" for r in results]
    if figures:
        parts += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(parts) + "\n"


def dropped_section(results: list[PairResult]) -> list[str]:
    """Markdown lines: the line features left out as not roads, per pair and side."""
    rows = []
    for r in results:
        for side, d in r.dropped.items():
            if d.features:
                values = ", ".join(f"{k} {int(v['features'])} ({v['length_m']:.0f} m)"
                                   for k, v in d.by_value.items())
                rows.append(f"| {r.pair.name} | {side} | {d.features} | {d.length_m:.1f} | "
                            f"{values} |")
    if not rows:
        return []
    return ["", "## Features dropped as not roads", "",
            "OpenStreetMap `highway` values in `non_road_highway` (`--keep-all-features` keeps "
            "them).", "", "| pair | input | features | metres | by value |",
            "|---|---|---|---|---|", *rows]


def write_text(path: Path, text: str, overwrite: bool) -> None:
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, doc: dict[str, Any], overwrite: bool) -> None:
    write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n", overwrite)


def _save(fig: Figure, path: Path, overwrite: bool) -> None:
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _stride(shape: tuple[int, ...]) -> int:
    return max(1, math.ceil(max(shape[:2]) / _MAX_PLOT_SIDE))


def overlay_rgb(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray,
                image_rgb: np.ndarray | None = None) -> np.ndarray:
    """TP green, FP red, FN blue on the image (dimmed) or on grey; invalid pixels dark."""
    if image_rgb is None:
        base = np.full(pred.shape + (3,), 128, dtype=np.uint8)
    else:
        base = (image_rgb.astype(np.float32) * 0.6).astype(np.uint8)
    out = base.copy()
    out[pred & truth & valid] = TP_RGB
    out[pred & ~truth & valid] = FP_RGB
    out[~pred & truth & valid] = FN_RGB
    out[~valid] = (base[~valid] * 0.3).astype(np.uint8)
    return out


def plot_overlay(result: PairResult, path: Path, overwrite: bool,
                 image_rgb: np.ndarray | None = None) -> None:
    pred, truth, valid = result.masks  # type: ignore[misc]
    s = _stride(pred.shape)
    rgb = overlay_rgb(pred[::s, ::s], truth[::s, ::s], valid[::s, ::s],
                      None if image_rgb is None else image_rgb[::s, ::s])
    fig = Figure(figsize=(8, 8 * rgb.shape[0] / rgb.shape[1] + 0.6))
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{result.pair.name}: IoU {result.metrics['iou']:.3f}")
    ax.legend(handles=[Patch(color="#{:02x}{:02x}{:02x}".format(*c), label=n) for c, n in
                       ((TP_RGB, "true positive"), (FP_RGB, "false positive"),
                        (FN_RGB, "false negative"))],
              loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=3, frameon=False)
    _save(fig, path, overwrite)


def plot_patch_iou(result: PairResult, path: Path, overwrite: bool, patch_size: int) -> None:
    grid = result.patch_iou
    if grid is None:
        raise ValueError(f"{result.pair.name}: no per-patch IoU to plot (not a pixel result)")
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label="IoU")
    ax.set_title(f"{result.pair.name}: IoU per {patch_size}x{patch_size} px patch "
                 "(blank: no road)")
    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    _save(fig, path, overwrite)


def plot_pr_curve(results: list[PairResult], path: Path, overwrite: bool) -> None:
    scores = sweep_scores(pooled_sweep_counts([r.sweep for r in results if r.sweep]))
    best = int(np.argmax(scores["f1"]))
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.plot(scores["recall"], scores["precision"], "-", color="C0")
    ax.plot(scores["recall"][best], scores["precision"][best], "o", color="C3",
            label=f"best F1 {scores['f1'][best]:.3f} at t={scores['threshold'][best]:.2f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title("Precision-recall over thresholds (pooled)")
    _save(fig, path, overwrite)


def plot_network(result: PairResult, path: Path, overwrite: bool) -> None:
    """Truth (thick grey) under prediction (magenta) in the local metric CRS."""
    truth, pred = result.lines  # type: ignore[misc]
    fig = Figure(figsize=(7, 7))
    ax = fig.add_subplot()
    if len(truth):
        truth.plot(ax=ax, color="0.6", linewidth=4, label="truth")
    if len(pred):
        pred.plot(ax=ax, color="magenta", linewidth=1.5, label="prediction")
    ax.set_aspect("equal")
    ax.set_title(f"{result.pair.name}: APLS {result.metrics['apls']:.3f}, completeness "
                 f"{result.metrics['completeness']:.3f}, correctness "
                 f"{result.metrics['correctness']:.3f}")
    ax.legend(loc="best")
    ax.set_xlabel("easting (m)")
    ax.set_ylabel("northing (m)")
    _save(fig, path, overwrite)
