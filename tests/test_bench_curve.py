"""The pieces of ``scripts/bench_curve.py`` on tiny sizes: intervals, the grown store's distill cost,
the validation read-back, the windows-for-a-target answer and the plot (no timings asserted)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_curve  # noqa: E402

from pipeline.store import open_store  # noqa: E402


def test_interval_is_the_t_interval_of_the_mean():
    values = [0.90, 0.91, 0.93]
    x = bench_curve.interval(values)
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = 4.303 * sd / math.sqrt(3)  # Student's t, 2 degrees of freedom, two-sided 95 %
    assert x["mean"] == pytest.approx(mean, abs=1e-4)
    assert x["low"] == pytest.approx(mean - half, abs=1e-4) and x["high"] == pytest.approx(mean + half, abs=1e-4)
    assert x["n"] == 3 and x["values"] == values
    one = bench_curve.interval([0.5])
    assert one["low"] == one["mean"] == one["high"] == 0.5


def test_windows_for_is_the_smallest_size_reaching_the_target():
    by_size = {str(n): {"held_out_weighted_pearson": {"mean": m}} for n, m in [(512, 0.91), (128, 0.85), (256, 0.9)]}
    assert bench_curve.windows_for(0.9, by_size) == 256
    assert bench_curve.windows_for(0.91, by_size) == 512
    assert bench_curve.windows_for(0.92, by_size) is None


def test_grow_computes_only_the_new_windows(tmp_path: Path, genome_path: Path):
    points = bench_curve.grow(tmp_path, genome_path, [4, 8])
    store = open_store(bench_curve.curve_spec(tmp_path, genome_path, 8).store_path())
    total = sum(store.split_info(s).n_samples for s in store.splits)
    assert store.split_info("train").n_samples == 8
    assert [p["windows_computed"] for p in points] == [total - 4, 4]
    assert points[-1]["total_windows"] == total
    assert points[-1]["total_cpu_s"] == pytest.approx(sum(p["cpu_s"] for p in points), abs=0.02)


def test_read_validation_takes_the_validation_rows(tmp_path: Path):
    rows = [{"step": 10, "valid_weighted_pearson": ""}, {"step": 20, "valid_weighted_pearson": "0.5"},
            {"step": 30, "valid_weighted_pearson": ""}, {"step": 40, "valid_weighted_pearson": "0.75"}]  # fmt: skip
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "valid_weighted_pearson"])
        writer.writeheader()
        writer.writerows(rows)
    assert bench_curve.read_validation(tmp_path) == [(20, 0.5), (40, 0.75)]


def test_summarize_and_plot(tmp_path: Path):
    points = [{"held_out": 0.8 + 0.01 * s, "held_out_unweighted": 0.7, "train_s": 1.0,
               "validation": [(50, 0.5 + s / 100), (100, 0.7)]}
              for s in range(3)]  # fmt: skip
    summary = bench_curve.summarize(points)
    assert summary["held_out_weighted_pearson"]["mean"] == pytest.approx(0.81)
    assert summary["validation_by_step"]["100"]["mean"] == pytest.approx(0.7)
    result = {"windows": [128, 256], "seeds": [0, 1, 2], "steps": 100,
              "curves": {"fast": {"128": summary, "256": summary}}}  # fmt: skip
    bench_curve.plot_curves(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rule_lr_is_the_rule_on_the_parameter_count():
    from pipeline.models import build_multiplexer

    for arch, (name, kwargs, train) in bench_curve.ARCHITECTURES.items():
        model = build_multiplexer(name, seq_len=200, n_targets=16, **kwargs)
        count = sum(p.numel() for p in model.parameters())
        assert bench_curve.rule_lr(arch) == pytest.approx(bench_curve.LR_RULE / math.sqrt(count), abs=5e-7)
        # the rule is fitted to the hand-tuned rates: each within 10 %
        assert bench_curve.rule_lr(arch) == pytest.approx(train["lr"], rel=0.1)


def test_the_demo_default_is_a_row_and_takes_the_rules_learning_rate():
    from pipeline.demo.run import DEMO_SPEC

    arch, settings, budget = bench_curve.VARIANTS[bench_curve.DEFAULT]
    name, kwargs, train = bench_curve.ARCHITECTURES[arch]
    assert budget == "demo" and name == DEMO_SPEC["train"]["multiplexer"] and kwargs == DEMO_SPEC["train"]["kwargs"]
    assert settings["effect_weight"] == DEMO_SPEC["train"]["effect_weight"]
    assert train["lr"] == DEMO_SPEC["train"]["lr"] == pytest.approx(bench_curve.rule_lr(arch), abs=1e-4)


@pytest.mark.parametrize(("mean", "ratio", "met"), [(0.92, 12.0, (True, True)), (0.905, 12.0, (False, True)),
                                                    (0.92, 9.9, (True, False))])  # fmt: skip
def test_default_verdict_holds_the_row_against_the_goal(mean, ratio, met):
    variants = {bench_curve.DEFAULT: {"held_out_weighted_pearson": {"mean": mean}}}
    verdict = bench_curve.default_verdict(variants, {bench_curve.DEFAULT: {"speedup_vs_fast_ism": ratio}})
    assert (verdict["accuracy_met"], verdict["speed_met"]) == met
    assert bench_curve.default_verdict({}, {}) is None
