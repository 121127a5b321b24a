"""Settings of a batch run: where it computes, how it retries, whether it resumes.

Meant as the ``batch:`` section of the pipeline config; the CLI options of ``roadprn batch``
override it key by key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BatchConfig(BaseModel):
    """``roadprn batch``: many scenes on a Dask cluster (see docs/batch.md). CLI options
    override these."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    cluster: Literal["local", "slurm", "pbs", "gateway"] = Field(
        "local", description="local: a LocalCluster on this machine; slurm / pbs: dask-jobqueue "
                             "(pip install \"roadprn[cluster]\"); gateway: a Dask Gateway server "
                             "(same extra). A `scheduler` address overrides all of them.")
    scheduler: str | None = Field(None, description="tcp://HOST:PORT of a running Dask scheduler "
                                                    "(e.g. tcp://host:8786, on Kubernetes); null "
                                                    "= start a cluster.")
    workers: int | None = Field(None, ge=1, le=100000,
                                description="Worker processes (local), jobs (slurm/pbs) or "
                                            "Gateway workers; null = local: CPU cores / "
                                            "threads_per_worker, otherwise 1.")
    threads_per_worker: int = Field(1, ge=1, le=1024,
                                    description="CPU threads each worker gives to the one scene "
                                                "it runs at a time (torch intra-op threads).")
    memory_limit: str | int = Field("auto", description="Memory limit per worker (\"4GiB\", "
                                                         "\"auto\", or 0 for none); a worker "
                                                         "above it is restarted.")
    gpus_per_worker: int = Field(0, ge=0, le=64,
                                 description="GPUs per worker; > 0 runs each scene with the Dask "
                                             "resource {\"GPU\": 1} (local: one worker per "
                                             "GPU).")
    retries: int = Field(2, ge=0, le=100, description="Extra attempts of a scene after a "
                                                      "transient error (network read, timeout).")
    resume: bool = Field(True, description="Skip scenes whose outputs exist and match the run "
                                           "manifest.")
    normalization: Literal["auto", "scene", "archive"] = Field(
        "auto", description="How scenes that the model stretches by percentiles are stretched: "
                            "scene: each by its own percentiles (as extract); archive: all "
                            "scenes of one model, bands and data type by the percentiles of a "
                            "sample pooled over the archive, so that overlapping scenes are "
                            "predicted alike (kept in OUT/roadprn_normalization.json for "
                            "resumed runs); auto: archive with --merge, else scene.")
    split_tiles: int = Field(64, ge=0, description="A scene with more tiles than this, and more "
                                                   "than its share of the run (all tiles / "
                                                   "workers), runs as bands of tile rows on "
                                                   "several workers (same outputs); 0 never "
                                                   "splits.")
    jobqueue: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of dask_jobqueue.SLURMCluster / "
                                          "PBSCluster (queue, account, cores, memory, walltime, "
                                          "job_extra_directives, ...).")
    gateway_address: str | None = Field(None, description="Address of the Dask Gateway server "
                                                          "(cluster: gateway).")
    gateway_options: dict[str, Any] = Field(default_factory=dict,
                                            description="Options of the new Gateway cluster.")

    @model_validator(mode="after")
    def _check(self) -> BatchConfig:
        if self.cluster == "gateway" and not self.gateway_address and not self.scheduler:
            raise ValueError("cluster 'gateway' needs gateway_address")
        return self
