"""Derive the TorchScript allow-list of ``roadprn/models/torchscript_guard.py`` from real models.

Scripts and traces the project's architectures and smp-style reference models (the building
blocks of segmentation-models-pytorch's U-Net, LinkNet, FPN, PSPNet, DeepLabV3+, MAnet, PAN,
UPerNet and Segformer, and MobileNet/EfficientNet-style encoder blocks, rebuilt from torch.nn
because smp needs a torchvision that does not import next to a CPU-only torch), saves each,
and prints every construct their saved code uses that the guard rules about, with what the
guard says about it now. Run it after a torch upgrade:

    python scripts/torchscript_allowlist.py          # constructs and their verdicts
    python scripts/torchscript_allowlist.py --missing  # only the ones the guard refuses

``tests/unit/test_torchscript_guard.py`` imports :func:`reference_exports` from here and asserts
that every export passes the guard and still loads and runs.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roadprn.models.base import build_model, list_models  # noqa: E402
from roadprn.models.torchscript_guard import _refusal, source_constructs  # noqa: E402

SIZE = 64


def _cbr(cin: int, cout: int, k: int = 3, d: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=d * (k // 2), dilation=d,
                                   groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SCSE(nn.Module):
    """smp's spatial and channel squeeze-and-excitation attention."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, 4, 1), nn.ReLU(True),
                               nn.Conv2d(4, ch, 1), nn.Sigmoid())
        self.s = nn.Sequential(nn.Conv2d(ch, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.c(x) + x * self.s(x)


class Encoder(nn.Module):
    """A small ResNet-like encoder returning four feature maps (strides 2..16)."""

    def __init__(self, cin: int = 3, w: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbr(cin, w), nn.MaxPool2d(3, 2, 1))
        self.l2 = nn.Sequential(_cbr(w, 2 * w), nn.AvgPool2d(2))
        self.l3 = nn.Sequential(_cbr(2 * w, 4 * w), nn.MaxPool2d(2, ceil_mode=True))
        self.l4 = nn.Sequential(_cbr(4 * w, 8 * w), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.stem(x)
        b = self.l2(a)
        c = self.l3(b)
        return [a, b, c, self.l4(c)]


class UNet(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.enc = Encoder(w=w)
        self.d3 = nn.Sequential(_cbr(12 * w, 4 * w), SCSE(4 * w))
        self.d2 = _cbr(6 * w, 2 * w)
        self.d1 = _cbr(3 * w, w)
        self.head = nn.Conv2d(w, 1, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = self.enc(x)
        y = self.d3(torch.cat([F.interpolate(d, scale_factor=2.0, mode="nearest"), c], 1))
        y = self.d2(torch.cat([F.interpolate(y, size=b.shape[-2:], mode="nearest"), b], dim=1))
        y = self.d1(torch.cat([F.interpolate(y, scale_factor=2.0), a], 1))
        return self.up(self.head(y))


class LinkNet(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.enc = Encoder(w=w)
        self.up4 = nn.ConvTranspose2d(8 * w, 4 * w, 4, 2, 1)
        self.up3 = nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1)
        self.up2 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.head = nn.Sequential(nn.ConvTranspose2d(w, w, 4, 2, 1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(w, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = self.enc(x)
        y = self.up4(d) + c
        y = self.up3(y) + b
        y = self.up2(y) + a
        return self.head(y)


class FPN(nn.Module):
    def __init__(self, w: int = 8, pyr: int = 16) -> None:
        super().__init__()
        self.enc = Encoder(w=w)
        self.lat = nn.ModuleList([nn.Conv2d(c * w, pyr, 1) for c in (1, 2, 4, 8)])
        self.seg = nn.ModuleList([
            nn.Sequential(nn.Conv2d(pyr, pyr, 3, padding=1), nn.GroupNorm(4, pyr), nn.ReLU())
            for _ in range(4)])
        self.drop = nn.Dropout2d(0.2)
        self.head = nn.Conv2d(pyr, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.enc(x)
        lats: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        for i, (lat, seg) in enumerate(zip(self.lat, self.seg)):  # noqa: B905 - TorchScript
            lats.append(lat(feats[i]))
            if i < 3:
                maps.append(seg(lats[i]))
        p = lats[3]
        for i in range(2, -1, -1):
            p = F.interpolate(p, size=lats[i].shape[-2:], mode="nearest") + lats[i]
        out = p
        for m in maps:
            out = out + F.interpolate(m, size=out.shape[2:], mode="bilinear",
                                      align_corners=False)
        out = self.head(self.drop(out))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_cbr(cin, cout, 1)] + [
            nn.Sequential(nn.Conv2d(cin, cin, 3, padding=r, dilation=r, groups=cin, bias=False),
                          nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
            for r in (2, 4)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU())
        self.project = nn.Sequential(_cbr(4 * cout, cout, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)
        outs.append(pooled)
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3Plus(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.enc = Encoder(w=w)
        self.aspp = ASPP(8 * w, 2 * w)
        self.low = _cbr(2 * w, w, 1)
        self.fuse = _cbr(3 * w, 2 * w)
        self.head = nn.Sequential(nn.Conv2d(2 * w, 1, 1),
                                  nn.UpsamplingBilinear2d(scale_factor=4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, b, _, d = self.enc(x)
        y = F.interpolate(self.aspp(d), scale_factor=4.0, mode="bilinear", align_corners=True)
        return self.head(self.fuse(torch.cat([y, self.low(b)], 1)))


class PSPNet(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.enc = Encoder(w=w)
        self.stages = nn.ModuleList([
            nn.Sequential(nn.AdaptiveAvgPool2d(s), _cbr(4 * w, w, 1)) for s in (1, 2, 3, 6)])
        self.head = nn.Sequential(_cbr(8 * w, w), nn.Conv2d(w, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.enc(x)[2]
        size = (c.size(2), c.size(3))
        pyramid = [F.interpolate(s(c), size=size, mode="bilinear", align_corners=True)
                   for s in self.stages]
        y = self.head(torch.cat([c] + pyramid, dim=1))
        return F.interpolate(y, scale_factor=8.0, mode="bilinear", align_corners=True)


class PANLike(nn.Module):
    """PAN/MAnet style attention: global pooling, max pooling, softmax, multiplications."""

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.enc = Encoder(w=w)
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8 * w, w, 1))
        self.gmp = nn.AdaptiveMaxPool2d(1)
        self.conv = nn.Conv2d(8 * w, w, 1)
        self.sm = nn.Softmax(dim=1)
        self.head = nn.Sequential(nn.Conv2d(w, 1, 1), nn.PixelShuffle(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.enc(x)[3]
        att = self.sm(self.conv(d)) * torch.sigmoid(self.gap(d)) + self.gmp(self.conv(d))
        y = self.head(att.mean(dim=1, keepdim=True).expand_as(att) * att)
        return F.interpolate(y, size=[x.shape[2], x.shape[3]], mode="bilinear")


class MBConv(nn.Module):
    """MobileNetV2/V3 and EfficientNet blocks: depthwise conv, SE, ReLU6/Hardswish/SiLU."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(ch, 2 * ch, 1), nn.BatchNorm2d(2 * ch), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(2 * ch, 2 * ch, 3, padding=1, groups=2 * ch),
                                nn.BatchNorm2d(2 * ch), nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * ch, 4, 1), nn.SiLU(),
                                nn.Conv2d(4, 2 * ch, 1), nn.Hardsigmoid())
        self.project = nn.Sequential(nn.Conv2d(2 * ch, ch, 1), nn.BatchNorm2d(ch))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        return self.act(x + self.project(y * self.se(y)))


class MobileSeg(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, stride=2, padding=1), nn.Hardtanh(0.0, 6.0))
        self.blocks = nn.Sequential(MBConv(w), MBConv(w), nn.Identity())
        self.head = nn.Sequential(nn.Conv2d(w, 4, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class Attention(nn.Module):
    """Segformer's efficient self-attention (spatial reduction) and Mix-FFN."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.sr = nn.Conv2d(dim, dim, 2, stride=2)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.dw = nn.Conv2d(2 * dim, 2 * dim, 3, padding=1, groups=2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)
        r = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, -1).permute(0, 2, 1)
        kv = self.kv(self.norm(r)).reshape(b, -1, 2, self.heads, c // self.heads)
        kv = kv.permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        att = (q @ k.transpose(-2, -1)) * self.scale
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        y = y + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.proj(y)
        z = self.fc1(x).transpose(1, 2).view(b, 2 * c, h, w)
        z = F.gelu(self.dw(z)).flatten(2).transpose(1, 2)
        return x + self.fc2(z)


class SegformerLike(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 7, stride=4, padding=3)
        self.norm = nn.LayerNorm(dim)
        self.block = Attention(dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.embed(x)
        b, c, h, w = y.shape
        t = self.norm(y.flatten(2).transpose(1, 2))
        t = self.block(t, h, w)
        out = self.head(t).transpose(1, 2).reshape(b, 1, h, w).contiguous()
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class UPerNet(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.enc = Encoder(w=w)
        self.ppm = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(s), _cbr(8 * w, w, 1))
                                  for s in (1, 2)])
        self.lat = _cbr(4 * w, w, 1)
        self.fuse = _cbr(11 * w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, c, d = self.enc(x)
        ppm = [d] + [F.interpolate(m(d), size=d.shape[-2:], mode="bilinear",
                                   align_corners=False) for m in self.ppm]
        top = F.interpolate(torch.cat(ppm, 1), size=c.shape[-2:], mode="bilinear",
                            align_corners=False)
        y = self.fuse(torch.cat([top, self.lat(c)], 1))
        y = torch.clamp(self.head(y), min=-20.0, max=20.0)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class PRNTracer(nn.Module):
    """PatchRefineNet returns a NamedTuple with an optional member; export its maps."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.prn = build_model("prn", variant=variant, grid=2, map_size=64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prn(x)
        return out.global_map


def reference_models() -> Iterator[tuple[str, Callable[[], nn.Module], int, bool]]:
    """(name, builder, input bands, scriptable) for every reference model."""
    yield "tiny_unet", lambda: build_model("tiny_unet", in_channels=3), 3, True
    yield "dlinknet18", lambda: build_model("dlinknet18", width=8), 3, False
    yield "dlinknet34", lambda: build_model("dlinknet34", width=8), 3, False
    if "effnet_lite0_linknet" in list_models():
        yield "effnet_lite0_linknet", lambda: build_model("effnet_lite0_linknet"), 3, False
    yield "prn_paper", lambda: PRNTracer("paper"), 1, False
    yield "prn_fast", lambda: PRNTracer("fast"), 1, False
    for cls in (UNet, LinkNet, FPN, DeepLabV3Plus, PSPNet, PANLike, MobileSeg, SegformerLike,
                UPerNet):
        yield cls.__name__.lower(), cls, 3, True


def reference_exports(folder: Path, *, scripted: bool = True, traced: bool = True
                      ) -> list[tuple[str, Path, nn.Module, int]]:
    """Save every reference model as TorchScript under ``folder``: (label, path, model, bands).

    (``torch.jit.optimize_for_inference`` output is not among them: it uses mkldnn constants
    that torch 2.13 cannot load back from a saved file anyway.)
    """
    torch.manual_seed(0)
    out: list[tuple[str, Path, nn.Module, int]] = []
    for name, builder, bands, scriptable in reference_models():
        model = builder().eval()
        example = torch.rand(1, bands, SIZE, SIZE)
        if traced:
            path = folder / f"{name}_traced.pt"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.jit.trace(model, example, check_trace=False).save(str(path))
            out.append((f"{name} (trace)", path, model, bands))
        if scripted and scriptable:
            path = folder / f"{name}_scripted.pt"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.jit.script(model).save(str(path))
            out.append((f"{name} (script)", path, model, bands))
        if name in ("tiny_unet", "dlinknet18"):  # torch.jit.freeze folds batch norm
            path = folder / f"{name}_frozen.pt"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scripted_or_traced = (torch.jit.script(model) if scriptable
                                      else torch.jit.trace(model, example, check_trace=False))
                torch.jit.freeze(scripted_or_traced).save(str(path))
            out.append((f"{name} (frozen)", path, model, bands))
    return out


def archive_constructs(path: Path) -> Counter[str]:
    """Every construct the guard rules about, over all code files of one archive."""
    found: Counter[str] = Counter()
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(".py"):
                tree = ast.parse(archive.read(name).decode())
                found.update(c for c, _ in source_constructs(tree))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missing", action="store_true", help="only constructs refused now")
    args = parser.parse_args()
    total: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for _, path, _, _ in reference_exports(Path(tmp)):
            total.update(archive_constructs(path))
    for construct, count in sorted(total.items()):
        verdict = _refusal(construct)
        if verdict is None and args.missing:
            continue
        print(f"{construct:45s} {count:6d}  {'REFUSED: ' + verdict if verdict else 'allowed'}")


if __name__ == "__main__":
    main()
