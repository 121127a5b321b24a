"""Vectoriser parameters: every length in metres and every area in m², never in pixels.

They are converted to pixels with the scene's true resolution (see :mod:`.scale`), so the same
config works for a 0.3 m and a 1 m scene, and on EPSG:4326 where pixels are not square in metres.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VectorizeParams(BaseModel):
    """Thresholds of the mask → road network stage (mirrored under ``vectorize:`` in the config)."""

    # bounds keep a typo (or ``inf``) from running for hours or allocating a scene-sized buffer
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    threshold: float = Field(0.5, gt=0.0, le=1.0,
                             description="`roadprn vectorize` on a probability raster: road "
                                         "where probability > threshold (uint8 p = v/255).")
    min_component_area_m2: float = Field(
        40.0, ge=0.0, le=1e6,
        description="Road blobs smaller than this are noise and removed (m²).")
    min_hole_area_m2: float = Field(
        40.0, ge=0.0, le=1e6,
        description="Holes in roads smaller than this are filled, avoiding skeleton loops around "
                    "specks (m²).")
    # 15 m, not 10: swept on the real labelled images (docs/model-card.md), more APLS and
    # precision at the same recall
    spur_length_m: float = Field(
        15.0, ge=0.0, le=1000.0,
        description="Dead-end branches shorter than this are skeleton artefacts and pruned "
                    "(repeated until none is left).")
    junction_merge_radius_m: float = Field(
        6.0, ge=0.0, le=500.0,
        description="Junctions closer than this are one junction (the skeleton splits wide "
                    "crossings into several).")
    simplify_tolerance_m: float = Field(
        1.0, ge=0.0, le=100.0, description="Topology-preserving line simplification tolerance "
                                           "(m).")
    bridge_max_gap_m: float = Field(
        12.0, ge=0.0, le=1000.0,
        description="Dead ends facing each other across a gap up to this long are joined (0 "
                    "disables bridging).")
    bridge_max_angle_deg: float = Field(
        30.0, ge=0.0, le=90.0, description="Both dead ends must point at each other within this "
                                           "angle (degrees) to be bridged.")
    min_network_length_m: float = Field(
        10.0, ge=0.0, le=1e5,
        description="Isolated networks shorter than this in total are dropped.")
    tile_size_px: int = Field(1024, ge=64, le=16384,
                              description="Core tile size (pixels) of the tiled vectoriser; "
                                          "memory is set by this, not the scene.")
    halo_m: float = Field(
        25.0, gt=0.0, le=1000.0,
        description="Context read around each tile; must exceed half the widest road's width "
                    "(and small blobs) so skeletons agree at seams.")
    min_halo_px: int = Field(16, ge=2, le=4096, description="Lower bound of the halo in pixels.")
