"""Checkpoint format: round trip, plain-types-only payload, clear errors for bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from roadprn.errors import ModelError, OutputError
from roadprn.io import TMP_MARKER
from roadprn.models.base import build_model
from roadprn.models.checkpoint import (
    FORMAT_NAME,
    check_scene_bands,
    describe_checkpoint,
    load_checkpoint,
    load_model_file,
    save_checkpoint,
    weights_sha256,
)

PLAIN = (str, int, float, bool, type(None))


def base_meta(in_channels: int = 3, **overrides: object) -> dict:
    meta = {
        "kind": "base",
        "arch": "tiny_unet",
        "arch_kwargs": {"in_channels": in_channels},
        "input": {
            "bands": list(range(1, in_channels + 1)),
            "normalization": {"mode": "fixed", "scale": [1 / 255], "offset": [0.0]},
            "gsd_m": 0.3,
            "tile_size": 256,
            "halo": 16,
        },
        "training_data": {
            "files": [{"path": "scenes/a.tif", "sha256": "a" * 64}],
            "road_fraction": 0.042,
        },
        "metrics": {"val_iou": 0.61, "epochs": 12},
    }
    meta.update(overrides)
    return meta


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model("tiny_unet", in_channels=3)
    # non-default batch-norm statistics, so the round trip must carry buffers too
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return net.eval()


@pytest.fixture
def saved(tmp_path: Path, model: torch.nn.Module) -> tuple[Path, str]:
    path = tmp_path / "model.pt"
    return path, save_checkpoint(path, model, base_meta())


def _walk_plain(value: object) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _walk_plain(item)
    elif isinstance(value, list):
        for item in value:
            _walk_plain(item)
    else:
        assert isinstance(value, (*PLAIN, torch.Tensor)), type(value)


def test_round_trip_gives_identical_outputs(saved: tuple[Path, str], model: torch.nn.Module):
    path, sha = saved
    checkpoint = load_checkpoint(path)
    assert checkpoint.sha256 == sha == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(model(x), checkpoint.build_model()(x))
    assert checkpoint.meta.input.bands == [1, 2, 3]
    assert checkpoint.meta.training_data.road_fraction == pytest.approx(0.042)
    assert checkpoint.meta.metrics == {"val_iou": 0.61, "epochs": 12}


def test_payload_is_plain_types_loadable_with_weights_only(saved: tuple[Path, str]):
    payload = torch.load(saved[0], weights_only=True, map_location="cpu")
    assert payload["format"] == FORMAT_NAME
    _walk_plain(payload)
    meta = payload["meta"]
    assert meta["roadprn_version"] and meta["created"].endswith("+00:00")
    assert meta["input"]["normalization"]["mode"] == "fixed"


def test_load_model_file_returns_ready_model(saved: tuple[Path, str]):
    loaded = load_model_file(saved[0])
    assert loaded.source == "checkpoint" and loaded.outputs_logits
    assert loaded.input.gsd_m == 0.3 and loaded.sha256 == saved[1]
    assert not loaded.module.training


def test_existing_file_needs_overwrite_and_no_temp_files_are_left(
    saved: tuple[Path, str], model: torch.nn.Module
):
    path, _ = saved
    with pytest.raises(OutputError):
        save_checkpoint(path, model, base_meta())
    save_checkpoint(path, model, base_meta(), overwrite=True)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    assert not any(TMP_MARKER in p.name for p in path.parent.iterdir())


def test_missing_and_directory_paths(tmp_path: Path):
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(ModelError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.999])
def test_truncated_checkpoint_is_a_clear_error(saved: tuple[Path, str], tmp_path: Path, keep):
    data = saved[0].read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError, match="corrupt") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)


def test_corrupted_weights_are_detected(saved: tuple[Path, str], tmp_path: Path):
    data = bytearray(saved[0].read_bytes())
    # the largest tensor's bytes sit in the middle of the archive; torch.load itself would not
    # notice them changing (it does not check zip CRCs)
    middle = len(data) // 2
    data[middle : middle + 32] = bytes((b + 1) % 256 for b in data[middle : middle + 32])
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(bad)


def test_foreign_files_are_refused(tmp_path: Path, model: torch.nn.Module):
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ModelError, match="not a roadprn checkpoint"):
        load_checkpoint(plain)
    pickled = tmp_path / "pickled.pt"
    torch.save(model, pickled)  # a whole pickled nn.Module
    with pytest.raises(ModelError, match="pickled Python objects"):
        load_checkpoint(pickled)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(ModelError, match="corrupt"):
        load_checkpoint(text)


def _write_payload(path: Path, model: torch.nn.Module, **changes: object) -> Path:
    state_dict = model.state_dict()
    payload = {
        "format": FORMAT_NAME,
        "format_version": 1,
        "meta": base_meta(),
        "state_dict": state_dict,
        "weights_sha256": weights_sha256(state_dict),
    }
    payload.update(changes)
    torch.save(payload, path)
    return path


def test_unknown_architecture(tmp_path: Path, model: torch.nn.Module):
    path = _write_payload(tmp_path / "m.pt", model, meta=base_meta(arch="no_such_net"))
    checkpoint = load_checkpoint(path)
    with pytest.raises(ModelError, match="unknown model architecture 'no_such_net'"):
        checkpoint.build_model()
    with pytest.raises(ModelError, match="unknown model architecture"):
        save_checkpoint(tmp_path / "n.pt", model, base_meta(arch="no_such_net"))


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path, model: torch.nn.Module):
    meta = base_meta(arch_kwargs={"in_channels": 4})
    path = _write_payload(tmp_path / "m.pt", model, meta=meta)
    with pytest.raises(ModelError, match="do not fit architecture 'tiny_unet'") as info:
        load_checkpoint(path).build_model()
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="do not fit"):
        save_checkpoint(tmp_path / "n.pt", model, meta)


def test_newer_format_and_bad_metadata(tmp_path: Path, model: torch.nn.Module):
    newer = _write_payload(tmp_path / "newer.pt", model, format_version=99)
    with pytest.raises(ModelError, match="upgrade roadprn"):
        load_checkpoint(newer)
    no_input = {k: v for k, v in base_meta().items() if k != "input"}
    bad = _write_payload(tmp_path / "bad.pt", model, meta=no_input)
    with pytest.raises(ModelError, match="needs 'input'"):
        load_checkpoint(bad)
    with pytest.raises(ModelError, match="base_model_sha256"):
        save_checkpoint(tmp_path / "prn.pt", model, base_meta(kind="prn"))
    wrong_bands = base_meta()
    wrong_bands["input"] = {**wrong_bands["input"], "bands": [0, 1]}
    with pytest.raises(ModelError, match="1-based"):
        save_checkpoint(tmp_path / "b.pt", model, wrong_bands)


def test_prn_checkpoint_records_base_model(tmp_path: Path, model: torch.nn.Module, saved):
    _, base_sha = saved
    path = tmp_path / "prn.pt"
    save_checkpoint(path, model, base_meta(kind="prn", base_model_sha256=base_sha))
    checkpoint = load_checkpoint(path)
    assert checkpoint.meta.base_model_sha256 == base_sha
    assert describe_checkpoint(checkpoint)["base model sha256"] == base_sha
    with pytest.raises(ModelError, match="not a base model"):
        load_model_file(path)


def test_three_band_model_on_one_band_scene(saved: tuple[Path, str]):
    meta = load_checkpoint(saved[0]).meta
    check_scene_bands(meta, 3)
    check_scene_bands(meta.input, 4)
    with pytest.raises(ModelError, match="has 1 band") as info:
        check_scene_bands(meta, 1, scene="pan.tif")
    assert "pan.tif" in str(info.value) and "[1, 2, 3]" in str(info.value)


def test_describe_checkpoint(saved: tuple[Path, str]):
    lines = describe_checkpoint(saved[0])
    assert lines["sha256"] == saved[1]
    assert lines["architecture"] == "tiny_unet (in_channels=3)"
    assert lines["bands"] == "1, 2, 3"
    assert lines["resolution"] == "0.3 m per pixel"
    assert lines["tiles"] == "256 px with 16 px halo"
    assert lines["class balance"] == "4.20 % road pixels"
    assert "a.tif" in lines["training data"]
    assert "val_iou=0.61" in lines["metrics"]
    assert all(isinstance(v, str) and "\n" not in v for v in lines.values())
