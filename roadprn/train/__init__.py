"""Training: the loop pattern shared by base models (``train base``) and PatchRefineNet
(``train prn``, :mod:`roadprn.prn.train`), options models, data sampling, losses.

Names load lazily, so that ``roadprn.train.options`` imports without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainBaseOptions": "roadprn.train.options",
    "make_options": "roadprn.train.options",
    "TrainResult": "roadprn.train.loop",
    "train_base": "roadprn.train.base",
    "TrainingPair": "roadprn.train.data",
    "read_pairs_csv": "roadprn.train.data",
    "split_pairs": "roadprn.train.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'roadprn.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
