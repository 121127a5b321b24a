"""Click options of ``train base`` / ``train prn``: the ``train.base`` / ``train.prn`` keys of the
one config, generated like every other command's options (:mod:`roadprn.cli.schema_options`).

Precedence as everywhere: defaults < ``--config FILE`` < ``--set train.<section>.KEY=VALUE`` <
explicit options. The command receives ``options`` built from the keys that were given, so
defaults that depend on other options (an architecture's tile size and halo) are still filled
in by the options' builder.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

from roadprn.cli.schema_options import Decorator, SchemaOption, schema_options
from roadprn.config import Config
from roadprn.train.options import OptionsT


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
