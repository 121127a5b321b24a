"""PRN training data: cutting maps, reading rasters, splits, run state and checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from roadprn.errors import ConfigError, InputError, ModelError
from roadprn.models.checkpoint import load_checkpoint
from roadprn.prn.data import (
    PRNMaps,
    PRNTrainData,
    cut_maps,
    load_maps,
    maps_from_rasters,
    read_probability,
    save_maps,
    split_maps,
    window_starts,
)
from roadprn.prn.network import prn_arch, prn_arch_kwargs
from roadprn.prn.options import TrainPRNOptions
from roadprn.prn.train import fit_prn
from roadprn.train.loop import STATE_FORMAT, load_state

TINY = {"variant": "fast", "grid": 2, "map_size": 64}
TINY_ARCH = prn_arch_kwargs(prn_arch("fast", grid=2, map_size=64))


def _write(path, data, nodata=None):
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": str(data.dtype), "crs": "EPSG:32631", "nodata": nodata,
               "transform": from_origin(500000, 5800000, 0.5, 0.5)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


@pytest.mark.parametrize("length,size", [(512, 512), (1000, 256), (1536, 512), (100, 64)])
def test_window_starts_cover_without_padding(length, size):
    starts = window_starts(length, size)
    covered = np.zeros(length, bool)
    for s in starts:
        assert 0 <= s and s + size <= length
        covered[s : s + size] = True
    assert covered.all()
    assert starts[-1] == length - size
    assert window_starts(size - 1, size) == []


def test_cut_maps_matches_source_windows_and_zeroes_invalid():
    rng = np.random.default_rng(0)
    prob = rng.random((150, 200)).astype(np.float32)
    truth = rng.random((150, 200)) > 0.8
    valid = np.ones_like(truth)
    valid[:, :10] = False
    maps = cut_maps(prob, truth, 64, valid=valid, source="s")
    assert maps.prob.shape == (len(maps), 64, 64) and len(maps) == 3 * 4
    for i, (r, c) in enumerate(maps.origins):
        window = np.s_[r : r + 64, c : c + 64]
        expected = np.where(valid[window], prob[window], 0)
        np.testing.assert_array_equal(maps.prob[i], expected)
        np.testing.assert_array_equal(maps.truth[i], truth[window] & valid[window])
    assert set(maps.sources) == {"s"}


def test_cut_maps_drops_mostly_invalid_windows_and_pads_small_scenes():
    prob = np.full((128, 128), 0.5, np.float32)
    valid = np.zeros((128, 128), bool)
    valid[:64, :64] = True
    maps = cut_maps(prob, prob > 0, 64, valid=valid)
    assert maps.origins == [(0, 0)]
    small = cut_maps(np.ones((40, 50), np.float32), np.ones((40, 50), bool), 64,
                     min_valid_fraction=0.0)
    assert small.prob.shape == (1, 64, 64)
    assert small.prob[0, :40, :50].all() and not small.prob[0, 40:].any()


def test_maps_from_rasters_reads_uint8_probability_and_nodata_mask(tmp_path):
    rng = np.random.default_rng(1)
    prob8 = rng.integers(0, 256, (128, 128), dtype=np.uint8)
    mask = (rng.random((128, 128)) > 0.7).astype(np.uint8)
    mask[:, :16] = 255  # nodata, as roadprn's synthetic masks mark it
    _write(tmp_path / "p.tif", prob8)
    _write(tmp_path / "m.tif", mask, nodata=255)
    maps = maps_from_rasters(tmp_path / "p.tif", tmp_path / "m.tif", 64)
    assert len(maps) == 4
    full_truth = mask == 1
    for i, (r, c) in enumerate(maps.origins):
        window = np.s_[r : r + 64, c : c + 64]
        np.testing.assert_array_equal(maps.truth[i], full_truth[window])
        expected = np.where(mask[window] != 255, prob8[window] / 255.0, 0)
        np.testing.assert_allclose(maps.prob[i], expected, atol=1e-6)
    assert maps.truth.any()


def test_read_probability_rejects_values_outside_unit_range(tmp_path):
    _write(tmp_path / "bad.tif", np.full((8, 8), 3.0, np.float32))
    with pytest.raises(InputError, match="bad.tif"):
        read_probability(tmp_path / "bad.tif")


def test_split_by_scene_is_disjoint_and_deterministic():
    maps = PRNMaps(np.zeros((10, 8, 8), np.float32), np.zeros((10, 8, 8), bool),
                   [f"scene{i // 2}" for i in range(10)], [(0, 0)] * 10)
    train, val = split_maps(maps, 0.4, seed=3)
    assert set(train.sources).isdisjoint(val.sources)
    assert len(train) + len(val) == 10 and len(set(val.sources)) == 2
    again_train, _ = split_maps(maps, 0.4, seed=3)
    assert train.sources == again_train.sources
    everything, none = split_maps(maps, 0.0, seed=3)
    assert len(everything) == 10 and len(none) == 0
    with pytest.raises(ConfigError, match="val-fraction"):
        split_maps(maps, 1.0, seed=0)


def test_split_with_one_scene_holds_out_maps():
    maps = PRNMaps(np.zeros((5, 8, 8), np.float32), np.zeros((5, 8, 8), bool))
    train, val = split_maps(maps, 0.2, seed=0)
    assert (len(train), len(val)) == (4, 1)


def test_maps_cache_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    maps = PRNMaps(np.rint(rng.random((3, 16, 16)) * 255).astype(np.float32) / 255,
                   rng.random((3, 16, 16)) > 0.5, ["a", "b", "b"], [(0, 0), (16, 0), (0, 16)])
    save_maps(tmp_path / "m.npz", maps)
    back = load_maps(tmp_path / "m.npz")
    np.testing.assert_allclose(back.prob, maps.prob, atol=1e-6)
    np.testing.assert_array_equal(back.truth, maps.truth)
    assert back.sources == maps.sources and back.origins == maps.origins


def _tiny_maps(n=3, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 64, 64), bool)
    truth[:, 20:26, :] = True
    prob = np.clip(truth * 0.4 + rng.random((n, 64, 64)) * 0.3, 0, 1).astype(np.float32)
    return PRNMaps(prob, truth)


def test_pseudo_labels_are_computed_once_per_run(tmp_path, monkeypatch):
    """The data (maps + pseudo-labels) is built once; epochs only reorder and transform it."""
    import roadprn.prn.data as prn_data

    calls = []
    real = prn_data.pseudo_labels
    monkeypatch.setattr(prn_data, "pseudo_labels",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.set_num_threads(1)
    maps = _tiny_maps()
    result = fit_prn(maps, maps, TrainPRNOptions(**TINY, epochs=3, device="cpu"),
                     tmp_path / "prn.pt", base_model_sha256="ab" * 32)
    assert len(result.history) == 3 and calls == [1]
    data = PRNTrainData.from_maps(maps, 32)
    epoch0 = list(data.batches(5, 0, 2, True))
    assert [len(b[0]) for b in epoch0] == [2, 1]
    again = list(data.batches(5, 0, 2, True))
    for one, two in zip(epoch0, again, strict=True):
        for x, y in zip(one, two, strict=True):
            np.testing.assert_array_equal(x, y)


def test_state_and_checkpoint_round_trip(tmp_path):
    torch.set_num_threads(1)
    maps = _tiny_maps(2)
    sha = "ab" * 32
    result = fit_prn(maps, None, TrainPRNOptions(**TINY, epochs=1, device="cpu"),
                     tmp_path / "prn.pt", base_model_sha256=sha)
    state = load_state(tmp_path / "prn.pt", "prn")  # the checkpoint leads to its state
    assert state["format"] == STATE_FORMAT and state["kind"] == "prn" and state["epoch"] == 1
    assert state["options"]["grid"] == 2 and state["base_model_sha256"] == sha
    assert state["history"] == result.history
    checkpoint = load_checkpoint(tmp_path / "prn.pt")
    assert checkpoint.meta.kind == "prn" and checkpoint.meta.base_model_sha256 == sha
    model = checkpoint.build_model()
    for name, tensor in model.state_dict().items():  # one epoch: the best is the last
        torch.testing.assert_close(tensor, state["model"][name])
    assert (tmp_path / "prn.metrics.csv").read_text().startswith("epoch,lr,train_loss,")
    assert json.loads((tmp_path / "prn.metrics.json").read_text()) == result.history
    (tmp_path / "junk.state.pt").write_bytes(b"not a state")
    with pytest.raises(ModelError, match="junk.state.pt"):
        load_state(tmp_path / "junk.state.pt", "prn")
    with pytest.raises(ModelError, match="prn training run, not base"):
        load_state(tmp_path / "prn.state.pt", "base")
    # a PRN state from before the shared format: refused in one line naming the file
    torch.save({"arch_kwargs": TINY_ARCH, "epoch": 1, "model_state": {}, "optimizer_state": {},
                "best_state": {}, "best_epoch": 1, "best_score": 0.5, "history": []},
               tmp_path / "old.state.pt")
    with pytest.raises(ConfigError, match="old.state.pt.*before the shared"):
        load_state(tmp_path / "old.state.pt", "prn")
