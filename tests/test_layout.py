"""The layout's promises that a test can check: old import paths still work, library calls leave the
process as they found it, and the stages do not pull each other in."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

import pipeline

STAGES = ("pipeline.distill", "pipeline.train", "pipeline.apply")


def test_old_import_paths_keep_working():
    import pipeline.evaluate
    import pipeline.ism
    import pipeline.metrics
    import pipeline.models

    with pytest.warns(DeprecationWarning, match=r"pipeline\.evaluate\.weighted_pearson .* from pipeline\.metrics"):
        assert pipeline.evaluate.weighted_pearson is pipeline.metrics.weighted_pearson
    with pytest.warns(DeprecationWarning, match=r"from pipeline\.metrics"):
        assert pipeline.evaluate.PearsonAccumulator is pipeline.metrics.PearsonAccumulator
    with pytest.warns(DeprecationWarning, match=r"pipeline\.evaluate\.evaluate .* from pipeline\.apply\.evaluate"):
        assert callable(pipeline.evaluate.evaluate)
    for name in ("build_base", "build_multiplexer", "load_checkpoint", "Beluga", "BelugaMultiplexer"):
        assert hasattr(pipeline.models, name), name
    X = torch.nn.functional.one_hot(torch.tensor([[0, 1, 2, 3] * 20]), 4).permute(0, 2, 1).float()
    base = pipeline.models.build_base("demo", seq_len=80, n_targets=2, channels=12, hidden=8)
    y = pipeline.ism.saturation_mutagenesis(base, X, engine="naive")
    assert y.shape == (1, 2, 4, 80)


MOVED = {
    "pipeline.apply.vcf": ("read_vcf", "pipeline.apply.variants.records"),
    "pipeline.apply.vcf_input": ("read_vcf", "pipeline.apply.variants.records"),
    "pipeline.apply.vcf_rows": ("Batcher", "pipeline.apply.variants.rows"),
    "pipeline.apply.vcf_scoring": ("reverse_complement", "pipeline.apply.variants.scorers"),
    "pipeline.apply.vcf_output": ("select_targets", "pipeline.apply.variants.semantics"),
    "pipeline.apply.vcf_parts": ("Parts", "pipeline.apply.variants.parts"),
    "pipeline.apply.catalogue": ("tile_first", "pipeline.store.tiles"),
    "pipeline.apply.lookup": ("CatalogueReader", "pipeline.apply.variants.lookup"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_modules_import_from_their_old_paths_with_a_warning_naming_the_new_one(old):
    name, new = MOVED[old]
    module = importlib.import_module(old)
    with pytest.warns(
        DeprecationWarning, match=rf"{re.escape(old)}\.{name} has moved: import it from {re.escape(new)} "
    ):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="moved to"):
        module.no_such_name  # noqa: B018


def test_the_old_keyword_calls_still_work_and_name_the_options_object(trained_run, genome_path, tmp_path):
    """``pipeline.apply.vcf.score_vcf(..., centered=True)`` and the old catalogue/lookup calls give what the
    new calls give; ``SUFFIXES`` and ``MODES`` are the registries' keys."""
    from pipeline.apply.variants.options import ScoreVcfOptions
    from pipeline.apply.variants.score_vcf import score_vcf
    from pipeline.apply.variants.scorers import SCORERS
    from pipeline.apply.variants.writers import WRITERS

    old_vcf, old_cat, old_lookup = (
        importlib.import_module(f"pipeline.apply.{m}") for m in ("vcf", "catalogue", "lookup")
    )
    vcf = tmp_path / "a.vcf"
    vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\nchr7\t3000\t.\tA\tG\nchr7\t3004\t.\tC\tT\n")
    ckpt, genome = str(trained_run / "best.pt"), str(genome_path)
    with pytest.warns(
        DeprecationWarning,
        match=r"apply\.vcf\.score_vcf has moved: import it from pipeline\.apply\.variants\.score_vcf and pass a "
        "ScoreVcfOptions",
    ):
        old_score_vcf = old_vcf.score_vcf
    old_score_vcf(ckpt, str(vcf), str(tmp_path / "old.tsv"), centered=True, genome=genome, device="cpu", progress=False)
    score_vcf(
        ckpt,
        str(vcf),
        str(tmp_path / "new.tsv"),
        ScoreVcfOptions(mode="centered", genome=genome, device="cpu"),
        progress=False,
    )
    assert (tmp_path / "old.tsv").read_bytes() == (tmp_path / "new.tsv").read_bytes()
    with pytest.warns(DeprecationWarning, match="CatalogueOptions"):
        build = old_cat.build_catalogue
    build(ckpt, str(tmp_path / "c.zarr"), regions=["chr7:2990-3010"], genome=genome, device="cpu", progress=False)
    with pytest.warns(DeprecationWarning, match="LookupOptions"):
        answer = old_lookup.lookup
    summary = answer(str(tmp_path / "c.zarr"), str(tmp_path / "l.tsv"), vcf=str(vcf), progress=False)
    assert summary.n_scored == 2
    with pytest.warns(DeprecationWarning, match="use the keys of pipeline.apply.variants.writers.WRITERS"):
        assert importlib.import_module("pipeline.apply.vcf_output").SUFFIXES == tuple(WRITERS)
    with pytest.warns(DeprecationWarning, match="use the keys of pipeline.apply.variants.scorers.SCORERS"):
        assert importlib.import_module("pipeline.apply.vcf_rows").MODES == tuple(SCORERS)


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


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("pipeline.evaluate", "weighted_pearson", "pipeline.metrics"),
        ("pipeline.evaluate", "nanmean", "pipeline.metrics"),
        ("pipeline.evaluate", "pearson_histogram", "pipeline.apply.evaluate"),
        ("pipeline.ism.naive", "autocast", "pipeline.ism"),
        ("pipeline.ism.naive", "model_device", "pipeline.ism"),
        ("pipeline.ism.naive", "prepare_inputs", "pipeline.ism"),
        ("pipeline.store.store", "WRITE_THREADS", "pipeline.store.writes"),
        ("pipeline.core.spec", "bitround", "pipeline.core.quantize"),
    ],
)
def test_a_moved_name_warns_and_names_its_new_home(old, name, new):
    """``from OLD import NAME`` still works, with a DeprecationWarning naming where NAME lives now."""
    with pytest.warns(
        DeprecationWarning, match=rf"{re.escape(old)}\.{name} has moved: import it from {re.escape(new)}"
    ):
        found = getattr(importlib.import_module(old), name)
    assert found is getattr(importlib.import_module(new), name)


MAX_PARAMETERS = 8
"""No public function of the package takes more (an options object counts as one; ``self`` and ``cls``
do not count)."""


def _public_functions(tree: ast.Module) -> Iterator[tuple[str, int, int]]:
    """``(qualified name, line, parameters)`` of the public functions and methods of a module."""

    def visit(node: ast.AST, prefix: str, in_class: bool) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                yield from visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                dunder = child.name.startswith("__") and child.name.endswith("__")
                if child.name.startswith("_") and not dunder:
                    continue
                a = child.args
                names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
                if in_class and names[:1] in (["self"], ["cls"]):
                    names = names[1:]
                yield f"{prefix}{child.name}", child.lineno, len(names)

    yield from visit(tree, "", False)


def test_no_public_function_takes_more_than_eight_parameters():
    """A wide signature wants an options object (as ``distill``, ``predict``, ``ism`` and ``evaluate`` take)."""
    root = Path(pipeline.__file__).parent
    wide = []
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root.parent).with_suffix("")
        if any(part.startswith("_") and part != "__init__" for part in module.parts):
            continue  # a private module: nothing in it is public
        for name, line, count in _public_functions(ast.parse(path.read_text(), str(path))):
            if count > MAX_PARAMETERS:
                wide.append(f"{'.'.join(module.parts)}.{name} (line {line}): {count} parameters")
    assert not wide, "more than 8 parameters: " + "; ".join(wide)


def test_the_parameter_count_sees_every_kind_of_parameter():
    """The check counts positional-only, keyword-only, ``*args`` and ``**kwargs`` alike, skips ``self``,
    and leaves private functions and classes alone."""
    source = """
def wide(a, /, b, *args, c, d=1, **kwargs): ...
def _private(a, b, c, d, e, f, g, h, i): ...
class Public:
    def method(self, a, b): ...
    @classmethod
    def build(cls, a): ...
class _Hidden:
    def method(self, a, b, c, d, e, f, g, h, i): ...
"""
    found = {name: count for name, _, count in _public_functions(ast.parse(source))}
    assert found == {"wide": 6, "Public.method": 2, "Public.build": 1}
