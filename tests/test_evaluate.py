"""Accuracy metrics (weighted Pearson) and the evaluation report."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pytest
import torch

from pipeline.apply.evaluate import HIST_DPI, HIST_SIZE, evaluate, json_safe, pearson_histogram
from pipeline.core.commands import EvaluateOptions
from pipeline.errors import UserError
from pipeline.ism import mask_effects
from pipeline.metrics import PearsonAccumulator, nanmean, weighted_pearson
from pipeline.models import load_checkpoint
from pipeline.store import open_store


def numpy_weighted_pearson(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per target, Pearson over samples, bases and positions, each term weighted by ``|y_true|``."""
    out = []
    for f in range(y_true.shape[1]):
        a, b = y_true[:, f].ravel(), y_pred[:, f].ravel()
        w = np.abs(a)
        ma, mb = np.sum(w * a) / np.sum(w), np.sum(w * b) / np.sum(w)
        cov = np.sum(w * (a - ma) * (b - mb)) / np.sum(w)
        va, vb = np.sum(w * (a - ma) ** 2) / np.sum(w), np.sum(w * (b - mb) ** 2) / np.sum(w)
        out.append(cov / np.sqrt(va * vb))
    return np.array(out)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=(5, 3, 4, 11)) * rng.random((1, 3, 1, 1))
    y_true[:, :, 0, :] = 0  # a reference base: zero, so weight 0
    y_pred = 0.7 * y_true + rng.normal(scale=0.5, size=y_true.shape)
    y_pred[:, 2] = -y_pred[:, 2]
    return y_true, y_pred


def test_weighted_pearson_matches_numpy(pair):
    y_true, y_pred = pair
    r = weighted_pearson(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    assert r.shape == (3,) and r.dtype == torch.float64
    np.testing.assert_allclose(r.numpy(), numpy_weighted_pearson(y_true, y_pred), rtol=1e-10)
    assert r[0] > 0 and r[2] < 0


def test_weighted_pearson_differs_from_unweighted(pair):
    y_true, y_pred = pair
    y_pred = y_pred + np.abs(y_true) ** 2  # an error that grows with |y_true| changes the weighted metric
    acc = PearsonAccumulator(3)
    acc.update(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    assert not np.allclose(acc.weighted_pearson().numpy(), acc.pearson().numpy())


def test_unweighted_pearson_matches_corrcoef(pair):
    y_true, y_pred = pair
    acc = PearsonAccumulator(3)
    acc.update(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    expected = [np.corrcoef(y_true[:, f].ravel(), y_pred[:, f].ravel())[0, 1] for f in range(3)]
    np.testing.assert_allclose(acc.pearson().numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(
        acc.mse().numpy(), ((y_true - y_pred) ** 2).transpose(1, 0, 2, 3).reshape(3, -1).mean(axis=1), rtol=1e-12
    )


def test_streaming_equals_one_shot(pair):
    y_true, y_pred = pair
    one = PearsonAccumulator(3)
    one.update(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    streamed = PearsonAccumulator(3)
    for sl in (slice(0, 2), slice(2, 3), slice(3, 5)):
        streamed.update(torch.from_numpy(y_true[sl]), torch.from_numpy(y_pred[sl]))
    for name in ("weighted_pearson", "pearson", "mse"):
        np.testing.assert_allclose(getattr(streamed, name)().numpy(), getattr(one, name)().numpy(), rtol=1e-10)


def test_perfect_prediction_and_float32_inputs(pair):
    y_true, _ = pair
    t = torch.from_numpy(y_true).float()
    np.testing.assert_allclose(weighted_pearson(t, t).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weighted_pearson(t, 2 * t + 1).numpy(), 1.0, rtol=1e-6)


def test_target_without_effects_is_nan_and_nanmean_skips_it(pair):
    y_true, y_pred = pair
    y_true = y_true.copy()
    y_true[:, 1] = 0
    r = weighted_pearson(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    assert math.isnan(float(r[1]))
    assert nanmean(r) == pytest.approx(float((r[0] + r[2]) / 2))
    assert math.isnan(nanmean(torch.tensor([float("nan")])))


def test_shape_mismatch_is_an_error():
    acc = PearsonAccumulator(2)
    with pytest.raises(ValueError):
        acc.update(torch.zeros(1, 2, 4, 5), torch.zeros(1, 2, 4, 6))
    with pytest.raises(ValueError):
        acc.update(torch.zeros(1, 3, 4, 5), torch.zeros(1, 3, 4, 5))


def test_evaluate_writes_the_report(trained_run, tiny_store, tmp_path):
    out = tmp_path / "eval"
    report = evaluate(str(trained_run / "best.pt"), tiny_store, str(out), EvaluateOptions(device="cpu"), progress=False)
    saved = json.loads((out / "report.json").read_text())
    for key in (
        "checkpoint",
        "store",
        "split",
        "n_sequences",
        "seq_len",
        "n_targets",
        "target_kind",
        "weighted_pearson_mean",
        "pearson_mean",
        "mse",
        "seconds_per_sequence",
        "speedup_vs_naive_ism",
        "best_targets",
        "worst_targets",
        "per_target",
    ):
        assert key in saved, key
    assert report["report"] == str(out / "report.json")
    assert saved["split"] == "test" and saved["n_sequences"] == 5
    assert len(saved["per_target"]) == saved["n_targets"] == 4
    assert saved["seconds_per_sequence"]["naive_ism"] > 0 and saved["seconds_per_sequence"]["multiplexer"] > 0
    assert saved["speedup_vs_naive_ism"] > 0
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# ") and "weighted Pearson" in markdown
    for t in saved["per_target"]:
        assert t["name"] in open_store(tiny_store).target_names

    # the per-target numbers are the weighted Pearson of the checkpoint against the store's targets
    store = open_store(tiny_store)
    model, _ = load_checkpoint(trained_run / "best.pt")
    X = torch.from_numpy(np.asarray(store.array("test", "reference")[:]).astype(np.float32))
    y = torch.from_numpy(store.read("test", "targets", 0, X.shape[0])).float()
    with torch.no_grad():
        y_hat = mask_effects(model(X), X)
    expected = weighted_pearson(y, y_hat).numpy()
    got = np.array([t["weighted_pearson"] for t in saved["per_target"]])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert saved["weighted_pearson_mean"] == pytest.approx(float(np.nanmean(expected)), rel=1e-5)
    # ... and the weighted Pearson formula computed directly in numpy (float64)
    direct = numpy_weighted_pearson(y.double().numpy(), y_hat.double().numpy())
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-7)
    unweighted = [np.corrcoef(y[:, f].numpy().ravel(), y_hat[:, f].numpy().ravel())[0, 1] for f in range(4)]
    np.testing.assert_allclose([t["pearson"] for t in saved["per_target"]], unweighted, rtol=1e-5, atol=1e-7)

    # best and worst targets by name
    names = store.target_names
    assert saved["best_targets"][0]["name"] == names[int(np.argmax(direct))]
    assert saved["worst_targets"][0]["name"] == names[int(np.argmin(direct))]
    assert [t["name"] for t in saved["best_targets"]] == [names[i] for i in np.argsort(-direct)]
    assert saved["targets_without_effects"] == []

    # timings of the three engines on the same device, and their ratios
    t = saved["seconds_per_sequence"]
    assert t["fast_ism"] is not None and t["fast_ism"] > 0  # the demo base model is supported by fast ISM
    assert saved["speedup_vs_naive_ism"] == pytest.approx(t["naive_ism"] / t["multiplexer"])
    assert saved["speedup_vs_fast_ism"] == pytest.approx(t["fast_ism"] / t["multiplexer"])
    assert saved["timing_sequences"] == 4 and saved["device"] == "cpu"

    # the histogram of per-target correlations, at its fixed size
    hist = out / "weighted_pearson_hist.png"
    assert saved["histogram"] == hist.name and report["histogram"] == str(hist)
    image = matplotlib.image.imread(hist)
    assert image.shape[:2] == (round(HIST_SIZE[1] * HIST_DPI), round(HIST_SIZE[0] * HIST_DPI))
    assert image[..., :3].std() > 0.05
    assert f"]({hist.name})" in markdown and names[int(np.argmax(direct))] in markdown

    # an existing report is kept unless asked to replace it
    with pytest.raises(UserError, match="--overwrite"):
        evaluate(str(trained_run / "best.pt"), tiny_store, str(out), EvaluateOptions(device="cpu"), progress=False)


def test_evaluate_on_another_split(trained_run, tiny_store, tmp_path):
    report = evaluate(
        str(trained_run / "last.pt"),
        tiny_store,
        str(tmp_path / "v"),
        EvaluateOptions(split="valid", device="cpu"),
        progress=False,
    )
    assert report["split"] == "valid" and report["n_sequences"] == 6


def test_histogram_and_report_without_effects(tmp_path):
    """Targets without any effect give NaN correlations: left out of the histogram, null in JSON."""
    path = pearson_histogram(np.array([0.9, np.nan, 0.5]), np.array([0.8, np.nan, 0.1]), tmp_path / "h.png")
    assert matplotlib.image.imread(path).shape[:2] == (round(HIST_SIZE[1] * HIST_DPI), round(HIST_SIZE[0] * HIST_DPI))
    empty = pearson_histogram(np.array([np.nan]), np.array([np.nan]), tmp_path / "e.png")
    assert matplotlib.image.imread(empty).shape[:2] == (round(HIST_SIZE[1] * HIST_DPI), round(HIST_SIZE[0] * HIST_DPI))
    assert json.loads(json.dumps(json_safe({"a": [float("nan"), 1.0]}), allow_nan=False)) == {"a": [None, 1.0]}


def test_the_verdict_names_exact_fast_ism_when_the_multiplexer_is_not_twice_as_fast():
    from pipeline.apply.evaluate import summary_line, verdict

    base = {"weighted_pearson_mean": 0.9, "split": "test", "n_sequences": 4, "report": "r.json"}
    slow = {**base, "speedup_vs_naive_ism": 3.0, "speedup_vs_fast_ism": 1.6}
    quick = {**base, "speedup_vs_naive_ism": 40.0, "speedup_vs_fast_ism": 12.0}
    assert verdict(slow).startswith("exact fast ISM is the better choice")
    assert "1.6x vs exact fast ISM" in summary_line(slow) and "3.0x faster than naive ISM" in summary_line(slow)
    assert verdict(quick) == "the multiplexer is 12.0x faster than exact fast ISM"
    assert "slower than it (0.4x)" in verdict({**slow, "speedup_vs_fast_ism": 0.4})
    assert "does not support" in verdict({**base, "speedup_vs_naive_ism": 2.0, "speedup_vs_fast_ism": None})


def test_timing_sequences_zero_skips_timing(trained_run, tiny_store, tmp_path, monkeypatch):
    """--timing-sequences 0: the accuracy report alone, its timings null, and nothing is timed."""
    import pipeline.apply.evaluate as evaluation

    def no_timing(*args, **kwargs):
        raise AssertionError("timing ran")

    monkeypatch.setattr(evaluation, "time_per_sequence", no_timing)
    out = tmp_path / "eval"
    opts = EvaluateOptions(device="cpu", timing_sequences=0)
    report = evaluate(str(trained_run / "best.pt"), tiny_store, str(out), opts, progress=False)
    saved = json.loads((out / "report.json").read_text())
    assert saved["timing"] == "skipped" and saved["timing_sequences"] == 0
    assert saved["speedup_vs_naive_ism"] is None and saved["speedup_vs_fast_ism"] is None
    assert set(saved["seconds_per_sequence"].values()) == {None}
    assert math.isfinite(saved["weighted_pearson_mean"])
    assert "speed not measured (--timing-sequences 0)" in (out / "report.md").read_text()
    line = evaluation.summary_line(report)
    assert "speed not measured" in line and "faster" not in line


def test_the_accuracy_report_is_written_before_timing_starts(trained_run, tiny_store, tmp_path, monkeypatch):
    """A run stopped during timing (Ctrl-C in a 30-minute naive ISM) keeps its accuracy report."""
    import pipeline.apply.evaluate as evaluation

    out = tmp_path / "eval"
    seen = {}

    def interrupted(*args, **kwargs):
        seen.update(json.loads((out / "report.json").read_text()))
        assert (out / "report.md").is_file() and (out / "weighted_pearson_hist.png").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "time_per_sequence", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(str(trained_run / "best.pt"), tiny_store, str(out), EvaluateOptions(device="cpu"), progress=False)
    assert seen["timing"] == "pending" and math.isfinite(seen["weighted_pearson_mean"])
    assert seen["speedup_vs_naive_ism"] is None
    assert json.loads((out / "report.json").read_text()) == seen  # what was there stays

    monkeypatch.undo()  # the full run replaces it with the timed report
    opts = EvaluateOptions(device="cpu", timing_sequences=1, overwrite=True)
    evaluate(str(trained_run / "best.pt"), tiny_store, str(out), opts, progress=False)
    timed = json.loads((out / "report.json").read_text())
    assert timed["timing"] == "measured" and timed["speedup_vs_naive_ism"] > 0
    assert timed["weighted_pearson_mean"] == seen["weighted_pearson_mean"]


def test_timing_shows_a_progress_bar_counting_windows(trained_run, tiny_store, capsys):
    from pipeline.apply.evaluate import time_per_sequence

    store = open_store(tiny_store)
    model, _ = load_checkpoint(trained_run / "best.pt")
    timings = time_per_sequence(model, store, "test", 2, torch.device("cpu"), progress=True)
    err = capsys.readouterr().err
    assert timings["naive_ism"] > 0 and "evaluate timing" in err
    assert "6/6 windows" in err  # (1 warm-up + 2 timed) windows through naive and through fast ISM


def test_targets_with_few_effects_are_flagged_and_not_ranked(trained_run, store_copy, tmp_path):
    """A target whose base-model effects are non-zero at only two places of the split (a Pearson of +-1
    by construction) is listed as sparse and left out of the best and worst targets."""
    from pipeline.apply.evaluate import MIN_EFFECTS

    store = open_store(store_copy, mode="r+")
    meta = store.split_meta("test")
    for unit, start, stop in meta.units():
        y = store.read("test", "targets", start, stop).copy()
        y[:, 0] = 0
        if unit == 0:
            X = store.read("test", "reference", 0, 1)[0]
            alt = [(b, j) for j in range(X.shape[1]) for b in range(4) if X[:, j].any() and not X[b, j]]
            (b1, j1), (b2, j2) = alt[:2]
            y[0, 0, b1, j1], y[0, 0, b2, j2] = 0.5, -0.25
        store.write_unit(
            "test",
            unit,
            reference=store.read("test", "reference", start, stop),
            ref_pred=store.read("test", "ref_pred", start, stop),
            targets=y,
            chrom=[str(c) for c in store.read("test", "chrom", start, stop)],
            center=store.read("test", "center", start, stop),
        )
    out = tmp_path / "eval"
    opts = EvaluateOptions(device="cpu", timing_sequences=0)
    report = evaluate(str(trained_run / "best.pt"), store_copy, str(out), opts, progress=False)
    name = store.target_names[0]
    assert [x["name"] for x in report["sparse_targets"]] == [name]
    assert report["sparse_targets"][0]["nonzero_effects"] == 2 < MIN_EFFECTS
    ranked = {x["name"] for x in report["best_targets"] + report["worst_targets"]}
    assert name not in ranked and len(ranked) == store.n_targets - 1
    assert report["per_target"][0]["nonzero_effects"] == 2
    assert "fewer than" in (out / "report.md").read_text() and name in (out / "report.md").read_text()
    from pipeline.apply.evaluate import summary_line

    assert "1 target with fewer than" in summary_line(report)
