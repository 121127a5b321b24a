"""Run a PatchRefineNet over a probability map of any size, and fuse its two outputs.

The map is cut into windows of the model's ``map_size``; each window keeps only its central
*core* (window minus ``halo`` on every side), and cores tile the map without overlap, so every
output pixel comes from exactly one window and has at least ``halo`` pixels of context (zero
probability beyond the map's edges). The PRN patch grid is aligned to each window; when
``2·halo`` is a multiple of the patch size (the default where possible), window grids also line
up with each other across the map, as in training.

Pure numpy/torch over in-memory arrays; the raster pipeline feeds it windows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from scipy import ndimage

from roadprn.prn.fusion import DEFAULT_FUSION, FUSION_RULES
from roadprn.prn.network import PatchRefineNet
from roadprn.raster.masks import is_road

__all__ = ["DEFAULT_FUSION", "FUSION_RULES", "default_halo", "fuse", "prn_probabilities", "refine"]
_DILATE_3X3 = np.ones((3, 3), dtype=bool)


def fuse(
    global_map: np.ndarray,
    local_map: np.ndarray | None,
    rule: str = DEFAULT_FUSION,
    threshold: float = 0.5,
) -> np.ndarray:
    """Binary road mask from PRN outputs (H, W) or (N, H, W); thresholds are strict
    (:func:`roadprn.raster.masks.is_road`).

    ``paper``: G ∪ dilate₃ₓ₃(G ∩ L), the local branch only adds a one-pixel rim where both agree;
    ``global``: G; ``local``: L; ``mean``: (g + l)/2 > t. Without a local map (P0) ``paper``
    is G, and rules that need the local map raise ValueError.
    """
    if rule not in FUSION_RULES:
        raise ValueError(f"fusion rule must be one of {FUSION_RULES}, got {rule!r}")
    global_mask = is_road(np.asarray(global_map), threshold)
    if rule == "global" or (rule == "paper" and local_map is None):
        return global_mask
    if local_map is None:
        raise ValueError(f"fusion rule {rule!r} needs the local branch, which a P0 model lacks")
    local_map = np.asarray(local_map)
    if local_map.shape != global_mask.shape:
        raise ValueError(f"global {global_mask.shape} and local {local_map.shape} maps differ")
    if rule == "local":
        return is_road(local_map, threshold)
    if rule == "mean":
        return is_road((np.asarray(global_map, dtype=np.float64) + local_map) / 2, threshold)
    both = global_mask & is_road(local_map, threshold)
    structure = _DILATE_3X3 if both.ndim == 2 else _DILATE_3X3[None]
    return global_mask | ndimage.binary_dilation(both, structure=structure)


def default_halo(model: PatchRefineNet) -> int:
    """About 1/8 of the window, rounded so that window grids line up when that is possible."""
    arch = model.arch
    wanted = arch.map_size // 8
    if arch.grid > 0:
        half_patch = arch.map_size // arch.grid // 2
        aligned = wanted // half_patch * half_patch
        if aligned > 0:
            return aligned
    return wanted


def _core_origins(length: int, core: int) -> list[int]:
    return list(range(0, max(length, 1), core))


def _windows(height: int, width: int, core: int) -> Iterator[tuple[int, int]]:
    for row in _core_origins(height, core):
        for col in _core_origins(width, core):
            yield row, col


def prn_probabilities(
    model: PatchRefineNet,
    prob: np.ndarray,
    *,
    halo: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Global and local PRN maps (float32, shape of ``prob``) for an (H, W) probability map.

    ``prob`` is float in [0, 1] or uint8 scaled 0–255. The model is put in eval mode.
    """
    arch = model.arch
    size = arch.map_size
    halo = default_halo(model) if halo is None else halo
    core = size - 2 * halo
    if halo < 0 or core < 1:
        raise ValueError(f"halo {halo} leaves no core in a {size}-pixel PRN window")
    values = np.asarray(prob)
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) probability map, got shape {values.shape}")
    values = values.astype(np.float32) / 255 if values.dtype == np.uint8 else values
    height, width = values.shape
    rows, cols = len(_core_origins(height, core)), len(_core_origins(width, core))
    padded = np.zeros((halo + rows * core + halo, halo + cols * core + halo), np.float32)
    padded[halo : halo + height, halo : halo + width] = values

    model.eval()
    out_global = np.zeros((rows * core, cols * core), np.float32)
    out_local = np.zeros_like(out_global) if model.local_decoder is not None else None
    origins = list(_windows(height, width, core))
    for start in range(0, len(origins), batch_size):
        batch_origins = origins[start : start + batch_size]
        batch = np.stack([padded[r : r + size, c : c + size] for r, c in batch_origins])
        with torch.inference_mode():
            out = model(torch.from_numpy(batch[:, None]).to(device))
        keep = np.s_[:, 0, halo : halo + core, halo : halo + core]
        global_cores = out.global_map[keep].float().cpu().numpy()
        local_cores = None if out.local_map is None else out.local_map[keep].float().cpu().numpy()
        for i, (r, c) in enumerate(batch_origins):
            out_global[r : r + core, c : c + core] = global_cores[i]
            if out_local is not None and local_cores is not None:
                out_local[r : r + core, c : c + core] = local_cores[i]
    crop = np.s_[:height, :width]
    return out_global[crop], None if out_local is None else out_local[crop]


def refine(
    model: PatchRefineNet,
    prob: np.ndarray,
    *,
    rule: str = DEFAULT_FUSION,
    halo: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Refined binary road mask of an (H, W) base probability map."""
    global_map, local_map = prn_probabilities(
        model, prob, halo=halo, batch_size=batch_size, device=device
    )
    return fuse(global_map, local_map, rule=rule)
