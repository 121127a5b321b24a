"""What runs inside a Dask worker: one scene through :func:`roadprn.extract.run_extract`.

Models are cached per worker process (keyed by model spec and checksum), so each worker loads a
model once, not once per task, and no model is ever pickled into a task. A task never raises for
a bad scene: it returns a manifest record with the error, so one scene cannot fail the run.
"""

from __future__ import annotations

import errno
import logging
import shutil
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roadprn.config import Config
from roadprn.errors import RoadprnError
from roadprn.inference import SegmentationModel

log = logging.getLogger(__name__)

_MODELS: dict[tuple[str, str], SegmentationModel] = {}
_MODELS_LOCK = threading.Lock()
MODEL_LOADS: list[tuple[str, str]] = []  # every load in this process (tests check "once")

TRANSIENT_ERRNOS = {errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN}


@dataclass(frozen=True)
class SceneTask:
    """Everything a worker needs for one scene; small and picklable."""

    path: str
    name: str
    out_root: str
    config: Config
    model_hashes: dict[str, str]
    config_hash: str
    attempt: int = 1

    @property
    def folder(self) -> Path:
        return Path(self.out_root) / self.name


def cached_model(spec: str, sha256: str) -> SegmentationModel:
    """The model for ``spec``, loaded once per worker process; refuses a file that changed."""
    from roadprn.errors import ModelError
    from roadprn.models.loading import load_segmentation_model

    key = (spec, sha256)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = load_segmentation_model(spec)
            MODEL_LOADS.append(key)
            if model.sha256 and model.sha256 != sha256:
                raise ModelError(f"{spec}: checkpoint changed during the batch run "
                                 f"(sha256 {model.sha256[:12]}, expected {sha256[:12]})")
            _MODELS[key] = model
            _pin_gpu()
    return model


def _pin_gpu() -> None:
    """On a LocalCluster with GPUs, worker N uses GPU N (worker names are 0, 1, ...)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    if not worker.state.total_resources.get("GPU"):
        return
    import torch

    if torch.cuda.is_available() and str(worker.name).isdigit():
        torch.cuda.set_device(int(worker.name) % torch.cuda.device_count())


def is_transient(exc: BaseException, path: str) -> bool:
    """Errors worth another attempt: network hiccups and timeouts, never a bad scene or config."""
    if isinstance(exc, RoadprnError) and not isinstance(exc.__cause__, (TimeoutError, ConnectionError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    from roadprn.batch.inputs import is_remote

    # reading a remote object (/vsis3/, /vsicurl/) may fail for a moment; a local file does not
    return is_remote(path) and isinstance(exc, OSError) and "HTTP" in str(exc)


def process_scene(task: SceneTask) -> dict[str, Any]:
    """Run the extract job on one scene into its own folder; return its manifest record."""
    from roadprn.batch.manifest import describe_files
    from roadprn.extract import run_extract

    started = time.time()
    record: dict[str, Any] = {
        "type": "scene", "scene": task.path, "name": task.name, "attempt": task.attempt,
        "config_hash": task.config_hash, "model_hashes": task.model_hashes,
        "worker": _worker_address(),
    }
    folder = task.folder
    try:
        _clear(folder)  # whatever is here is stale or partial: the scene is being (re)done
        model = cached_model(task.config.model, task.model_hashes["base"])
        run = run_extract(task.path, task.config, folder, base_model=model)
        record.update(
            status="done", error=None,
            files=describe_files(run.files, Path(task.out_root)),
            stage_seconds={k: round(v, 3) for k, v in run.stage_seconds.items()},
            road_length_m=None if run.road_length_m is None else round(run.road_length_m, 2),
            roads=run.roads, junctions=run.junctions, tiles=run.base.tiles,
            size=[run.base.width, run.base.height], device=run.base.device,
        )
    except Exception as exc:  # noqa: BLE001 - isolation: every scene error becomes a record
        _clear(folder)
        user_error = isinstance(exc, RoadprnError)
        if not user_error:
            log.error("%s: unexpected error\n%s", task.path, traceback.format_exc())
        record.update(status="failed", error=one_line(exc), error_type=type(exc).__name__,
                      transient=is_transient(exc, task.path))
    record["seconds"] = round(time.time() - started, 3)
    return record


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, RoadprnError) else f"{type(exc).__name__}: {text}"


def _clear(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()


def model_loads() -> list[tuple[str, str]]:
    """This worker's model loads so far (run with ``client.run``)."""
    return list(MODEL_LOADS)
