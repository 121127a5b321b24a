"""Road mask or probability raster → clean road network (LineStrings + junctions).

Pipeline: cleanup (m²) → skeleton (scikit-image) → paths (numpy + scipy, identical to skan's)
per tile with a halo, pieces joined across seams → spur pruning, junction merging, gap bridging
(metres) → topology-preserving simplification → GeoDataFrames with attributes.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the submodule each lives in. Imported lazily so that ``roadprn.config``
# (which needs only VectorizeParams) does not pull in geopandas and scipy at start-up.
_EXPORTS = {
    "ArraySource": "source", "FileSource": "source", "MaskProbabilitySource": "source",
    "open_source": "source", "PixelScale": "scale", "pixel_scale": "scale",
    "RoadNetwork": "graph", "VectorizeParams": "params", "VectorizeResult": "run",
    "vectorize_file": "run", "vectorize_to_files": "run", "network_frames": "attributes",
    "vectorize_source": "tiled", "vectorize_whole": "tiled",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"roadprn.vectorize.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'roadprn.vectorize' has no attribute {name!r}")
