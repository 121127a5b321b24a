"""The whole ``extract`` job for one scene: base model → (PRN refinement) → road network.

``roadprn extract`` and every ``batch`` task call :func:`run_extract`, so a scene gives the same
outputs whichever way it is processed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rasterio.windows import Window

from roadprn.config import Config
from roadprn.errors import ConfigError
from roadprn.infer.base_stage import ExtractPaths, ExtractResult, extract_probability
from roadprn.infer.predictor import SegmentationModel
from roadprn.infer.stitch import Strip
from roadprn.outputs.staging import staged_run
from roadprn.raster.styles import style_path
from roadprn.raster.subset import window_text, write_window_vrt
from roadprn.raster.write import source_tag
from roadprn.vectorize.gpkg import output_paths

log = logging.getLogger(__name__)


@dataclass
class ExtractRun:
    scene: str
    folder: Path
    files: dict[str, Path]
    base: ExtractResult
    stage_seconds: dict[str, float] = field(default_factory=dict)
    roads: int | None = None
    junctions: int | None = None
    road_length_m: float | None = None
    prn_sha256: str | None = None
    window: str | None = None  # COL,ROW,WIDTH,HEIGHT of the scene processed; None = all of it

    def as_dict(self) -> dict[str, Any]:
        return {
            "scene": self.scene,
            "folder": str(self.folder),
            "files": {k: str(v) for k, v in self.files.items()},
            "roads": self.roads,
            "junctions": self.junctions,
            "road_length_m": None if self.road_length_m is None else round(self.road_length_m, 2),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "base": self.base.as_dict(),
            "prn_sha256": self.prn_sha256,
            "window": self.window,
        }


def model_spec_for_scene(scene: str | Path, config: Config) -> str:
    """``default`` (and ``default-v1``) pick the panchromatic default model for 1-band scenes
    (unless bands are set)."""
    from roadprn.models.loading import PAN_TWINS, model_for_scene
    from roadprn.raster.scene import open_scene

    if config.model not in PAN_TWINS or config.input.bands:
        return config.model
    info = open_scene(scene, allow_ungeoreferenced=config.input.allow_ungeoreferenced,
                      check_readable=False)
    spec = model_for_scene(config.model, len(info.data_bands))
    if spec != config.model:
        log.info("%s: 1-band scene, using the panchromatic default model", scene)
    return spec


def refined_mask_path(paths: ExtractPaths) -> Path:
    return paths.mask.with_name(paths.mask.name.replace("_mask.tif", "_refined_mask.tif"))


def resolve_refine_model(config: Config, base_model: SegmentationModel):
    """The PRN to use, or None; ``auto`` refines only when a PRN exists for this base model."""
    from roadprn.errors import ModelError
    from roadprn.models.loading import DEFAULT_PRN_MODEL, default_model_path, shipped_prn_path
    from roadprn.prn.refine_scene import check_pairing, load_refine_model

    method = config.refine.method
    if method == "none":
        return None
    if config.refine.model == "default":
        # a shipped PRN only corrects the shipped base model it was trained on
        path = shipped_prn_path(base_model.sha256)
        if path is None and method == "auto":
            log.info("no PRN for base model %s; refinement skipped", base_model.name)
            return None
        if path is None:
            path = default_model_path(DEFAULT_PRN_MODEL)
            if not path.is_file():
                raise ModelError("no default PRN is installed; pass a PRN checkpoint with "
                                 "--prn PATH")
    else:
        path = Path(config.refine.model)
    prn = load_refine_model(path)
    check_pairing(prn, base_model.sha256)
    return prn


def vector_outputs(paths: ExtractPaths, config: Config) -> list[Path]:
    scene_name = paths.mask.name.removesuffix("_mask.tif")
    return output_paths(paths.folder, scene_name, config.output.vector_format)


def run_extract(
    scene: str | Path,
    config: Config,
    out_dir: str | Path | None = None,
    *,
    base_model: SegmentationModel | None = None,
    progress: bool = False,
    base_strips: Iterator[Strip] | None = None,
) -> ExtractRun:
    """Rasters (probability, mask) and the road network of one scene in one output folder.

    ``base_strips``: base-model probabilities computed elsewhere (a scene split across batch
    workers), passed to :func:`extract_probability`; refinement and vectorisation run as usual.
    """
    from roadprn.models.loading import load_segmentation_model

    final_paths = ExtractPaths.for_scene(scene, out_dir)
    if config.refine.method == "prn" and not config.output.write_probability:
        raise ConfigError("PRN refinement needs the probability raster; do not combine "
                          "--refine prn with --no-probability")  # before any model loads
    if base_model is None:
        base_model = load_segmentation_model(model_spec_for_scene(scene, config))
    prn = resolve_refine_model(config, base_model)
    if prn is not None and not config.output.write_probability:
        log.info("no probability raster requested: PRN refinement skipped")
        prn = None

    scene_name = final_paths.mask.name.removesuffix("_mask.tif")
    area = area_of_interest(scene, config)  # checked before any output folder is made
    with staged_run(final_paths.folder, scene_name, planned_outputs(final_paths, config, prn),
                    config.output.overwrite) as staged:
        # every stage writes into the staging folder; nothing has a final name until all are done
        paths = ExtractPaths.for_scene(scene, staged.folder)
        read_from, area_tags = scene, {}
        if area is not None:  # the scene cut to the area, a VRT the staging folder drops
            read_from = write_window_vrt(str(scene), area, staged.folder / "area" /
                                         f"{scene_name}.vrt")
            area_tags = {"ROADPRN_SOURCE": source_tag(scene), "ROADPRN_WINDOW": window_text(area)}
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        base = extract_probability(read_from, base_model, config, staged.folder,
                                   progress=progress, precomputed_strips=base_strips,
                                   extra_tags=area_tags,
                                   statistics_from=None if read_from == scene else scene)
        stages["base"] = time.perf_counter() - t0
        files = {"mask": paths.mask}
        if paths.probability.exists() and config.output.write_probability:
            files["probability"] = paths.probability
        run = ExtractRun(str(scene), final_paths.folder, files, base, stages,
                         window=area_tags.get("ROADPRN_WINDOW"))
        _later_stages(run, read_from, paths, final_paths, config, base_model, prn, progress)
        run.files.update(style_files(run.files))
    run.files = {key: staged.final_path(path) for key, path in run.files.items()}
    run.base = dataclasses.replace(base, paths=final_paths, scene=str(scene))
    return run


def area_of_interest(scene: str | Path, config: Config) -> Window | None:
    """The window of ``scene`` that ``input.window`` / ``input.bbox`` select; None = all."""
    area = config.input
    if area.window is None and area.bbox is None:
        return None
    from roadprn.raster.scene import open_scene
    from roadprn.raster.subset import area_window, window_text

    info = open_scene(scene, allow_ungeoreferenced=config.input.allow_ungeoreferenced,
                      check_readable=False)
    window = area_window(info, area.window, area.bbox, area.bbox_crs)
    assert window is not None  # an area is set
    text = window_text(window)
    if area.window is not None and text != ",".join(map(str, area.window)):
        log.warning("%s: --window %s runs off the scene (%d x %d px); using %s", scene,
                    ",".join(map(str, area.window)), info.width, info.height, text)
    log.info("%s: processing the window %s (col,row,width,height)", scene, text)
    return window


def planned_outputs(paths: ExtractPaths, config: Config, prn: Any) -> list[Path]:
    """Every file an extract run with ``config`` may write (checked before any work)."""
    outputs = [paths.mask]
    if config.output.write_probability:
        outputs.append(paths.probability)
    if prn is not None:
        outputs.append(refined_mask_path(paths))
    outputs += [style_path(p) for p in list(outputs)]  # QGIS styles beside the rasters
    if config.vectorize.enabled:
        outputs += vector_outputs(paths, config)
    return outputs


def style_files(files: dict[str, Path]) -> dict[str, Path]:
    """The QGIS style files written beside the rasters in ``files`` (``mask_style``, ...)."""
    rasters = [k for k in ("probability", "mask", "refined_mask") if k in files]
    return {f"{k}_style": style_path(files[k]) for k in rasters
            if style_path(files[k]).is_file()}


def _later_stages(run: ExtractRun, scene: str | Path, paths: ExtractPaths,
                  final_paths: ExtractPaths, config: Config, base_model: SegmentationModel,
                  prn: Any, progress: bool) -> None:
    stages, files = run.stage_seconds, run.files
    if prn is not None:
        from roadprn.prn.refine_scene import refine_scene

        t0 = time.perf_counter()
        refine_scene(files["probability"], refined_mask_path(paths), prn, config,
                     progress=progress, source_tag=str(final_paths.probability.resolve()))
        files["refined_mask"] = refined_mask_path(paths)
        run.prn_sha256 = prn.sha256
        stages["refine"] = time.perf_counter() - t0

    if not config.vectorize.enabled:
        return
    from roadprn.raster.scene import open_scene

    if not open_scene(scene, allow_ungeoreferenced=True, check_readable=False).georeferenced:
        log.warning("%s: not georeferenced; skipping vectorisation (road lengths need metres)",
                    scene)
        return
    t0 = time.perf_counter()
    _vectorize(run, paths, config, base_model, progress)
    stages["vectorize"] = time.perf_counter() - t0


def _vectorize(run: ExtractRun, paths: ExtractPaths, config: Config,
               base_model: SegmentationModel, progress: bool) -> None:
    from roadprn.vectorize.run import vectorize_to_files
    from roadprn.vectorize.source import MaskProbabilitySource

    scene_name = paths.mask.name.removesuffix("_mask.tif")
    mask = run.files.get("refined_mask", paths.mask)
    source = MaskProbabilitySource.from_paths(mask, run.files.get("probability"), scene_name)
    hashes = {"base": base_model.sha256 or "unknown"}
    if run.prn_sha256:
        hashes["prn"] = run.prn_sha256
    result = vectorize_to_files(
        source, run.scene, paths.folder, config.vectorize,
        fmt=config.output.vector_format, dst_crs=config.output.dst_crs,
        overwrite=config.output.overwrite, workers=config.vectorize.workers,
        config=config.pipeline_dict(), model_hashes=hashes, command="extract", progress=progress,
    )
    run.files["roads"] = result.files[0]
    if len(result.files) > 1:
        run.files["junctions"] = result.files[1]
    run.roads, run.junctions, run.road_length_m = result.roads, result.junctions, result.length_m
