"""Benchmark: accuracy at Beluga shape -- distil a Beluga-shaped store (random Beluga weights; L = 2000,
F = 2002), train ``fast`` (Beluga-shaped arguments) and the BelugaMultiplexer on it for a time budget
each, and report held-out weighted Pearson and time per window next to exact fast ISM, on one device.

1. **Distil** ``--train``/``--valid``/``--test`` windows of the demo genome's chromosomes (train: the
   demo's train chromosomes; valid chr8; test chr9) with Beluga (``weights: random``: the published
   weights cannot be downloaded here, so the targets are the effects of a random Beluga, which is
   shaped like the real one but not trained), timed.
2. **Train** each model of :data:`MODELS` for about ``--train-s`` seconds: a 3-step calibration run
   measures seconds per step (after a 1-step warm-up of the kernels), then a fresh run trains
   ``train-s / (s per step)`` steps (at least ``--min-steps``), bf16 autocast on CUDA.
3. **Evaluate** each ``best.pt`` on the test split with ``evaluate`` (held-out weighted Pearson, and the
   multiplexer's, exact fast ISM's and naive ISM's time per window on ``--timing-sequences`` windows).

``--tiny`` shrinks everything for a CPU dry run (L = 400, F = 64, a Beluga of that shape, a few windows,
a few steps): it checks the script, not the figures.

    python scripts/bench_beluga_shape.py --device cuda --json bench/beluga_shape_cuda.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from benchlib import BELUGA_FAST, machine, package_version, write_result

from pipeline.apply.evaluate import evaluate
from pipeline.core.commands import DistillOptions, EvaluateOptions
from pipeline.core.spec import spec_from_dict
from pipeline.demo.run import DEMO_SPEC
from pipeline.demo.synthetic import synth_genome
from pipeline.distill import distill
from pipeline.train import train, train_config

MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "fast": ("fast", dict(BELUGA_FAST)),
    "beluga_multiplexer": ("beluga_multiplexer", {}),
}
"""Name -> (registered multiplexer, constructor arguments at Beluga shape)."""

TINY_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "fast": ("fast", {"width": 32, "rank": 32, "dilations": [1, 2, 4, 8, 16, 32]}),
    "beluga_multiplexer": ("beluga_multiplexer", {}),
}
"""The dry run's models at L = 400 (``fast``'s receptive field 1 + 8 · 64 = 513 >= L)."""


def beluga_spec(work: Path, genome: Path, args: Any) -> dict[str, Any]:
    """The Beluga-shaped spec (``--tiny``: L = 400, F = 64)."""
    d = json.loads(json.dumps(DEMO_SPEC))
    d.update(name="beluga_shape", genome=str(genome.resolve()), store=str((work / "store.zarr").resolve()))
    d["seq_len"] = 400 if args.tiny else 2000
    d["base"] = {
        "model": "beluga",
        "weights": "random",
        **({"kwargs": {"seq_len": 400, "n_targets": 64}} if args.tiny else {}),
    }
    d["ism_batch_size"] = args.ism_batch_size
    d["storage"]["unit_samples"] = args.unit_samples
    d["splits"]["train"]["samples"] = args.train
    d["splits"]["valid"]["samples"] = args.valid
    d["splits"]["test"]["samples"] = args.test
    d["train"] = {"batch_size": args.batch_size, "lr": args.lr, "num_workers": args.workers, "valid_every": 10**9}
    return d


def _parameters(checkpoint: Path) -> int:
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["model"]
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return int(sum(v.numel() for k, v in state.items() if not k.endswith(skip)))


def train_model(name: str, arch: str, kwargs: dict[str, Any], spec: Any, work: Path, args: Any) -> dict[str, Any]:
    """Calibrate seconds per step, then train about ``args.train_s`` seconds and evaluate ``best.pt``."""
    store = str(spec.store_path())
    base = dict(multiplexer=arch, kwargs=kwargs, effect_weight=args.effect_weight)
    calib = work / f"calibrate-{name}"
    shutil.rmtree(calib, ignore_errors=True)
    train(store, str(calib), train_config(spec.train, steps=1, **base), device=args.device, progress=False)
    shutil.rmtree(calib)
    t0 = time.perf_counter()
    train(store, str(calib), train_config(spec.train, steps=3, **base), device=args.device, progress=False)
    per_step = (time.perf_counter() - t0) / 3
    shutil.rmtree(calib)
    steps = max(args.min_steps, int(args.train_s / per_step))
    run = work / f"run-{name}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = train_config(spec.train, steps=steps, valid_every=max(1, steps // 4), **base)
    t0 = time.perf_counter()
    result = train(store, str(run), cfg, device=args.device, progress=False)
    train_s = time.perf_counter() - t0
    options = EvaluateOptions(device=args.device, overwrite=True, timing_sequences=args.timing_sequences)
    report = evaluate(str(run / "best.pt"), store, str(run / "eval"), options, progress=False)
    t = report["seconds_per_sequence"]
    return {
        "architecture": arch,
        "kwargs": kwargs,
        "parameters": _parameters(run / "best.pt"),
        "seconds_per_step_calibrated": round(per_step, 3),
        "steps": steps,
        "batch_size": cfg.batch_size,
        "train_s": round(train_s, 1),
        "valid_weighted_pearson": result.last_metrics.get("valid_weighted_pearson"),
        "held_out_weighted_pearson": report["weighted_pearson_mean"],
        "ms_per_window": round(1e3 * t["multiplexer"], 3),
        "fast_ism_ms_per_window": round(1e3 * t["fast_ism"], 2) if t["fast_ism"] else None,
        "naive_ism_ms_per_window": round(1e3 * t["naive_ism"], 2) if t["naive_ism"] else None,
        "speedup_vs_fast_ism": report["speedup_vs_fast_ism"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="A CPU dry run: L = 400, F = 64, a few windows and steps.")
    parser.add_argument("--workdir", type=Path, help="Genome, store and runs (default: a temporary folder).")
    parser.add_argument("--genome", type=Path, help="The demo genome (default: generated in the workdir).")
    parser.add_argument("--train", type=int, default=512, help="Train windows.")
    parser.add_argument("--valid", type=int, default=32)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--unit-samples", type=int, default=8)
    parser.add_argument("--ism-batch-size", type=int, default=512)
    parser.add_argument("--train-s", type=float, default=150.0, help="Training seconds per model (about).")
    parser.add_argument("--min-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--effect-weight", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=8, help="Loader workers per run.")
    parser.add_argument("--timing-sequences", type=int, default=4)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-beluga-shape-"))
    work.mkdir(parents=True, exist_ok=True)
    genome = args.genome or work / "genome.fa"
    if not genome.exists():
        synth_genome(genome)
    spec = spec_from_dict(beluga_spec(work, genome, args), base_dir=work, where="beluga-shape spec")
    shutil.rmtree(spec.store_path(), ignore_errors=True)
    result: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(torch=package_version("torch")),
        "device": args.device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "tiny": args.tiny,
        "seq_len": spec.seq_len,
        "base": "beluga, random weights" + (" (L = 400, F = 64)" if args.tiny else ""),
        "windows": {"train": args.train, "valid": args.valid, "test": args.test},
        "effect_weight": args.effect_weight,
    }
    t0 = time.perf_counter()
    distill(spec, DistillOptions(device=args.device), progress=False)
    distill_s = time.perf_counter() - t0
    n = args.train + args.valid + args.test
    result["distill"] = {"windows": n, "seconds": round(distill_s, 1), "windows_per_s": round(n / distill_s, 3)}
    print("distill", json.dumps(result["distill"]), flush=True)
    models = TINY_MODELS if args.tiny else MODELS
    result["models"] = {}
    for name in args.models.split(","):
        arch, kwargs = models[name]
        result["models"][name] = train_model(name, arch, kwargs, spec, work, args)
        print(name, json.dumps(result["models"][name]), flush=True)
        write_result(result, args.json)  # each model's result kept when a later one runs out of time


if __name__ == "__main__":
    main()
