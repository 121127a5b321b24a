"""Write a synthetic scene: image GeoTIFF, ground-truth mask GeoTIFF and road GeoPackage.

The rasters are written window by window with a small GDAL block cache, so memory stays flat
whatever the scene size; only the road vectors grow with the area.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from roadprn.errors import ConfigError, OutputError
from roadprn.outputs.atomic import atomic_output, check_writable
from roadprn.synth import realistic, rural
from roadprn.synth.grid import SynthGrid, make_grid
from roadprn.synth.network import SURFACES, SynthNetwork, build_network
from roadprn.synth.render import plan_scene, render_window, sensor_noise

BLOCK = 512
GDAL_CACHE_MB = 64
MASK_NODATA = 255
FULL_SCALE = {"uint8": 255, "uint16": 2047}  # uint16 scenes use an 11-bit range, like PAN sensors
NOISE_LEVEL = 0.012  # sensor noise, as a fraction of full scale
STYLES = ("classic", "realistic")
LANDSCAPES = ("mixed", "rural")


@dataclass(frozen=True)
class SynthResult:
    image_path: Path
    mask_path: Path
    roads_path: Path
    width: int
    height: int
    crs: str
    road_length_m: float
    road_count: int
    road_fraction: float  # share of valid pixels that are road in the mask


def output_paths(out_path: str | Path) -> tuple[Path, Path, Path]:
    out = Path(out_path)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"output {out} must end in .tif or .tiff")
    return out, out.with_name(f"{out.stem}_mask.tif"), out.with_name(f"{out.stem}_roads.gpkg")


def roads_frame(network: SynthNetwork, grid: SynthGrid) -> gpd.GeoDataFrame:
    """Centrelines in the scene's CRS, split at junctions, with width_m, kind and surface."""
    lines = np.array([r.line for r in network.roads], dtype=object)
    if lines.size == 0:
        return gpd.GeoDataFrame({"width_m": [], "kind": [], "surface": []},
                                geometry=gpd.GeoSeries([], crs=grid.crs), crs=grid.crs)
    noded = shapely.get_parts(shapely.node(shapely.multilinestrings(lines)))
    noded = noded[shapely.length(noded) > 1e-6]
    # give each noded piece the attributes of the widest road it came from
    mids = shapely.line_interpolate_point(noded, 0.5, normalized=True)
    tree = shapely.STRtree(lines)
    piece_idx, road_idx = tree.query(mids, predicate="dwithin", distance=1e-6)
    width = np.array([r.width_m for r in network.roads])
    parent = np.full(len(noded), -1)
    for p, r in sorted(zip(piece_idx, road_idx, strict=True), key=lambda pr: width[pr[1]]):
        parent[p] = r
    found = parent >= 0
    noded, parent = noded[found], parent[found]
    m = grid.metres_to_crs
    geoms = shapely.transform(noded, lambda c: np.column_stack(
        [m.a * c[:, 0] + m.b * c[:, 1] + m.c, m.d * c[:, 0] + m.e * c[:, 1] + m.f]))
    return gpd.GeoDataFrame(
        {"width_m": np.round(width[parent], 2),
         "kind": [network.roads[k].kind for k in parent],
         "surface": [SURFACES[network.roads[k].surface] for k in parent]},
        geometry=gpd.GeoSeries(geoms, crs=grid.crs), crs=grid.crs)


def _profile(grid: SynthGrid, count: int, dtype: str, nodata: int | None) -> dict:
    return {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count,
        "dtype": dtype, "crs": grid.crs, "transform": grid.transform, "nodata": nodata,
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "zstd",
        "zstd_level": 3, "predictor": 2, "bigtiff": "IF_SAFER",
        "interleave": "pixel" if count > 1 else "band",
    }


def _overview_factors(width: int, height: int) -> list[int]:
    factors, f = [], 2
    while max(width, height) / f >= 256:
        factors.append(f)
        f *= 2
    return factors


def generate_scene(
    out_path: str | Path, *, width: int, height: int | None = None, seed: int = 0,
    crs: str = "EPSG:32631", resolution_m: float = 0.5,
    origin: tuple[float, float] | None = None, bands: int = 3, dtype: str = "uint8",
    nodata_border: bool = False, nodata_holes: bool = False, window_size: int = 1024,
    overviews: bool = True, overwrite: bool = False,
    progress: Callable[[int], None] | None = None, style: str = "classic",
    landscape: str = "mixed",
) -> SynthResult:
    """Write OUT.tif, OUT_mask.tif and OUT_roads.gpkg for a deterministic synthetic scene.

    ``style``: "classic" (the original look) or "realistic" (:mod:`roadprn.synth.realistic`:
    wider arterials with lane markings and cars, parking lots, flat roofs, gardens, dirt tracks,
    a per-scene palette, blur, noise, haze and JPEG-like blocks). Both label exactly the
    carriageway of every road. ``landscape``: "mixed" (urban, suburban, rural and forest
    districts) or "rural" (:mod:`roadprn.synth.rural`: fields with margins, furrows and tree
    lines, scattered villages and farmsteads, woods, a sparse network of mostly 3-6 m dirt
    tracks and a few paved roads; drawn in its own look with ``style="realistic"``, with the
    classic look otherwise). ``progress`` is called with the number of pixels finished after
    each window.
    """
    height = width if height is None else height
    if bands not in (1, 3, 4):
        raise ConfigError(f"--bands must be 1, 3 or 4 (R,G,B,NIR), got {bands}")
    if dtype not in FULL_SCALE:
        raise ConfigError(f"--dtype must be uint8 or uint16, got {dtype!r}")
    if window_size < 16 or window_size % 16:
        raise ConfigError(f"window size must be a positive multiple of 16, got {window_size}")
    if style not in STYLES:
        raise ConfigError(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    if landscape not in LANDSCAPES:
        raise ConfigError(f"--landscape must be one of {', '.join(LANDSCAPES)}, "
                          f"got {landscape!r}")
    grid = make_grid(width, height, crs, resolution_m, origin)
    image_path, mask_path, roads_path = output_paths(out_path)
    for path in (image_path, mask_path, roads_path):
        check_writable(path, overwrite)

    if landscape == "rural":
        network = rural.build_rural_network(grid.width_m, grid.height_m, seed)
    else:
        network = build_network(grid.width_m, grid.height_m, seed)
    if style == "realistic" and landscape == "rural":
        rural_plan = rural.plan_rural(grid, network, seed, bands, nodata_border, nodata_holes)
    elif style == "realistic":
        network = realistic.widen_network(network, seed)
        real_plan = realistic.plan_realistic(grid, network, seed, bands, nodata_border,
                                             nodata_holes)
    else:
        plan = plan_scene(grid, network, seed, bands, nodata_border, nodata_holes)
    has_nodata = nodata_border or nodata_holes
    scale = FULL_SCALE[dtype]
    road_pixels = valid_pixels = 0
    with contextlib.ExitStack() as stack:
        tmp_image = stack.enter_context(atomic_output(image_path, overwrite))
        tmp_mask = stack.enter_context(atomic_output(mask_path, overwrite))
        tmp_roads = stack.enter_context(atomic_output(roads_path, overwrite))
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024))
        img = stack.enter_context(rasterio.open(
            tmp_image, "w", **_profile(grid, bands, dtype, 0 if has_nodata else None)))
        msk = stack.enter_context(rasterio.open(
            tmp_mask, "w", **_profile(grid, 1, "uint8", MASK_NODATA)))
        if bands >= 3:
            img.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue] + \
                ([ColorInterp.undefined] if bands == 4 else [])
        if bands == 4:
            img.set_band_description(4, "NIR")
        for row0 in range(0, height, window_size):
            for col0 in range(0, width, window_size):
                w, h = min(window_size, width - col0), min(window_size, height - row0)
                if style == "realistic" and landscape == "rural":  # sensor noise included
                    pixels = rural.render_window(rural_plan, col0, row0, w, h)
                elif style == "realistic":  # sensor noise included
                    pixels = realistic.render_window(real_plan, col0, row0, w, h)
                else:
                    pixels = render_window(plan, col0, row0, w, h)
                rows, cols = np.arange(row0, row0 + h), np.arange(col0, col0 + w)
                out = np.empty((bands, h, w), dtype=dtype)
                for b in range(bands):
                    v = pixels.image[b]
                    if style == "classic":
                        v += np.float32(NOISE_LEVEL) * sensor_noise(seed, b, rows, cols)
                    v *= np.float32(scale)
                    v += np.float32(0.5)
                    np.clip(v, 1, scale, out=v)
                    out[b] = v
                mask = pixels.mask
                if pixels.valid is not None:
                    out[:, ~pixels.valid] = 0
                    mask[~pixels.valid] = MASK_NODATA
                    valid_pixels += int(pixels.valid.sum())
                else:
                    valid_pixels += w * h
                road_pixels += int(np.count_nonzero(mask == 1))
                window = Window(col0, row0, w, h)
                img.write(out, window=window)
                msk.write(mask, 1, window=window)
                if progress is not None:
                    progress(w * h)
        # recognisable by its tags: batch never takes a label for a scene
        img.update_tags(ROADPRN_ROLE="synthetic-scene", ROADPRN_SYNTH_SEED=str(seed))
        msk.update_tags(ROADPRN_ROLE="label", ROADPRN_SYNTH_SEED=str(seed))
        img.close()
        msk.close()
        factors = _overview_factors(width, height)
        if overviews and factors:
            for path, method in ((tmp_image, Resampling.average), (tmp_mask, Resampling.nearest)):
                with rasterio.open(path, "r+") as ds:
                    ds.build_overviews(factors, method)
        frame = roads_frame(network, grid)
        try:
            frame.to_file(tmp_roads, layer="roads", driver="GPKG", engine="pyogrio")
        except Exception as exc:  # pyogrio wraps disk errors in its own types
            raise OutputError(f"cannot write {roads_path}: {exc}") from exc
    return SynthResult(image_path, mask_path, roads_path, width, height,
                       grid.crs.to_string(), network.length_m, len(frame),
                       road_pixels / valid_pixels if valid_pixels else math.nan)
