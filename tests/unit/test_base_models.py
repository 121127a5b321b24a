"""Model registry, D-LinkNet structure, TorchScript bring-your-own models."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from roadprn.errors import ModelError
from roadprn.models import base
from roadprn.models.base import (
    build_model,
    list_models,
    load_torchscript,
    register_model,
    smp_available,
)
from roadprn.models.checkpoint import load_model_file
from roadprn.models.dlinknet import DilatedCentre, DLinkNet, pad_to_multiple


def test_builtin_architectures_are_listed():
    names = list_models()
    assert {"dlinknet34", "dlinknet18", "tiny_unet"} <= set(names)
    assert names == sorted(set(names), key=names.index)  # no duplicates


@pytest.mark.parametrize(
    ("arch", "in_channels"),
    [
        ("TINY_UNET", 1),
        ("tiny_unet", 4),
        ("dlinknet18", 1),
        pytest.param("dlinknet34", 4, marks=pytest.mark.slow),
    ],
)
def test_one_logit_channel_at_input_size(arch: str, in_channels: int):
    model = build_model(arch, in_channels=in_channels).eval()
    x = torch.randn(1, in_channels, 70, 45)  # not a multiple of 32: padded and cropped inside
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1, 70, 45)
    assert torch.isfinite(y).all()


def test_dlinknet34_matches_the_paper():
    model = build_model("dlinknet34", in_channels=3)
    assert isinstance(model, DLinkNet)
    # ResNet34 stages (3, 4, 6, 3 basic blocks) with torchvision's module names
    assert [len(getattr(model.encoder, f"layer{i}")) for i in (1, 2, 3, 4)] == [3, 4, 6, 3]
    keys = set(model.state_dict())
    assert {
        "encoder.conv1.weight",
        "encoder.layer4.2.conv2.weight",
        "encoder.bn1.running_var",
    } <= keys
    # dilated centre: cascaded 3x3 convolutions with rates 1, 2, 4, 8 on the 512-channel stage
    assert isinstance(model.centre, DilatedCentre)
    assert [c.dilation[0] for c in model.centre.convs] == [1, 2, 4, 8]
    assert all(c.in_channels == 512 for c in model.centre.convs)
    n_params = sum(p.numel() for p in model.parameters())
    assert 30e6 < n_params < 32e6  # D-LinkNet34 has ~31 M parameters


@pytest.mark.parametrize("arch", ["tiny_unet", "dlinknet18"])
def test_every_parameter_takes_part(arch: str):
    """A module left out of forward() (e.g. the dilated centre) would get no gradient."""
    torch.manual_seed(0)
    kwargs = {"width": 16} if arch.startswith("dlinknet") else {}
    model = build_model(arch, in_channels=2, **kwargs).train()
    model(torch.randn(2, 2, 32, 32)).square().mean().backward()
    idle = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert idle == []


def test_padding_keeps_content_in_place():
    x = torch.arange(2 * 3 * 33 * 70, dtype=torch.float32).reshape(2, 3, 33, 70)
    padded = pad_to_multiple(x, 32)
    assert padded.shape == (2, 3, 64, 96)
    assert torch.equal(padded[..., :33, :70], x)
    assert pad_to_multiple(padded, 32) is padded


def test_unknown_architecture_and_bad_arguments():
    with pytest.raises(ModelError, match="unknown model architecture 'nope'.*tiny_unet"):
        build_model("nope")
    with pytest.raises(ModelError, match="bad arguments for architecture 'tiny_unet'"):
        build_model("tiny_unet", depth=3)
    with pytest.raises(ModelError, match="unknown model architecture 'smp.NoSuch'"):
        build_model("smp.NoSuch")
    with pytest.raises(ModelError, match="never downloads"):
        build_model("smp.Unet", encoder_weights="imagenet")


def test_smp_architectures_build_or_name_the_missing_package():
    if smp_available():
        model = build_model("smp.Unet", encoder_name="resnet18", in_channels=4).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 4, 64, 64)).shape == (1, 1, 64, 64)
        assert "smp.DeepLabV3Plus" in list_models()
    else:
        with pytest.raises(ModelError, match="segmentation-models-pytorch") as info:
            build_model("smp.DeepLabV3Plus")
        assert "\n" not in str(info.value)
        assert not any(name.startswith("smp.") for name in list_models())


def test_smp_import_failure_from_torchvision_is_one_clear_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def broken_torchvision(name, *args, **kwargs):
        if name == "segmentation_models_pytorch":
            raise RuntimeError("operator torchvision::nms does not exist\nmore lines")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken_torchvision)
    with pytest.raises(
        ModelError, match="torchvision::nms does not exist.*torchvision built"
    ) as info:
        build_model("smp.FPN")
    assert "\n" not in str(info.value)


def test_registered_architectures_build(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_model("Tiny_Head", lambda in_channels=3: torch.nn.Conv2d(in_channels, 1, 1))
    assert "tiny_head" in list_models()
    assert build_model("tiny_head", in_channels=2)(torch.zeros(1, 2, 4, 4)).shape == (1, 1, 4, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_head", lambda: torch.nn.Identity())


# --------------------------------------------------------------------------- TorchScript


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(1)
    model = build_model("tiny_unet", in_channels=3).eval()
    path = tmp_path_factory.mktemp("byo") / "traced.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the padding branch
        torch.jit.trace(model, torch.zeros(1, 3, 64, 64), check_trace=False).save(str(path))
    return path, model


def _copy(traced: tuple[Path, torch.nn.Module], tmp_path: Path) -> Path:
    path = tmp_path / "mine.pt"
    shutil.copyfile(traced[0], path)
    return path


SIDECAR = {
    "bands": [3, 2, 1],
    "normalization": {"mode": "percentile", "percentiles": [1, 99]},
    "gsd_m": 0.5,
    "output": "probability",
}


def test_torchscript_with_sidecar(traced, tmp_path: Path):
    path, model = _copy(traced, tmp_path), traced[1]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(SIDECAR))
    loaded = load_model_file(path)
    assert loaded.source == "torchscript" and not loaded.outputs_logits
    assert loaded.input.bands == [3, 2, 1] and loaded.input.gsd_m == 0.5
    assert loaded.input.normalization.percentiles == (1, 99)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), model(x), atol=1e-5)


def test_torchscript_needs_a_valid_sidecar(traced, tmp_path: Path):
    path = _copy(traced, tmp_path)
    with pytest.raises(ModelError, match="needs a YAML sidecar"):
        load_model_file(path)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({**SIDECAR, "gsd_m": -1}))
    with pytest.raises(ModelError, match="gsd_m"):
        load_model_file(path)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({**SIDECAR, "colour": "red"}))
    with pytest.raises(ModelError, match="colour"):
        load_model_file(path)
    # the same limits as configs: no aliases ("billion laughs"), no huge files
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    (tmp_path / "mine.yaml").write_text(laughs + "bands: *b\n")
    with pytest.raises(ModelError, match="aliases"):
        load_model_file(path)
    (tmp_path / "mine.yaml").write_text("# padding\n" * 10000 + yaml.safe_dump(SIDECAR))
    with pytest.raises(ModelError, match="larger than"):
        load_model_file(path)


@pytest.mark.slow  # torch.export.export takes seconds on a busy CPU
def test_torch_export_and_plain_files_are_not_torchscript(tmp_path: Path):
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    exported = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 8, 8),)), exported)
    with pytest.raises(ModelError, match="torch.export archive"):
        load_torchscript(exported)
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(ModelError, match="not a TorchScript model"):
        load_torchscript(plain)
    with pytest.raises(ModelError, match="not found"):
        load_torchscript(tmp_path / "missing.pt")
