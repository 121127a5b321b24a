"""Driving a batch run: resume decisions, submission, retries, the manifest, clean interruption.

The driver decides which scenes to (re)do from the manifest, submits one task per scene (a
large scene: one task per band of tile rows and a final task depending on them, see
:mod:`roadprn.batch.split`), and appends each finished scene's record to the manifest as it
arrives. Scheduling, worker restarts and re-running the tasks of a
worker that died are Dask's job (``distributed.scheduler.allowed-failures``); the driver makes
sure every scene still ends done or failed: a scene whose workers kept dying fails with that
reason, and when no worker is left at all for :data:`NO_WORKER_GRACE_S` the scenes still
waiting fail instead of waiting for ever.

Each scene runs with the model ``extract`` would choose for it
(:func:`roadprn.extract.model_spec_for_scene`: e.g. the panchromatic default model for a
1-band scene), so a folder of mixed scenes gives each scene what ``extract`` gives it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

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
from roadprn.errors import Interrupted, RoadprnError, one_line

log = logging.getLogger(__name__)

NO_WORKER_GRACE_S = 600.0  # scenes still waiting fail when the cluster has had no worker this long
POLL_S = 2.0  # how often the driver looks at the cluster while it waits for results


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
            "failed": [{"scene": r["scene"], "error": r["error"],
                        **({"log": r["log"]} if r.get("log") else {})} for r in self.failed],
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
    merging: bool = False,
) -> BatchSummary:
    """Process ``scenes`` into ``out_dir/<scene folder>/`` on a Dask cluster; never raises per
    scene.

    ``client``: an existing ``distributed.Client`` (else one is made from ``settings``).
    ``echo``: where to print the dashboard link (``None``: nowhere).
    ``merging``: the networks will be merged (``batch.normalization: auto`` then shares one
    stretch over the archive, see :mod:`roadprn.batch.normalization`).
    Raises :class:`Interrupted` on Ctrl-C (after removing unfinished scenes' outputs).
    """
    from roadprn.batch.cluster import quiet_dask

    settings = settings or BatchConfig()
    out_root = Path(out_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    specs = scene_model_specs(scenes, config)
    models = load_models(specs, config)  # fail fast on a bad model, not once per scene
    spec_hashes = {spec: model.sha256 or "unknown" for spec, model in models.items()}
    cfg_hash = config_hash(config)
    task_config = worker_config(config, settings)
    stretches: dict[str, Any] = {}
    if settings.normalization == "archive" or (settings.normalization == "auto" and merging):
        from roadprn.batch.normalization import archive_normalizations

        stretches = archive_normalizations(scenes, specs, models, config, out_root,
                                           reuse=settings.resume)
    # a scene with its own area (a CSV list's columns) or the archive's stretch runs, and
    # resumes, with its own config
    scene_configs = {scene.name: (task_config, cfg_hash)
                     if not scene.area and scene.name not in stretches else
                     _scene_config(config, task_config, scene, stretches.get(scene.name))
                     for scene in scenes}
    manifest_path = out_root / MANIFEST_NAME
    summary = BatchSummary(manifest_path)
    run_id = uuid.uuid4().hex[:12]

    with ManifestWriter(manifest_path) as manifest, quiet_dask():
        previous = latest_scene_records(manifest_path)
        todo: list[SceneTask] = []
        for scene in scenes:
            folder = scene_folder(out_root, scene.name)
            spec = specs[scene.name]
            hashes = {"base": spec_hashes[spec]} if spec is not None else None
            record = previous.get(scene.name)
            reason = (mismatch_reason(record, out_root, scene_configs[scene.name][1], hashes)
                      if settings.resume else "resume disabled")
            if reason is None and record is not None:
                skipped = {k: v for k, v in record.items() if k not in ("time", "run_id")}
                skipped.update(status="skipped", run_id=run_id, scene=scene.path)
                manifest.append(skipped)
                summary.records.append(skipped)
                continue
            log.info("%s: to do (%s)", scene.path, reason)
            todo.append(SceneTask(scene.path, folder.name, str(out_root),
                                  scene_configs[scene.name][0], spec, hashes or {},
                                  scene_configs[scene.name][1]))
        stack = contextlib.ExitStack()
        # from the start record on, an interrupt ends in an end record and the batch's own
        # line, also while the cluster starts or closes (a SIGTERM right after the start
        # record used to escape with the generic line and no end record)
        try:
            manifest.append({"type": "run", "event": "start", "run_id": run_id,
                             "version": __version__, "scenes": len(scenes), "to_do": len(todo),
                             "config_hash": cfg_hash, "model_hashes": spec_hashes,
                             "normalization": "archive" if stretches else "scene",
                             "config": config.pipeline_dict()})
            if not todo:
                summary.seconds = time.perf_counter() - t_start
                manifest.append({"type": "run", "event": "end", "run_id": run_id,
                                 "interrupted": False, **_counts(summary)})
                return summary
            with stack:
                if client is None:
                    from roadprn.batch.cluster import open_client

                    client = stack.enter_context(open_client(settings))
                summary.dashboard = _dashboard(client)
                if echo and summary.dashboard:
                    echo(f"dask dashboard: {summary.dashboard}")
                task_models = {t.name: models[t.model_spec] for t in todo
                               if t.model_spec is not None}
                splits = plan_splits(todo, task_models, settings, _worker_count(client, settings))
                del models, task_models
                _execute(client, todo, settings, manifest, summary, run_id, progress, splits)
        except KeyboardInterrupt:
            _interrupted(stack, todo, manifest, manifest_path, summary, run_id, t_start)
        summary.seconds = time.perf_counter() - t_start
        manifest.append({"type": "run", "event": "end", "run_id": run_id, "interrupted": False,
                         "seconds": round(summary.seconds, 3), **_counts(summary)})
    return summary


def _interrupted(stack: contextlib.ExitStack, todo: list[SceneTask], manifest: ManifestWriter,
                 manifest_path: Path, summary: BatchSummary, run_id: str,
                 t_start: float) -> None:
    """Ctrl-C/SIGTERM: cluster closed, unfinished scenes' folders removed, an end record."""
    from roadprn.batch.cluster import held_interrupts

    # a second signal while cleaning up must not cut the cleanup (or print a traceback)
    with contextlib.suppress(KeyboardInterrupt), held_interrupts():
        # the manifest is the truth: a Ctrl-C between writing a scene's record and noting it
        # in the summary must not delete a scene the manifest calls done
        finished = {r["name"] for r in summary.records} | {
            r.get("name") for r in read_records(manifest_path)
            if r.get("type") == "scene" and r.get("run_id") == run_id}
        unfinished = [t for t in todo if t.name not in finished]
        with contextlib.suppress(Exception):
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


def scene_model_specs(scenes: list[SceneInput], config: Config) -> dict[str, str | None]:
    """The model ``extract`` would choose for each scene, by folder name; ``None``: unreadable.

    Reads only headers, and only when the choice depends on the scene (``model: default``
    without ``input.bands``), a few at a time (remote headers take a round trip each).
    """
    from concurrent.futures import ThreadPoolExecutor

    from roadprn.extract import model_spec_for_scene

    if config.model != "default" or config.input.bands:
        return {scene.name: config.model for scene in scenes}

    def choose(scene: SceneInput) -> str | None:
        try:
            return model_spec_for_scene(scene.path, config)
        except Exception as exc:  # noqa: BLE001 - the scene's own task reports it
            log.info("%s: model chosen by its worker (%s)", scene.path, exc)
            return None

    with ThreadPoolExecutor(min(8, max(1, len(scenes))), "roadprn-models") as pool:
        return dict(zip((s.name for s in scenes), pool.map(choose, scenes), strict=True))


def load_models(specs: dict[str, str | None], config: Config) -> dict[str, Any]:
    """Every model the run needs, loaded once here so that a bad one stops the run (exit 5)."""
    from roadprn.models.loading import load_segmentation_model

    needed = sorted({spec for spec in specs.values() if spec is not None}) or [config.model]
    return {spec: load_segmentation_model(spec) for spec in needed}


def _scene_config(config: Config, task_config: Config, scene: SceneInput,
                  normalization: Any = None) -> tuple[Config, str]:
    """``task_config`` with ``scene.area`` as its ``input.window`` / ``bbox`` / ``bbox_crs``
    (the others cleared) and ``normalization`` (a ``NormalizationConfig``) as its
    normalisation, and the config hash of the scene's own job."""
    from roadprn.errors import ConfigError

    def adapted(base: Config) -> Config:
        data = base.to_yaml_dict()
        if scene.area:
            data["input"].update({"window": None, "bbox": None, "bbox_crs": None,
                                  **scene.area})
        if normalization is not None:
            data["input"]["normalization"] = normalization.model_dump(mode="json")
        try:
            return type(base).model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{scene.path}: its area in the scene list is invalid "
                              f"({one_line(exc, 300)})") from None

    return adapted(task_config), config_hash(adapted(config))


def worker_config(config: Config, settings: BatchConfig) -> Config:
    """The config tasks run with: torch threads sized to the worker unless set explicitly."""
    if config.inference.torch_threads is not None or settings.scheduler:
        return config
    data = config.to_yaml_dict()
    data["inference"]["torch_threads"] = settings.threads_per_worker
    return type(config).model_validate(data)


def plan_splits(todo: list[SceneTask], models: dict[str, Any], settings: BatchConfig,
                workers: int) -> dict[str, list[tuple[int, int]]]:
    """Bands of tile rows of every scene worth splitting (see ``choose_splits``), by scene name.

    ``models``: each scene's model by scene name (a scene without one is never split).
    Reads only headers, a few at a time (remote headers take a round trip each).
    """
    from concurrent.futures import ThreadPoolExecutor

    from roadprn.batch.split import choose_splits, header_tile_plan

    # a scene cut to an area (input.window / input.bbox) runs whole: the area is the job
    candidates = [t for t in todo if t.name in models
                  and t.config.input.window is None and t.config.input.bbox is None]
    if settings.split_tiles <= 0 or not candidates:
        return {}
    with ThreadPoolExecutor(min(8, len(candidates)), "roadprn-plan") as pool:
        plans = dict(zip((t.name for t in candidates),
                         pool.map(lambda t: header_tile_plan(t.path, models[t.name], t.config),
                                  candidates),
                         strict=True))
    splits = choose_splits(plans, settings.split_tiles, workers)
    for task in candidates:
        plan = plans[task.name]
        if task.name in splits and plan is not None:
            log.info("%s: %d tiles, split into %d bands of tile rows", task.path,
                     len(plan), len(splits[task.name]))
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
    """Submit every scene and record each result as it arrives, until every scene has one."""
    from roadprn.runtime.progress import progress_bar

    resources = {"GPU": 1} if settings.gpus_per_worker else None
    splits = splits or {}
    tasks: dict[str, SceneTask] = {}  # scene task key -> task, while it has no result
    scene_futures: dict[str, Any] = {}
    live: dict[str, Any] = {}
    band_futures: dict[str, list[Any]] = {}  # final task key -> its bands
    finished: queue.Queue[Any] = queue.Queue()  # filled by Dask's event loop thread

    def submit(task: SceneTask) -> None:
        key = f"roadprn-scene-{task.name}-{run_id}-{task.attempt}"
        tasks[key] = task
        if task.name in splits and _fresh_pieces_folder(task):
            future = submit_split(task, splits[task.name], key)
        else:
            future = client.submit(process_scene, task, key=key, pure=False,
                                   resources=resources)
        live[key] = scene_futures[key] = future
        future.add_done_callback(finished.put)

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

    tiles = 0
    bar = progress_bar(total=len(todo), unit="scene", desc="batch", enabled=progress,
                       dynamic_ncols=True)

    def record(task: SceneTask, result: dict[str, Any]) -> None:
        nonlocal tiles
        result.pop("transient", None)
        result["run_id"] = run_id
        manifest.append(result)
        summary.records.append(result)
        tiles += result.get("tiles") or 0
        bar.update(1)
        bar.set_postfix(tiles=tiles, failed=len(summary.failed), refresh=False)

    watch = _WorkerWatch(client)
    try:
        for queued in todo:
            submit(queued)
        while tasks:
            try:
                future = finished.get(timeout=POLL_S)
            except queue.Empty:
                reason = watch.gone_for_good()
                if reason is not None:
                    _give_up(client, tasks, live, reason, record)
                continue
            task = tasks.pop(future.key, None)
            if task is None or scene_futures.pop(future.key, None) is not future:
                continue  # already given up
            live.pop(future.key, None)
            bands = band_futures.pop(future.key, [])
            result = _result(future, task)
            future.release()
            for band in bands:
                live.pop(band.key, None)
            if bands and result["status"] == "failed":
                client.cancel(bands)  # e.g. a band's worker died: the others are not needed
            for band in bands:
                band.release()
            if (result["status"] == "failed" and result.get("transient", False)
                    and task.attempt <= settings.retries):
                log.warning("%s: attempt %d failed (%s); retrying", task.path, task.attempt,
                            result["error"])
                submit(SceneTask(**{**task.__dict__, "attempt": task.attempt + 1}))
                continue
            record(task, result)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(live.values()))
        raise
    finally:
        bar.close()


class _WorkerWatch:
    """Tells when the cluster has had no worker for :data:`NO_WORKER_GRACE_S` seconds.

    Counted from the first look that finds none (workers of a job queue may take long to
    start, so the clock only runs once no worker is up, and a worker seen again resets it).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.since: float | None = None

    def gone_for_good(self) -> str | None:
        try:
            workers = len(self.client.nthreads())
        except Exception:  # noqa: BLE001 - the scheduler itself is out of reach
            workers = 0
        if workers:
            self.since = None
            return None
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self.since < NO_WORKER_GRACE_S:
            return None
        return (f"no Dask worker left for {NO_WORKER_GRACE_S:.0f} s "
                "(the workers kept dying or could not start)")


def _give_up(client: Any, tasks: dict[str, SceneTask], live: dict[str, Any], reason: str,
             record: Callable[[SceneTask, dict[str, Any]], None]) -> None:
    """Every scene still waiting fails with ``reason``; its tasks are cancelled."""
    with contextlib.suppress(Exception):
        client.cancel(list(live.values()))
    log.warning("%s; %d scene(s) failed", reason, len(tasks))
    for task in list(tasks.values()):
        with contextlib.suppress(OSError):
            if task.folder.is_dir():
                shutil.rmtree(task.folder)
        record(task, {"type": "scene", "scene": task.path, "name": task.name,
                      "attempt": task.attempt, "status": "failed", "error": reason,
                      "error_type": "NoWorkers", "config_hash": task.config_hash,
                      "model_hashes": task.model_hashes})
    tasks.clear()
    live.clear()


def _result(future: Any, task: SceneTask) -> dict[str, Any]:
    """The task's own record, or a failure record when the task itself could not finish."""
    from distributed import KilledWorker

    from roadprn.batch.worker import crash_log_folder, manifest_path_of
    from roadprn.runtime.crashlog import short_message, write_crash_log

    extra: dict[str, Any] = {}
    try:
        result = future.result()
        if isinstance(result, dict) and result.get("status") in ("done", "failed"):
            return result
        raise TypeError(f"a scene task returned {type(result).__name__}, not its record")
    except KilledWorker as exc:
        deaths = (getattr(exc, "allowed_failures", None) or 3) + 1
        error = f"worker died {deaths} times while processing this scene (KilledWorker)"
        error_type = "KilledWorker"
    except RoadprnError as exc:
        error, error_type = one_line(exc, None), type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be deserialised
        error, error_type = short_message(exc), type(exc).__name__
        out_root = Path(task.out_root)
        log_path = write_crash_log(exc, crash_log_folder(out_root), f"batch scene {task.path}")
        if log_path is not None:
            extra["log"] = manifest_path_of(log_path, out_root)
    with contextlib.suppress(OSError):
        if task.folder.is_dir():
            shutil.rmtree(task.folder)
    return {"type": "scene", "scene": task.path, "name": task.name, "attempt": task.attempt,
            "status": "failed", "error": error, "error_type": error_type,
            "config_hash": task.config_hash, "model_hashes": task.model_hashes, **extra}


def _counts(summary: BatchSummary) -> dict[str, int]:
    return {s: len(summary.by_status(s)) for s in ("done", "failed", "skipped")}


def _dashboard(client: Any) -> str | None:
    with contextlib.suppress(Exception):
        return client.dashboard_link
    return None
