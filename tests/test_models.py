"""Base models, multiplexers and safe weight loading."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import DEMO_KWARGS, TOY_MODELS

from pipeline.core.encoding import one_hot
from pipeline.errors import UserError
from pipeline.ism import saturation_mutagenesis
from pipeline.models import (
    Beluga,
    BelugaMultiplexer,
    ConvMultiplexer,
    DemoBase,
    build_base,
    build_multiplexer,
    load_weights,
    positional_ramp,
)
from pipeline.models.motifs import DEMO_MOTIFS

# ------------------------------------------------------------------------------------------------
# Beluga: the published state dict (Conv2d weights [out, in, 1, 8]) loads unchanged
# ------------------------------------------------------------------------------------------------

PUBLISHED_BELUGA = {
    "model.0.0.weight": (320, 4, 1, 8),
    "model.0.0.bias": (320,),
    "model.0.2.weight": (320, 320, 1, 8),
    "model.0.2.bias": (320,),
    "model.0.6.weight": (480, 320, 1, 8),
    "model.0.6.bias": (480,),
    "model.0.8.weight": (480, 480, 1, 8),
    "model.0.8.bias": (480,),
    "model.0.12.weight": (640, 480, 1, 8),
    "model.0.12.bias": (640,),
    "model.0.14.weight": (640, 640, 1, 8),
    "model.0.14.bias": (640,),
    "model.1.2.1.weight": (2003, 67840),
    "model.1.2.1.bias": (2003,),
    "model.1.4.1.weight": (2002, 2003),
    "model.1.4.1.bias": (2002,),
}
"""Keys and shapes of the published ``deepsea.beluga.pth``."""


def published_beluga_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with exactly the published keys and shapes (scaled like a trained net)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in PUBLISHED_BELUGA.items():
        fan_in = int(np.prod(PUBLISHED_BELUGA[key.replace(".bias", ".weight")][1:]))
        state[key] = torch.randn(shape, generator=g) / fan_in**0.5
    return state


def published_beluga_forward(state: dict[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """The published Conv2d Beluga computed directly from its state dict, on ``X [B, 4, L]``."""
    h = X[:, :, None, :]  # [B, 4, 1, L]
    for i, key in enumerate(["model.0.0", "model.0.2", "model.0.6", "model.0.8", "model.0.12", "model.0.14"]):
        h = F.relu(F.conv2d(h, state[f"{key}.weight"], state[f"{key}.bias"]))
        if i in (1, 3):
            h = F.max_pool2d(h, (1, 4), (1, 4))
    h = h.reshape(h.shape[0], -1)
    h = F.relu(F.linear(h, state["model.1.2.1.weight"], state["model.1.2.1.bias"]))
    return torch.sigmoid(F.linear(h, state["model.1.4.1.weight"], state["model.1.4.1.bias"]))


@pytest.fixture(scope="module")
def beluga_state() -> dict[str, torch.Tensor]:
    return published_beluga_state()


@pytest.fixture(scope="module")
def beluga_file(tmp_path_factory: pytest.TempPathFactory, beluga_state) -> Path:
    path = tmp_path_factory.mktemp("beluga") / "deepsea.beluga.pth"
    torch.save(beluga_state, path)
    return path


@pytest.fixture(scope="module")
def beluga_model() -> Beluga:
    """An unloaded Beluga (load_weights checks keys and shapes before touching it)."""
    return Beluga().eval()


def test_beluga_loads_the_published_layout(beluga_file, beluga_state):
    model = build_base("beluga", weights=beluga_file)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("AGCT"), size=2000)) for _ in range(2)]
    X = torch.from_numpy(np.stack([one_hot(s) for s in seqs])).float()
    X[1, :, 100:110] = 0  # N columns
    with torch.no_grad():
        y = model(X)
        expected = published_beluga_forward(beluga_state, X)
    assert y.shape == (2, 2002)
    assert ((y > 0) & (y < 1)).all()
    assert expected.std() > 1e-3  # the reference computation is not degenerate
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)
    # the loaded Conv1d weights are the published Conv2d ones without the singleton axis
    assert torch.equal(model.state_dict()["model.0.2.weight"], beluga_state["model.0.2.weight"][:, :, 0, :])


@pytest.mark.parametrize(
    "change, key",
    [
        ({"model.1.4.1.weight": torch.zeros(2001, 2003)}, "model.1.4.1.weight"),
        ({"model.0.6.weight": torch.zeros(480, 320, 1, 7)}, "model.0.6.weight"),
        ({"model.0.14.bias": None}, "model.0.14.bias"),
        ({"model.2.weight": torch.zeros(3)}, "model.2.weight"),
    ],
)
def test_beluga_rejects_wrong_shapes_and_keys(beluga_model, beluga_state, change, key):
    state = dict(beluga_state)
    for k, v in change.items():
        if v is None:
            del state[k]
        else:
            state[k] = v
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_weights(beluga_model, state)


def test_beluga_file_for_another_length_is_rejected_naming_the_key(tmp_path):
    small = Beluga(seq_len=400)
    path = tmp_path / "small.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(UserError, match=r"model\.1\.2\.1\.weight"):
        build_base("beluga", weights=path)
    assert build_base("beluga", weights=path, seq_len=400).seq_len == 400


class _Evil:
    """Pickles to a call that creates ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Evil(marker)}, path)
    with pytest.raises(UserError, match="evil.pth"):
        build_base("demo", weights=path)
    with pytest.raises(UserError):
        build_multiplexer("conv", weights=path, seq_len=16, n_targets=2)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_weights_file_problems_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_base("demo", weights=tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="junk.pth"):
        build_base("demo", weights=junk)
    not_tensors = tmp_path / "numbers.pth"
    torch.save({"conv1.weight": 3}, not_tensors)
    with pytest.raises(UserError, match="conv1.weight"):
        build_base("demo", weights=not_tensors)


def test_demo_weights_round_trip(tmp_path):
    model = DemoBase(**DEMO_KWARGS, seed=3)
    path = tmp_path / "demo.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = build_base("demo", weights=path, **DEMO_KWARGS, seed=0)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


# ------------------------------------------------------------------------------------------------
# multiplexers
# ------------------------------------------------------------------------------------------------


def test_beluga_multiplexer_layout():
    model = build_multiplexer("beluga_multiplexer")
    assert isinstance(model, BelugaMultiplexer)
    n_params = sum(p.numel() for p in model.parameters())
    assert 200e6 < n_params < 205e6
    blocks = {k.split(".")[0] for k in model.state_dict()}
    assert blocks == {f"model_{n}" for n in ("one", "two", "three", "four", "five", "six", "final")}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["model_one.0.weight"] == (640, 5, 8)
    assert shapes["model_one.3.weight"] == (640, 640, 8)
    assert shapes["model_two.0.weight"] == (1280, 640, 8)
    assert shapes["model_six.3.weight"] == (1280, 1280, 8)
    assert shapes["model_final.0.weight"] == (2002 * 4, 1280, 1)
    assert shapes["model_final.3.weight"] == (2002 * 4, 2002 * 4, 1)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv1d)}
    assert [convs[f"model_{b}.0"].dilation[0] for b in ("two", "three", "four", "five", "six")] == [4, 16, 64, 16, 4]
    assert convs["model_one.0"].padding[0] == 3 and convs["model_one.3"].padding[0] == 4
    assert convs["model_two.0"].padding[0] == 14 and convs["model_three.0"].padding[0] == 56
    assert convs["model_four.0"].padding[0] == 224


def test_positional_ramp_l2000_values():
    ramp = positional_ramp(2000)
    assert ramp.shape == (2000,) and ramp.dtype == torch.float32
    thousandths = np.concatenate([np.arange(0, 1001), np.arange(999, 0, -1)])
    assert torch.equal(ramp, torch.tensor(thousandths / 1000, dtype=torch.float32))
    assert ramp[0] == 0 and ramp[1000] == 1 and ramp[1] == torch.tensor(0.001) and ramp[-1] == torch.tensor(0.001)
    assert np.array_equal(np.round(ramp.double().numpy() * 1000).astype(int), thousandths)
    assert positional_ramp(10, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("seq_len", [31, 32])
@pytest.mark.parametrize("kernel_size", [4, 5])
def test_conv_multiplexer_output_shape(seq_len, kernel_size):
    torch.manual_seed(0)
    model = build_multiplexer(
        "conv", seq_len=seq_len, n_targets=3, width1=6, width2=6, kernel_size=kernel_size, dilations=[2, 2, 4, 2, 2]
    ).eval()
    X = torch.from_numpy(one_hot("ACGTN" * 7)[:, :seq_len][None].repeat(2, 0)).float()
    with torch.no_grad():
        y = model(X)
    assert y.shape == (2, 3, 4, seq_len)
    assert torch.isfinite(y).all()


def test_conv_multiplexer_rejects_bad_arguments():
    with pytest.raises(UserError, match="dilation"):
        build_multiplexer("conv", seq_len=32, n_targets=2, kernel_size=4, dilations=[1, 2, 2, 2, 2])
    with pytest.raises(UserError, match="5"):
        build_multiplexer("conv", seq_len=32, n_targets=2, dilations=[2, 2])
    with pytest.raises(UserError, match="bogus"):
        build_multiplexer("conv", seq_len=32, n_targets=2, bogus=1)
    model = ConvMultiplexer(seq_len=32, n_targets=2, width1=4, width2=4, kernel_size=3, dilations=[1] * 5)
    with pytest.raises(ValueError, match="32"):
        model(torch.zeros(1, 4, 31))


def test_unknown_model_names():
    with pytest.raises(UserError, match="resnet"):
        build_base("resnet")
    with pytest.raises(UserError, match="resnet"):
        build_multiplexer("resnet")


# ------------------------------------------------------------------------------------------------
# user models by import path
# ------------------------------------------------------------------------------------------------

USER_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Mean(nn.Module):
        def __init__(self, n_targets=2, scale=1.0):
            super().__init__()
            self.linear = nn.Linear(4, n_targets)
            self.scale = scale

        def forward(self, X):
            return torch.sigmoid(self.scale * self.linear(X.mean(dim=2)))

    NOT_A_MODULE = 3
    """
)


def test_user_model_from_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL)
    model = build_base(f"{path}:Mean", n_targets=5, scale=2.0)
    assert type(model).__name__ == "Mean" and model.scale == 2.0
    assert model(torch.zeros(3, 4, 20)).shape == (3, 5)
    state = tmp_path / "w.pth"
    torch.save(model.state_dict(), state)
    again = build_base(f"{path}:Mean", weights=state, n_targets=5)
    assert torch.equal(again.linear.weight, model.linear.weight)


def test_user_model_from_package(tmp_path, monkeypatch):
    package = tmp_path / "userpkg_for_tests"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_base("userpkg_for_tests.nets:Mean", n_targets=3)
    assert model(torch.zeros(1, 4, 8)).shape == (1, 3)
    mux = build_multiplexer("userpkg_for_tests.nets:Mean", n_targets=2)
    assert type(mux).__name__ == "Mean"


def test_user_model_errors(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL)
    with pytest.raises(UserError, match="missing.py"):
        build_base(f"{tmp_path / 'missing.py'}:Mean")
    with pytest.raises(UserError, match="Nope"):
        build_base(f"{path}:Nope")
    with pytest.raises(UserError, match="not an nn.Module"):
        build_base(f"{path}:NOT_A_MODULE")
    with pytest.raises(UserError, match="no_such_package_xyz"):
        build_base("no_such_package_xyz.mod:Class")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserError, match="boom"):
        build_base(f"{broken}:Anything")


# ------------------------------------------------------------------------------------------------
# demo base model
# ------------------------------------------------------------------------------------------------


def test_demo_base_is_deterministic():
    a, b = DemoBase(), DemoBase()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    X = torch.from_numpy(one_hot("ACGT" * 50)[None]).float()
    with torch.no_grad():
        y = a(X)
    assert y.shape == (1, 16)
    assert ((y > 0) & (y < 1)).all()
    assert not torch.equal(DemoBase(seed=1).conv2.weight, a.conv2.weight)


def test_demo_base_rejects_short_windows_and_narrow_convs():
    with pytest.raises(ValueError, match="64"):
        DemoBase(seq_len=63)
    DemoBase(seq_len=64, n_targets=2, channels=10, hidden=4)
    with pytest.raises(ValueError, match="channels"):
        DemoBase(channels=len(DEMO_MOTIFS) - 1)


@pytest.mark.parametrize("motif_name", ["AP1", "CTCF", "TATA"])
def test_demo_base_ism_peaks_at_a_planted_motif(motif_name):
    model = DemoBase()
    motif = dict(DEMO_MOTIFS)[motif_name]
    L = model.seq_len
    at = L // 2 - len(motif) // 2
    seq = "A" * at + motif + "A" * (L - at - len(motif))
    X = torch.from_numpy(one_hot(seq)[None]).float()
    y = saturation_mutagenesis(model, X, engine="naive")[0]  # [F, 4, L]
    per_position = y.abs().amax(dim=(0, 1))
    inside = per_position[at : at + len(motif)]
    outside = torch.cat([per_position[:at], per_position[at + len(motif) :]])
    assert at <= int(per_position.argmax()) < at + len(motif)
    assert inside.max() > 2 * outside.max()
    # without the motif the map is much weaker
    background = saturation_mutagenesis(model, torch.from_numpy(one_hot("A" * L)[None]).float(), engine="naive")
    assert background.abs().max() < inside.max() / 2


def test_base_from_identity_without_weights_uses_the_spec_seed():
    """A base model recorded without weights is rebuilt exactly as ``distill`` built it (seeded)."""
    from pipeline.models import base_identity, build_base, build_base_from_identity

    name = f"{TOY_MODELS}:DefaultInitNet"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        as_distilled = build_base(name, seq_len=10)
    identity = base_identity(name, None, {"seq_len": 10}, as_distilled)
    rebuilt = build_base_from_identity(identity, seed=7)
    for a, b in zip(as_distilled.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(a, b)
    other = build_base_from_identity(identity, seed=8)
    assert not torch.equal(other.dense.weight, as_distilled.dense.weight)


def test_fast_multiplexer_shapes_receptive_field_and_training(tiny_store, tiny_spec, tmp_path):
    import torch

    from pipeline.models import build_multiplexer, load_checkpoint
    from pipeline.train import train, train_config

    m = build_multiplexer("fast", seq_len=80, n_targets=4, width=8, rank=8, dilations=[1, 2]).eval()
    X = torch.zeros(2, 4, 80)
    X[:, 0] = 1
    assert m(X).shape == (2, 4, 4, 80)
    # a change at position 40 reaches exactly the receptive field 1 + (k - 1)(1 + 1 + 2) = 33 around it
    Y = X.clone()
    Y[:, :, 40] = 0
    Y[:, 2, 40] = 1
    with torch.no_grad():
        moved = (m(Y) - m(X)).abs().sum(dim=(0, 1, 2)) > 0
    assert moved.nonzero().min() == 40 - 16 and moved.nonzero().max() == 40 + 16
    cfg = train_config(tiny_spec.train, multiplexer="fast", kwargs={"width": 8, "rank": 8}, steps=2, valid_every=2)
    train(tiny_store, str(tmp_path / "run"), cfg, device="cpu", progress=False)
    model, meta = load_checkpoint(tmp_path / "run" / "best.pt")
    assert meta["architecture"]["name"] == "fast" and type(model).__name__ == "FastMultiplexer"


def test_conv_light_is_conv_at_width_32():
    import torch

    from pipeline.models import build_multiplexer

    light = build_multiplexer("conv_light", seq_len=80, n_targets=4)
    conv = build_multiplexer("conv", seq_len=80, n_targets=4, width1=32, width2=32, dilations=[2, 4, 8, 4, 2])
    assert light.config == conv.config
    conv.load_state_dict(light.state_dict())  # the same parameters, names and shapes
    X = torch.zeros(2, 4, 80)
    X[:, 1] = 1
    light.eval(), conv.eval()
    with torch.no_grad():
        assert torch.equal(light(X), conv(X))
