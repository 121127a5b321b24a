"""PatchRefineNet shapes, parameter count, and the folded local branch."""

from __future__ import annotations

import pytest
import torch

from roadprn.prn.network import (
    PatchRefineNet,
    PRNArch,
    count_parameters,
    fold_grid,
    prn_arch,
    prn_arch_kwargs,
    unfold_grid,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = {"width": 0.25, "recurrence": 1}


@pytest.mark.parametrize(
    ("variant", "grid", "size"),
    [("paper", 0, 64), ("paper", 2, 64), ("paper", 8, 128), ("paper", 3, 96), ("fast", 2, 128)],
)
def test_output_shapes(variant: str, grid: int, size: int) -> None:
    model = PatchRefineNet(variant, grid=grid, map_size=size, **TINY).eval()
    prob = torch.rand(2, 1, size, size)
    with torch.inference_mode():
        out = model(prob)
    assert out.global_map.shape == prob.shape
    assert (out.local_map is None) == (grid == 0)
    for y in (out.global_map, out.local_map):
        if y is not None:
            assert y.shape == prob.shape and torch.all((y >= 0) & (y <= 1))


def test_rectangular_and_other_map_sizes() -> None:
    model = PatchRefineNet("paper", grid=2, map_size=64, **TINY).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 1, 32, 48))
    assert out.local_map is not None and out.local_map.shape == (1, 1, 32, 48)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.rand(1, 1, 40, 40))


def test_parameter_count_matches_reference() -> None:
    p64 = count_parameters(PatchRefineNet("paper", grid=8))
    p4 = count_parameters(PatchRefineNet("paper", grid=2))
    p0 = count_parameters(PatchRefineNet("paper", grid=0))
    assert p64 == p4 and 3.80e6 < p64 < 3.98e6  # reference: ~3.89 M
    assert 0.80e6 < p64 - p0 < 0.88e6  # one decoder: ~0.84 M
    assert count_parameters(PatchRefineNet("fast", grid=8)) < p64 / 3


def test_fold_unfold_round_trip_and_layout() -> None:
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    folded = fold_grid(x, 2)
    assert folded.shape == (8, 3, 4, 6)
    torch.testing.assert_close(folded[1 * 4 + 1 * 2 + 1], x[1, :, 4:8, 6:12])
    torch.testing.assert_close(unfold_grid(folded, 2), x)


@pytest.mark.parametrize(("variant", "grid", "size"), [("paper", 2, 64), ("fast", 4, 256)])
def test_local_branch_equals_patch_by_patch(variant: str, grid: int, size: int) -> None:
    torch.manual_seed(0)
    model = PatchRefineNet(variant, grid=grid, map_size=size, **TINY)
    # non-trivial running statistics, then eval mode
    with torch.no_grad():
        model(torch.rand(2, 1, size, size))
        if variant == "fast":  # zero-initialised head would make the check trivial
            torch.nn.init.normal_(model.local_decoder.out.weight, std=0.1)
    model.eval()
    prob = torch.rand(2, 1, size, size)
    with torch.inference_mode():
        features = model.encode(prob)
        stitched = model.decode_local(features)
        cell = features[0].shape[-1] // grid
        for i in range(grid):
            for j in range(grid):
                cut = []
                for level, f in enumerate(features):
                    c = cell >> level
                    cut.append(f[..., i * c : (i + 1) * c, j * c : (j + 1) * c])
                alone = model.local_decoder(cut)
                patch = stitched[..., i * cell : (i + 1) * cell, j * cell : (j + 1) * cell]
                torch.testing.assert_close(patch, alone, rtol=1e-4, atol=1e-5)
        # and the global branch does see across cell borders (it is not the same computation)
        assert not torch.allclose(model.decode_global(features), stitched)


def test_group_norm_local_branch_equals_patch_by_patch_in_training_mode() -> None:
    torch.manual_seed(0)
    model = PatchRefineNet("paper", grid=2, map_size=64, norm="group", **TINY).train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    prob = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        features = model.encode(prob)
        stitched = model.decode_local(features)
        cut = [f[..., : f.shape[-2] // 2, f.shape[-1] // 2 :] for f in features]  # top right
        alone = model.local_decoder(cut)
    torch.testing.assert_close(stitched[..., :32, 32:], alone, rtol=1e-4, atol=1e-5)


def test_fast_head_starts_at_identity() -> None:
    model = PatchRefineNet("fast", grid=2, map_size=128, **TINY).eval()
    prob = torch.rand(1, 1, 128, 128)
    with torch.inference_mode():
        out = model(prob)
    torch.testing.assert_close(out.global_map, prob, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.local_map, prob, atol=1e-5, rtol=0)


def test_arch_kwargs_rebuild_and_validation() -> None:
    model = PatchRefineNet("fast", grid=4, map_size=256, width=0.25)
    kwargs = prn_arch_kwargs(model.arch)
    assert all(isinstance(v, int | float | str) for v in kwargs.values())
    clone = PatchRefineNet(**kwargs)
    assert clone.arch == model.arch
    clone.load_state_dict(model.state_dict())  # same parameter layout
    assert prn_arch("paper").downsample == 1 and prn_arch("fast").downsample > 1
    assert prn_arch("paper").norm == "batch" and prn_arch("fast").norm == "group"
    assert PRNArch(grid=8).name == "P64" and PRNArch(grid=2).name == "P4"
    with pytest.raises(ValueError, match="variant"):
        prn_arch("huge")
    with pytest.raises(ValueError, match="unknown"):
        prn_arch("paper", colour=3)
    with pytest.raises(ValueError, match="multiple"):
        prn_arch("paper", grid=8, map_size=500)


def test_training_mode_backward() -> None:
    model = PatchRefineNet("paper", grid=2, map_size=32, **TINY).train()
    out = model(torch.rand(1, 1, 32, 32))
    assert out.local_map is not None
    (out.global_map.mean() + out.local_map.mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_global_only_forward_skips_the_local_branch_and_keeps_the_global_map() -> None:
    torch.manual_seed(0)
    model = PatchRefineNet("fast", grid=4, map_size=128).eval()
    for p in model.parameters():  # away from the identity start, so the maps are non-trivial
        p.data.add_(0.05 * torch.randn_like(p))
    prob = torch.rand(2, 1, 128, 128)
    with torch.inference_mode():
        both = model(prob)
        calls = []
        hook = model.local_decoder.register_forward_hook(lambda *a: calls.append(1))
        only = model(prob, with_local=False)
        hook.remove()
    assert only.local_map is None and not calls
    assert torch.equal(only.global_map, both.global_map)
