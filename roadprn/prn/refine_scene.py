"""PatchRefineNet over a whole scene's base probability raster, window by window.

PRN sees only the base model's probability map. Windows of PRN's ``map_size`` with a halo are
read from the probability COG (zero beyond the scene edge, as PRN was trained), the patch grid is
aligned to each window, both PRN branches are fused per window (the paper's
``G ∪ dilate(G ∩ L)`` by default) and only each window's core is kept: the same tile / strip
machinery as the base model, so memory stays bounded and windows never show seams beyond what
the core cropping guarantees. Fusion runs per window before cropping, so the paper rule's 3x3
dilation at a core boundary sees the window's own halo rather than its neighbour's core (the two
can differ on that one-pixel rim).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from roadprn import __version__
from roadprn.config import Config
from roadprn.errors import ModelError
from roadprn.infer.base_stage import predict_strips
from roadprn.infer.predictor import resolve_device
from roadprn.infer.tiling import TilePlan
from roadprn.infer.writer import write_strips
from roadprn.models.exported import ExportedPRN
from roadprn.outputs.atomic import (
    atomic_output,
    check_writable,
    remove_with_sidecars,
    temporary_sibling,
)
from roadprn.prn.network import PatchRefineNet
from roadprn.prn.refine import FUSION_RULES, default_halo, fuse
from roadprn.raster.grid import scene_grid
from roadprn.raster.normalize import BandNormalizer
from roadprn.raster.scene import open_dataset, open_scene
from roadprn.raster.styles import REFINED_MASK, REFINED_MASK_STYLE, mask_qml, write_style
from roadprn.raster.write import MASK_NODATA, to_cog
from roadprn.raster.write import source_tag as absolute_source

log = logging.getLogger(__name__)


@dataclass
class RefineModel:
    """A PRN ready to run, with the base model it was trained on: a checkpoint's network, or
    a PRN exported to ONNX / TorchScript (:class:`roadprn.models.exported.ExportedPRN`)."""

    module: PatchRefineNet | ExportedPRN
    sha256: str
    base_model_sha256: str | None
    name: str = "prn"

    @property
    def map_size(self) -> int:
        return int(self.module.arch.map_size)


class PRNPredictor:
    """(B, 1, T, T) base probabilities -> (B, T, T) fused refined masks as 0/1 floats."""

    def __init__(self, model: RefineModel, device: torch.device, fusion: str) -> None:
        if fusion not in FUSION_RULES:
            raise ModelError(f"unknown PRN fusion rule {fusion!r}; allowed: {FUSION_RULES}")
        self.module = model.module.to_device(device) if isinstance(
            model.module, ExportedPRN) else model.module.to(device).eval()
        self.device = device
        self.fusion = fusion
        self.with_local = fusion != "global"  # the local branch would be computed for nothing

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if isinstance(self.module, ExportedPRN):
            global_np, local_np = self.module.maps(batch, self.device, self.with_local)
            return fuse(global_np, local_np, rule=self.fusion).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        out = self.module(x, with_local=self.with_local)
        global_map = out.global_map[:, 0].float().cpu().numpy()
        local_map = None if out.local_map is None else out.local_map[:, 0].float().cpu().numpy()
        return fuse(global_map, local_map, rule=self.fusion).astype(np.float32)


def load_refine_model(path: str | Path) -> RefineModel:
    """A PRN checkpoint, or a PRN exported by ``roadprn export`` (ONNX or TorchScript)."""
    from roadprn.models.base import archive_kind
    from roadprn.models.checkpoint import load_checkpoint
    from roadprn.models.exported import is_onnx_path, load_exported_prn

    if is_onnx_path(path) or (Path(path).is_file() and archive_kind(Path(path)) == "torchscript"):
        exported, sha256, base_sha256 = load_exported_prn(path)
        return RefineModel(exported, sha256, base_sha256,
                           name=f"prn ({Path(path).name}, {exported.backend})")
    checkpoint = load_checkpoint(path)
    if checkpoint.meta.kind != "prn":
        raise ModelError(f"{path} is a {checkpoint.meta.kind} model, not a PatchRefineNet "
                         "checkpoint")
    module = checkpoint.build_model()
    if not isinstance(module, PatchRefineNet):
        raise ModelError(f"{path}: its PRN architecture {checkpoint.meta.arch!r} did not build "
                         "a PatchRefineNet")
    return RefineModel(module, checkpoint.sha256, checkpoint.meta.base_model_sha256,
                       name=f"{checkpoint.meta.arch} ({Path(path).name})")


def check_pairing(prn: RefineModel, base_sha256: str | None) -> bool:
    """Warn (loudly, once) when a PRN refines a base model it was not trained on."""
    if prn.base_model_sha256 and base_sha256 and prn.base_model_sha256 != base_sha256:
        log.warning(
            "PRN %s was trained on base model %s… but refines %s…: its corrections are learnt "
            "for another model's bias and may hurt; retrain it with `roadprn train prn`",
            prn.name, prn.base_model_sha256[:12], base_sha256[:12])
        return False
    return True


def refine_scene(
    probability: str | Path,
    out_mask: str | Path,
    prn: RefineModel,
    config: Config,
    *,
    progress: bool = False,
    source_tag: str | None = None,
) -> dict[str, float]:
    """Write the refined mask COG (0/1, nodata 255) for a base probability raster.

    ``source_tag``: the probability raster's name to record (its final path when it is still
    being staged under another). The mask's tags name roadprn's version, the base model (from
    the probability raster's tags) and the PRN (sha256 both), the fusion rule and the config; a
    QGIS style file (``<stem>.qml``) is written beside it.
    """
    t0 = time.perf_counter()
    out_mask = Path(out_mask)
    check_writable(out_mask, config.output.overwrite)
    info = open_scene(probability, allow_ungeoreferenced=True)
    size = prn.map_size
    # default_halo reads only the architecture, which an exported PRN carries too
    halo = (config.refine.halo if config.refine.halo is not None
            else default_halo(cast(PatchRefineNet, prn.module)))
    plan = TilePlan(info.width, info.height, size, halo, 0)
    device = resolve_device(config.inference.device)
    predictor = PRNPredictor(prn, device, config.refine.fusion)
    to_unit = BandNormalizer((1.0 / 255.0,), (0.0,), clip=True)
    stats: dict[str, float] = {}
    raw = temporary_sibling(out_mask.with_name(f"{out_mask.stem}_raw.tif"))
    try:
        with atomic_output(out_mask, config.output.overwrite) as final:
            strips = predict_strips(
                info.path, (1,), plan, config.refine.batch_size, to_unit, predictor,
                reader_threads=config.inference.reader_threads,
                prefetch_batches=config.inference.prefetch_batches, pad_mode="constant",
                stats=stats, progress=progress,
            )
            tags = refined_tags(info.path, prn, config, source_tag)
            sources = write_strips(strips, info, scene_grid(info), config, None, raw, tags,
                                     stats, mask_style=REFINED_MASK_STYLE)
            to_cog(sources[raw], final, config.output, resampling="NEAREST")
            write_style(out_mask, mask_qml(REFINED_MASK), config.output.overwrite)
    finally:
        remove_with_sidecars(raw)
    stats["seconds"] = time.perf_counter() - t0
    stats["mask_nodata"] = MASK_NODATA
    return stats


# the base stage's tags that the refined mask inherits from the probability raster it refines
INHERITED_TAGS = ("ROADPRN_SOURCE", "ROADPRN_MODEL", "ROADPRN_MODEL_SHA256", "ROADPRN_GRID",
                  "ROADPRN_INFERENCE_GRID", "ROADPRN_THRESHOLD")


def refined_tags(probability: str, prn: RefineModel, config: Config,
                 source: str | None = None) -> dict[str, str]:
    """The refined mask's tags: like the base outputs' (version, scene, base model, config)
    plus the PRN's. ``ROADPRN_SOURCE`` stays the scene (as in the base outputs);
    ``ROADPRN_PROBABILITY`` is the raster refined, as an absolute path."""
    with open_dataset(probability) as ds:
        base = ds.tags()
    tags = {"ROADPRN_VERSION": __version__}
    tags.update({k: base[k] for k in INHERITED_TAGS if k in base})
    tags.setdefault("ROADPRN_MODEL_SHA256", prn.base_model_sha256 or "unknown")
    tags.update({
        "ROADPRN_PROBABILITY": source or absolute_source(probability),
        "ROADPRN_REFINED_BY": prn.name,
        "ROADPRN_PRN_SHA256": prn.sha256,
        "ROADPRN_PRN_BASE_MODEL_SHA256": prn.base_model_sha256 or "unknown",
        "ROADPRN_FUSION": config.refine.fusion,
        "ROADPRN_CONFIG": json.dumps(config.pipeline_dict(), sort_keys=True),
    })
    if "ROADPRN_SOURCE" not in tags:  # a probability raster not written by roadprn
        tags["ROADPRN_SOURCE"] = tags["ROADPRN_PROBABILITY"]
    return tags
