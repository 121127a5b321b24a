"""Models in exchange formats: ONNX files run by onnxruntime, and exported PatchRefineNets.

An ONNX file is data, not code, but onnxruntime can still be led outside the graph: tensors
may live in *external data* files named by a path inside the model (``../../etc/passwd``, an
absolute path, or onnxruntime's in-memory address form), and nodes of non-standard domains
are custom operators (``com.microsoft``'s ``EPContext`` even reads a file named in an
attribute). So before an ``InferenceSession`` exists, :func:`read_onnx` parses the file with
``onnx`` (nothing runs) and refuses

* anything that does not parse or does not pass ``onnx.checker``;
* a node of any domain but ONNX's own (``""``, ``ai.onnx``, ``ai.onnx.ml``) or a function the
  model defines itself (in graphs, subgraphs and functions alike);
* external data whose location is absolute, leaves the model's folder (``..``, symbolic links),
  or is not a plain file there.

roadprn never registers custom-operator libraries and uses only the CPU (default) and CUDA
execution providers. A model without external data is handed to onnxruntime as the bytes that
were checked (no second read of the path).

What a model expects (bands, normalisation, GSD, tiles, output) comes from, in order: the
``roadprn_*`` metadata ``roadprn export`` writes, QGIS Deepness metadata (``model_type``,
``resolution`` in cm/px, ``tile_size``/``tiles_size``, ``tiles_overlap`` in per cent,
``standardization_mean``/``_std``), or a YAML sidecar as for TorchScript.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roadprn.errors import ModelError, one_line

log = logging.getLogger(__name__)

ONNX_FORMAT = "roadprn-onnx"
TORCHSCRIPT_FORMAT = "roadprn-torchscript"
EXPORT_FORMAT_VERSION = 1
PREFIX = "roadprn_"
#: the operator domains onnxruntime implements itself; anything else is a custom operator
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
INSTALL_HINT = 'pip install "roadprn[onnx]"'
MAX_ONNX_BYTES = 2 << 30  # protobuf's own limit; larger models keep weights as external data
INPUT_NAME = "input"
BASE_OUTPUT = "probability"
PRN_OUTPUTS = ("global_map", "local_map")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def is_onnx_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ModelError(f"ONNX models need the optional package onnx: {INSTALL_HINT}") from exc
    return onnx


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError(f"ONNX models need the optional package onnxruntime: {INSTALL_HINT}"
                         ) from exc
    return onnxruntime


# --------------------------------------------------------------------------- reading + checks


@dataclass
class OnnxFile:
    """A parsed, checked ONNX file (nothing run)."""

    path: Path
    sha256: str
    data: bytes | None  # the bytes checked; None when weights are external (onnxruntime reads
    #                     them next to the path)
    metadata: dict[str, str]
    input_name: str
    input_shape: list[int | str | None]
    output_names: list[str]
    output_shapes: list[list[int | str | None]]
    opset: int
    ir_version: int
    producer: str
    external_files: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int | None:
        value = self.input_shape[1] if len(self.input_shape) == 4 else None
        return value if isinstance(value, int) and value > 0 else None


def read_onnx(path: str | os.PathLike[str]) -> OnnxFile:
    """Parse and check an ONNX model without running it; ModelError (one line) if refused."""
    import hashlib

    onnx = import_onnx()
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_ONNX_BYTES:
            raise ModelError(f"{path} is larger than 2 GB: ONNX keeps weights that large as "
                             "external data")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {one_line(exc, 120)}") from exc
    if not data:
        raise ModelError(f"{path} is not an ONNX model: the file is empty")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ModelError(f"{path} is not an ONNX model or is corrupt "
                         f"({one_line(exc, 120) or type(exc).__name__})") from exc
    if model.ir_version <= 0 or not model.graph.node or not model.opset_import:
        raise ModelError(f"{path} is not an ONNX model or is corrupt (no graph in it)")
    _check_domains(model, path)
    external = _check_external_data(model, path)
    try:
        # with external data, by path: the checker looks for the files beside the model
        onnx.checker.check_model(str(path) if external else model)
    except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError and C++ errors
        raise ModelError(f"{path} is not a valid ONNX model: {one_line(exc, 160)}") from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"{path}: roadprn runs ONNX models with one input (an image batch), "
                         f"this one has {len(inputs)}")
    elem = inputs[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise ModelError(f"{path}: the model's input must be float32, not "
                         f"{onnx.TensorProto.DataType.Name(elem)}")
    shape = _shape(inputs[0])
    if len(shape) != 4:
        raise ModelError(f"{path}: the model's input must be (batch, channels, height, width), "
                         f"not {len(shape)}-D")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    return OnnxFile(
        path=path, sha256=hashlib.sha256(data).hexdigest(), data=None if external else data,
        metadata={p.key: p.value for p in model.metadata_props},
        input_name=inputs[0].name, input_shape=shape,
        output_names=[o.name for o in model.graph.output],
        output_shapes=[_shape(o) for o in model.graph.output], opset=opset,
        ir_version=int(model.ir_version), producer=f"{model.producer_name} "
                                                  f"{model.producer_version}".strip(),
        external_files=external)


def _shape(value_info: Any) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(str(dim.dim_param))
        else:
            dims.append(None)
    return dims


def _graphs(model: Any) -> list[Any]:
    """The main graph and every subgraph (If/Loop/Scan bodies), depth first."""
    out: list[Any] = []
    stack = [model.graph]
    for function in model.functions:
        stack.extend(_subgraphs(function.node))
    while stack:
        graph = stack.pop()
        out.append(graph)
        stack.extend(_subgraphs(graph.node))
    return out


def _subgraphs(nodes: Any) -> list[Any]:
    found = []
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("g"):
                found.append(attr.g)
            found.extend(attr.graphs)
    return found


def _check_domains(model: Any, path: Path) -> None:
    local = {(f.domain, f.name) for f in model.functions}
    nodes = [n for g in _graphs(model) for n in g.node]
    nodes += [n for f in model.functions for n in f.node]
    for node in nodes:
        if node.domain in STANDARD_DOMAINS or (node.domain, node.op_type) in local:
            continue
        raise ModelError(f"{path}: operator {node.domain}.{node.op_type} is a custom operator; "
                         "roadprn runs only ONNX's standard operators")
    for opset in model.opset_import:
        if opset.domain not in STANDARD_DOMAINS and opset.domain not in {d for d, _ in local}:
            raise ModelError(f"{path}: the model imports the operator domain {opset.domain!r}; "
                             "roadprn runs only ONNX's standard operators")


def _tensors(model: Any) -> list[Any]:
    """Every TensorProto of the model: initializers and tensor attributes, in every graph."""
    tensors: list[Any] = []
    nodes: list[Any] = [n for f in model.functions for n in f.node]
    for graph in _graphs(model):
        tensors.extend(graph.initializer)
        for sparse in graph.sparse_initializer:
            tensors.extend((sparse.values, sparse.indices))
        nodes.extend(graph.node)
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
            if attr.HasField("sparse_tensor"):
                tensors.extend((attr.sparse_tensor.values, attr.sparse_tensor.indices))
            for sparse in attr.sparse_tensors:
                tensors.extend((sparse.values, sparse.indices))
    return tensors


def _check_external_data(model: Any, path: Path) -> list[str]:
    """Refuse external data outside the model's folder; return the files it names."""
    onnx = import_onnx()
    folder = path.resolve().parent
    files: set[str] = set()
    for tensor in _tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        where = f"{path}: tensor {tensor.name!r} keeps its data in {location!r}"
        candidate = Path(location)
        if (not location or candidate.is_absolute() or candidate.drive or "\\" in location
                or any(part in ("..", "") for part in location.split("/"))
                or "*" in location or ":" in location):
            raise ModelError(f"{where}: roadprn reads external data only from plain files "
                             "beside the model (a relative path inside its folder)")
        resolved = (folder / candidate).resolve()
        if not resolved.is_relative_to(folder):
            raise ModelError(f"{where}, which leads outside the model's folder")
        if not resolved.is_file():
            raise ModelError(f"{where}, which is not a file beside the model")
        files.add(location)
    return sorted(files)


# --------------------------------------------------------------------------- metadata


def json_metadata(metadata: dict[str, str], key: str) -> Any:
    """A metadata value decoded as JSON (how roadprn and Deepness write them); None if absent."""
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except ValueError:
        return metadata[key]  # a plain string


def deepness_class_names(metadata: dict[str, str]) -> list[str] | None:
    """Deepness's reading of ``class_names`` (or ``names``): JSON, else a Python literal (int
    keys); one dict or a list of dicts (one per output); ids consecutive from 0."""
    for key in ("class_names", "names"):
        if key not in metadata:
            continue
        text = metadata[key]
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise ModelError(f"Deepness metadata {key!r} does not decode: {text[:60]!r}"
                                 ) from exc
        first = value[0] if isinstance(value, list) and value else value
        if not isinstance(first, dict):
            raise ModelError(f"Deepness metadata {key!r} must map class ids to names")
        items = sorted(first.items(), key=lambda kv: int(kv[0]))
        if [int(k) for k, _ in items] != list(range(len(items))):
            raise ModelError(f"Deepness metadata {key!r}: class ids are not consecutive from 0")
        return [str(v) for _, v in items]
    return None


def deepness_standardization(normalization: Any, channels: int) -> tuple[list[float],
                                                                          list[float], bool]:
    """Deepness's ``standardization_mean``/``_std`` for a roadprn normalisation: Deepness feeds
    a model ``(value / 255 - mean) / std`` of 8-bit imagery. Exact for ``dtype`` and ``fixed``
    normalisations of 8-bit scenes (``exact`` True); a percentile stretch has no Deepness
    equivalent, so it is approximated by value / 255 (mean 0, std 1)."""
    mode = normalization.mode
    if mode == "fixed" and normalization.scale:
        scale = _per_band(normalization.scale, channels)
        offset = _per_band(normalization.offset or [0.0], channels)
        std = [1.0 / (255.0 * s) for s in scale]
        mean = [-o * sd for o, sd in zip(offset, std, strict=True)]
        return mean, std, True
    return [0.0] * channels, [1.0] * channels, mode == "dtype"


def _per_band(values: list[float], channels: int) -> list[float]:
    return [float(values[0])] * channels if len(values) == 1 else [float(v) for v in values]


@dataclass
class OnnxSpec:
    """What an ONNX model expects and gives, and where roadprn learnt it."""

    kind: str  # "base" or "prn"
    input: Any  # checkpoint.InputSpec (base models)
    outputs_logits: bool
    source: str  # "roadprn metadata", "Deepness metadata", "YAML sidecar NAME"
    standardize: tuple[list[float], list[float]] | None = None  # Deepness (x - mean) / std
    road_channel: int = 0
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    base_model_sha256: str | None = None


def onnx_spec(model: OnnxFile) -> OnnxSpec:
    """The input spec of ``model`` from roadprn metadata, Deepness metadata or a sidecar."""
    from pydantic import ValidationError

    from roadprn.config import format_validation_error
    from roadprn.models.checkpoint import InputSpec, read_sidecar, sidecar_path

    meta = model.metadata
    path = model.path
    if json_metadata(meta, PREFIX + "format") == ONNX_FORMAT:
        version = json_metadata(meta, PREFIX + "format_version")
        if not isinstance(version, int) or version > EXPORT_FORMAT_VERSION:
            raise ModelError(f"{path} has roadprn ONNX format version {version!r}; this "
                             f"roadprn reads up to {EXPORT_FORMAT_VERSION}: upgrade roadprn")
        kind = json_metadata(meta, PREFIX + "kind")
        if kind not in ("base", "prn"):
            raise ModelError(f"{path}: roadprn metadata 'roadprn_kind' must be base or prn")
        spec = None
        if kind == "base":
            try:
                spec = InputSpec.model_validate(json_metadata(meta, PREFIX + "input"))
            except ValidationError as exc:
                raise ModelError(format_validation_error(
                    exc, f"{path}: invalid roadprn_input metadata", model=InputSpec,
                    noun="key")) from exc
        kwargs = json_metadata(meta, PREFIX + "arch_kwargs")
        return OnnxSpec(
            kind=kind, input=spec,
            outputs_logits=json_metadata(meta, PREFIX + "output") == "logits",
            source="roadprn metadata", arch=_str_or_none(json_metadata(meta, PREFIX + "arch")),
            arch_kwargs=kwargs if isinstance(kwargs, dict) else {},
            source_sha256=_sha_or_none(json_metadata(meta, PREFIX + "source_sha256")),
            base_model_sha256=_sha_or_none(json_metadata(meta, PREFIX + "base_model_sha256")))
    deepness = _deepness_spec(model)
    if deepness is not None:
        return deepness
    if sidecar_path(path) is not None:
        sidecar = read_sidecar(path)
        return OnnxSpec(kind="base", input=InputSpec(**sidecar.model_dump(exclude={"output"})),
                        outputs_logits=sidecar.output == "logits",
                        source=f"YAML sidecar {sidecar_path(path).name}")  # type: ignore[union-attr]
    channels = model.channels
    takes = f"it takes {channels} input channel(s)" if channels else "its input"
    raise ModelError(
        f"ONNX model {path} does not say what it expects ({takes}): export it with "
        f"'roadprn export', add Deepness metadata (model_type, resolution), or write a YAML "
        f"sidecar {path.with_suffix('.yaml').name} stating bands, normalization and gsd_m")


def _deepness_spec(model: OnnxFile) -> OnnxSpec | None:
    """A spec from Deepness metadata, read by Deepness's rules; None unless the model is a
    Deepness ``Segmentor`` stating its ``resolution``."""
    from roadprn.config import NormalizationConfig
    from roadprn.models.checkpoint import InputSpec

    meta = model.metadata
    model_type = json_metadata(meta, "model_type")
    if model_type is None or str(model_type).capitalize() != "Segmentor" or (
            "resolution" not in meta):
        return None
    path = model.path
    channels = model.channels
    if channels is None:
        raise ModelError(f"{path}: a Deepness model needs a fixed number of input channels")
    try:
        gsd_m = float(json_metadata(meta, "resolution")) / 100.0
        size_key = "tile_size" if "tile_size" in meta else "tiles_size"
        fixed = model.input_shape[2]
        tile = (int(json_metadata(meta, size_key)) if size_key in meta
                else fixed if isinstance(fixed, int) else 512)
        overlap = int(json_metadata(meta, "tiles_overlap") or 0)
        mean = std = None
        if "standardization_mean" in meta and "standardization_std" in meta:
            mean = [float(x) for x in json_metadata(meta, "standardization_mean")]
            std = [float(x) for x in json_metadata(meta, "standardization_std")]
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: Deepness metadata does not decode ({one_line(exc, 100)})"
                         ) from exc
    if mean is not None and std is not None and (
            len(mean) not in (1, channels) or len(std) not in (1, channels) or min(std) <= 0):
        raise ModelError(f"{path}: Deepness standardization needs 1 or {channels} values and "
                         "positive std")
    halo = min(round(tile * overlap / 200.0), tile // 2 - 1)
    channel = _road_channel(model, deepness_class_names(meta))
    try:
        spec = InputSpec(bands=list(range(1, channels + 1)),
                         normalization=NormalizationConfig(mode="fixed", scale=[1 / 255.0],
                                                           offset=[0.0]),
                         gsd_m=gsd_m, tile_size=tile, halo=max(0, halo))
    except ValueError as exc:
        raise ModelError(f"{path}: Deepness metadata gives no usable input spec "
                         f"({one_line(exc, 120)})") from exc
    standardize = None
    if mean is not None and std is not None:
        standardize = (_per_band(mean, channels), _per_band(std, channels))
    return OnnxSpec(kind="base", input=spec, outputs_logits=False, source="Deepness metadata",
                    standardize=standardize, road_channel=channel)


def _road_channel(model: OnnxFile, names: list[str] | None) -> int:
    shape = model.output_shapes[0] if model.output_shapes else []
    count = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else 1
    if count == 1:
        return 0
    roads = [i for i, n in enumerate(names or []) if "road" in n.lower() and i < count]
    if not roads:
        raise ModelError(f"{model.path}: the model has {count} output classes and none is "
                         "named like 'road' in its class_names metadata")
    return roads[0]


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _sha_or_none(value: Any) -> str | None:
    from roadprn.models.checkpoint import SHA256_PATTERN

    return value if isinstance(value, str) and SHA256_PATTERN.match(value) else None


# --------------------------------------------------------------------------- running


class OnnxRunner:
    """An ONNX model on onnxruntime: one session per execution provider, made once and kept
    (batch workers load a model once per process, as for checkpoints). Picklable: sessions
    are made again where it lands."""

    def __init__(self, model: OnnxFile, spec: OnnxSpec, name: str) -> None:
        self.model = model
        self.spec = spec
        self.name = name
        self._sessions: dict[tuple[str, int | None], Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sessions"] = {}
        return state

    @property
    def channels(self) -> int | None:
        return self.model.channels

    def session(self, device_type: str = "cpu", threads: int | None = None) -> Any:
        key = (device_type, threads)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._make_session(device_type, threads)
        return session

    def providers(self, device_type: str) -> list[str]:
        if device_type == "cuda":
            available = import_onnxruntime().get_available_providers()
            if CUDA_PROVIDER in available:
                return [CUDA_PROVIDER, CPU_PROVIDER]
            log.warning("%s: onnxruntime here has no CUDA provider (install onnxruntime-gpu); "
                        "running on the CPU", self.name)
        return [CPU_PROVIDER]

    def _make_session(self, device_type: str, threads: int | None) -> Any:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: warnings would reach the console
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        source = self.model.data if self.model.data is not None else str(self.model.path)
        try:
            return ort.InferenceSession(source, sess_options=options,
                                        providers=self.providers(device_type))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors of a bad graph
            raise ModelError(f"onnxruntime cannot load {self.model.path}: "
                             f"{one_line(_ort_reason(exc), 200)}") from exc

    def run(self, batch: np.ndarray, device_type: str = "cpu",
            threads: int | None = None) -> list[np.ndarray]:
        """(B, C, H, W) float32 → every output of the model."""
        channels = self.channels
        if channels is not None and batch.shape[1] != channels:
            raise ModelError(f"ONNX model {self.name} takes {channels} input channel(s) but "
                             f"was given {batch.shape[1]}")
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.spec.standardize is not None:
            mean, std = self.spec.standardize
            x = ((x - np.asarray(mean, np.float32)[None, :, None, None])
                 / np.asarray(std, np.float32)[None, :, None, None]).astype(np.float32)
        try:
            return list(self.session(device_type, threads).run(
                None, {self.model.input_name: x}))
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - a shape the graph cannot take, and the like
            raise ModelError(f"ONNX model {self.name} failed on a batch of shape "
                             f"{tuple(x.shape)}: {one_line(_ort_reason(exc), 200)}") from exc

    def road_map(self, batch: np.ndarray, device_type: str = "cpu",
                 threads: int | None = None) -> np.ndarray:
        """(B, C, H, W) → (B, H, W): the road channel of the first output (raw)."""
        out = self.run(batch, device_type, threads)[0]
        if out.ndim != 4 or out.shape[0] != batch.shape[0] or out.shape[2:] != batch.shape[2:]:
            raise ModelError(f"ONNX model {self.name} returned shape {tuple(out.shape)} for "
                             f"input {tuple(batch.shape)}; roadprn needs (batch, classes, "
                             "height, width) at the input's size")
        return np.asarray(out[:, self.spec.road_channel], dtype=np.float32)


def _ort_reason(exc: BaseException) -> str:
    text = str(exc)
    return text.split(":", 2)[-1].strip() if text.startswith("[ONNXRuntimeError]") else text


def load_onnx_runner(path: str | os.PathLike[str]) -> OnnxRunner:
    """Read, check and open (CPU session) an ONNX model; ModelError (one line) if anything is
    wrong, before any tile is read."""
    model = read_onnx(path)
    spec = onnx_spec(model)
    name = f"{spec.arch or Path(path).stem} ({Path(path).name})"
    if spec.kind == "base":
        bands = len(spec.input.bands)
        if model.channels is not None and model.channels != bands:
            raise ModelError(f"ONNX model {path} takes {model.channels} input channel(s) but "
                             f"its input spec ({spec.source}) lists {bands} band(s)")
        if len(model.output_names) != 1:
            raise ModelError(f"ONNX model {path} has {len(model.output_names)} outputs; a "
                             "base model has one (road probability or logits)")
    runner = OnnxRunner(model, spec, name)
    import_onnxruntime()
    runner.session("cpu")  # a graph onnxruntime refuses fails now, in one line
    return runner


def model_sha256(model: OnnxFile, spec: OnnxSpec) -> str:
    """The sha256 a PRN pairs with: the checkpoint the file was exported from (the same
    weights), else the file's own."""
    return spec.source_sha256 or model.sha256


# --------------------------------------------------------------------------- exported PRNs


class ExportedPRN:
    """A PatchRefineNet exported to ONNX or TorchScript: maps in, (global, local) maps out."""

    def __init__(self, arch: Any, backend: str, runner: Any) -> None:
        self.arch = arch  # roadprn.prn.network.PRNArch
        self.backend = backend  # "onnx" or "torchscript"
        self.runner = runner  # OnnxRunner or a TorchScript module

    def maps(self, batch: np.ndarray, device: Any, with_local: bool
             ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.backend == "onnx":
            import torch

            outs = self.runner.run(batch, device.type, torch.get_num_threads())
        else:
            import torch

            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
                result = self.runner(x)
                result = result if isinstance(result, (tuple, list)) else (result,)
                outs = [r.float().cpu().numpy() for r in result]
        local = outs[1][:, 0] if with_local and len(outs) > 1 else None
        return np.asarray(outs[0][:, 0], dtype=np.float32), local

    def to_device(self, device: Any) -> ExportedPRN:
        if self.backend == "torchscript":
            self.runner = self.runner.to(device).eval()
        return self


def prn_arch_from(kwargs: dict[str, Any], path: Path) -> Any:
    from roadprn.models.checkpoint import ARCH_BOUNDS, PRN_ARCH, _bound_problem
    from roadprn.prn.network import prn_arch

    bounds = ARCH_BOUNDS[PRN_ARCH]
    for key, value in kwargs.items():
        rule = bounds.get(key)
        problem = "is unknown" if rule is None else _bound_problem(value, rule)
        if problem:
            raise ModelError(f"{path}: PRN architecture argument {key} {problem}")
    try:
        return prn_arch(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: invalid PRN architecture ({one_line(exc, 120)})") from exc


def load_exported_prn(path: str | os.PathLike[str]) -> tuple[ExportedPRN, str, str | None]:
    """An exported PRN (ONNX, or TorchScript with roadprn's embedded spec): the model, the
    sha256 it is known by (its source checkpoint's), and its base model's sha256."""
    path = Path(path)
    if is_onnx_path(path):
        runner = load_onnx_runner(path)
        spec = runner.spec
        if spec.kind != "prn":
            raise ModelError(f"{path} is a base model, not a PatchRefineNet")
        arch = prn_arch_from(spec.arch_kwargs, path)
        return (ExportedPRN(arch, "onnx", runner), model_sha256(runner.model, spec),
                spec.base_model_sha256)
    from roadprn.models.base import load_torchscript
    from roadprn.models.checkpoint import embedded_spec
    from roadprn.outputs.atomic import file_sha256

    info = embedded_spec(path)
    if info is None or info.get("kind") != "prn":
        raise ModelError(f"{path} is a TorchScript model without roadprn's PRN spec; export "
                         "PRNs with 'roadprn export'")
    kwargs = info.get("arch_kwargs")
    arch = prn_arch_from(kwargs if isinstance(kwargs, dict) else {}, path)
    module = load_torchscript(path)
    return (ExportedPRN(arch, "torchscript", module),
            _sha_or_none(info.get("source_sha256")) or file_sha256(path),
            _sha_or_none(info.get("base_model_sha256")))


# --------------------------------------------------------------------------- info


def describe_onnx(path: str | os.PathLike[str]) -> dict[str, str]:
    """``roadprn info model.onnx``: format, checks, what it expects; nothing is run."""
    from roadprn.models.checkpoint import _normalization_text, _resolution_text, _size_text

    model = read_onnx(path)
    lines = {
        "file": str(model.path),
        "sha256": model.sha256,
        "format": f"ONNX (IR {model.ir_version}, opset {model.opset}"
                  + (f", {model.producer}" if model.producer else "") + ")",
        "safety check": "passed: standard ONNX operators only, "
                        + (f"external data beside the model ({', '.join(model.external_files)})"
                           if model.external_files else "no external data")
                        + " (not run by info)",
        "input": f"{model.input_name} {_dims(model.input_shape)} float32",
        "outputs": ", ".join(f"{n} {_dims(s)}" for n, s in
                             zip(model.output_names, model.output_shapes, strict=True)),
    }
    spec = onnx_spec(model)
    lines["kind"] = ("base model" if spec.kind == "base"
                     else "PatchRefineNet (refines a base model)")
    lines["spec from"] = spec.source
    if spec.arch:
        lines["architecture"] = spec.arch + (
            " (" + ", ".join(f"{k}={v!r}" for k, v in spec.arch_kwargs.items()) + ")"
            if spec.arch_kwargs else "")
    if spec.input is not None:
        inp = spec.input
        lines["output"] = "logits" if spec.outputs_logits else "probability"
        lines["bands"] = ", ".join(str(b) for b in inp.bands)
        lines["normalization"] = _normalization_text(inp.normalization) + (
            f", then (x - {spec.standardize[0]}) / {spec.standardize[1]}"
            if spec.standardize else "")
        lines["resolution"] = _resolution_text(inp)
        lines["tiles"] = f"{inp.tile_size} px with {inp.halo} px halo"
    if spec.source_sha256:
        lines["exported from"] = f"checkpoint sha256 {spec.source_sha256}"
    if spec.base_model_sha256:
        lines["base model sha256"] = spec.base_model_sha256
    deepness = [f"{k}={model.metadata[k]}" for k in DEEPNESS_KEYS if k in model.metadata]
    if deepness:
        lines["QGIS Deepness"] = ", ".join(deepness)
    lines["size"] = _size_text(model.path)
    return lines


DEEPNESS_KEYS = ("model_type", "class_names", "resolution", "tile_size", "tiles_size",
                 "tiles_overlap", "seg_thresh", "standardization_mean", "standardization_std")


def _dims(shape: list[int | str | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
