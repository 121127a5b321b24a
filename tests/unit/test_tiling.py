import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roadprn.infer.tiling import TilePlan, rising_ramp


def coverage(plan: TilePlan) -> np.ndarray:
    count = np.zeros((plan.height, plan.width), np.int32)
    for tile in plan:
        c = tile.core
        rows = slice(int(c.row_off), int(c.row_off + c.height))
        count[rows, int(c.col_off):int(c.col_off + c.width)] += 1
    return count


def weight_sum(plan: TilePlan) -> np.ndarray:
    """Sum of blending weights of all tiles, on the scene grid."""
    h = plan.halo
    total = np.zeros((plan.height + 2 * plan.tile_size, plan.width + 2 * plan.tile_size))
    for tile in plan:
        r0 = int(tile.read.row_off) + plan.tile_size
        c0 = int(tile.read.col_off) + plan.tile_size
        total[r0:r0 + plan.tile_size, c0:c0 + plan.tile_size] += plan.weights(tile)
    del h
    t = plan.tile_size
    return total[t:t + plan.height, t:t + plan.width]


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 700),
    height=st.integers(1, 700),
    tile=st.integers(32, 256),
    halo_frac=st.floats(0.0, 0.45),
)
def test_cores_cover_every_pixel_exactly_once(width, height, tile, halo_frac):
    halo = int(tile * halo_frac)
    plan = TilePlan(width, height, tile, halo)
    assert (coverage(plan) == 1).all()
    for t in plan:  # every tile has the model's full input shape
        assert (t.read.width, t.read.height) == (tile, tile)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 600),
    height=st.integers(1, 600),
    tile=st.integers(32, 200),
    halo_frac=st.floats(0.0, 0.3),
    radius_frac=st.floats(0.0, 1.0),
)
def test_blend_weights_sum_to_one(width, height, tile, halo_frac, radius_frac):
    halo = int(tile * halo_frac)
    radius = min(int(halo * radius_frac), (tile - 2 * halo) // 2)
    plan = TilePlan(width, height, tile, halo, radius)
    np.testing.assert_allclose(weight_sum(plan), 1.0, atol=1e-6)


def test_weights_zero_near_tile_edges_inside_scene():
    plan = TilePlan(1000, 1000, 128, 32, 16)
    w = plan.weights(plan.tile(1, 1))
    # pixels closer than halo - radius = 16 px to the tile edge never contribute
    assert (w[:16] == 0).all() and (w[:, :16] == 0).all()
    assert (w[-16:] == 0).all() and (w[:, -16:] == 0).all()
    assert (w[48:80, 48:80] == 1).all()


def test_contribution_range_matches_nonzero_weights():
    plan = TilePlan(500, 300, 128, 32, 16)
    for tile in plan:
        w = plan.weights(tile)
        rows = np.nonzero(w.any(axis=1))[0] + int(tile.read.row_off)
        r0, r1 = plan.contribution_rows(tile.row)
        inside = rows[(rows >= 0) & (rows < plan.height)]
        assert inside.min() == r0 and inside.max() == r1 - 1


def test_halo_fraction_and_counts():
    plan = TilePlan(1000, 500, 256, 32)
    assert plan.stride == 192
    assert (plan.n_rows, plan.n_cols) == (3, 6)
    assert plan.halo_fraction == pytest.approx(1 - 1000 * 500 / (18 * 256 * 256))


@pytest.mark.parametrize("kw", [dict(tile_size=64, halo=32), dict(tile_size=64, halo=-1),
                                dict(tile_size=64, halo=8, blend_radius=9)])
def test_invalid_plans(kw):
    with pytest.raises(ValueError):
        TilePlan(100, 100, **kw)


def test_ramp_is_complementary():
    t = np.linspace(-5, 5, 101)
    np.testing.assert_allclose(rising_ramp(t, 3) + rising_ramp(-t, 3), 1.0)
    assert rising_ramp(np.array([-3.0, 3.0]), 3).tolist() == [0.0, 1.0]
