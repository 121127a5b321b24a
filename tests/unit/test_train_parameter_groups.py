"""The optimiser's groups: an encoder learning slower than its decoder."""

import pytest
import torch

from roadprn.models.base import build_model
from roadprn.train.loop import parameter_groups, trainable_parameters
from roadprn.train.options import TrainBaseOptions


def _ids(params):
    return {id(p) for p in params}


def test_encoder_gets_the_scaled_rate_and_every_weight_one_group():
    model = build_model("effnet_lite0_linknet", decoder_width=8)
    groups = parameter_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-4), pytest.approx(1e-3)]
    assert _ids(groups[0]["params"]) == _ids(model.encoder.parameters())
    assert _ids(groups[1]["params"]) == _ids(model.decoder.parameters())
    assert sum(len(g["params"]) for g in groups) == len(trainable_parameters(model))


def test_scale_one_or_no_encoder_keeps_one_group():
    lite = build_model("effnet_lite0_linknet", decoder_width=8)
    assert len(parameter_groups(lite, 1e-3, 1.0)) == 1
    tiny = build_model("tiny_unet", width=8)
    assert not hasattr(tiny, "encoder")
    (group,) = parameter_groups(tiny, 1e-3, 0.1)
    assert _ids(group["params"]) == _ids(tiny.parameters())


def test_frozen_encoder_weights_stay_out_of_the_optimiser():
    model = build_model("effnet_lite0_linknet", decoder_width=8)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    (group,) = parameter_groups(model, 1e-3, 0.1)  # the empty encoder group is dropped
    assert _ids(group["params"]) == _ids(model.decoder.parameters())


def test_schedule_scales_both_groups_alike():
    model = build_model("effnet_lite0_linknet", decoder_width=8)
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-3, 0.1), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    model(torch.rand(1, 3, 64, 64)).mean().backward()
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(5e-5),
                                                          pytest.approx(5e-4)]


def test_option_bounds():
    assert TrainBaseOptions().encoder_lr_scale == 1.0
    with pytest.raises(ValueError):
        TrainBaseOptions(encoder_lr_scale=0)
    with pytest.raises(ValueError):
        TrainBaseOptions(encoder_lr_scale=2)


def test_ema_decay_is_off_by_default_and_bounded():
    assert TrainBaseOptions().ema_decay is None
    assert TrainBaseOptions(ema_decay=0.99).ema_decay == 0.99
    for bad in (1.0, 0.2):
        with pytest.raises(ValueError):
            TrainBaseOptions(ema_decay=bad)
