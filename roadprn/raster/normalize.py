"""Raw band values of any bit depth to model inputs: fixed scaling, dtype range, or percentiles
from a decimated read of the scene."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from roadprn.config import NormalizationConfig
from roadprn.errors import ConfigError, InputError, gdal_reason
from roadprn.raster.gdal_env import GDAL_ERRORS
from roadprn.raster.read import ValiditySources, read_valid, validity_sources


@dataclass(frozen=True)
class BandNormalizer:
    """``x * scale + offset`` per band, then clipped to [0, 1]: cheap to apply per tile."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    clip: bool = True

    def __call__(self, data: np.ndarray) -> np.ndarray:
        scale = np.asarray(self.scale, np.float32).reshape(-1, 1, 1)
        offset = np.asarray(self.offset, np.float32).reshape(-1, 1, 1)
        out = data * scale + offset
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out.astype(np.float32, copy=False)

    def as_dict(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "offset": list(self.offset), "clip": self.clip}


def dtype_range(dtype: str) -> tuple[float, float]:
    kind = np.dtype(dtype)
    if kind.kind in "ui":
        info = np.iinfo(kind)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def make_normalizer(
    ds: DatasetReader, bands: Sequence[int], spec: NormalizationConfig
) -> BandNormalizer:
    """Build the per-band transform from a spec; percentiles come from a small sample read."""
    n = len(bands)
    mode = "percentile" if spec.mode == "auto" else spec.mode
    if mode == "fixed":
        assert spec.scale is not None
        scale = _per_band(spec.scale, n, "scale")
        offset = _per_band(spec.offset or [0.0], n, "offset")
        for name, values in (("scale", scale), ("offset", offset)):
            if not all(math.isfinite(v) for v in values):
                # NaN would make every pixel NaN and the model's output meaningless, silently
                raise ConfigError(f"bad value for config key 'input.normalization.{name}': got "
                                  f"{values}; every value must be a finite number")
        if not any(scale):
            raise ConfigError(f"bad value for config key 'input.normalization.scale': got {scale}; "
                              "a scale of 0 makes every band constant")
        return BandNormalizer(tuple(scale), tuple(offset))
    lows: Sequence[float]
    highs: Sequence[float]
    if mode == "dtype":
        lows, highs = zip(*(dtype_range(ds.dtypes[b - 1]) for b in bands), strict=True)
    else:
        lows, highs = estimate_percentiles(ds, bands, spec.percentiles, spec.sample_size)
    return stretch_normalizer(lows, highs)


def _per_band(values: Sequence[float], n: int, name: str) -> list[float]:
    if len(values) == 1:
        return [float(values[0])] * n
    if len(values) != n:
        raise InputError(f"normalization.{name} lists {len(values)} values for {n} selected "
                         "band(s)")
    return [float(v) for v in values]


#: a scene at most this many times the sample's pixels is read decimated (nearest, from full
#: resolution: every block decoded, 0.2 s for a 4096² 3-band scene); larger ones in windows,
#: whose spatial clustering costs accuracy (that scene's 2 % low: 31 decimated, 35 in windows)
DECIMATED_READ_MAX_RATIO = 16
SAMPLE_GRID = 8  # windows per side when sampling a large scene without overviews


def estimate_percentiles(
    ds: DatasetReader,
    bands: Sequence[int],
    percentiles: tuple[float, float],
    sample_size: int = 1024,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band low/high percentiles of valid pixels from a sample of about ``sample_size``².

    Cost and memory do not grow with the scene: a decimated read when the scene is small, else
    a grid of small windows at full resolution (see :func:`sample_windows`); never overviews.
    """
    values, _ = percentile_sample(ds, bands, sample_size)
    return band_percentiles(values, percentiles)


def percentile_sample(ds: DatasetReader, bands: Sequence[int],
                      sample_size: int = 1024) -> tuple[np.ndarray, int]:
    """The valid pixels of a sample of about ``sample_size``² (bands x pixels, float64) and the
    number of pixels sampled, valid or not (an archive pools its scenes' samples, each weighted
    by the scene's pixels per sampled pixel). Raises :class:`InputError` when none is valid."""
    try:
        sources = validity_sources(ds, bands)
        if ds.width * ds.height <= DECIMATED_READ_MAX_RATIO * sample_size**2:
            sample, valid = _decimated_sample(ds, bands, sample_size, sources)
        else:
            reads = [read_valid(ds, bands, w, sources=sources)
                     for w in sample_windows(ds.height, ds.width, ds.block_shapes[0], sample_size)]
            sample = np.concatenate([r.reshape(len(bands), -1) for r, _ in reads], axis=1)
            valid = np.concatenate([m.reshape(-1) for _, m in reads])
    except GDAL_ERRORS as exc:
        raise InputError(f"{ds.name}: cannot read a sample for normalisation "
                         f"({gdal_reason(exc)})") from None
    sample = sample.reshape(len(bands), -1)
    valid = valid.reshape(-1)
    if not valid.any():
        raise InputError(f"{ds.name}: no valid pixels (all nodata, masked or non-finite)")
    return sample[:, valid].astype(np.float64, copy=False), int(valid.size)


def band_percentiles(values: np.ndarray, percentiles: tuple[float, float],
                     weights: np.ndarray | None = None
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Low/high ``percentiles`` of each row of ``values`` (bands x pixels), optionally with a
    weight per pixel (then the inverted-CDF percentile, as numpy defines weighted ones)."""
    lows, highs = [], []
    for band in values:
        if weights is None:
            lo, hi = np.percentile(band, percentiles)
        else:
            lo, hi = np.percentile(band, percentiles, weights=weights, method="inverted_cdf")
        lows.append(float(lo))
        highs.append(float(hi))
    return tuple(lows), tuple(highs)


def stretch_normalizer(lows: Sequence[float], highs: Sequence[float]) -> BandNormalizer:
    """The transform mapping each band's ``low..high`` to 0..1 (a flat band is only shifted)."""
    stretch = tuple(1.0 / (h - lo) if h > lo else 1.0 for lo, h in zip(lows, highs, strict=True))
    shift = tuple(-lo * s for lo, s in zip(lows, stretch, strict=True))
    return BandNormalizer(stretch, shift)


def _decimated_sample(ds: DatasetReader, bands: Sequence[int], sample_size: int,
                      sources: ValiditySources) -> tuple[np.ndarray, np.ndarray]:
    """The scene read at most ``sample_size`` pixels on its long side (nearest from the full
    resolution), with validity.

    Never from overviews: they are averaged, which narrows the tails that percentiles measure
    (a 4096² synthetic scene's 2 % low: 33 from its overview, 31 at full resolution), so the
    same image would be stretched, and predicted, differently once ``gdaladdo`` had run on it.
    """
    factor = max(1.0, max(ds.width, ds.height) / sample_size)
    shape = (max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
    if shape != (ds.height, ds.width) and ds.overviews(bands[0]):
        import rasterio

        with rasterio.open(ds.name, OVERVIEW_LEVEL="NONE") as full:
            return read_valid(full, bands, out_shape=shape, sources=sources)
    return read_valid(ds, bands, out_shape=shape, sources=sources)


def sample_windows(height: int, width: int, block_shape: tuple[int, int],
                   sample_size: int, grid: int = SAMPLE_GRID) -> list[Window]:
    """``grid``² windows of (sample_size / grid)² pixels spread evenly over the scene.

    Without overviews a decimated read decodes every block of the file (13 s for a 16384²
    3-band uint16 scene, and a split batch scene paid it once per band); these windows sit
    inside one block each where blocks are large enough, so at most ``grid``² blocks (or, for a
    strip-organised file, the strips of ``grid`` bands of rows) are decoded.
    """
    side = max(1, sample_size // grid)
    side_r, side_c = min(height, side), min(width, side)

    def starts(extent: int, length: int, block: int) -> list[int]:
        out = []
        for k in range(grid):
            centre = int((k + 0.5) * extent / grid)
            start = centre - length // 2
            if block >= length:  # moved the least that puts it inside the block of its centre
                first = centre // block * block
                start = min(max(start, first), min(first + block, extent) - length)
            out.append(min(max(start, 0), extent - length))
        return out

    block_h, block_w = block_shape
    return [Window(c, r, side_c, side_r) for r in starts(height, side_r, block_h)
            for c in starts(width, side_c, block_w)]
