"""The embedded default, end to end: synthetic genome -> distill -> train -> evaluate -> plot.

Everything lands in one work folder (default ``work/demo``); rerunning reuses what is already
complete (the store resumes, a finished training run is kept). The last line printed is one JSON
object with the headline numbers and the paths of the report and the plot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.apply.evaluate import evaluate, verdict
from pipeline.apply.inputs import load_inputs
from pipeline.apply.plot import plot_effects
from pipeline.apply.predict import predict_effects
from pipeline.core.commands import DistillOptions, EvaluateOptions, PlotOptions, PredictOptions
from pipeline.core.spec import TrainSpec, dump_spec, spec_from_dict
from pipeline.demo.synthetic import synth_genome
from pipeline.distill import distill
from pipeline.errors import StoreMismatchError, UserError
from pipeline.models import read_checkpoint
from pipeline.store import check_same_spec, open_store
from pipeline.train import train, train_config

TRAIN_CHROMS = [f"chr{i}" for i in range(1, 23) if i not in (8, 9)] + ["chrX"]

DEMO_SPEC: dict[str, Any] = {
    "name": "demo",
    "genome": "genome.fa",
    "seq_len": 200,
    "seed": 0,
    "max_n": 10,
    "target": "logfold",
    "base": {"model": "demo", "kwargs": {"n_targets": 16}},
    "splits": {
        "train": {"chroms": TRAIN_CHROMS, "samples": 1536},
        "valid": {"chroms": ["chr8"], "samples": 64},
        "test": {"chroms": ["chr9"], "samples": 64},
    },
    "storage": {
        "dtype": "float16",
        "codec": "blosc-zstd",
        "level": 3,
        "shuffle": "bitshuffle",
        "chunk_samples": 1,
        "unit_samples": 32,
    },
    "store": "store.zarr",
    "ism_batch_size": 4096,
    "train": {
        "multiplexer": "conv",
        "kwargs": {"width1": 32, "width2": 32, "kernel_size": 4, "dilations": [4, 8, 16, 8, 4]},
        "steps": 1500,
        "batch_size": 16,
        "lr": 0.0052,
        "effect_weight": 0.3,
        "valid_every": 250,
        "seed": 0,
    },
}
"""The demo spec; ``data_specs/demo.yaml`` holds the same keys (a test keeps them equal)."""

DEMO_TIMING_SEQUENCES = 64
"""Held-out windows ``evaluate`` times the multiplexer (one batch) and exact fast and naive ISM on, as
``make bench-multiplexer`` and ``make bench-curve`` do: with ``evaluate``'s default of 4 the headline's
``speedup_vs_fast_ism`` read 2.4x for a model 7.6x faster on 64 (2026-12-07)."""


def check_demo_run(last: Path, config: TrainSpec) -> int:
    """The steps done by the demo's run whose ``last.pt`` is ``last``, when it was trained with ``config``
    (all but ``steps``, which a rerun may raise); a :class:`UserError` when it was not (a workdir from an
    earlier demo default, say), so the demo never reports another multiplexer as its own."""
    record = read_checkpoint(last)
    trained = record.get("train") or {}
    wanted = {f.name: getattr(config, f.name) for f in fields(config) if f.name != "steps"}
    differ = [
        key for key, value in wanted.items()
        if key in trained and json.dumps(trained[key], sort_keys=True, default=str)
        != json.dumps(dict(value) if isinstance(value, Mapping) else value, sort_keys=True, default=str)
    ]  # fmt: skip
    if differ:
        raise UserError(
            f"{str(last.parent)!r} holds a multiplexer trained with other settings than this demo's "
            f"({', '.join(differ)}): remove it or choose another --workdir"
        )
    return int(record["step"])


def run_demo(
    workdir: str = "work/demo",
    *,
    device: str | None = None,
    steps: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo in ``workdir`` and return the headline dict (also printed as the last line)."""
    t0 = time.perf_counter()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    genome = work / "genome.fa"
    if not genome.exists():
        synth_genome(genome)
        echo(f"[1/5] wrote synthetic genome {genome}")
    else:
        echo(f"[1/5] reusing genome {genome}")
    spec = spec_from_dict(DEMO_SPEC, base_dir=work, where="demo spec")
    dump_spec(spec, work / "spec.yaml")

    store_path = str(spec.store_path())
    if Path(store_path).exists():  # say it in the demo's terms (it has no --store or --overwrite)
        try:
            check_same_spec(open_store(store_path), spec)
        except StoreMismatchError as exc:
            raise UserError(
                f"{exc.reason}; it is not the demo's store: remove it or choose another --workdir"
            ) from None
    summary = distill(spec, DistillOptions(device=device), progress=progress)
    echo(f"[2/5] {summary.line()}")

    run_dir = work / "run"
    config = train_config(spec.train, steps=steps)
    last = run_dir / "last.pt"
    done_steps = check_demo_run(last, config) if last.exists() else 0
    if done_steps >= config.steps:
        echo(f"[3/5] reusing trained multiplexer {run_dir} (step {done_steps})")
    else:
        t = time.perf_counter()
        result = train(store_path, str(run_dir), config, resume=last.exists(), device=device, progress=progress)
        echo(f"[3/5] trained {config.steps} steps in {time.perf_counter() - t:.1f}s -> {run_dir}")
        if result.warning:
            echo(f"warning: {result.warning}")

    report = evaluate(
        str(run_dir / "best.pt"),
        store_path,
        str(work / "eval"),
        EvaluateOptions(device=device, overwrite=True, timing_sequences=DEMO_TIMING_SEQUENCES),
        progress=progress,
    )
    echo(
        f"[4/5] held-out ({report['split']}) mean weighted Pearson {report['weighted_pearson_mean']:.3f}, "
        f"{report['speedup_vs_naive_ism']:.1f}x faster than naive ISM ({verdict(report)}) -> {report['report']}"
    )

    store = open_store(store_path)
    chrom, center = str(store.array("test", "chrom")[0]), int(np.asarray(store.array("test", "center")[:1])[0])
    inputs = load_inputs(seq_len=spec.seq_len, genome=spec.genome_path, region=f"{chrom}:{center}")
    pred = predict_effects(
        str(run_dir / "best.pt"),
        inputs,
        str(work / "prediction.zarr"),
        PredictOptions(device=device, overwrite=True),
        progress=False,
    )
    plot = plot_effects(pred, str(work / "plot.png"), PlotOptions(overwrite=True))
    echo(f"[5/5] plotted {chrom}:{center} -> {plot}")
    if report["weighted_pearson_mean"] != report["weighted_pearson_mean"]:
        raise UserError("the evaluation produced no correlation (no effects in the held-out split)")
    fast = report.get("speedup_vs_fast_ism")
    headline = {
        "weighted_pearson_mean": round(report["weighted_pearson_mean"], 4),
        "pearson_mean": round(report["pearson_mean"], 4),
        "speedup_vs_naive_ism": round(report["speedup_vs_naive_ism"], 2),
        "speedup_vs_fast_ism": None if fast is None else round(fast, 2),
        "report": str(Path(report["report"]).resolve()),
        "plot": str(Path(plot).resolve()),
        "store": str(Path(store_path).resolve()),
        "checkpoint": str((run_dir / "best.pt").resolve()),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    echo(json.dumps(headline))
    return headline
