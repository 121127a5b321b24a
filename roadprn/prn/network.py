"""PatchRefineNet: refine a base model's road probability map (Nagendra et al., WACV 2024).

The network sees only the probability map. A shared R2U-Net encoder with pyramid pooling feeds
two attention-R2 decoders: a *global* one over the whole map and a *local* one whose weights are
shared by the cells of a k×k patch grid. The local decoder runs all cells as one batch: the
encoder features are folded so that each cell becomes a batch item, which gives exactly the
zero padding at cell borders of per-patch calls.

Normalisation (``norm``): with ``batch`` (the paper's choice, used by the paper preset) the
local decoder normalises over the folded batch (all cells of all maps) in training mode, i.e.
over the same pixels as the global decoder; in eval mode running statistics are used, so the
folded run equals per-cell calls exactly. ``group`` (GroupNorm, up to 8 groups) has no batch
statistics: folded and per-cell runs agree in both modes, and training and eval behave the
same, which helps with batch size 1 and small training sets.

Two variants from one config:

* ``paper``: full resolution, channels 32/64/128/256, a 1-channel sigmoid head (~3.89 M
  parameters for P4/P64). On CPU it costs 5–12 base-model forwards (D-LinkNet34 / LinkNet34).
* ``fast``: the map is pooled ``downsample``× (average and max, so thin roads survive),
  channels are scaled by ``width``, and the head predicts per-pixel *recalibration* at low
  resolution, an offset ``u`` and log-sharpness ``v`` upsampled bilinearly and applied to the
  full-resolution map: ``Y = sigmoid(exp(v)·(logit P − u))``. PRN corrects patch-level bias, so
  its decision needs little resolution, while the output keeps the base map's full-resolution
  detail, the way a pseudo-label (a re-thresholding of P) does. The head starts at ``Y = P``.
  It uses group norm: in a first synthetic trial batch norm's train/eval gap made held-out
  IoU swing by ±0.1 between epochs, group norm did not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("paper", "fast")
HEADS = ("map", "recalibrate")
NORMS = ("batch", "group")
INPUT_POOLINGS = ("avg", "avgmax")
BASE_CHANNELS = (32, 64, 128, 256)
PYRAMID_BINS = (1, 2, 4, 8)
_LOGIT_EPS = 1e-6
_LOG_SHARPNESS_LIMIT = 4.0


@dataclass(frozen=True)
class PRNArch:
    """Everything needed to rebuild a PatchRefineNet; ``asdict`` gives checkpoint metadata.

    ``grid`` k is the number of patch cells per side (8 = P64 on 512² maps, 2 = P4, 0 = P0:
    no local branch). ``map_size`` is the window side the model is trained and run on.
    """

    variant: str = "paper"
    grid: int = 8
    map_size: int = 512
    width: float = 1.0
    downsample: int = 1
    head: str = "map"
    input_pooling: str = "avg"
    recurrence: int = 2
    norm: str = "batch"

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(max(4, 2 * round(c * self.width / 2)) for c in BASE_CHANNELS)

    @property
    def name(self) -> str:
        """Paper naming: P0, P4, P64 = number of patches in the grid."""
        return f"P{self.grid * self.grid}"

    @property
    def size_multiple(self) -> int:
        """Map sides must be multiples of this (pooling ×8 inside each grid cell)."""
        return self.downsample * 8 * max(1, self.grid)

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"PRN variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.head not in HEADS:
            raise ValueError(f"PRN head must be one of {HEADS}, got {self.head!r}")
        if self.norm not in NORMS:
            raise ValueError(f"PRN norm must be one of {NORMS}, got {self.norm!r}")
        if self.input_pooling not in INPUT_POOLINGS:
            raise ValueError(
                f"PRN input_pooling must be one of {INPUT_POOLINGS}, got {self.input_pooling!r}"
            )
        if self.grid < 0 or self.downsample < 1 or self.recurrence < 0 or self.width <= 0:
            raise ValueError(f"PRN grid/downsample/recurrence/width out of range: {self}")
        if self.map_size % self.size_multiple:
            raise ValueError(
                f"PRN map_size {self.map_size} is not a multiple of "
                f"downsample×8×grid = {self.size_multiple}"
            )


_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "width": 1.0,
        "downsample": 1,
        "head": "map",
        "input_pooling": "avg",
        "norm": "batch",
    },
    "fast": {
        "width": 0.5,
        "downsample": 4,
        "head": "recalibrate",
        "input_pooling": "avgmax",
        "norm": "group",
    },
}


def prn_arch(variant: str = "paper", **overrides: Any) -> PRNArch:
    """The preset of ``variant`` with any field overridden (None means: keep the preset)."""
    if variant not in _PRESETS:
        raise ValueError(f"PRN variant must be one of {VARIANTS}, got {variant!r}")
    known = {f.name for f in fields(PRNArch)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown PRN architecture keys: {sorted(unknown)}")
    values = {**_PRESETS[variant], **{k: v for k, v in overrides.items() if v is not None}}
    arch = replace(PRNArch(variant=variant), **values)
    arch.validate()
    return arch


def prn_arch_kwargs(arch: PRNArch) -> dict[str, Any]:
    """Plain-data keyword arguments: ``PatchRefineNet(**prn_arch_kwargs(a))`` rebuilds ``a``."""
    return asdict(arch)


class PRNOutput(NamedTuple):
    """Probability maps at the input's resolution, (B, 1, H, W); ``local`` is None for P0."""

    global_map: torch.Tensor
    local_map: torch.Tensor | None


def _norm(channels: int, kind: str) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.BatchNorm2d(channels)


def _conv_bn_relu(in_ch: int, out_ch: int, norm: str, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2),
        _norm(out_ch, norm),
        nn.ReLU(inplace=True),
    )


class RecurrentUnit(nn.Module):
    """One 3×3 conv + BN + ReLU applied to x, then ``t`` more times to x + previous output."""

    def __init__(self, channels: int, recurrence: int, norm: str) -> None:
        super().__init__()
        self.recurrence = recurrence
        self.conv = _conv_bn_relu(channels, channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        for _ in range(self.recurrence):
            out = self.conv(x + out)
        return out


class R2Block(nn.Module):
    """Recurrent-residual block (R2U-Net): 1×1 projection, two recurrent units, residual."""

    def __init__(self, in_ch: int, out_ch: int, recurrence: int, norm: str) -> None:
        super().__init__()
        self.project = nn.Conv2d(in_ch, out_ch, 1)
        self.units = nn.Sequential(
            RecurrentUnit(out_ch, recurrence, norm), RecurrentUnit(out_ch, recurrence, norm)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        return x + self.units(x)


class PyramidPooling(nn.Module):
    """Average-pool to 1/2/4/8 bins, 1×1 conv each, upsample, concat with input, project back."""

    def __init__(self, channels: int, norm: str, bins: tuple[int, ...] = PYRAMID_BINS) -> None:
        super().__init__()
        self.bins = bins
        # no BN in the branches: a 1×1 bin of a single map has no batch statistics
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True)) for _ in bins
        )
        self.project = _conv_bn_relu(channels * (len(bins) + 1), channels, norm, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(
                branch(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear", align_corners=False
            )
            for b, branch in zip(self.bins, self.branches, strict=True)
        ]
        return self.project(torch.cat([x, *pooled], dim=1))


class AttentionGate(nn.Module):
    """Additive attention (Attention U-Net): weight skip features by a map from both inputs."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        inner = max(1, channels // 2)
        self.gate = nn.Sequential(nn.Conv2d(channels, inner, 1), _norm(inner, norm))
        self.skip = nn.Sequential(nn.Conv2d(channels, inner, 1), _norm(inner, norm))
        self.psi = nn.Sequential(nn.Conv2d(inner, 1, 1), _norm(1, norm), nn.Sigmoid())

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip * self.psi(F.relu(self.gate(gate) + self.skip(skip)))


class DecoderStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, recurrence: int, norm: str) -> None:
        super().__init__()
        self.up = _conv_bn_relu(in_ch, out_ch, norm)
        self.attention = AttentionGate(out_ch, norm)
        self.block = R2Block(2 * out_ch, out_ch, recurrence, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.block(torch.cat([self.attention(x, skip), x], dim=1))


class Decoder(nn.Module):
    """Three attention-R2 stages 256→128→64→32 (scaled) and a 3×3 conv to the head channels."""

    def __init__(self, channels: tuple[int, ...], out_ch: int, recurrence: int, norm: str) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            DecoderStage(channels[i], channels[i - 1], recurrence, norm)
            for i in range(len(channels) - 1, 0, -1)
        )
        self.out = nn.Conv2d(channels[0], out_ch, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1]), strict=True):
            x = stage(x, skip)
        return self.out(x)


def fold_grid(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, H, W) → (B·k², C, H/k, W/k): each cell of the k×k grid becomes a batch item."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, k, h // k, k, w // k).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * k * k, c, h // k, w // k)


def unfold_grid(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`fold_grid`."""
    bk, c, h, w = x.shape
    b = bk // (k * k)
    x = x.reshape(b, k, k, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, k * h, k * w)


class PatchRefineNet(nn.Module):
    """PRN over (B, 1, H, W) probability maps; H, W multiples of ``arch.size_multiple``."""

    def __init__(self, variant: str = "paper", **arch_overrides: Any) -> None:
        super().__init__()
        self.arch = prn_arch(variant, **arch_overrides)
        ch = self.arch.channels
        in_ch = 2 if self.arch.input_pooling == "avgmax" else 1
        head_ch = 1 if self.arch.head == "map" else 2
        t, norm = self.arch.recurrence, self.arch.norm
        self.encoder = nn.ModuleList(
            R2Block(c_in, c_out, t, norm) for c_in, c_out in zip((in_ch, *ch[:-1]), ch, strict=True)
        )
        self.pyramid = PyramidPooling(ch[-1], norm)
        self.global_decoder = Decoder(ch, head_ch, t, norm)
        self.local_decoder = Decoder(ch, head_ch, t, norm) if self.arch.grid > 0 else None
        if self.arch.head == "recalibrate":
            for decoder in (self.global_decoder, self.local_decoder):
                if decoder is not None:  # start at the identity Y = P
                    nn.init.zeros_(decoder.out.weight)
                    if decoder.out.bias is not None:
                        nn.init.zeros_(decoder.out.bias)

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        return prn_arch_kwargs(self.arch)

    def check_input(self, prob: torch.Tensor) -> None:
        m = self.arch.size_multiple
        if prob.ndim != 4 or prob.shape[1] != 1 or prob.shape[-2] % m or prob.shape[-1] % m:
            raise ValueError(
                f"PRN {self.arch.name}/{self.arch.variant} expects (B, 1, H, W) with H, W "
                f"multiples of {m}, got {tuple(prob.shape)}"
            )

    def encode(self, prob: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features at 1, 1/2, 1/4, 1/8 of the (pooled) map; the last one pyramid-pooled."""
        d = self.arch.downsample
        x = F.avg_pool2d(prob, d) if d > 1 else prob
        if self.arch.input_pooling == "avgmax":
            x = torch.cat([x, F.max_pool2d(prob, d) if d > 1 else prob], dim=1)
        features = []
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if i else x)
            features.append(x)
        features[-1] = self.pyramid(features[-1])
        return features

    def decode_global(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Raw head output of the global branch at the encoder's resolution."""
        return self.global_decoder(features)

    def decode_local(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Raw head output of the local branch: all grid cells as one batch, stitched."""
        assert self.local_decoder is not None
        k = self.arch.grid
        return unfold_grid(self.local_decoder([fold_grid(f, k) for f in features]), k)

    def finish(self, raw: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """Raw head output → probability map at the input's resolution."""
        size = prob.shape[-2:]
        if raw.shape[-2:] != size:
            raw = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
        if self.arch.head == "map":
            return torch.sigmoid(raw)
        offset, log_sharpness = raw[:, :1], raw[:, 1:2]
        sharpness = torch.exp(log_sharpness.clamp(-_LOG_SHARPNESS_LIMIT, _LOG_SHARPNESS_LIMIT))
        return torch.sigmoid(sharpness * (torch.logit(prob, eps=_LOGIT_EPS) - offset))

    def forward(self, prob: torch.Tensor, with_local: bool = True) -> PRNOutput:
        """Both branches; ``with_local=False`` skips the local decoder (about half the cost)
        when only the global map is used, as with the default ``global`` fusion."""
        self.check_input(prob)
        features = self.encode(prob)
        global_map = self.finish(self.decode_global(features), prob)
        local_map = None
        if self.local_decoder is not None and with_local:
            local_map = self.finish(self.decode_local(features), prob)
        return PRNOutput(global_map, local_map)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _register() -> None:
    """Make PRN checkpoints rebuildable by name through the model registry."""
    from roadprn.models.base import register_model

    register_model("prn", PatchRefineNet)


_register()
