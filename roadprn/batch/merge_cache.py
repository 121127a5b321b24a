"""Finished cells of an archive merge, kept on disk so that an interrupted merge resumes.

``roadprn merge`` writes its network cell by cell into a temporary file that only becomes
``roadprn_network.gpkg`` when every cell is in. A merge of a large archive can take long, so
each cell's final result (after any halo enlargement) is also saved in
``RUN_DIR/.roadprn-merge-cells/``, under a key that hashes everything the cell's result depends
on: its core and first halo, the CRSs, the vectoriser's parameters, and for every scene that
reaches it the scene's name, footprint and roads file (size and modification time). A rerun
after a crash or Ctrl-C loads the cells whose key is unchanged and merges only the rest; a
scene redone by a resumed batch changes the key of exactly the cells it reaches. The folder is
removed when the merged file is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roadprn.batch.merge import CellResult, CellTask

CACHE_DIR_NAME = ".roadprn-merge-cells"
CACHE_FORMAT = 1


def cell_key(task: CellTask) -> str:
    """Hash of what the cell's merged roads depend on (not of its index: a cell that moved in
    the grid order but covers the same ground with the same scenes is the same cell)."""
    scenes = []
    for scene in task.scenes:
        try:
            stat = os.stat(scene.roads)
            stamp: list[int] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            stamp = []
        scenes.append([scene.name, scene.roads, stamp, scene.crs_wkt,
                       hashlib.sha256(scene.footprint_wkb).hexdigest()])
    payload = {"format": CACHE_FORMAT, "core": list(task.core), "halo_m": task.halo_m,
               "work_crs": task.work_crs, "dst_crs": task.dst_crs, "unit_m": task.unit_m,
               "params": task.params.model_dump(mode="json"), "scenes": scenes}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class CellCache:
    """Saved cell results under ``run_dir/.roadprn-merge-cells`` (see the module docstring)."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(run_dir) / CACHE_DIR_NAME

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"cell-{key}.gpkg", self.folder / f"cell-{key}.json"

    def load(self, key: str, index: int,
             key_at_halo: Callable[[float], str]) -> CellResult | None:
        """The saved result of the cell with ``key`` (as cell ``index`` of this plan), or None
        when there is none, it cannot be read, or it was finished with a larger halo whose
        scenes changed since (``key_at_halo(halo)``: the cell's key at that halo now)."""
        import pyogrio

        from roadprn.batch.merge import CellResult
        from roadprn.outputs.atomic import ogr_path

        data, meta = self._paths(key)
        if not (data.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text())
            with ogr_path(data) as name:
                roads = pyogrio.read_dataframe(name, layer="roads")
                junctions = pyogrio.read_dataframe(name, layer="junctions")
            if len(roads) != info["roads"] or len(junctions) != info["junctions"]:
                return None
            if info["final_key"] != key_at_halo(float(info["halo_m"])):
                return None
            return CellResult(index, roads, junctions, int(info["unreliable"]),
                              float(info["halo_m"]), 0.0, resumed=True)
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed, never trusted
            return None

    def save(self, key: str, result: CellResult, final_key: str) -> None:
        """Keep a cell's final result under its first task's ``key``; ``final_key`` is the key
        of the task that gave it (a larger halo reaches more scenes). The JSON sidecar, written
        last and renamed into place, marks the entry complete."""
        from roadprn.vectorize.gpkg import append_layer

        self.folder.mkdir(parents=True, exist_ok=True)
        data, meta = self._paths(key)
        tmp = data.with_name(f".{data.name}.tmp.gpkg")
        tmp.unlink(missing_ok=True)
        for layer, frame in (("roads", result.roads), ("junctions", result.junctions)):
            append_layer(_without_id(frame), tmp, layer, append=layer != "roads")
        os.replace(tmp, data)
        info = {"roads": len(result.roads), "junctions": len(result.junctions),
                "unreliable": result.unreliable, "halo_m": result.halo_m,
                "final_key": final_key}
        meta_tmp = meta.with_name(f".{meta.name}.tmp")
        meta_tmp.write_text(json.dumps(info))
        os.replace(meta_tmp, meta)

    def clear(self) -> None:
        """Remove every saved cell (after the merged file is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _without_id(frame: Any) -> Any:
    return frame.drop(columns=["id"]) if "id" in frame.columns else frame
