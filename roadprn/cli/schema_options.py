"""Click options generated from the typed config, the one way every command gets its options.

A command lists the config keys it exposes (:class:`SchemaOption`); the option's type, choices,
help and default come from the pydantic field at that key, so an option can never drift from the
config it sets. The command receives one validated :class:`~roadprn.config.Config` built as
defaults < ``--config FILE`` < ``--set KEY=VALUE`` < explicit options.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from roadprn.cli.config_doc import field_bounds
from roadprn.config import Config, load_config, parse_set_option, section_model
from roadprn.errors import ConfigError

#: marks "not given": click passes None for options the user did not give
_UNSET: Any = object()


@dataclass(frozen=True)
class SchemaOption:
    """One click option that sets one config key.

    ``flags``: the option's names (default ``--<last key part>`` with dashes); ``set_to``: a
    plain flag that sets the key to this value when given (``--no-vectorize`` -> False);
    ``convert``: text -> config value for keys whose type has no natural command-line spelling
    (``--bands 1,2,3``); ``help``: replaces the field's description.
    """

    key: str
    flags: tuple[str, ...] = ()
    help: str | None = None
    param: str | None = None
    set_to: Any = _UNSET
    convert: Callable[[str], Any] | None = None
    metavar: str | None = None


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE`` and repeatable ``--set KEY=VALUE``."""
    func = click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
                        help="Override one config key, e.g. --set tiling.halo=64 "
                             "(repeatable; `roadprn config keys` lists every key).")(func)
    func = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help="YAML config (`roadprn config show` prints one with every key); "
                             "only changed keys needed.")(func)
    return func


def build_config(config_path: str | None, set_items: Sequence[str], **options: Any) -> Config:
    """File, then ``--set``, then explicit command options (``None`` = not given)."""
    overrides = parse_set_option(tuple(set_items))
    overrides.update({k: v for k, v in options.items() if v is not None})
    return load_config(config_path, overrides)


def config_field(key: str, model: type[BaseModel] = Config) -> FieldInfo:
    """The pydantic field at a dotted key (``tiling.halo``)."""
    parts = key.split(".")
    for part in parts[:-1]:
        model = _section_model(model.model_fields[part])
    return model.model_fields[parts[-1]]


def config_default(key: str, model: type[BaseModel] = Config) -> Any:
    """The default value at a dotted key, as the config holds it."""
    value: Any = model()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _section_model(field: FieldInfo) -> type[BaseModel]:
    section = section_model(field)
    if section is None:
        raise KeyError(f"not a config section: {field.annotation}")
    return section


def _without_none(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (an option left out is what ``None`` means)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses NaN (click lets NaN through every bound: comparisons with
    NaN are false) and says the allowed range in its one-line error."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; allowed: {self._describe_range()}",
                      param, ctx)
        return number


class FiniteFloat(click.types.FloatParamType):
    """A float that is not NaN or infinite (no bounds to show)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: the field's bound -> (click range argument, whether that end is open)
_CLICK_BOUNDS = {"ge": ("min", False), "gt": ("min", True), "le": ("max", False),
                 "lt": ("max", True)}


def _bounds(field: FieldInfo) -> dict[str, Any]:
    """click range arguments from the field's ``ge``/``gt``/``le``/``lt`` constraints."""
    bounds: dict[str, Any] = {}
    for name, value in field_bounds(field).items():
        if name in _CLICK_BOUNDS:
            key, is_open = _CLICK_BOUNDS[name]
            bounds[key] = value
            bounds[f"{key}_open"] = is_open
    return bounds


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    annotation = _without_none(annotation)
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


def click_type(annotation: Any, field: FieldInfo | None = None) -> Any:
    """The click parameter type for a field (``bool`` handled by the caller): numbers carry the
    field's bounds, so a bad value is refused before any work, naming the option."""
    annotation = _without_none(annotation)
    if typing.get_origin(annotation) is Literal:
        return click.Choice([str(v) for v in typing.get_args(annotation)])
    bounds = _bounds(field) if field is not None else {}
    if annotation is float:
        return FiniteFloatRange(**bounds) if bounds else FiniteFloat()
    if annotation is int:
        return click.IntRange(**bounds) if bounds else click.INT
    if annotation is str:
        return click.STRING
    raise TypeError(f"no command-line type for {annotation!r}: give the option a convert=")


def _flag_names(spec: SchemaOption) -> tuple[str, ...]:
    return spec.flags or ("--" + spec.key.rsplit(".", 1)[-1].replace("_", "-"),)


def _help(spec: SchemaOption, field: FieldInfo, model: type[BaseModel]) -> str:
    text = spec.help or field.description or ""
    if spec.help is None and spec.set_to is _UNSET:
        default = config_default(spec.key, model)
        if default is not None:
            shown = str(default).lower() if isinstance(default, bool) else default
            text = f"{text} [default: {shown}]".strip()
    return text


def make_option(spec: SchemaOption,
                model: type[BaseModel] = Config) -> tuple[Callable[..., Any], str]:
    """A click option decorator for ``spec`` and the parameter name the command receives."""
    field = config_field(spec.key, model)
    names = _flag_names(spec)
    param = spec.param or names[-1].split("/")[0].lstrip("-").replace("-", "_")
    help_text = _help(spec, field, model)
    if spec.set_to is not _UNSET:
        option = click.option(*names, param, is_flag=True, default=None, help=help_text)
    elif _without_none(field.annotation) is bool and spec.convert is None:
        flag = names[-1].lstrip("-")
        declared = names[-1] if "/" in names[-1] else f"--{flag}/--no-{flag}"
        option = click.option(*names[:-1], declared, param, default=None, help=help_text)
    elif spec.convert is not None:
        option = click.option(*names, param, type=click.STRING, default=None, help=help_text,
                              metavar=spec.metavar)
    elif _literal_values(field.annotation):
        # Literal[1, 3, 4]: a choice typed as text, given back as the literal itself
        choices = {str(v): v for v in _literal_values(field.annotation)}
        option = click.option(*names, param, type=click.Choice(list(choices)), default=None,
                              help=help_text, callback=lambda _c, _p, v: choices.get(v, v))
    else:
        option = click.option(*names, param, type=click_type(field.annotation, field),
                              default=None,
                              help=help_text, metavar=spec.metavar)
    return option, param


def _value(spec: SchemaOption, given: Any) -> Any:
    if given is None:
        return None
    if spec.set_to is not _UNSET:
        return spec.set_to if given else None
    return spec.convert(given) if spec.convert is not None else given


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def schema_options(specs: Sequence[SchemaOption]) -> Decorator:
    """Add ``--config``, ``--set`` and one option per spec; the command receives ``config``.

    Precedence: defaults < the YAML file < ``--set`` < explicit options.
    """
    built = [(spec, *make_option(spec)) for spec in specs]
    params = [param for _, _, param in built]
    if len(set(params)) != len(params):
        raise ValueError(f"two options share a parameter name: {params}")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            overrides: dict[str, Any] = {}
            for spec, _, param in built:
                value = _value(spec, kwargs.pop(param))
                if value is not None:
                    overrides[spec.key] = value
            config_path, set_items = kwargs.pop("config_path"), kwargs.pop("set_items")
            try:
                kwargs["config"] = build_config(config_path, set_items, **overrides)
            except ConfigError as exc:
                raise ConfigError(_name_the_option(str(exc), built, overrides)) from None
            return func(*args, **kwargs)

        for _, option, _ in reversed(built):
            wrapper = option(wrapper)
        return config_options(wrapper)

    return decorate


def _name_the_option(message: str, built: Sequence[tuple[SchemaOption, Any, str]],
                     given: dict[str, Any]) -> str:
    """A bad value the user typed as an option is named as that option, not as its key."""
    for spec, _, _ in built:
        quoted_key = f"config key '{spec.key}'"
        if spec.key in given and quoted_key in message:
            return message.replace(quoted_key, f"{_flag_names(spec)[-1].split('/')[0]} "
                                               f"({quoted_key})", 1)
    return message


def parse_bands(text: str | None) -> list[int] | None:
    """``1,2,3`` -> ``[1, 2, 3]`` (1-based band numbers)."""
    if text is None:
        return None
    try:
        bands = [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise ConfigError(f"--bands expects 1-based band numbers like 1,2,3, "
                          f"got {text!r}") from None
    return bands


def parse_window(text: str | None) -> list[int] | None:
    """``COL,ROW,WIDTH,HEIGHT`` -> four pixel numbers (``--window``, like ``-srcwin``)."""
    from roadprn.raster.subset import four_numbers

    if text is None:
        return None
    values = four_numbers(text, int)
    if values is None:
        raise ConfigError(f"--window expects COL,ROW,WIDTH,HEIGHT in pixels (e.g. "
                          f"0,0,1024,1024), got {text!r}")
    return values


def parse_bbox(text: str | None) -> list[float] | None:
    """``MINX,MINY,MAXX,MAXY`` -> four finite numbers (``--bbox``)."""
    from roadprn.raster.subset import four_numbers

    if text is None:
        return None
    values = four_numbers(text, float)
    if values is None:
        raise ConfigError(f"--bbox expects MINX,MINY,MAXX,MAXY (e.g. -115.31,36.12,-115.30,"
                          f"36.13 with --bbox-crs EPSG:4326), got {text!r}")
    return values
