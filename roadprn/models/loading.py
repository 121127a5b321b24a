"""Turning a model reference from the config (``default`` or a file) into a runnable model."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from roadprn.errors import ModelError
from roadprn.infer.predictor import SegmentationModel

DEFAULT_BASE_MODEL = "default_base.pt"
DEFAULT_PAN_MODEL = "default_base_pan.pt"  # 1-band (panchromatic) twin of the default model
# roadprn 0.1's default (D-LinkNet-18, 0.5 m), kept by name to compare with and reproduce
V1_BASE_MODEL = "default_base_v1.pt"
V1_PAN_MODEL = "default_base_pan_v1.pt"
MODEL_ALIASES = {"default": DEFAULT_BASE_MODEL, "default-pan": DEFAULT_PAN_MODEL,
                 "default-v1": V1_BASE_MODEL, "default-pan-v1": V1_PAN_MODEL}
# the RGB aliases that stand for their panchromatic twin on 1-band scenes
PAN_TWINS = {"default": "default-pan", "default-v1": "default-pan-v1"}
DEFAULT_PRN_MODEL = "default_prn.pt"  # trained on DEFAULT_BASE_MODEL's probability maps
# every shipped PRN; ``--refine auto`` picks the one trained on the base model in use
SHIPPED_PRN_MODELS = (DEFAULT_PRN_MODEL, "default_prn_v1.pt")


def default_model_path(name: str = DEFAULT_BASE_MODEL) -> Path:
    """The model shipped inside the package (``roadprn/data/models/``)."""
    return Path(str(resources.files("roadprn") / "data" / "models" / name))


def resolve_model_path(spec: str) -> Path:
    """``default`` (RGB), ``default-pan`` (1 band) or a path."""
    if spec in MODEL_ALIASES:
        path = default_model_path(MODEL_ALIASES[spec])
        if not path.is_file():
            raise ModelError(
                f"the '{spec}' model is not installed with this copy of roadprn; "
                "pass a checkpoint with --model PATH")
        return path
    return Path(spec)


def shipped_prn_path(base_sha256: str | None) -> Path | None:
    """The shipped PRN trained on the base model with this sha256 (None: there is none)."""
    if not base_sha256:
        return None
    for name in SHIPPED_PRN_MODELS:
        if _shipped_prn_base_sha256(name) == base_sha256:
            return default_model_path(name)
    return None


@functools.lru_cache(maxsize=len(SHIPPED_PRN_MODELS))
def _shipped_prn_base_sha256(name: str) -> str | None:
    """The base model a shipped PRN refines: read once per process (package files are fixed),
    not once per scene of a batch."""
    from roadprn.models.checkpoint import load_checkpoint

    path = default_model_path(name)
    return load_checkpoint(path).meta.base_model_sha256 if path.is_file() else None


def model_for_scene(spec: str, data_bands: int) -> str:
    """``default`` (``default-v1``) means its panchromatic twin for 1-band scenes."""
    pan = PAN_TWINS.get(spec)
    if data_bands == 1 and pan and default_model_path(MODEL_ALIASES[pan]).is_file():
        return pan
    return spec


def load_segmentation_model(spec: str) -> SegmentationModel:
    """``default`` or a path to a roadprn checkpoint, a TorchScript file (YAML sidecar or
    roadprn's embedded spec) or an ONNX model (run by onnxruntime)."""
    from roadprn.models.base import default_cpu_batch
    from roadprn.models.checkpoint import load_model_file
    from roadprn.models.exported import is_onnx_path

    path = resolve_model_path(spec)
    if is_onnx_path(path):
        return load_onnx_model(path)
    loaded = load_model_file(path)
    inp = loaded.input
    name = loaded.meta.arch if loaded.meta is not None else path.stem
    return SegmentationModel(
        module=loaded.module,
        in_channels=len(inp.bands),
        name=f"{name} ({path.name})",
        bands=tuple(inp.bands),
        outputs_logits=loaded.outputs_logits,
        sha256=loaded.sha256,
        tile_size=inp.tile_size,
        halo=inp.halo,
        gsd_m=inp.gsd_m,
        gsd_range_m=inp.gsd_range_m,
        cpu_batch_size=default_cpu_batch(loaded.meta.arch) if loaded.meta is not None else None,
        normalization=inp.normalization.model_dump(mode="json"),
        meta=loaded.meta.model_dump(mode="json") if loaded.meta is not None else {},
    )


def load_onnx_model(path: Path) -> SegmentationModel:
    """An ONNX base model on onnxruntime (checked first: :mod:`roadprn.models.exported`)."""
    from roadprn.models.base import default_cpu_batch
    from roadprn.models.exported import load_onnx_runner, model_sha256

    runner = load_onnx_runner(path)
    spec = runner.spec
    if spec.kind != "base" or spec.input is None:
        raise ModelError(f"{path} is a {spec.kind} model, not a base model")
    inp = spec.input
    return SegmentationModel(
        module=runner,
        in_channels=len(inp.bands),
        name=runner.name,
        bands=tuple(inp.bands),
        outputs_logits=spec.outputs_logits,
        sha256=model_sha256(runner.model, spec),
        tile_size=inp.tile_size,
        halo=inp.halo,
        gsd_m=inp.gsd_m,
        gsd_range_m=inp.gsd_range_m,
        cpu_batch_size=default_cpu_batch(spec.arch) if spec.arch else None,
        normalization=inp.normalization.model_dump(mode="json"),
        meta={"format": "onnx", "onnx_sha256": runner.model.sha256, "spec_from": spec.source,
              "arch": spec.arch, "arch_kwargs": spec.arch_kwargs},
    )
