"""The config schema as documentation: every key with its type, default, bounds and description
(``roadprn config keys``) and a config as YAML with a comment above every key
(``roadprn config show``; ``configs/default.yaml`` is that output for the defaults).

Pure: reads the pydantic models only. Descriptions come from each field's
``Field(description=...)``; a section's comment from its field's description or, without one,
the first paragraph of its class docstring.
"""

from __future__ import annotations

import math
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from roadprn.config import Config, section_model

#: comment lines are wrapped at this many columns (indent included)
WIDTH = 100

#: the first lines of ``roadprn config show`` (and so of configs/default.yaml)
HEADER = """\
roadprn config: every key with its value and what it does (`roadprn config show`; the defaults
are configs/default.yaml). `roadprn config keys` lists each key's type, default and bounds.
Use:  roadprn extract scene.tif --config my.yaml   (only the keys you change are needed)
Any key can also be set on the command line:  --set tiling.halo=64
Unknown keys and bad values are errors that name the key and the allowed values."""

_BOUNDS = ("ge", "gt", "le", "lt", "min_length", "max_length")


@dataclass(frozen=True)
class KeyDoc:
    """One leaf key of the config."""

    key: str
    #: readable type: ``int``, ``int | null``, ``list[int]``, ``'hann' | 'crop'``
    type: str
    #: the default as YAML writes it (``null``, ``[2.0, 98.0]``, ``hann``)
    default: str
    #: the default as the config holds it in JSON mode
    default_value: Any
    #: the values a Literal allows (empty for other types)
    allowed: tuple[Any, ...] = ()
    #: ``ge``/``gt``/``le``/``lt`` (and ``min_length``/``max_length``) from the field's metadata
    bounds: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: the type with a Literal shown as its values' type (``str``, ``int | null``)
    kind: str = ""

    @property
    def constraint(self) -> str:
        """Allowed values or bounds in one short text: ``'hann' | 'crop'``, ``32 <= x <= 8192``."""
        if self.allowed:
            return " | ".join(_literal_text(v) for v in self.allowed)
        return bounds_text(self.bounds)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type, "default": self.default_value,
                "default_yaml": self.default, "allowed": list(self.allowed) or None,
                "bounds": self.bounds or None, "description": self.description}


def config_keys(model: type[BaseModel] = Config) -> list[KeyDoc]:
    """Every leaf key of ``model``, dotted, in schema order."""
    defaults = model().model_dump(mode="json")
    return list(_keys(model, defaults, ""))


def _keys(model: type[BaseModel], defaults: dict[str, Any], prefix: str) -> typing.Iterator[KeyDoc]:
    for name, info in model.model_fields.items():
        section = section_model(info)
        if section is not None:
            yield from _keys(section, defaults[name], f"{prefix}{name}.")
            continue
        value = defaults[name]
        yield KeyDoc(key=prefix + name, type=_type_text(info.annotation), default=yaml_value(value),
                     default_value=value, allowed=_literal_values(info.annotation),
                     bounds=field_bounds(info), description=info.description or "",
                     kind=_type_text(info.annotation, literal_values=False))


def commented_yaml(config: Config, header: str | None = HEADER) -> str:
    """``config`` as YAML, each key preceded by ``# description`` lines and each section by its
    summary; ``yaml.safe_load`` of the text validates back to an equal config."""
    lines = [f"# {line}" if line else "#" for line in (header or "").splitlines()]
    _section_lines(lines, type(config), config.model_dump(mode="json"), 0)
    return "\n".join(lines) + "\n"


def _section_lines(lines: list[str], model: type[BaseModel], values: dict[str, Any],
                   depth: int) -> None:
    indent = "  " * depth
    for name, info in model.model_fields.items():
        if depth == 0 and lines:
            lines.append("")
        section = section_model(info)
        comment = info.description or (section_summary(section) if section is not None else "")
        lines.extend(comment_lines(comment, indent))
        if section is not None:
            lines.append(f"{indent}{name}:")
            _section_lines(lines, section, values[name], depth + 1)
        else:
            lines.extend(indent + line if line else line
                         for line in key_value_lines(name, values[name]))


def key_value_lines(name: str, value: Any) -> list[str]:
    """``name: value`` as ``yaml.safe_dump`` writes it: one line (flow style for lists and
    mappings of scalars; a text with line breaks double-quoted) unless the value nests
    collections (block style, as safe_dump writes them)."""
    text = yaml_value(value)
    if "\n" in text and isinstance(value, str):
        # a text with line breaks: double-quoted with escapes, still one line
        text = _dump(value, style='"').removesuffix("\n...\n").strip()
    if "\n" not in text:
        return [f"{yaml_value(name)}: {text}"]
    return _dump({name: value}).splitlines()


def comment_lines(text: str, indent: str = "", width: int = WIDTH) -> list[str]:
    """``text`` as ``# `` comment lines wrapped at ``width`` columns (newlines kept)."""
    text = re.sub(r"``([^`]+)``", r"`\1`", text.strip())
    lines: list[str] = []
    for paragraph in text.splitlines():
        wrapped = textwrap.wrap(paragraph, width - len(indent) - 2, break_long_words=False,
                                break_on_hyphens=False) or [""]
        lines.extend(f"{indent}# {line}".rstrip() for line in wrapped)
    return lines


def section_summary(model: type[BaseModel]) -> str:
    """The first paragraph of a section's class docstring (own, not inherited), on one line."""
    doc = model.__dict__.get("__doc__") or ""
    first = textwrap.dedent(doc).strip().split("\n\n")[0]
    return " ".join(first.split())


def yaml_value(value: Any) -> str:
    """A value as YAML writes it in flow style, on one line (``null``, ``[1, 2]``, ``{}``)."""
    return _dump(value).removesuffix("\n...\n").strip()


def _dump(data: Any, style: str | None = None) -> str:
    return str(yaml.safe_dump(data, default_flow_style=None, default_style=style, sort_keys=False,
                              allow_unicode=True, width=math.inf))


def field_bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        for name in _BOUNDS:
            value = getattr(item, name, None)
            if value is not None:
                bounds[name] = value
    return bounds


def bounds_text(bounds: dict[str, Any]) -> str:
    """``{"ge": 32, "le": 8192}`` -> ``32 <= x <= 8192``; list lengths as ``length 1-2``."""
    parts = []
    low = ("ge", "<=") if "ge" in bounds else ("gt", "<") if "gt" in bounds else None
    high = ("le", "<=") if "le" in bounds else ("lt", "<") if "lt" in bounds else None
    if low and high:
        parts.append(f"{bounds[low[0]]} {low[1]} x {high[1]} {bounds[high[0]]}")
    elif low:
        parts.append(f"x {'>=' if low[0] == 'ge' else '>'} {bounds[low[0]]}")
    elif high:
        parts.append(f"x {high[1]} {bounds[high[0]]}")
    least, most = bounds.get("min_length"), bounds.get("max_length")
    if least is not None and most is not None:
        parts.append(f"length {least}" if least == most else f"length {least}-{most}")
    elif least is not None:
        parts.append(f"length >= {least}")
    elif most is not None:
        parts.append(f"length <= {most}")
    return ", ".join(parts)


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is Literal:
                return typing.get_args(arg)
    return ()


def _literal_text(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else yaml_value(value)


_NAMES = {int: "int", float: "float", str: "str", bool: "bool", type(None): "null", Any: "any"}


def _type_text(annotation: Any, literal_values: bool = True) -> str:
    """A readable type: ``int | null``, ``list[int]``, ``[float, float]``, ``'hann' | 'crop'``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        if literal_values:
            return " | ".join(_literal_text(v) for v in args)
        return " | ".join(dict.fromkeys(_NAMES.get(type(v), type(v).__name__) for v in args))
    if origin in (typing.Union, types.UnionType):
        ordered = [a for a in args if a is not type(None)] + [a for a in args
                                                              if a is type(None)]
        return " | ".join(_type_text(a, literal_values) for a in ordered)
    if origin is list:
        return f"list[{_type_text(args[0], literal_values)}]"
    if origin is tuple:
        return "[" + ", ".join(_type_text(a, literal_values) for a in args) + "]"
    if origin is dict:
        return "dict[" + ", ".join(_type_text(a, literal_values) for a in args) + "]"
    if annotation in _NAMES:
        return _NAMES[annotation]
    return getattr(annotation, "__name__", str(annotation))
