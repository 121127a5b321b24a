"""One call from a mask/probability raster on disk to written road-network file(s).

Shared by ``roadprn vectorize`` and the last stage of ``extract`` so both write the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roadprn.outputs.atomic import check_writable
from roadprn.vectorize.attributes import network_frames
from roadprn.vectorize.gpkg import output_paths, run_record, write_network
from roadprn.vectorize.params import VectorizeParams
from roadprn.vectorize.source import RoadSource, open_source
from roadprn.vectorize.tiled import vectorize_source


@dataclass(frozen=True)
class VectorizeResult:
    files: list[Path]
    roads: int
    junctions: int
    length_m: float


def vectorize_file(raster: str | Path, out_dir: str | Path, params: VectorizeParams,
                   fmt: str = "gpkg", dst_crs: str | None = None, overwrite: bool = False,
                   workers: int | None = None, scheduler: str | None = None,
                   config: Mapping[str, Any] | None = None,
                   model_hashes: Mapping[str, str] | None = None,
                   command: str = "vectorize", progress: bool = False) -> VectorizeResult:
    """Vectorise ``raster`` into ``out_dir``; ``config``/``model_hashes`` go to provenance."""
    source = open_source(raster, params.threshold)
    return vectorize_to_files(source, raster, out_dir, params, fmt=fmt, dst_crs=dst_crs,
                              overwrite=overwrite, workers=workers, scheduler=scheduler,
                              config={**dict(config or {}), "input_kind": source.kind},
                              model_hashes=model_hashes, command=command, progress=progress)


def vectorize_to_files(source: RoadSource, input_path: str | Path, out_dir: str | Path,
                       params: VectorizeParams, *, fmt: str = "gpkg", dst_crs: str | None = None,
                       overwrite: bool = False, workers: int | None = None,
                       scheduler: str | None = None,
                       config: Mapping[str, Any] | None = None,
                       model_hashes: Mapping[str, str] | None = None,
                       command: str = "vectorize", progress: bool = False) -> VectorizeResult:
    """Vectorise any road source and write the network files (``input_path`` for provenance)."""
    for final in output_paths(out_dir, source.name, fmt):
        check_writable(final, overwrite)  # fail before the work, not after
    network = vectorize_source(source, params, workers=workers, scheduler=scheduler,
                               progress=progress)
    roads, junctions = network_frames(network, source.transform, source.crs, source.name,
                                      dst_crs)
    provenance = {**dict(config or {}), "vectorize": params.model_dump(),
                  "format": fmt, "dst_crs": dst_crs}
    run = run_record(input_path, provenance, model_hashes, command=command)
    files = write_network(roads, junctions, out_dir, source.name, run, fmt, overwrite)
    return VectorizeResult(files=files, roads=len(roads), junctions=len(junctions),
                           length_m=float(roads["length_m"].sum()))
