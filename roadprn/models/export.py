"""``roadprn export``: a roadprn checkpoint (base model or PRN) as ONNX or TorchScript.

Both formats carry what the model expects, so that roadprn (and other tools) can run the file
on its own:

* ONNX: ``metadata_props`` with JSON-encoded values, QGIS Deepness's keys (``model_type`` =
  ``Segmentor``, ``class_names``, ``resolution`` in cm/px, ``tile_size`` / ``tiles_size``,
  ``tiles_overlap`` in per cent, ``seg_thresh``, ``standardization_mean`` / ``_std``) for base
  models, and roadprn's own under ``roadprn_`` (the whole input spec, architecture, the source
  checkpoint's sha256, a PRN's base-model sha256). Base models output the road *probability*
  (sigmoid inside: Deepness applies none); a PRN outputs its global and local maps. Batch, height
  and width are dynamic (one symbol for height and width: Deepness wants square tiles); a PRN's
  window is fixed at its ``map_size`` (its pyramid pooling exports at a fixed size only).
* TorchScript: a traced module (base models: logits, as the checkpoint's) with the same spec
  as ``extra/roadprn.json`` inside the archive, which roadprn reads when there is no YAML
  sidecar.

Every export is checked before it is published: the file is read back through roadprn's own
loader (ONNX: the safety checks and onnxruntime; TorchScript: the code guard) and run on random
tiles against the PyTorch model; a probability difference above :data:`MAX_ABS_DIFF` fails it.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

import roadprn
from roadprn.errors import ModelError, one_line
from roadprn.models.exported import (
    BASE_OUTPUT,
    EXPORT_FORMAT_VERSION,
    INPUT_NAME,
    ONNX_FORMAT,
    PREFIX,
    PRN_OUTPUTS,
    TORCHSCRIPT_FORMAT,
    deepness_standardization,
    import_onnx,
)
from roadprn.outputs.atomic import atomic_output, file_sha256

FORMATS = ("onnx", "torchscript")
MAX_ABS_DIFF = 1e-4  # probability, exported vs PyTorch, on random tiles
OPSET = 17
# traced at a side that no architecture's stride divides, so that the padding to a multiple of
# the stride is recorded as computed from the input's size (a multiple would record "no pad")
TRACE_SIDE = 97
DEFAULT_THRESHOLD = 0.5  # output.threshold's default: Deepness's seg_thresh


@dataclass
class ExportResult:
    path: str
    format: str
    kind: str
    source: str
    source_sha256: str
    sha256: str
    max_abs_diff: float
    checked_tiles: int
    seconds: float
    metadata: dict[str, Any]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Probability(nn.Module):
    """A base model's logits → road probability (what Deepness expects of a Segmentor)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.module(x))


class _PRNMaps(nn.Module):
    """A PRN's forward as a plain tuple of maps (global, and local when it has the branch)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, prob: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(prob, with_local=True)
        return (out.global_map,) if out.local_map is None else (out.global_map, out.local_map)


def _adaptive_pool_matrix(size: int, bins: int) -> torch.Tensor:
    """(bins, size): row i averages what ``adaptive_avg_pool`` puts in bin i (inputs
    floor(i·size/bins) .. ceil((i+1)·size/bins)), also when bins do not divide size."""
    matrix = torch.zeros(bins, size)
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _pyramid_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """``PyramidPooling.forward`` with the adaptive pools as matrix products: the ONNX
    exporter refuses adaptive pools whose bins do not divide the map (a fast PRN's 4² map into
    8 bins); the sizes are fixed in an export, so the matrices are constants."""
    import torch.nn.functional as F

    height, width = int(x.shape[-2]), int(x.shape[-1])
    pooled = []
    for b, branch in zip(self.bins, self.branches, strict=True):
        rows = _adaptive_pool_matrix(height, b).to(x)
        cols = _adaptive_pool_matrix(width, b).to(x)
        small = torch.matmul(torch.matmul(rows, x), cols.t())
        pooled.append(F.interpolate(branch(small), size=(height, width), mode="bilinear",
                                    align_corners=False))
    return self.project(torch.cat([x, *pooled], dim=1))


def _exportable_prn(module: nn.Module) -> nn.Module:
    """A copy of a PRN whose pyramid pooling the ONNX exporter takes (same maps)."""
    import copy
    import types

    from roadprn.prn.network import PyramidPooling

    clone = copy.deepcopy(module)
    for sub in clone.modules():
        if isinstance(sub, PyramidPooling):
            sub.forward = types.MethodType(_pyramid_forward, sub)  # type: ignore[method-assign]
    return clone


def export_model(spec: str, fmt: str, out: str | Path, *, overwrite: bool = False,
                 seed: int = 0) -> ExportResult:
    """Export the checkpoint ``spec`` (a path, ``default`` or ``default-pan``) to ``out``."""
    from roadprn.models.checkpoint import load_checkpoint
    from roadprn.models.loading import resolve_model_path

    if fmt not in FORMATS:
        raise ModelError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    t0 = time.perf_counter()
    source = resolve_model_path(spec)
    if source.suffix.lower() == ".onnx":
        raise ModelError(f"{source} is an ONNX model already; export takes roadprn checkpoints")
    checkpoint = load_checkpoint(source)
    meta = checkpoint.meta
    module = checkpoint.build_model().eval()
    out = Path(out)
    if fmt == "onnx" and out.suffix.lower() != ".onnx":
        raise ModelError(f"--out {out}: ONNX models are recognised by the suffix .onnx")
    notes: list[str] = []
    info = _spec_record(checkpoint)
    if meta.kind == "base":
        assert meta.input is not None
        channels = len(meta.input.bands)
        wrapped: nn.Module = _Probability(module) if fmt == "onnx" else module
        example = torch.rand(1, channels, TRACE_SIDE, TRACE_SIDE)
        check_side = meta.input.tile_size
    else:
        map_size = int(cast(Any, module).arch.map_size)
        wrapped = _PRNMaps(_exportable_prn(module) if fmt == "onnx" else module)
        example = torch.rand(1, 1, map_size, map_size)
        check_side = map_size
    wrapped.eval()
    with atomic_output(out, overwrite) as tmp:
        if fmt == "onnx":
            metadata = _onnx_metadata(checkpoint, info, notes)
            _write_onnx(wrapped, example, tmp, metadata, meta.kind)
        else:
            metadata = {"format": TORCHSCRIPT_FORMAT, **info}
            _write_torchscript(wrapped, example, tmp, metadata)
        diff, tiles = _check_export(tmp, fmt, module, meta.kind, example.shape[1], check_side,
                                    seed)
        if not diff <= MAX_ABS_DIFF:
            raise ModelError(f"export of {source} differs from the PyTorch model by {diff:.2e} "
                             f"in probability (more than {MAX_ABS_DIFF:g}); nothing written")
        digest = file_sha256(tmp)
    return ExportResult(path=str(out), format=fmt, kind=meta.kind, source=str(source),
                        source_sha256=checkpoint.sha256, sha256=digest, max_abs_diff=diff,
                        checked_tiles=tiles, seconds=time.perf_counter() - t0,
                        metadata=metadata, notes=notes)


def _spec_record(checkpoint: Any) -> dict[str, Any]:
    """roadprn's own description of the model (both formats)."""
    meta = checkpoint.meta
    record: dict[str, Any] = {
        "format_version": EXPORT_FORMAT_VERSION,
        "kind": meta.kind,
        "arch": meta.arch,
        "arch_kwargs": dict(meta.arch_kwargs),
        "source_sha256": checkpoint.sha256,
        "roadprn_version": roadprn.__version__,
        "created": meta.created,
    }
    if meta.input is not None:
        record["input"] = meta.input.model_dump(mode="json")
    if meta.base_model_sha256:
        record["base_model_sha256"] = meta.base_model_sha256
    return record


def _onnx_metadata(checkpoint: Any, info: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """metadata_props (values JSON-encoded when written): Deepness's keys, then roadprn's."""
    meta = checkpoint.meta
    metadata: dict[str, Any] = {}
    if meta.kind == "base":
        inp = meta.input
        channels = len(inp.bands)
        mean, std, exact = deepness_standardization(inp.normalization, channels)
        overlap = round(100.0 * 2 * inp.halo / inp.tile_size)
        metadata.update({
            "model_type": "Segmentor",
            "class_names": {"0": "background", "1": "road"},
            "resolution": round(inp.gsd_m * 100.0, 6),
            # Deepness's documentation names the key tiles_size, its reader tile_size: both
            "tiles_size": inp.tile_size,
            "tile_size": inp.tile_size,
            "tiles_overlap": overlap,
            "seg_thresh": DEFAULT_THRESHOLD,
            "standardization_mean": mean,
            "standardization_std": std,
        })
        if not exact:
            notes.append(f"the model normalises each scene by a {inp.normalization.mode} "
                         "stretch, which Deepness cannot do: Deepness feeds it value / 255 "
                         "(8-bit imagery, ideally already contrast-stretched)")
    metadata[PREFIX + "format"] = ONNX_FORMAT
    for key, value in info.items():
        metadata[PREFIX + key] = value
    metadata[PREFIX + "output"] = BASE_OUTPUT if meta.kind == "base" else "prn_maps"
    return metadata


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path,
                metadata: dict[str, Any], kind: str) -> None:
    onnx = import_onnx()
    outputs = [BASE_OUTPUT] if kind == "base" else list(PRN_OUTPUTS)
    if kind == "prn":
        with torch.no_grad():
            outputs = outputs[:len(module(example))]
    # a PRN runs on windows of its map_size only, and its pyramid pooling (adaptive average
    # pools) exports only at a fixed size: its batch alone is dynamic
    axes = {0: "batch", 2: "tile", 3: "tile"} if kind == "base" else {0: "batch"}
    try:
        with warnings.catch_warnings():
            # the TorchScript-based exporter (deprecated, and the one that keeps the padding
            # to a stride dynamic: torch.export specialises the tile size) and its tracer
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=outputs, dynamo=False, opset_version=OPSET,
                              dynamic_axes={name: axes for name in [INPUT_NAME, *outputs]},
                              do_constant_folding=True)
    except Exception as exc:  # noqa: BLE001 - an operator the exporter does not know
        raise ModelError(f"ONNX export failed: {one_line(exc, 200)}") from exc
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key = key
        prop.value = json.dumps(value)
    model.producer_name = "roadprn"
    model.producer_version = roadprn.__version__
    model.doc_string = (f"roadprn {metadata.get(PREFIX + 'kind')} model "
                        f"{metadata.get(PREFIX + 'arch')}: see the roadprn_* metadata")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path,
                       record: dict[str, Any]) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={"roadprn.json": json.dumps(record)})
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"TorchScript export failed: {one_line(exc, 200)}") from exc


def _check_export(path: Path, fmt: str, module: nn.Module, kind: str, channels: int,
                  side: int, seed: int) -> tuple[float, int]:
    """Max abs probability difference, the exported file (read back as roadprn reads it) vs
    the PyTorch model, on random tiles: a batch of 2 at the model's tile size, one odd size."""
    from roadprn.models.exported import load_exported_prn

    rng = np.random.default_rng(seed)
    batches = [rng.random((2, channels, side, side), dtype=np.float32)]
    if kind == "base":  # and another tile size (a PRN's window size is fixed)
        batches.append(rng.random((1, channels, side + 37, side + 37), dtype=np.float32))
    device = torch.device("cpu")
    worst = 0.0
    if kind == "base":
        run = _base_runner(path, fmt)
        for batch in batches:
            with torch.inference_mode():
                ref = torch.sigmoid(module(torch.from_numpy(batch))).numpy()[:, 0]
            worst = max(worst, float(np.abs(run(batch) - ref).max()))
    else:
        prn, _, _ = load_exported_prn(path)
        for batch in batches:
            with torch.inference_mode():
                ref = module(torch.from_numpy(batch), with_local=True)
            global_map, local_map = prn.maps(batch, device, with_local=True)
            worst = max(worst, float(np.abs(global_map - ref.global_map.numpy()[:, 0]).max()))
            if ref.local_map is not None:
                assert local_map is not None
                worst = max(worst, float(np.abs(local_map - ref.local_map.numpy()[:, 0]).max()))
    return worst, sum(b.shape[0] for b in batches)


def _base_runner(path: Path, fmt: str) -> Any:
    if fmt == "onnx":
        from roadprn.models.exported import load_onnx_runner

        runner = load_onnx_runner(path)
        return lambda batch: runner.road_map(batch)
    from roadprn.models.checkpoint import load_model_file

    loaded = load_model_file(path)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = loaded.module(torch.from_numpy(batch))
        return torch.sigmoid(out).numpy()[:, 0] if loaded.outputs_logits else out.numpy()[:, 0]

    return run
