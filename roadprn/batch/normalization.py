"""One percentile stretch for a whole archive, so that neighbouring scenes are predicted alike.

A model stretches each scene between its own 2-98 % percentiles by default. For independent
scenes that is right; for the tiles of one area it is not: two tiles that share an overlap get
different stretches (the low percentile of 3x3 cuts of one scene ranged 21-62 against 33 for
the whole), so the same pixels are predicted differently on either side and the merged network
breaks at scene borders. ``batch.normalization: archive`` (the default with ``--merge``) pools a
sample of every scene that the model would stretch by percentiles, grouped by model, bands and
data types, takes the percentiles of the pool (each scene weighted by its pixels, so the pool
stands for the archive as one mosaic would), and runs every scene of the group with that one
stretch as a fixed ``scale``/``offset`` normalisation.

The stretches are kept in ``OUT/roadprn_normalization.json``: a resumed run reuses them (so its
scenes' config hashes, and so the resume, do not change when scenes are added), ``--no-resume``
recomputes them. Memory: the pool holds about ``sample_size``² pixels per group, split between
its scenes; each scene's sample is read by a few driver threads, as a worker would read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadprn.config import Config, NormalizationConfig

log = logging.getLogger(__name__)

NORMALIZATION_NAME = "roadprn_normalization.json"
FORMAT = 1
#: the smallest per-scene sample side: a tiny share still sees more than a few pixels
MIN_SCENE_SAMPLE = 32
READ_THREADS = 8


@dataclass(frozen=True)
class SceneSample:
    """What a scene contributes to its group's pool."""

    name: str
    group: str
    values: np.ndarray  # bands x valid pixels
    weight: float  # scene pixels per sampled pixel


def percentile_spec(config: Config, model: Any) -> NormalizationConfig | None:
    """The percentile normalisation the model would apply to a scene under ``config``, or None
    when it normalises otherwise (fixed, dtype): only a percentile stretch differs by scene."""
    from roadprn.infer.base_stage import normalization_spec

    spec = normalization_spec(config, model)
    mode = "percentile" if spec.mode == "auto" else spec.mode
    return spec if mode == "percentile" else None


def group_key(model_spec: str, bands: Iterable[int], dtypes: Iterable[str],
              spec: NormalizationConfig) -> str:
    """Scenes share a stretch only when the same model reads the same bands of the same data
    types with the same percentiles."""
    text = json.dumps({"model": model_spec, "bands": list(bands), "dtypes": list(dtypes),
                       "percentiles": list(spec.percentiles), "sample_size": spec.sample_size},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def archive_normalizations(scenes: list[Any], specs: Mapping[str, str | None],
                           models: Mapping[str, Any], config: Config, out_root: Path,
                           *, reuse: bool = True) -> dict[str, NormalizationConfig]:
    """The fixed normalisation of each scene that gets the archive's stretch, by scene name.

    ``scenes``: :class:`roadprn.batch.inputs.SceneInput`; ``specs``: each scene's model spec
    (None: unreadable, left to its worker, which then reports the error); ``reuse``: take the
    stretches saved by an earlier run of ``out_root`` where they exist.
    """
    from roadprn.raster.scene import check_band_count, open_raster, open_scene

    plans: dict[str, tuple[str, tuple[int, ...], NormalizationConfig, int]] = {}

    def plan(scene: Any) -> None:
        spec_name = specs.get(scene.name)
        if spec_name is None:
            return
        model = models[spec_name]
        spec = percentile_spec(config, model)
        if spec is None:
            return
        try:
            info = open_scene(scene.path, allow_ungeoreferenced=config.input.allow_ungeoreferenced)
            bands = check_band_count(info, config.input.bands, model.in_channels,
                                     model.bands or ())
            with open_raster(scene.path) as ds:
                dtypes = [ds.dtypes[b - 1] for b in bands]
        except Exception as exc:  # noqa: BLE001 - the scene's own task reports it
            log.info("%s: left out of the archive's normalisation (%s)", scene.path, exc)
            return
        key = group_key(spec_name, bands, dtypes, spec)
        plans[scene.name] = (key, bands, spec, info.width * info.height)

    with ThreadPoolExecutor(min(READ_THREADS, max(1, len(scenes))), "roadprn-norm") as pool:
        list(pool.map(plan, scenes))
    if not plans:
        return {}

    saved = _read_saved(out_root) if reuse else {}
    pixels: dict[str, int] = {}
    for key, _, _, count in plans.values():
        pixels[key] = pixels.get(key, 0) + count
    by_path = {scene.name: scene.path for scene in scenes}
    to_sample = [name for name, (key, *_) in plans.items() if key not in saved]

    def sample(name: str) -> SceneSample | None:
        key, bands, spec, count = plans[name]
        side = scene_sample_side(count, pixels[key], spec.sample_size)
        try:
            from roadprn.raster.normalize import percentile_sample

            with open_raster(by_path[name]) as ds:
                values, sampled = percentile_sample(ds, bands, side)
        except Exception as exc:  # noqa: BLE001 - the scene's own task reports it
            log.info("%s: left out of the archive's normalisation (%s)", by_path[name], exc)
            return None
        return SceneSample(name, key, values, count / max(1, sampled))

    with ThreadPoolExecutor(min(READ_THREADS, max(1, len(to_sample))), "roadprn-norm") as pool:
        samples = [s for s in pool.map(sample, to_sample) if s is not None]
    fresh = pooled_stretches(samples, {key: spec.percentiles for key, _, spec, _ in
                                       plans.values()})
    for key, entry in fresh.items():
        entry["scenes"] = sum(1 for s in samples if s.group == key)
    stretches = {**saved, **fresh}
    if fresh:
        _write_saved(out_root, stretches)
        for key, entry in fresh.items():
            log.info("archive normalisation %s: %d scene(s), lows %s, highs %s", key,
                     entry["scenes"], _rounded(entry["lows"]), _rounded(entry["highs"]))
    out: dict[str, NormalizationConfig] = {}
    for name, (key, *_) in plans.items():
        if key in stretches:
            out[name] = fixed_normalization(stretches[key]["lows"], stretches[key]["highs"])
    return out


def scene_sample_side(scene_pixels: int, group_pixels: int, sample_size: int) -> int:
    """The long side of a scene's sample: the group's ``sample_size``² pixels shared out by
    area (each scene decimated by the same factor), at least :data:`MIN_SCENE_SAMPLE`."""
    share = math.sqrt(scene_pixels / max(1, group_pixels))
    return max(MIN_SCENE_SAMPLE, min(sample_size, round(sample_size * share)))


def pooled_stretches(samples: list[SceneSample],
                     percentiles: Mapping[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """Each group's low/high percentiles per band over its scenes' pooled samples."""
    from roadprn.raster.normalize import band_percentiles

    out: dict[str, dict[str, Any]] = {}
    for key in sorted({s.group for s in samples}):
        members = [s for s in samples if s.group == key]
        values = np.concatenate([s.values for s in members], axis=1)
        weights = np.concatenate([np.full(s.values.shape[1], s.weight) for s in members])
        lows, highs = band_percentiles(values, percentiles[key], weights)
        out[key] = {"lows": list(lows), "highs": list(highs),
                    "percentiles": list(percentiles[key])}
    return out


def fixed_normalization(lows: list[float], highs: list[float]) -> NormalizationConfig:
    """The stretch ``low..high -> 0..1`` per band as a config's fixed normalisation."""
    from roadprn.raster.normalize import stretch_normalizer

    normalizer = stretch_normalizer(lows, highs)
    return NormalizationConfig(mode="fixed", scale=list(normalizer.scale),
                               offset=list(normalizer.offset))


def _read_saved(out_root: Path) -> dict[str, dict[str, Any]]:
    path = out_root / NORMALIZATION_NAME
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            return {}
        return {k: v for k, v in data["groups"].items()
                if len(v["lows"]) == len(v["highs"]) and v["lows"]}
    except FileNotFoundError:
        return {}
    except Exception as exc:  # noqa: BLE001 - a damaged file is recomputed, never trusted
        log.warning("%s: unreadable (%s); the archive's normalisation is recomputed", path, exc)
        return {}


def _write_saved(out_root: Path, groups: Mapping[str, Any]) -> None:
    path = out_root / NORMALIZATION_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "groups": groups}, indent=1))
    os.replace(tmp, path)


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]
