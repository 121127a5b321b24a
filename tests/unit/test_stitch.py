import numpy as np
import pytest

from roadprn.infer.stitch import StripStitcher
from roadprn.infer.tiling import TilePlan


def stitch_function(plan: TilePlan, field: np.ndarray, align: int) -> tuple[np.ndarray, list[int]]:
    """Feed tiles that are exact crops of ``field`` (padded); the stitch must reproduce it."""
    h = plan.halo
    pad = plan.tile_size
    padded = np.pad(field, pad, mode="edge")
    out = np.full(field.shape, np.nan, np.float32)
    starts = []
    stitcher = StripStitcher(plan, align=align)
    for tile in plan:
        r, c = int(tile.read.row_off) + pad, int(tile.read.col_off) + pad
        prob = padded[r:r + plan.tile_size, c:c + plan.tile_size]
        valid = np.ones_like(prob, bool)
        for strip in stitcher.add(tile, prob, valid):
            n = strip.prob.shape[0]
            assert np.isnan(out[strip.row_off:strip.row_off + n]).all(), "row written twice"
            out[strip.row_off:strip.row_off + n] = strip.prob
            starts.append(strip.row_off)
            assert strip.valid.all()
    del h
    return out, starts


@pytest.mark.parametrize("shape", [(1, 1), (37, 300), (300, 37), (513, 1000)])
@pytest.mark.parametrize("radius", [0, 8])
def test_stitch_reproduces_field_and_strips_are_aligned(shape, radius):
    rng = np.random.default_rng(1)
    field = rng.random(shape).astype(np.float32)
    plan = TilePlan(shape[1], shape[0], 96, 16, radius)
    out, starts = stitch_function(plan, field, align=64)
    np.testing.assert_allclose(out, field, atol=1e-6)
    assert all(s % 64 == 0 for s in starts)


def test_validity_comes_from_cores():
    plan = TilePlan(50, 50, 32, 4)
    stitcher = StripStitcher(plan, align=16)
    valid_out = np.zeros((50, 50), bool)
    for tile in plan:
        valid = np.ones((32, 32), bool)
        valid[4:8, 4:8] = False  # top-left corner of each core invalid
        for strip in stitcher.add(tile, np.zeros((32, 32), np.float32), valid):
            valid_out[strip.row_off:strip.row_off + strip.valid.shape[0]] = strip.valid
    expected = np.ones((50, 50), bool)
    for start_r in range(0, 50, plan.stride):
        for start_c in range(0, 50, plan.stride):
            expected[start_r:start_r + 4, start_c:start_c + 4] = False
    np.testing.assert_array_equal(valid_out, expected)
