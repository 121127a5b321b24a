"""Batched model inference on one device: device choice, threads, AMP, TTA.

The pipeline feeds numpy batches in and gets probabilities out; everything torch-specific about
running a segmentation model fast and safely lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from roadprn.errors import ConfigError

if TYPE_CHECKING:
    from roadprn.models.exported import OnnxRunner

log = logging.getLogger(__name__)


@dataclass
class SegmentationModel:
    """A base model and what it expects: the pipeline checks scenes against these facts."""

    # maps (B, in_channels, H, W) inputs in [0, 1] to (B, 1, H, W) logits; an ONNX model is
    # an OnnxRunner (onnxruntime, numpy in and out)
    module: nn.Module | OnnxRunner
    in_channels: int
    name: str = "custom"
    bands: tuple[int, ...] | None = None  # scene bands the model reads by default (1-based)
    outputs_logits: bool = True  # False: the module already returns probabilities
    sha256: str | None = None
    tile_size: int = 512
    halo: int = 64
    batch_size: int | None = None
    cpu_batch_size: int | None = None  # the architecture's fastest CPU batch, when known
    gsd_m: float | None = None
    gsd_range_m: tuple[float, float] | None = None  # trained across these; run natively inside
    normalization: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an unavailable explicit device is an error."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{spec}' requested but CUDA is not available on this "
                              "machine")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device '{spec}' requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist")
    mps = getattr(torch.backends, "mps", None)
    if spec == "mps" and not (mps and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but Apple MPS is not available on this machine")
    return torch.device(spec)


class BatchPredictor(Protocol):
    """What the tile machinery runs: (B, C, T, T) inputs -> (B, T, T) maps, in numpy (the base
    model's :class:`Predictor`, PRN's :class:`~roadprn.prn.refine_scene.PRNPredictor`)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class Predictor:
    """Runs ``module`` on numpy batches and returns road probabilities (B, H, W) float32."""

    def __init__(
        self,
        module: nn.Module | OnnxRunner,
        device: torch.device,
        *,
        amp: bool = True,
        tta: bool = False,
        compile: bool = False,
        outputs_logits: bool = True,
    ) -> None:
        self.device = device
        self.tta = tta
        self.outputs_logits = outputs_logits
        self.onnx: OnnxRunner | None = None
        if not isinstance(module, nn.Module):
            # an ONNX model: onnxruntime's CPU provider, CUDA's when the device is CUDA and
            # onnxruntime has it; as many threads as torch was given (runtime.settings)
            self.onnx = module
            self.threads = torch.get_num_threads()
            module.session(device.type, self.threads)  # made once, before the first batch
            return
        self.channels_last = device.type in ("cuda", "cpu")
        net: nn.Module = module.to(device).eval()
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.module: Callable[[torch.Tensor], torch.Tensor] = net
        if compile:
            try:
                self.module = torch.compile(net)
            except Exception as exc:  # noqa: BLE001 - compilation is an optional speed-up
                log.warning("torch.compile failed (%s); running uncompiled", exc)
        self.autocast_dtype = None
        if amp and device.type == "cuda":
            self.autocast_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported()
                                   else torch.float16)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.onnx is not None:
            return self._onnx_call(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.tta:
            flips: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))
            prob = self._forward(x.flip(())).flip(())
            for dims in flips:  # one flipped copy at a time
                prob = prob + self._forward(x.flip(dims)).flip(dims)
            prob = prob / 4.0
        else:
            prob = self._forward(x)
        return prob[:, 0].float().cpu().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                logits = self.module(x)
        else:
            logits = self.module(x)
        out = logits.float()
        return torch.sigmoid(out) if self.outputs_logits else out.clamp(0.0, 1.0)

    def _onnx_call(self, batch: np.ndarray) -> np.ndarray:
        assert self.onnx is not None
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if not self.tta:
            return self._onnx_forward(x)
        prob = self._onnx_forward(x)
        for axes in ((-1,), (-2,), (-2, -1)):  # the flips of the torch path, in numpy
            flipped = np.ascontiguousarray(np.flip(x, axis=axes))
            prob += np.flip(self._onnx_forward(flipped), axis=axes)
        return prob / 4.0

    def _onnx_forward(self, x: np.ndarray) -> np.ndarray:
        assert self.onnx is not None
        out = self.onnx.road_map(x, self.device.type, self.threads)
        if self.outputs_logits:
            return (1.0 / (1.0 + np.exp(-out))).astype(np.float32)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
