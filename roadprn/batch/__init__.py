"""``roadprn batch``: many scenes on a Dask cluster, resumable and failure-isolated.

Every scene runs :func:`roadprn.extract.run_extract`, the same job as ``roadprn extract``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported lazily: roadprn.config needs BatchConfig without pulling in dask.distributed.
_EXPORTS = {"BatchConfig": "config", "SceneInput": "inputs", "collect_inputs": "inputs",
            "find_scenes": "inputs", "FoundScenes": "inputs", "BatchSummary": "run",
            "run_batch": "run"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"roadprn.batch.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'roadprn.batch' has no attribute {name!r}")
