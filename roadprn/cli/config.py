"""``roadprn config``: the effective configuration (``show``) and every key's documentation
(``keys``), from the schema itself, so that a pip install needs no ``configs/default.yaml``."""

from __future__ import annotations

import difflib
import json

import click

from roadprn.cli.config_doc import KeyDoc, commented_yaml, config_keys
from roadprn.cli.schema_options import build_config, config_options
from roadprn.errors import ConfigError


@click.group("config")
def config() -> None:
    """Show the effective configuration or list every config key."""


@config.command("show")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print the configuration as JSON.")
def show(config_path: str | None, set_items: tuple[str, ...], as_json: bool) -> None:
    """Print the effective config as commented YAML.

    Defaults < --config < --set, as every command builds it, with each key's description above
    it. `roadprn config show > my.yaml` gives a file to edit and pass back with --config; for
    the defaults it is configs/default.yaml.
    """
    cfg = build_config(config_path, set_items)
    if as_json:
        click.echo(json.dumps(cfg.to_yaml_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(commented_yaml(cfg), nl=False)


@config.command("keys")
@click.argument("prefix", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of objects (key, type, default, allowed, bounds, "
                   "description).")
def keys(prefix: str | None, as_json: bool) -> None:
    """List every config key with its type and default.

    One row per key: type, default, allowed values or bounds, description. PREFIX keeps the
    keys of one section or key, e.g. `roadprn config keys tiling`.
    """
    docs = select_keys(config_keys(), prefix)
    if as_json:
        click.echo(json.dumps([doc.as_dict() for doc in docs], indent=2, ensure_ascii=False))
    else:
        click.echo(keys_table(docs))


def select_keys(docs: list[KeyDoc], prefix: str | None) -> list[KeyDoc]:
    """The keys equal to ``prefix`` or inside it (``tiling`` -> ``tiling.*``); none is an error
    that suggests the nearest section or key."""
    if not prefix:
        return docs
    prefix = prefix.strip().rstrip(".")
    chosen = [d for d in docs if d.key == prefix or d.key.startswith(prefix + ".")]
    if chosen:
        return chosen
    names = sorted({d.key for d in docs} | {d.key.rsplit(".", n)[0] for d in docs
                                           for n in range(1, d.key.count(".") + 1)})
    close = difflib.get_close_matches(prefix, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    sections = sorted({d.key.split(".")[0] for d in docs})
    raise ConfigError(f"no config key or section {prefix!r}{hint} sections: "
                      f"{', '.join(sections)}")


def keys_table(docs: list[KeyDoc]) -> str:
    """Aligned columns: key, type, default, allowed (values or bounds), description."""
    header = ("KEY", "TYPE", "DEFAULT", "ALLOWED", "DESCRIPTION")
    rows = [header] + [(d.key, d.kind, d.default, d.constraint, d.description) for d in docs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                                row[-1]]).rstrip() for row in rows)
