"""Mask cleanup before skeletonising: drop small road blobs, fill small holes.

Tile-safe: a blob or a background region that touches an edge of the window cannot be measured
from this window alone, so it is kept as it is. With a halo wider than small blobs, every tile
then removes exactly what a whole-scene pass would.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)


def _touching_edge(labels: np.ndarray) -> np.ndarray:
    """Labels present on any border of the window."""
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.unique(border[border > 0])


def _small_labels(binary: np.ndarray, structure: np.ndarray | None,
                  max_px: float) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """The components of ``binary`` below ``max_px`` that do not touch the window's border.

    Returned as (bounding box, pixels of the component inside it) so that callers edit only those
    boxes: small components are usually few and tiny, and a whole-window lookup cost as much as
    the labelling itself.
    """
    labels, n = ndimage.label(binary, structure=structure)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())
    small = sizes < max_px
    small[0] = False
    small[_touching_edge(labels)] = False
    found = np.flatnonzero(small)
    if len(found) == 0:
        return []
    boxes = ndimage.find_objects(labels)
    return [(boxes[lab - 1], labels[boxes[lab - 1]] == lab) for lab in found.tolist()]


def clean_mask(road: np.ndarray, min_area_px: float, min_hole_px: float) -> np.ndarray:
    """Road mask without blobs below ``min_area_px`` and with holes below ``min_hole_px`` filled.

    Road is 8-connected (as the skeleton will be), background 4-connected (its dual).
    """
    road = np.asarray(road, dtype=bool)
    if road.size == 0 or not road.any():
        return road.copy()
    out = road.copy()
    if min_area_px > 0:
        for box, pixels in _small_labels(out, EIGHT, min_area_px):
            out[box][pixels] = False
    if min_hole_px > 0:
        for box, pixels in _small_labels(~out, None, min_hole_px):
            out[box][pixels] = True
    return out
