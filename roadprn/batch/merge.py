"""One road network for a whole batch run: ``roadprn merge RUN_DIR`` / ``batch --merge``.

The done scenes' networks are joined into ``RUN_DIR/roadprn_network.gpkg`` (roads, junctions,
runs, QGIS style) in one CRS, cell by cell:

- the driver reads the manifest, each done scene's valid footprint (a decimated read of its
  mask's validity, a few hundred pixels a side) and CRS, chooses the output CRS (``dst_crs``, or
  the CRS most scenes share, or EPSG:4326 when no CRS has a majority) and a metric work CRS
  (the output CRS when projected, else the local UTM zone at the archive's centre), and lays a
  grid of square cells over the footprints;
- each cell is one task (Dask on ``client`` when one is given, threads otherwise): it reads only
  the roads inside its window (core + halo) from the scenes that reach it (the GeoPackages'
  spatial index), reprojects them, and joins them with :func:`roadprn.vectorize.merge.merge_window`
  (ownership by distance to the scene border, seam joining and clean-up with the vectoriser's
  rules, lengths and junctions recomputed); it returns the roads whose midpoint and the
  junctions that lie in its core. A cell where an owned road reaches too near its window's edge
  (a long road without junctions) is redone with twice the halo;
- the driver appends each cell's roads and junctions to the output in cell order as they come
  (at most ``2 x workers`` cells in flight), then writes the ``runs`` row: the scenes merged and
  the **gaps** (scenes that failed or whose outputs are missing, with their error); they never
  stop the merge. The file is written under a temporary name and renamed when complete.
- each finished cell is also saved (``batch/merge_cache.py``) so that a rerun after a crash or
  Ctrl-C merges only the cells not finished, or whose scenes changed since.

Memory: the driver holds the scene list with their footprints (small polygons, linear in the
number of scenes) and the results of the cells in flight; a cell holds the roads of its window.
Neither holds the archive's network.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roadprn.batch.manifest import MANIFEST_NAME, latest_scene_records, read_records
from roadprn.batch.merge_cache import CellCache, cell_key
from roadprn.errors import InputError
from roadprn.vectorize.params import VectorizeParams

log = logging.getLogger(__name__)

NETWORK_NAME = "roadprn_network.gpkg"
DEFAULT_CELL_M = 2000.0  # cell side: memory of a task follows (cell + 2 halo)², not the archive
DEFAULT_HALO_M = 150.0
MAX_HALO_DOUBLINGS = 8
FOOTPRINT_PX = 512  # footprints are traced on a read of at most this many pixels a side
FALLBACK_CRS = "EPSG:4326"


@dataclass(frozen=True)
class MergeScene:
    """A done scene as a cell task needs it (picklable, small)."""

    name: str  # the scene's output folder name
    roads: str  # its SCENE_roads.gpkg
    crs_wkt: str  # the roads layer's CRS
    footprint_wkb: bytes  # valid area in the work CRS
    bounds: tuple[float, float, float, float]  # of the footprint, work CRS


@dataclass(frozen=True)
class CellTask:
    index: int
    core: tuple[float, float, float, float]
    halo_m: float
    scenes: tuple[MergeScene, ...]
    work_crs: str
    dst_crs: str
    params: VectorizeParams
    unit_m: float


@dataclass
class CellResult:
    index: int
    roads: Any  # GeoDataFrame in dst CRS (no ids yet)
    junctions: Any
    unreliable: int
    halo_m: float
    seconds: float
    resumed: bool = False  # loaded from an interrupted merge's saved cells


@dataclass
class MergeSummary:
    path: Path
    dst_crs: str
    roads: int = 0
    junctions: int = 0
    length_m: float = 0.0
    scenes: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    cells: int = 0
    cells_redone: int = 0
    cells_resumed: int = 0  # loaded from an interrupted merge's saved cells
    max_halo_m: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "dst_crs": self.dst_crs, "roads": self.roads,
                "junctions": self.junctions, "road_length_m": round(self.length_m, 2),
                "scenes": self.scenes, "gaps": self.gaps, "cells": self.cells,
                "cells_redone": self.cells_redone,
                "cells_resumed": self.cells_resumed, "max_halo_m": self.max_halo_m,
                "seconds": round(self.seconds, 3)}


# ---- planning (driver) ------------------------------------------------------------------
def _scene_lists(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Done scenes' records with their roads and mask, and the gaps (anything else)."""
    done, gaps = [], []
    for name, record in sorted(latest_scene_records(run_dir / MANIFEST_NAME).items()):
        files = record.get("files") or {}
        gap = {"name": name, "scene": record.get("scene"), "status": record.get("status"),
               "error": record.get("error")}
        if record.get("status") not in ("done", "skipped"):
            gaps.append(gap)
            continue
        missing = [key for key in ("roads", "mask")
                   if key not in files or not (run_dir / files[key]["path"]).is_file()]
        if missing:
            gaps.append({**gap, "status": "missing",
                         "error": f"{' and '.join(missing)} output missing"})
            continue
        done.append(record)
    return done, gaps


def scene_footprint(mask_path: Path) -> tuple[Any, str, float]:
    """Valid area of a scene's mask (polygon in its CRS), the CRS (WKT) and its pixel size (m)."""
    import rasterio
    import shapely
    from rasterio import features

    from roadprn.raster.gdal_env import read_masks
    from roadprn.vectorize.scale import pixel_scale

    with rasterio.open(mask_path) as ds:
        scale = pixel_scale(ds.transform, ds.crs, (ds.height, ds.width), str(mask_path))
        factor = max(1, math.ceil(max(ds.height, ds.width) / FOOTPRINT_PX))
        shape = (max(1, ds.height // factor), max(1, ds.width // factor))
        valid = read_masks(ds, 1, out_shape=shape) > 0
        transform = ds.transform * ds.transform.scale(ds.width / shape[1], ds.height / shape[0])
        if valid.all():
            polygon = shapely.box(*ds.bounds)
        else:
            polygons = [shapely.geometry.shape(geom) for geom, value in
                        features.shapes(valid.astype(np.uint8), mask=valid, transform=transform)
                        if value]
            polygon = shapely.unary_union(polygons) if polygons else shapely.Polygon()
        return polygon, ds.crs.to_wkt(), scale.min_m


def choose_dst_crs(crss: list[str]) -> str:
    """The CRS most scenes share; EPSG:4326 when none has more scenes than every other."""
    from pyproj import CRS

    counts = collections.Counter(CRS.from_user_input(c).to_wkt() for c in crss)
    ranked = counts.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return CRS.from_user_input(FALLBACK_CRS).to_wkt()
    return ranked[0][0]


def _to_crs(geom: Any, src: str, dst: str) -> Any:
    """A polygon reprojected with its edges densified (straight edges bend in another CRS)."""
    import shapely
    from pyproj import CRS, Transformer

    if CRS.from_user_input(src) == CRS.from_user_input(dst):
        return geom
    minx, miny, maxx, maxy = geom.bounds
    dense = shapely.segmentize(geom, max(maxx - minx, maxy - miny, 1e-9) / 64)
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(dense, lambda xy: np.column_stack(
        transformer.transform(xy[:, 0], xy[:, 1])))


def _work_crs(dst_crs: str, footprints: list[Any], crss: list[str]) -> str:
    """The metric CRS the merge computes in: the output CRS when projected, else the local
    metric CRS (UTM) at the archive's centre."""
    from pyproj import CRS

    from roadprn.raster.geometry import metric_crs_at

    dst = CRS.from_user_input(dst_crs)
    if dst.is_projected:
        return dst.to_wkt()
    lonlat = [_to_crs(fp, crs, "EPSG:4326").centroid for fp, crs in zip(footprints, crss,
                                                                           strict=True)]
    lon = float(np.mean([p.x for p in lonlat]))
    lat = float(np.mean([p.y for p in lonlat]))
    return metric_crs_at(lon, lat).to_wkt()


def _vectorize_params(run_dir: Path) -> tuple[VectorizeParams, dict[str, str]]:
    """The vectoriser's parameters of the latest run (the rules the scenes were joined with)
    and every model hash the run used."""
    params = VectorizeParams()
    hashes: dict[str, str] = {}
    for record in read_records(run_dir / MANIFEST_NAME):
        if record.get("type") == "run" and record.get("event") == "start":
            section = (record.get("config") or {}).get("vectorize") or {}
            fields = VectorizeParams.model_fields
            params = VectorizeParams(**{k: v for k, v in section.items() if k in fields})
            hashes.update(record.get("model_hashes") or {})
    return params, hashes


def cell_grid(bounds: tuple[float, float, float, float],
              cell_m: float) -> list[tuple[float, float, float, float]]:
    """Square cores of ``cell_m`` covering ``bounds`` (row-major, top row first)."""
    minx, miny, maxx, maxy = bounds
    nx = max(1, math.ceil((maxx - minx) / cell_m))
    ny = max(1, math.ceil((maxy - miny) / cell_m))
    cells = []
    for j in range(ny):
        y1 = maxy - j * cell_m
        for i in range(nx):
            x0 = minx + i * cell_m
            # the last row/column is closed over the extent: a point on maxx / miny is owned
            cells.append((x0, y1 - cell_m if j < ny - 1 else miny - 1.0,
                          x0 + cell_m if i < nx - 1 else maxx + 1.0, y1 if j else maxy + 1.0))
    return cells


Box = tuple[float, float, float, float]


def _window(core: Box, halo: float) -> Box:
    return (core[0] - halo, core[1] - halo, core[2] + halo, core[3] + halo)


def _intersects(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


class ScenesByBounds:
    """Which scenes' bounds reach a window, from an R-tree: a 10 000-scene archive has as many
    cells, and scanning every scene for each cell (and each halo retry) is quadratic."""

    def __init__(self, bounds: Sequence[Box]) -> None:
        import shapely

        self._tree = shapely.STRtree(shapely.box(*np.array(bounds, dtype=float).T)
                                     if len(bounds) else [])

    def reaching(self, window: Box) -> list[int]:
        """Indices, in input order, of the bounds that intersect or touch ``window``."""
        import shapely

        return sorted(int(i) for i in self._tree.query(shapely.box(*window),
                                                       predicate="intersects"))


# ---- one cell (a task) --------------------------------------------------------------------
def merge_cell(task: CellTask) -> CellResult:
    """Read the window's roads from each scene, join them, keep what the core owns."""
    import geopandas as gpd
    import pyogrio
    import shapely
    from pyproj import CRS
    from rasterio.warp import transform_bounds

    from roadprn.outputs.atomic import ogr_path
    from roadprn.vectorize.attributes import lengths_m
    from roadprn.vectorize.merge import WindowScene, merge_window

    started = time.perf_counter()
    window = _window(task.core, task.halo_m)
    scenes = []
    for scene in task.scenes:
        if not _intersects(window, scene.bounds):
            continue
        bbox = transform_bounds(task.work_crs, scene.crs_wkt, *window, densify_pts=21)
        with ogr_path(scene.roads) as name:
            roads = pyogrio.read_dataframe(name, layer="roads", bbox=bbox,
                                           columns=["width_m", "prob_mean"])
        if roads.crs is None:
            roads = roads.set_crs(scene.crs_wkt)
        roads = roads.to_crs(task.work_crs)
        roads = roads[roads.geometry.notna() & ~roads.geometry.is_empty]
        scenes.append(WindowScene(
            name=scene.name, footprint=shapely.from_wkb(scene.footprint_wkb),
            lines=list(roads.geometry.values),
            width_m=roads["width_m"].to_numpy(float).tolist(),
            prob_mean=roads["prob_mean"].to_numpy(float).tolist()))
    out = merge_window(scenes, window, task.core, task.params, task.unit_m)
    work, dst = CRS.from_user_input(task.work_crs), CRS.from_user_input(task.dst_crs)
    lines = gpd.GeoSeries([shapely.LineString(xy) for xy in out.lines], crs=work).to_crs(dst)
    keep = (lines.is_valid & ~lines.is_empty).to_numpy()
    lines = lines[keep]
    roads_frame = gpd.GeoDataFrame(
        {"length_m": np.round(lengths_m(lines.values, dst), 3),
         "width_m": np.round(np.asarray(out.width_m, dtype=float)[keep], 3),
         "prob_mean": np.round(np.asarray(out.prob_mean, dtype=float)[keep], 4),
         "scene": np.asarray(out.scene, dtype=object)[keep]},
        geometry=lines.reset_index(drop=True), crs=dst)
    roads_frame = roads_frame.reset_index(drop=True)
    points = gpd.GeoSeries(shapely.points(out.junctions) if len(out.junctions) else [],
                           crs=work).to_crs(dst)
    junctions = gpd.GeoDataFrame({"degree": np.asarray(out.junction_degree, dtype=np.int64)},
                                 geometry=points.reset_index(drop=True), crs=dst)
    return CellResult(task.index, roads_frame, junctions, out.unreliable, task.halo_m,
                      time.perf_counter() - started)


# ---- the whole merge ----------------------------------------------------------------------
def merge_run(run_dir: str | Path, out: str | Path | None = None, dst_crs: str | None = None,
              *, workers: int | None = None, client: Any = None,
              scheduler: str | None = None,
              cell_m: float = DEFAULT_CELL_M, halo_m: float = DEFAULT_HALO_M,
              overwrite: bool = False, progress: bool = False,
              level: str = "vector") -> MergeSummary:
    """Join the done scenes of the batch run in ``run_dir`` into one road network file.

    ``out``: the file (default ``run_dir/roadprn_network.gpkg``, which is always replaced: it is
    the run's own); ``client``: a ``distributed.Client`` to run the cells on (else ``workers``
    threads); ``cell_m`` / ``halo_m``: the cells' side and first halo in metres; ``level``:
    ``vector`` joins the networks, ``probability`` blends the probability rasters and
    vectorises once (:mod:`roadprn.batch.merge_probability`, on local threads).
    """
    if level != "vector":
        from roadprn.batch.merge_probability import merge_level

        return merge_level(level, run_dir, out, dst_crs, workers=workers,
                           overwrite=overwrite, progress=progress)
    from pyproj import CRS

    from roadprn.outputs.atomic import atomic_output
    from roadprn.runtime.parallel import local_thread_count
    from roadprn.runtime.progress import progress_bar
    from roadprn.vectorize.gpkg import append_layer, run_record, write_provenance

    started = time.perf_counter()
    run_dir = Path(run_dir)
    manifest = run_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise InputError(f"{run_dir} is not a batch run folder (no {MANIFEST_NAME})")
    final = Path(out) if out is not None else run_dir / NETWORK_NAME
    overwrite = overwrite or out is None
    if final.exists() and not overwrite:
        from roadprn.errors import OutputError

        raise OutputError(f"{final} exists; pass --overwrite to replace it")
    if final.suffix.lower() != ".gpkg":
        from roadprn.errors import ConfigError

        raise ConfigError(f"the merged network is a GeoPackage: {final} must end in .gpkg")
    done, gaps = _scene_lists(run_dir)
    params, model_hashes = _vectorize_params(run_dir)
    threads = local_thread_count(workers)

    def header(record: dict[str, Any]) -> tuple[Any, str, float] | Exception:
        try:
            return scene_footprint(run_dir / record["files"]["mask"]["path"])
        except Exception as exc:  # noqa: BLE001 - an unreadable scene is a gap, not a stop
            return exc

    with ThreadPoolExecutor(min(8, max(1, len(done))), "roadprn-merge-plan") as pool:
        headers = list(pool.map(header, done))
    usable: list[tuple[dict[str, Any], tuple[Any, str, float]]] = []
    for record, head in zip(done, headers, strict=True):
        if isinstance(head, Exception) or head[0].is_empty:
            reason = f"footprint unreadable: {head}" if isinstance(head, Exception) \
                else "no valid pixels"
            gaps.append({"name": record["name"], "scene": record.get("scene"),
                         "status": "missing", "error": reason})
        else:
            usable.append((record, head))
    chosen = (CRS.from_user_input(dst_crs).to_wkt() if dst_crs
              else choose_dst_crs([h[1] for _, h in usable]))
    summary = MergeSummary(path=final, dst_crs=_crs_name(chosen), gaps=gaps,
                           scenes=len(usable))
    work = (_work_crs(chosen, [h[0] for _, h in usable], [h[1] for _, h in usable])
            if usable else chosen)
    scenes = []
    for record, (footprint, crs_wkt, _) in usable:
        fp = _to_crs(footprint, crs_wkt, work)
        scenes.append(MergeScene(record["name"], str(run_dir / record["files"]["roads"]["path"]),
                                 crs_wkt, fp.wkb, _box(fp.bounds)))
    unit_m = min((h[2] for _, h in usable), default=1.0)
    cores = cell_grid(_union_bounds([s.bounds for s in scenes]), cell_m) if scenes else []
    summary.cells = len(cores)

    scene_index = ScenesByBounds([s.bounds for s in scenes])

    def task_for(index: int, halo: float) -> CellTask:
        reaching = scene_index.reaching(_window(cores[index], halo))
        return CellTask(index, cores[index], halo, tuple(scenes[i] for i in reaching),
                        work, chosen, params, unit_m)

    cache = CellCache(run_dir)
    tasks = [task_for(i, halo_m) for i in range(len(cores))]
    keys = [cell_key(task) for task in tasks]
    with atomic_output(final, overwrite) as tmp, \
            _executor(client, threads) as compute:

        def submit(task: CellTask) -> Any:
            """A saved cell comes back as a finished future; the rest are merged."""
            saved = (cache.load(keys[task.index], task.index,
                                lambda halo: cell_key(task_for(task.index, halo)))
                     if task.halo_m == halo_m else None)
            if saved is None:
                return compute(task)
            summary.cells_resumed += 1
            done_future: Future[CellResult] = Future()
            done_future.set_result(saved)
            return done_future

        bar = progress_bar(total=len(cores), unit="cell", desc="merge", enabled=progress,
                           leave=False)
        ids = {"roads": 0, "junctions": 0}
        wrote = {"roads": False, "junctions": False}
        for result in _ordered(submit, tasks,
                               limit=2 * threads if client is None else 4 * threads,
                               retry=lambda r: (task_for(r.index, r.halo_m * 2)
                                                if r.unreliable and r.halo_m < halo_m * 2 **
                                                MAX_HALO_DOUBLINGS else None)):
            if not result.resumed:  # merged now: keep it for a resume
                cache.save(keys[result.index], result,
                           cell_key(task_for(result.index, result.halo_m)))
            if result.unreliable:
                log.warning("cell %d: %d road(s) still reach its window's edge at a halo of "
                            "%.0f m", result.index, result.unreliable, result.halo_m)
            summary.max_halo_m = max(summary.max_halo_m, result.halo_m)
            summary.cells_redone += int(result.halo_m > halo_m)
            for layer, frame in (("roads", result.roads), ("junctions", result.junctions)):
                if len(frame) == 0 and wrote[layer]:
                    continue
                frame.insert(0, "id", np.arange(ids[layer] + 1, ids[layer] + len(frame) + 1,
                                                dtype=np.int64))
                append_layer(frame, tmp, layer, append=wrote[layer])
                wrote[layer] = True
                ids[layer] += len(frame)
            summary.roads, summary.junctions = ids["roads"], ids["junctions"]
            summary.length_m += float(result.roads["length_m"].sum())
            bar.update(1)
        bar.close()
        for layer in ("roads", "junctions"):  # an archive without any road still has both
            if not wrote[layer]:
                append_layer(_empty_frame(layer, chosen), tmp, layer, append=False)
        summary.seconds = time.perf_counter() - started
        config = {"merge": {"dst_crs": chosen, "work_crs": work, "cell_m": cell_m,
                            "halo_m": halo_m, "max_halo_m": summary.max_halo_m,
                            "cells": summary.cells, "unit_m": unit_m},
                  "vectorize": params.model_dump()}
        run = run_record(manifest, config, model_hashes, command="merge")
        run["scenes_json"] = json.dumps([s.name for s in scenes])
        run["gaps_json"] = json.dumps(gaps, default=str)
        write_provenance(tmp, run)
    cache.clear()  # the merged file is complete: its cells are no longer needed
    return summary


def _crs_name(wkt: str) -> str:
    from pyproj import CRS

    crs = CRS.from_user_input(wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def _box(values: Any) -> Box:
    x0, y0, x1, y1 = (float(v) for v in values)
    return (x0, y0, x1, y1)


def _union_bounds(bounds: list[Box]) -> Box:
    arr = np.array(bounds)
    return _box((arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max()))


def _empty_frame(layer: str, crs: str) -> Any:
    import geopandas as gpd

    columns: dict[str, Any] = ({"id": np.zeros(0, np.int64), "length_m": np.zeros(0),
                                "width_m": np.zeros(0), "prob_mean": np.zeros(0),
                                "scene": np.array([], dtype=object)} if layer == "roads"
                               else {"id": np.zeros(0, np.int64),
                                     "degree": np.zeros(0, np.int64)})
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


class _executor:
    """``submit(task) -> future``: Dask futures on ``client``, else a thread pool."""

    def __init__(self, client: Any, threads: int) -> None:
        self.client, self.threads = client, threads
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Callable[[CellTask], Any]:
        if self.client is not None:
            return lambda task: self.client.submit(
                merge_cell, task, pure=False, key=f"roadprn-merge-cell-{task.index}-"
                                                  f"{int(task.halo_m)}-{time.time_ns()}")
        self.pool = ThreadPoolExecutor(self.threads, "roadprn-merge")
        return lambda task: self.pool.submit(merge_cell, task)  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _ordered(submit: Callable[[CellTask], Any], tasks: list[CellTask], limit: int,
             retry: Callable[[CellResult], CellTask | None]) -> Iterator[CellResult]:
    """Results in task order, at most ``limit`` tasks in flight; ``retry`` may ask for a cell
    again (a larger halo) before its result is final."""
    pending = collections.deque(tasks)
    flight: collections.deque[Any] = collections.deque()
    while pending or flight:
        while pending and len(flight) < max(1, limit):
            flight.append(submit(pending.popleft()))
        result = flight.popleft().result()
        again = retry(result)
        while again is not None:
            result = submit(again).result()
            again = retry(result)
        yield result
