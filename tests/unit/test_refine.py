"""Fusion rules and windowed PRN inference over maps larger than one window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from roadprn.config import RefineConfig
from roadprn.prn.network import PatchRefineNet
from roadprn.prn.options import TrainPRNOptions
from roadprn.prn.refine import DEFAULT_FUSION, default_halo, fuse, prn_probabilities, refine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = {"width": 0.25, "recurrence": 1}


def test_paper_fusion_adds_a_rim_where_both_agree() -> None:
    g = np.zeros((7, 7))
    g[1:6, 1:6] = 0.9
    loc = np.zeros((7, 7))
    loc[3, 3] = 0.8  # inside G: its 3×3 dilation is already in G
    loc[0, 0] = 0.9  # outside G: ignored
    np.testing.assert_array_equal(fuse(g, loc, "paper"), g > 0.5)
    g2 = np.zeros((7, 7))
    g2[3, 3] = 0.7
    loc2 = np.zeros((7, 7))
    loc2[3, 3] = 0.6
    expected = np.zeros((7, 7), bool)
    expected[2:5, 2:5] = True
    np.testing.assert_array_equal(fuse(g2, loc2, "paper"), expected)
    np.testing.assert_array_equal(fuse(g2[None], loc2[None], "paper")[0], expected)  # batched
    # strict threshold
    assert not fuse(np.full((3, 3), 0.5), np.full((3, 3), 0.9), "paper").any()


def test_other_rules() -> None:
    rng = np.random.default_rng(0)
    g, loc = rng.random((2, 16, 16))
    np.testing.assert_array_equal(fuse(g, loc, "global"), g > 0.5)
    np.testing.assert_array_equal(fuse(g, loc, "local"), loc > 0.5)
    np.testing.assert_array_equal(fuse(g, loc, "mean"), (g + loc) / 2 > 0.5)
    paper = fuse(g, loc, "paper")
    assert np.all(paper >= (g > 0.5))
    np.testing.assert_array_equal(fuse(g, None, "paper"), g > 0.5)
    with pytest.raises(ValueError, match="local branch"):
        fuse(g, None, "mean")
    with pytest.raises(ValueError, match="fusion rule"):
        fuse(g, loc, "max")
    # one default everywhere: the config's refine.fusion, fuse/refine and PRN training
    assert DEFAULT_FUSION == "global" == RefineConfig().fusion == TrainPRNOptions().fusion
    np.testing.assert_array_equal(fuse(g, loc), g > 0.5)


def test_single_window_equals_forward() -> None:
    torch.manual_seed(0)
    model = PatchRefineNet("paper", grid=2, map_size=64, **TINY).eval()
    prob = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    g, loc = prn_probabilities(model, prob, halo=0)
    with torch.inference_mode():
        out = model(torch.from_numpy(prob)[None, None])
    np.testing.assert_allclose(g, out.global_map[0, 0].numpy(), atol=1e-6)
    assert loc is not None
    np.testing.assert_allclose(loc, out.local_map[0, 0].numpy(), atol=1e-6)


@pytest.mark.parametrize("shape", [(150, 100), (40, 30)])
def test_windows_equal_manual_windows(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = PatchRefineNet("paper", grid=4, map_size=64, **TINY).eval()
    prob = np.random.default_rng(2).random(shape).astype(np.float32)
    halo = default_halo(model)
    assert halo == 8 and (64 - 2 * halo) % 16 == 0  # window grids line up
    g, loc = prn_probabilities(model, prob, halo=halo, batch_size=3)
    assert g.shape == shape and loc is not None and loc.shape == shape
    core = 64 - 2 * halo
    padded = np.zeros((shape[0] + 128, shape[1] + 128), np.float32)
    padded[halo : halo + shape[0], halo : halo + shape[1]] = prob
    for r in range(0, shape[0], core):
        for c in range(0, shape[1], core):
            with torch.inference_mode():
                out = model(torch.from_numpy(padded[r : r + 64, c : c + 64])[None, None])
            want = out.global_map[0, 0, halo : halo + core, halo : halo + core].numpy()
            got = g[r : r + core, c : c + core]
            np.testing.assert_allclose(got, want[: got.shape[0], : got.shape[1]], atol=1e-5)
    # batching does not change results
    g1, _ = prn_probabilities(model, prob, halo=halo, batch_size=1)
    np.testing.assert_allclose(g, g1, atol=1e-5)


def test_identity_model_shows_no_seams() -> None:
    # the fast head starts at Y = P, so any windowing error would show up as a difference
    model = PatchRefineNet("fast", grid=2, map_size=128, **TINY)
    prob = np.random.default_rng(3).random((300, 260)).astype(np.float32)
    g, loc = prn_probabilities(model, prob)
    np.testing.assert_allclose(g, prob, atol=1e-5)
    assert loc is not None
    np.testing.assert_allclose(loc, prob, atol=1e-5)
    u8 = (prob * 255).astype(np.uint8)
    base = u8 / 255 > 0.5
    np.testing.assert_array_equal(refine(model, u8, rule="global"), base)
    # G = L here, so the paper rule is G dilated by one pixel
    np.testing.assert_array_equal(refine(model, u8, rule="paper"),
                                  fuse(base, base.astype(float), "paper"))
    np.testing.assert_array_equal(refine(model, u8), base)  # the default rule is global


def test_bad_arguments() -> None:
    model = PatchRefineNet("paper", grid=0, map_size=32, **TINY)
    with pytest.raises(ValueError, match="no core"):
        prn_probabilities(model, np.zeros((40, 40), np.float32), halo=16)
    with pytest.raises(ValueError, match="shape"):
        prn_probabilities(model, np.zeros((1, 40, 40), np.float32))
    g, loc = prn_probabilities(model, np.zeros((40, 40), np.float32))
    assert loc is None and g.shape == (40, 40)
