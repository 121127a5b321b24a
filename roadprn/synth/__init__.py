"""Synthetic georeferenced scenes with known roads, for tests, benchmarks and training.

Roads are built as vectors first, then the image is rendered window by window from fields
that depend only on absolute position and the seed: deterministic, and memory flat with size.
"""

from roadprn.synth.grid import SynthGrid, make_grid
from roadprn.synth.network import SynthNetwork, build_network
from roadprn.synth.scene import SynthResult, generate_scene, output_paths, roads_frame

__all__ = ["SynthGrid", "make_grid", "SynthNetwork", "build_network", "SynthResult",
           "generate_scene", "output_paths", "roads_frame"]
