"""The typed pipeline config: defaults, YAML loading, CLI overrides, one-line errors.

One :class:`Config` object drives every command, so ``extract``, ``batch`` and notebooks behave the
same for the same YAML. ``configs/default.yaml`` documents every key and must equal the defaults
below (a test checks it).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from roadprn.batch.config import BatchConfig
from roadprn.errors import ConfigError
from roadprn.prn.fusion import DEFAULT_FUSION, FusionRule
from roadprn.prn.options import TrainPRNOptions
from roadprn.raster.normalization import NormalizationConfig
from roadprn.train.options import TrainBaseOptions
from roadprn.vectorize.params import VectorizeParams

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _Section(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class InputConfig(_Section):
    bands: list[int] | None = Field(None, description="1-based bands to feed the model, e.g. "
                                                     "1,2,3 (default: the model's).")
    allow_ungeoreferenced: bool = Field(False, description="Accept rasters without CRS "
                                                           "(outputs in pixel coordinates).")
    normalization: NormalizationConfig = NormalizationConfig()

    @field_validator("bands")
    @classmethod
    def _positive(cls, bands: list[int] | None) -> list[int] | None:
        if bands is not None and (not bands or min(bands) < 1):
            raise ValueError("bands are 1-based band numbers, e.g. [1, 2, 3]")
        return bands


class TilingConfig(_Section):
    tile_size: int | None = Field(None, ge=32, le=8192,
                                  description="Tile side in pixels (default: from the model).")
    halo: int | None = Field(None, ge=0, le=2048, description="Tile overlap on each side in "
                                                              "pixels (default: from the model).")
    batch_size: int | None = Field(None, ge=1, le=1024, description="Tiles per forward pass.")
    blend: Literal["hann", "crop"] = Field("hann", description="How overlapping tiles merge.")
    pad_mode: Literal["reflect", "constant"] = "reflect"


class InferenceConfig(_Section):
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    amp: bool = Field(True, description="Mixed precision on CUDA.")
    compile: bool = Field(False, description="torch.compile the model.")
    tta: bool = Field(False, description="Average predictions over flips (slower).")
    torch_threads: int | None = Field(None, ge=1, le=1024)
    reader_threads: int = Field(2, ge=1, le=64)
    prefetch_batches: int = Field(2, ge=1, le=64)

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not DEVICE_PATTERN.match(device):
            raise ValueError("allowed: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
        return device


class ResolutionConfig(_Section):
    resample: bool = True
    tolerance: float = Field(0.25, ge=0.0, le=10.0)
    max_factor: float = Field(4.0, ge=1.0, le=100.0)


class OutputConfig(_Section):
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Road probability threshold for "
                                                              "the mask (0..1).")
    overwrite: bool = False
    write_probability: bool = True
    compress: Literal["deflate", "zstd", "lzw"] = "deflate"
    compress_level: int | None = Field(1, ge=1, le=22)
    vector_format: Literal["gpkg", "geojson", "fgb", "parquet"] = Field(
        "gpkg", description="Road network format (gpkg has an embedded QGIS style).")
    dst_crs: str | None = Field(None, description="CRS of the road network, e.g. EPSG:4326 "
                                                  "(default: the scene's).")

    @field_validator("dst_crs")
    @classmethod
    def _crs(cls, crs: str | None) -> str | None:
        if crs is not None:
            from pyproj import CRS
            from pyproj.exceptions import CRSError

            try:
                CRS.from_user_input(crs)
            except CRSError:
                raise ValueError("not a CRS PROJ understands (e.g. EPSG:4326)") from None
        return crs


class RefineConfig(_Section):
    """PatchRefineNet refinement of the base probability map."""

    method: Literal["auto", "prn", "none"] = Field(
        "auto", description="PatchRefineNet refinement (auto: when a PRN exists for the base "
                            "model).")
    model: str = Field("default", description="PRN checkpoint (.pt), or 'default'.")
    # DEFAULT_FUSION ("global"): on held-out maps the paper rule lost 1-1.8 IoU points to it
    fusion: FusionRule = Field(
        DEFAULT_FUSION, description="How PRN's global and local maps become the refined mask.")
    halo: int | None = Field(None, ge=0, le=1024)
    batch_size: int = Field(4, ge=1, le=256)


class VectorizeConfig(VectorizeParams):
    """The vectoriser's thresholds (all in metres / m²) plus how ``extract`` runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Vectorise the mask into a road network.")
    workers: int | None = Field(None, ge=1, le=256,
                                description="Parallel tile threads (default: one per core, at "
                                            "most 8).")


class APLSConfig(_Section):
    """APLS (SpaceNet's defaults); the bounds keep a run from allocating without bound or
    never ending (a 1e-9 m spacing ran with no end)."""

    control_spacing_m: float = Field(50.0, ge=1, le=100_000,
                                     description="APLS: spacing of control points along roads.")
    snap_m: float = Field(4.0, ge=0, le=1000, description="APLS: how far a control point may "
                                                          "snap onto the other graph.")
    min_path_m: float = Field(10.0, ge=0, le=1_000_000,
                              description="APLS: shorter routes are not scored.")


class EvaluateConfig(_Section):
    """How ``roadprn evaluate`` scores predictions (docs/metrics.md); lengths in metres."""

    threshold: float = Field(0.5, ge=0, le=1,
                             description="Probability above which a pixel is road.")
    tolerance_m: float = Field(3.0, ge=0, le=1000,
                               description="Relaxed precision/recall distance and "
                                           "completeness/correctness buffer.")
    truth_width_m: float = Field(4.0, gt=0, le=1000,
                                 description="Road width when lines are rasterised.")
    sweep: bool = Field(False, description="Threshold sweep: PR curve and best threshold.")
    patch_size: int = Field(64, ge=1, le=65536,
                            description="Patch side (pixels) of the per-patch IoU heat map.")
    pixel_size_m: float | None = Field(None, gt=0, le=100_000,
                                       description="Pixel size for rasters without "
                                                   "georeferencing (enables relaxed metrics).")
    plots: bool = Field(True, description="Write figures next to metrics.json and report.md.")
    apls: APLSConfig = APLSConfig()


class SynthConfig(_Section):
    """The synthetic scene ``roadprn synth`` writes (same settings, same scene)."""

    size: list[int] = Field([4096], min_length=1, max_length=2,
                            description="Scene size in pixels: N (square) or WxH.")
    seed: int = Field(0, ge=0, description="Same seed, same scene.")
    crs: str = Field("EPSG:32631", description="Any EPSG code or WKT.")
    resolution: float = Field(0.5, gt=0, le=10_000, description="Pixel size in metres "
                                                                "(converted to degrees for a "
                                                                "geographic CRS).")
    origin: tuple[float, float] | None = Field(None, description="Top-left corner in CRS units; "
                                                                 "default: centre of the CRS's "
                                                                 "area of use.")
    bands: Literal[1, 3, 4] = Field(3, description="1 = panchromatic, 3 = RGB, 4 = RGB + NIR.")
    dtype: Literal["uint8", "uint16"] = Field("uint8", description="uint16 uses an 11-bit "
                                                                   "range (1..2047).")
    nodata_border: bool = Field(False, description="Leave a slanted nodata border (value 0).")
    nodata_holes: bool = Field(False, description="Punch nodata holes (value 0) into the scene.")
    window_size: int = Field(1024, ge=16, le=16384, description="Pixels per rendered window "
                                                                "side (memory, not output, "
                                                                "depends on it).")
    overviews: bool = Field(True, description="Build overviews.")

    @field_validator("size")
    @classmethod
    def _positive(cls, size: list[int]) -> list[int]:
        if min(size) < 1:
            raise ValueError("sizes are positive pixel counts, e.g. [4096] or [4096, 2048]")
        return size


class TrainConfig(_Section):
    """``roadprn train base`` / ``train prn``: the options that define a training run."""

    base: TrainBaseOptions = TrainBaseOptions()
    prn: TrainPRNOptions = TrainPRNOptions()


#: sections read by commands other than extract / batch
OTHER_COMMANDS_SECTIONS = ("evaluate", "synth", "train")


class Config(_Section):
    """Everything a run needs besides its input and output paths."""

    model: str = Field("default", description="Base model checkpoint (.pt), 'default' or "
                                               "'default-pan'.")
    input: InputConfig = InputConfig()
    tiling: TilingConfig = TilingConfig()
    inference: InferenceConfig = InferenceConfig()
    resolution: ResolutionConfig = ResolutionConfig()
    output: OutputConfig = OutputConfig()
    refine: RefineConfig = RefineConfig()
    vectorize: VectorizeConfig = VectorizeConfig()
    batch: BatchConfig = BatchConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    synth: SynthConfig = SynthConfig()
    train: TrainConfig = TrainConfig()

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def pipeline_dict(self) -> dict[str, Any]:
        """The keys that shape ``extract``'s outputs (recorded in them, and what a batch rerun
        compares): the sections of other commands (evaluate, synth, train) left out, so that
        one YAML shared by several commands does not make a batch redo its scenes."""
        data = self.to_yaml_dict()
        for section in OTHER_COMMANDS_SECTIONS:
            data.pop(section, None)
        return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file, then dotted-key overrides (``{"tiling.halo": 64}``)."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(Path(path))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(data, key, value)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        source = str(path) if path else None
        raise ConfigError(format_validation_error(exc, source=source)) from None


#: Limits on a YAML config: a 400-byte "billion laughs" (aliases of aliases) was OOM-killed, a
#: deeply nested or 5000-digit file gave a traceback. Real configs are a few KB, 4 levels deep.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000
MAX_YAML_SCALAR_CHARS = 10_000
#: Longest given value quoted back in an error message (a 312 MB "one line" before).
MAX_QUOTED_CHARS = 200


def quoted(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line error messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def safe_yaml_load(text: str, source: str) -> Any:
    """``yaml.safe_load`` with bounded cost: no aliases, bounded depth, nodes and scalars.

    The document's events are checked first (libyaml's parser does not recurse), so nothing
    is built from a hostile file. ``source`` names the file or option in the one-line error.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = nodes = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(f"{source}: YAML aliases (*{quoted(event.anchor, 40)[1:-1]}) "
                                  "are not accepted in roadprn configs; write the value out")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise ConfigError(f"{source}: YAML nested more than {MAX_YAML_DEPTH} levels "
                                      f"deep (line {event.start_mark.line + 1})")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_YAML_SCALAR_CHARS:
                raise ConfigError(f"{source}: a YAML value of {len(event.value)} characters "
                                  f"(line {event.start_mark.line + 1}); at most "
                                  f"{MAX_YAML_SCALAR_CHARS}")
            if isinstance(event, (yaml.NodeEvent, yaml.CollectionStartEvent)):
                nodes += 1
                if nodes > MAX_YAML_NODES:
                    raise ConfigError(f"{source}: more than {MAX_YAML_NODES} YAML values")
        document = loader(text)  # the safe loader, on text checked above
        try:
            return document.get_single_data()
        finally:
            document.dispose()
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or "").split())[:120]
        details = [f"line {where.line + 1}"] if where is not None else []
        details += [problem] if problem else []
        at = f" ({': '.join(details)})" if details else ""
        raise ConfigError(f"{source} is not valid YAML{at}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        # int('9' * 5000) is refused by Python (sys.set_int_max_str_digits)
        raise ConfigError(f"{source}: value not accepted ({quoted(str(exc), 120)[1:-1]})") from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {size} bytes; at most {MAX_CONFIG_BYTES} "
                              "(1 MiB)")
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid YAML (not UTF-8 text)") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
    data = safe_yaml_load(text, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, "
                          f"not {type(data).__name__}")
    return data


def parse_set_option(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--set tiling.halo=64`` values, parsed as YAML scalars (``true``, ``0.3``, ``[1,2]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. tiling.halo=64), got {quoted(item)}")
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"--set {quoted(key.strip(), 80)}: value longer than "
                              f"{MAX_CONFIG_BYTES} characters")
        try:
            out[key.strip()] = safe_yaml_load(raw, f"--set {key.strip()[:80]}")
        except ConfigError as exc:
            if "is not valid YAML" in str(exc):
                raise ConfigError(f"--set {key.strip()[:80]}: cannot parse value "
                                  f"{quoted(raw)}") from None
            raise
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{part}' is a value, not a section (setting '{dotted}')")
        node = child
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError, source: str | None = None, *,
                            model: type[BaseModel] | None = None,
                            noun: str = "config key") -> str:
    """The first problem as one line naming the key and what is allowed.

    The one formatter of pydantic errors for configs, options, checkpoint metadata and model
    sidecars: ``model`` is the schema that was validated (for the allowed keys of a typo),
    ``noun`` what its keys are called in the message.
    """
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
    key = _short(".".join(loc) or "<root>")
    prefix = f"{source}: " if source else ""
    extra = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        allowed = sorted(_section_fields(loc[:-1], model or Config))
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{prefix}unknown {noun} '{key}'{hint} allowed keys: {', '.join(allowed)}{extra}"
    given = err.get("input")
    got = f"got {quoted(given)}; " if not isinstance(given, dict) else ""
    if err["type"] == "literal_error":
        allowed = err["ctx"]["expected"]
        return f"{prefix}bad value for {noun} '{key}': {got}allowed: {allowed}{extra}"
    message = err["msg"].removeprefix("Value error, ")
    return f"{prefix}bad value for {noun} '{key}': {got}{message}{extra}"


def _short(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _section_fields(path: list[str], model: type[BaseModel]) -> list[str]:
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
