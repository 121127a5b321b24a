"""``--refine auto`` pairs every shipped base model with the shipped PRN trained on it."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from roadprn.config import load_config
from roadprn.extract import resolve_refine_model
from roadprn.models.loading import (
    MODEL_ALIASES,
    default_model_path,
    load_segmentation_model,
    shipped_prn_path,
)

SHIPPED_BASES = [alias for alias, name in MODEL_ALIASES.items()
                 if default_model_path(name).is_file()]


@pytest.mark.parametrize("alias", SHIPPED_BASES)
def test_auto_refines_a_shipped_base_only_with_its_own_prn(alias):
    base = load_segmentation_model(alias)
    prn = resolve_refine_model(load_config(None, {"refine.method": "auto"}), base)
    path = shipped_prn_path(base.sha256)
    if path is None:  # e.g. the panchromatic model has no PRN
        assert prn is None
    else:
        assert prn is not None and prn.base_model_sha256 == base.sha256


def test_rgb_defaults_have_a_prn():
    for alias in ("default", "default-v1"):
        if alias in SHIPPED_BASES:
            assert shipped_prn_path(load_segmentation_model(alias).sha256) is not None, alias


def test_other_base_models_get_no_prn_under_auto_and_a_warning_when_forced(caplog):
    base = dataclasses.replace(load_segmentation_model("default"), sha256="0" * 64)
    assert shipped_prn_path(base.sha256) is None
    assert resolve_refine_model(load_config(None, {"refine.method": "auto"}), base) is None
    with caplog.at_level(logging.WARNING):
        prn = resolve_refine_model(load_config(None, {"refine.method": "prn"}), base)
    assert prn is not None and "was trained on base model" in caplog.text


def test_refine_none_loads_nothing():
    base = load_segmentation_model("default")
    assert resolve_refine_model(load_config(None, {"refine.method": "none"}), base) is None


def test_naming_a_prn_file_asks_for_refinement_unless_a_method_is_given():
    assert load_config(None, {}).refine.method == "none"  # measured default (model card)
    assert load_config(None, {"refine.model": "my_prn.pt"}).refine.method == "prn"
    for method in ("none", "auto", "prn"):
        given = load_config(None, {"refine.model": "my_prn.pt", "refine.method": method})
        assert given.refine.method == method


def test_cpu_batch_follows_the_architecture_and_config_wins():
    from roadprn.infer.base_stage import choose_tiling

    lite = load_segmentation_model("default")  # effnet_lite0_linknet: batches do not pay on CPU
    v1 = load_segmentation_model("default-v1")
    config = load_config(None, {})
    assert choose_tiling(config, lite, "cpu").batch_size == 1
    assert choose_tiling(config, v1, "cpu").batch_size == 4
    assert choose_tiling(config, lite, "cuda").batch_size == 16
    assert choose_tiling(load_config(None, {"tiling.batch_size": 3}), lite, "cpu").batch_size == 3
