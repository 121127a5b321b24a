"""Click options of ``train base`` / ``train prn`` generated from their options models.

Type, choices, help and default of each option come from the model's field
(:func:`roadprn.cli.schema_options.make_option`), so the command line cannot drift from the
options the library validates. Both commands take ``--config FILE`` and ``--set KEY=VALUE``
with keys under ``train.base.*`` / ``train.prn.*``; precedence: the model's defaults < the
file's ``train:`` section < ``--set`` < explicit options. The command receives ``options``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from roadprn.cli.schema_options import SchemaOption, make_option
from roadprn.config import parse_set_option, read_yaml_mapping
from roadprn.errors import ConfigError
from roadprn.train.options import OptionsT

_NOT_SET = SchemaOption("_").set_to  # the sentinel of "no set_to"


def _given(spec: SchemaOption, value: Any) -> Any:
    if value is None:
        return None
    if spec.set_to is not _NOT_SET:
        return spec.set_to if value else None
    return spec.convert(value) if spec.convert is not None else value


def _set_dotted(data: dict[str, Any], dotted: str, value: Any,
                defaults: dict[str, Any]) -> None:
    """Set ``a.b`` in ``data``; a section not yet there starts from its default values."""
    node: dict[str, Any] = data
    default: Any = defaults
    parts = dotted.split(".")
    for part in parts[:-1]:
        default = default.get(part) if isinstance(default, dict) else None
        child = node.setdefault(part, dict(default) if isinstance(default, dict) else {})
        if not isinstance(child, dict):
            raise ConfigError(f"training option '{part}' is a value, not a section "
                              f"(setting '{dotted}')")
        node = child
    node[parts[-1]] = value


def section_values(config_path: str | None, set_items: Sequence[str], section: str,
                   defaults: dict[str, Any]) -> dict[str, Any]:
    """``train.<section>`` of a YAML config plus ``--set train.<section>.KEY=VALUE`` items.

    Nested sections (``normalization``) are merged into their defaults key by key.
    """
    values: dict[str, Any] = {}
    if config_path is not None:
        data = read_yaml_mapping(Path(config_path))
        train = data.get("train") or {}
        if not isinstance(train, dict) or not isinstance(train.get(section) or {}, dict):
            raise ConfigError(f"{config_path}: 'train' must map base/prn to training options")
        values = {k: {**defaults[k], **v} if isinstance(v, dict)
                  and isinstance(defaults.get(k), dict) else v
                  for k, v in (train.get(section) or {}).items()}
    prefix = f"train.{section}."
    for key, value in parse_set_option(tuple(set_items)).items():
        if not key.startswith(prefix):
            raise ConfigError(f"--set {key}: train {section} takes keys under {prefix}*")
        _set_dotted(values, key[len(prefix):], value, defaults)
    return values


def training_options(model: type[OptionsT], section: str, specs: Sequence[SchemaOption],
                     build: Callable[..., OptionsT]) -> Callable[[Callable[..., Any]],
                                                               Callable[..., Any]]:
    """Add ``--config``, ``--set`` and one option per spec; the command receives ``options``.

    A spec's key is a dotted path into ``model`` (``normalization.mode``); ``build(**values)``
    validates the merged values (``make_options`` fills architecture-dependent defaults).
    """
    built = [(spec, *make_option(spec, model)) for spec in specs]
    defaults = model().model_dump(mode="json")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = section_values(kwargs.pop("config_path"), kwargs.pop("set_items"), section,
                                    defaults)
            for spec, _, param in built:
                value = _given(spec, kwargs.pop(param))
                if value is not None:
                    _set_dotted(values, spec.key, value, defaults)
            kwargs["options"] = build(**values)
            return func(*args, **kwargs)

        for _, option, _ in reversed(built):
            wrapper = option(wrapper)
        wrapper = click.option(
            "--set", "set_items", multiple=True, metavar="KEY=VALUE",
            help=f"Override one training option, e.g. --set train.{section}.epochs=5 "
                 "(repeatable).")(wrapper)
        return click.option(
            "--config", "config_path", type=click.Path(dir_okay=False),
            help=f"YAML file whose train: {section}: mapping holds training options (explicit "
                 "options win).")(wrapper)

    return decorate
