from pathlib import Path

import pytest
import yaml

from roadprn.config import Config, load_config, parse_set_option
from roadprn.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_YAML = REPO / "configs" / "default.yaml"


def test_default_yaml_equals_model_defaults():
    data = yaml.safe_load(DEFAULT_YAML.read_text())
    assert Config.model_validate(data) == Config()
    # every key of the model appears in the documented file
    def keys(d, prefix=""):
        for k, v in d.items():
            yield prefix + k
            if isinstance(v, dict):
                yield from keys(v, prefix + k + ".")
    assert set(keys(Config().to_yaml_dict())) == set(keys(data))


def test_default_yaml_every_key_commented():
    lines = DEFAULT_YAML.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue
        # a key: value line must have a comment line right above it
        assert lines[i - 1].strip().startswith("#"), f"undocumented key at line {i + 1}: {line}"


def test_overrides_beat_file(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("tiling:\n  halo: 32\n  tile_size: 256\n")
    cfg = load_config(cfg_file, {"tiling.halo": 16})
    assert cfg.tiling.halo == 16 and cfg.tiling.tile_size == 256


def test_unknown_key_named_with_suggestion(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("tiling:\n  tyle_size: 256\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file)
    msg = str(err.value)
    assert "tiling.tyle_size" in msg and "did you mean 'tile_size'" in msg
    assert "\n" not in msg


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"tiling.blend": "gauss"})
    msg = str(err.value)
    assert "tiling.blend" in msg and "'hann'" in msg and "'crop'" in msg and "gauss" in msg


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        ("inference.device", "gpu", "cuda:N"),
        ("tiling.tile_size", 8, "greater than or equal to 32"),
        ("output.threshold", 1.5, "less than 1"),
        ("input.bands", [0], "1-based"),
        ("input.normalization.percentiles", [90, 10], "low < high"),
        ("input.normalization.mode", "fixed", "needs 'scale'"),
        ("inference.reader_threads", 0, "greater than or equal to 1"),
    ],
)
def test_bad_values(key, value, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(overrides={key: value})
    # model-level checks name the section holding the keys involved
    section = key if key.count(".") < 2 else key.rsplit(".", 1)[0]
    assert section in str(err.value) and fragment in str(err.value)


def test_section_set_to_scalar_is_clear():
    with pytest.raises(ConfigError, match="'tiling'"):
        load_config(overrides={"tiling": 3})


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiling: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_parse_set_option_yaml_scalars():
    assert parse_set_option(["a.b=3", "c=true", "d=[1, 2]", "e=cuda:1"]) == {
        "a.b": 3, "c": True, "d": [1, 2], "e": "cuda:1"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_option(["novalue"])
