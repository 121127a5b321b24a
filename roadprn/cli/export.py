"""``roadprn export MODEL --format onnx|torchscript -o FILE``: a checkpoint for other tools."""

from __future__ import annotations

import json

import click


@click.command("export")
@click.argument("model", type=str)
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True,
              help="onnx: onnxruntime, QGIS Deepness and other ONNX tools (road probability "
                   "out, Deepness metadata); torchscript: a traced module with roadprn's "
                   "input spec inside.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), required=True,
              help="The file to write (.onnx for ONNX).")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def export(model: str, fmt: str, out: str, overwrite: bool, as_json: bool) -> None:
    """Export a base model or PRN checkpoint (or 'default') to ONNX or TorchScript."""
    from roadprn.models.export import export_model

    result = export_model(model, fmt, out, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"{result.path}: {result.kind} model as {result.format} "
               f"(sha256 {result.sha256[:12]}…, from {result.source})")
    click.echo(f"checked: {result.checked_tiles} random tiles, max abs probability difference "
               f"{result.max_abs_diff:.1e} vs PyTorch")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
