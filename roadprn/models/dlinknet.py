"""D-LinkNet: the base road segmentation model the PatchRefineNet paper refines on DeepGlobe.

Zhou et al., "D-LinkNet: LinkNet with Pretrained Encoder and Dilated Convolution for High
Resolution Satellite Imagery Road Extraction", CVPR Workshops 2018.

The ResNet encoder is written here (not taken from torchvision) because PyPI's torchvision
wheels are built against CUDA torch and fail to import with the CPU torch builds that roadprn
installs. Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1``...), so an
ImageNet ResNet state dict (without ``fc``) loads into ``model.encoder`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
DOWNSAMPLING = 32  # total stride of the encoder; inputs are padded to a multiple of it


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions with a shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity, inplace=True)


class ResNetEncoder(nn.Module):
    """ResNet-18/34 feature extractor returning the four stage outputs (strides 4..32)."""

    def __init__(self, depth: int = 34, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        if depth not in RESNET_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_BLOCKS)}, not {depth}")
        self.channels = [width, width * 2, width * 4, width * 8]
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        in_ch = width
        for i, (n_blocks, out_ch) in enumerate(
            zip(RESNET_BLOCKS[depth], self.channels, strict=True)
        ):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_ch, out_ch, stride)]
            blocks += [BasicBlock(out_ch, out_ch) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        e1 = self.layer1(x)
        e2 = self.layer2(e1)
        e3 = self.layer3(e2)
        e4 = self.layer4(e3)
        return [e1, e2, e3, e4]


class DilatedCentre(nn.Module):
    """D-LinkNet's centre: cascaded dilated convolutions (rates 1, 2, 4, 8), all paths summed.

    The cascade widens the receptive field to the whole tile, which lets the model connect road
    segments across occlusions (trees, shadows) without losing resolution.
    """

    def __init__(self, channels: int, rates: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=r, dilation=r) for r in rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        path = x
        for conv in self.convs:
            path = F.relu(conv(path), inplace=True)
            out = out + path
        return out


class DecoderBlock(nn.Module):
    """LinkNet decoder block: 1x1 reduce, 3x3 transposed conv (x2 upsampling), 1x1 expand."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch // 4
        self.reduce = nn.Sequential(nn.Conv2d(in_ch, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(True))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(True),
        )
        self.expand = nn.Sequential(
            nn.Conv2d(mid, out_ch, 1), nn.BatchNorm2d(out_ch), nn.ReLU(True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.up(self.reduce(x)))


class DLinkNet(nn.Module):
    """D-LinkNet with a ResNet-18/34 encoder; returns one channel of road logits.

    Any input size works: the input is reflect-padded to a multiple of 32 and the output
    cropped back, so tiles with odd sizes at scene edges need no special handling.
    """

    def __init__(
        self, in_channels: int = 3, encoder_depth: int = 34, width: int = 64, classes: int = 1
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(encoder_depth, in_channels, width)
        c1, c2, c3, c4 = self.encoder.channels
        self.centre = DilatedCentre(c4)
        self.decoder4 = DecoderBlock(c4, c3)
        self.decoder3 = DecoderBlock(c3, c2)
        self.decoder2 = DecoderBlock(c2, c1)
        self.decoder1 = DecoderBlock(c1, c1)
        half = max(c1 // 2, 1)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(c1, half, 4, 2, 1),
            nn.ReLU(True),
            nn.Conv2d(half, half, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(half, classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, DOWNSAMPLING)
        e1, e2, e3, e4 = self.encoder(x)
        d4 = self.decoder4(self.centre(e4)) + e3
        d3 = self.decoder3(d4) + e2
        d2 = self.decoder2(d3) + e1
        d1 = self.decoder1(d2)
        return self.head(d1)[..., :height, :width]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of an NCHW tensor to a multiple (reflect where possible)."""
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def dlinknet34(in_channels: int = 3, width: int = 64) -> DLinkNet:
    """D-LinkNet34 as in the paper (width 64: ~31 M parameters); ``width`` scales all layers."""
    return DLinkNet(in_channels=in_channels, encoder_depth=34, width=width)


def dlinknet18(in_channels: int = 3, width: int = 64) -> DLinkNet:
    """A lighter D-LinkNet with a ResNet-18 encoder, for CPU-friendly models."""
    return DLinkNet(in_channels=in_channels, encoder_depth=18, width=width)
