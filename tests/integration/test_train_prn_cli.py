"""``roadprn train prn`` end to end on a tiny synthetic scene with the default base model."""

from __future__ import annotations

import json
from pathlib import Path

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
from roadprn.train.loop import load_state

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
                      "--json", *TINY])
    return folder, scene, out, json.loads(result.output.strip().splitlines()[-1])


def test_training_lowers_the_loss_and_writes_a_paired_checkpoint(trained):
    folder, _, out, summary = trained
    history = json.loads(out.with_suffix(".metrics.json").read_text())
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
    assert checkpoint.meta.metrics["val_iou"] == pytest.approx(best["val_iou"], abs=1e-6)
    assert summary["sha256"] == checkpoint.sha256
    assert (folder / "prn.pt.maps" / "scene_probability.tif").is_file()


def test_checkpoint_records_and_info_shows_the_training_files(trained):
    from roadprn.models.checkpoint import describe_checkpoint
    from roadprn.outputs.atomic import file_sha256

    _, scene, out, _ = trained
    files = load_checkpoint(out).meta.training_data.files
    expected = [(str(Path(scene.image_path).resolve()), "scene"),
                (str(Path(scene.mask_path).resolve()), "labels")]
    assert [(f.path, f.role) for f in files] == expected
    assert [f.sha256 for f in files] == [file_sha256(p) for p, _ in expected]
    lines = describe_checkpoint(out)
    assert lines["training data"].startswith("2 file(s) (1 labels, 1 scene)")
    assert lines["training file 1"] == f"{expected[0][0]} (scene, sha256 {files[0].sha256})"


def test_resume_continues_the_same_run(trained):
    folder, scene, out, _ = trained
    before = json.loads(out.with_suffix(".metrics.json").read_text())
    result = _invoke(["--pair", str(scene.image_path), str(scene.mask_path), "-o", str(out),
                      "--epochs", "4", "--val-fraction", "0.25", "--no-augment", "--lr", "2e-3",
                      "--resume", str(out), *TINY])
    after = json.loads(out.with_suffix(".metrics.json").read_text())
    # without --json: human text like train base (stderr: one line per epoch; stdout: summary)
    assert "resuming after epoch 3" in result.stderr
    assert "epoch 4/4: train loss " in result.stderr and "val IoU " in result.stderr
    assert ["model", str(out)] in [line.split() for line in result.stdout.splitlines()]
    assert any(line.startswith("base model sha256 ") for line in result.stdout.splitlines())
    assert "{" not in result.stdout
    assert [row["epoch"] for row in after] == [1, 2, 3, 4]
    for old, new in zip(before, after[:3], strict=True):
        assert new == old  # the first three epochs are kept as they were
    assert load_state(out, "prn")["epoch"] == 4
    # the model options of a resumed run cannot change
    with pytest.raises(ConfigError, match="grid"):
        _invoke(["--pair", str(scene.image_path), str(scene.mask_path), "--out", str(out),
                 "--epochs", "5", "--resume", str(out), *TINY[:2], "--grid", "4", *TINY[4:]])


def test_config_file_and_set_give_the_options(trained, tmp_path):
    """--config's train.prn mapping < --set train.prn.KEY < explicit options."""
    folder, scene, _, _ = trained
    prob = folder / "prn.pt.maps" / "scene_probability.tif"
    config = tmp_path / "train.yaml"
    config.write_text("train:\n  prn:\n    epochs: 3\n    map_size: 128\n    grid: 2\n"
                      "    val_fraction: 0.0\n    lr: 0.01\n")
    out = tmp_path / "cfg.pt"
    _invoke(["--prob-maps", str(prob), str(scene.mask_path), "--out", str(out),
             "--config", str(config), "--set", "train.prn.epochs=2", "--set",
             "train.prn.threads=1", "--lr", "0.002"])
    options = load_state(out, "prn")["options"]
    assert (options["epochs"], options["lr"], options["map_size"]) == (2, 0.002, 128)
    with pytest.raises(ConfigError, match="train.prn.no_such"):
        _invoke(["--prob-maps", str(prob), str(scene.mask_path), "--out",
                 str(tmp_path / "z.pt"), "--set", "train.prn.no_such=3"])
    with pytest.raises(ConfigError, match="epochs"):
        _invoke(["--prob-maps", str(prob), str(scene.mask_path), "--out",
                 str(tmp_path / "z.pt"), "--set", "train.prn.epochs=0"])


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
