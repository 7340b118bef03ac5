"""The layout's promises that a test can check: old import paths still work, library calls leave the
process as they found it, and the stages do not pull each other in."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch

STAGES = ("pipeline.distill", "pipeline.train", "pipeline.apply")


def test_old_import_paths_keep_working():
    import pipeline.evaluate
    import pipeline.ism
    import pipeline.metrics
    import pipeline.models

    assert pipeline.evaluate.weighted_pearson is pipeline.metrics.weighted_pearson
    assert pipeline.evaluate.PearsonAccumulator is pipeline.metrics.PearsonAccumulator
    assert callable(pipeline.evaluate.evaluate)
    for name in ("build_base", "build_multiplexer", "load_checkpoint", "Beluga", "BelugaMultiplexer"):
        assert hasattr(pipeline.models, name), name
    X = torch.nn.functional.one_hot(torch.tensor([[0, 1, 2, 3] * 20]), 4).permute(0, 2, 1).float()
    base = pipeline.models.build_base("demo", seq_len=80, n_targets=2, channels=12, hidden=8)
    y = pipeline.ism.saturation_mutagenesis(base, X, engine="naive")
    assert y.shape == (1, 2, 4, 80)


@pytest.mark.processes
@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_does_not_load_the_others(stage):
    """Importing every module of one stage imports neither of the other two (they meet through the store)."""
    code = (
        f"import importlib, pkgutil, sys, {stage} as stage\n"
        "for m in pkgutil.walk_packages(stage.__path__, stage.__name__ + '.'): importlib.import_module(m.name)\n"
        f"print(sorted(s for s in {STAGES!r} if s in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == repr([stage])


def test_predict_and_evaluate_leave_tf32_and_matplotlib_as_they_were(trained_run, tiny_store, genome_path, tmp_path):
    """``exact_float32`` is a restoring context; figures never go through pyplot's global state."""
    from pipeline.apply.evaluate import evaluate
    from pipeline.apply.inputs import load_inputs
    from pipeline.apply.plot import plot_effects
    from pipeline.apply.predict import predict_effects

    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    backend = matplotlib.get_backend()
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        inputs = load_inputs(seq_len=80, genome=genome_path, region="chr7:3000")
        pred = predict_effects(str(trained_run / "best.pt"), inputs, str(tmp_path / "p.npz"), progress=False)
        plot_effects(pred, str(tmp_path / "p.png"))
        report = evaluate(str(trained_run / "best.pt"), tiny_store, str(tmp_path / "eval"), progress=False)
        assert np.isfinite(report["weighted_pearson_mean"])
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    assert matplotlib.get_backend() == backend
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded


def test_training_leaves_the_callers_random_state(tiny_spec, tiny_store, tmp_path):
    """``train`` seeds its own run, and the caller's RNG continues as if nothing had happened."""
    from pipeline.train import train, train_config

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(tiny_store, str(tmp_path / "run"), train_config(tiny_spec.train, steps=1), device="cpu", progress=False)
    assert torch.equal(torch.rand(3), expected)
