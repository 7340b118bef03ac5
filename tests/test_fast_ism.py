"""The fast (incremental) ISM engine equals the naive one on every supported layer kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core.commands import DistillOptions
from pipeline.core.runtime import exact_float32
from pipeline.errors import UserError
from pipeline.ism import (
    UnsupportedModelError,
    build_plan,
    choose_engine,
    fast_ism,
    naive_ism,
    saturation_mutagenesis,
    supports,
    variant_index,
)
from pipeline.models import Beluga, DemoBase

ALT_TOL = 1e-5
LOGFOLD_TOL = 1e-3


def random_onehot(batch: int, length: int, *, n_columns: tuple[int, ...] = (), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = nn.functional.one_hot(torch.randint(0, 4, (batch, length), generator=g), 4).permute(0, 2, 1).float()
    for b in range(batch):
        for j in n_columns:
            X[b, :, j] = 0.0
    return X


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


class ValidConvNet(nn.Module):
    """DeepSEA-like: valid convs, max and avg pooling that drop trailing columns, two Linear layers."""

    def __init__(self, L: int = 101) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(4, 6, 5),
            nn.ReLU(),
            nn.MaxPool1d(3),
            nn.Conv1d(6, 5, 3),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.AvgPool1d(2),
        )
        n = ((L - 4) // 3 - 2) // 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(5 * n, 7), nn.ReLU(), nn.Linear(7, 3), nn.Sigmoid())

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(X))


class PaddedDilatedNet(nn.Module):
    """Zero padding (int and 'same'), dilation, groups, BatchNorm and smooth activations."""

    def __init__(self, L: int = 64) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 4, padding=2)
        self.a1 = nn.ELU()
        self.c2 = nn.Conv1d(8, 8, 3, padding="same", dilation=2, groups=2)
        self.bn = nn.BatchNorm1d(8)
        self.a2 = nn.GELU()
        self.p = nn.MaxPool1d(4)
        self.c3 = nn.Conv1d(8, 6, 3, padding=1)
        self.a3 = nn.Softplus()
        self.flat = nn.Flatten()
        n = (L + 1) // 4
        self.fc = nn.Linear(6 * n, 5)
        self.a4 = nn.Tanh()
        self.fc2 = nn.Linear(5, 4)
        self.out = nn.Sigmoid()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = self.p(self.a2(self.bn(self.c2(self.a1(self.c1(X))))))
        h = self.a3(self.c3(h))
        return self.out(self.fc2(self.a4(self.fc(self.flat(h)))))


class Reshape(nn.Module):
    """A parameter-free leaf module that only reshapes (like the published Beluga's Lambda)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


class Conv2dNet(nn.Module):
    """Published-Beluga style: Conv2d with (1, k) kernels on an unsqueezed input, MaxPool2d,
    a Lambda-like reshape module, and a view in forward."""

    def __init__(self, L: int = 90) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(4, 6, (1, 5)),
            nn.LeakyReLU(0.1),
            nn.MaxPool2d((1, 4), (1, 4)),
            nn.Conv2d(6, 6, (1, 3), padding=(0, 1), dilation=(1, 1)),
            nn.SiLU(),
        )
        self.reshape = Reshape()
        self.fc = nn.Linear(6 * ((L - 4) // 4), 3)
        self.out = nn.Sigmoid()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = self.convs(X.unsqueeze(2))
        return self.out(self.fc(self.reshape(h)))


class ViewFlattenNet(nn.Module):
    """Flatten by ``x.view`` inside forward, and no activation between conv and pool."""

    def __init__(self, L: int = 50) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 5, 7)
        self.pool = nn.AvgPool1d(5)
        self.fc = nn.Linear(5 * ((L - 6) // 5), 2)
        self.out = nn.Sigmoid()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.conv(X))
        return self.out(self.fc(h.view(h.shape[0], -1)))


def max_error_against_model(
    model: nn.Module, X: torch.Tensor, alt: torch.Tensor, positions: list[int], window: int = 0
) -> float:
    """Largest |alt - model(mutated X)| over every variant of sequence ``window`` at ``positions``."""
    _, pos, base = variant_index(X[window : window + 1])
    keep = torch.isin(pos, torch.tensor(positions))
    pos, base = pos[keep], base[keep]
    assert pos.numel() > 0
    Xv = X[[window] * pos.numel()].clone()
    rows = torch.arange(pos.numel())
    Xv[rows, :, pos] = 0
    Xv[rows, base, pos] = 1
    with torch.no_grad():
        direct = model(Xv)
    return (alt[window, :, base, pos].T - direct).abs().max().item()


def assert_fast_equals_naive(model: nn.Module, X: torch.Tensor, batch_size: int = 97) -> None:
    alt_naive, ref_naive = naive_ism(model, X, target="alt", batch_size=batch_size)
    alt_fast, ref_fast = fast_ism(model, X, target="alt", batch_size=batch_size)
    assert alt_fast.shape == alt_naive.shape
    assert torch.allclose(ref_fast, ref_naive, rtol=0, atol=1e-6)
    assert (alt_fast - alt_naive).abs().max().item() <= ALT_TOL
    lf_naive, _ = naive_ism(model, X, target="logfold", batch_size=batch_size)
    lf_fast, _ = fast_ism(model, X, target="logfold", batch_size=batch_size)
    assert (lf_fast - lf_naive).abs().max().item() <= LOGFOLD_TOL
    # exact zeros where they are zero by definition
    present = X.sum(dim=1) > 0
    at_ref = X.bool().unsqueeze(1).expand_as(lf_fast)
    assert (lf_fast[at_ref] == 0).all()
    assert (lf_fast.permute(0, 1, 3, 2)[~present.unsqueeze(1).expand(-1, lf_fast.shape[1], -1)] == 0).all()


@pytest.mark.parametrize(
    ("factory", "L"),
    [
        (ValidConvNet, 101),
        (ValidConvNet, 96),
        (PaddedDilatedNet, 64),
        (PaddedDilatedNet, 67),
        (Conv2dNet, 90),
        (ViewFlattenNet, 50),
    ],
)
def test_fast_equals_naive_on_every_layer_kind(factory, L):
    model = randomize(factory(L), seed=L)
    # N columns at both ends, in the middle and at pooling-block edges; two sequences batched together
    X = random_onehot(2, L, n_columns=(0, L // 2, L - 1), seed=L)
    X[1] = random_onehot(1, L, n_columns=(3, 4, 12), seed=L + 1)[0]
    assert_fast_equals_naive(model, X)


def test_fast_equals_naive_on_demo_base():
    model = DemoBase(seq_len=120, n_targets=5, channels=12, hidden=8)
    assert_fast_equals_naive(model, random_onehot(2, 120, n_columns=(7,), seed=3), batch_size=256)


def test_fast_equals_naive_on_beluga_subset():
    """Beluga's published layout (random weights), L = 400, two windows of different content and N
    columns, in chunks that do not divide L: every variant from the fast engine, a subset (both ends,
    pooling-block boundaries, the middle) checked against direct forward passes, in both windows."""
    torch.manual_seed(0)
    L = 400
    model = Beluga(seq_len=L, n_targets=2002).eval()
    X = random_onehot(2, L, n_columns=(10,), seed=1)
    X[1] = random_onehot(1, L, n_columns=(0, 200, 399), seed=2)[0]
    alt, ref = fast_ism(model, X, target="alt", batch_size=1000)  # 2 windows x 166 positions per chunk
    positions = [0, 1, 2, 7, 8, 9, 27, 28, 29, 30, 31, 199, 200, 383, 384, 385, 397, 398, 399]
    for window in (0, 1):
        assert max_error_against_model(model, X, alt, positions, window=window) <= ALT_TOL
    with torch.no_grad():
        assert torch.allclose(ref, model(X), rtol=0, atol=1e-6)
    assert (alt[1, :, :, [0, 200, 399]] == ref[1][:, None, None]).all()  # N columns keep the reference


@pytest.mark.parametrize("factory", [ValidConvNet, PaddedDilatedNet])
def test_fast_equals_naive_in_every_chunking(factory):
    """Windows of different content (one without N, one all N) batched in every shape the engine cuts
    them into: one position of one window per chunk (3), a partial last group of windows (8: groups
    of 2 of 3 windows), partial last chunks of positions (97), all of it in one chunk (100,000)."""
    L = 67
    model = randomize(factory(L), seed=7)
    X = random_onehot(4, L, seed=7)
    X[0, :, [0, 30]] = 0.0
    X[2, :, [5, 6, L - 1]] = 0.0
    X[3] = 0.0  # a window of N only: no variant, effects all zero
    alt_naive, ref_naive = naive_ism(model, X, target="alt", batch_size=4096)
    lf_naive, _ = naive_ism(model, X, target="logfold", batch_size=4096)
    for batch_size in (3, 8, 97, 100_000):
        alt, ref = fast_ism(model, X, target="alt", batch_size=batch_size)
        assert torch.allclose(ref, ref_naive, rtol=0, atol=1e-6)
        assert (alt - alt_naive).abs().max().item() <= ALT_TOL
        lf, _ = fast_ism(model, X, target="logfold", batch_size=batch_size)
        assert (lf - lf_naive).abs().max().item() <= LOGFOLD_TOL
        assert (lf[X.bool().unsqueeze(1).expand_as(lf)] == 0).all()  # reference bases
        assert (lf[3] == 0).all() and (lf[0, :, :, [0, 30]] == 0).all()  # N columns


def test_progress_counts_every_real_variant_once():
    L = 96
    model = randomize(ValidConvNet(L), seed=3)
    X = random_onehot(3, L, n_columns=(0, 50), seed=3)
    counts: list[int] = []
    fast_ism(model, X, batch_size=50, progress=counts.append)
    assert sum(counts) == variant_index(X)[0].numel() == 3 * 3 * (L - 2)
    assert len(counts) > 3 and min(counts) >= 0


def test_results_do_not_depend_on_how_windows_are_grouped():
    """A window's effects are the same whether it is computed alone or batched with others."""
    L = 64
    model = randomize(PaddedDilatedNet(L), seed=9)
    X = random_onehot(3, L, n_columns=(2, 40), seed=9)
    together, ref = fast_ism(model, X, target="logfold", batch_size=300)
    for i in range(3):
        alone, ref_alone = fast_ism(model, X[i : i + 1], target="logfold", batch_size=64)
        assert (alone[0] - together[i]).abs().max().item() <= LOGFOLD_TOL
        assert torch.allclose(ref_alone[0], ref[i], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_fast_equals_naive_on_full_beluga():
    """L = 2000, F = 2002: a subset of variants checked against the model (slow on CPU)."""
    torch.manual_seed(1)
    model = Beluga().eval()
    X = random_onehot(1, 2000, n_columns=(1000,), seed=2)
    alt, _ = fast_ism(model, X, target="alt", batch_size=512)
    positions = [0, 1, 15, 16, 999, 1001, 1984, 1985, 1998, 1999]
    assert max_error_against_model(model, X, alt, positions) <= ALT_TOL


def test_trailing_columns_dropped_by_pooling_have_exactly_zero_effect():
    L = 101  # conv 5 -> 97, pool 3 -> 32 (drops 1 column), conv 3 -> 30, pool 2 -> 15
    model = randomize(ValidConvNet(L), seed=5)
    y, _ = fast_ism(model, random_onehot(1, L, seed=5), target="logfold")
    # the last input position only reaches the conv output column 96, which pool 3 drops
    assert (y[0, :, :, L - 1] == 0).all()
    assert (y[0, :, :, L // 2] != 0).any()


def test_saturation_mutagenesis_engines_agree():
    model = randomize(ValidConvNet(96), seed=2)
    X = random_onehot(3, 96, n_columns=(40,), seed=2)
    fast = saturation_mutagenesis(model, X, engine="fast", target="diff")
    naive = saturation_mutagenesis(model, X, engine="naive", target="diff")
    assert (fast - naive).abs().max().item() <= ALT_TOL
    with pytest.raises(ValueError, match="unknown ISM engine"):
        saturation_mutagenesis(model, X, engine="quick")


class Strided(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 24, 2)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.conv(X).flatten(1)))


class OutsideOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3)
        self.fc = nn.Linear(4 * 48, 2)
        self.out = nn.Sigmoid()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = self.conv(X) * 2.0  # an operation outside any module
        return self.out(self.fc(h.flatten(1)))


class Softmaxed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3)
        self.norm = nn.Softmax(dim=1)
        self.fc = nn.Linear(4 * 48, 2)
        self.out = nn.Sigmoid()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(self.norm(self.conv(X)).flatten(1)))


@pytest.mark.parametrize(
    ("model", "L", "named"), [(Strided(), 50, "conv"), (OutsideOp(), 50, "conv"), (Softmaxed(), 50, "norm")]
)
def test_unsupported_models_are_named(model, L, named):
    model.eval()
    with pytest.raises(UnsupportedModelError, match=named):
        build_plan(model, L)
    reason = supports(model, L)
    assert reason is not None and named in reason
    notices: list[str] = []
    assert choose_engine(model, L, "auto", torch.device("cpu"), notices.append) == "naive"
    assert len(notices) == 1 and "naive" in notices[0]
    with pytest.raises(UserError, match="--engine fast"):
        choose_engine(model, L, "fast", torch.device("cpu"))
    with pytest.raises(UnsupportedModelError):
        saturation_mutagenesis(model, random_onehot(1, L), engine="fast")
    # the naive engine still works on it
    assert saturation_mutagenesis(model, random_onehot(1, L), engine="naive").shape == (1, 2, 4, L)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_fast_engine_runs_on_cuda_when_present():
    model = randomize(PaddedDilatedNet(64), seed=4).cuda()
    X = random_onehot(2, 64, n_columns=(0, 63), seed=4)
    with exact_float32():  # no TF32 for this test only: the caller's flags come back afterwards
        alt_cuda, _ = fast_ism(model, X, target="alt", device="cuda")
    alt_cpu, _ = naive_ism(model.cpu(), X, target="alt")
    assert np.abs((alt_cuda - alt_cpu).numpy()).max() <= ALT_TOL


def test_stores_from_fast_and_naive_engines_match(tmp_path, spec_dict):
    """The same spec distilled with each engine (float32 storage, so the comparison is not limited by
    float16 rounding) gives the same windows and targets within the engine tolerances."""
    from pipeline.core.spec import spec_from_dict
    from pipeline.distill import distill
    from pipeline.store import open_store

    spec = spec_from_dict(spec_dict(storage={"dtype": "float32"}, target="logfold"), base_dir=tmp_path)
    paths = {}
    for engine in ("fast", "naive"):
        paths[engine] = str(tmp_path / f"{engine}.zarr")
        summary = distill(spec, DistillOptions(store_path=paths[engine], engine=engine, device="cpu"), progress=False)
        assert summary.engine == engine
    fast, naive = open_store(paths["fast"]), open_store(paths["naive"])
    for split in spec.splits:
        for name in ("reference", "chrom", "center"):
            assert np.array_equal(fast.array(split, name)[:], naive.array(split, name)[:])
        assert np.abs(fast.array(split, "ref_pred")[:] - naive.array(split, "ref_pred")[:]).max() <= ALT_TOL
        lf_fast, lf_naive = fast.array(split, "targets")[:], naive.array(split, "targets")[:]
        assert np.abs(lf_fast - lf_naive).max() <= LOGFOLD_TOL
        assert np.abs(lf_fast).max() > 0
