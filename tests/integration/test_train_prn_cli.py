"""``roadprn train prn`` end to end on a tiny synthetic scene with the default base model."""

from __future__ import annotations

import json

import pytest
import rasterio
import torch
from click.testing import CliRunner

from roadprn.cli.train_prn import prn
from roadprn.errors import ConfigError, InputError, OutputError
from roadprn.models.checkpoint import load_checkpoint
from roadprn.models.loading import default_model_path
from roadprn.prn.network import PatchRefineNet
from roadprn.synth import generate_scene

pytestmark = [
    pytest.mark.slow,  # ~15 s on an idle 2-core machine, up to a minute on a busy one
    pytest.mark.skipif(not default_model_path().is_file(), reason="no default base model"),
]

TINY = ["--map-size", "128", "--grid", "2", "--variant", "fast", "--threads", "1"]


def _invoke(args: list[str]):
    result = CliRunner().invoke(prn, args, obj={}, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("train_prn")
    scene = generate_scene(folder / "scene.tif", width=384, seed=901, resolution_m=0.5)
    out = folder / "prn.pt"
    result = _invoke(["--pair", str(scene.image_path), str(scene.mask_path), "--out", str(out),
                      "--epochs", "3", "--val-fraction", "0.25", "--no-augment", "--lr", "2e-3",
                      *TINY])
    return folder, scene, out, json.loads(result.output.strip().splitlines()[-1])


def test_training_lowers_the_loss_and_writes_a_paired_checkpoint(trained):
    folder, _, out, summary = trained
    history = json.loads(out.with_suffix(".history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all("val_iou" in row for row in history)
    checkpoint = load_checkpoint(out)
    base = load_checkpoint(default_model_path())
    assert checkpoint.meta.kind == "prn" and checkpoint.meta.arch == "prn"
    assert checkpoint.meta.base_model_sha256 == base.sha256 == summary["base_model_sha256"]
    assert checkpoint.meta.arch_kwargs["map_size"] == 128
    model = checkpoint.build_model()
    assert isinstance(model, PatchRefineNet) and model.arch.grid == 2
    assert summary["best_epoch"] == checkpoint.meta.metrics["best_epoch"]
    best = max(history, key=lambda row: row["val_iou"])
    assert checkpoint.meta.metrics["val_iou"] == pytest.approx(best["val_iou"])
    assert (folder / "prn.pt.maps" / "scene_probability.tif").is_file()


def test_resume_continues_the_same_run(trained):
    folder, scene, out, _ = trained
    before = json.loads(out.with_suffix(".history.json").read_text())
    _invoke(["--pair", str(scene.image_path), str(scene.mask_path), "--out", str(out),
             "--epochs", "4", "--val-fraction", "0.25", "--no-augment", "--lr", "2e-3",
             "--resume", str(out), *TINY])
    after = json.loads(out.with_suffix(".history.json").read_text())
    assert [row["epoch"] for row in after] == [1, 2, 3, 4]
    for old, new in zip(before, after[:3], strict=True):
        assert new["train_loss"] == old["train_loss"]
    assert load_checkpoint(out).meta.metrics["epochs"] == 4


def test_saved_probability_maps_train_and_foreign_maps_are_refused(trained, tmp_path):
    folder, scene, _, _ = trained
    prob = folder / "prn.pt.maps" / "scene_probability.tif"
    out = tmp_path / "from_maps.pt"
    _invoke(["--prob-maps", str(prob), str(scene.mask_path), "--out", str(out), "--epochs", "1",
             "--val-fraction", "0", *TINY])
    assert load_checkpoint(out).meta.kind == "prn"
    foreign = tmp_path / "foreign.tif"
    with rasterio.open(prob) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(foreign, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(ROADPRN_MODEL_SHA256="0" * 64)
    with pytest.raises(InputError, match="foreign.tif"):
        _invoke(["--prob-maps", str(foreign), str(scene.mask_path), "--out",
                 str(tmp_path / "x.pt"), *TINY])


def test_user_errors_are_one_line(trained, tmp_path):
    _, _, out, _ = trained
    with pytest.raises(ConfigError, match="--pair"):
        _invoke(["--out", str(tmp_path / "none.pt")])
    with pytest.raises(OutputError):
        _invoke(["--prob-maps", "a.tif", "b.tif", "--out", str(out)])
    with pytest.raises(ConfigError, match="map-size|map_size"):
        _invoke(["--prob-maps", "a.tif", "b.tif", "--out", str(tmp_path / "y.pt"),
                 "--map-size", "100"])
