"""PRN training loop: the loss falls, runs are reproducible, resume continues exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from roadprn.models.checkpoint import load_checkpoint
from roadprn.prn.data import PRNMaps, dihedral
from roadprn.prn.options import TrainPRNOptions
from roadprn.prn.train import fit_prn, pooled_iou
from roadprn.train.loop import load_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the paper variant at a tiny width: 32 px maps, P4
TINY = {"variant": "paper", "grid": 2, "map_size": 32,
        "arch_kwargs": {"width": 0.25, "recurrence": 1}}
SHA = "ab" * 32


def biased_maps(n: int, size: int, seed: int) -> PRNMaps:
    """Road grid truth; probabilities too low on the left half, too high on the right."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), bool)
    for i in range(n):
        truth[i, rng.integers(2, size - 4) :][:3] = True
        truth[i, :, rng.integers(2, size - 4) :][:, :3] = True
    bias = np.where(np.arange(size) < size // 2, -0.25, 0.25)[None, None, :]
    prob = np.clip(0.2 + 0.5 * truth + bias + 0.1 * rng.standard_normal(truth.shape), 0, 1)
    return PRNMaps(prob.astype(np.float32), truth)


def options(**values) -> TrainPRNOptions:
    return TrainPRNOptions(**{**TINY, "device": "cpu", **values})


def test_dihedral_covers_eight_distinct_transforms() -> None:
    x = np.arange(16).reshape(4, 4)
    outs = {dihedral(x, k).tobytes() for k in range(8)}
    assert len(outs) == 8


def test_training_lowers_loss_and_selects_on_validation(tmp_path) -> None:
    seen = []
    result = fit_prn(biased_maps(6, 32, 0), biased_maps(3, 32, 1),
                     options(epochs=6, lr=3e-3, batch_size=2), tmp_path / "prn.pt",
                     base_model_sha256=SHA, on_epoch_end=seen.append)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 6 and len(seen) == 6
    assert losses[-1] < losses[0]
    assert all(np.isfinite(losses))
    scores = [h["val_iou"] for h in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert result.best_metrics["val_iou"] == max(scores)
    checkpoint = load_checkpoint(tmp_path / "prn.pt")
    assert checkpoint.sha256 == result.checkpoint_sha256
    assert checkpoint.meta.metrics["best_epoch"] == result.best_epoch
    model = checkpoint.build_model()
    assert model.arch.grid == 2 and model.arch.map_size == 32


def _assert_same_run(a_dir, b_dir) -> None:
    """Bit-identical weights, optimiser state and per-epoch losses/scores."""
    a, b = load_state(a_dir / "prn.state.pt", "prn"), load_state(b_dir / "prn.state.pt", "prn")
    assert a["epoch"] == b["epoch"]
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=0)
    for key, slot in a["optimizer"]["state"].items():
        for name, value in slot.items():
            torch.testing.assert_close(b["optimizer"]["state"][key][name], value, rtol=0, atol=0)
    drop = ("seconds", "maps_per_s")
    assert ([{k: v for k, v in h.items() if k not in drop} for h in a["history"]]
            == [{k: v for k, v in h.items() if k not in drop} for h in b["history"]])
    assert a["best"]["epoch"] == b["best"]["epoch"]
    assert load_checkpoint(a_dir / "prn.pt").meta.arch_kwargs == \
        load_checkpoint(b_dir / "prn.pt").meta.arch_kwargs


def test_deterministic_and_resume_is_exact(tmp_path) -> None:
    train, val = biased_maps(4, 32, 2), biased_maps(2, 32, 3)
    full, again, half = (tmp_path / name for name in ("full", "again", "half"))
    for folder in (full, again, half):
        folder.mkdir()
    fit_prn(train, val, options(epochs=3, batch_size=2, seed=3), full / "prn.pt",
            base_model_sha256=SHA)
    fit_prn(train, val, options(epochs=3, batch_size=2, seed=3), again / "prn.pt",
            base_model_sha256=SHA)
    _assert_same_run(full, again)
    # stopped by the time budget after its first epoch, then resumed from the state file
    stopped = fit_prn(train, val, options(epochs=3, batch_size=2, seed=3, max_minutes=1e-9),
                      half / "prn.pt", base_model_sha256=SHA)
    assert stopped.stopped_early and len(stopped.history) == 1
    resumed = fit_prn(train, val, options(epochs=3, batch_size=2, seed=3), half / "prn.pt",
                      base_model_sha256=SHA, resume=half / "prn.pt")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    _assert_same_run(full, half)


def test_resume_refuses_changed_model_options_and_finished_runs(tmp_path) -> None:
    from roadprn.errors import ConfigError

    train = biased_maps(2, 32, 4)
    fit_prn(train, None, options(epochs=1), tmp_path / "prn.pt", base_model_sha256=SHA)
    with pytest.raises(ConfigError, match="grid"):
        fit_prn(train, None, options(epochs=2, grid=4), tmp_path / "prn.pt",
                base_model_sha256=SHA, resume=tmp_path / "prn.pt")
    with pytest.raises(ConfigError, match="base model"):
        fit_prn(train, None, options(epochs=2), tmp_path / "prn.pt",
                base_model_sha256="cd" * 32, resume=tmp_path / "prn.pt")
    with pytest.raises(ConfigError, match="epochs"):
        fit_prn(train, None, options(epochs=1), tmp_path / "prn.pt", base_model_sha256=SHA,
                resume=tmp_path / "prn.pt")


def test_pooled_iou_and_bad_shapes(tmp_path) -> None:
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    assert pooled_iou(a, b) == pytest.approx(1 / 3)
    assert pooled_iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    with pytest.raises(ValueError, match="training maps"):
        fit_prn(PRNMaps(np.zeros((2, 16, 16), np.float32), np.zeros((2, 16, 16), bool)), None,
                options(), tmp_path / "prn.pt", base_model_sha256=SHA)
