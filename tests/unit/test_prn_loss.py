"""PRN loss: formula, argument order, numerical safety."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from roadprn.prn.loss import (
    binary_cross_entropy,
    edge_map,
    focal_loss,
    patch_loss,
    prn_loss,
    truth_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bce_matches_torch_in_the_interior() -> None:
    torch.manual_seed(0)
    pred = torch.rand(2, 1, 16, 16) * 0.98 + 0.01
    target = (torch.rand(2, 1, 16, 16) < 0.3).float()
    weight = 1 + 0.12 * target
    want = F.binary_cross_entropy(pred, target, weight=weight)
    torch.testing.assert_close(truth_loss(pred, target), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        binary_cross_entropy(pred, target),
        F.binary_cross_entropy(pred, target),
        rtol=1e-4,
        atol=1e-5,
    )


def test_focal_values() -> None:
    # p = 0.5 on a road: 0.25 · 0.5² · −log 0.5; on background: 0.75 · 0.5² · −log 0.5
    half = torch.full((1, 1, 1, 2), 0.5)
    target = torch.tensor([[[[1.0, 0.0]]]])
    want = (0.25 * 0.25 * math.log(2) + 0.75 * 0.25 * math.log(2)) / 2
    assert focal_loss(half, target).item() == pytest.approx(want, rel=1e-4)
    # confident and right costs far less than confident and wrong
    assert focal_loss(torch.full((1, 1, 2, 2), 0.95), torch.ones(1, 1, 2, 2)) < 1e-3
    assert focal_loss(torch.full((1, 1, 2, 2), 0.05), torch.ones(1, 1, 2, 2)) > 0.5


def test_edge_map_marks_inner_rim() -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    edge = edge_map(mask)
    assert torch.all(edge[..., 3:5, 3:5] == 0)  # interior
    assert torch.all(edge[mask == 0] == 0)  # outside
    assert torch.all(edge[..., 2, 2:6] > 0.99) and torch.all(edge[..., 2:6, 5] > 0.99)
    assert torch.all((edge >= 0) & (edge < 1))


def test_total_loss_composition_and_order() -> None:
    torch.manual_seed(1)
    g, loc = torch.rand(2, 1, 1, 16, 16)
    pseudo = (torch.rand(1, 1, 16, 16) < 0.4).float()
    truth = (torch.rand(1, 1, 16, 16) < 0.4).float()
    want = (
        0.7 * (patch_loss(g, pseudo) + patch_loss(loc, pseudo)) / 2
        + 0.3 * (truth_loss(g, truth) + truth_loss(loc, truth)) / 2
    )
    torch.testing.assert_close(prn_loss((g, loc), pseudo, truth), want)
    torch.testing.assert_close(prn_loss((g, None), pseudo, truth), prn_loss(g, pseudo, truth))
    edge = 0.3 * binary_cross_entropy(edge_map(g), edge_map(pseudo))
    torch.testing.assert_close(patch_loss(g, pseudo), 0.7 * focal_loss(g, pseudo) + edge)
    # (prediction, target): a soft prediction against a hard target, not the other way round
    assert prn_loss(pseudo, pseudo, pseudo) < prn_loss(1 - pseudo, pseudo, pseudo)
    with pytest.raises(ValueError):
        prn_loss([None], pseudo, truth)


def _maps() -> dict[str, torch.Tensor]:
    mixed = (torch.arange(64).reshape(1, 1, 8, 8) % 3 == 0).float()
    return {"zeros": torch.zeros(1, 1, 8, 8), "ones": torch.ones(1, 1, 8, 8), "mixed": mixed}


@pytest.mark.parametrize(("pred_name", "target_name"), list(itertools.product(_maps(), _maps())))
def test_gradients_finite_at_extremes(pred_name: str, target_name: str) -> None:
    maps = _maps()
    pred_g = maps[pred_name].clone().requires_grad_(True)
    pred_l = (1 - maps[pred_name]).clone().requires_grad_(True)
    target = maps[target_name]
    loss = prn_loss((pred_g, pred_l), target, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred_g.grad).all() and torch.isfinite(pred_l.grad).all()
    # a wrong saturated prediction still gets pushed towards the target
    wrong = (pred_g.detach() - target).abs() == 1
    if wrong.any():
        assert torch.all(
            torch.sign(pred_g.grad[wrong]) == torch.sign(pred_g.detach() - target)[wrong]
        )


def test_gradients_finite_through_saturated_sigmoid() -> None:
    logits = torch.tensor([-200.0, -30.0, 0.0, 30.0, 200.0]).view(1, 1, 1, 5).requires_grad_(True)
    target = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 5)
    prn_loss(torch.sigmoid(logits), target, target).backward()
    assert torch.isfinite(logits.grad).all()
