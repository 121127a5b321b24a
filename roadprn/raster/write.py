"""Writing rasters: raw tiled GeoTIFFs, their rewrite as COGs (read back before they count),
and model-grid outputs warped back onto the scene grid in row strips."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from roadprn.config import Config, OutputConfig
from roadprn.errors import InputError, one_line
from roadprn.raster.gdal_env import DEFAULT_GDAL_CACHE_MB, GDAL_ERRORS, write_mask
from roadprn.raster.grid import Grid, scene_grid
from roadprn.raster.masks import is_road
from roadprn.raster.read import read_valid, validity_sources
from roadprn.raster.scene import SceneInfo, check_blocks_readable, open_dataset
from roadprn.raster.styles import MASK_STYLE, PROBABILITY_STYLE, BandStyle

MASK_NODATA = 255
WRITE_BLOCK = 256
COG_BLOCK = 512
# GDAL's block cache (MB) while writing: strips are full-width and block-aligned, so blocks are
# complete when written and need no caching; GDAL's default (5 % of RAM) would grow with the scene.
GDAL_CACHE_MB = DEFAULT_GDAL_CACHE_MB


def raw_profile(info: SceneInfo, grid: Grid, compress: str) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": "uint8",
        "crs": info.crs,
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": WRITE_BLOCK,
        "blockysize": WRITE_BLOCK,
        # temporary file, rewritten as the COG: the fastest codec GTiff has
        "compress": "zstd",
        "zstd_level": 1,
        "bigtiff": "IF_SAFER",
    }


@contextlib.contextmanager
def open_raw(path: Path | None, profile: dict[str, Any], *, nodata: float | None,
              tags: dict[str, str], style: BandStyle | None = None) -> Iterator[Any]:
    """A raw raster open for writing, with ``tags`` and the band's ``style`` (description,
    colour table), which the COG conversion carries over."""
    if path is None:
        yield None
        return
    with rasterio.open(path, "w", nodata=nodata, **profile) as ds:
        ds.update_tags(**tags)
        if style is not None:
            style.apply(ds)
        yield ds


def source_tag(path: str | Path) -> str:
    """A source path as tags record it: absolute for a local file (a relative one means nothing
    once the output moves), as given for anything else (``/vsis3/...``, URLs)."""
    local = Path(str(path))
    return str(local.resolve()) if local.exists() else str(path)


def resample_to_scene(source: Path, out: Path, info: SceneInfo, config: Config,
                       tags: dict[str, str], *, kind: str, threshold: float | None = None,
                       bands: tuple[int, ...] = (), style: BandStyle | None = None) -> None:
    """Warp a model-grid output back onto the scene grid in row strips (bounded memory).

    ``kind="mask"`` with a ``threshold`` makes the mask from a probability source (bilinear, then
    thresholded); without one the source is a mask and is resampled nearest-neighbour. ``style``:
    the band's description / colour table (default: the road mask's or the probability's). Pixels
    the scene itself marks invalid in ``bands`` (nodata, alpha, masks) stay invalid, whatever
    the round trip through the model grid interpolated there.
    """
    target = scene_grid(info)
    profile = raw_profile(info, target, config.output.compress)
    out.unlink(missing_ok=True)
    nearest = kind == "mask" and threshold is None
    rows = WRITE_BLOCK * 4
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_MB), \
            open_dataset(source) as src, \
            WarpedVRT(src, crs=src.crs, transform=target.transform, width=target.width,
                      height=target.height, add_alpha=True,
                      resampling=Resampling.nearest if nearest else Resampling.bilinear) as vrt, \
            open_raw(out, profile, nodata=MASK_NODATA if kind == "mask" else None,
                      tags=tags, style=style or (MASK_STYLE if kind == "mask"
                                                 else PROBABILITY_STYLE)) as dst, \
            open_dataset(info.path) as scene:
        try:
            sources = validity_sources(scene, bands) if bands else None
        except GDAL_ERRORS as exc:
            raise InputError(f"{scene.name}: cannot read the scene's validity "
                             f"({one_line(exc)})") from None
        for row in range(0, target.height, rows):
            window = Window(0, row, target.width, min(rows, target.height - row))
            values = vrt.read(1, window=window)
            valid = vrt.read(2, window=window) > 0
            if sources is not None and not sources.trivial:
                valid &= scene_valid(scene, bands, window, sources)
            if kind == "mask":
                if threshold is not None:
                    values = is_road(values.astype(np.float32) / 255.0, threshold)
                dst.write(np.where(valid, values, MASK_NODATA).astype(np.uint8)[None],
                          window=window)
            else:
                dst.write(np.where(valid, values, 0).astype(np.uint8)[None], window=window)
                write_mask(dst, (valid * 255).astype(np.uint8), window=window)


def scene_valid(scene: Any, bands: tuple[int, ...], window: Window, sources: Any) -> np.ndarray:
    """The scene's own validity in ``window`` (a GDAL failure names the scene, exit 3)."""
    try:
        return read_valid(scene, bands, window, sources=sources)[1]
    except GDAL_ERRORS as exc:
        raise InputError(f"{scene.name}: cannot read the scene's validity in rows "
                         f"{int(window.row_off)}..{int(window.row_off + window.height)} "
                         f"({one_line(exc)})") from None


def to_cog(src: Path, dst: Path, output: OutputConfig, resampling: str) -> None:
    """Rewrite a finished raster as a Cloud-Optimised GeoTIFF with overviews (GDAL streams it).

    A VRT from :func:`write_strips` brings its overviews along; anything else gets them
    computed here with ``resampling``.
    """
    options: dict[str, Any] = {"COMPRESS": output.compress.upper()}
    if output.compress != "zstd":
        options["PREDICTOR"] = "YES"
    if output.compress_level is not None and output.compress != "lzw":
        options["LEVEL"] = output.compress_level
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_MB):
        rasterio.shutil.copy(src, dst, driver="COG", BLOCKSIZE=COG_BLOCK, OVERVIEWS="AUTO",
                             RESAMPLING=resampling, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
                             **options)
    check_reads_back(dst)


#: a file of ours that does not read back: our validation's words, or GDAL's
READ_BACK_ERRORS: tuple[type[BaseException], ...] = (InputError, *GDAL_ERRORS)


def check_reads_back(path: Path) -> None:
    """Open a raster just written and read it back like a scene's validation, or raise.

    GDAL's COG driver can report success for a file it could not finish (seen on a full disk:
    the last directory missing, exit 0, a raster nobody can open). ``check_blocks_readable``
    reads the corner blocks of every level, where such a file is broken; our own output
    failing is an I/O error, not a bad input.
    """
    try:
        with rasterio.open(path) as ds:
            check_blocks_readable(ds)
    except READ_BACK_ERRORS as exc:
        raise OSError(errno.EIO, f"the file written does not read back "
                      f"({one_line(exc)})", str(path)) from exc
