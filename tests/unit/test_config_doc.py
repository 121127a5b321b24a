"""The config schema as documentation (roadprn/cli/config_doc.py): every key listed with its type,
default, bounds and description, and commented YAML that reads back to the same config."""

from pathlib import Path

import pytest
import yaml

from roadprn.cli.config_doc import (
    HEADER,
    WIDTH,
    bounds_text,
    comment_lines,
    commented_yaml,
    config_keys,
    yaml_value,
)
from roadprn.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
DEFAULT_YAML = REPO / "configs" / "default.yaml"


def leaf_keys(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("jobqueue", "gateway_options", "arch_kwargs",
                                                   "augmentation"):
            out += leaf_keys(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def test_every_leaf_key_listed_once_in_schema_order():
    keys = [doc.key for doc in config_keys()]
    assert keys == leaf_keys(Config().to_yaml_dict())
    assert len(keys) == len(set(keys))


def test_every_key_listed_is_in_default_yaml_and_back():
    data = yaml.safe_load(DEFAULT_YAML.read_text(encoding="utf-8"))
    assert set(leaf_keys(data)) == {doc.key for doc in config_keys()}


def test_every_key_has_a_description():
    missing = [doc.key for doc in config_keys() if not doc.description.strip()]
    assert not missing, f"keys without Field(description=...): {missing}"


@pytest.mark.parametrize("key,type_,kind,default,allowed,bounds", [
    ("tiling.tile_size", "int | null", "int | null", "null", (), {"ge": 32, "le": 8192}),
    ("tiling.blend", "'hann' | 'crop'", "str", "hann", ("hann", "crop"), {}),
    ("input.bands", "list[int] | null", "list[int] | null", "null", (), {}),
    ("input.normalization.percentiles", "[float, float]", "[float, float]", "[2.0, 98.0]", (),
     {}),
    ("output.threshold", "float", "float", "0.5", (), {"gt": 0.0, "lt": 1.0}),
    ("output.compress_level", "int | null", "int | null", "1", (), {"ge": 1, "le": 22}),
    ("synth.bands", "1 | 3 | 4", "int", "3", (1, 3, 4), {}),
    ("synth.size", "list[int]", "list[int]", "[4096]", (), {"min_length": 1, "max_length": 2}),
    ("batch.memory_limit", "str | int", "str | int", "auto", (), {}),
    ("batch.jobqueue", "dict[str, any]", "dict[str, any]", "{}", (), {}),
    ("train.base.notes", "str", "str", "''", (), {}),
    # a section's own default (training normalises by percentiles), not its class's
    ("train.base.normalization.mode", "'auto' | 'fixed' | 'percentile' | 'dtype'", "str",
     "percentile", ("auto", "fixed", "percentile", "dtype"), {}),
])
def test_key_docs(key, type_, kind, default, allowed, bounds):
    doc = {d.key: d for d in config_keys()}[key]
    assert (doc.type, doc.kind, doc.default, doc.allowed, doc.bounds) == (
        type_, kind, default, allowed, bounds)
    # the YAML text of the default is the default
    assert yaml.safe_load(doc.default) == doc.default_value


def test_constraint_text():
    docs = {d.key: d for d in config_keys()}
    assert docs["tiling.tile_size"].constraint == "32 <= x <= 8192"
    assert docs["output.threshold"].constraint == "0.0 < x < 1.0"
    assert docs["tiling.blend"].constraint == "'hann' | 'crop'"
    assert docs["batch.split_tiles"].constraint == "x >= 0"
    assert docs["synth.size"].constraint == "length 1-2"
    assert docs["inference.device"].constraint == ""
    assert bounds_text({"lt": 5}) == "x < 5"
    assert bounds_text({"min_length": 1}) == "length >= 1"


def test_default_yaml_is_generated_from_the_schema():
    """configs/default.yaml is `roadprn config show` for the defaults: rewrite it with
    scripts/write_default_config.py after changing a key, a default or a description."""
    assert DEFAULT_YAML.read_text(encoding="utf-8") == commented_yaml(Config())


def test_commented_yaml_of_the_defaults_reads_back():
    text = commented_yaml(Config())
    assert Config.model_validate(yaml.safe_load(text)) == Config()
    assert text.startswith("".join(f"# {line}\n" for line in HEADER.splitlines()))


def changed_config() -> Config:
    return load_config(overrides={
        "model": "models/my model.pt",
        "tiling.halo": 64, "tiling.blend": "crop",
        "input.bands": [4, 3, 2],
        "input.normalization.mode": "fixed", "input.normalization.scale": [0.0001, 2e-4, 3e-4],
        "input.normalization.percentiles": [1, 99.5],
        "output.dst_crs": "EPSG:4326",
        "batch.cluster": "slurm", "batch.memory_limit": "4GiB",
        "batch.jobqueue": {"queue": "gpu", "cores": 8, "job_extra_directives": ["--gres=gpu:1"],
                           "env": {"A": "1"}},
        "synth.size": [300, 200], "synth.origin": [500000.5, 4649776.25], "synth.crs": "yes",
        "train.base.notes": "a: b # not a comment\n'quoted' “unicode” " + "x" * 150,
        "train.base.arch_kwargs": {"width": 32},
        "train.prn.labels_crs": "null",
        "train.base.augmentation": {"flip": True, "brightness": 0.1},
    })


def test_commented_yaml_of_a_changed_config_reads_back():
    cfg = changed_config()
    text = commented_yaml(cfg)
    assert cfg != Config()
    assert Config.model_validate(yaml.safe_load(text)) == cfg
    assert "  halo: 64\n" in text and "  blend: crop\n" in text and "  bands: [4, 3, 2]\n" in text


@pytest.mark.parametrize("cfg", [Config(), changed_config()], ids=["defaults", "changed"])
def test_every_key_and_section_has_comment_lines_within_the_width(cfg):
    lines = commented_yaml(cfg).splitlines()
    assert all(len(line) <= WIDTH for line in lines if line.lstrip().startswith("#"))
    # each key (and each section) on its own line, in schema order, a comment line right above
    at, seen = 0, set()
    for doc in config_keys():
        parts = doc.key.split(".")
        for depth in range(len(parts)):
            name = ".".join(parts[:depth + 1])
            if name in seen:
                continue
            seen.add(name)
            start = "  " * depth + parts[depth] + ":"
            at = next(i for i in range(at, len(lines)) if lines[i].startswith(start))
            assert lines[at - 1].lstrip().startswith("# "), f"no comment above {name}"


def test_values_are_written_as_safe_dump_writes_them():
    for value in (None, True, 0.0008, "auto", "yes", "", [2.0, 98.0], {}, {"a": 1}, "EPSG:32631"):
        assert yaml_value(value) == yaml.safe_dump(value, default_flow_style=True).removesuffix(
            "\n...\n").strip()
        assert yaml.safe_load(yaml_value(value)) == value


def test_comment_lines_wrap_and_keep_code_marks():
    lines = comment_lines("``roadprn batch``: " + "word " * 60, indent="    ")
    assert lines[0].startswith("    # `roadprn batch`: word")
    assert all(len(line) <= WIDTH and line.startswith("    # ") for line in lines)
