"""Training at scale: DDP under torchrun equals one process, exact resume after SIGKILL, options.

The tests that start processes (torchrun, the console script) are marked ``processes``."""

from __future__ import annotations

import csv
import math
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers import run_cli, start_cli, torchrun

from pipeline.models import read_checkpoint
from pipeline.train import lr_factor, sample_losses, train, train_config
from pipeline.train.sync_bn import SyncBatchNorm, convert_sync_batchnorm


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


COMMON = [
    "--steps",
    "10",
    "--batch-size",
    "6",
    "--lr",
    "0.0001",
    "--log-every",
    "1",
    "--valid-every",
    "5",
    "--schedule",
    "constant",
    "--device",
    "cpu",
]


@pytest.mark.processes
def test_ddp_two_processes_follow_the_one_process_loss_curve(tmp_path, tiny_store):
    """Same global batch on 2 ranks (synchronized BatchNorm, gloo) and on 1 process. The curves agree
    to float rounding amplified by training (Adam normalises near-zero gradients, and BatchNorm over
    nearly constant channels amplifies differences), hence a small learning rate and rel=1e-3."""
    torchrun(2, "train", tiny_store, "--run-dir", tmp_path / "ddp", *COMMON)
    run_cli("train", tiny_store, "--run-dir", tmp_path / "one", *COMMON)
    a, b = metrics(tmp_path / "ddp"), metrics(tmp_path / "one")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(i) for i in range(1, 11)]
    loss_a = [float(r["train_loss"]) for r in a]
    loss_b = [float(r["train_loss"]) for r in b]
    assert loss_a[:2] == pytest.approx(loss_b[:2], rel=1e-5)
    assert loss_a == pytest.approx(loss_b, rel=1e-3)
    assert loss_a[-1] < loss_a[0]  # it learns
    assert [float(r["valid_loss"]) for r in a if r["valid_loss"]] == pytest.approx(
        [float(r["valid_loss"]) for r in b if r["valid_loss"]], rel=1e-3
    )
    assert [int(r["samples"]) for r in a] == [int(r["samples"]) for r in b] == [6, 10, 16, 20, 26, 30, 36, 40, 46, 50]
    assert (
        read_checkpoint(tmp_path / "ddp" / "last.pt")["model"].keys()
        == read_checkpoint(tmp_path / "one" / "last.pt")["model"].keys()
    )


@pytest.mark.processes
def test_sigkill_after_a_checkpoint_then_resume_equals_uninterrupted(tmp_path, tiny_store):
    args = ["--steps", "12", "--batch-size", "4", "--lr", "0.01", "--valid-every", "3", "--warmup-steps", "2"]
    args += ["--device", "cpu"]
    run_cli("train", tiny_store, "--run-dir", tmp_path / "straight", *args)
    run = tmp_path / "killed"
    proc = start_cli("train", tiny_store, "--run-dir", run, *args)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    stopped_at = read_checkpoint(run / "last.pt")["step"]
    assert 3 <= stopped_at <= 12
    run_cli("train", tiny_store, "--run-dir", run, *args, "--resume")
    a, b = read_checkpoint(tmp_path / "straight" / "last.pt"), read_checkpoint(run / "last.pt")
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in ("epoch", "position", "samples", "best_valid_loss"):
        assert a["training"][key] == b["training"][key]
    assert a["training"]["scheduler"] == b["training"]["scheduler"]


def test_sample_losses_mask_reference_and_n_entries():
    torch.manual_seed(0)
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 10)), 4).permute(0, 2, 1).float()
    X[1, :, 3] = 0
    y = torch.randn(2, 3, 4, 10)
    y_hat = torch.randn(2, 3, 4, 10)
    plain = sample_losses(y_hat, y, X, False)
    assert torch.allclose(plain, ((y_hat - y) ** 2).flatten(1).mean(1))
    masked = sample_losses(y_hat, y, X, True)
    changed = y_hat.clone()
    changed[X.bool().unsqueeze(1).expand_as(changed)] += 100.0  # only reference-base entries
    changed[1, :, :, 3] -= 50.0  # and the N column
    assert torch.allclose(sample_losses(changed, y, X, True), masked)
    assert (masked < plain).all()


def test_effect_weighted_loss_is_the_weighted_mean_of_squared_errors():
    torch.manual_seed(0)
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 10)), 4).permute(0, 2, 1).float()
    y, y_hat = torch.randn(2, 3, 4, 10), torch.randn(2, 3, 4, 10)
    plain = sample_losses(y_hat, y, X, False)
    assert torch.equal(sample_losses(y_hat, y, X, False, 0.0), plain)
    # every |y| equal: every weight equal, so the weighted loss is the plain one for any weight
    same = torch.full_like(y, 0.3) * torch.sign(y)
    for a in (0.5, 10.0):
        assert torch.allclose(sample_losses(y_hat, same, X, False, a), sample_losses(y_hat, same, X, False))
        # an independent computation of sum(w err^2) / sum(w), w = 1 + a |y| / mean |y|
        for b in range(2):
            size = y[b].abs().double().numpy().ravel()
            w = 1 + a * size / size.mean()
            sq = ((y_hat[b] - y[b]).double().numpy().ravel()) ** 2
            got = float(sample_losses(y_hat[b : b + 1], y[b : b + 1], X[b : b + 1], False, a))
            assert got == pytest.approx(float((w * sq).sum() / w.sum()), rel=1e-5)
    # the same error costs more on a larger-|y| entry
    y2 = torch.zeros(1, 1, 4, 10)
    y2[0, 0, 1, 2], y2[0, 0, 2, 5] = 2.0, 0.1
    big, small = y2.clone(), y2.clone()
    big[0, 0, 1, 2] += 0.5
    small[0, 0, 2, 5] += 0.5
    assert sample_losses(big, y2, X[:1], False) == sample_losses(small, y2, X[:1], False)
    assert sample_losses(big, y2, X[:1], False, 1.0) > sample_losses(small, y2, X[:1], False, 1.0)
    # a window without effects: the plain mean, not a division by zero
    zero = torch.zeros(1, 3, 4, 10)
    assert torch.allclose(
        sample_losses(y_hat[:1], zero, X[:1], False, 5.0), sample_losses(y_hat[:1], zero, X[:1], False)
    )


def test_lr_schedule():
    cfg = train_config(_default(), steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    factors = [lr_factor(s, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    const = train_config(_default(), schedule="constant", warmup_steps=0)
    assert {lr_factor(s, const) for s in range(0, 50, 7)} == {1.0}


def _default():
    from pipeline.core.spec import TrainSpec

    return TrainSpec()


@pytest.mark.parametrize("options", [{"amp": "bf16"}, {"grad_accum": 2}, {"loss_mask": True, "clip_grad": 0.5}])
def test_training_options_run(tmp_path, tiny_spec, tiny_store, options):
    cfg = train_config(tiny_spec.train, steps=4, valid_every=2, batch_size=4, **options)
    result = train(tiny_store, str(tmp_path / "run"), cfg, device="cpu", progress=False)
    assert result.step == 4
    rows = metrics(tmp_path / "run")
    assert rows and all(math.isfinite(float(r["train_loss"])) for r in rows)
    saved = read_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["train"][next(iter(options))] == next(iter(options.values()))


def test_fp16_needs_cuda(tmp_path, tiny_spec, tiny_store):
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="fp16 needs CUDA"):
        train(tiny_store, str(tmp_path / "r"), train_config(tiny_spec.train, amp="fp16"), device="cpu", progress=False)


def test_sync_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(3)
    sync = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(3)), "cpu")[0]
    assert isinstance(sync, SyncBatchNorm)
    x = torch.randn(4, 3, 5)
    assert torch.allclose(bn(x), sync(x))
    assert torch.allclose(bn.running_mean, sync.running_mean)


@pytest.mark.slow
def test_compile_option(tmp_path, tiny_spec, tiny_store):
    cfg = train_config(tiny_spec.train, steps=2, valid_every=2, batch_size=4, compile=True)
    assert train(tiny_store, str(tmp_path / "run"), cfg, device="cpu", progress=False).step == 2
    assert "model_one.0.weight" in read_checkpoint(tmp_path / "run" / "last.pt")["model"]


def test_validation_loss_is_the_effect_weighted_loss_when_asked(tiny_store: str):
    from pipeline.core.runtime import Launch
    from pipeline.models import build_multiplexer
    from pipeline.store import open_store
    from pipeline.train import validate
    from pipeline.train.data import StoreDataset
    from pipeline.train.feed import on_device

    store = open_store(tiny_store)
    torch.manual_seed(0)
    model = build_multiplexer("fast", seq_len=store.seq_len, n_targets=store.n_targets, width=8, rank=4)
    ds = StoreDataset(tiny_store, "valid")
    X, y = on_device(*ds.__getitems__(list(range(len(ds)))), torch.device("cpu"))
    with torch.no_grad():
        y_hat = model.eval()(X)
    cpu, one = torch.device("cpu"), Launch()
    plain, wp = validate(model, ds, 3, cpu, one)
    assert plain == pytest.approx(float(((y_hat - y) ** 2).mean()), rel=1e-5)
    weighted, wp2 = validate(model, ds, 3, cpu, one, effect_weight=2.0)
    assert weighted == pytest.approx(float(sample_losses(y_hat, y, X, False, 2.0).double().mean()), rel=1e-5)
    assert wp2 == wp and weighted != pytest.approx(plain)


def test_effect_weight_is_recorded_and_trains(tiny_store: str, tmp_path: Path):
    cfg = train_config(_default(), steps=4, batch_size=4, valid_every=2, effect_weight=3.0)
    result = train(tiny_store, str(tmp_path / "run"), cfg, device="cpu", progress=False)
    assert read_checkpoint(result.best)["train"]["effect_weight"] == 3.0
    assert math.isfinite(result.last_metrics["valid_loss"])
