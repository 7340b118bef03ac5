"""Benchmark: learning curves -- held-out weighted Pearson against the number of distilled training windows
and against training steps, for several multiplexers, with the distill cost of each point.

1. **One store, grown.** The demo spec (the demo's genome from ``--demo``, default ``work/demo``, created
   when missing) is distilled on the CPU with the first size of ``--windows`` as train windows (and the
   demo's 64 valid and 64 test windows), then grown to each next size (and to ``--variant-windows``): each
   growth computes only the new windows (docs/decisions.md, "Growing stores"). Each point records the
   windows computed and the wall and CPU seconds of that growth, and the totals so far. ``--workdir`` is
   scratch: its ``store.zarr``, ``runs`` and ``variants`` are replaced, so every cost is measured.
2. **Windows curve.** For each architecture of ``--archs`` (:data:`ARCHITECTURES`, each with its
   hand-tuned learning rate) and each size, one run per seed of ``--seeds`` trains on the first ``size``
   train windows (``--max-samples``) for ``--steps`` steps (the same budget at every size) with
   ``--effect-weight`` (the loss), and ``evaluate`` scores its ``best.pt`` on the held-out test split
   (chr9): mean and 95 % t interval over the seeds.
3. **Steps curve.** The same runs' validation weighted Pearson (chr8), recorded every ``--valid-every``
   steps in ``metrics.csv``: mean and interval over the seeds at each step, per size.
4. **The loss and the default** (``--variants``, :data:`VARIANTS`): plain against effect-weighted loss
   for the demo's default (``conv_k4``, :data:`DEFAULT`), ``fast`` and ``conv_light``, and the old default
   (``conv``, plain loss), with the demo's budget (``--variant-windows`` 1,536 windows, ``--variant-steps`` 1,500),
   over the same seeds: winner and loser in one table. **The learning-rate rule** (the ``lr rule`` rows):
   each architecture trained with ``lr = 1.2 / sqrt(parameters)`` (:func:`rule_lr`) at the curve's largest
   point, against the curve's own runs with the hand-tuned rates.
5. **Speed.** The seed-0 run of each architecture at the largest size, and of each variant, is evaluated
   once more with ``--timing-sequences`` windows: milliseconds per window next to exact fast and naive ISM
   of the demo base model, timed in the same process (as ``evaluate`` does), and the speed ratio. The
   default's row against :data:`GOAL` (at least 0.91 and 10x) is the run's verdict (``default``).

``--jobs N`` trains N runs at a time in worker processes of one thread each (``OMP_NUM_THREADS=1`` in
their environment only). The timings of step 5 run alone, after them, in this process with
``--timing-threads`` torch threads, default all cores: the run of 2026-12-07 08:31 timed with one
thread (``make bench-curve`` then set ``OMP_NUM_THREADS=1`` for everything), which halves the
multiplexer's batch throughput but not exact fast ISM's.

    python scripts/bench_curve.py --json bench/curve.json --plot bench/curve.png
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from bench_vcf import ensure_demo
from benchlib import machine, package_version, write_result

from pipeline.apply.evaluate import evaluate
from pipeline.core.commands import DistillOptions, EvaluateOptions
from pipeline.core.spec import Spec, spec_from_dict
from pipeline.demo.run import DEMO_SPEC
from pipeline.distill import distill
from pipeline.store import open_store
from pipeline.train import train, train_config

ARCHITECTURES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "conv_k4": ("conv", dict(DEMO_SPEC["train"]["kwargs"]), {"lr": DEMO_SPEC["train"]["lr"]}),
    "conv": ("conv", {"width1": 64, "width2": 64, "kernel_size": 8, "dilations": [2, 4, 8, 4, 2]}, {"lr": 0.002}),
    "conv_light": ("conv_light", {}, {"lr": 0.004}),
    "fast": ("fast", {"width": 64, "rank": 64}, {"lr": 0.006}),
}
"""Name -> (registered multiplexer, constructor arguments, training settings that differ from the demo's):
``conv_k4``, the demo's multiplexer since issue 26 (``conv`` at widths 32, kernel 4, dilations 4/8/16/8/4,
with the learning rate of the rule, :func:`rule_lr`); ``conv`` as the demo trained it until issue 26; and
the hand-tuned learning rates of ``scripts/bench_multiplexer.py``."""

DEFAULT = "conv_k4, effect_weight 0.3 (the demo default)"
"""The :data:`VARIANTS` row that is the demo's default: ``DEMO_SPEC``'s multiplexer, loss and budget."""

VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    DEFAULT: ("conv_k4", {"effect_weight": DEMO_SPEC["train"]["effect_weight"]}, "demo"),
    "conv_k4, plain loss": ("conv_k4", {"effect_weight": 0.0}, "demo"),
    "conv, plain loss (the demo default until issue 26)": ("conv", {"effect_weight": 0.0}, "demo"),
    "conv_light, plain loss": ("conv_light", {"effect_weight": 0.0}, "demo"),
    "conv_light, effect_weight 0.3": ("conv_light", {"effect_weight": 0.3}, "demo"),
    "conv_light, effect_weight 1": ("conv_light", {"effect_weight": 1.0}, "demo"),
    "conv_light, effect_weight 3": ("conv_light", {"effect_weight": 3.0}, "demo"),
    "fast, plain loss": ("fast", {"effect_weight": 0.0}, "demo"),
    "fast, effect_weight 0.3": ("fast", {"effect_weight": 0.3}, "demo"),
    "conv, lr rule": ("conv", {"lr": "rule"}, "curve"),
    "conv_light, lr rule": ("conv_light", {"lr": "rule"}, "curve"),
    "fast, lr rule": ("fast", {"lr": "rule"}, "curve"),
}
"""Name -> (an entry of :data:`ARCHITECTURES`, training settings on top of it, budget), over the same
seeds. Budget ``demo``: the demo's (``--variant-windows``, ``--variant-steps``), for the loss compared;
``curve``: the curve's largest point (its runs are the comparison), for the learning-rate rule
(``lr: rule``, :func:`rule_lr`)."""

GOAL = {"held_out_weighted_pearson": 0.91, "speedup_vs_fast_ism": 10.0}
"""Issue 26's goal for the demo's default, over the seeds of one run: mean held-out weighted Pearson and
speed against exact fast ISM (seed 0)."""


def default_verdict(variants: dict[str, Any], variant_speed: dict[str, Any]) -> dict[str, Any] | None:
    """The demo default's row (:data:`DEFAULT`) against :data:`GOAL`: its interval, speed ratio, and
    whether each half is met (``None`` when the row was not run)."""
    row, timed = variants.get(DEFAULT), variant_speed.get(DEFAULT)
    if row is None or timed is None:
        return None
    wp, ratio = row["held_out_weighted_pearson"], timed["speedup_vs_fast_ism"]
    return {"variant": DEFAULT, "held_out_weighted_pearson": wp, "speedup_vs_fast_ism": ratio, "goal": GOAL,
            "accuracy_met": wp["mean"] >= GOAL["held_out_weighted_pearson"],
            "speed_met": ratio >= GOAL["speedup_vs_fast_ism"]}  # fmt: skip


LR_RULE = 1.2
"""The learning-rate rule ``lr = LR_RULE / sqrt(parameters)``: the hand-tuned learning rates of
:data:`ARCHITECTURES` times the square root of their parameter counts are 1.22 (conv), 1.26
(conv_light) and 1.15 (fast) on the demo's shape."""


def rule_lr(arch: str) -> float:
    """``LR_RULE / sqrt(parameters)`` of an :data:`ARCHITECTURES` entry at the demo's shape (L = 200, F = 16)."""
    from pipeline.models import build_multiplexer

    name, kwargs, _ = ARCHITECTURES[arch]
    spec = DEMO_SPEC["base"]["kwargs"]
    model = build_multiplexer(name, seq_len=DEMO_SPEC["seq_len"], n_targets=spec["n_targets"], **kwargs)
    return round(LR_RULE / math.sqrt(sum(p.numel() for p in model.parameters())), 6)


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
"""Two-sided 95 % quantiles of Student's t by degrees of freedom (1.96 beyond the table)."""


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95 % t interval of ``values`` (one value: the interval is the value itself).

    Returns
    -------
    dict
        ``mean``, ``low``, ``high``, ``sd`` (sample standard deviation, 0 for one value), ``n``, ``values``.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    half = T_975.get(n - 1, 1.96) * sd / math.sqrt(n) if n > 1 else 0.0
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4),
            "sd": round(sd, 4), "n": n, "values": [round(float(v), 4) for v in x]}  # fmt: skip


def curve_spec(work: Path, genome: Path, train_windows: int) -> Spec:
    """The demo spec with ``train_windows`` train windows, its store in ``work/store.zarr``."""
    d = json.loads(json.dumps(DEMO_SPEC))
    d["genome"] = str(genome.resolve())
    d["splits"]["train"]["samples"] = train_windows
    d["store"] = str((work / "store.zarr").resolve())
    return spec_from_dict(d, base_dir=work, where="bench spec")


def grow(work: Path, genome: Path, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Distill the store to each of ``sizes`` train windows in turn; the cost of each growth.

    The first growth also computes the valid and test windows (``windows_computed`` counts them).
    CPU seconds are this process's user + system time (every thread).
    """
    points: list[dict[str, Any]] = []
    before = 0
    total_wall = total_cpu = 0.0
    for size in sizes:
        spec = curve_spec(work, genome, size)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        distill(spec, DistillOptions(device="cpu"), progress=False)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        store = open_store(spec.store_path())
        total = sum(store.split_info(s).n_samples for s in store.splits)
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        points.append({"train_windows": size, "windows_computed": total - before, "wall_s": round(wall, 2),
                       "cpu_s": round(cpu, 2), "total_windows": total, "total_wall_s": round(total_wall, 2),
                       "total_cpu_s": round(total_cpu, 2)})  # fmt: skip
        before = total
        print("distill", json.dumps(points[-1]), flush=True)
    return points


def read_validation(run: Path) -> list[tuple[int, float]]:
    """``(step, valid weighted Pearson)`` of every validation row of a run's ``metrics.csv``."""
    out = []
    with open(run / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("valid_weighted_pearson"):
                out.append((int(row["step"]), float(row["valid_weighted_pearson"])))
    return out


def train_point(
    store: str, run: Path, arch: str, size: int, seed: int, args: Any, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train one run on the first ``size`` windows and score its ``best.pt`` on the held-out test split."""
    name, kwargs, overrides = ARCHITECTURES[arch]
    spec = curve_spec(Path(args.work), Path(args.genome), size)
    settings = {"steps": args.steps, "effect_weight": args.effect_weight, **overrides, **(extra or {})}
    if settings["lr"] == "rule":
        settings["lr"] = rule_lr(arch)
    cfg = train_config(spec.train, multiplexer=name, kwargs=kwargs, max_samples=size, seed=seed,
                       valid_every=args.valid_every, **settings)  # fmt: skip
    t0 = time.perf_counter()
    train(store, str(run), cfg, device="cpu", progress=False)
    train_s = time.perf_counter() - t0
    options = EvaluateOptions(device="cpu", overwrite=True, timing_sequences=0)
    report = evaluate(str(run / "best.pt"), store, str(run / "eval"), options, progress=False)
    return {"held_out": report["weighted_pearson_mean"], "held_out_unweighted": report["pearson_mean"],
            "validation": read_validation(run),
            "train_s": round(train_s, 1)}  # fmt: skip


def summarize(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and interval over seeds: held-out, training seconds, and validation at each step."""
    steps = [s for s, _ in points[0]["validation"]]
    return {
        "held_out_weighted_pearson": interval([p["held_out"] for p in points]),
        "held_out_unweighted_pearson": interval([p["held_out_unweighted"] for p in points]),
        "train_s": interval([p["train_s"] for p in points]),
        "validation_by_step": {str(step): interval([dict(p["validation"])[step] for p in points]) for step in steps},
    }


def speed(store: str, run: Path, timing_sequences: int) -> dict[str, Any]:
    """Milliseconds per window of a trained run next to exact fast and naive ISM (``evaluate``'s timing)."""
    options = EvaluateOptions(device="cpu", overwrite=True, timing_sequences=timing_sequences)
    report = evaluate(str(run / "best.pt"), store, str(run / "eval-timed"), options, progress=False)
    t = report["seconds_per_sequence"]
    return {
        "timing_sequences": timing_sequences,
        "ms_per_window": round(1e3 * t["multiplexer"], 4),
        "fast_ism_ms_per_window": round(1e3 * t["fast_ism"], 3),
        "naive_ism_ms_per_window": round(1e3 * t["naive_ism"], 3),
        "speedup_vs_fast_ism": report["speedup_vs_fast_ism"],
        "speedup_vs_naive_ism": report["speedup_vs_naive_ism"],
    }


def windows_for(target: float, by_size: dict[str, Any]) -> int | None:
    """The fewest train windows whose mean held-out weighted Pearson reaches ``target`` (``None``: none)."""
    for size, x in sorted(by_size.items(), key=lambda kv: int(kv[0])):
        if x["held_out_weighted_pearson"]["mean"] >= target:
            return int(size)
    return None


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """Two panels: held-out weighted Pearson against train windows (log scale, 95 % intervals as bars),
    and validation weighted Pearson against steps at the largest size (intervals as bands)."""
    from matplotlib.figure import Figure  # no pyplot: no backend is chosen

    fig = Figure(figsize=(10, 4), dpi=100)
    left, right = fig.subplots(1, 2)
    largest = str(max(result["windows"]))
    for arch, by_size in result["curves"].items():
        sizes = sorted(by_size, key=int)
        mean = np.array([by_size[s]["held_out_weighted_pearson"]["mean"] for s in sizes])
        low = np.array([by_size[s]["held_out_weighted_pearson"]["low"] for s in sizes])
        high = np.array([by_size[s]["held_out_weighted_pearson"]["high"] for s in sizes])
        left.errorbar([int(s) for s in sizes], mean, yerr=[mean - low, high - mean], marker="o", capsize=3,
                      label=arch)  # fmt: skip
        by_step = by_size[largest]["validation_by_step"]
        steps = sorted(by_step, key=int)
        m = [by_step[s]["mean"] for s in steps]
        right.plot([int(s) for s in steps], m, marker=".", label=arch)
        right.fill_between([int(s) for s in steps], [by_step[s]["low"] for s in steps],
                           [by_step[s]["high"] for s in steps], alpha=0.2)  # fmt: skip
    left.set_xscale("log", base=2)
    left.set_xlabel("distilled train windows")
    left.set_ylabel("held-out weighted Pearson (chr9)")
    left.set_title(f"{result['steps']} steps, {len(result['seeds'])} seeds, 95 % intervals", fontsize=9)
    right.set_xlabel("training step")
    right.set_ylabel("validation weighted Pearson (chr8)")
    right.set_title(f"{largest} train windows", fontsize=9)
    for ax in (left, right):
        ax.axhline(0.9, color="grey", lw=0.5, ls="--")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path)


def run_path(work: Path, kind: str, name: str, size: int, seed: int) -> Path:
    """The run folder of one curve point or variant row and seed."""
    slug = "".join(c if c.isalnum() else "_" for c in name)
    return work / ("variants" if kind == "variant" else "runs") / f"{slug}-{size}-s{seed}"


def _job(store: str, run: str, arch: str, size: int, seed: int, args: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """One run in a worker process (one thread: ``--jobs`` runs share the cores)."""
    import torch

    torch.set_num_threads(1)
    return train_point(store, Path(run), arch, size, seed, args, extra)


def run_all(args: Any, store: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The curves of every architecture and the ``--variants`` rows (runs under ``args.work``), ``--jobs``
    runs at a time (the variants, the longest, first).

    Returns
    -------
    curves : dict
        ``{arch: {size: summary}}`` (:func:`summarize`).
    variants : dict
        ``{name: summary}`` with ``architecture``, ``settings``, ``train_windows``, ``steps``.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    jobs: dict[tuple[str, str, int], list[Any]] = {}
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers' (spawned with this environment); not this process's
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:

        def submit(kind: str, name: str, arch: str, size: int, extra: dict[str, Any]) -> None:
            jobs[(kind, name, size)] = [
                pool.submit(
                    _job, store, str(run_path(Path(args.work), kind, name, size, seed)), arch, size, seed, args, extra
                )  # fmt: skip
                for seed in args.seeds
            ]

        # the demo-budget variants (the longest runs) first, the curves, then the curve-budget variants
        for name in (v for v in args.variants if VARIANTS[v][2] == "demo"):
            arch, extra, _ = VARIANTS[name]
            submit("variant", name, arch, args.variant_windows, {**extra, "steps": args.variant_steps})
        for arch in args.archs:
            for size in args.windows:
                submit("curve", arch, arch, size, {})
        for name in (v for v in args.variants if VARIANTS[v][2] != "demo"):
            arch, extra, _ = VARIANTS[name]
            submit("variant", name, arch, max(args.windows), {**extra, "steps": args.steps})
        curves: dict[str, Any] = {arch: {} for arch in args.archs}
        variants: dict[str, Any] = {}
        for (kind, name, size), futures in jobs.items():
            summary = summarize([f.result() for f in futures])
            if kind == "curve":
                curves[name][str(size)] = summary
            else:
                arch, extra, budget = VARIANTS[name]
                settings = {**extra, **({"lr": rule_lr(arch)} if extra.get("lr") == "rule" else {})}
                steps = args.variant_steps if budget == "demo" else args.steps
                variants[name] = {"architecture": arch, "settings": settings, "budget": budget, "train_windows": size,
                                  "steps": steps, **summary}  # fmt: skip
            print(kind, name, size, json.dumps(summary["held_out_weighted_pearson"]), flush=True)
    if before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = before
    return curves, variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="Write the curve plot here (PNG, PDF or SVG).")
    parser.add_argument("--demo", type=Path, default=Path("work/demo"), help="The demo's workdir (its genome).")
    parser.add_argument("--workdir", type=Path, help="Store and runs (default: a temporary folder).")
    parser.add_argument("--windows", default="128,256,512,1024", help="Train windows of the grown store.")
    parser.add_argument("--archs", default=",".join(ARCHITECTURES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600, help="Training steps of every curve run.")
    parser.add_argument("--effect-weight", type=float, default=0.3, help="train --effect-weight of the curve runs.")
    parser.add_argument("--variant-windows", type=int, default=DEMO_SPEC["splits"]["train"]["samples"])
    parser.add_argument("--variant-steps", type=int, default=DEMO_SPEC["train"]["steps"])
    parser.add_argument("--valid-every", type=int, default=100)
    parser.add_argument("--timing-sequences", type=int, default=64)
    parser.add_argument("--timing-threads", type=int, default=os.cpu_count() or 1, help="Torch threads of the timings.")
    parser.add_argument(
        "--variants", default=";".join(VARIANTS), help=f"Extra rows, ';'-separated, of: {'; '.join(VARIANTS)}."
    )
    parser.add_argument("--jobs", type=int, default=1, help="Training runs at a time (one thread each).")
    args = parser.parse_args()
    if not (args.demo / "genome.fa").is_file():
        ensure_demo(args.demo)
    args.genome = str(args.demo / "genome.fa")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-curve-"))
    work.mkdir(parents=True, exist_ok=True)
    args.work = str(work)
    args.windows = sorted(int(w) for w in args.windows.split(","))
    args.archs = args.archs.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(torch=package_version("torch")),
        "load_before": list(os.getloadavg()),
        "windows": args.windows,
        "seeds": args.seeds,
        "steps": args.steps,
        "batch_size": DEMO_SPEC["train"]["batch_size"],
        "valid_every": args.valid_every,
        "effect_weight": args.effect_weight,
        "variant_windows": args.variant_windows,
        "variant_steps": args.variant_steps,
        "jobs": args.jobs,
        "architectures": {
            a: {"multiplexer": ARCHITECTURES[a][0], "kwargs": ARCHITECTURES[a][1], "train": ARCHITECTURES[a][2]}
            for a in args.archs
        },  # fmt: skip
    }
    for scratch in ("store.zarr", "runs", "variants"):  # the cost of every growth is measured from nothing
        shutil.rmtree(work / scratch, ignore_errors=True)
    sizes = sorted({*args.windows, *([args.variant_windows] if args.variants else [])})
    result["distill"] = grow(work, Path(args.genome), sizes)
    store = str(curve_spec(work, Path(args.genome), max(sizes)).store_path())
    result["curves"], result["variants"] = run_all(args, store)
    largest = max(args.windows)
    import torch

    torch.set_num_threads(args.timing_threads)  # the training ran one thread per run; a user's CPU has all its cores
    result["timing_threads"] = args.timing_threads
    result["speed"] = {}
    for arch in args.archs:
        run = run_path(work, "curve", arch, largest, args.seeds[0])
        result["speed"][arch] = speed(store, run, args.timing_sequences)
        print("speed", arch, json.dumps(result["speed"][arch]), flush=True)
    result["variant_speed"] = {}
    for name in (v for v in args.variants if VARIANTS[v][2] == "demo"):  # the rule's rows: the same architectures
        run = run_path(work, "variant", name, args.variant_windows, args.seeds[0])
        result["variant_speed"][name] = speed(store, run, args.timing_sequences)
        print("speed", name, json.dumps(result["variant_speed"][name]), flush=True)
    result["default"] = default_verdict(result["variants"], result["variant_speed"])
    result["windows_for"] = {a: {str(t): windows_for(t, result["curves"][a]) for t in (0.9, 0.92)} for a in args.archs}
    result["load_after"] = list(os.getloadavg())
    result["total_s"] = round(time.perf_counter() - t0, 1)
    if args.plot:
        plot_curves(result, args.plot)
        result["plot"] = str(args.plot)
    write_result(result, args.json)


if __name__ == "__main__":
    main()
