"""The typed pipeline config: defaults, YAML loading, CLI overrides, one-line errors.

One :class:`Config` object drives every command, so ``extract``, ``batch`` and notebooks behave the
same for the same YAML. Every field's ``description`` is its documentation: ``roadprn config
show`` prints a config with it above each key, and ``configs/default.yaml`` is that output for
the defaults (``scripts/write_default_config.py`` writes it; a test keeps them equal).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from roadprn.batch.config import BatchConfig
from roadprn.errors import ConfigError
from roadprn.prn.fusion import DEFAULT_FUSION, FusionRule
from roadprn.prn.options import TrainPRNOptions
from roadprn.raster.normalization import NormalizationConfig
from roadprn.train.options import TrainBaseOptions
from roadprn.vectorize.params import VectorizeParams

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def known_crs(crs: str | None) -> str | None:
    """A CRS key's validator: ``crs`` unchanged if PROJ understands it (EPSG code, WKT, ...)."""
    if crs is not None:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(crs)
        except CRSError:
            raise ValueError(f"not a CRS PROJ understands: {crs!r} (e.g. EPSG:4326)") from None
    return crs


class _Section(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class InputConfig(_Section):
    """Which bands of a scene the model sees, and how their values are normalised."""

    bands: list[int] | None = Field(
        None, description="1-based band numbers fed to the model, in order (e.g. [1, 2, 3]; "
                          "--bands 1,2,3); null = all non-alpha bands (their number must equal "
                          "what the model expects).")
    allow_ungeoreferenced: bool = Field(
        False, description="Accept rasters without CRS/georeferencing (PNG, JPEG, ...); outputs "
                           "are then in pixel coordinates and lengths in metres are meaningless.")
    normalization: NormalizationConfig = NormalizationConfig()
    window: list[int] | None = Field(
        None, description="Process only this pixel window of the scene, [COL, ROW, WIDTH, "
                          "HEIGHT] (like gdal_translate -srcwin; --window COL,ROW,WIDTH,HEIGHT); "
                          "outputs cover exactly that area; null = the whole scene.")
    bbox: list[float] | None = Field(
        None, description="Process only this area, [MINX, MINY, MAXX, MAXY] in input.bbox_crs "
                          "(like gdal_translate -projwin; --bbox MINX,MINY,MAXX,MAXY), widened "
                          "to whole pixels; null = the whole scene.")
    bbox_crs: str | None = Field(
        None, max_length=200,
        description="CRS of input.bbox (e.g. EPSG:4326; --bbox-crs); null = the scene's CRS.")

    @field_validator("bands")
    @classmethod
    def _positive(cls, bands: list[int] | None) -> list[int] | None:
        if bands is not None and (not bands or min(bands) < 1):
            raise ValueError("bands are 1-based band numbers, e.g. [1, 2, 3]")
        return bands

    @field_validator("window")
    @classmethod
    def _window(cls, window: list[int] | None) -> list[int] | None:
        if window is not None and (len(window) != 4 or min(window[:2]) < 0
                                   or min(window[2:]) < 1 or max(window) > 10**8):
            raise ValueError("window is COL,ROW,WIDTH,HEIGHT in pixels: offsets >= 0, sizes "
                             ">= 1 (e.g. 0,0,1024,1024)")
        return window

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, bbox: list[float] | None) -> list[float] | None:
        if bbox is not None and (len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3])
                                 or max(abs(v) for v in bbox) > 1e15):
            raise ValueError("bbox is MINX,MINY,MAXX,MAXY with MINX < MAXX and MINY < MAXY")
        return bbox

    @field_validator("bbox_crs")
    @classmethod
    def _crs(cls, crs: str | None) -> str | None:
        return known_crs(crs)

    @model_validator(mode="after")
    def _one_area(self) -> InputConfig:
        if self.window is not None and self.bbox is not None:
            raise ValueError("give input.window or input.bbox, not both")
        if self.bbox_crs is not None and self.bbox is None:
            raise ValueError("input.bbox_crs is the CRS of input.bbox; give input.bbox too")
        return self


class TilingConfig(_Section):
    """How a scene is cut into overlapping tiles for the model."""

    tile_size: int | None = Field(
        None, ge=32, le=8192, description="Tile side in pixels (model resolution); null = the "
                                          "model checkpoint's tile size (else 512).")
    halo: int | None = Field(
        None, ge=0, le=2048, description="Overlap added on every side of a tile so that tile "
                                         "borders never reach the output; null = the model "
                                         "checkpoint's suggestion (else 64).")
    batch_size: int | None = Field(
        None, ge=1, le=1024, description="Tiles per model forward; null = the fastest for the "
                                         "architecture (CPU: 1 for effnet_lite*, else 4; GPU: "
                                         "16).")
    blend: Literal["hann", "crop"] = Field(
        "hann", description="How overlapping tiles are merged: hann (weighted blending, "
                            "seam-free) or crop (centre crop).")
    pad_mode: Literal["reflect", "constant"] = Field(
        "reflect", description="Padding beyond the scene edge: reflect (mirror the image) or "
                               "constant (zeros).")


class InferenceConfig(_Section):
    """Where and how the model runs."""

    device: str = Field("auto", description="auto (CUDA if present, then Apple MPS, else CPU), "
                                            "cpu, cuda, cuda:N or mps.")
    amp: bool = Field(True, description="Mixed precision (float16/bfloat16 autocast) on CUDA; "
                                        "ignored on CPU.")
    compile: bool = Field(False, description="torch.compile the model first (slower start, "
                                             "faster on long runs; needs a compiler).")
    tta: bool = Field(False, description="Test-time augmentation: average the predictions of "
                                         "flipped tiles (about 4x slower).")
    torch_threads: int | None = Field(None, ge=1, le=1024,
                                      description="torch intra-op threads; null = the cores left "
                                                  "after the reader threads.")
    reader_threads: int = Field(2, ge=1, le=64,
                                description="Dask threads reading and normalising windows in "
                                            "parallel with inference.")
    prefetch_batches: int = Field(2, ge=1, le=64,
                                  description="Batches read ahead of the model (bounds memory: "
                                              "prefetch x batch x tile).")

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not DEVICE_PATTERN.match(device):
            raise ValueError("allowed: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
        return device


class ResolutionConfig(_Section):
    """Scenes whose resolution differs from the model's."""

    resample: bool = Field(True, description="Resample windows to the model's ground sample "
                                             "distance when the scene's differs by more than "
                                             "the tolerance, and back to the scene grid for the "
                                             "outputs.")
    tolerance: float = Field(0.25, ge=0.0, le=10.0,
                             description="Relative difference of resolution tolerated without "
                                         "resampling (0.25 = 25 %).")
    # measured (docs/model-card.md, resolution policy): the multi-GSD default model still scores
    # higher resampled to its 0.5 m on real img33 and on synthetic scenes at 0.25-1.0 m
    native_in_range: bool = Field(False, description="Run scenes at their own resolution when "
                                                      "it lies inside the range the model was "
                                                      "trained across (its gsd_range_m, see "
                                                      "roadprn info MODEL) instead of resampling "
                                                      "them to its gsd_m.")
    force: bool = Field(False, description="Run scenes whose resolution is more than "
                                           "max_factor away from the model's anyway (on the "
                                           "scene grid; such results are unreliable). Without "
                                           "it they are refused (exit 3).")
    max_factor: float = Field(4.0, ge=1.0, le=100.0,
                              description="Scenes more than this factor finer or coarser than "
                                          "the model are refused (unless resolution.force): "
                                          "e.g. 30 m imagery for a 0.5 m model would become 60x "
                                          "larger and show no roads, and unresampled it gives "
                                          "invented ones.")


class OutputConfig(_Section):
    """The rasters and the road network written to --out."""

    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Probability above which a pixel "
                                                              "is road in the binary mask "
                                                              "(strict >, 0..1).")
    overwrite: bool = Field(False, description="Replace existing outputs instead of refusing to "
                                               "start.")
    write_probability: bool = Field(True, description="Also write the probability raster (uint8 "
                                                      "0..255), not only the mask.")
    compress: Literal["deflate", "zstd", "lzw"] = Field(
        "deflate", description="Compression of the output GeoTIFFs: deflate, zstd or lzw.")
    compress_level: int | None = Field(
        1, ge=1, le=22, description="Compression level (deflate 1-9, zstd 1-22; ignored by lzw); "
                                    "null = the codec's default. 1 writes about 3x faster than "
                                    "deflate's default 6 for files about 8 % larger.")
    vector_format: Literal["gpkg", "geojson", "fgb", "parquet"] = Field(
        "gpkg", description="Format of the road network: gpkg (GeoPackage with an embedded QGIS "
                            "style), geojson, fgb (FlatGeobuf) or parquet (GeoParquet, needs "
                            "pyarrow).")
    dst_crs: str | None = Field(None, description="CRS of the road network (e.g. EPSG:4326); "
                                                  "null = the scene's CRS.")

    @field_validator("dst_crs")
    @classmethod
    def _crs(cls, crs: str | None) -> str | None:
        return known_crs(crs)


class RefineConfig(_Section):
    """PatchRefineNet (PRN): corrects the base model's spatially varying bias from its
    probability map."""

    # none by default: measured with the v2 default base (docs/model-card.md), the shipped PRN
    # changed real-image IoU by -0.006..+0.008 and cost img33's APLS 0.14
    method: Literal["auto", "prn", "none"] = Field(
        "none", description="none (default; prn when refine.model names a PRN file): base mask "
                            "only; auto: refine when a PRN is available for the base model "
                            "(each shipped base has one, except the panchromatic ones); prn: "
                            "always (error if none). Off by default: on real images the shipped "
                            "PRN does not improve the v2 default model (docs/model-card.md).")
    model: str = Field("default", description="PRN checkpoint (.pt) or 'default' (the PRN shipped "
                                              "with the default base model).")
    # DEFAULT_FUSION ("global"): on held-out maps the paper rule lost 1-1.8 IoU points to it
    fusion: FusionRule = Field(
        DEFAULT_FUSION, description="How the global (G) and local (L) PRN maps become the mask: "
                                    "paper = G ∪ dilate3x3(G ∩ L) (the paper's rule), global = "
                                    "G, local = L, mean = (G + L) / 2 > 0.5. Default global: on "
                                    "held-out maps the paper rule widens roads by a pixel and "
                                    "lost 1-1.8 IoU points (docs/prn.md).")
    halo: int | None = Field(None, ge=0, le=1024,
                             description="Context around each PRN window in pixels; null = 1/8 "
                                         "of the PRN map size, patch-aligned.")
    batch_size: int = Field(4, ge=1, le=256, description="PRN windows per forward pass.")

    @model_validator(mode="after")
    def _named_prn_refines(self) -> RefineConfig:
        # naming a PRN file (--prn PATH) asks for refinement with it, unless a method was given
        if "method" not in self.model_fields_set and self.model != "default":
            self.__dict__["method"] = "prn"
        return self


class VectorizeConfig(VectorizeParams):
    """Road mask -> road network (LineStrings + junctions). Lengths in metres, areas in m²,
    converted with the scene's true resolution, so one config fits 0.3 m and 1 m imagery alike.

    The vectoriser's thresholds (:class:`VectorizeParams`) plus how ``extract`` runs it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Vectorise at the end of extract (false: rasters "
                                            "only).")
    workers: int | None = Field(None, ge=1, le=256,
                                description="Threads of the tiled vectoriser (skeletonising and "
                                            "labelling release the GIL); null = one per CPU core "
                                            "(at most 8), or 1 inside a batch worker, which "
                                            "already has its share of the cores.")


class APLSConfig(_Section):
    """APLS (m): snap and spacing are the official SpaceNet/CosmiQ defaults; its command line's
    minimum path is 0.001 m (see docs/metrics.md, "Compared with the official code").

    The bounds keep a run from allocating without bound or never ending (a 1e-9 m spacing ran
    with no end).
    """

    control_spacing_m: float = Field(50.0, ge=1, le=100_000,
                                     description="APLS: spacing of control points along roads.")
    snap_m: float = Field(4.0, ge=0, le=1000, description="APLS: how far a control point may "
                                                          "snap onto the other graph.")
    min_path_m: float = Field(10.0, ge=0, le=1_000_000,
                              description="APLS: shorter routes are not scored (the official "
                                          "command line's default is 0.001).")
    junctions: Literal["crossings", "vertices"] = Field(
        "crossings", description="APLS junction rule: crossings = every intersection of two "
                                 "lines is a junction; vertices = lines meet only where they "
                                 "share a vertex (the official CosmiQ/SpaceNet graph rule).")


#: OpenStreetMap ``highway`` values of features that are not roads one drives or walks along
#: (points, markings, facilities, roads that do not exist); evaluate drops them by default
DEFAULT_NON_ROAD_HIGHWAY: tuple[str, ...] = (
    "stopline", "stop_line", "crossing", "traffic_signals", "stop", "give_way", "bus_stop",
    "platform", "elevator", "street_lamp", "turning_circle", "turning_loop", "mini_roundabout",
    "motorway_junction", "milestone", "speed_camera", "traffic_mirror", "toll_gantry",
    "emergency_access_point", "emergency_bay", "passing_place", "rest_area", "services",
    "traffic_calming", "proposed", "planned", "abandoned", "disused", "razed",
)


class EvaluateConfig(_Section):
    """``roadprn evaluate``: how predictions are scored (see docs/metrics.md); lengths in metres.
    CLI options override these."""

    threshold: float = Field(0.5, ge=0, le=1,
                             description="Probability above which a pixel is road.")
    tolerance_m: float = Field(3.0, ge=0, le=1000,
                               description="Relaxed precision/recall distance and "
                                           "completeness/correctness buffer (m).")
    truth_width_m: float = Field(4.0, gt=0, le=1000,
                                 description="Road width when lines are rasterised (m).")
    sweep: bool = Field(False, description="Threshold sweep: PR curve and best threshold.")
    patch_size: int = Field(64, ge=1, le=65536,
                            description="Patch side (pixels) of the per-patch IoU heat map.")
    pixel_size_m: float | None = Field(None, gt=0, le=100_000,
                                       description="Pixel size (m) for rasters without "
                                                   "georeferencing (enables relaxed metrics).")
    plots: bool = Field(True, description="Write figures next to metrics.json and report.md.")
    drop_non_roads: bool = Field(True, description="Leave out line features whose OpenStreetMap "
                                                   "'highway' value is in non_road_highway "
                                                   "(reported; --keep-all-features keeps "
                                                   "them).")
    non_road_highway: list[str] = Field(
        list(DEFAULT_NON_ROAD_HIGHWAY),
        description="'highway' values that are not roads one drives or walks along (stop "
                    "lines, crossings, stops, platforms...).")
    apls: APLSConfig = APLSConfig()


class SynthConfig(_Section):
    """``roadprn synth``: the synthetic scene it writes (same settings, same scene)."""

    size: list[int] = Field([4096], min_length=1, max_length=2,
                            description="Scene size in pixels: [N] (square) or [W, H] (--size N "
                                        "or WxH).")
    seed: int = Field(0, ge=0, description="Same seed, same scene.")
    crs: str = Field("EPSG:32631", description="Any EPSG code or WKT.")
    resolution: float = Field(0.5, gt=0, le=10_000, description="Pixel size in metres "
                                                                "(converted to degrees for a "
                                                                "geographic CRS).")
    origin: tuple[float, float] | None = Field(None, description="Top-left corner in CRS units; "
                                                                 "null = centre of the CRS's "
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
    style: Literal["classic", "realistic"] = Field(
        "classic", description="classic: the original look; realistic: multi-lane arterials "
                               "with markings and cars, parking lots, flat roofs, gardens, dirt "
                               "tracks, a per-scene palette, blur, noise, haze, JPEG blocks.")
    landscape: Literal["mixed", "rural"] = Field(
        "mixed", description="mixed: urban, suburban, rural and forest districts; rural: fields "
                             "with margins, furrows and tree lines, scattered villages and "
                             "farmsteads, woods, mostly 3-6 m dirt tracks and a few paved roads "
                             "(its own look with style realistic).")

    @field_validator("size")
    @classmethod
    def _positive(cls, size: list[int]) -> list[int]:
        if min(size) < 1:
            raise ValueError("sizes are positive pixel counts, e.g. [4096] or [4096, 2048]")
        return size


class TrainConfig(_Section):
    """``roadprn train base`` / ``roadprn train prn``: the options that define a training run
    (stored in the checkpoint and its state file; a resumed run is checked against them).
    Options win."""

    base: TrainBaseOptions = Field(
        TrainBaseOptions(), description="train base: a base segmentation model from scenes and "
                                        "road labels.")
    prn: TrainPRNOptions = Field(
        TrainPRNOptions(), description="train prn: a PatchRefineNet on a base model's "
                                       "probability maps.")


#: sections read by commands other than extract / batch
OTHER_COMMANDS_SECTIONS = ("evaluate", "synth", "train")


class Config(_Section):
    """Everything a run needs besides its input and output paths."""

    model: str = Field("default", description="Base model: 'default' (the model shipped with "
                                               "roadprn; 1-band scenes get 'default-pan'), "
                                               "'default-pan', 'default-v1' and "
                                               "'default-pan-v1' (roadprn 0.1's defaults, for "
                                               "comparison) or a path to a roadprn checkpoint "
                                               "(.pt).")
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


def section_model(field: FieldInfo | None) -> type[BaseModel] | None:
    """The model of a config field that is a section (``tiling``), else None (a value)."""
    annotation = field.annotation if field is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _section_fields(path: list[str], model: type[BaseModel]) -> list[str]:
    for part in path:
        section = section_model(model.model_fields.get(part))
        if section is None:
            return []
        model = section
    return list(model.model_fields)
