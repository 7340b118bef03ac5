"""In-silico saturation mutagenesis: every variant computed, each in its place, nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_models import CountingModel, PositionDetector, TinyConvNet

from pipeline.core.encoding import one_hot
from pipeline.ism import (
    ENGINES,
    effects_from_alt,
    log_fold,
    log_unfold,
    mask_effects,
    naive_ism,
    saturation_mutagenesis,
    variant_index,
)

L = 24
F = 3


def make_batch(n_seqs: int = 3, seed: int = 0) -> torch.Tensor:
    """One-hot ``[n, 4, L]`` with a few N columns (none at the window ends of sequence 0)."""
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("AGCT"), size=L)) for _ in range(n_seqs)]
    seqs[0] = seqs[0][:7] + "N" + seqs[0][8:15] + "nN" + seqs[0][17:]
    if n_seqs > 1:
        seqs[1] = "N" + seqs[1][1:-1] + "R"  # unknown bases at both ends
    return torch.from_numpy(np.stack([one_hot(s) for s in seqs])).float()


def mutate(x: torch.Tensor, j: int, b: int) -> torch.Tensor:
    """Copy of one-hot ``x [4, L]`` with position ``j`` set to base ``b``."""
    out = x.clone()
    out[:, j] = 0
    out[b, j] = 1
    return out


@pytest.fixture
def model(device: torch.device) -> torch.nn.Module:
    return TinyConvNet(seq_len=L, n_targets=F).to(device)


def _direct(model: torch.nn.Module, x: torch.Tensor, j: int, b: int, device: torch.device):
    with torch.no_grad():
        alt = model(mutate(x, j, b)[None].to(device))[0].cpu()
        ref = model(x[None].to(device))[0].cpu()
    return alt, ref


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("j", [0, 1, L // 2, L - 2, L - 1])
def test_variant_effect_equals_direct_log_fold(model, device, engine, j):
    X = make_batch()
    y = saturation_mutagenesis(model, X, engine=engine, batch_size=5, device=device)
    assert y.shape == (X.shape[0], F, 4, L)
    assert y.dtype == torch.float32 and y.device.type == "cpu"
    x = X[0]
    ref_base = int(x[:, j].argmax())
    for b in range(4):
        if b == ref_base:
            continue
        alt, ref = _direct(model, x, j, b, device)
        torch.testing.assert_close(y[0, :, b, j], log_fold(alt, ref), rtol=1e-4, atol=1e-5)
        assert (y[0, :, b, j] != 0).any()


def test_naive_ism_equals_direct_for_every_variant(model, device):
    X = make_batch()
    y, ref_pred = naive_ism(model, X, batch_size=7, device=device)
    assert torch.equal(saturation_mutagenesis(model, X, engine="naive", batch_size=7, device=device), y)
    with torch.no_grad():
        torch.testing.assert_close(ref_pred, model(X.to(device)).cpu(), rtol=1e-5, atol=1e-6)
    for i in range(X.shape[0]):
        for j in range(L):
            if X[i, :, j].sum() == 0:
                continue
            for b in range(4):
                if X[i, b, j] == 1:
                    continue
                alt, _ = _direct(model, X[i], j, b, device)
                torch.testing.assert_close(y[i, :, b, j], log_fold(alt, ref_pred[i]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_engines_agree_with_naive_for_any_batch_size(model, device, engine):
    X = make_batch()
    y_naive = saturation_mutagenesis(model, X, engine="naive", batch_size=1000, device=device)
    for batch_size in (5, 64):
        y = saturation_mutagenesis(model, X, engine=engine, batch_size=batch_size, device=device)
        torch.testing.assert_close(y, y_naive, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_reference_bases_and_n_columns_are_exactly_zero(model, device, engine):
    X = make_batch()
    y = saturation_mutagenesis(model, X, engine=engine, device=device)
    at_ref = X.bool().unsqueeze(1).expand_as(y)
    assert at_ref.sum() > 0
    assert (y[at_ref] == 0).all()
    n_cols = (X.sum(dim=1) == 0).unsqueeze(1).unsqueeze(1).expand_as(y)
    assert n_cols.sum() > 0
    assert (y[n_cols] == 0).all()
    # and the real variants are (generically) not zero
    real = ~at_ref & ~n_cols
    assert (y[real] != 0).float().mean() > 0.9


@pytest.mark.parametrize("n_seqs, batch_size", [(1, 1), (1, 7), (3, 5), (3, 7), (3, 64), (3, 10_000)])
def test_number_of_forward_sequences(n_seqs, batch_size):
    X = make_batch(n_seqs)
    n_unknown = (X.sum(dim=1) == 0).sum(dim=1)  # [n]
    expected = int((3 * (L - n_unknown) + 1).sum())
    n_variants = int((3 * (L - n_unknown)).sum())
    counting = CountingModel(TinyConvNet(seq_len=L, n_targets=F))
    y, _ = naive_ism(counting, X, batch_size=batch_size)
    assert counting.n_sequences == expected
    assert max(counting.batch_sizes) <= batch_size
    if batch_size < n_variants and n_variants % batch_size:
        assert counting.batch_sizes[-1] == n_variants % batch_size  # the last partial batch is computed
    # nothing dropped: every real variant has an effect
    real = (X == 0) & (X.sum(dim=1, keepdim=True) > 0)
    assert int((y.abs().sum(dim=1) > 0)[real].sum()) == n_variants


def test_variant_index_enumerates_each_real_variant_once():
    X = make_batch()
    seq, pos, base = variant_index(X)
    assert seq.numel() == int((3 * (X.sum(dim=1) > 0).sum(dim=1)).sum())
    triples = set(zip(seq.tolist(), pos.tolist(), base.tolist()))
    assert len(triples) == seq.numel()
    assert all(X[s, b, p] == 0 and X[s, :, p].sum() == 1 for s, p, b in triples)


def test_diff_and_alt_targets(model, device):
    X = make_batch()
    y_lf, ref_pred = naive_ism(model, X, target="logfold", device=device)
    y_diff, _ = naive_ism(model, X, target="diff", device=device)
    y_alt, _ = naive_ism(model, X, target="alt", device=device)
    assert y_diff.shape == y_alt.shape == y_lf.shape
    i, j = 0, 3
    for b in range(4):
        if X[i, b, j] == 1:
            continue
        alt, ref = _direct(model, X[i], j, b, device)
        torch.testing.assert_close(y_alt[i, :, b, j], alt, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(y_diff[i, :, b, j], alt - ref, rtol=1e-4, atol=1e-6)
    real = ((X == 0) & (X.sum(dim=1, keepdim=True) > 0)).unsqueeze(1).expand_as(y_lf)
    ref_full = ref_pred[:, :, None, None].expand_as(y_alt)
    # diff is alt - ref; alt is the reference prediction where nothing is mutated
    torch.testing.assert_close(y_diff[real], (y_alt - ref_full)[real], rtol=1e-5, atol=1e-6)
    assert (y_diff[~real] == 0).all()
    assert torch.equal(y_alt[~real], ref_full[~real])
    # log-fold from alt and ref, and back
    torch.testing.assert_close(y_lf[real], log_fold(y_alt, ref_full)[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_unfold(ref_full, y_lf)[real], y_alt[real], rtol=1e-4, atol=1e-5)


def test_fast_engine_matches_naive(model, device):
    X = make_batch()
    fast = saturation_mutagenesis(model, X, engine="fast", target="alt", device=device)
    naive = saturation_mutagenesis(model, X, engine="naive", target="alt", device=device)
    torch.testing.assert_close(fast, naive, rtol=0, atol=1e-5)


def test_unknown_engine_and_target_and_bad_inputs(model):
    X = make_batch()
    with pytest.raises(ValueError, match="nope"):
        saturation_mutagenesis(model, X, engine="nope")
    with pytest.raises(ValueError, match="ratio"):
        naive_ism(model, X, target="ratio")
    with pytest.raises(ValueError, match="ratio"):
        effects_from_alt(X, X, "ratio")
    with pytest.raises(ValueError):
        naive_ism(model, X[0])
    with pytest.raises(ValueError):
        naive_ism(model, X, batch_size=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_log_unfold_inverts_log_fold(dtype, tol):
    grid = torch.tensor([1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999, 0.9999], dtype=dtype)
    alt, ref = torch.meshgrid(grid, grid, indexing="ij")
    lf = log_fold(alt, ref)
    assert lf.dtype == dtype
    back = log_unfold(ref, lf)
    torch.testing.assert_close(back, alt, rtol=tol, atol=tol)
    # and log_fold is 0 exactly when alt == ref, with the sign of alt - ref
    assert torch.equal(log_fold(grid, grid), torch.zeros_like(grid))
    assert torch.equal(torch.sign(lf), torch.sign(alt - ref))


def test_log_fold_matches_seed_definition():
    alt, ref, eps = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.6], dtype=torch.float64), 1e-6
    expected = np.log(((0.3 + eps) * (1 - 0.6 + eps)) / ((1 - 0.3 + eps) * (0.6 + eps)))
    assert float(log_fold(alt, ref)) == pytest.approx(expected, rel=1e-12)


def test_hand_placed_mutation_lands_at_f_b_j(device):
    position, base, target = 17, 2, 1  # base 2 is C
    model = PositionDetector(seq_len=L, n_targets=F, position=position, base=base, target=target).to(device)
    X = make_batch()
    X[0, :, position] = torch.tensor([1.0, 0, 0, 0])  # reference A at the position, so C is a variant
    X[2, :, position] = torch.tensor([0, 0, 0, 1.0])
    for target_kind in ("logfold", "diff"):
        y = saturation_mutagenesis(model, X[[0, 2]], engine="naive", target=target_kind, device=device)
        nonzero = torch.nonzero(y).tolist()
        assert nonzero == [[0, target, base, position], [1, target, base, position]]
        assert (y[:, target, base, position] > 0).all()


def test_hand_placed_reference_base_only_its_mutations_matter():
    position, base, target = 4, 3, 0
    model = PositionDetector(seq_len=L, n_targets=F, position=position, base=base, target=target)
    X = make_batch(1)
    X[0, :, position] = torch.tensor([0, 0, 0, 1.0])  # the reference already has base 3 there
    y = saturation_mutagenesis(model, X, engine="naive")
    nonzero = {tuple(t) for t in torch.nonzero(y[0]).tolist()}
    assert nonzero == {(target, b, position) for b in (0, 1, 2)}
    assert (y[0, target, :3, position] < 0).all()


def test_mask_effects_zeroes_reference_and_n():
    X = make_batch()
    y = torch.randn(X.shape[0], F, 4, L)
    masked = mask_effects(y, X)
    real = ((X == 0) & (X.sum(dim=1, keepdim=True) > 0)).unsqueeze(1).expand_as(y)
    assert torch.equal(masked[real], y[real])
    assert (masked[~real] == 0).all()
