"""Connecting to Dask: an existing scheduler, a LocalCluster, dask-jobqueue or Dask Gateway.

Optional back ends are imported only when asked for, with a clear error when missing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from roadprn.batch.config import BatchConfig
from roadprn.errors import ConfigError
from roadprn.parallel import available_cores

log = logging.getLogger(__name__)


def local_worker_count(settings: BatchConfig) -> int:
    if settings.workers:
        return settings.workers
    if settings.gpus_per_worker:
        return max(1, _cuda_device_count() // settings.gpus_per_worker)
    return max(1, available_cores() // settings.threads_per_worker)


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def open_client(settings: BatchConfig) -> Iterator[Any]:
    """A ``distributed.Client`` for the configured cluster; the cluster is closed on exit."""
    from distributed import Client

    if settings.scheduler:
        try:
            client = Client(settings.scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {settings.scheduler}: {exc}") from None
        with client:
            yield client
        return
    with _make_cluster(settings) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _make_cluster(settings: BatchConfig) -> Iterator[Any]:
    if settings.cluster == "local":
        cluster = local_cluster(settings)
    elif settings.cluster in ("slurm", "pbs"):
        cluster = jobqueue_cluster(settings)
    else:
        cluster = gateway_cluster(settings)
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.close()


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
        silence_logs=logging.ERROR,
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
        raise ConfigError("batch.cluster 'gateway' needs dask-gateway: pip install dask-gateway") from None
    gateway = Gateway(settings.gateway_address)
    cluster = gateway.new_cluster(**settings.gateway_options)
    cluster.scale(settings.workers or 1)
    return cluster
