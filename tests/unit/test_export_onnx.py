"""roadprn export (ONNX, TorchScript) and ONNX models in: round trips equal to PyTorch, QGIS
Deepness metadata read by Deepness's rules, and ONNX files refused before onnxruntime runs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from roadprn.errors import ModelError
from roadprn.outputs.atomic import file_sha256
from tests.helpers import (
    assert_clean_failure,
    invoke,
    make_checkpoint,
    make_prn,
    write_test_raster,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MAX_DIFF = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_torch_thread):
    """A tiny base model and a PRN paired with it, each exported to both formats."""
    from roadprn.models.export import export_model

    folder = tmp_path_factory.mktemp("export")
    base = make_checkpoint(folder / "base.pt", 3)
    prn = make_prn(folder / "prn.pt", file_sha256(base))
    files = {"base": base, "prn": prn}
    results = {}
    for kind, source in (("base", base), ("prn", prn)):
        for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".ts.pt")):
            out = folder / f"{kind}{suffix}"
            results[kind, fmt] = export_model(str(source), fmt, out)
            files[f"{kind}_{fmt}"] = out
    return files, results


def _torch_probability(path: Path, batch: np.ndarray) -> np.ndarray:
    import torch

    from roadprn.infer.predictor import Predictor
    from roadprn.models.loading import load_segmentation_model

    model = load_segmentation_model(str(path))
    predictor = Predictor(model.module, torch.device("cpu"), amp=False,
                          outputs_logits=model.outputs_logits)
    return predictor(batch)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_base_export_round_trip_equals_pytorch(exported, fmt):
    files, results = exported
    assert results["base", fmt].max_abs_diff <= MAX_DIFF
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 128, 128), (3, 3, 128, 128), (2, 3, 96, 96), (1, 3, 161, 161)]:
        batch = rng.random(shape, dtype=np.float32)
        expected = _torch_probability(files["base"], batch)
        got = _torch_probability(files[f"base_{fmt}"], batch)
        assert got.shape == expected.shape
        assert float(np.abs(got - expected).max()) <= MAX_DIFF, shape


def test_onnx_export_is_valid_with_dynamic_axes_and_states_its_spec(exported):
    from roadprn.models.exported import read_onnx
    from roadprn.models.loading import load_segmentation_model

    files, _ = exported
    model = onnx.load(str(files["base_onnx"]))
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "tile", "tile"]
    out = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out == ["batch", 1, "tile", "tile"]
    meta = read_onnx(files["base_onnx"]).metadata
    spec = json.loads(meta["roadprn_input"])
    assert spec["bands"] == [1, 2, 3] and spec["gsd_m"] == 0.5
    assert spec["tile_size"] == 128 and spec["halo"] == 16
    assert spec["normalization"]["mode"] == "percentile"
    assert json.loads(meta["roadprn_output"]) == "probability"
    loaded = load_segmentation_model(str(files["base_onnx"]))
    # an export pairs with PRNs as its checkpoint does: the same weights
    assert loaded.sha256 == file_sha256(files["base"])
    assert (loaded.tile_size, loaded.halo, loaded.gsd_m, loaded.bands) == (128, 16, 0.5,
                                                                              (1, 2, 3))
    assert loaded.outputs_logits is False


def deepness_read(path: Path) -> dict:
    """The model parameters QGIS Deepness reads from an ONNX file, by its rules (re-written
    here from its documented behaviour, not copied): onnxruntime's custom metadata map, every
    value JSON (class_names may fall back to a Python literal), model_type capitalised, one
    input (batch, channels, size, size) with a fixed channel count, one 4-D square output, a
    one-channel output read as two classes, standardisation lists per input channel."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    inputs, outputs = session.get_inputs(), session.get_outputs()
    assert len(inputs) == 1 and len(outputs) == 1
    channels = inputs[0].shape[-3]
    assert isinstance(channels, int)
    out_shape = outputs[0].shape
    assert len(out_shape) == 4 and out_shape[2] == out_shape[3]
    try:
        names = json.loads(meta["class_names"])
    except json.JSONDecodeError:
        names = ast.literal_eval(meta["class_names"])
    names = [names] if isinstance(names, dict) else names
    classes = []
    for mapping in names:
        items = sorted(mapping.items(), key=lambda kv: int(kv[0]))
        assert [int(k) for k, _ in items] == list(range(len(items)))
        classes.append([v for _, v in items])
    output_channels = 2 if out_shape[1] == 1 else out_shape[1]
    assert len(classes[0]) == output_channels
    mean = [float(x) for x in json.loads(meta["standardization_mean"])]
    std = [float(x) for x in json.loads(meta["standardization_std"])]
    assert len(mean) == len(std) == channels
    batch = inputs[0].shape[0]
    return {
        "model_type": str(json.loads(meta["model_type"])).capitalize(),
        "classes": classes[0], "resolution": float(json.loads(meta["resolution"])),
        "tile_size": int(json.loads(meta["tile_size"])),
        "tiles_size": int(json.loads(meta["tiles_size"])),
        "tiles_overlap": int(json.loads(meta["tiles_overlap"])),
        "seg_thresh": float(json.loads(meta["seg_thresh"])), "mean": mean, "std": std,
        "batch": None if isinstance(batch, str) else batch, "channels": channels,
    }


def test_deepness_reads_the_exported_metadata(exported):
    files, _ = exported
    read = deepness_read(files["base_onnx"])
    assert read == {"model_type": "Segmentor", "classes": ["background", "road"],
                    "resolution": 50.0, "tile_size": 128, "tiles_size": 128,
                    "tiles_overlap": 25, "seg_thresh": 0.5, "mean": [0.0] * 3,
                    "std": [1.0] * 3, "batch": None, "channels": 3}


def test_deepness_standardization_is_exact_for_fixed_and_dtype_normalisations():
    from roadprn.config import NormalizationConfig
    from roadprn.models.exported import deepness_standardization

    fixed = NormalizationConfig(mode="fixed", scale=[1 / 200.0, 1 / 100.0], offset=[-0.1, -0.1])
    mean, std, exact = deepness_standardization(fixed, 2)
    values = np.arange(0, 256, dtype=np.float64)
    for band, scale in enumerate((1 / 200.0, 1 / 100.0)):
        roadprn_input = values * scale - 0.1
        deepness_input = (values / 255.0 - mean[band]) / std[band]
        assert np.allclose(roadprn_input, deepness_input) and exact
    assert deepness_standardization(NormalizationConfig(mode="dtype"), 3) == (
        [0.0] * 3, [1.0] * 3, True)
    assert deepness_standardization(NormalizationConfig(mode="percentile"), 1)[2] is False


def test_a_deepness_model_runs_with_deepness_preprocessing(tmp_path):
    """A foreign Deepness model (no roadprn metadata, standardisation stated) gets roadprn's
    value / 255 and then (x - mean) / std, as Deepness feeds it."""
    from roadprn.models.loading import load_segmentation_model

    path = _reduce_mean_model(tmp_path / "deepness.onnx", metadata={
        "model_type": "Segmentor", "class_names": {0: "background", 1: "road"},
        "resolution": 30, "tiles_size": 256, "tiles_overlap": 10,
        "standardization_mean": [0.5, 0.5, 0.5], "standardization_std": [0.25, 0.25, 0.25]})
    model = load_segmentation_model(str(path))
    assert (model.gsd_m, model.tile_size, model.halo) == (0.3, 256, 13)
    assert model.normalization["mode"] == "fixed" and model.outputs_logits is False
    batch = np.full((1, 3, 8, 8), 0.75, np.float32)  # roadprn's normalised input
    out = model.module.road_map(batch)  # type: ignore[union-attr]
    assert np.allclose(out, (0.75 - 0.5) / 0.25)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_prn_export_round_trip_equals_pytorch_and_pairs_by_sha256(exported, fmt):
    import torch

    from roadprn.prn.refine_scene import PRNPredictor, load_refine_model

    files, results = exported
    assert results["prn", fmt].max_abs_diff <= MAX_DIFF
    reference = load_refine_model(files["prn"])
    loaded = load_refine_model(files[f"prn_{fmt}"])
    assert loaded.sha256 == reference.sha256 == file_sha256(files["prn"])
    assert loaded.base_model_sha256 == file_sha256(files["base"])
    assert loaded.map_size == reference.map_size == 128
    rng = np.random.default_rng(2)
    batch = rng.random((3, 1, 128, 128), dtype=np.float32)
    cpu = torch.device("cpu")
    for fusion in ("global", "paper", "mean"):
        want = PRNPredictor(reference, cpu, fusion)(batch)
        got = PRNPredictor(loaded, cpu, fusion)(batch)
        assert (want == got).mean() >= 0.999, fusion


def test_export_cli_json_and_info(exported, tmp_path):
    files, _ = exported
    result = invoke("export", files["base"], "--format", "onnx", "-o", tmp_path / "m.onnx",
                    "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["max_abs_diff"] <= MAX_DIFF and summary["kind"] == "base"
    assert summary["metadata"]["model_type"] == "Segmentor"
    again = invoke("export", files["base"], "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert_clean_failure(again, 4, "exists")
    described = invoke("info", tmp_path / "m.onnx", "--json")
    assert described.exit_code == 0, described.output
    lines = json.loads(described.stdout)
    assert lines["spec from"] == "roadprn metadata" and lines["tiles"].startswith("128 px")
    assert "no external data" in lines["safety check"]
    wrong_suffix = invoke("export", files["base"], "--format", "onnx", "-o", tmp_path / "m.bin")
    assert_clean_failure(wrong_suffix, 5, ".onnx")


# --------------------------------------------------------------------------- refusals


def _reduce_mean_model(path: Path, *, channels: int = 3, metadata: dict | None = None,
                       weights_location: str | None = None, domain: str = "") -> Path:
    """A small ONNX model: a 1x1 convolution (mean of the channels), optionally with its
    weights as external data at ``weights_location`` or a node of another ``domain``."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.full((1, channels, 1, 1), 1.0 / channels, np.float32)
    tensor = numpy_helper.from_array(weights, "w")
    if weights_location is not None:
        raw = tensor.raw_data
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", weights_location), ("offset", "0"),
                           ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        target = path.parent / weights_location
        if target.parent.is_dir() and not Path(weights_location).is_absolute():
            target.write_bytes(raw)
    nodes = [helper.make_node("Conv", ["input", "w"], ["probability"])]
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        nodes = [helper.make_node("Evil", ["input"], ["x"], domain=domain),
                 helper.make_node("Conv", ["x", "w"], ["probability"])]
        opsets.append(helper.make_opsetid(domain, 1))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", channels, "h", "w"])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        initializer=[tensor])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all\n" * 20,
                                     bytes(range(256)) * 8, "truncated"])
def test_corrupt_or_foreign_onnx_is_one_line_exit_5(exported, tmp_path, content):
    files, _ = exported
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        data = files["base_onnx"].read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    assert_clean_failure(invoke("info", path), 5, str(path))
    scene = write_test_raster(tmp_path / "s.tif", np.zeros((3, 32, 32), np.uint8))
    assert_clean_failure(invoke("extract", scene, "--model", path, "-o", tmp_path / "o"), 5,
                         str(path), out=tmp_path / "o")


def test_onnx_without_a_spec_says_what_it_needs_and_a_sidecar_supplies_it(tmp_path):
    from roadprn.models.loading import load_segmentation_model

    path = _reduce_mean_model(tmp_path / "foreign.onnx")
    line = assert_clean_failure(invoke("info", path), 5, "does not say what it expects",
                                "3 input channel(s)", "foreign.yaml")
    assert "roadprn export" in line
    (tmp_path / "foreign.yaml").write_text(
        "bands: [1, 2, 3]\nnormalization: {mode: dtype}\ngsd_m: 1.0\noutput: probability\n")
    model = load_segmentation_model(str(path))
    assert model.in_channels == 3 and model.gsd_m == 1.0 and not model.outputs_logits
    (tmp_path / "foreign.yaml").write_text(
        "bands: [1]\nnormalization: {mode: dtype}\ngsd_m: 1.0\n")
    with pytest.raises(ModelError, match=r"takes 3 input channel\(s\) but its input spec "
                                         r"\(YAML sidecar foreign.yaml\) lists 1 band\(s\)"):
        load_segmentation_model(str(path))


def test_wrong_number_of_scene_bands_names_both_numbers(exported, tmp_path):
    from roadprn.models.loading import load_segmentation_model


    files, _ = exported
    scene = write_test_raster(tmp_path / "one.tif", np.zeros((1, 64, 64), np.uint8))
    result = invoke("extract", scene, "--model", files["base_onnx"], "-o", tmp_path / "o")
    line = assert_clean_failure(result, 3, "3-band input", "has 1 band(s)")
    assert "one.tif" in line
    runner = load_segmentation_model(str(files["base_onnx"])).module
    with pytest.raises(ModelError, match=r"takes 3 input channel\(s\) but was given 2"):
        runner.road_map(np.zeros((1, 2, 32, 32), np.float32))


def test_custom_operators_are_refused_before_onnxruntime(tmp_path):
    for domain in ("com.example.evil", "com.microsoft"):
        path = _reduce_mean_model(tmp_path / f"{domain}.onnx", domain=domain)
        assert_clean_failure(invoke("info", path), 5, "custom operator", f"{domain}.Evil")


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "sub/../../x.bin",
                                      "*/_ORT_MEM_ADDR_/*", "missing.bin", "link.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    folder = tmp_path / "models"
    folder.mkdir()
    if location == "link.bin":
        (tmp_path / "secret.bin").write_bytes(b"\0" * 12)
        (folder / "link.bin").symlink_to(tmp_path / "secret.bin")
    path = _reduce_mean_model(folder / "m.onnx", weights_location=location,
                              metadata={"model_type": "Segmentor", "resolution": 50})
    if location == "missing.bin":
        (folder / "missing.bin").unlink()
    assert_clean_failure(invoke("info", path), 5, "keeps its data in")


def test_external_data_beside_the_model_is_read(tmp_path):
    from roadprn.models.loading import load_segmentation_model

    path = _reduce_mean_model(tmp_path / "m.onnx", weights_location="m.weights",
                              metadata={"model_type": "Segmentor", "resolution": 50})
    model = load_segmentation_model(str(path))
    out = model.module.road_map(np.full((1, 3, 4, 4), 0.6, np.float32))  # type: ignore[union-attr]
    assert np.allclose(out, 0.6, atol=1e-6)
