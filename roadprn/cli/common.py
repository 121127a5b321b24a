"""Options and helpers shared by commands: config loading, progress policy."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from roadprn.config import Config, load_config, parse_set_option
from roadprn.errors import ConfigError


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE`` and repeatable ``--set KEY=VALUE``."""
    func = click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
                        help="Override one config key, e.g. --set tiling.halo=64 (repeatable).")(func)
    func = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help="YAML config (see configs/default.yaml); only changed keys needed.")(func)
    return func


# The pipeline options shared by ``extract`` and ``batch`` (so both run the same job the same
# way): (click option, config key, how a given value becomes the config value).
_PIPELINE_OPTIONS: list[tuple[Callable[..., Any], str, Callable[[Any], Any] | None]] = [
    (click.option("-m", "--model", help="Base model checkpoint (.pt), 'default' or 'default-pan'."),
     "model", None),
    (click.option("--refine", "refine_method", type=click.Choice(["auto", "prn", "none"]),
                  help="PatchRefineNet refinement (auto: when a PRN exists for the base model)."),
     "refine.method", None),
    (click.option("--prn", "prn_model", help="PRN checkpoint (.pt), or 'default'."),
     "refine.model", None),
    (click.option("--fusion", type=click.Choice(["paper", "global", "local", "mean"]),
                  help="How PRN's global and local maps become the refined mask."),
     "refine.fusion", None),
    (click.option("--device", help="auto, cpu, cuda, cuda:N or mps."), "inference.device", None),
    (click.option("--tile-size", type=int, help="Tile side in pixels (default: from the model)."),
     "tiling.tile_size", None),
    (click.option("--halo", type=int,
                  help="Tile overlap on each side in pixels (default: from the model)."),
     "tiling.halo", None),
    (click.option("--batch-size", type=int, help="Tiles per forward pass."),
     "tiling.batch_size", None),
    (click.option("--blend", type=click.Choice(["hann", "crop"]),
                  help="How overlapping tiles merge."), "tiling.blend", None),
    (click.option("--threshold", type=float,
                  help="Road probability threshold for the mask (0..1)."),
     "output.threshold", None),
    (click.option("--bands", help="1-based bands to feed the model, e.g. 1,2,3."),
     "input.bands", lambda text: parse_bands(text)),
    (click.option("--tta/--no-tta", default=None, help="Average predictions over flips (slower)."),
     "inference.tta", None),
    (click.option("--compile/--no-compile", "compile_model", default=None,
                  help="torch.compile the model."), "inference.compile", None),
    (click.option("--no-probability", is_flag=True, default=None,
                  help="Write only the mask, not the probability raster."),
     "output.write_probability", lambda flag: False if flag else None),
    (click.option("--format", "vector_format",
                  type=click.Choice(["gpkg", "geojson", "fgb", "parquet"]),
                  help="Road network format (default gpkg, with an embedded QGIS style)."),
     "output.vector_format", None),
    (click.option("--dst-crs",
                  help="CRS of the road network, e.g. EPSG:4326 (default: the scene's)."),
     "output.dst_crs", None),
    (click.option("--no-vectorize", is_flag=True, default=None,
                  help="Stop after the rasters; no road network."),
     "vectorize.enabled", lambda flag: False if flag else None),
    (click.option("--allow-ungeoreferenced", is_flag=True, default=None,
                  help="Accept rasters without CRS (outputs in pixel coordinates)."),
     "input.allow_ungeoreferenced", lambda flag: True if flag else None),
]


def pipeline_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config``, ``--set`` and every pipeline option; the command receives ``config``.

    Precedence: defaults < the YAML file < ``--set`` < explicit options.
    """

    names = [_param_name(option) for option, _, _ in _PIPELINE_OPTIONS]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        overrides: dict[str, Any] = {}
        for name, (_, key, convert) in zip(names, _PIPELINE_OPTIONS, strict=True):
            value = kwargs.pop(name)
            if value is not None and convert is not None:
                value = convert(value)
            if value is not None:
                overrides[key] = value
        config_path, set_items = kwargs.pop("config_path"), kwargs.pop("set_items")
        kwargs["config"] = build_config(config_path, set_items, **overrides)
        return func(*args, **kwargs)

    for option, _, _ in reversed(_PIPELINE_OPTIONS):
        wrapper = option(wrapper)
    return config_options(wrapper)


def _param_name(option: Callable[..., Any]) -> str:
    """The Python parameter name a click.option decorator will pass."""
    probe = option(lambda **_: None)
    return probe.__click_params__[-1].name  # type: ignore[attr-defined]


def build_config(config_path: str | None, set_items: tuple[str, ...], **options: Any) -> Config:
    """File, then ``--set``, then explicit command options (``None`` = not given)."""
    overrides = parse_set_option(set_items)
    overrides.update({k: v for k, v in options.items() if v is not None})
    return load_config(config_path, overrides)


def parse_bands(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        bands = [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise ConfigError(f"--bands expects 1-based band numbers like 1,2,3, got {text!r}") from None
    return bands


def show_progress(ctx: click.Context) -> bool:
    """Bars only for a person at a terminal: not with --quiet, not in CI, not when piped."""
    if (ctx.find_root().obj or {}).get("quiet"):  # obj is None when a command runs alone
        return False
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty()
