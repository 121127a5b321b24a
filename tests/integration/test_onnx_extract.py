"""The whole chain without PyTorch models: ``extract --model base.onnx --prn prn.onnx`` gives
the refined mask of the checkpoints it was exported from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from roadprn.outputs.atomic import file_sha256
from tests.helpers import invoke, make_checkpoint, make_prn

pytest.importorskip("onnxruntime")


def test_extract_with_onnx_base_and_prn_equals_the_torch_path(tmp_path, one_torch_thread):
    from roadprn.models.export import export_model
    from roadprn.synth import generate_scene

    base = make_checkpoint(tmp_path / "base.pt", 3)
    prn = make_prn(tmp_path / "prn.pt", file_sha256(base))
    export_model(str(base), "onnx", tmp_path / "base.onnx")
    export_model(str(prn), "onnx", tmp_path / "prn.onnx")
    scene = generate_scene(tmp_path / "s.tif", width=300, height=260, seed=5).image_path
    masks = {}
    for name, model, refiner in (("torch", base, prn),
                                 ("onnx", tmp_path / "base.onnx", tmp_path / "prn.onnx")):
        result = invoke("extract", scene, "--model", model, "--prn", refiner, "--refine", "prn",
                        "-o", tmp_path / name, "--no-vectorize", "--json")
        assert result.exit_code == 0, result.output
        assert "trained on base model" not in result.output  # the exports pair by sha256
        files = json.loads(result.stdout)["files"]
        with rasterio.open(files["refined_mask"]) as ds:
            masks[name] = ds.read(1)
            tags = ds.tags()
        assert tags["ROADPRN_MODEL_SHA256"] == file_sha256(base)
        with rasterio.open(files["probability"]) as ds:
            masks[name + "_prob"] = ds.read(1).astype(int)
    assert np.abs(masks["torch_prob"] - masks["onnx_prob"]).max() <= 1
    agree = (masks["torch"] == masks["onnx"]).mean()
    assert agree >= 0.999, agree

