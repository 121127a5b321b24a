"""Connecting to Dask: an existing scheduler, a LocalCluster, dask-jobqueue or Dask Gateway.

Optional back ends are imported only when asked for, with a clear error when missing.

A local cluster is started (and closed) with Ctrl-C/SIGTERM held back until it is in a state
that can be shut down cleanly, is started again when a worker dies while it starts, and never
lets Dask close a worker's nanny because its worker process died (the nanny restarts it).
Dask's own log lines stay off the console unless roadprn runs with ``-v``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from roadprn.batch.config import BatchConfig
from roadprn.errors import ConfigError, RoadprnError
from roadprn.runtime.parallel import available_cores

log = logging.getLogger(__name__)

START_ATTEMPTS = 3  # a local cluster whose worker died while it started is started again
# Dask closes a worker's nanny when no worker of that name is back within this delay (15 s by
# default); on a busy machine a worker killed repeatedly takes longer to restart, its nanny was
# closed, and the run waited for ever with no worker. A local nanny restarts its worker itself.
LOST_WORKER_TIMEOUT = "7 days"
# Dask sends a worker ceil(1.1 x threads) tasks: with one thread, a second scene waits on the
# worker, and when that worker dies (a scene that crashes it, the OOM killer) the waiting,
# innocent scene is counted as a suspect too and can fail with KilledWorker after its
# neighbours' crashes (seen in CI). At 1.0 a worker holds only the scenes it runs.
WORKER_SATURATION = 1.0


def local_worker_count(settings: BatchConfig) -> int:
    if settings.workers:
        return settings.workers
    if settings.gpus_per_worker:
        return max(1, _cuda_device_count() // settings.gpus_per_worker)
    return max(1, available_cores() // settings.threads_per_worker)


def check_local_gpus(settings: BatchConfig) -> None:
    """``--gpus-per-worker`` on this machine needs that many CUDA GPUs: say so up front.

    Without the check a CPU-only machine started workers holding a GPU resource they did not
    have, and every scene ran on the CPU without a word.
    """
    if not settings.gpus_per_worker:
        return
    available = _cuda_device_count()
    if available < settings.gpus_per_worker:
        raise ConfigError(f"--gpus-per-worker {settings.gpus_per_worker}: this machine has "
                          f"{available} CUDA GPU(s) visible to torch; drop the option to run "
                          "on the CPU, or use a scheduler whose workers have GPUs")


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def dask_log_level() -> int:
    """Dask's log level: its errors with ``-v``, otherwise nothing (one line per failed scene)."""
    return logging.ERROR if logging.getLogger("roadprn").isEnabledFor(logging.INFO) \
        else logging.CRITICAL


@contextlib.contextmanager
def quiet_dask() -> Iterator[None]:
    """Dask's loggers in this process at :func:`dask_log_level` while the run lasts."""
    level = dask_log_level()
    loggers = [logging.getLogger(name) for name in ("distributed", "tornado", "asyncio")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.level))
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous, strict=True):
            logger.setLevel(old)


@contextlib.contextmanager
def held_interrupts() -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM back; on leaving, a held one is raised as ``KeyboardInterrupt``.

    Starting or closing a cluster interrupted half-way leaves workers Dask cannot close (and an
    ``atexit`` traceback); a few seconds' delay of a Ctrl-C is better. The list yielded holds
    the signals received so far (a caller may stop early). A no-op off the main thread.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def hold(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def open_client(settings: BatchConfig) -> Iterator[Any]:
    """A ``distributed.Client`` for the configured cluster; the cluster is closed on exit."""
    import dask
    from distributed import Client

    if settings.scheduler:
        try:
            with held_interrupts():
                remote = Client(settings.scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {settings.scheduler}: "
                              f"{exc}") from None
        try:
            yield remote
        finally:
            with held_interrupts():
                _close_quietly(remote)
        return
    cluster: Any = None
    client = None
    with dask.config.set({"distributed.deploy.lost-worker-timeout": LOST_WORKER_TIMEOUT,
                          "distributed.scheduler.worker-saturation": WORKER_SATURATION}), \
            _quiet_resource_tracker():
        try:
            with held_interrupts() as received:
                cluster = _start_cluster(settings, received)
                if not received:
                    client = Client(cluster)
            yield client
        finally:
            with held_interrupts():
                if client is not None:
                    _close_quietly(client)
                if cluster is not None:
                    _close_quietly(cluster)


@contextlib.contextmanager
def _quiet_resource_tracker() -> Iterator[None]:
    """Keep multiprocessing's resource tracker (a process of its own) from warning on stderr.

    A worker killed while it starts or closes leaves a semaphore behind, and the tracker says
    so at exit ("There appear to be 1 leaked semaphore objects"): noise after a batch's last
    line. It takes its warning filters from the environment when it starts.
    """
    if logging.getLogger("roadprn").isEnabledFor(logging.INFO):
        yield
        return
    rule = "ignore:resource_tracker:UserWarning"
    old = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = f"{old},{rule}" if old else rule
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = old


def _close_quietly(closable: Any) -> None:
    """Close a client or cluster; a failure to close must not replace the run's own outcome."""
    with contextlib.suppress(Exception):
        closable.close()
    # Dask's atexit hook would close it again and print what went wrong the first time
    with contextlib.suppress(Exception):
        closable.shutdown_on_close = False


def _start_cluster(settings: BatchConfig, received: list[int]) -> Any:
    if settings.cluster in ("slurm", "pbs"):
        return jobqueue_cluster(settings)
    if settings.cluster == "gateway":
        return gateway_cluster(settings)
    from distributed.deploy.spec import SpecCluster

    from roadprn.runtime.crashlog import short_message

    check_local_gpus(settings)
    error: Exception | None = None
    for attempt in range(1, START_ATTEMPTS + 1):
        before = set(SpecCluster._instances)
        try:
            return local_cluster(settings)
        except Exception as exc:  # noqa: BLE001 - e.g. "Nanny failed to start": a worker died
            error = exc
            for cluster in set(SpecCluster._instances) - before:
                _close_quietly(cluster)  # half started: closed, and kept from Dask's atexit hook
            if received:
                raise KeyboardInterrupt from None
            log.warning("the local Dask cluster did not start (attempt %d of %d: %s)",
                        attempt, START_ATTEMPTS, short_message(exc))
    raise RoadprnError(f"the local Dask cluster failed to start {START_ATTEMPTS} times "
                       f"({short_message(error) if error else 'no error'})")


def gpu_resources(settings: BatchConfig) -> dict[str, float]:
    return {"GPU": settings.gpus_per_worker} if settings.gpus_per_worker else {}


def local_cluster(settings: BatchConfig) -> Any:
    """Worker processes (one scene at a time each) so GIL-bound steps never block each other."""
    from distributed import LocalCluster

    memory = settings.memory_limit
    return LocalCluster(
        n_workers=local_worker_count(settings),
        threads_per_worker=1,
        processes=True,
        memory_limit=0 if memory in (0, "0") else memory,
        resources=gpu_resources(settings) or None,
        dashboard_address=":0",
        silence_logs=dask_log_level(),
    )


def jobqueue_cluster(settings: BatchConfig) -> Any:
    """A SLURM/PBS cluster: ``batch.jobqueue`` holds the SLURMCluster/PBSCluster arguments."""
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(f"batch.cluster '{settings.cluster}' needs dask-jobqueue: "
                          "pip install dask-jobqueue") from None
    cls = dask_jobqueue.SLURMCluster if settings.cluster == "slurm" else dask_jobqueue.PBSCluster
    kwargs = dict(settings.jobqueue)
    kwargs.setdefault("processes", 1)
    kwargs.setdefault("cores", settings.threads_per_worker)
    if settings.gpus_per_worker:
        extra = list(kwargs.get("worker_extra_args", []))
        extra += ["--resources", f"GPU={settings.gpus_per_worker}"]
        kwargs["worker_extra_args"] = extra
    try:
        cluster = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"batch.jobqueue: {exc}") from None
    cluster.scale(jobs=settings.workers or 1)
    return cluster


def gateway_cluster(settings: BatchConfig) -> Any:
    try:
        from dask_gateway import Gateway
    except ImportError:
        raise ConfigError("batch.cluster 'gateway' needs dask-gateway: "
                          "pip install dask-gateway") from None
    gateway = Gateway(settings.gateway_address)
    cluster = gateway.new_cluster(**settings.gateway_options)
    cluster.scale(settings.workers or 1)
    return cluster
