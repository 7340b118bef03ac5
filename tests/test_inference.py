"""The inference rewrite of a trained multiplexer: the same function, other modules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pipeline.models import build_multiplexer, for_inference, load_checkpoint, optimize_for_inference
from pipeline.models.inference import (
    LAYOUT_2D_MAX_CHANNELS,
    LAYOUT_2D_MAX_GROUPED_CHANNELS,
    Conv2dOfConv1d,
    Pointwise,
    is_pointwise,
)

ARCHITECTURES = [
    ("conv", {"width1": 12, "width2": 16, "kernel_size": 4, "dilations": [2, 4, 8, 4, 2]}),
    ("conv", {"width1": 8, "width2": 8, "kernel_size": 3, "dilations": [1, 2, 4, 2, 1]}),
    ("conv_light", {}),
    ("fast", {"width": 16, "rank": 8, "kernel_size": 5, "dilations": [1, 2, 4]}),
]


def trained_like(name: str, kwargs: dict, seed: int = 0) -> nn.Module:
    """A built-in multiplexer in eval mode whose batch norms hold statistics far from the identity, as
    after training (a fresh one's mean 0 / variance 1 would hide a wrong fold)."""
    torch.manual_seed(seed)
    model = build_multiplexer(name, seq_len=60, n_targets=3, **kwargs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.3, 3.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    return model.eval()


def one_hot_batch(B: int = 5, L: int = 60, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.zeros(B, 4, L)
    X.scatter_(1, torch.randint(0, 4, (B, 1, L), generator=g), 1.0)
    return X


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    return bool((a - b).abs().max() <= rel * b.abs().max())


@pytest.mark.parametrize("layout_2d", [True, False], ids=["2d", "1d"])
@pytest.mark.parametrize(("name", "kwargs"), ARCHITECTURES, ids=lambda a: str(a))
def test_rewrite_keeps_the_function_on_each_device(name, kwargs, layout_2d, device):
    model = trained_like(name, kwargs).to(device)
    X = one_hot_batch().to(device)
    with torch.no_grad():
        expected = model(X)
        fast = optimize_for_inference(copy.deepcopy(model), layout_2d=layout_2d)
        got = fast(X)
    assert got.shape == expected.shape == (5, 3, 4, 60) and got.is_contiguous()
    assert close(got, expected)
    assert fast.layout_2d is layout_2d and not fast.training
    modules = list(fast.modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in modules)  # every batch norm folded
    assert not any(is_pointwise(m) for m in modules)  # every 1x1 convolution a matrix product
    assert any(isinstance(m, Pointwise) for m in modules)
    assert any(isinstance(m, Conv2dOfConv1d) for m in modules) is layout_2d
    assert all(m.inplace for m in modules if isinstance(m, nn.ReLU))


def test_default_layout_is_2d_on_the_cpu_for_narrow_networks_only():
    model = optimize_for_inference(trained_like("conv_light", {}))
    assert model.layout_2d is True  # the parameters are on the CPU, every convolution 32 channels wide
    wide = {"width1": 8, "width2": LAYOUT_2D_MAX_CHANNELS + 1, "kernel_size": 2, "dilations": [2, 2, 2, 2, 2]}
    model = trained_like("conv", wide)
    X = one_hot_batch()
    with torch.no_grad():
        expected = model(X)
        fast = optimize_for_inference(copy.deepcopy(model))
        assert close(fast(X), expected)
    assert fast.layout_2d is False  # as the BelugaMultiplexer (1,280 channels): the 1-D layout is faster there
    assert [m.plain_out for m in fast.modules() if isinstance(m, Pointwise)] == [False, True]
    depthwise = {"width": LAYOUT_2D_MAX_GROUPED_CHANNELS + 1, "rank": 4, "kernel_size": 3, "dilations": [1]}
    assert optimize_for_inference(trained_like("fast", depthwise)).layout_2d is False
    assert optimize_for_inference(trained_like("fast", {**depthwise, "width": 64})).layout_2d is True


def test_a_batch_norm_left_unfolded_keeps_the_1d_layout():
    model = trained_like("conv_light", {})
    model.model_one[1].track_running_stats = False  # a batch norm without running statistics is not folded
    model.model_one[1].running_mean = model.model_one[1].running_var = None
    with torch.no_grad():
        X = one_hot_batch()
        expected = model(X)
        fast = optimize_for_inference(copy.deepcopy(model), layout_2d=True)
        assert close(fast(X), expected)
    assert fast.layout_2d is False
    assert sum(isinstance(m, nn.BatchNorm1d) for m in fast.modules()) == 1


def test_a_model_of_the_user_is_left_as_it_is():
    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(4, 8, 1)
            self.bn = nn.Sequential(nn.Conv1d(8, 8, 3, padding=1), nn.BatchNorm1d(8))

        def forward(self, X: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(X))

    mine = Mine().train()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    assert optimize_for_inference(mine) is mine and not mine.training
    assert isinstance(mine.conv, nn.Conv1d) and isinstance(mine.bn[1], nn.BatchNorm1d)
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())


def test_bf16_autocast_runs_on_the_rewritten_model():
    model = trained_like("conv_light", {})
    X = one_hot_batch()
    with torch.no_grad():
        expected = for_inference(copy.deepcopy(model), "bf16")(X)
        got = for_inference(optimize_for_inference(model), "bf16")(X)
    assert got.dtype == torch.float32
    assert close(got, expected, rel=0.05)  # two bf16 computations of one function


def test_load_checkpoint_rewrites_unless_asked_not_to(trained_run):
    X = one_hot_batch(L=80)
    fast, meta = load_checkpoint(trained_run / "best.pt")
    plain, meta_plain = load_checkpoint(trained_run / "best.pt", optimize=False)
    assert meta == meta_plain
    assert any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fast.modules())
    with torch.no_grad():
        assert close(fast(X), plain(X))
