"""Training options as typed models, shared by ``train base`` and ``train prn``.

Torch-free (pydantic only, heavier imports inside methods) so that the config module and the CLI
can load them without torch. An options object defines a run: it is stored in the training
state file and the checkpoint, and a resumed run is checked against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roadprn.errors import ConfigError
from roadprn.raster.normalization import TrainingNormalizationConfig

if TYPE_CHECKING:
    from roadprn.train.augment import Augmentation
    from roadprn.train.data import LabelSpec

OptionsT = TypeVar("OptionsT", bound=BaseModel)

#: the architecture of the shipped default model (``roadprn/data/models/default_base.pt``, see
#: docs/model-card.md): what ``train base`` trains unless told (a test keeps them equal)
DEFAULT_ARCH = "effnet_lite0_linknet"


class TrainLoopOptions(BaseModel):
    """What every training loop understands: epochs, stopping rules, seed, device."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(20, ge=1, description="Epochs to train (a resumed run continues to this).")
    patience: int = Field(5, ge=0, description="Stop after this many epochs without validation "
                                               "improvement (0: never).")
    min_delta: float = Field(1e-3, ge=0, description="Smallest validation gain that counts as an "
                                                     "improvement.")
    max_minutes: float | None = Field(None, gt=0, description="Stop after the epoch that ends "
                                                              "past this time.")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="Share of scenes held out for "
                                                             "validation.")
    seed: int = Field(0, description="Seed of weights, sampling and augmentation.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    threads: int | None = Field(None, ge=1, description="Torch CPU threads.")
    road_width_m: float | None = Field(4.0, gt=0, description="Full road width for centreline "
                                                              "labels, in metres.")
    mask_threshold: float | None = Field(None, description="Mask raster labels: road where value "
                                                           "> this (default: from the data).")
    labels_crs: str | None = Field(None, description="Override a missing/wrong CRS of vector "
                                                     "labels.")
    notes: str = Field("", description="Free text recorded in the checkpoint.")


class TrainBaseOptions(TrainLoopOptions):
    """Everything that defines a base-model training run."""

    arch: str = Field(DEFAULT_ARCH, description="Architecture (the shipped default model's "
                                                "effnet_lite0_linknet, effnet_lite1/2_linknet, "
                                                "dlinknet34, dlinknet18, tiny_unet, smp.Unet, "
                                                "...).")
    arch_kwargs: dict[str, Any] = Field({}, description="Architecture arguments, e.g. "
                                                        "{\"width\": 32}.")
    pretrained: bool | None = Field(
        None, description="Start the encoder from ImageNet weights (effnet_lite*_linknet; "
                          "training only): null = when the roadprn[pretrained] packages are "
                          "installed (else a random start, said in one line), true = required, "
                          "false = never.")
    bands: list[int] = Field([1, 2, 3], min_length=1, description="1-based scene bands to read.")
    normalization: TrainingNormalizationConfig = Field(
        TrainingNormalizationConfig(), description="How scene bands become model inputs.")
    gsd_m: float = Field(0.5, gt=0, description="Resolution the model works at (m/px); chips "
                                                "are resampled to it.")
    chip_size: int = Field(256, ge=32, le=4096, description="Training chip side in pixels.")
    tile_size: int = Field(768, ge=32, le=8192, description="Tile size recorded for inference "
                                                            "(unless given: the architecture's, "
                                                            "effnet_lite*: 768, others 512).")
    halo: int = Field(64, ge=0, description="Tile halo recorded for inference (unless given: the "
                                            "architecture's, effnet_lite*: 64, others 32).")
    batch_size: int = Field(8, ge=1, description="Chips per training step.")
    steps_per_epoch: int = Field(100, ge=1, description="Training steps per epoch.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW rate.")
    encoder_lr_scale: float = Field(
        1.0, gt=0, le=1, description="Rate of the encoder's weights relative to lr (e.g. 0.1 "
                                     "keeps an ImageNet encoder near its pretrained features "
                                     "while the decoder learns at the full rate); models "
                                     "without an `encoder` module ignore it.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    ema_decay: float | None = Field(
        None, ge=0.5, lt=1, description="Validate and save an exponential moving average of "
                                        "the weights, updated every step with this decay (e.g. "
                                        "0.99: about the last 100 steps), instead of the last "
                                        "step's weights; null: off.")
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "cosine", description="Learning-rate schedule.")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Share of steps warming up.")
    road_oversample: float = Field(0.5, ge=0, le=1, description="Share of chips centred on "
                                                                "road pixels.")
    augmentation: dict[str, float | bool] = Field({}, description="Augmentation parameters "
                                                                  "(train.augment.Augmentation).")
    width_attribute: str | None = Field(None, description="Label attribute giving road width "
                                                          "(times metres_per_unit).")
    metres_per_unit: float = Field(1.0, gt=0, description="Units of width_attribute in metres.")
    amp: bool = Field(True, description="Mixed precision on CUDA.")
    num_workers: int = Field(0, ge=0, description="Data loader processes.")
    val_batch_size: int | None = Field(None, ge=1, description="Chips per validation batch.")

    def augmentation_params(self) -> Augmentation:
        from roadprn.train.augment import Augmentation

        try:
            return Augmentation(**cast(dict[str, Any], self.augmentation))
        except TypeError as exc:
            raise ConfigError(f"augmentation: {exc}") from None

    def label_spec(self) -> LabelSpec:
        from roadprn.train.data import LabelSpec

        return LabelSpec(self.road_width_m, self.width_attribute, self.metres_per_unit,
                         self.mask_threshold, self.labels_crs)

    def model_kwargs(self) -> dict[str, Any]:
        return {**self.arch_kwargs, "in_channels": len(self.bands)}


def validated(cls: type[OptionsT], values: dict[str, Any], what: str = "training") -> OptionsT:
    """``cls(**values)`` with the first validation error as a one-line ConfigError."""
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{what} option {where}: {err['msg']}") from None


def make_options(**values: Any) -> TrainBaseOptions:
    """Base options from keyword values, with validation errors as one-line ConfigErrors.

    A tile size or halo that is missing or None is the architecture's default
    (:func:`roadprn.models.base.default_tiling`, imported here: it loads torch).
    """
    from roadprn.models.base import default_tiling

    arch = values.get("arch") or TrainBaseOptions.model_fields["arch"].default
    tiling = default_tiling(arch) if isinstance(arch, str) else None
    for key, index in (("tile_size", 0), ("halo", 1)):
        if values.get(key) is None and tiling is not None:
            values[key] = tiling[index]
    return validated(TrainBaseOptions, values)
