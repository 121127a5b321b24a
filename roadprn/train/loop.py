"""The training loop pattern shared by ``train base`` and ``train prn``.

One shape for every run, so both commands behave alike:

* the options object is stored in the state file and, through the metrics, the checkpoint;
* ``OUT.state.pt``: one format (``roadprn-train-state``, version 1, ``kind`` base or prn) with the
  last weights, optimiser, history, best epoch, options and torch RNG, plain tensors and dicts
  (loads with ``weights_only=True``), written atomically after every epoch for ``--resume``;
  a resumed run must keep the options that define the model (``frozen``);
* ``OUT.metrics.csv`` / ``OUT.metrics.json``: one row per epoch, ``epoch`` first and
  ``seconds`` last;
* the best epoch (highest validation score, or lowest training loss without validation, gaining
  at least ``min_delta``) is written to ``OUT`` as soon as it is reached;
* ``patience`` epochs without improvement stop the run, and so does ``max_minutes``: the run
  stops after the epoch that ends past it;
* one human line per epoch (:func:`epoch_line`: epoch, training loss, validation IoU, seconds)
  goes to ``report`` (the CLI prints it on stderr), else to the log at INFO.

The optimiser holds only the weights that train (:func:`trainable_parameters`), so the state
file carries no optimiser copies of frozen weights.

A model-specific :class:`EpochRunner` trains and validates one epoch; :func:`run_epochs` does
the rest.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel

from roadprn.errors import ConfigError, ModelError, OutputError, one_line
from roadprn.models.checkpoint import FORMAT_NAME
from roadprn.outputs.atomic import atomic_output, check_writable
from roadprn.train.options import TrainLoopOptions

log = logging.getLogger(__name__)

STATE_FORMAT = "roadprn-train-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class TrainPaths:
    """The files of one run, all beside the checkpoint ``OUT.pt``."""

    checkpoint: Path
    state: Path
    metrics_csv: Path
    metrics_json: Path
    cache: Path

    @classmethod
    def for_output(cls, output: str | Path, cache_dir: str | Path | None = None) -> TrainPaths:
        """``cache`` is ``cache_dir``, or ``OUT.cache/`` beside the checkpoint."""
        out = Path(output)
        stem = out.with_suffix("")
        return cls(out, Path(f"{stem}.state.pt"), Path(f"{stem}.metrics.csv"),
                   Path(f"{stem}.metrics.json"),
                   Path(cache_dir) if cache_dir else Path(f"{stem}.cache"))

    def outputs(self) -> tuple[Path, ...]:
        return (self.checkpoint, self.state, self.metrics_csv, self.metrics_json)


@dataclass(frozen=True)
class TrainResult:
    paths: TrainPaths
    history: list[dict[str, Any]]
    best_epoch: int
    best_metrics: dict[str, Any]
    stopped_early: bool
    checkpoint_sha256: str | None


class EpochRunner(Protocol):
    """What a model brings to :func:`run_epochs`."""

    rate_column: str  # e.g. "chips_per_s": training samples per second of the epoch

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], int]:
        """Train (and validate) epoch ``epoch`` (1-based): its metrics and samples trained."""
        ...

    def score(self, row: dict[str, Any]) -> float:
        """Higher is better; the best epoch's weights become the checkpoint."""
        ...

    def save_best(self, row: dict[str, Any]) -> str:
        """Write the current weights as the checkpoint; its sha256."""
        ...

    def state(self) -> dict[str, Any]:
        """Weights, optimiser and anything else the model needs to resume (plain tensors)."""
        ...


# --------------------------------------------------------------------------- state file


def load_state(path: str | Path, kind: str) -> dict[str, Any]:
    """A training state file of ``kind`` (base or prn), or the one beside a roadprn checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--resume: file not found: {path}")
    payload = _torch_load(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT_NAME:
        state_path = TrainPaths.for_output(path).state
        if not state_path.is_file():
            raise ModelError(
                f"--resume: {path} is a checkpoint but its training state {state_path} is missing"
            )
        payload = _torch_load(state_path)
        path = state_path
    if isinstance(payload, dict) and "format" not in payload and "model_state" in payload:
        raise ConfigError(f"--resume: {path} is a PRN training state from before the shared "
                          f"training-state format ({STATE_FORMAT}); it cannot be resumed, start "
                          "a new run")
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ModelError(f"--resume: {path} is neither a roadprn checkpoint nor a training state")
    if payload.get("version") != STATE_VERSION:
        raise ModelError(f"--resume: {path} has state version {payload.get('version')!r}")
    found = payload.get("kind", "base")  # base states written before PRN shared the format
    if found != kind:
        raise ModelError(f"--resume: {path} is the state of a {found} training run, not {kind}")
    return payload


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
        raise ModelError(f"--resume: cannot read {path}: {one_line(exc, 160)}") from exc


def write_state(path: Path, payload: dict[str, Any]) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(payload, tmp)


def check_resume_options(options: BaseModel, stored: dict[str, Any],
                         frozen: Sequence[str]) -> None:
    """ConfigError when an option that defines the model differs from the resumed run's.

    A state saved before an option existed was made with that option's default."""
    current = options.model_dump(mode="json")
    defaults = type(options)().model_dump(mode="json")
    for key in frozen:
        used = stored.get(key, defaults.get(key))
        if current[key] != used:
            raise ConfigError(
                f"--resume: option {key} is {current[key]!r} but the run being resumed used "
                f"{used!r}; it cannot change mid-run"
            )


def check_outputs(paths: TrainPaths, state: dict[str, Any] | None, overwrite: bool) -> None:
    """A new run must not replace files unasked; a resumed one may update its own."""
    if paths.checkpoint.suffix != ".pt":
        raise ConfigError(f"output {paths.checkpoint} must end in .pt")
    if state is None:
        for path in paths.outputs():
            check_writable(path, overwrite)
    elif Path(state["checkpoint"]).resolve() != paths.checkpoint.resolve():
        for path in (paths.checkpoint, paths.state):  # resuming into another output
            check_writable(path, overwrite)


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed Python, numpy and torch (before the model is built: it sets the initial weights)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights an optimiser should hold: frozen ones (``requires_grad`` off) get no
    optimiser state, so they cost nothing in the state file."""
    return [p for p in model.parameters() if p.requires_grad]


def parameter_groups(model: torch.nn.Module, lr: float,
                     encoder_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Optimiser groups: the ``encoder`` module's trainable weights at ``lr * encoder_lr_scale``,
    the rest at ``lr``; one group when the scale is 1 or the model has no encoder (so state
    files of ordinary runs keep their one-group layout)."""
    trainable = trainable_parameters(model)
    encoder = getattr(model, "encoder", None)
    if encoder_lr_scale == 1.0 or not isinstance(encoder, torch.nn.Module):
        return [{"params": trainable, "lr": lr}]
    encoder_ids = {id(p) for p in encoder.parameters()}
    groups = [{"params": [p for p in trainable if id(p) in encoder_ids],
               "lr": lr * encoder_lr_scale},
              {"params": [p for p in trainable if id(p) not in encoder_ids], "lr": lr}]
    return [g for g in groups if g["params"]]


# --------------------------------------------------------------------------- metrics


def epoch_line(row: dict[str, Any], epochs: int, best: bool) -> str:
    """One human line per epoch: ``epoch 3/20: train loss 0.4123, val IoU 0.5310, 61.8 s``."""
    parts = [f"train loss {row['train_loss']:.4f}"]
    if "val_iou" in row:
        parts.append(f"val IoU {row['val_iou']:.4f}")
    parts.append(f"{row['seconds']:.1f} s")
    return f"epoch {row['epoch']}/{epochs}: {', '.join(parts)}" + (" (best)" if best else "")



def write_metrics(paths: TrainPaths, history: list[dict[str, Any]],
                  columns: Sequence[str]) -> None:
    """``OUT.metrics.csv`` (fixed ``columns``) and ``OUT.metrics.json`` (every key)."""
    try:
        with atomic_output(paths.metrics_csv, overwrite=True) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
                writer.writeheader()
                writer.writerows(history)
        with atomic_output(paths.metrics_json, overwrite=True) as tmp:
            tmp.write_text(json.dumps(history, indent=2))
    except OSError as exc:
        raise OutputError(f"cannot write training metrics: {exc.strerror}") from exc


def checkpoint_metrics(row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The best epoch's row as checkpoint metrics (floats to 6 decimals)."""
    metrics = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
    return {**metrics, **extra}


# --------------------------------------------------------------------------- the loop


def run_epochs(
    runner: EpochRunner,
    options: TrainLoopOptions,
    paths: TrainPaths,
    *,
    kind: str,
    columns: Sequence[str],
    resume: dict[str, Any] | None = None,
    extra_state: dict[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> TrainResult:
    """Epochs up to ``options.epochs``, continuing ``resume`` (a loaded state) exactly.

    The runner's model and optimiser must already hold the resumed state; the torch RNG is
    restored here. After every epoch the metrics files and the state file are rewritten, and
    its :func:`epoch_line` goes to ``report`` (default: the log at INFO).
    """
    say = report or log.info
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "metrics": {}, "sha256": None}
    start = 1
    if resume is not None:
        history = list(resume["history"])
        best = dict(resume["best"])
        start = int(resume["epoch"]) + 1
        if start > options.epochs:
            raise ConfigError(f"--resume: the run already has {start - 1} epochs; raise --epochs")
        torch.set_rng_state(resume["torch_rng"])
        say(f"resuming after epoch {start - 1} (best so far: epoch {best['epoch']})")

    stopped_early = False
    t_run = time.perf_counter()
    for epoch in range(start, options.epochs + 1):
        if best["epoch"] and options.patience and epoch - best["epoch"] > options.patience:
            say(f"no improvement for {options.patience} epochs: stopping early")
            stopped_early = True
            break
        if (options.max_minutes and epoch > start
                and time.perf_counter() - t_run > 60 * options.max_minutes):
            say(f"time budget of {options.max_minutes:g} min used: stopping after epoch "
                f"{epoch - 1}")
            stopped_early = True
            break
        t0 = time.perf_counter()
        metrics, samples = runner.run_epoch(epoch)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch, **metrics, runner.rate_column: samples / seconds,
                               "seconds": seconds}
        history.append(row)
        score = runner.score(row)
        log.debug("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                                                   if k != "epoch"))
        improved = score > best["score"] + (options.min_delta if best["epoch"] else -math.inf)
        if improved:
            best = {"score": score, "epoch": epoch, "metrics": row, "sha256": None}
            best["sha256"] = runner.save_best(row)
        write_metrics(paths, history, columns)
        write_state(paths.state, {
            "format": STATE_FORMAT, "version": STATE_VERSION, "kind": kind, "epoch": epoch,
            **runner.state(), "history": history, "best": best,
            "options": options.model_dump(mode="json"), "torch_rng": torch.get_rng_state(),
            "checkpoint": str(paths.checkpoint), **(extra_state or {}),
        })
        say(epoch_line(row, options.epochs, improved))
        if on_epoch_end is not None:
            on_epoch_end(row)
    return TrainResult(paths, history, best["epoch"], best["metrics"], stopped_early,
                       best["sha256"])
