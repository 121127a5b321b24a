"""``roadprn evaluate``: score predictions against truths; JSON, Markdown and PNG reports."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from roadprn.cli.schema_options import SchemaOption, schema_options
from roadprn.config import Config
from roadprn.errors import ConfigError
from roadprn.evaluate import io, report
from roadprn.evaluate.apls import APLSParams
from roadprn.evaluate.compare import EvalParams, Pair, evaluate_pair, read_pairs_csv, summarize
from roadprn.outputs.atomic import check_writable
from roadprn.outputs.staging import staged_run

log = logging.getLogger("roadprn.evaluate")

_PATH = click.Path(path_type=Path, dir_okay=False)


EVALUATE_OPTIONS = [
    SchemaOption("evaluate.threshold"),
    SchemaOption("evaluate.tolerance_m"),
    SchemaOption("evaluate.truth_width_m"),
    SchemaOption("evaluate.sweep", ("--sweep",), set_to=True,
                 help="Threshold sweep: PR curve and best threshold."),
    SchemaOption("evaluate.patch_size"),
    SchemaOption("evaluate.apls.snap_m"),
    SchemaOption("evaluate.apls.control_spacing_m"),
    SchemaOption("evaluate.apls.min_path_m"),
    SchemaOption("evaluate.apls.junctions", ("--apls-junctions",)),
    SchemaOption("evaluate.drop_non_roads", ("--keep-all-features",), set_to=False,
                 help="Keep OpenStreetMap features that are not roads (stop lines, crossings, "
                      "bus stops...; evaluate.non_road_highway), dropped by default."),
    SchemaOption("evaluate.pixel_size_m"),
    SchemaOption("evaluate.plots", ("--no-plots",), set_to=False,
                 help="Only metrics.json and report.md."),
    SchemaOption("output.overwrite", ("--overwrite",), set_to=True,
                 help="Replace existing report files."),
]


def eval_params(config: Config) -> EvalParams:
    """The metrics' parameters from the config's ``evaluate:`` section."""
    section = config.evaluate
    pixel = section.pixel_size_m
    return EvalParams(threshold=section.threshold, tolerance_m=section.tolerance_m,
                      truth_width_m=section.truth_width_m, patch_size=section.patch_size,
                      sweep=section.sweep, pixel_size_m=(pixel, pixel) if pixel else None,
                      apls=APLSParams(control_spacing_m=section.apls.control_spacing_m,
                                      snap_m=section.apls.snap_m,
                                      min_path_m=section.apls.min_path_m,
                                      junctions=section.apls.junctions),
                      drop_highway=(frozenset(v.strip().lower() for v in section.non_road_highway)
                                    if section.drop_non_roads else frozenset()))


@click.command("evaluate")
@click.option("--pred", type=_PATH, help="Prediction: mask/probability raster or road lines.")
@click.option("--truth", type=_PATH, help="Truth: mask raster or road centrelines.")
@click.option("--pairs", "pairs_csv", type=_PATH,
              help="CSV with columns pred,truth[,image,ignore,name] (paths relative to it).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              required=True, help="Folder for metrics.json, report.md and figures.")
@click.option("--image", type=_PATH, help="Image under the TP/FP/FN overlay (same grid).")
@click.option("--ignore", type=_PATH,
              help="Ignore mask: raster (non-zero = ignore) or polygons; excluded everywhere.")
@schema_options(EVALUATE_OPTIONS)
@click.option("--json", "as_json", is_flag=True,
              help="Print the metrics document (as in metrics.json) instead of the table.")
def evaluate(pred: Path | None, truth: Path | None, pairs_csv: Path | None, out_dir: Path,
             image: Path | None, ignore: Path | None, config: Config, as_json: bool) -> None:
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
    params = eval_params(config)
    overwrite, no_plots = config.output.overwrite, not config.evaluate.plots
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
        document = report.metrics_document(summary, results, params)
        report.write_json(folder / json_path.name, document, overwrite)
        report.write_text(folder / md_path.name,
                          report.markdown_report(summary, results, params, figures), overwrite)
    if as_json:
        click.echo(json_path.read_text(encoding="utf-8"))  # the file's strict JSON, as written
        return
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
