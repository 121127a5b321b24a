"""PRN training options, torch-free so that the config and the CLI can load them cheaply."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from roadprn.prn.fusion import DEFAULT_FUSION, FusionRule
from roadprn.train.options import TrainLoopOptions, validated

# options that define the network or what it learns from; a resumed run cannot change them
PRN_FROZEN_ON_RESUME = ("variant", "grid", "map_size", "arch_kwargs")


class TrainPRNOptions(TrainLoopOptions):
    """Everything that defines a PRN training run (stored in the state file and checkpoint).

    Defaults differ from base training where PRN differs: Adam at 8e-4 with batch 1 as in the
    paper, 30 epochs, and no early stopping (validation IoU over few maps is noisy between
    epochs; the shipped PRN's best epoch was 24 of 30).
    """

    base_model: str = Field("default", description="The base model whose probability maps PRN "
                                                   "refines: 'default' or a checkpoint path.")
    variant: Literal["fast", "paper"] = Field("fast", description="fast: pooled input, ~0.1x "
                                                                  "base cost; paper: as published.")
    grid: int = Field(8, ge=0, description="Patch cells per side (8 = P64, 2 = P4, 0 = P0: global "
                                           "branch only).")
    map_size: int = Field(512, ge=16, le=8192, description="PRN window side in pixels (training "
                                                           "maps and extract windows).")
    arch_kwargs: dict[str, Any] = Field({}, description="Other PatchRefineNet architecture "
                                                        "fields (width, recurrence, ...).")
    epochs: int = Field(30, ge=1, description="Epochs to train (a resumed run continues to this).")
    lr: float = Field(8e-4, gt=0, description="Adam learning rate.")
    batch_size: int = Field(1, ge=1, description="Maps per training step.")
    fusion: FusionRule = Field(DEFAULT_FUSION, description="Fusion rule scored on the validation "
                                                           "maps to choose the epoch (use the "
                                                           "rule extract will use).")
    augment: bool = Field(True, description="Flips and 90-degree rotations of map, pseudo-label "
                                            "and truth together.")
    patience: int = Field(0, ge=0, description="Stop after this many epochs without validation "
                                               "improvement (0: never).")
    min_delta: float = Field(0.0, ge=0, description="Smallest validation gain that counts as an "
                                                    "improvement.")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="Share of scenes (or maps, with one "
                                                             "scene) held out to choose the epoch.")
    road_width_m: float = Field(4.0, gt=0, description="Full road width for centreline labels, "
                                                       "in metres.")

    def selection_fusion(self) -> str:
        """The rule that scores validation: a P0 model has only its global branch."""
        return self.fusion if self.grid > 0 else "global"


def make_prn_options(**values: Any) -> TrainPRNOptions:
    """PRN options from keyword values; validation errors as one-line ConfigErrors."""
    return validated(TrainPRNOptions, values, "PRN training")
