"""An interrupted ``roadprn merge`` resumes: finished cells are loaded, not merged again.

The run folder is made by hand (four overlapping scenes whose networks are cuts of one street
grid, all-valid masks, a manifest), so no model runs; the merge itself is the real one.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from roadprn.batch import merge as merge_module
from roadprn.batch.merge import merge_run
from roadprn.batch.merge_cache import CACHE_DIR_NAME

ORIGIN = (700000.0, 5000000.0)
RES_M = 0.5
SIDE_PX = 400
OVERLAP_PX = 40
CELL_M = 100.0
HALO_M = 30.0  # small, so that cells far from a scene do not reach it (larger halos retried)
REAL_MERGE_CELL = merge_module.merge_cell


def make_run(run_dir: Path) -> list[str]:
    """2 x 2 overlapping scenes, each holding its cut of one street grid."""
    extent = (2 * SIDE_PX - OVERLAP_PX) * RES_M
    streets = [shapely.LineString([(ORIGIN[0], ORIGIN[1] - y), (ORIGIN[0] + extent,
                                                                ORIGIN[1] - y)])
               for y in (45.0, 160.0, 290.0)]
    streets += [shapely.LineString([(ORIGIN[0] + x, ORIGIN[1]),
                                    (ORIGIN[0] + x, ORIGIN[1] - extent)])
                for x in (60.0, 185.0, 330.0)]
    step = (SIDE_PX - OVERLAP_PX) * RES_M
    records, names = [], []
    for i in range(2):
        for j in range(2):
            name = f"s{i}{j}"
            names.append(name)
            folder = run_dir / name
            folder.mkdir(parents=True)
            x0, y1 = ORIGIN[0] + j * step, ORIGIN[1] - i * step
            box = shapely.box(x0, y1 - SIDE_PX * RES_M, x0 + SIDE_PX * RES_M, y1)
            lines = [shapely.intersection(s, box) for s in streets]
            lines = [g for g in lines if not g.is_empty and g.length > 0]
            frame = gpd.GeoDataFrame({"width_m": np.full(len(lines), 6.0),
                                      "prob_mean": np.full(len(lines), 0.9)},
                                     geometry=lines, crs="EPSG:32631")
            pyogrio.write_dataframe(frame, folder / f"{name}_roads.gpkg", layer="roads")
            profile = {"driver": "GTiff", "width": SIDE_PX, "height": SIDE_PX, "count": 1,
                       "dtype": "uint8", "crs": "EPSG:32631", "nodata": 255,
                       "transform": from_origin(x0, y1, RES_M, RES_M)}
            with rasterio.open(folder / f"{name}_mask.tif", "w", **profile) as dst:
                dst.write(np.zeros((SIDE_PX, SIDE_PX), np.uint8), 1)
            records.append({"type": "scene", "status": "done", "name": name, "scene": name,
                            "files": {kind: {"path": f"{name}/{name}_{kind}.{ext}", "sha256": "0",
                                             "bytes": 0}
                                      for kind, ext in (("roads", "gpkg"), ("mask", "tif"))}})
    (run_dir / "roadprn_manifest.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    return names


def network(path: Path) -> tuple[list[str], int]:
    roads = pyogrio.read_dataframe(path, layer="roads")
    junctions = pyogrio.read_dataframe(path, layer="junctions")
    return sorted(shapely.to_wkt(g, rounding_precision=6) for g in roads.geometry), \
        len(junctions)


class Interrupted(Exception):
    """Stands for a crash or Ctrl-C in the middle of a merge (an exception out of a cell)."""


class CountingCells:
    """Wraps ``merge_cell``: records which cells were merged (index, scenes reaching it), and
    raises (an interruption) when cell ``fail_on`` is merged."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.lock = threading.Lock()
        self.merged: list[tuple[int, tuple[str, ...]]] = []

    def __call__(self, task: merge_module.CellTask) -> merge_module.CellResult:
        with self.lock:
            self.merged.append((task.index, tuple(s.name for s in task.scenes)))
            if task.index == self.fail_on:
                raise Interrupted
        return REAL_MERGE_CELL(task)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    make_run(tmp_path / "run")
    return tmp_path / "run"


def test_interrupted_merge_resumes_with_identical_output(run_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    reference = merge_run(run_dir, tmp_path / "reference.gpkg", workers=1, cell_m=CELL_M)
    assert reference.cells >= 12 and reference.cells_resumed == 0 and reference.roads > 0
    assert not (run_dir / CACHE_DIR_NAME).exists()

    fail_on = reference.cells // 2
    monkeypatch.setattr(merge_module, "merge_cell", CountingCells(fail_on=fail_on))
    with pytest.raises(Interrupted):
        merge_run(run_dir, workers=1, cell_m=CELL_M)
    final = run_dir / merge_module.NETWORK_NAME
    assert not final.exists(), "an interrupted merge leaves no network file"
    saved = sorted((run_dir / CACHE_DIR_NAME).glob("cell-*.json"))
    assert len(saved) == fail_on  # cells 0 .. fail_on - 1 were written before it

    counting = CountingCells()
    monkeypatch.setattr(merge_module, "merge_cell", counting)
    resumed = merge_run(run_dir, workers=2, cell_m=CELL_M)
    assert resumed.cells_resumed == len(saved)
    assert {index for index, _ in counting.merged} == set(range(fail_on, reference.cells))
    assert network(final) == network(tmp_path / "reference.gpkg")
    assert (resumed.roads, resumed.junctions) == (reference.roads, reference.junctions)
    assert resumed.length_m == pytest.approx(reference.length_m, abs=1e-6)
    assert not (run_dir / CACHE_DIR_NAME).exists(), "the saved cells go once the file is done"


def test_a_changed_scene_invalidates_exactly_the_cells_it_reaches(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = CountingCells()
    monkeypatch.setattr(merge_module, "merge_cell", first)
    cells = merge_run(run_dir, run_dir / "count.gpkg", workers=1, cell_m=CELL_M,
                      halo_m=HALO_M).cells
    monkeypatch.setattr(merge_module, "merge_cell", CountingCells(fail_on=cells - 1))
    with pytest.raises(Interrupted):  # all cells but the last are saved
        merge_run(run_dir, workers=1, cell_m=CELL_M, halo_m=HALO_M)
    roads = run_dir / "s00" / "s00_roads.gpkg"  # a resumed batch redid scene s00
    stat = roads.stat()
    os.utime(roads, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    again = CountingCells()
    monkeypatch.setattr(merge_module, "merge_cell", again)
    summary = merge_run(run_dir, workers=1, cell_m=CELL_M, halo_m=HALO_M)
    reaching = {index for index, names in first.merged if "s00" in names}
    last = cells - 1
    assert {index for index, _ in again.merged} == reaching | {last}
    assert summary.cells_resumed == cells - len(reaching | {last})
    assert 0 < len(reaching) < cells
