"""The probability-level merge's pure pieces: feathering weights, blending, the grid."""

from __future__ import annotations

import numpy as np
import pytest

from roadprn.batch.merge_probability import (
    blend,
    feather_weight,
    mosaic_grid,
    to_uint8,
    windows,
)


def test_feather_weight_is_the_distance_to_the_border_capped():
    valid = np.zeros((1, 12), dtype=bool)
    valid[0, 1:11] = True
    w = feather_weight(np.repeat(valid, 3, axis=0), cap_px=3)[1]
    assert w.tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 3, 2, 1, 0]


def test_feather_weight_of_all_valid_and_all_invalid():
    assert (feather_weight(np.ones((4, 4), bool), 7) == 7).all()
    assert (feather_weight(np.zeros((4, 4), bool), 7) == 0).all()


def test_blend_ramps_across_an_overlap_and_leaves_nodata_where_no_scene():
    """Two scenes overlapping on 4 columns: the blend follows each outside the overlap and
    moves from one to the other inside it, weighted by the distance to each one's border."""
    a = np.full((1, 10), np.nan, np.float32)
    b = np.full((1, 10), np.nan, np.float32)
    a[0, :6], b[0, 2:9] = 1.0, 0.0
    wa = feather_weight(~np.isnan(np.repeat(a, 3, 0)), 8)[1:2]
    wb = feather_weight(~np.isnan(np.repeat(b, 3, 0)), 8)[1:2]
    out = blend([a, b], [wa, wb])[0]
    assert out[:2].tolist() == [1, 1] and out[6:9].tolist() == [0, 0, 0]
    assert np.isnan(out[9])
    ramp = out[2:6]
    assert (np.diff(ramp) < 0).all() and 0 < ramp.min() and ramp.max() < 1


def test_blend_of_equal_probabilities_is_that_probability():
    p = np.full((3, 3), 0.7, np.float32)
    out = blend([p, p.copy()], [np.ones((3, 3), np.float32), np.full((3, 3), 5, np.float32)])
    assert np.allclose(out, 0.7)
    with pytest.raises(ValueError):
        blend([], [])


def test_to_uint8_keeps_nodata_in_the_mask():
    values, valid = to_uint8(np.array([[0.0, 0.5, 1.0, np.nan]], np.float32))
    assert values.tolist() == [[0, 128, 255, 0]] and valid.tolist() == [[255, 255, 255, 0]]


def test_mosaic_grid_lies_on_the_anchor_lattice_and_covers_the_bounds():
    grid = mosaic_grid((10.2, 20.0, 30.0, 40.7), 0.5, "EPSG:32631", anchor=(0.0, 100.0))
    assert (grid.x0, grid.y0) == (10.0, 41.0)
    assert grid.x0 + grid.width * grid.res >= 30.0 and grid.y0 - grid.height * grid.res <= 20.0
    assert grid.bounds(0, 0, 2, 2) == (10.0, 40.0, 11.0, 41.0)
    tiles = windows(grid, 16)
    assert sum(h * w for _, _, h, w in tiles) == grid.width * grid.height
