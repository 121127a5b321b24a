"""Road mask or probability raster → clean road network (LineStrings + junctions).

Pipeline: cleanup (m²) → skeleton (scikit-image) → graph (skan) per tile with a halo, pieces
joined across seams → spur pruning, junction merging, gap bridging (metres) → topology-preserving
simplification → GeoDataFrames with attributes.
"""

from __future__ import annotations

from roadprn.vectorize.attributes import network_frames
from roadprn.vectorize.graph import RoadNetwork
from roadprn.vectorize.params import VectorizeParams
from roadprn.vectorize.run import VectorizeResult, vectorize_file
from roadprn.vectorize.scale import PixelScale, pixel_scale
from roadprn.vectorize.source import ArraySource, FileSource, open_source
from roadprn.vectorize.tiled import vectorize_source, vectorize_whole

__all__ = [
    "ArraySource", "FileSource", "PixelScale", "RoadNetwork", "VectorizeParams",
    "VectorizeResult", "network_frames", "open_source", "pixel_scale", "vectorize_file",
    "vectorize_source", "vectorize_whole",
]
