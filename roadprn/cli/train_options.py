"""Click options of ``train base`` / ``train prn``: the ``train.base`` / ``train.prn`` keys of the
one config, generated like every other command's options (:mod:`roadprn.cli.schema_options`),
and what both commands print (:func:`reporter`, :func:`echo_result`): the same conventions as
every command, human text on stdout by default, JSON with ``--json``, progress lines on stderr.

Precedence as everywhere: defaults < ``--config FILE`` < ``--set train.<section>.KEY=VALUE`` <
explicit options. The command receives ``options`` built from the keys that were given, so
defaults that depend on other options (an architecture's tile size and halo) are still filled
in by the options' builder.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import click

from roadprn.cli.schema_options import Decorator, SchemaOption, schema_options
from roadprn.config import Config
from roadprn.train.options import OptionsT

if TYPE_CHECKING:
    from roadprn.train.loop import TrainResult

#: ``--json`` of both training commands
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print a JSON summary on stdout instead of text.")


def given_options(config: Config, section: Literal["base", "prn"]) -> dict[str, Any]:
    """The training options of ``train.<section>`` that a file, ``--set`` or an option gave."""
    options = getattr(config.train, section)
    return {name: getattr(options, name) for name in options.model_fields_set}


def training_options(section: Literal["base", "prn"], specs: Sequence[SchemaOption],
                     build: Callable[..., OptionsT]) -> Decorator:
    """``--config``, ``--set`` and one option per spec (keys relative to ``train.<section>``);
    ``build(**given)`` validates the options and fills dependent defaults."""
    keyed = [dataclasses.replace(spec, key=f"train.{section}.{spec.key}") for spec in specs]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, config: Config, **kwargs: Any) -> Any:
            kwargs["options"] = build(**given_options(config, section))
            return func(*args, **kwargs)

        return schema_options(keyed)(wrapper)

    return decorate


def reporter(ctx: click.Context) -> Callable[[str], None] | None:
    """Where the job's human lines go (what trains, one line per epoch): stderr, unless
    ``--quiet`` (then nowhere but the log)."""
    if (ctx.find_root().obj or {}).get("quiet"):
        return None
    return lambda line: click.echo(line, err=True)


def result_summary(result: TrainResult, **extra: Any) -> dict[str, Any]:
    """What a finished run made, as ``--json`` prints it (``extra`` after the common keys)."""
    return {
        "checkpoint": str(result.paths.checkpoint), "sha256": result.checkpoint_sha256,
        **extra, "best_epoch": result.best_epoch,
        "epochs": result.history[-1]["epoch"] if result.history else 0,
        "stopped_early": result.stopped_early, "metrics": result.best_metrics,
        "state": str(result.paths.state), "metrics_csv": str(result.paths.metrics_csv),
        "metrics_json": str(result.paths.metrics_json),
    }


def echo_result(result: TrainResult, as_json: bool, **extra: Any) -> None:
    """The run's summary on stdout: aligned ``key value`` lines, or JSON with ``--json``."""
    summary = result_summary(result, **extra)
    if as_json:
        click.echo(json.dumps(summary))
        return
    best = result.best_metrics
    shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items()
                      if k.startswith(("val_", "train_")) and isinstance(v, float))
    lines = {
        "epochs": f"{summary['epochs']}" + (" (stopped early)" if result.stopped_early else ""),
        "best": f"epoch {result.best_epoch}" + (f": {shown}" if shown else ""),
        "model": summary["checkpoint"],
        "sha256": summary["sha256"] or "-",
        **{k.replace("_", " "): v for k, v in extra.items()},
        "state": summary["state"],
        "metrics": f"{summary['metrics_csv']}, {summary['metrics_json']}",
    }
    width = max(len(k) for k in lines)
    for key, value in lines.items():
        click.echo(f"{key:<{width}} {value}")
