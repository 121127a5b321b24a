"""Command options generated from the config schema: every option is a config key, with the
field's type, choices, bounds and help, and one precedence rule for every command."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from roadprn.cli.schema_options import (
    SchemaOption,
    config_default,
    config_field,
    make_option,
    schema_options,
)
from roadprn.config import Config
from roadprn.errors import ConfigError

SPECS = [SchemaOption("tiling.halo"), SchemaOption("refine.fusion"),
         SchemaOption("inference.tta"), SchemaOption("synth.bands"),
         SchemaOption("vectorize.enabled", ("--no-vectorize",), set_to=False)]


@click.command()
@schema_options(SPECS)
def probe(config: Config) -> None:
    click.echo(f"{config.tiling.halo} {config.refine.fusion} {config.inference.tta} "
               f"{config.synth.bands!r} {config.vectorize.enabled}")


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(probe, list(args), standalone_mode=False, catch_exceptions=True)


def test_defaults_come_from_the_config():
    result = run()
    assert result.exit_code == 0, result.output
    defaults = Config()
    assert result.output.split() == [str(defaults.tiling.halo), defaults.refine.fusion,
                                     str(defaults.inference.tta), repr(defaults.synth.bands),
                                     str(defaults.vectorize.enabled)]


def test_file_then_set_then_option(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("tiling:\n  halo: 8\nrefine:\n  fusion: paper\n")
    assert run("--config", str(config)).output.split()[:2] == ["8", "paper"]
    assert run("--config", str(config), "--set", "tiling.halo=16").output.split()[0] == "16"
    assert run("--config", str(config), "--set", "tiling.halo=16",
               "--halo", "24").output.split()[0] == "24"


def test_types_choices_and_flags_follow_the_schema():
    out = run("--fusion", "mean", "--tta", "--bands", "4", "--no-vectorize").output.split()
    assert out[1:] == ["mean", "True", "4", "False"]  # Literal[1, 3, 4] gives the int back
    assert isinstance(run("--fusion", "nope").exception, click.UsageError)
    assert isinstance(run("--halo", "-1").exception, click.UsageError)  # field: ge=0
    assert isinstance(run("--halo", "x").exception, click.UsageError)


def test_help_is_the_fields_description_with_its_default():
    option, param = make_option(SchemaOption("refine.fusion"))
    command = option(click.command()(lambda **_: None))
    (parameter,) = command.params
    assert param == "fusion"
    assert config_field("refine.fusion").description in parameter.help
    assert f"[default: {config_default('refine.fusion')}]" in parameter.help


def test_nan_is_refused_for_every_float_option():
    option, _ = make_option(SchemaOption("output.threshold"))
    command = option(click.command()(lambda **_: None))
    result = CliRunner().invoke(command, ["--threshold", "nan"], standalone_mode=False)
    assert isinstance(result.exception, click.UsageError)
    assert "finite" in str(result.exception.format_message())


def test_a_bad_value_from_an_option_names_the_option():
    @click.command()
    @schema_options([SchemaOption("synth.size", convert=lambda text: [int(text)])])
    def sized(config: Config) -> None:
        pass

    result = CliRunner().invoke(sized, ["--size", "0"], standalone_mode=False)
    assert isinstance(result.exception, ConfigError)
    assert "--size (config key 'synth.size')" in str(result.exception)


@pytest.mark.parametrize("command", ["extract", "batch", "vectorize", "evaluate", "synth", "info"])
def test_every_command_takes_config_and_set(command):
    from roadprn.cli import main

    cmd = main.get_command(click.Context(main), command)
    names = {p.name for p in cmd.params}
    assert {"config_path", "set_items"} <= names
