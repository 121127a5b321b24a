"""``roadprn batch INPUT... --out DIR``: many scenes on Dask, resumable, failure-isolated."""

from __future__ import annotations

import json
from pathlib import Path

import click

from roadprn.cli.common import PIPELINE_OPTIONS, show_progress
from roadprn.cli.merge import DEFAULT_LEVEL, LEVEL_HELP, MERGE_LEVELS
from roadprn.cli.schema_options import SchemaOption, schema_options
from roadprn.config import Config

#: skipped files named one per line; the rest are counted
MAX_SKIPPED_SHOWN = 20

BATCH_OPTIONS = [
    SchemaOption("batch.scheduler"),
    SchemaOption("batch.workers", help="Local worker processes (default: cores / threads)."),
    SchemaOption("batch.threads_per_worker"),
    SchemaOption("batch.memory_limit", convert=str, metavar="SIZE"),
    SchemaOption("batch.gpus_per_worker"),
    SchemaOption("batch.retries"),
    SchemaOption("batch.resume", ("--no-resume",), set_to=False,
                 help="Redo every scene, even those already done."),
    SchemaOption("batch.split_tiles"),
    SchemaOption("batch.normalization"),
]


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: one sub-folder per scene and the run manifest.")
@click.option("--pattern", default="*.tif", show_default=True,
              help="File pattern searched in input folders.")
@click.option("--no-recursive", is_flag=True, help="Search input folders without sub-folders.")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Skip files whose name or path matches PATTERN (e.g. '*_nir.tif'; "
                   "repeatable). roadprn's own outputs and synth labels are always skipped.")
@click.option("--asset", "asset_key", metavar="KEY",
              help="The asset of each STAC item to process (default: the first with role "
                   "'data', else the first GeoTIFF/COG).")
@click.option("--stac/--no-stac", "write_stac", default=None,
              help="Write OUT/stac/: a STAC Collection of the outputs, one Item per scene "
                   "(default: when the inputs are a STAC catalog).")
@click.option("--merge", "merge_networks", is_flag=True,
              help="After the scenes, join their road networks into OUT/roadprn_network.gpkg "
                   "(as `roadprn merge OUT`).")
@click.option("--merge-level", type=click.Choice(MERGE_LEVELS), default=DEFAULT_LEVEL,
              show_default=True, help=f"With --merge: {LEVEL_HELP}")
@schema_options([*PIPELINE_OPTIONS, *BATCH_OPTIONS])
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
def batch(ctx: click.Context, inputs: tuple[str, ...], out_dir: str, pattern: str,
          no_recursive: bool, exclude: tuple[str, ...], asset_key: str | None,
          write_stac: bool | None, merge_networks: bool, merge_level: str, config: Config,
          as_json: bool) -> None:
    """Extract roads from every scene in INPUTS (files, folders, globs, lists, STAC catalogs)
    into --out.

    Each scene gets its own folder OUT/<name>-<hash>/ with the same outputs as `roadprn
    extract`; OUT/roadprn_manifest.jsonl records every scene, OUT/roadprn_summary.json and
    OUT/roadprn_quicklook.png sum the run up. A rerun skips scenes whose outputs match the
    manifest. Exit code 6 when some scenes failed (the others are complete).
    """
    from roadprn.batch import find_scenes, run_batch
    from roadprn.batch.inputs import outside_bbox
    from roadprn.batch.report import run_summary, summary_lines, write_summary
    from roadprn.batch.stac_out import write_run_catalog
    from roadprn.errors import BatchFailuresError, InputError

    # --out may lie inside an input folder: its own outputs are never new scenes
    found = find_scenes(inputs, pattern, recursive=not no_recursive, out_dir=out_dir,
                        exclude=exclude, asset_key=asset_key)
    scenes, skipped = found.scenes, list(found.skipped)
    area = config.input
    if area.bbox is not None:  # tiles of an archive around the area are not scenes to fail
        missed = outside_bbox(scenes, area.bbox, area.bbox_crs, area.allow_ungeoreferenced)
        skipped += [(s.path, "outside --bbox") for s in scenes if s.path in missed]
        scenes = [s for s in scenes if s.path not in missed]
        if not scenes:
            raise InputError(f"--bbox {','.join(f'{v:g}' for v in area.bbox)} misses every "
                             f"one of the {len(missed)} scene(s)")
    quiet = bool(ctx.find_root().obj.get("quiet"))
    if skipped and not quiet:
        for path, reason in skipped[:MAX_SKIPPED_SHOWN]:
            click.echo(f"skipped {path}: {reason}", err=True)
        if len(skipped) > MAX_SKIPPED_SHOWN:
            click.echo(f"skipped {len(skipped) - MAX_SKIPPED_SHOWN} more file(s)", err=True)
    # SIGTERM is turned into KeyboardInterrupt by the CLI group (roadprn.runtime.signals)
    summary = run_batch(scenes, config, out_dir, config.batch, progress=show_progress(ctx),
                        merging=merge_networks,
                        echo=None if quiet else (lambda line: click.echo(line, err=True)))
    report = summary.as_dict()
    report["skipped_files"] = [{"path": path, "reason": reason} for path, reason in skipped]
    if merge_networks:  # failed scenes are gaps in the merged network, never a stop
        from roadprn.batch.merge import merge_run

        report["merge"] = merge_run(Path(out_dir), None, None, workers=None,
                                    scheduler=config.batch.scheduler,
                                    progress=show_progress(ctx),
                                    level=merge_level).as_dict()
    # after the scenes (and a merge of their networks): the run's summary and STAC catalog
    totals = run_summary(out_dir, summary.records, summary.seconds)
    write_summary(out_dir, totals, records=summary.records)
    report["summary"] = totals
    if write_stac or (write_stac is None and found.stac):
        catalog = write_run_catalog(out_dir, summary.records, found.stac,
                                    run_id=next((r.get("run_id") for r in summary.records), None))
        report["stac"] = str(catalog) if catalog else None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{report['done']} done, {report['skipped']} skipped (already done), "
                   f"{len(report['failed'])} failed in {report['seconds']:.1f} s; "
                   f"{report['road_length_m'] / 1000:.3f} km of roads; manifest {summary.manifest}")
        for line in summary_lines(totals):
            click.echo(line)
        if report.get("merge"):
            from roadprn.cli.merge import merge_line

            click.echo(merge_line(report["merge"]))
        if report.get("stac"):
            click.echo(f"STAC collection {report['stac']}")
        for failure in report["failed"]:  # one line each; a bug's traceback is in its log
            details = (f" (details: {Path(out_dir) / failure['log']})" if failure.get("log")
                       else "")
            scene, error = str(failure["scene"]), str(failure["error"])
            if error.startswith(f"{scene}: "):  # most errors already name their file
                error = error[len(scene) + 2:]
            click.echo(f"failed  {scene}: {error}{details}")
    if report["failed"]:
        raise BatchFailuresError(f"{len(report['failed'])} of {len(scenes)} scene(s) failed; "
                                 f"see {summary.manifest}")
