"""The same conventions on every command: -o/--out on those that write, text by default and
--json (one JSON document on stdout) for machines, click's usage errors as roadprn's one line."""

from __future__ import annotations

import json

import pytest

from roadprn.cli import COMMANDS, main
from tests.helpers import assert_clean_failure, invoke

WRITERS = ["extract", "batch", "vectorize", "evaluate", "synth", "train base", "train prn",
           "export", "merge"]
JSON_COMMANDS = [*WRITERS, "info", "config show", "config keys"]


def _command(path: str):
    import click

    ctx = click.Context(main)
    command = main
    for name in path.split():
        command = command.get_command(ctx, name)
    return command


@pytest.mark.parametrize("path", WRITERS)
def test_commands_that_write_take_dash_o(path):
    options = {opt for p in _command(path).params for opt in getattr(p, "opts", [])}
    assert {"-o", "--out"} <= options, (path, sorted(options))


@pytest.mark.parametrize("path", JSON_COMMANDS)
def test_every_command_has_json(path):
    options = {opt for p in _command(path).params for opt in getattr(p, "opts", [])}
    assert "--json" in options, path


def test_every_command_is_listed():
    assert set(COMMANDS) >= {p.split()[0] for p in JSON_COMMANDS}


def test_synth_vectorize_evaluate_json_round_trip(tmp_path):
    made = invoke("synth", "-o", tmp_path / "s.tif", "--size", "128", "--json")
    assert made.exit_code == 0, made.output
    scene = json.loads(made.stdout)
    assert scene["width"] == 128 and scene["road_length_m"] > 0
    lines = invoke("vectorize", scene["mask"], "-o", tmp_path / "v", "--json")
    assert lines.exit_code == 0, lines.output
    network = json.loads(lines.stdout)
    assert network["roads"] > 0 and network["files"][0].endswith(".gpkg")
    scores = invoke("evaluate", "--pred", network["files"][0], "--truth", scene["roads"],
                    "-o", tmp_path / "e", "--json")
    assert scores.exit_code == 0, scores.output
    document = json.loads(scores.stdout)
    assert document == json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert 0.8 < document["completeness"] <= 1.0


def test_synth_needs_its_output_once(tmp_path):
    assert_clean_failure(invoke("synth"), 2, "give the scene to write once")
    assert_clean_failure(invoke("synth", tmp_path / "a.tif", "-o", tmp_path / "b.tif"), 2,
                         "once")


@pytest.mark.parametrize("args, words", [
    (["extract", "-q"], ["No such option '-q'", "extract --help'"]),
    (["extract"], ["Missing argument 'SCENE'"]),
    (["info", "--bogus", "x"], ["No such option"]),
    (["evaluate", "--pred"], ["requires an argument"]),
])
def test_usage_errors_are_one_roadprn_line(args, words):
    assert_clean_failure(invoke(*args), 2, *words)
