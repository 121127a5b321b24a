"""Options and helpers shared by commands: config loading, progress policy."""

from __future__ import annotations

import click

from roadprn.cli.schema_options import (
    SchemaOption,
    parse_bands,
    parse_bbox,
    parse_window,
    schema_options,
)

__all__ = ["PIPELINE_OPTIONS", "parse_bands", "pipeline_options", "show_progress"]


#: The pipeline options shared by ``extract`` and ``batch`` (so both run the same job the same
#: way); type, choices and help come from the config field at each key.
PIPELINE_OPTIONS: list[SchemaOption] = [
    SchemaOption("model", ("-m", "--model")),
    SchemaOption("refine.method", ("--refine",), param="refine_method"),
    SchemaOption("refine.model", ("--prn",), param="prn_model"),
    SchemaOption("refine.fusion"),
    SchemaOption("inference.device"),
    SchemaOption("tiling.tile_size"),
    SchemaOption("tiling.halo"),
    SchemaOption("tiling.batch_size"),
    SchemaOption("tiling.blend"),
    SchemaOption("output.threshold"),
    SchemaOption("input.bands", convert=parse_bands, metavar="1,2,3"),
    SchemaOption("input.window", convert=parse_window, metavar="COL,ROW,WIDTH,HEIGHT",
                 help="Process only this pixel window (like gdal_translate -srcwin)."),
    SchemaOption("input.bbox", convert=parse_bbox, metavar="MINX,MINY,MAXX,MAXY",
                 help="Process only this area, in the scene's CRS or --bbox-crs (like "
                      "gdal_translate -projwin, widened to whole pixels)."),
    SchemaOption("input.bbox_crs", ("--bbox-crs",), metavar="CRS"),
    SchemaOption("inference.tta"),
    SchemaOption("inference.compile", param="compile_model"),
    SchemaOption("output.write_probability", ("--no-probability",), set_to=False,
                 help="Write only the mask, not the probability raster."),
    SchemaOption("output.vector_format", ("--format",), param="vector_format"),
    SchemaOption("output.dst_crs"),
    SchemaOption("vectorize.enabled", ("--no-vectorize",), set_to=False,
                 help="Stop after the rasters; no road network."),
    SchemaOption("input.allow_ungeoreferenced", ("--allow-ungeoreferenced",), set_to=True,
                 help="Accept rasters without CRS (outputs in pixel coordinates)."),
    SchemaOption("resolution.force", ("--force-resolution",), set_to=True,
                 help="Run scenes far from the model's resolution (beyond "
                      "resolution.max_factor) instead of refusing them."),
]

#: ``--config``, ``--set`` and every pipeline option; the command receives ``config``.
pipeline_options = schema_options(PIPELINE_OPTIONS)


def show_progress(ctx: click.Context) -> bool:
    """Should this command show progress? Not with --quiet; and sets the process's progress
    mode: bars for a person at a terminal, a line every 30 s in CI, logs, pipes and ``nohup``
    (:mod:`roadprn.runtime.progress`)."""
    from roadprn.runtime.progress import mode_for_console, set_progress_mode

    quiet = bool((ctx.find_root().obj or {}).get("quiet"))  # obj is None when run alone
    mode = mode_for_console(quiet)
    set_progress_mode(mode)
    return mode != "off"
