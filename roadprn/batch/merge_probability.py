"""The archive merge at the probability level: ``roadprn merge RUN_DIR --merge-level probability``.

Instead of joining the scenes' networks (:mod:`roadprn.batch.merge`), the done scenes'
probability rasters are blended on one metric grid and the blend is vectorised once, so a road
crossing an overlap is skeletonised from one continuous probability field and never has to be
cut and re-joined:

- the grid: the merge's work CRS (:func:`roadprn.batch.merge._work_crs`), pixel = the finest
  scene pixel, aligned to the finest scene's pixels when it lies in that CRS, covering the
  union of the valid footprints;
- window by window (``window_px`` a side; memory follows (window + 2 feather)² per thread,
  never the mosaic), each scene reaching the window is warped into it
  (``rasterio.warp.reproject``, bilinear, its validity carried as NaN) and weighted by its
  **feathering weight**: the distance (pixels) to the border of its reprojected valid area,
  capped at ``feather_px``. The scene that sees a pixel farther from its border dominates, as
  ownership does in the vector merge, and the blend ramps linearly across an overlap instead of
  switching. Where no scene is valid the mosaic is nodata (internal mask);
- the blend is written as a tiled uint8 GeoTIFF into a temporary folder inside ``RUN_DIR``
  (removed afterwards) and vectorised once with the tiled vectoriser
  (:func:`roadprn.vectorize.tiled.vectorize_source`: tiles with halo, memory-bounded) with the
  run's ``vectorize:`` settings and threshold;
- roads and junctions go to ``RUN_DIR/roadprn_network.gpkg`` with the vector merge's layers and
  columns (each road's ``scene`` is the scene owning its midpoint: farthest from its border),
  in the output CRS, written atomically; gaps are recorded in the ``runs`` row.

A scene without a probability raster (``output.write_probability: false``) or whose network was
drawn from a PRN-refined mask is blended from that mask (0/1 as probability 0/1), so its roads
are the ones its own network came from; such scenes are listed in the ``runs`` row
(``config_json`` → ``merge.mask_scenes``).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roadprn.batch.manifest import MANIFEST_NAME
from roadprn.batch.merge import (
    NETWORK_NAME,
    MergeSummary,
    _crs_name,
    _intersects,
    _scene_lists,
    _to_crs,
    _vectorize_params,
    _work_crs,
    choose_dst_crs,
    scene_footprint,
)
from roadprn.errors import ConfigError, InputError, OutputError

log = logging.getLogger(__name__)

DEFAULT_WINDOW_PX = 1024
DEFAULT_FEATHER_PX = 256  # > the usual overlap: the blend ramps across the whole overlap
MOSAIC_NAME = "probability_mosaic.tif"
MERGE_LEVELS = ("vector", "probability")  # what merge_run(level=) and --merge-level take
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class BlendScene:
    """A done scene as the blend needs it: the raster blended and where it lies."""

    name: str
    raster: str  # its probability raster (uint8 v/255), or its mask (0/1)
    is_mask: bool
    crs_wkt: str
    footprint: Any  # valid area, work CRS
    bounds: Box  # of the footprint, work CRS


@dataclass(frozen=True)
class MosaicGrid:
    """The common grid: north-up, square pixels of ``res`` in the work CRS."""

    crs_wkt: str
    x0: float
    y0: float  # top-left corner
    res: float
    width: int
    height: int

    @property
    def transform(self) -> Any:
        from affine import Affine

        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    def bounds(self, row: int, col: int, height: int, width: int) -> Box:
        left, top = self.x0 + col * self.res, self.y0 - row * self.res
        return (left, top - height * self.res, left + width * self.res, top)


# ---- pure pieces ----------------------------------------------------------------------------
def feather_weight(valid: np.ndarray, cap_px: float) -> np.ndarray:
    """Each valid pixel's distance (pixels) to the nearest invalid one, capped at ``cap_px``;
    0 where invalid. Exact up to the cap when ``valid`` extends ``cap_px`` beyond the pixels
    used (the caller pads its window by the cap)."""
    from scipy import ndimage

    if not valid.any():
        return np.zeros(valid.shape, dtype=np.float32)
    if valid.all():  # no border in reach: as deep as the cap
        return np.full(valid.shape, np.float32(cap_px), dtype=np.float32)
    dist = ndimage.distance_transform_edt(valid).astype(np.float32)
    return np.minimum(dist, np.float32(cap_px))


def blend(probs: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> np.ndarray:
    """Weighted mean of the scenes' probabilities (NaN where a scene is invalid, weight 0
    there); NaN where no scene is valid."""
    if not probs:
        raise ValueError("blend needs at least one scene")
    total = np.zeros(probs[0].shape, dtype=np.float32)
    acc = np.zeros(probs[0].shape, dtype=np.float32)
    for prob, weight in zip(probs, weights, strict=True):
        w = np.where(np.isnan(prob), np.float32(0), weight).astype(np.float32)
        acc += w * np.nan_to_num(prob, nan=0.0)
        total += w
    out = np.full(total.shape, np.nan, dtype=np.float32)
    np.divide(acc, total, out=out, where=total > 0)
    return out


def to_uint8(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probability in [0, 1] (NaN: nodata) → uint8 v = round(255 p) and the validity mask
    (0 / 255) the way the pipeline's probability rasters store them."""
    valid = ~np.isnan(prob)
    values = np.round(np.clip(np.nan_to_num(prob, nan=0.0), 0, 1) * 255).astype(np.uint8)
    return values, np.where(valid, 255, 0).astype(np.uint8)


def mosaic_grid(bounds: Box, res: float, crs_wkt: str,
                anchor: tuple[float, float] | None = None) -> MosaicGrid:
    """The grid of ``res`` pixels covering ``bounds``; corners on ``anchor``'s pixel lattice
    (a scene's corner) so scenes already on that lattice are copied, not resampled."""
    minx, miny, maxx, maxy = bounds
    ax, ay = anchor if anchor is not None else (minx, maxy)
    x0 = ax + math.floor((minx - ax) / res + 1e-6) * res
    y0 = ay + math.ceil((maxy - ay) / res - 1e-6) * res
    width = max(1, math.ceil((maxx - x0) / res - 1e-6))
    height = max(1, math.ceil((y0 - miny) / res - 1e-6))
    return MosaicGrid(crs_wkt, x0, y0, res, width, height)


def windows(grid: MosaicGrid, size: int) -> list[tuple[int, int, int, int]]:
    """(row, col, height, width) windows tiling the grid, row-major."""
    return [(r, c, min(size, grid.height - r), min(size, grid.width - c))
            for r in range(0, grid.height, size) for c in range(0, grid.width, size)]


# ---- one window -------------------------------------------------------------------------------
def warp_scene(scene: BlendScene, grid: MosaicGrid, box: Box,
               shape: tuple[int, int]) -> np.ndarray | None:
    """The scene's probability on the grid's pixels of ``box`` (NaN where it has no valid
    pixel); None when it does not reach the box."""
    import rasterio
    from rasterio.warp import Resampling, reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    from roadprn.raster.gdal_env import read_masks

    with rasterio.open(scene.raster) as ds:
        src_box = transform_bounds(grid.crs_wkt, scene.crs_wkt, *box, densify_pts=21)
        win = from_bounds(*src_box, transform=ds.transform)
        c0, r0 = max(0, math.floor(win.col_off) - 2), max(0, math.floor(win.row_off) - 2)
        c1 = min(ds.width, math.ceil(win.col_off + win.width) + 2)
        r1 = min(ds.height, math.ceil(win.row_off + win.height) + 2)
        if c1 <= c0 or r1 <= r0:
            return None
        read = Window(c0, r0, c1 - c0, r1 - r0)
        raw = ds.read(1, window=read)
        valid = read_masks(ds, 1, window=read) > 0
        src_transform = ds.window_transform(read)
    if not valid.any():
        return None
    src = raw.astype(np.float32) if scene.is_mask else raw.astype(np.float32) / np.float32(255)
    if scene.is_mask:
        src = (src == 1).astype(np.float32)
    src[~valid] = np.nan
    left, _, _, top = box
    from affine import Affine

    out = np.full(shape, np.nan, dtype=np.float32)
    reproject(src, out, src_transform=src_transform, src_crs=scene.crs_wkt,
              dst_transform=Affine(grid.res, 0, left, 0, -grid.res, top),
              dst_crs=grid.crs_wkt, resampling=Resampling.bilinear,
              src_nodata=np.nan, dst_nodata=np.nan)
    return out


def blend_window(scenes: Sequence[BlendScene], grid: MosaicGrid,
                 window: tuple[int, int, int, int], feather_px: int) -> np.ndarray:
    """The blended probability of one window (NaN: no scene): each scene warped into the window
    padded by ``feather_px`` (so its distance to its own border is exact up to the cap),
    weighted by :func:`feather_weight`, cropped back."""
    row, col, height, width = window
    pad = feather_px
    box = grid.bounds(row - pad, col - pad, height + 2 * pad, width + 2 * pad)
    shape = (height + 2 * pad, width + 2 * pad)
    probs, weights = [], []
    for scene in scenes:
        if not _intersects(box, scene.bounds):
            continue
        prob = warp_scene(scene, grid, box, shape)
        if prob is None:
            continue
        weight = feather_weight(~np.isnan(prob), feather_px)
        probs.append(prob[pad:pad + height, pad:pad + width])
        weights.append(weight[pad:pad + height, pad:pad + width])
    if not probs:
        return np.full((height, width), np.nan, dtype=np.float32)
    return blend(probs, weights)


# ---- the whole merge --------------------------------------------------------------------------
def _blend_scenes(run_dir: Path, done: list[dict[str, Any]], gaps: list[dict[str, Any]]
                  ) -> tuple[list[tuple[dict[str, Any], tuple[Any, str, float]]], list[str]]:
    """Usable scenes with their footprint headers (unreadable ones become gaps) and the
    names of those blended from their mask."""
    def header(record: dict[str, Any]) -> tuple[Any, str, float] | Exception:
        try:
            return scene_footprint(run_dir / record["files"]["mask"]["path"])
        except Exception as exc:  # noqa: BLE001 - an unreadable scene is a gap, not a stop
            return exc

    with ThreadPoolExecutor(min(8, max(1, len(done))), "roadprn-merge-plan") as pool:
        headers = list(pool.map(header, done))
    usable = []
    for record, head in zip(done, headers, strict=True):
        if isinstance(head, Exception) or head[0].is_empty:
            reason = (f"footprint unreadable: {head}" if isinstance(head, Exception)
                      else "no valid pixels")
            gaps.append({"name": record["name"], "scene": record.get("scene"),
                         "status": "missing", "error": reason})
        else:
            usable.append((record, head))
    return usable, [r["name"] for r, _ in usable if _source_of(run_dir, r)[1]]


def _source_of(run_dir: Path, record: dict[str, Any]) -> tuple[Path, bool]:
    """The raster a scene is blended from: its probability, unless it is missing or the
    scene's network came from a refined mask (then that mask: (path, True))."""
    files = record["files"]
    if "refined_mask" in files and (run_dir / files["refined_mask"]["path"]).is_file():
        return run_dir / files["refined_mask"]["path"], True
    if "probability" in files and (run_dir / files["probability"]["path"]).is_file():
        return run_dir / files["probability"]["path"], False
    return run_dir / files["mask"]["path"], True


def _anchor(scenes: list[BlendScene], work: str, res: float) -> tuple[float, float] | None:
    """A corner of a scene already on the work CRS at the grid's pixel size."""
    import rasterio
    from pyproj import CRS

    for scene in scenes:
        if CRS.from_user_input(scene.crs_wkt) != CRS.from_user_input(work):
            continue
        with rasterio.open(scene.raster) as ds:
            t = ds.transform
        if abs(t.a - res) < 1e-9 * res and abs(-t.e - res) < 1e-9 * res and t.b == t.d == 0:
            return (t.c, t.f)
    return None


def write_mosaic(path: Path, scenes: list[BlendScene], grid: MosaicGrid, *, window_px: int,
                 feather_px: int, threads: int, progress: bool = False) -> int:
    """The blended mosaic as a tiled uint8 GeoTIFF with an internal validity mask, window by
    window (at most ``2 x threads`` windows in flight); returns the number of windows."""
    import rasterio
    from rasterio.windows import Window

    from roadprn.raster.gdal_env import write_mask
    from roadprn.runtime.progress import progress_bar

    boxes = windows(grid, window_px)
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "width": grid.width,
               "height": grid.height, "crs": grid.crs_wkt, "transform": grid.transform,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "zlevel": 1, "bigtiff": "if_safer"}
    bar = progress_bar(total=len(boxes), unit="window", desc="blend", enabled=progress,
                       leave=False)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as ds, \
            ThreadPoolExecutor(threads, "roadprn-blend") as pool:
        for box, prob in _in_order(pool, boxes, scenes, grid, feather_px, 2 * threads):
            values, valid = to_uint8(prob)
            window = Window(box[1], box[0], box[3], box[2])
            ds.write(values, 1, window=window)
            write_mask(ds, valid, window=window)
            bar.update(1)
    bar.close()
    return len(boxes)


def _in_order(pool: ThreadPoolExecutor, boxes: list[tuple[int, int, int, int]],
              scenes: list[BlendScene], grid: MosaicGrid, feather_px: int,
              limit: int) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray]]:
    pending = collections.deque(boxes)
    flight: collections.deque[tuple[tuple[int, int, int, int], Future[np.ndarray]]] = \
        collections.deque()
    while pending or flight:
        while pending and len(flight) < max(1, limit):
            box = pending.popleft()
            flight.append((box, pool.submit(blend_window, scenes, grid, box, feather_px)))
        box, future = flight.popleft()
        yield box, future.result()


def merge_run_probability(run_dir: str | Path, out: str | Path | None = None,
                          dst_crs: str | None = None, *, workers: int | None = None,
                          window_px: int = DEFAULT_WINDOW_PX,
                          feather_px: int = DEFAULT_FEATHER_PX, overwrite: bool = False,
                          progress: bool = False) -> MergeSummary:
    """Blend the done scenes' probabilities on one grid and vectorise the blend once into one
    road network file (same file and summary as :func:`roadprn.batch.merge.merge_run`;
    ``workers`` threads blend windows and vectorise tiles)."""
    from pyproj import CRS

    from roadprn.runtime.parallel import local_thread_count

    started = time.perf_counter()
    run_dir = Path(run_dir)
    manifest = run_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise InputError(f"{run_dir} is not a batch run folder (no {MANIFEST_NAME})")
    final = Path(out) if out is not None else run_dir / NETWORK_NAME
    overwrite = overwrite or out is None
    if final.exists() and not overwrite:
        raise OutputError(f"{final} exists; pass --overwrite to replace it")
    if final.suffix.lower() != ".gpkg":
        raise ConfigError(f"the merged network is a GeoPackage: {final} must end in .gpkg")
    done, gaps = _scene_lists(run_dir)
    params, model_hashes = _vectorize_params(run_dir)
    threads = local_thread_count(workers)
    usable, mask_scenes = _blend_scenes(run_dir, done, gaps)
    if mask_scenes:
        log.warning("%d scene(s) without a plain probability raster are blended from their "
                    "mask: %s", len(mask_scenes), ", ".join(mask_scenes[:5]))
    chosen = (CRS.from_user_input(dst_crs).to_wkt() if dst_crs
              else choose_dst_crs([h[1] for _, h in usable]))
    summary = MergeSummary(path=final, dst_crs=_crs_name(chosen), gaps=gaps, scenes=len(usable))
    work = (_work_crs(chosen, [h[0] for _, h in usable], [h[1] for _, h in usable])
            if usable else chosen)
    scenes = []
    for record, (footprint, crs_wkt, _) in usable:
        raster, is_mask = _source_of(run_dir, record)
        fp = _to_crs(footprint, crs_wkt, work)
        scenes.append(BlendScene(record["name"], str(raster), is_mask, crs_wkt, fp,
                                 tuple(float(v) for v in fp.bounds)))  # type: ignore[arg-type]
    unit_m = min((h[2] for _, h in usable), default=1.0)
    config: dict[str, Any] = {"merge": {"level": "probability", "dst_crs": chosen,
                                        "work_crs": work, "unit_m": unit_m,
                                        "window_px": window_px, "feather_px": feather_px,
                                        "mask_scenes": mask_scenes},
                              "vectorize": params.model_dump()}
    staging = Path(tempfile.mkdtemp(prefix=".roadprn-merge-", dir=run_dir))
    try:
        network = None
        if scenes:
            bounds = _union([s.bounds for s in scenes])
            grid = mosaic_grid(bounds, unit_m, work, _anchor(scenes, work, unit_m))
            config["merge"]["grid"] = [grid.width, grid.height]
            mosaic = staging / MOSAIC_NAME
            summary.cells = write_mosaic(mosaic, scenes, grid, window_px=window_px,
                                         feather_px=feather_px, threads=threads,
                                         progress=progress)
            network = _vectorize(mosaic, grid, params, threads, progress)
        roads, junctions = _frames(network, scenes, work, chosen,
                                   grid.transform if scenes else None)
        summary.seconds = time.perf_counter() - started
        _write(final, overwrite, roads, junctions, manifest, config, model_hashes, scenes, gaps)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.roads, summary.junctions = len(roads), len(junctions)
    summary.length_m = float(roads["length_m"].sum())
    summary.seconds = time.perf_counter() - started
    return summary


def _union(bounds: list[Box]) -> Box:
    arr = np.array(bounds, dtype=float)
    return (float(arr[:, 0].min()), float(arr[:, 1].min()), float(arr[:, 2].max()),
            float(arr[:, 3].max()))


def _vectorize(mosaic: Path, grid: MosaicGrid, params: Any, threads: int,
               progress: bool) -> Any:
    """The mosaic vectorised once by the tiled vectoriser (probability > threshold)."""
    from rasterio.crs import CRS as RioCRS

    from roadprn.vectorize.source import FileSource
    from roadprn.vectorize.tiled import vectorize_source

    source = FileSource(path=str(mosaic), kind="prob", scale=255.0, threshold=params.threshold,
                        shape=(grid.height, grid.width), transform=grid.transform,
                        crs=RioCRS.from_wkt(grid.crs_wkt), name="roadprn_network")
    return vectorize_source(source, params, workers=threads, progress=progress)


def _frames(network: Any, scenes: list[BlendScene], work: str, dst: str,
            transform: Any) -> tuple[Any, Any]:
    """Roads (``scene``: the owner of the midpoint) and junctions in the output CRS, with the
    vector merge's columns."""
    import shapely
    from pyproj import CRS

    from roadprn.batch.merge import _empty_frame
    from roadprn.vectorize.attributes import lengths_m, network_frames
    from roadprn.vectorize.merge import Footprints, owner_at

    if network is None:
        return _empty_frame("roads", dst), _empty_frame("junctions", dst)
    roads, junctions = network_frames(network, transform, work, "")
    if len(roads):
        mids = shapely.get_coordinates(shapely.line_interpolate_point(
            roads.geometry.values, 0.5, normalized=True))
        owners = owner_at(Footprints([s.footprint for s in scenes]), mids)
        roads["scene"] = np.array([scenes[k].name for k in owners], dtype=object)
    roads, junctions = roads.to_crs(dst), junctions.to_crs(dst)
    roads = roads[roads.geometry.is_valid & ~roads.geometry.is_empty].reset_index(drop=True)
    roads["id"] = np.arange(1, len(roads) + 1, dtype=np.int64)
    roads["length_m"] = np.round(lengths_m(roads.geometry.values, CRS.from_user_input(dst)), 3)
    return roads, junctions.drop(columns=["scene"])


def _write(final: Path, overwrite: bool, roads: Any, junctions: Any, manifest: Path,
           config: dict[str, Any], model_hashes: dict[str, str], scenes: list[BlendScene],
           gaps: list[dict[str, Any]]) -> None:
    from roadprn.outputs.atomic import atomic_output
    from roadprn.vectorize.gpkg import append_layer, run_record, write_provenance

    with atomic_output(final, overwrite) as tmp:
        append_layer(roads, tmp, "roads", append=False)
        append_layer(junctions, tmp, "junctions", append=False)
        run = run_record(manifest, config, model_hashes, command="merge")
        run["scenes_json"] = json.dumps([s.name for s in scenes])
        run["gaps_json"] = json.dumps(gaps, default=str)
        write_provenance(tmp, run)


def merge_level(level: str, run_dir: str | Path, out: str | Path | None, dst_crs: str | None,
                *, workers: int | None, overwrite: bool, progress: bool) -> MergeSummary:
    """``merge_run``'s entry for a level other than ``vector`` (one-line error otherwise)."""
    if level != "probability":
        raise ConfigError(f"unknown merge level {level!r}: choose one of "
                          f"{', '.join(MERGE_LEVELS)}")
    return merge_run_probability(run_dir, out, dst_crs, workers=workers, overwrite=overwrite,
                                 progress=progress)
