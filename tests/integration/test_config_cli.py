"""`roadprn config show` / `roadprn config keys` in-process: the effective config, every key."""

import json
from pathlib import Path

import pytest
import yaml

from roadprn.cli.config_doc import config_keys
from roadprn.config import Config, load_config
from tests.helpers import invoke

REPO = Path(__file__).resolve().parents[2]


def test_show_of_the_defaults_is_configs_default_yaml():
    result = invoke("config", "show")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (REPO / "configs" / "default.yaml").read_text(encoding="utf-8")


def test_show_applies_config_file_then_set(tmp_path):
    mine = tmp_path / "my.yaml"
    mine.write_text("tiling:\n  halo: 32\n  blend: crop\nbatch:\n  jobqueue: {queue: gpu}\n")
    result = invoke("config", "show", "--config", mine, "--set", "tiling.halo=64",
                    "--set", "input.bands=[1, 2]")
    assert result.exit_code == 0, result.stderr
    cfg = Config.model_validate(yaml.safe_load(result.stdout))
    assert cfg == load_config(mine, {"tiling.halo": 64, "input.bands": [1, 2]})
    assert (cfg.tiling.halo, cfg.tiling.blend, cfg.batch.jobqueue) == (64, "crop", {"queue": "gpu"})
    # and the printed file feeds back into --config unchanged
    again = tmp_path / "again.yaml"
    again.write_text(result.stdout)
    assert invoke("config", "show", "--config", again).stdout == result.stdout


def test_show_json():
    result = invoke("config", "show", "--json", "--set", "refine.fusion=paper")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["refine"]["fusion"] == "paper"
    assert Config.model_validate(data) == load_config(overrides={"refine.fusion": "paper"})


@pytest.mark.parametrize("args,fragment", [
    (["--set", "tiling.hallo=3"], "unknown config key 'tiling.hallo'; did you mean 'halo'?"),
    (["--set", "tiling.blend=gauss"], "bad value for config key 'tiling.blend'"),
    (["--set", "tiling.tile_size=8"], "tiling.tile_size"),
    (["--set", "novalue"], "--set expects KEY=VALUE"),
    (["--config", "does-not-exist.yaml"], "config file not found"),
])
def test_show_bad_config_is_one_line_exit_2(args, fragment):
    result = invoke("config", "show", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("roadprn: error: ")
    assert fragment in result.stderr


def test_keys_table_lists_every_key():
    result = invoke("config", "keys")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KEY", "TYPE", "DEFAULT", "ALLOWED", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == [d.key for d in config_keys()]


def test_keys_prefix_filters_a_section():
    result = invoke("config", "keys", "tiling")
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["tiling.tile_size", "tiling.halo",
                                            "tiling.batch_size", "tiling.blend", "tiling.pad_mode"]
    blend = next(r for r in rows if r.startswith("tiling.blend"))
    assert "'hann' | 'crop'" in blend and "How overlapping tiles are merged" in blend
    assert "32 <= x <= 8192" in rows[0]
    # a nested section and one key; a section name is not a prefix of another ("input" vs "in")
    nested = invoke("config", "keys", "evaluate.apls").stdout.splitlines()[1:]
    assert [r.split()[0] for r in nested] == ["evaluate.apls.control_spacing_m",
                                              "evaluate.apls.snap_m", "evaluate.apls.min_path_m",
                                              "evaluate.apls.junctions"]
    assert len(invoke("config", "keys", "tiling.halo").stdout.splitlines()) == 2


def test_keys_json():
    result = invoke("config", "keys", "--json", "output")
    assert result.exit_code == 0, result.stderr
    docs = {d["key"]: d for d in json.loads(result.stdout)}
    assert set(docs) == {d.key for d in config_keys() if d.key.startswith("output.")}
    assert docs["output.threshold"]["bounds"] == {"gt": 0.0, "lt": 1.0}
    assert docs["output.compress"]["allowed"] == ["deflate", "zstd", "lzw"]
    assert docs["output.compress"]["type"] == "'deflate' | 'zstd' | 'lzw'"
    assert docs["output.dst_crs"]["default"] is None and docs["output.dst_crs"]["description"]


def test_keys_unknown_prefix_is_one_line_exit_2():
    result = invoke("config", "keys", "tilin")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "did you mean 'tiling'?" in result.stderr
    assert invoke("config", "keys", "in").exit_code == 2


def test_readme_excerpts_are_real_output():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ roadprn config show --set tiling.halo=64\n", 1)[1].split("```", 1)[0]
    shown, keys_table = block.split("$ roadprn config keys tiling\n")
    show = invoke("config", "show", "--set", "tiling.halo=64").stdout
    for part in shown.strip().split("...\n"):
        assert part.strip("\n.") in show
    assert keys_table == invoke("config", "keys", "tiling").stdout
