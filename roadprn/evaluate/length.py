"""Length-based completeness, correctness and quality (Wiedemann et al. 1998).

With a buffer of ``tolerance_m`` around each network:

* completeness = length of truth inside the prediction's buffer / truth length
* correctness  = length of prediction inside the truth's buffer / prediction length
* quality      = matched prediction length / (prediction length + unmatched truth length)

Lines must be in a metric CRS. Empty networks follow the pixel rule: a ratio with an empty
denominator is 1.0 when both networks are empty and 0.0 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from roadprn.evaluate.graph import explode_lines
from roadprn.evaluate.pixel import safe_ratio


@dataclass(frozen=True)
class LengthCounts:
    """Lengths in metres; sums over chips give pooled metrics."""

    truth_length: float
    truth_matched: float
    pred_length: float
    pred_matched: float

    def __add__(self, other: LengthCounts) -> LengthCounts:
        return LengthCounts(self.truth_length + other.truth_length,
                            self.truth_matched + other.truth_matched,
                            self.pred_length + other.pred_length,
                            self.pred_matched + other.pred_matched)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def length_counts(truth_lines: Iterable[BaseGeometry | None],
                  pred_lines: Iterable[BaseGeometry | None], tolerance_m: float) -> LengthCounts:
    """Total and matched lengths of both networks."""
    truth = explode_lines(truth_lines)
    pred = explode_lines(pred_lines)
    return LengthCounts(
        truth_length=float(shapely.length(truth).sum()),
        truth_matched=_length_inside(truth, pred, tolerance_m),
        pred_length=float(shapely.length(pred).sum()),
        pred_matched=_length_inside(pred, truth, tolerance_m),
    )


def _length_inside(lines: np.ndarray, other: np.ndarray, tolerance_m: float) -> float:
    """Length of ``lines`` within tolerance_m of ``other``, counting overlaps in ``lines`` once
    per line (a line drawn twice counts twice, as it does in the total length)."""
    if lines.size == 0 or other.size == 0:
        return 0.0
    zone = shapely.union_all(shapely.buffer(other, tolerance_m, quad_segs=8))
    shapely.prepare(zone)
    return float(shapely.length(shapely.intersection(lines, zone)).sum())


def length_scores(c: LengthCounts) -> dict[str, float]:
    """Completeness, correctness and quality of (pooled) lengths."""
    both_empty = c.truth_length == 0 and c.pred_length == 0
    unmatched_truth = max(c.truth_length - c.truth_matched, 0.0)
    return {
        "completeness": min(1.0, safe_ratio(c.truth_matched, c.truth_length, both_empty)),
        "correctness": min(1.0, safe_ratio(c.pred_matched, c.pred_length, both_empty)),
        "quality": min(1.0, safe_ratio(c.pred_matched, c.pred_length + unmatched_truth,
                                       both_empty)),
    }


def length_metrics(truth_lines: Iterable[BaseGeometry | None],
                   pred_lines: Iterable[BaseGeometry | None],
                   tolerance_m: float) -> tuple[dict[str, float], LengthCounts]:
    counts = length_counts(truth_lines, pred_lines, tolerance_m)
    return length_scores(counts), counts
