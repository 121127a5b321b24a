"""The names of PRN's fusion rules and the default one, in a leaf module (no torch, no roadprn).

``DEFAULT_FUSION`` is the one source of the default rule: ``refine.fusion`` in the config, the
checkpoint selection of ``train prn`` and :func:`roadprn.prn.refine.fuse` all read it. It is
``global``, not the paper's ``G ∪ dilate(G ∩ L)``: on held-out maps the paper rule lost 1-1.8
IoU points to the global branch alone (docs/prn.md, "Fusion rule").
"""

from __future__ import annotations

from typing import Literal, get_args

FusionRule = Literal["paper", "global", "local", "mean"]
FUSION_RULES: tuple[str, ...] = get_args(FusionRule)
DEFAULT_FUSION: FusionRule = "global"
