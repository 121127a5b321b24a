"""Checkpoint format: round trip, plain-types-only payload, clear errors for bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from roadprn.errors import ModelError, OutputError
from roadprn.models.base import build_model
from roadprn.models.checkpoint import (
    FORMAT_NAME,
    check_scene_bands,
    compact_checkpoint,
    describe_checkpoint,
    load_checkpoint,
    load_model_file,
    save_checkpoint,
    weights_sha256,
)
from roadprn.outputs.atomic import TMP_MARKER

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


def test_half_precision_copy_is_smaller_and_gives_close_outputs(
        saved: tuple[Path, str], model: torch.nn.Module, tmp_path: Path):
    path, _ = saved
    half = tmp_path / "half.pt"
    digest = compact_checkpoint(path, half)
    checkpoint = load_checkpoint(half)
    assert checkpoint.sha256 == digest and checkpoint.meta == load_checkpoint(path).meta
    assert all(t.dtype == torch.float16 for t in checkpoint.state_dict.values()
               if t.is_floating_point())
    assert half.stat().st_size < 0.7 * path.stat().st_size
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        rebuilt = checkpoint.build_model()
        assert all(p.dtype == torch.float32 for p in rebuilt.parameters())
        difference = (torch.sigmoid(model(x)) - torch.sigmoid(rebuilt(x))).abs().max()
    assert 0 < difference < 5e-3


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
    with pytest.raises(ModelError, match="file is empty" if keep == 0 else "corrupt") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)


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
    with pytest.raises(ModelError, match="not a PyTorch file"):
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
    meta = base_meta(4)  # 4 bands and 4 input channels, but the weights take 3
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


def test_prn_checkpoint_records_base_model(tmp_path: Path, saved):
    _, base_sha = saved
    path = tmp_path / "prn.pt"
    prn = build_model("prn", variant="fast", grid=2, map_size=64)
    save_checkpoint(path, prn, {"kind": "prn", "arch": "prn", "arch_kwargs": prn.arch_kwargs,
                                "base_model_sha256": base_sha})
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
    assert lines["resolution"] == "0.3 m per pixel (other scenes are resampled to it)"
    assert lines["tiles"] == "256 px with 16 px halo"
    assert lines["class balance"] == "4.20 % road pixels"
    assert "a.tif" in lines["training data"]
    assert "val_iou=0.61" in lines["metrics"]
    assert all(isinstance(v, str) and "\n" not in v for v in lines.values())


# --------------------------------------------------------------------------- forged metadata
# A checkpoint's metadata is not covered by the weights' checksum: anyone can edit it. Every
# architecture argument is checked against bounds before a model is built.


def _forged(tmp_path: Path, model: torch.nn.Module, **meta: object) -> Path:
    return _write_payload(tmp_path / "forged.pt", model, meta=base_meta(**meta))


@pytest.mark.parametrize("kwargs,words", [
    ({"in_channels": 3, "width": 100000}, "width=100000 is outside 1..256"),
    ({"in_channels": 3, "width": -4}, "width=-4 is outside"),
    ({"in_channels": 3, "width": 0}, "width=0 is outside"),
    ({"in_channels": 1000000}, "in_channels=1000000 is outside 1..64"),
    ({"in_channels": True}, "in_channels=True must be an integer"),
    ({"in_channels": 3, "width": 8.5}, "width=8.5 must be an integer"),
    ({"in_channels": 3, "width": "8"}, "must be an integer"),
    ({"in_channels": 3, "depth": 9}, "has no argument 'depth'"),
])
def test_forged_architecture_arguments_refused_before_building(
        tmp_path: Path, model: torch.nn.Module, kwargs, words, monkeypatch):
    from roadprn.models import checkpoint as module

    built: list[str] = []
    real = module.build_model
    monkeypatch.setattr(module, "build_model", lambda *a, **k: built.append(a[0]) or real(*a, **k))
    path = _forged(tmp_path, model, arch_kwargs=kwargs)
    for load in (load_checkpoint, load_model_file, describe_checkpoint):
        with pytest.raises(ModelError, match=words) as info:
            load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert built == []  # refused from the metadata alone


def test_prn_kind_needs_prn_architecture_and_back(tmp_path: Path, model: torch.nn.Module):
    path = _forged(tmp_path, model, kind="prn", base_model_sha256="a" * 64)
    with pytest.raises(ModelError, match="'prn' checkpoint needs architecture 'prn', not "
                                         "'tiny_unet'"):
        load_checkpoint(path)
    path = _forged(tmp_path, model, arch="PRN", arch_kwargs={"variant": "fast"})
    with pytest.raises(ModelError, match="'base' checkpoint needs a base architecture"):
        load_checkpoint(path)


@pytest.mark.parametrize("kwargs,words", [
    ({"grid": 100000}, "grid=100000 is outside 0..16"),
    ({"width": float("nan")}, "width=nan is outside"),
    ({"variant": "huge"}, "variant='huge' must be one of paper, fast"),
    ({"grid": 16, "map_size": 100}, "cannot build architecture 'prn'"),
])
def test_forged_prn_arguments(tmp_path: Path, kwargs, words):
    prn = build_model("prn", variant="fast", grid=2, map_size=64)
    state_dict = prn.state_dict()
    meta = {"kind": "prn", "arch": "prn", "arch_kwargs": {**prn.arch_kwargs, **kwargs},
            "base_model_sha256": "b" * 64}
    path = tmp_path / "prn.pt"
    torch.save({"format": FORMAT_NAME, "format_version": 1, "meta": meta,
                "state_dict": state_dict, "weights_sha256": weights_sha256(state_dict)}, path)
    with pytest.raises(ModelError, match=words) as info:
        load_checkpoint(path).build_model()
    assert "\n" not in str(info.value)


def test_in_bounds_but_oversized_architecture_is_checked_on_the_meta_device(
        tmp_path: Path, model: torch.nn.Module, monkeypatch):
    """width 256 is within bounds, but the weights are width 8: refused from shapes computed on
    the meta device, before the real (large) model is allocated."""
    from roadprn.models import checkpoint as module

    devices: list[str] = []
    real = module.build_model

    def spy(*args, **kwargs):
        built = real(*args, **kwargs)
        devices.append(next(built.parameters()).device.type)
        return built

    monkeypatch.setattr(module, "build_model", spy)
    path = _forged(tmp_path, model, arch_kwargs={"in_channels": 3, "width": 256})
    with pytest.raises(ModelError, match=r"enc1.0.weight is \[8, 3, 3, 3\], the architecture "
                                         r"has \[256, 3, 3, 3\]"):
        load_checkpoint(path).build_model()
    assert devices == ["meta"]


def test_in_channels_must_match_the_bands(tmp_path: Path, model: torch.nn.Module):
    meta = base_meta()
    meta["input"] = {**meta["input"], "bands": [1, 2]}
    path = _write_payload(tmp_path / "m.pt", model, meta=meta)
    with pytest.raises(ModelError, match="takes 3 input channel\\(s\\) but 'input.bands' lists 2"):
        load_checkpoint(path)


def test_info_counts_training_files_in_plain_english():
    from roadprn.models.checkpoint import _count

    assert [_count(1, "scene"), _count(29, "scene"), _count(29, "labels")] == [
        "1 scene", "29 scenes", "29 labels"]
