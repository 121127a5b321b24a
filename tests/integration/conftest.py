"""Fixtures of the integration suite: one Dask cluster for every in-process batch test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dask_client():
    """A ``distributed.Client`` on one LocalCluster with 2 worker processes of 1 thread each,
    shared by every test that runs batches in this process (a cluster takes seconds to start).

    Tests leave it as they found it: a test that kills a worker waits until its nanny has
    started it again. Tests of clusters themselves (one without workers, the CLI's own cluster
    in a ``roadprn batch`` process) make their own and say why.
    """
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    with Client(cluster) as client:
        yield client
    cluster.close()
