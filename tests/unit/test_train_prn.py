"""PRN training loop: the loss falls, runs are reproducible, resume continues exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from roadprn.prn.network import prn_arch, prn_arch_kwargs
from roadprn.prn.train import (
    PRNTrainSettings,
    _dihedral,
    best_model,
    pooled_iou,
    train_prn,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


ARCH = prn_arch_kwargs(prn_arch("paper", grid=2, map_size=32, width=0.25, recurrence=1))


def biased_maps(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Road grid truth; probabilities too low on the left half, too high on the right."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), bool)
    for i in range(n):
        truth[i, rng.integers(2, size - 4) :][:3] = True
        truth[i, :, rng.integers(2, size - 4) :][:, :3] = True
    bias = np.where(np.arange(size) < size // 2, -0.25, 0.25)[None, None, :]
    prob = np.clip(0.2 + 0.5 * truth + bias + 0.1 * rng.standard_normal(truth.shape), 0, 1)
    return prob.astype(np.float32), truth


def test_dihedral_covers_eight_distinct_transforms() -> None:
    x = np.arange(16).reshape(4, 4)
    outs = {_dihedral(x, k).tobytes() for k in range(8)}
    assert len(outs) == 8


def test_training_lowers_loss_and_selects_on_validation() -> None:
    prob, truth = biased_maps(6, 32, 0)
    val_prob, val_truth = biased_maps(3, 32, 1)
    settings = PRNTrainSettings(epochs=6, learning_rate=3e-3, batch_size=2, seed=0)
    seen = []
    state = train_prn(ARCH, prob, truth, val_prob, val_truth, settings, on_epoch_end=seen.append)
    losses = [h["train_loss"] for h in state.history]
    assert len(losses) == 6 and len(seen) == 6
    assert losses[-1] < losses[0]
    assert all(np.isfinite(losses))
    scores = [h["val_iou"] for h in state.history]
    assert state.best_epoch == int(np.argmax(scores)) + 1
    assert state.best_score == max(scores)
    model = best_model(state)
    assert not model.training and model.arch_kwargs == ARCH


def test_deterministic_and_resume_is_exact() -> None:
    prob, truth = biased_maps(4, 32, 2)
    settings = PRNTrainSettings(epochs=2, batch_size=2, seed=3)
    full = train_prn(ARCH, prob, truth, settings=settings)
    again = train_prn(ARCH, prob, truth, settings=settings)
    half = train_prn(ARCH, prob, truth, settings=PRNTrainSettings(epochs=1, batch_size=2, seed=3))
    resumed = train_prn(ARCH, prob, truth, settings=settings, resume=half)
    for other in (again, resumed):
        assert other.epoch == 2
        for name, tensor in full.model_state.items():
            torch.testing.assert_close(other.model_state[name], tensor, rtol=0, atol=0)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]


def test_pooled_iou_and_bad_shapes() -> None:
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    assert pooled_iou(a, b) == pytest.approx(1 / 3)
    assert pooled_iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    with pytest.raises(ValueError, match="training maps"):
        train_prn(ARCH, np.zeros((2, 16, 16), np.float32), np.zeros((2, 16, 16), bool))
