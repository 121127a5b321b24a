"""Road-class filtering of line inputs: OpenStreetMap features that are not roads.

An OpenStreetMap extract holds, besides roads, line features tagged ``highway=`` whose value is
not a road anyone drives or walks along: painted stop lines drawn across a boulevard
(``stopline``), crossings, bus stops, platforms, elevators... Scored as roads they become
dead-end spurs (or, with the crossing junction rule, cut the road they cross) that no truth has,
and every route from them scores 0. Features whose ``highway`` value is in the configured list
(``evaluate.non_road_highway``) are dropped before scoring and reported (how many, how many
metres, by value); files without a ``highway`` attribute are untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from roadprn.config import DEFAULT_NON_ROAD_HIGHWAY

#: ``highway`` values that are not roads: the config's default ``evaluate.non_road_highway``
#: (kept in roadprn.config, which must not import the evaluation stack)
NON_ROAD_HIGHWAY = DEFAULT_NON_ROAD_HIGHWAY

#: the attribute looked at
HIGHWAY = "highway"


@dataclass
class Dropped:
    """Features of one input dropped as not roads: count and metres, in total and by value."""

    features: int = 0
    length_m: float = 0.0
    by_value: dict[str, dict[str, float]] = field(default_factory=dict)

    def __add__(self, other: Dropped) -> Dropped:
        by_value = {k: dict(v) for k, v in self.by_value.items()}
        for key, value in other.by_value.items():
            mine = by_value.setdefault(key, {"features": 0, "length_m": 0.0})
            mine["features"] += value["features"]
            mine["length_m"] += value["length_m"]
        return Dropped(self.features + other.features, self.length_m + other.length_m,
                       dict(sorted(by_value.items())))

    def as_dict(self) -> dict[str, Any]:
        return {"features": self.features, "length_m": self.length_m,
                "by_value": {k: {"features": int(v["features"]), "length_m": v["length_m"]}
                             for k, v in self.by_value.items()}}


def normalise_values(values: Iterable[object]) -> np.ndarray:
    """``highway`` values as stripped lower-case strings ('' for missing)."""
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append("")
        else:
            out.append(str(value).strip().lower())
    return np.asarray(out, dtype=object)


def non_road_mask(values: np.ndarray | None, drop: frozenset[str]) -> np.ndarray | None:
    """True for features to drop (their value is in ``drop``); None when nothing is dropped."""
    if values is None or not drop or not len(values):
        return None
    mask = np.isin(values, list(drop))
    return mask if mask.any() else None


def summarise(metric_geoms: np.ndarray, values: np.ndarray) -> Dropped:
    """:class:`Dropped` of dropped geometries (in a metric CRS) and their ``highway`` values."""
    lengths = shapely.length(np.asarray(metric_geoms, dtype=object)).astype(np.float64)
    by_value: dict[str, dict[str, float]] = {}
    for value in sorted(set(values.tolist())):
        sel = values == value
        by_value[value] = {"features": int(sel.sum()), "length_m": float(lengths[sel].sum())}
    return Dropped(int(values.size), float(lengths.sum()), by_value)
