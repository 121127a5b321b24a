"""``roadprn batch INPUT... --out DIR``: many scenes on Dask, resumable, failure-isolated."""

from __future__ import annotations

import json
from pathlib import Path

import click

from roadprn.cli.common import pipeline_options, show_progress
from roadprn.config import Config


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: one sub-folder per scene and the run manifest.")
@click.option("--pattern", default="*.tif", show_default=True,
              help="File pattern searched in input folders.")
@click.option("--no-recursive", is_flag=True, help="Search input folders without sub-folders.")
@pipeline_options
@click.option("--scheduler", help="Address of a running Dask scheduler, e.g. tcp://host:8786.")
@click.option("--workers", type=int, help="Local worker processes (default: cores / threads).")
@click.option("--threads-per-worker", type=int, help="CPU threads per worker (default 1).")
@click.option("--memory-limit", help="Memory limit per local worker, e.g. 4GiB (default auto).")
@click.option("--gpus-per-worker", type=int, help="GPUs per worker (Dask resource GPU).")
@click.option("--retries", type=int, help="Extra attempts after a transient error (default 2).")
@click.option("--no-resume", is_flag=True, help="Redo every scene, even those already done.")
@click.option("--split-tiles", type=int,
              help="Split scenes with more tiles than this across workers (0: never; default 64).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
def batch(ctx: click.Context, inputs: tuple[str, ...], out_dir: str, pattern: str,
          no_recursive: bool, config: Config, scheduler: str | None, workers: int | None,
          threads_per_worker: int | None, memory_limit: str | None, gpus_per_worker: int | None,
          retries: int | None, no_resume: bool, split_tiles: int | None, as_json: bool) -> None:
    """Extract roads from every scene in INPUTS (files, folders, globs, lists) into --out.

    Each scene gets its own folder OUT/<name>-<hash>/ with the same outputs as `roadprn
    extract`; OUT/roadprn_manifest.jsonl records every scene. A rerun skips scenes whose outputs
    match the manifest. Exit code 6 when some scenes failed (the others are complete).
    """
    from pydantic import ValidationError

    from roadprn.batch import BatchConfig, collect_inputs, run_batch
    from roadprn.config import format_validation_error
    from roadprn.errors import BatchFailuresError, ConfigError

    base = getattr(config, "batch", None) or BatchConfig()
    changes = {k: v for k, v in {
        "scheduler": scheduler, "workers": workers, "threads_per_worker": threads_per_worker,
        "memory_limit": memory_limit, "gpus_per_worker": gpus_per_worker, "retries": retries,
        "resume": False if no_resume else None, "split_tiles": split_tiles,
    }.items() if v is not None}
    try:
        settings = BatchConfig.model_validate({**base.model_dump(), **changes})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc).replace("config key '", "batch option '")) \
            from None

    # --out may lie inside an input folder: its own outputs are never new scenes
    scenes = collect_inputs(inputs, pattern, recursive=not no_recursive, out_dir=out_dir)
    quiet = bool(ctx.find_root().obj.get("quiet"))
    # SIGTERM is turned into KeyboardInterrupt by the CLI group (roadprn.runtime.signals)
    summary = run_batch(scenes, config, out_dir, settings, progress=show_progress(ctx),
                        echo=None if quiet else (lambda line: click.echo(line, err=True)))
    report = summary.as_dict()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{report['done']} done, {report['skipped']} skipped (already done), "
                   f"{len(report['failed'])} failed in {report['seconds']:.1f} s; "
                   f"{report['road_length_m'] / 1000:.3f} km of roads; manifest {summary.manifest}")
        for failure in report["failed"]:  # one line each; a bug's traceback is in its log
            details = (f" (details: {Path(out_dir) / failure['log']})" if failure.get("log")
                       else "")
            click.echo(f"failed  {failure['scene']}: {failure['error']}{details}")
    if report["failed"]:
        raise BatchFailuresError(f"{len(report['failed'])} of {len(scenes)} scene(s) failed; "
                                 f"see {summary.manifest}")
