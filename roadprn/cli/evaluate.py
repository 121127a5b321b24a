"""``roadprn evaluate``: score predictions against truths; JSON, Markdown and PNG reports."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click

from roadprn.errors import ConfigError
from roadprn.evaluate import io, report
from roadprn.evaluate.apls import APLSParams
from roadprn.evaluate.compare import EvalParams, Pair, evaluate_pair, read_pairs_csv, summarize
from roadprn.outputs.atomic import check_writable
from roadprn.outputs.staging import staged_run

log = logging.getLogger("roadprn.evaluate")

_PATH = click.Path(path_type=Path, dir_okay=False)


class _Finite(click.FloatRange):
    """A FloatRange that also refuses NaN (click lets NaN through every bound: comparisons
    with NaN are false) and says the allowed range in its one-line error."""

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; allowed: {self._describe_range()}",
                      param, ctx)
        return number


#: bounds of every numeric option (metres unless named otherwise): wide enough for any real
#: evaluation, narrow enough that no value makes a run allocate without bound or never end
THRESHOLD = _Finite(0, 1)
TOLERANCE_M = _Finite(0, 1000)
WIDTH_M = _Finite(0, 1000, min_open=True)
SNAP_M = _Finite(0, 1000)
SPACING_M = _Finite(1, 100_000)
MIN_PATH_M = _Finite(0, 1_000_000)
PIXEL_SIZE_M = _Finite(0, 100_000, min_open=True)
PATCH_SIZE = click.IntRange(1, 65536)


class _OneLineCommand(click.Command):
    """Bad options end like every other user error: one line, exit 2 (ConfigError), instead of
    click's usage block."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise ConfigError(exc.format_message()) from None


@click.command("evaluate", cls=_OneLineCommand)
@click.option("--pred", type=_PATH, help="Prediction: mask/probability raster or road lines.")
@click.option("--truth", type=_PATH, help="Truth: mask raster or road centrelines.")
@click.option("--pairs", "pairs_csv", type=_PATH,
              help="CSV with columns pred,truth[,image,ignore,name] (paths relative to it).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              required=True, help="Folder for metrics.json, report.md and figures.")
@click.option("--image", type=_PATH, help="Image under the TP/FP/FN overlay (same grid).")
@click.option("--ignore", type=_PATH,
              help="Ignore mask: raster (non-zero = ignore) or polygons; excluded everywhere.")
@click.option("--threshold", type=THRESHOLD, default=0.5, show_default=True,
              help="Probability at or above which a pixel is road.")
@click.option("--tolerance-m", type=TOLERANCE_M, default=3.0, show_default=True,
              help="Relaxed precision/recall distance and completeness/correctness buffer.")
@click.option("--truth-width-m", type=WIDTH_M, default=4.0,
              show_default=True, help="Road width when lines are rasterised.")
@click.option("--sweep", is_flag=True, help="Threshold sweep: PR curve and best threshold.")
@click.option("--patch-size", type=PATCH_SIZE, default=64, show_default=True,
              help="Patch side (pixels) of the per-patch IoU heat map.")
@click.option("--snap-m", type=SNAP_M, default=4.0, show_default=True,
              help="APLS: how far a control point may snap onto the other graph.")
@click.option("--control-spacing-m", type=SPACING_M, default=50.0,
              show_default=True, help="APLS: spacing of control points along roads.")
@click.option("--min-path-m", type=MIN_PATH_M, default=10.0, show_default=True,
              help="APLS: shorter routes are not scored.")
@click.option("--pixel-size-m", type=PIXEL_SIZE_M,
              help="Pixel size for rasters without georeferencing (enables relaxed metrics).")
@click.option("--no-plots", is_flag=True, help="Only metrics.json and report.md.")
@click.option("--overwrite", is_flag=True, help="Replace existing report files.")
def evaluate(pred: Path | None, truth: Path | None, pairs_csv: Path | None, out_dir: Path,
             image: Path | None, ignore: Path | None, threshold: float, tolerance_m: float,
             truth_width_m: float, sweep: bool, patch_size: int, snap_m: float,
             control_spacing_m: float, min_path_m: float, pixel_size_m: float | None,
             no_plots: bool, overwrite: bool) -> None:
    """Score predictions against truths with pixel and road-network metrics.

    Raster vs raster gives pixel metrics (IoU, precision, recall, F1, relaxed precision/recall);
    lines vs lines gives APLS and completeness/correctness/quality; a raster vs lines buffers
    the lines by --truth-width-m and gives pixel metrics. Prints the Markdown table.
    """
    if pairs_csv is not None:
        if pred or truth or image or ignore:
            raise ConfigError("give either --pairs or --pred/--truth (with --image/--ignore)")
        pairs = read_pairs_csv(pairs_csv)
    else:
        if pred is None or truth is None:
            raise ConfigError("give --pred and --truth, or --pairs")
        pairs = [Pair(pred=pred, truth=truth, name=pred.stem, image=image, ignore=ignore)]
    params = EvalParams(threshold=threshold, tolerance_m=tolerance_m, truth_width_m=truth_width_m,
                        patch_size=patch_size, sweep=sweep,
                        pixel_size_m=(pixel_size_m, pixel_size_m) if pixel_size_m else None,
                        apls=APLSParams(control_spacing_m=control_spacing_m, snap_m=snap_m,
                                        min_path_m=min_path_m))
    json_path, md_path = out_dir / "metrics.json", out_dir / "report.md"
    for path in (json_path, md_path):
        check_writable(path, overwrite)  # fail before any work

    results = []
    for pair in pairs:
        log.info("evaluating %s", pair.name)
        results.append(evaluate_pair(pair, params))
    summary = summarize(results, params)

    # all files appear together or none does (a full disk after two figures left them behind)
    with staged_run(out_dir, "evaluate", [json_path, md_path], overwrite) as staged:
        folder = staged.folder
        figures = [] if no_plots else _write_figures(results, params, folder, overwrite)
        report.write_json(folder / json_path.name,
                          report.metrics_document(summary, results, params), overwrite)
        report.write_text(folder / md_path.name,
                          report.markdown_report(summary, results, params, figures), overwrite)
    click.echo(report.markdown_table(summary, results))


def _write_figures(results: list, params: EvalParams, out_dir: Path, overwrite: bool) -> list[str]:
    names: list[str] = []
    single = len(results) == 1

    def name(stem: str, result) -> str:  # noqa: ANN001
        return f"{stem}.png" if single else f"{stem}_{result.pair.name}.png"

    for r in results:
        if r.kind == "pixel":
            rgb = (io.read_image_rgb(r.pair.image, r.grid_shape, r.packed_masks[1])
                   if r.pair.image else None)
            names.append(name("overlay", r))
            report.plot_overlay(r, out_dir / names[-1], overwrite, rgb)
            names.append(name("patch_iou", r))
            report.plot_patch_iou(r, out_dir / names[-1], overwrite,
                                  r.patch_size or params.patch_size)
        else:
            names.append(name("network", r))
            report.plot_network(r, out_dir / names[-1], overwrite)
    if any(r.sweep is not None for r in results):
        names.append("pr_curve.png")
        report.plot_pr_curve(results, out_dir / names[-1], overwrite)
    return names
