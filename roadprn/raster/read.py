"""Windowed reads with halo and padding, and which pixels are valid (nodata, alpha, masks,
NaN/Inf), the same for every stage."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.io import DatasetReader
from rasterio.windows import Window

from roadprn.errors import InputError, gdal_reason
from roadprn.raster.gdal_env import GDAL_ERRORS, read_masks


@dataclass(frozen=True)
class ValiditySources:
    """Where a scene's per-pixel validity comes from, each source taken on its own.

    GDAL's own mask band picks one source (an explicit mask shadows nodata, nodata shadows an
    alpha band), so an RGBA scene with a nodata value, or with an internal mask, would lose its
    alpha. roadprn combines them all: a pixel is valid when no band read is nodata, the alpha
    band (if any) is non-zero and the explicit mask (if any) is non-zero; non-finite values are
    invalid too (:func:`read_valid`).
    """

    nodata: tuple[tuple[int, float], ...]  # (band, nodata value) for the bands read
    alpha: int | None  # the alpha band's index
    mask_bands: tuple[int, ...]  # bands read whose GDAL mask is an explicit mask (not derived)

    @property
    def trivial(self) -> bool:
        """True when only non-finite values can make a pixel invalid."""
        return not (self.nodata or self.alpha or self.mask_bands)


def validity_sources(ds: DatasetReader, bands: Sequence[int]) -> ValiditySources:
    """The validity sources of ``bands`` of ``ds`` (a few GDAL attribute reads, no pixels)."""
    alpha = next((i for i, ci in enumerate(ds.colorinterp, start=1) if ci == ColorInterp.alpha),
                 None)
    nodata = tuple((b, float(v)) for b in bands
                   if (v := ds.nodatavals[b - 1]) is not None)
    return ValiditySources(nodata, alpha, explicit_mask_bands(ds, bands))


def explicit_mask_bands(ds: DatasetReader, bands: Sequence[int]) -> tuple[int, ...]:
    """Bands whose mask band is stored (internal/.msk/VRT mask), not derived from nodata/alpha."""
    derived = {MaskFlags.all_valid, MaskFlags.nodata, MaskFlags.alpha}
    return tuple(b for b in bands if not derived & set(ds.mask_flag_enums[b - 1]))


def read_valid(ds: DatasetReader, bands: Sequence[int], window: Window | None = None, *,
               out_shape: tuple[int, int] | None = None,
               sources: ValiditySources | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw values of ``bands`` in ``window`` and their validity (see :class:`ValiditySources`).

    ``out_shape=(h, w)`` reads decimated (nearest), e.g. from overviews. GDAL errors propagate.
    """
    sources = sources or validity_sources(ds, bands)
    bands = list(bands)
    extra = [sources.alpha] if sources.alpha is not None and sources.alpha not in bands else []
    kwargs: dict[str, Any] = {"window": window}
    if out_shape is not None:
        kwargs.update(out_shape=(len(bands) + len(extra), *out_shape),
                      resampling=Resampling.nearest)
    raw = ds.read(bands + extra, **kwargs)
    data = raw[:len(bands)]
    valid = np.ones(data.shape[1:], bool)
    for band, value in sources.nodata:
        values = data[bands.index(band)]
        if values.dtype.kind == "f":
            valid &= ~np.isnan(values) if math.isnan(value) else values != values.dtype.type(value)
        else:
            valid &= values != value
    if sources.alpha is not None:
        valid &= (raw[len(bands)] if extra else data[bands.index(sources.alpha)]) > 0
    if sources.mask_bands:
        mask_kwargs = dict(kwargs)
        if out_shape is not None:
            mask_kwargs["out_shape"] = (len(sources.mask_bands), *out_shape)
        masks = read_masks(ds, list(sources.mask_bands), **mask_kwargs)
        valid &= np.all(masks > 0, axis=0)
    if data.dtype.kind == "f":
        valid &= np.all(np.isfinite(data), axis=0)
    return data, valid


def read_window(
    ds: DatasetReader | Any,
    window: Window,
    *,
    bands: Sequence[int],
    halo: int = 0,
    pad_mode: str = "reflect",
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` grown by ``halo`` on each side, padded beyond the scene edge.

    Returns ``(data, valid)``: data float32 (bands, h + 2·halo, w + 2·halo) with raw values,
    valid bool (h + 2·halo, w + 2·halo): False for padding, nodata, masked/alpha and non-finite
    pixels. Invalid pixels in data are filled (0, or reflected neighbours for padding) so that a
    model never sees NaN. ``ds`` is a dataset or anything with ``width``, ``height``, ``name``
    and its own ``read_valid(bands, window)`` (a scene seen on a resampled grid,
    :class:`roadprn.raster.grid.ResampledScene`).
    """
    col0 = int(window.col_off) - halo
    row0 = int(window.row_off) - halo
    out_w = int(window.width) + 2 * halo
    out_h = int(window.height) + 2 * halo
    c0, r0 = max(col0, 0), max(row0, 0)
    c1, r1 = min(col0 + out_w, ds.width), min(row0 + out_h, ds.height)
    if c1 <= c0 or r1 <= r0:
        return (np.zeros((len(bands), out_h, out_w), np.float32), np.zeros((out_h, out_w), bool))
    inner = Window(c0, r0, c1 - c0, r1 - r0)
    reader = getattr(ds, "read_valid", None)
    try:
        if reader is not None:
            raw, valid = reader(bands, inner)
        else:
            raw, valid = read_valid(ds, bands, inner)
    except GDAL_ERRORS as exc:
        raise InputError(f"{ds.name}: cannot read window {_window_text(inner)} "
                         f"({gdal_reason(exc)})") from None
    data = raw.astype(np.float32, copy=False)  # a fresh read (or copy): ours to change
    if not valid.all():
        data[:, ~valid] = 0.0
    pad: tuple[tuple[int, int], tuple[int, int]] = (
        (r0 - row0, row0 + out_h - r1), (c0 - col0, col0 + out_w - c1))
    if any(p for pair in pad for p in pair):
        mode: Literal["symmetric", "constant"] = ("symmetric" if pad_mode == "reflect"
                                                  else "constant")
        data = np.pad(data, ((0, 0), *pad), mode=mode)
        valid = np.pad(valid, pad, mode="constant", constant_values=False)
    return data, valid


def _window_text(window: Window) -> str:
    return (f"col {int(window.col_off)} row {int(window.row_off)} "
            f"size {int(window.width)}x{int(window.height)}")
