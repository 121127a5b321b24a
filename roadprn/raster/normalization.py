"""How raw band values become model inputs: the spec a config, a checkpoint and training share.

A leaf module (pydantic only), so that the config, checkpoints and training options can all
hold it without importing each other or numpy; :mod:`roadprn.raster.normalize` applies it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class NormalizationConfig(BaseModel):
    """How raw band values become model inputs in [0, 1]."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    mode: Literal["auto", "fixed", "percentile", "dtype"] = Field(
        "auto", description="How raw values become [0, 1] model inputs. auto: the model "
                            "checkpoint's own normalisation if it states one, else percentile; "
                            "fixed: value * scale + offset per band, clipped to [0, 1]; "
                            "percentile: per-band stretch between the low/high percentiles of "
                            "valid pixels, estimated from overviews or a decimated sample (never "
                            "a full read); dtype: divide by the range of the band's data type "
                            "(uint8: 0..255, uint16: 0..65535).")
    scale: list[float] | None = Field(None, description="mode fixed: multiplier (value * scale + "
                                                        "offset), one value for all bands or one "
                                                        "per selected band.")
    offset: list[float] | None = Field(None, description="mode fixed: added after scaling, one "
                                                         "value for all bands or one per selected "
                                                         "band.")
    percentiles: tuple[float, float] = Field((2.0, 98.0), description="mode percentile: low and "
                                                                      "high percentile per band "
                                                                      "(0..100).")
    sample_size: int = Field(1024, ge=16, le=16384, description="mode percentile: long side "
                                                                "(pixels) of the decimated "
                                                                "sample read used to estimate "
                                                                "percentiles.")

    @model_validator(mode="after")
    def _check(self) -> NormalizationConfig:
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        if self.mode == "fixed" and self.scale is None:
            raise ValueError("mode 'fixed' needs 'scale' (and optionally 'offset') per band")
        if (self.scale is not None and self.offset is not None
                and len(self.scale) != len(self.offset)):
            raise ValueError("'scale' and 'offset' must list one value per band")
        return self


class TrainingNormalizationConfig(NormalizationConfig):
    """Training stretches each scene by its percentiles unless told otherwise (a model
    trained on one sensor's fixed range would not transfer)."""

    mode: Literal["auto", "fixed", "percentile", "dtype"] = Field(
        "percentile", description="Per-scene percentile stretch (percentile), or the data "
                                  "type's full range (dtype); fixed: scale/offset; auto is "
                                  "percentile.")
