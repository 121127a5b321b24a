"""roadprn checkpoints: one ``.pt`` file with weights and what the model expects as input.

The file is ``torch.save`` of a dict holding only tensors and plain values (str, int, float,
bool, None, lists, dicts), so it loads with ``torch.load(weights_only=True)``: a checkpoint from
someone else can never run code on your machine. Layout::

    {"format": "roadprn-checkpoint", "format_version": 1,
     "meta": {...CheckpointMeta, JSON-like...}, "state_dict": {name: tensor},
     "weights_sha256": "<digest of the tensors, checked on load>"}

Base models and PatchRefineNet share the format (``meta["kind"]`` says which). A TorchScript
file with a YAML sidecar is the other accepted model file (:func:`load_model_file`).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from torch import nn

import roadprn
from roadprn.config import NormalizationConfig, format_validation_error
from roadprn.errors import ModelError, one_line
from roadprn.models.base import archive_kind, build_model, load_torchscript
from roadprn.models.torchscript_guard import check_torchscript_archive
from roadprn.outputs.atomic import atomic_output, file_sha256

FORMAT_NAME = "roadprn-checkpoint"
FORMAT_VERSION = 1
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What a model expects: which bands, how to scale them, at which resolution and tile size."""

    bands: list[int] = Field(min_length=1, description="1-based scene bands, in model order")
    normalization: NormalizationConfig
    gsd_m: float = Field(gt=0, description="ground sample distance the model was trained at (m)")
    gsd_range_m: tuple[float, float] | None = Field(
        None, description="resolutions (m) the model was trained across (scale jitter); with "
                          "resolution.native_in_range, scenes inside it run unresampled")
    tile_size: int = Field(512, ge=32, le=8192)
    halo: int = Field(32, ge=0, le=2048)

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if min(self.bands) < 1:
            raise ValueError("bands are 1-based band numbers, e.g. [1, 2, 3]")
        norm = self.normalization
        if norm.mode == "auto":
            raise ValueError("normalization.mode must be stated: fixed, percentile or dtype")
        for name in ("scale", "offset"):
            values = getattr(norm, name)
            if values is not None and len(values) not in (1, len(self.bands)):
                raise ValueError(f"normalization.{name} needs 1 or {len(self.bands)} values")
        if 2 * self.halo >= self.tile_size:
            raise ValueError("halo must be less than half the tile size")
        if self.gsd_range_m is not None:
            low, high = self.gsd_range_m
            if not 0 < low <= self.gsd_m <= high:
                raise ValueError("gsd_range_m must be (low, high) with 0 < low <= gsd_m <= high")
        return self


class TrainingFile(_Strict):
    path: str
    sha256: str
    role: Literal["scene", "labels", "other"] = "scene"


class TrainingData(_Strict):
    """Enough to tell later which data a model saw, and how rare roads were in it."""

    files: list[TrainingFile] = []
    road_fraction: float | None = Field(None, ge=0, le=1, description="road pixels / labelled")
    labelled_pixels: int | None = Field(None, ge=0)
    notes: str = ""


def _utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class CheckpointMeta(_Strict):
    kind: Literal["base", "prn"]
    arch: str
    arch_kwargs: dict[str, JsonValue] = {}
    input: InputSpec | None = None
    training_data: TrainingData = TrainingData()
    metrics: dict[str, JsonValue] = {}
    base_model_sha256: str | None = None
    roadprn_version: str = Field(default_factory=lambda: roadprn.__version__)
    created: str = Field(default_factory=_utc_now)

    @model_validator(mode="after")
    def _check(self) -> CheckpointMeta:
        if self.kind == "base" and self.input is None:
            raise ValueError("a base model checkpoint needs 'input' (bands, normalization, gsd_m)")
        if self.kind == "prn" and self.base_model_sha256 is None:
            raise ValueError("a PRN checkpoint needs 'base_model_sha256'")
        sha = self.base_model_sha256
        if sha is not None and not SHA256_PATTERN.match(sha):
            raise ValueError("base_model_sha256 must be 64 lower-case hex digits")
        return self


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    sha256: str
    meta: CheckpointMeta
    state_dict: dict[str, torch.Tensor]

    def build_model(self) -> nn.Module:
        """The architecture with these weights, on the CPU, in eval mode.

        The file's architecture arguments are checked against bounds first, and the model is
        built once on the ``meta`` device (no memory) to compare its tensor shapes with the
        weights: a forged ``width: 100000`` would otherwise allocate hundreds of GB before
        ``load_state_dict`` notices.
        """
        check_architecture(self.meta, self.path)
        try:
            with torch.device("meta"):
                skeleton = _build(self.meta, self.path)
        except ModelError:
            raise
        except Exception:  # noqa: BLE001 - a third-party init that needs real memory
            skeleton = None  # the bounds above still hold
        if skeleton is not None:
            _check_shapes(skeleton, self.state_dict, self.meta, self.path)
        model = _build(self.meta, self.path)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            raise ModelError(
                f"{self.path}: weights do not fit architecture {self.meta.arch!r} "
                f"{self.meta.arch_kwargs}: {_reason(exc)}"
            ) from exc
        return model.eval()


@dataclass(frozen=True)
class LoadedModel:
    """A ready-to-run model from either kind of model file."""

    module: nn.Module
    input: InputSpec
    sha256: str
    source: Literal["checkpoint", "torchscript"]
    outputs_logits: bool = True
    meta: CheckpointMeta | None = None


class SidecarSpec(InputSpec):
    """The YAML beside a TorchScript model: its input spec and what it outputs."""

    output: Literal["logits", "probability"] = "logits"


# --------------------------------------------------------------------------- save / load


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: CheckpointMeta | dict[str, Any],
    overwrite: bool = False,
    half_precision: bool = False,
) -> str:
    """Write ``model``'s weights with ``meta`` atomically; returns the file's sha256.

    The weights are checked against ``meta.arch`` first, so a file that loads is a file that
    builds. ``half_precision`` stores float32 tensors as float16 (half the file; loading casts
    them back to the model's float32, probabilities change by ~1e-3): for shipped models.
    """
    path = Path(path)
    meta = _validate_meta(meta, path)
    state_dict = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    if half_precision:
        state_dict = {k: v.half() if v.dtype == torch.float32 else v
                      for k, v in state_dict.items()}
    Checkpoint(path, "", meta, state_dict).build_model()  # fail now, not at load time
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "meta": meta.model_dump(mode="json"),
        "state_dict": state_dict,
        "weights_sha256": weights_sha256(state_dict),
    }
    with atomic_output(path, overwrite) as tmp:
        torch.save(payload, tmp)
        digest = file_sha256(tmp)
    return digest


def compact_checkpoint(source: str | Path, out: str | Path, overwrite: bool = False) -> str:
    """A float16 copy of a checkpoint (same metadata and architecture); returns its sha256."""
    checkpoint = load_checkpoint(source)
    return save_checkpoint(out, checkpoint.build_model(), checkpoint.meta, overwrite=overwrite,
                           half_precision=True)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a roadprn checkpoint; ModelError (one line) for anything wrong."""
    path = Path(path)
    _check_file(path)
    kind = archive_kind(path)
    if kind == "torchscript":
        raise ModelError(
            f"{path} is a TorchScript model, not a roadprn checkpoint; "
            "load it with a YAML sidecar (see load_model_file)"
        )
    if kind == "unknown":
        problem = _not_a_torch_archive(path)
        if problem:
            raise ModelError(f"{path} {problem}")
    try:
        with warnings.catch_warnings():
            # a foreign pickle (protocol 4/5) makes torch warn before it refuses the file; the
            # refusal below is the one line the user needs
            warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                    category=UserWarning)
            payload = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if detail.lower().startswith("unsupported operand"):
            raise ModelError(f"{path} is not a roadprn checkpoint: a raw Python pickle, which "
                             "roadprn refuses to load") from exc
        if "global" not in str(exc).lower():  # the pickle stream itself is damaged
            raise ModelError(f"{path} is corrupt: its data does not decode ({detail})") from exc
        raise ModelError(
            f"{path} is not a roadprn checkpoint: it holds pickled Python objects, "
            "which roadprn refuses to load (only tensors and plain values are read)"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - zip/EOF/runtime errors of a damaged file
        raise ModelError(f"{path} is corrupt or truncated: {_reason(exc, 120)}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ModelError(f"{path} is not a roadprn checkpoint (no {FORMAT_NAME!r} marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{path} has checkpoint format version {version!r}; this roadprn reads up to "
            f"{FORMAT_VERSION}: upgrade roadprn"
        )
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise ModelError(f"{path}: 'state_dict' must map parameter names to tensors")
    if payload.get("weights_sha256") != weights_sha256(state_dict):
        raise ModelError(f"{path} is corrupt: its weights do not match their stored checksum")
    meta = _validate_meta(payload.get("meta"), path)
    check_architecture(meta, path)
    return Checkpoint(path, file_sha256(path), meta, state_dict)


def load_model_file(path: str | Path) -> LoadedModel:
    """A roadprn checkpoint, or a TorchScript file with its YAML sidecar, ready to run."""
    path = Path(path)
    _check_file(path)
    if archive_kind(path) == "torchscript":
        spec = torchscript_spec(path)
        embedded = embedded_spec(path) if sidecar_path(path) is None else None
        source = embedded.get("source_sha256") if embedded else None
        return LoadedModel(
            module=load_torchscript(path),
            input=InputSpec(**spec.model_dump(exclude={"output"})),
            # an export pairs with PRNs as the checkpoint it came from (the same weights)
            sha256=source if isinstance(source, str) and SHA256_PATTERN.match(source)
            else file_sha256(path),
            source="torchscript",
            outputs_logits=spec.output == "logits",
        )
    checkpoint = load_checkpoint(path)
    if checkpoint.meta.kind != "base" or checkpoint.meta.input is None:
        raise ModelError(f"{path} is a {checkpoint.meta.kind} checkpoint, not a base model")
    return LoadedModel(
        module=checkpoint.build_model(),
        input=checkpoint.meta.input,
        sha256=checkpoint.sha256,
        source="checkpoint",
        meta=checkpoint.meta,
    )


MAX_SIDECAR_BYTES = 1 << 16
#: the spec ``roadprn export --format torchscript`` embeds in the archive (``extra/``)
EMBEDDED_SPEC = "roadprn.json"


def embedded_spec(path: Path) -> dict[str, Any] | None:
    """The roadprn spec embedded in a TorchScript archive by ``roadprn export`` (read with
    ``zipfile``, never by torch), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist()
                     if n.endswith("/extra/" + EMBEDDED_SPEC) and n.count("/") == 2]
            if len(names) != 1:
                return None
            info = archive.getinfo(names[0])
            if info.file_size > MAX_SIDECAR_BYTES:
                raise ModelError(f"{path}: its embedded {EMBEDDED_SPEC} is larger than "
                                 f"{MAX_SIDECAR_BYTES} bytes")
            data = json.loads(archive.read(info).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == "roadprn-torchscript" \
        else None


def torchscript_spec(path: Path) -> SidecarSpec:
    """A TorchScript model's spec: its YAML sidecar, else the spec ``roadprn export``
    embedded in the archive."""
    if sidecar_path(path) is None:
        data = embedded_spec(path)
        if data is not None and data.get("kind") == "base":
            try:
                return SidecarSpec.model_validate({**data.get("input", {}),
                                                   "output": data.get("output", "logits")})
            except ValidationError as exc:
                raise ModelError(format_validation_error(
                    exc, f"{path}: invalid embedded input spec", model=SidecarSpec,
                    noun="key")) from exc
        if data is not None:
            raise ModelError(f"{path} is an exported {data.get('kind')} model, not a base "
                             "model")
    return read_sidecar(path)


def sidecar_path(model_path: Path) -> Path | None:
    """``model.yaml`` (or ``model.pt.yaml``) beside ``model.pt``, if present."""
    for candidate in (
        model_path.with_suffix(".yaml"),
        model_path.with_suffix(".yml"),
        model_path.with_name(model_path.name + ".yaml"),
    ):
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(model_path: Path) -> SidecarSpec:
    """The input spec a TorchScript model's author stated in YAML (bands, normalization, gsd)."""
    sidecar = sidecar_path(model_path)
    if sidecar is None:
        raise ModelError(
            f"TorchScript model {model_path} needs a YAML sidecar {model_path.with_suffix('.yaml')}"
            " stating bands, normalization and gsd_m"
        )
    from roadprn.config import safe_yaml_load
    from roadprn.errors import ConfigError

    try:
        with open(sidecar, "rb") as fh:  # a sidecar is a few lines: never read a huge file
            raw = fh.read(MAX_SIDECAR_BYTES + 1)
        if len(raw) > MAX_SIDECAR_BYTES:
            raise ModelError(f"model sidecar {sidecar} is larger than {MAX_SIDECAR_BYTES} bytes")
        data = safe_yaml_load(raw.decode("utf-8", "replace"), str(sidecar))
    except OSError as exc:
        raise ModelError(f"cannot read model sidecar {sidecar}: {_reason(exc)}") from exc
    except ConfigError as exc:  # aliases, depth, size: the same limits as configs
        raise ModelError(f"cannot read model sidecar: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"model sidecar {sidecar} must be a mapping of keys to values")
    try:
        return SidecarSpec.model_validate(data)
    except ValidationError as exc:
        raise ModelError(format_validation_error(exc, f"model sidecar {sidecar}",
                                                 model=SidecarSpec, noun="key")) from exc


# --------------------------------------------------------------------------- checks and info


def check_scene_bands(
    spec: InputSpec | CheckpointMeta, band_count: int, scene: str = "scene"
) -> None:
    """ModelError unless the scene has every band the model reads (the wording of
    :func:`roadprn.raster.scene.missing_model_bands`, which extract's band check uses)."""
    from roadprn.raster.scene import missing_model_bands

    if isinstance(spec, CheckpointMeta):
        if spec.input is None:
            return
        spec = spec.input
    problem = missing_model_bands(scene, spec.bands, band_count)
    if problem:
        raise ModelError(problem)


TRAINING_FILES_SHOWN = 20  # `info` lists the first ones, with their checksums


def describe_checkpoint(source: str | Path | Checkpoint) -> dict[str, str]:
    """Human-readable lines for ``roadprn info model.pt``, keyed by label."""
    if not isinstance(source, Checkpoint):
        _check_file(Path(source))
        if archive_kind(Path(source)) == "torchscript":
            return describe_torchscript(Path(source))
    checkpoint = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    meta = checkpoint.meta
    n_params = sum(t.numel() for t in checkpoint.state_dict.values() if t.is_floating_point())
    lines = {
        "file": str(checkpoint.path),
        "sha256": checkpoint.sha256,
        "format": f"{FORMAT_NAME} v{FORMAT_VERSION}",
        "kind": "base model" if meta.kind == "base" else "PatchRefineNet (refines a base model)",
        "architecture": f"{meta.arch} {_kwargs_text(meta.arch_kwargs)}".strip(),
        "weights": f"{n_params:,} values ({_size_text(checkpoint.path)} on disk)",
    }
    if meta.input is not None:
        spec = meta.input
        lines["bands"] = ", ".join(str(b) for b in spec.bands)
        lines["normalization"] = _normalization_text(spec.normalization)
        lines["resolution"] = _resolution_text(spec)
        lines["tiles"] = f"{spec.tile_size} px with {spec.halo} px halo"
    if meta.base_model_sha256:
        lines["base model sha256"] = meta.base_model_sha256
    data = meta.training_data
    roles = Counter(f.role for f in data.files)
    lines["training data"] = (
        f"{len(data.files)} file(s)"
        + (f" ({', '.join(_count(n, role) for role, n in sorted(roles.items()))})"
           if data.files else "")
        + (f": {', '.join(Path(f.path).name for f in data.files[:5])}" if data.files else "")
        + (" ..." if len(data.files) > 5 else "")
    )
    shown = data.files[:TRAINING_FILES_SHOWN]
    for i, item in enumerate(shown, 1):
        lines[f"training file {i}"] = f"{item.path} ({item.role}, sha256 {item.sha256})"
    if len(data.files) > len(shown):
        lines[f"training file {len(shown) + 1}"] = (f"... and {len(data.files) - len(shown)} "
                                                    "more")
    if data.road_fraction is not None:
        lines["class balance"] = f"{100 * data.road_fraction:.2f} % road pixels"
    if data.notes:
        lines["training notes"] = data.notes
    if meta.metrics:
        lines["metrics"] = ", ".join(f"{k}={_value_text(v)}" for k, v in meta.metrics.items())
    lines["roadprn version"] = meta.roadprn_version
    lines["created"] = meta.created
    return lines


def describe_torchscript(path: Path) -> dict[str, str]:
    """``roadprn info`` for a TorchScript model: the safety check and the sidecar, read without
    loading (so without running) the model."""
    check_torchscript_archive(path)
    sidecar = sidecar_path(path)
    embedded = embedded_spec(path) if sidecar is None else None
    if embedded is not None and embedded.get("kind") == "prn":
        kwargs = embedded.get("arch_kwargs") or {}
        return {
            "file": str(path), "sha256": file_sha256(path),
            "format": f"TorchScript exported by roadprn ({EMBEDDED_SPEC} inside)",
            "code check": "passed: only allow-listed tensor operators (not loaded by info)",
            "kind": "PatchRefineNet (refines a base model)",
            "architecture": f"prn {_kwargs_text(kwargs)}".strip(),
            "base model sha256": str(embedded.get("base_model_sha256")),
            "size": _size_text(path),
        }
    spec = torchscript_spec(path)
    return {
        "file": str(path),
        "sha256": file_sha256(path),
        "format": (f"TorchScript with YAML sidecar ({sidecar.name})" if sidecar else
                   f"TorchScript exported by roadprn ({EMBEDDED_SPEC} inside)"),
        "code check": "passed: only allow-listed tensor operators (not loaded by info)",
        "output": spec.output,
        "bands": ", ".join(str(b) for b in spec.bands),
        "normalization": _normalization_text(spec.normalization),
        "resolution": _resolution_text(spec),
        "tiles": f"{spec.tile_size} px with {spec.halo} px halo",
        "size": _size_text(path),
    }


def _resolution_text(spec: InputSpec) -> str:
    if spec.gsd_range_m is None:
        return f"{spec.gsd_m:g} m per pixel (other scenes are resampled to it)"
    low, high = spec.gsd_range_m
    return (f"{spec.gsd_m:g} m per pixel, trained across {low:g}-{high:g} m (other scenes are "
            "resampled to it; resolution.native_in_range=true runs those in range unresampled)")


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Digest of names, dtypes, shapes and bytes of all tensors.

    torch.load does not verify the zip's CRCs, so flipped bytes in tensor data would otherwise
    load silently as wrong weights.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- architecture bounds

PRN_ARCH = "prn"
_CHANNELS = ("int", 1, 64)  # input bands
# Per architecture: argument -> ("int"|"float", low, high) or a tuple of allowed strings.
# Generous enough for any real model; tight enough that no forged value allocates absurdly.
ARCH_BOUNDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "tiny_unet": {"in_channels": _CHANNELS, "width": ("int", 1, 256)},
    "dlinknet18": {"in_channels": _CHANNELS, "width": ("int", 1, 256)},
    "dlinknet34": {"in_channels": _CHANNELS, "width": ("int", 1, 256)},
    PRN_ARCH: {
        "variant": ("paper", "fast"), "grid": ("int", 0, 16), "map_size": ("int", 8, 8192),
        "width": ("float", 0.01, 4.0), "downsample": ("int", 1, 32),
        "head": ("map", "recalibrate"), "input_pooling": ("avg", "avgmax"),
        "recurrence": ("int", 0, 4), "norm": ("batch", "group"),
    },
}
# smp.* models: only these arguments, each bounded; encoder names are checked by smp itself.
SMP_BOUNDS: dict[str, tuple[Any, ...]] = {
    "in_channels": _CHANNELS, "encoder_depth": ("int", 1, 5),
    "decoder_channels": ("ints", 1, 2048), "decoder_attention_type": ("scse",),
    "decoder_use_batchnorm": ("bool",), "encoder_name": ("str", 1, 64),
    "decoder_pyramid_channels": ("int", 1, 2048), "decoder_segmentation_channels": ("int", 1, 2048),
    "decoder_dropout": ("float", 0.0, 1.0), "encoder_output_stride": ("int", 8, 32),
    "upsampling": ("int", 1, 32), "psp_out_channels": ("int", 1, 2048),
    "encoder_weights": ("none",), "decoder_merge_policy": ("add", "cat"),
}


def check_architecture(meta: CheckpointMeta, path: Path) -> None:
    """ModelError (one line) unless ``kind``, ``arch`` and every argument are plausible.

    Runs before any model is built: a checkpoint's metadata is not covered by its weights'
    checksum, so anyone can edit it.
    """
    arch = meta.arch.lower()
    if (meta.kind == "prn") != (arch == PRN_ARCH):
        want = f"architecture {PRN_ARCH!r}" if meta.kind == "prn" else "a base architecture"
        raise ModelError(f"{path}: a {meta.kind!r} checkpoint needs {want}, not {meta.arch!r}")
    if arch.startswith("smp."):
        bounds = SMP_BOUNDS
    elif arch in ARCH_BOUNDS:
        bounds = ARCH_BOUNDS[arch]
    else:
        return  # unknown names are refused by build_model; registered plugins check their own
    for key, value in meta.arch_kwargs.items():
        rule = bounds.get(key)
        if rule is None and bounds is SMP_BOUNDS:
            rule = ("plain",)  # smp has many more options: any bounded plain value
        if rule is None:
            raise ModelError(f"{path}: architecture {meta.arch!r} has no argument {key!r} "
                             f"(known: {', '.join(sorted(bounds))})")
        problem = _bound_problem(value, rule)
        if problem:
            raise ModelError(f"{path}: architecture argument {key}={_short(value)} {problem}")
    if meta.input is not None:
        channels = meta.arch_kwargs.get("in_channels", 3 if meta.kind == "base" else None)
        if channels is not None and channels != len(meta.input.bands):
            raise ModelError(f"{path}: architecture takes {channels} input channel(s) but "
                             f"'input.bands' lists {len(meta.input.bands)}")


def _bound_problem(value: Any, rule: tuple[Any, ...]) -> str | None:
    kind = rule[0]
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return "must be an integer"
        return None if rule[1] <= value <= rule[2] else f"is outside {rule[1]}..{rule[2]}"
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "must be a number"
        ok = rule[1] <= value <= rule[2]  # NaN fails both comparisons
        return None if ok else f"is outside {rule[1]:g}..{rule[2]:g}"
    if kind == "ints":
        if not isinstance(value, list) or not 1 <= len(value) <= 8:
            return "must be a list of 1 to 8 integers"
        for item in value:
            problem = _bound_problem(item, ("int", rule[1], rule[2]))
            if problem:
                return f"holds {_short(item)}, which {problem}"
        return None
    if kind == "plain":
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return None if abs(value) <= 4096 else "is outside -4096..4096"
        if isinstance(value, str):
            return None if len(value) <= 64 else "is longer than 64 characters"
        if isinstance(value, list):
            return _bound_problem(value, ("ints", -4096, 4096))
        return "must be a number, a name, true/false, null or a list of integers"
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "none":
        return None if value is None else "must be null"
    if kind == "str":
        ok = isinstance(value, str) and rule[1] <= len(value) <= rule[2]
        return None if ok else f"must be a name of {rule[1]} to {rule[2]} characters"
    return None if value in rule else f"must be one of {', '.join(map(str, rule))}"


def _build(meta: CheckpointMeta, path: Path) -> nn.Module:
    try:
        return build_model(meta.arch, **meta.arch_kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:  # architecture's own argument checks
        raise ModelError(f"{path}: cannot build architecture {meta.arch!r} "
                         f"{_kwargs_text(meta.arch_kwargs)}: {_reason(exc)}") from exc


def _check_shapes(skeleton: nn.Module, state_dict: dict[str, torch.Tensor],
                  meta: CheckpointMeta, path: Path) -> None:
    """ModelError unless the weights have exactly the tensors the architecture has."""
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    for name, shape in expected.items():
        tensor = state_dict.get(name)
        found = None if tensor is None else tuple(tensor.shape)
        if found != shape:
            raise ModelError(
                f"{path}: weights do not fit architecture {meta.arch!r} "
                f"{_kwargs_text(meta.arch_kwargs)}: {name} is "
                f"{'missing' if found is None else list(found)}, the architecture has "
                f"{list(shape)}")
    extra = sorted(set(state_dict) - set(expected))
    if extra:
        raise ModelError(f"{path}: weights do not fit architecture {meta.arch!r}: unexpected "
                         f"tensor(s) {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")


def _short(value: Any) -> str:
    return one_line(repr(value), 40, more="...")


def _reason(exc: BaseException, limit: int = 300) -> str:
    return one_line(exc, limit, more="...")


# --------------------------------------------------------------------------- helpers


def _unpickler_detail(exc: BaseException) -> str:
    """The one line of torch's refusal that says what was wrong (the rest is advice about
    ``torch.load`` defaults, meant for people writing PyTorch code)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        tail = text.split("WeightsUnpickler error:", 1)[1]
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        if lines:
            return lines[0][:120]
    return _reason(exc, 120)


def _not_a_torch_archive(path: Path) -> str | None:
    """What is wrong ("is ...") with a file that is not a zip archive torch.save wrote, in
    roadprn's words
    (PyTorch's own text is about ``weights_only`` defaults); None for an old-style (PyTorch <
    1.6) pickle, which ``torch.load(weights_only=True)`` still reads safely."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "is not a roadprn checkpoint: the file is empty"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "is corrupt or truncated: its zip index is missing"
        return (f"is not a roadprn checkpoint: a zip archive without PyTorch's data.pkl "
                f"({len(names)} file(s) in it), not a file torch.save or roadprn wrote")
    if head[:1] == b"\x80":
        return None  # an old-style torch.save pickle
    return (f"is not a roadprn checkpoint: not a PyTorch file (it starts with {head!r}; "
            "roadprn checkpoints are .pt files written by roadprn train)")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")


def _validate_meta(meta: Any, path: Path) -> CheckpointMeta:
    if isinstance(meta, CheckpointMeta):
        return meta
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: checkpoint metadata must be a mapping")
    try:
        return CheckpointMeta.model_validate(meta)
    except ValidationError as exc:
        raise ModelError(format_validation_error(exc, f"{path}: invalid checkpoint metadata",
                                                 model=CheckpointMeta, noun="key")) from exc


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")" if kwargs else ""


def _count(n: int, noun: str) -> str:
    """``1 scene``, ``29 scenes``, ``29 labels`` (role names may already be plural)."""
    return f"{n} {noun if n == 1 or noun.endswith('s') else noun + 's'}"


def _normalization_text(norm: NormalizationConfig) -> str:
    if norm.mode == "fixed":
        scale = ", ".join(f"{v:.6g}" for v in norm.scale or [])
        offset = ", ".join(f"{v:.6g}" for v in norm.offset or [0.0])
        return f"fixed: value * [{scale}] + [{offset}], clipped to [0, 1]"
    if norm.mode == "percentile":
        low, high = norm.percentiles
        return f"per-scene percentile stretch {low:g}-{high:g} % to [0, 1]"
    return "data type range to [0, 1]"


def _value_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _size_text(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
