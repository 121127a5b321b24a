"""``roadprn merge RUN_DIR``: one road network from the done scenes of a batch run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from roadprn.batch.merge import DEFAULT_CELL_M, NETWORK_NAME
from roadprn.batch.merge_probability import MERGE_LEVELS

DEFAULT_LEVEL = "vector"  # measured: scripts/bench_merge_levels.py (docs/batch.md)
LEVEL_HELP = ("vector: join the scenes' networks cell by cell; probability: blend the scenes' "
              "probability rasters on one grid (feathered in overlaps) and vectorise once, on "
              "local threads.")


@click.command("merge")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help=f"The merged GeoPackage. [default: RUN_DIR/{NETWORK_NAME}]")
@click.option("--dst-crs", metavar="CRS",
              help="CRS of the merged network (EPSG code or WKT). [default: the CRS most "
                   "scenes share, EPSG:4326 when none has a majority]")
@click.option("--workers", type=click.IntRange(1, 1024),
              help="Cells merged at once (threads). [default: one per CPU core, at most 8]")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Merge the cells on this Dask scheduler's workers instead of threads.")
@click.option("--cell-size", "cell_m", type=click.FloatRange(100, 1e6), default=DEFAULT_CELL_M,
              show_default=True, help="Side of the square cells merged one at a time (metres).")
@click.option("--merge-level", "level", type=click.Choice(MERGE_LEVELS), default=DEFAULT_LEVEL,
              show_default=True, help=LEVEL_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
def merge(ctx: click.Context, run_dir: Path, out: Path | None, dst_crs: str | None,
          workers: int | None, scheduler: str | None, cell_m: float, level: str,
          overwrite: bool, as_json: bool) -> None:
    """Join the road networks of a batch run's done scenes into one GeoPackage.

    Overlaps keep one copy of each road (the scene that saw it farther from its border), roads
    cut at scene borders are joined to their continuation, junctions and lengths are
    recomputed. Failed scenes leave a gap, listed in the file's runs record.
    """
    from roadprn.batch.merge import merge_run
    from roadprn.cli.common import show_progress

    summary = merge_run(run_dir, out, dst_crs, workers=workers, scheduler=scheduler,
                        cell_m=cell_m, overwrite=overwrite, progress=show_progress(ctx),
                        level=level)
    report = summary.as_dict()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not (ctx.obj or {}).get("quiet"):
        click.echo(merge_line(report))


def merge_line(report: dict[str, object]) -> str:
    """The one console line of a merge."""
    gaps = report["gaps"]
    assert isinstance(gaps, list)
    road_m = report["road_length_m"]
    assert isinstance(road_m, float | int)
    gap_text = f"; {len(gaps)} gap(s): " + ", ".join(str(g["name"]) for g in gaps[:5]) \
        if gaps else ""
    resumed = report.get("cells_resumed") or 0
    resumed_text = f"; {resumed} cell(s) resumed" if resumed else ""
    return (f"merged {report['scenes']} scene(s) into {report['path']}: {report['roads']} "
            f"roads, {report['junctions']} junctions, {road_m / 1000:.3f} km "
            f"({report['dst_crs']}){gap_text}{resumed_text}")
