"""Options and helpers shared by commands: config loading, progress policy."""

from __future__ import annotations

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


def refine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--refine``, ``--prn`` and ``--fusion``: PatchRefineNet options of extract and batch."""
    func = click.option("--fusion", type=click.Choice(["paper", "global", "local", "mean"]),
                        help="How PRN's global and local maps become the refined mask.")(func)
    func = click.option("--prn", "prn_model", help="PRN checkpoint (.pt), or 'default'.")(func)
    func = click.option("--refine", "refine_method", type=click.Choice(["auto", "prn", "none"]),
                        help="PatchRefineNet refinement (auto: when a PRN exists for the base "
                             "model).")(func)
    return func


def refine_overrides(refine_method: str | None, prn_model: str | None,
                     fusion: str | None) -> dict[str, Any]:
    return {"refine.method": refine_method, "refine.model": prn_model, "refine.fusion": fusion}


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
    if ctx.find_root().obj.get("quiet"):
        return False
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty()
