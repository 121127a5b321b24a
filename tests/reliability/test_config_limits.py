"""Hostile YAML configs end in one line, exit 2, at bounded cost (issue 22, section 3).

Before: a 400-byte "billion laughs" was OOM-killed, under ``input.bands`` it gave a 312 MB
"one-line" error, deeply nested or 5000-digit YAML gave tracebacks.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from roadprn.config import MAX_CONFIG_BYTES, MAX_QUOTED_CHARS, load_config, parse_set_option
from roadprn.errors import ConfigError
from tests.helpers import assert_clean_failure, cli_process, invoke

#: Longest one-line error accepted: the message plus a path and at most one quoted value.
MAX_LINE = 2 * MAX_QUOTED_CHARS + 400


def billion_laughs(under: str | None = None) -> str:
    """Nine levels of nine aliases each: 9**9 (387 million) strings once expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    if under:
        section, key = under.split(".")
        lines.append(f"{section}: {{{key}: *i}}")
    return "\n".join(lines) + "\n"


def _extract(tmp_path: Path, scene: Path, config: Path, *extra: str):
    return invoke("extract", scene, "--config", config, "--out", tmp_path / "out", *extra)


def _line(result, *words: str) -> str:
    line = assert_clean_failure(result, 2, *words)
    assert len(line) < MAX_LINE, len(line)
    return line


def test_billion_laughs_is_refused_quickly_in_little_memory(tmp_path, good_scene):
    """In a process of its own with 3 GiB of address space: expanded, it needs far more."""
    config = tmp_path / "laughs.yaml"
    config.write_text(billion_laughs())
    assert len(config.read_bytes()) < 450

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    process = cli_process(["extract", str(good_scene), "--config", str(config), "--out",
                           str(tmp_path / "out")], preexec_fn=limit_memory)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, (process.returncode, stderr[-2000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("roadprn: error: "), stderr[-2000:]
    assert "aliases" in lines[0] and "laughs.yaml" in lines[0]


def test_billion_laughs_under_input_bands(tmp_path, good_scene):
    config = tmp_path / "bands.yaml"
    config.write_text(billion_laughs("input.bands"))
    _line(_extract(tmp_path, good_scene, config), "bands.yaml", "aliases")


@pytest.mark.parametrize("text,words", [
    ("[" * 100 + "]" * 100 + "\n", ("nested more than 32 levels",)),
    ("[" * 5000 + "]" * 5000 + "\n", ("not valid YAML", "nesting depth")),  # libyaml's own
    ("".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "x: 1\n",
     ("nested more than 32 levels",)),
    ("tiling:\n  halo: " + "9" * 5000 + "\n", ("value not accepted",)),
    ("tiling:\n  halo: " + "9" * 20000 + "\n", ("20000 characters",)),
    ("input:\n  bands: [" + ",".join(["0"] * 60000) + "]\n", ("input.bands", "characters)")),
    ("tiling: {halo: 1\n", ("not valid YAML",)),
])
def test_hostile_configs_end_in_one_short_line(tmp_path, good_scene, text, words):
    config = tmp_path / "hostile.yaml"
    config.write_text(text)
    _line(_extract(tmp_path, good_scene, config), "hostile.yaml", *words)


def test_a_config_over_one_mib_is_refused_unread(tmp_path, good_scene):
    config = tmp_path / "big.yaml"
    config.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    _line(_extract(tmp_path, good_scene, config), "big.yaml", "at most 1048576")


def test_a_long_bad_value_is_quoted_short():
    """The value a message quotes back is cut (before: every element of a huge list)."""
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"input.bands": [0] * 100_000})
    assert len(str(caught.value)) < MAX_LINE and "characters)" in str(caught.value)


def test_set_option_has_the_same_limits():
    with pytest.raises(ConfigError, match="aliases"):
        parse_set_option(["input.bands=[&a 1, *a]"])
    with pytest.raises(ConfigError, match="nested more than 32"):
        parse_set_option(["input.bands=" + "[" * 100 + "]" * 100])
    with pytest.raises(ConfigError, match="value not accepted"):
        parse_set_option(["tiling.halo=" + "9" * 5000])
    assert parse_set_option(["tiling.halo=64", "input.bands=[3,2,1]"]) == {
        "tiling.halo": 64, "input.bands": [3, 2, 1]}


def test_ordinary_configs_still_load(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    assert load_config(repo / "configs" / "default.yaml") == load_config()
    config = tmp_path / "small.yaml"
    config.write_text("tiling:\n  halo: 48\ninput:\n  bands: [1, 2, 3]\n")
    loaded = load_config(config)
    assert loaded.tiling.halo == 48 and loaded.input.bands == [1, 2, 3]
