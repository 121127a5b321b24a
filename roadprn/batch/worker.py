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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roadprn.config import Config
from roadprn.errors import RoadprnError, one_line
from roadprn.infer.predictor import SegmentationModel

log = logging.getLogger(__name__)

_MODELS: dict[tuple[str, str], SegmentationModel] = {}
_MODELS_LOCK = threading.Lock()
MODEL_LOADS: list[tuple[str, str]] = []  # every load in this process (tests check "once")

TRANSIENT_ERRNOS = {errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN}


@dataclass(frozen=True)
class SceneTask:
    """Everything a worker needs for one scene; small and picklable.

    ``model_spec`` is the model ``extract`` would pick for this scene (see
    :func:`roadprn.extract.model_spec_for_scene`), chosen by the driver, with its checksum in
    ``model_hashes``; ``None`` when the driver could not read the scene's header, in which
    case the worker chooses (and reports the scene's own error if it cannot either).
    """

    path: str
    name: str
    out_root: str
    config: Config
    model_spec: str | None
    model_hashes: dict[str, str]
    config_hash: str
    attempt: int = 1

    @property
    def folder(self) -> Path:
        return Path(self.out_root) / self.name


def cached_model(spec: str, sha256: str | None) -> SegmentationModel:
    """The model for ``spec``, loaded once per worker process; refuses a file that changed.

    ``sha256``: the checksum the driver saw (``None``: not known, any is accepted).
    """
    from roadprn.errors import ModelError
    from roadprn.models.loading import load_segmentation_model

    key = (spec, sha256 or "")
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = load_segmentation_model(spec)
            MODEL_LOADS.append(key)
            if sha256 and model.sha256 and model.sha256 != sha256:
                raise ModelError(f"{spec}: checkpoint changed during the batch run "
                                 f"(sha256 {model.sha256[:12]}, expected {sha256[:12]})")
            _MODELS[key] = model
            _pin_gpu()
    return model


def task_model(task: SceneTask) -> SegmentationModel:
    """The model of ``task``'s scene: the driver's choice, or extract's own when it had none."""
    if task.model_spec is not None:
        return cached_model(task.model_spec, task.model_hashes.get("base"))
    from roadprn.extract import model_spec_for_scene

    return cached_model(model_spec_for_scene(task.path, task.config), None)


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
    if isinstance(exc, RoadprnError) and not isinstance(exc.__cause__,
                                                        (TimeoutError, ConnectionError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    from roadprn.batch.inputs import is_remote

    # reading a remote object (/vsis3/, /vsicurl/) may fail for a moment; a local file does not
    return is_remote(path) and isinstance(exc, OSError) and "HTTP" in str(exc)


def configure_worker(task: SceneTask) -> None:
    """This worker process's GDAL cache and torch threads for ``task`` (the batch run sized
    ``inference.torch_threads`` to the worker); the library itself sets neither."""
    from roadprn.runtime.settings import configure_process

    inference = task.config.inference
    configure_process(torch_threads=inference.torch_threads,
                      reader_threads=inference.reader_threads)


def process_scene(task: SceneTask) -> dict[str, Any]:
    """Run the extract job on one scene into its own folder; return its manifest record."""
    from roadprn.extract import run_extract

    configure_worker(task)
    return _scene_record(task, lambda model: run_extract(task.path, task.config, task.folder,
                                                         base_model=model))


def process_band(task: SceneTask, tile_rows: tuple[int, int], piece: str) -> dict[str, Any]:
    """One band of tile rows of a split scene into its piece; a failure is returned, not raised.

    The scene's final task (:func:`finish_split_scene`) turns a failed band into the scene's
    failed record, so a bad band fails its scene only.
    """
    from roadprn.batch.split import predict_band

    configure_worker(task)
    try:
        model = task_model(task)
        band = predict_band(task.path, task.config, model, tile_rows, Path(piece))
        return {"status": "done", **band.as_dict(), "worker": _worker_address()}
    except Exception as exc:  # noqa: BLE001 - isolation, as in process_scene
        context = f"batch scene {task.path}, tile rows {tile_rows[0]}-{tile_rows[1]}"
        return {"status": "failed", "tile_rows": list(tile_rows),
                **failure_fields(exc, task, context)}


def finish_split_scene(task: SceneTask, pieces: list[str],
                       bands: list[dict[str, Any]]) -> dict[str, Any]:
    """The last task of a split scene: the extract job on its bands' pieces, then no pieces left.

    ``bands`` are the results of :func:`process_band` (Dask passes them in once all are done).
    """
    from roadprn.batch.split import read_pieces
    from roadprn.extract import run_extract

    configure_worker(task)
    pieces_dir = Path(pieces[0]).parent
    try:
        failed = [band for band in bands if band["status"] == "failed"]
        if failed:
            clear_folder(task.folder)
            first = failed[0]
            return {**_base_record(task), "status": "failed", "error": first["error"],
                    "error_type": first["error_type"], "transient": first["transient"],
                    **({"log": first["log"]} if first.get("log") else {}),
                    "band_errors": [{"tile_rows": b["tile_rows"], "error": b["error"]}
                                    for b in failed], "bands": len(bands)}
        record = _scene_record(
            task, lambda model: run_extract(task.path, task.config, task.folder, base_model=model,
                                            base_strips=read_pieces([Path(p) for p in pieces])),
            keep=pieces_dir)
        if record["status"] == "done":
            record["bands"] = len(bands)
            record["band_workers"] = sorted({b["worker"] for b in bands})
            record["stage_seconds"]["bands"] = round(sum(b["seconds"] for b in bands), 3)
        return record
    finally:
        shutil.rmtree(pieces_dir, ignore_errors=True)


def _base_record(task: SceneTask) -> dict[str, Any]:
    return {"type": "scene", "scene": task.path, "name": task.name, "attempt": task.attempt,
            "config_hash": task.config_hash, "model_hashes": task.model_hashes,
            "worker": _worker_address()}


def _scene_record(task: SceneTask, extract: Callable[[SegmentationModel], Any],
                  keep: Path | None = None) -> dict[str, Any]:
    """Run ``extract(model)`` into the scene's cleared folder (but ``keep``); the scene's record."""
    from roadprn.batch.manifest import describe_files

    started = time.time()
    record = _base_record(task)
    folder = task.folder
    try:
        clear_folder(folder, keep)  # stale or partial: the scene is (re)done
        model = task_model(task)
        record["model_hashes"] = {"base": model.sha256 or "unknown"}
        run = extract(model)
        record.update(
            status="done", error=None,
            files=describe_files(run.files, Path(task.out_root)),
            stage_seconds={k: round(v, 3) for k, v in run.stage_seconds.items()},
            road_length_m=None if run.road_length_m is None else round(run.road_length_m, 2),
            roads=run.roads, junctions=run.junctions, tiles=run.base.tiles,
            size=[run.base.width, run.base.height], device=run.base.device,
        )
    except Exception as exc:  # noqa: BLE001 - isolation: every scene error becomes a record
        clear_folder(folder)
        record.update(status="failed",
                      **failure_fields(exc, task, f"batch scene {task.path}, "
                                                  f"attempt {task.attempt}"))
    record["seconds"] = round(time.time() - started, 3)
    return record


def failure_fields(exc: Exception, task: SceneTask, context: str) -> dict[str, Any]:
    """``error`` (one line), ``error_type``, ``transient`` and, for a bug, ``log``.

    A bug (not a :class:`RoadprnError`, not an I/O or network error) gets a crash log with its
    traceback under ``OUT/.roadprn-logs/``: the console and the manifest get one line, the
    team gets the traceback.
    """
    from roadprn.runtime.crashlog import short_message, write_crash_log

    transient = is_transient(exc, task.path)
    fields: dict[str, Any] = {"error": error_text(exc), "error_type": type(exc).__name__,
                              "transient": transient}
    if isinstance(exc, RoadprnError) or transient:
        return fields
    if isinstance(exc, OSError) and exc.errno is not None:
        from roadprn.errors import io_error_line

        fields["error"] = io_error_line(exc)  # disk full, permission denied: not a bug
        return fields
    fields["error"] = short_message(exc)
    out_root = Path(task.out_root)
    log_path = write_crash_log(exc, crash_log_folder(out_root),
                               f"{context}, worker {_worker_address()}")
    if log_path is not None:
        fields["log"] = manifest_path_of(log_path, out_root)
    log.debug("%s: %s", context, fields["error"], exc_info=exc)
    return fields


def crash_log_folder(out_root: Path) -> Path:
    """Where a batch run's crash logs go: inside its output folder, beside the manifest."""
    from roadprn.batch.inputs import LOG_FOLDER

    return out_root / LOG_FOLDER


def manifest_path_of(path: Path, out_root: Path) -> str:
    """``path`` relative to the run folder if inside it (like every manifest path), else
    absolute."""
    try:
        return Path(path).resolve().relative_to(out_root.resolve()).as_posix()
    except ValueError:
        return str(path)


def error_text(exc: BaseException) -> str:
    """A user error's own message, or ``Type: message`` (capped) for anything else."""
    from roadprn.runtime.crashlog import short_message

    if isinstance(exc, RoadprnError):
        return one_line(exc, None)
    return short_message(exc)


def clear_folder(folder: Path, keep: Path | None = None) -> None:
    """Remove the scene folder, or everything in it but ``keep``; never follows a symlink."""
    if not folder.is_dir() or folder.is_symlink():
        return
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()


def model_loads() -> list[tuple[str, str]]:
    """This worker's model loads so far (run with ``client.run``)."""
    return list(MODEL_LOADS)
