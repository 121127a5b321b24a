"""Base segmentation model registry: architecture name + keyword arguments -> ``nn.Module``.

Every architecture returns one channel of road *logits* (no sigmoid) for an NCHW float input.
Names are case-insensitive. Three families:

* built in, pure PyTorch: ``dlinknet34`` (the PRN paper's base model), ``dlinknet18``,
  ``effnet_lite{0,1,2}_linknet`` (EfficientNet-Lite encoder, LinkNet decoder; the only ones with
  pretrained weights, see :func:`load_pretrained`) and ``tiny_unet`` (a few thousand
  parameters, for tests and smoke runs);
* ``smp.<Arch>`` (``smp.Unet``, ``smp.Linknet``, ``smp.DeepLabV3Plus``, ``smp.FPN``, ...) from
  segmentation-models-pytorch, with ``encoder_name`` (default ``resnet34``). They exist only where
  that package imports: it needs torchvision, and PyPI's torchvision wheels are linked against
  CUDA torch, so they fail to import next to a CPU-only torch ("operator torchvision::nms does
  not exist"). Encoder weights are never downloaded (``encoder_weights`` is always None);
* architectures registered at run time with :func:`register_model` (e.g. PatchRefineNet).

Bring-your-own models are TorchScript files (:func:`load_torchscript`).
"""

from __future__ import annotations

import importlib
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from roadprn.errors import ModelError
from roadprn.models.dlinknet import dlinknet18, dlinknet34, pad_to_multiple
from roadprn.models.lite_linknet import ARCHITECTURES as LITE_LINKNETS
from roadprn.models.torchscript_guard import check_torchscript_archive

ModelBuilder = Callable[..., nn.Module]

# smp class names by their lower-case roadprn spelling (after the "smp." prefix)
SMP_ARCHITECTURES = {
    name.lower(): name
    for name in (
        "Unet",
        "UnetPlusPlus",
        "Linknet",
        "FPN",
        "PSPNet",
        "PAN",
        "DeepLabV3",
        "DeepLabV3Plus",
        "MAnet",
        "UPerNet",
        "Segformer",
    )
}
SMP_PREFIX = "smp."
# modules that register architectures when imported; imported on first lookup of an unknown name
PLUGIN_MODULES = ("roadprn.prn.network",)


class TinyUNet(nn.Module):
    """A two-level U-Net with a few thousand parameters: fast enough for unit tests on CPU."""

    def __init__(self, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.enc1 = _conv_block(in_channels, width)
        self.enc2 = _conv_block(width, width * 2)
        self.bottom = _conv_block(width * 2, width * 4)
        self.up2 = nn.ConvTranspose2d(width * 4, width * 2, 2, stride=2)
        self.dec2 = _conv_block(width * 4, width * 2)
        self.up1 = nn.ConvTranspose2d(width * 2, width, 2, stride=2)
        self.dec1 = _conv_block(width * 2, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, 4)
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)[..., :height, :width]


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


_REGISTRY: dict[str, ModelBuilder] = {
    "dlinknet34": dlinknet34,
    "dlinknet18": dlinknet18,
    "tiny_unet": TinyUNet,
    **LITE_LINKNETS,
}
# architectures whose models have a load_pretrained() method (ImageNet encoder weights)
PRETRAINED_ARCHITECTURES = frozenset(LITE_LINKNETS)
# (tile side, halo) in px that training records for inference unless told otherwise.
# EfficientNet-Lite's stride-16/32 features feel a tile's edge further in than D-LinkNet's
# 32 px halo covers (pretrained Lite0 on img33, mean change vs full context: stride 16 10 % at
# 48-64 px, 5 % at 64-80 px): 768/64 keeps them right at 10 % more pixels than 512/32 (overlap
# factor (768/640)² = 1.44 vs (512/448)² = 1.31)
DEFAULT_TILING = (512, 32)
ARCH_TILING = {name: (768, 64) for name in LITE_LINKNETS}
# tiles per forward on a CPU: depthwise convolutions gain nothing from batching there (Lite0 at
# 768²: 0.23 s per tile alone, 0.30 s per tile in batches of 4; scripts/bench_base_forward.py)
DEFAULT_CPU_BATCH = 4
ARCH_CPU_BATCH = {name: 1 for name in LITE_LINKNETS}


def register_model(name: str, builder: ModelBuilder) -> None:
    """Make ``builder(**kwargs)`` available as ``build_model(name, **kwargs)``."""
    key = name.lower()
    if key.startswith(SMP_PREFIX):
        raise ValueError(f"architecture names starting with {SMP_PREFIX!r} are reserved")
    existing = _REGISTRY.get(key)
    if existing is not None and existing is not builder:
        raise ValueError(f"architecture {name!r} is already registered")
    _REGISTRY[key] = builder


def smp_available() -> bool:
    """Whether segmentation-models-pytorch (and the torchvision it needs) import here."""
    try:
        _import_smp("smp.unet")
    except ModelError:
        return False
    return True


def list_models() -> list[str]:
    """Architecture names that :func:`build_model` can build in this environment."""
    _import_plugins()
    names = sorted(_REGISTRY)
    if smp_available():
        names += [SMP_PREFIX + name for name in SMP_ARCHITECTURES.values()]
    return names


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """A freshly initialised model (logits out); ModelError for unknown names or bad arguments."""
    key = arch.lower()
    if key.startswith(SMP_PREFIX):
        return _build_smp(arch, key[len(SMP_PREFIX) :], kwargs)
    builder = _REGISTRY.get(key)
    if builder is None:
        _import_plugins()
        builder = _REGISTRY.get(key)
    if builder is None:
        raise ModelError(f"unknown model architecture {arch!r}; known: {', '.join(list_models())}")
    try:
        return builder(**kwargs)
    except TypeError as exc:  # wrong keyword arguments
        raise ModelError(f"bad arguments for architecture {arch!r}: {exc}") from exc


def default_tiling(arch: str) -> tuple[int, int]:
    """(tile size, halo) recorded by training for ``arch`` when not given."""
    return ARCH_TILING.get(arch.lower(), DEFAULT_TILING)


def default_cpu_batch(arch: str) -> int:
    """Tiles per CPU forward that run ``arch`` fastest (measured)."""
    return ARCH_CPU_BATCH.get(arch.lower(), DEFAULT_CPU_BATCH)


def load_pretrained(model: nn.Module, arch: str) -> str:
    """Initialise ``model`` from its architecture's pretrained weights; a provenance line.

    Only for training: the weights come from an installed package (an optional extra), and the
    checkpoint a run writes holds every weight, so inference never needs that package.
    """
    loader = getattr(model, "load_pretrained", None)
    if arch.lower() not in PRETRAINED_ARCHITECTURES or not callable(loader):
        raise ModelError(
            f"--pretrained: architecture {arch!r} has no pretrained weights; architectures "
            f"that have: {', '.join(sorted(PRETRAINED_ARCHITECTURES))}"
        )
    return str(loader())


def _import_plugins() -> None:
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the plugin exists but one of its imports is missing
                raise


def _import_smp(arch: str) -> Any:
    try:
        import segmentation_models_pytorch as smp
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"architecture {arch!r} needs the package segmentation-models-pytorch "
            f"(missing module {exc.name!r}); install it with a torchvision built for your torch"
        ) from exc
    except (ImportError, RuntimeError) as exc:  # torchvision built for another torch
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"architecture {arch!r} needs segmentation-models-pytorch, which fails to import "
            f"here ({reason}); install a torchvision built for torch {torch.__version__}"
        ) from exc
    return smp


def _build_smp(arch: str, smp_key: str, kwargs: dict[str, Any]) -> nn.Module:
    class_name = SMP_ARCHITECTURES.get(smp_key)
    if class_name is None:
        known = ", ".join(SMP_PREFIX + n for n in SMP_ARCHITECTURES.values())
        raise ModelError(f"unknown model architecture {arch!r}; smp architectures: {known}")
    if kwargs.get("encoder_weights") is not None:
        raise ModelError(
            f"{arch}: encoder_weights must be None; roadprn never downloads weights at run time"
        )
    for fixed in ("classes", "activation"):
        if fixed in kwargs:
            raise ModelError(f"{arch}: {fixed!r} is fixed (one channel of logits)")
    smp = _import_smp(arch)
    options = {"encoder_name": "resnet34", "in_channels": 3, **kwargs}
    try:
        return getattr(smp, class_name)(encoder_weights=None, classes=1, activation=None, **options)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"bad arguments for architecture {arch!r}: {exc}") from exc


# --------------------------------------------------------------------------- bring your own


def archive_kind(path: Path) -> str:
    """What a ``.pt``-like file is: 'torchscript', 'export', 'torch.save' or 'unknown'.

    All three are zip archives; they differ in their entries.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "unknown"
    if any("/code/" in name for name in names) and any(
        name.endswith("constants.pkl") for name in names
    ):
        return "torchscript"
    if any(name.endswith(("serialized_exported_program.json", "archive_format")) for name in names):
        return "export"
    if any(name.endswith("data.pkl") for name in names):
        return "torch.save"
    return "unknown"


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Load a TorchScript model on the CPU, in eval mode, after checking it without running it.

    ``torch.jit.load`` is not a sandbox: the archive's code is compiled at load time, a class's
    ``__setstate__`` runs while loading, and TorchScript can call operators that create, read
    and write files (``torch.from_file``, ``torch.save``) or reach the network. So the archive
    is first inspected by :func:`roadprn.models.torchscript_guard.check_torchscript_archive`
    (zip layout, pickle globals, every construct of its code against an allow-list of tensor
    operators); anything else is refused before torch sees the file. The guard does not limit
    memory or time a model may use.

    ``torch.export`` files (``.pt2``) are refused: ``torch.export.load`` unpickles parts of the
    archive with ``weights_only=False`` when the file asks for it, so a crafted file could run
    arbitrary Python. Convert such models with ``torch.jit.trace(model, example).save(path)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    kind = archive_kind(path)
    if kind == "export":
        raise ModelError(
            f"{path} is a torch.export archive, which roadprn does not load (its loader may "
            "unpickle arbitrary objects); save the model as TorchScript with torch.jit.trace"
        )
    if kind != "torchscript":
        raise ModelError(f"{path} is not a TorchScript model (found: {kind} file)")
    check_torchscript_archive(path)  # torch.jit.load may run the file's code: inspect it first
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript in favour of torch.export, whose loader is unsafe
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party file is a user error
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load TorchScript model {path}: {reason}") from exc
    return module.eval()
