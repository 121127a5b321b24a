"""The one rule that turns a probability into road / no road.

A pixel is road when its probability is *above* the threshold (``prob > threshold``): the base
mask, its resampling back to the scene grid, PRN's fusion, the vectoriser and evaluation all
decide through :func:`is_road`, so a mask written by ``extract`` and a probability raster scored
by ``evaluate`` at the same threshold agree pixel for pixel (a pixel exactly at the threshold
is background everywhere).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_road(prob: Any, threshold: float) -> Any:
    """``prob > threshold`` elementwise (numpy arrays, or anything with ``>``, e.g. tensors)."""
    return prob > threshold


def counts_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many ``values`` are road (:func:`is_road`) at each of the ascending ``thresholds``.

    One pass for every threshold: ``searchsorted`` gives each value the number of thresholds
    strictly below it, and a suffix sum of those counts is the count above each threshold.
    """
    below = np.searchsorted(thresholds, np.asarray(values, dtype=np.float64).ravel(), side="left")
    per = np.bincount(below, minlength=thresholds.size + 1)
    return np.cumsum(per[::-1])[::-1][1:].astype(np.int64)
