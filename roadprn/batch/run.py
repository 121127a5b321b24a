"""Driving a batch run: resume decisions, submission, retries, the manifest, clean interruption.

The driver decides which scenes to (re)do from the manifest, submits one task per scene (a
large scene: one task per band of tile rows and a final task depending on them, see
:mod:`roadprn.batch.split`), and appends each finished scene's record to the manifest as it
arrives. Scheduling, worker restarts and re-running the tasks of a
worker that died are Dask's job (``distributed.scheduler.allowed-failures``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadprn import __version__
from roadprn.batch.config import BatchConfig
from roadprn.batch.inputs import SceneInput, scene_folder
from roadprn.batch.manifest import (
    MANIFEST_NAME,
    ManifestWriter,
    config_hash,
    latest_scene_records,
    mismatch_reason,
    read_records,
)
from roadprn.batch.split import piece_path, pieces_folder
from roadprn.batch.worker import (
    SceneTask,
    clear_folder,
    finish_split_scene,
    process_band,
    process_scene,
)
from roadprn.config import Config
from roadprn.errors import Interrupted

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    manifest: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    dashboard: str | None = None

    def by_status(self, status: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == status]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return self.by_status("failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "seconds": round(self.seconds, 3),
            "done": len(self.by_status("done")),
            "skipped": len(self.by_status("skipped")),
            "failed": [{"scene": r["scene"], "error": r["error"]} for r in self.failed],
            "tiles": sum(r.get("tiles") or 0 for r in self.by_status("done")),
            "road_length_m": round(sum(r.get("road_length_m") or 0.0
                                       for r in self.records if r["status"] != "failed"), 2),
        }


def run_batch(
    scenes: list[SceneInput],
    config: Config,
    out_dir: str | Path,
    settings: BatchConfig | None = None,
    *,
    client: Any = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Process ``scenes`` into ``out_dir/<scene folder>/`` on a Dask cluster; never raises per scene.

    ``client``: an existing ``distributed.Client`` (else one is made from ``settings``).
    ``echo``: where to print the dashboard link (``None``: nowhere).
    Raises :class:`Interrupted` on Ctrl-C (after removing unfinished scenes' outputs).
    """
    from roadprn.models.loading import load_segmentation_model

    settings = settings or BatchConfig()
    out_root = Path(out_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = load_segmentation_model(config.model)  # fail fast on a bad model, not once per scene
    model_hashes = {"base": model.sha256 or "unknown"}
    cfg_hash = config_hash(config)
    task_config = worker_config(config, settings)
    manifest_path = out_root / MANIFEST_NAME
    summary = BatchSummary(manifest_path)
    run_id = uuid.uuid4().hex[:12]

    with ManifestWriter(manifest_path) as manifest:
        previous = latest_scene_records(manifest_path)
        todo: list[SceneTask] = []
        for scene in scenes:
            folder = scene_folder(out_root, scene.name)
            record = previous.get(scene.name)
            reason = (mismatch_reason(record, out_root, cfg_hash, model_hashes)
                      if settings.resume else "resume disabled")
            if reason is None and record is not None:
                skipped = {k: v for k, v in record.items() if k not in ("time", "run_id")}
                skipped.update(status="skipped", run_id=run_id, scene=scene.path)
                manifest.append(skipped)
                summary.records.append(skipped)
                continue
            log.info("%s: to do (%s)", scene.path, reason)
            todo.append(SceneTask(scene.path, folder.name, str(out_root), task_config,
                                  model_hashes, cfg_hash))
        manifest.append({"type": "run", "event": "start", "run_id": run_id, "version": __version__,
                         "scenes": len(scenes), "to_do": len(todo), "config_hash": cfg_hash,
                         "model_hashes": model_hashes, "config": config.to_yaml_dict()})
        if not todo:
            summary.seconds = time.perf_counter() - t_start
            manifest.append({"type": "run", "event": "end", "run_id": run_id, "interrupted": False,
                             **_counts(summary)})
            return summary

        with contextlib.ExitStack() as stack:
            if client is None:
                from roadprn.batch.cluster import open_client

                client = stack.enter_context(open_client(settings))
            summary.dashboard = _dashboard(client)
            if echo and summary.dashboard:
                echo(f"dask dashboard: {summary.dashboard}")
            splits = plan_splits(todo, model, settings, _worker_count(client, settings))
            del model
            try:
                _execute(client, todo, settings, manifest, summary, run_id, progress, splits)
            except KeyboardInterrupt:
                # the manifest is the truth: a Ctrl-C between writing a scene's record and
                # noting it in the summary must not delete a scene the manifest calls done
                finished = {r["name"] for r in summary.records} | {
                    r.get("name") for r in read_records(manifest_path)
                    if r.get("type") == "scene" and r.get("run_id") == run_id}
                unfinished = [t for t in todo if t.name not in finished]
                stack.close()  # a local cluster is shut down: no worker writes any more
                for task in unfinished:
                    with contextlib.suppress(OSError):
                        if task.folder.is_dir():
                            shutil.rmtree(task.folder)
                summary.seconds = time.perf_counter() - t_start
                manifest.append({"type": "run", "event": "end", "run_id": run_id,
                                 "interrupted": True, "unfinished": len(unfinished),
                                 **_counts(summary)})
                raise Interrupted(f"interrupted; {len(unfinished)} unfinished scene(s) removed, "
                                  f"a rerun resumes from {manifest_path}") from None
        summary.seconds = time.perf_counter() - t_start
        manifest.append({"type": "run", "event": "end", "run_id": run_id, "interrupted": False,
                         "seconds": round(summary.seconds, 3), **_counts(summary)})
    return summary


def worker_config(config: Config, settings: BatchConfig) -> Config:
    """The config tasks run with: torch threads sized to the worker unless set explicitly."""
    if config.inference.torch_threads is not None or settings.scheduler:
        return config
    data = config.to_yaml_dict()
    data["inference"]["torch_threads"] = settings.threads_per_worker
    return type(config).model_validate(data)


def plan_splits(todo: list[SceneTask], model: Any, settings: BatchConfig,
                workers: int) -> dict[str, list[tuple[int, int]]]:
    """Bands of tile rows of every scene worth splitting (see ``choose_splits``), by scene name.

    Reads only headers, a few at a time (remote headers take a round trip each).
    """
    from concurrent.futures import ThreadPoolExecutor

    from roadprn.batch.split import choose_splits, header_tile_plan

    if settings.split_tiles <= 0 or not todo:
        return {}
    with ThreadPoolExecutor(min(8, len(todo)), "roadprn-plan") as pool:
        plans = dict(zip((t.name for t in todo),
                         pool.map(lambda t: header_tile_plan(t.path, model, t.config), todo),
                         strict=True))
    splits = choose_splits(plans, settings.split_tiles, workers)
    for task in todo:
        if task.name in splits:
            log.info("%s: %d tiles, split into %d bands of tile rows", task.path,
                     len(plans[task.name]), len(splits[task.name]))
    return splits


def _worker_count(client: Any, settings: BatchConfig) -> int:
    """Workers to split large scenes over: those up now, or those asked for (still starting)."""
    try:
        running = len(client.scheduler_info()["workers"])
    except Exception:  # noqa: BLE001
        running = 0
    return max(1, running, settings.workers or 0)


def _fresh_pieces_folder(task: SceneTask) -> bool:
    """Clear the scene's folder and make this attempt's pieces folder; False if impossible.

    Bands write only into a folder made here, so a band still running for a scene given up
    (or for an earlier attempt) cannot leave files behind.
    """
    clear_folder(task.folder)
    try:
        pieces_folder(task.folder, task.attempt).mkdir(parents=True)
    except OSError as exc:  # the scene runs as one task, which reports the problem
        log.warning("%s: not split (%s)", task.path, exc)
        return False
    return True


def _execute(client: Any, todo: list[SceneTask], settings: BatchConfig,
             manifest: ManifestWriter, summary: BatchSummary, run_id: str, progress: bool,
             splits: dict[str, list[tuple[int, int]]] | None = None) -> None:
    from distributed import as_completed
    from tqdm import tqdm

    resources = {"GPU": 1} if settings.gpus_per_worker else None
    splits = splits or {}
    tasks: dict[str, SceneTask] = {}
    live: dict[str, Any] = {}
    band_futures: dict[str, list[Any]] = {}  # final task key -> its bands

    def submit(task: SceneTask) -> Any:
        key = f"roadprn-scene-{task.name}-{run_id}-{task.attempt}"
        tasks[key] = task
        if task.name in splits and _fresh_pieces_folder(task):
            live[key] = submit_split(task, splits[task.name], key)
        else:
            live[key] = client.submit(process_scene, task, key=key, pure=False,
                                      resources=resources)
        return live[key]

    def submit_split(task: SceneTask, bands: list[tuple[int, int]], key: str) -> Any:
        """Band tasks, then the scene's final task on their results (it removes the pieces)."""
        pieces = pieces_folder(task.folder, task.attempt)
        paths, futures = [], []
        for index, rows in enumerate(bands):
            band_key = f"roadprn-band-{task.name}-{run_id}-{task.attempt}-{index}"
            path = str(piece_path(pieces, index, rows))
            live[band_key] = client.submit(process_band, task, rows, path, key=band_key,
                                           pure=False, resources=resources)
            paths.append(path)
            futures.append(live[band_key])
        band_futures[key] = futures
        return client.submit(finish_split_scene, task, paths, futures, key=key, pure=False,
                             resources=resources)

    futures = [submit(task) for task in todo]
    pending = as_completed(futures)
    tiles = 0
    bar = tqdm(total=len(todo), unit="scene", desc="batch", disable=not progress, dynamic_ncols=True)
    try:
        for future in pending:
            task = tasks.pop(future.key)
            live.pop(future.key, None)
            bands = band_futures.pop(future.key, [])
            record = _result(future, task)
            future.release()
            for band in bands:
                live.pop(band.key, None)
            if bands and record["status"] == "failed":
                client.cancel(bands)  # e.g. a band's worker died: the others are not needed
            for band in bands:
                band.release()
            if (record["status"] == "failed" and record.pop("transient", False)
                    and task.attempt <= settings.retries):
                log.warning("%s: attempt %d failed (%s); retrying", task.path, task.attempt,
                            record["error"])
                retry = SceneTask(**{**task.__dict__, "attempt": task.attempt + 1})
                pending.add(submit(retry))
                continue
            record.pop("transient", None)
            record["run_id"] = run_id
            manifest.append(record)
            summary.records.append(record)
            tiles += record.get("tiles") or 0
            bar.update(1)
            bar.set_postfix(tiles=tiles, failed=len(summary.failed), refresh=False)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(live.values()))
        raise
    finally:
        bar.close()


def _result(future: Any, task: SceneTask) -> dict[str, Any]:
    """The task's own record, or a failure record when the task itself could not finish."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        error = ("the worker processing this scene died repeatedly "
                 "(out of memory or a crash while reading it)")
        error_type = "KilledWorker"
    except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be deserialised
        error, error_type = f"{type(exc).__name__}: {exc}", type(exc).__name__
    with contextlib.suppress(OSError):
        if task.folder.is_dir():
            shutil.rmtree(task.folder)
    return {"type": "scene", "scene": task.path, "name": task.name, "attempt": task.attempt,
            "status": "failed", "error": error, "error_type": error_type,
            "config_hash": task.config_hash, "model_hashes": task.model_hashes}


def _counts(summary: BatchSummary) -> dict[str, int]:
    return {s: len(summary.by_status(s)) for s in ("done", "failed", "skipped")}


def _dashboard(client: Any) -> str | None:
    with contextlib.suppress(Exception):
        return client.dashboard_link
    return None
