"""Benchmark: multiplexer architectures -- held-out accuracy after the same training budget, parameters,
and milliseconds per window next to exact fast ISM and naive ISM, on the same device in the same run.

1. **Demo** (``--demo DIR``, default ``work/demo``; its store and genome, created by the demo when
   missing): each architecture of :data:`ARCHITECTURES` is trained on the demo store with the demo's
   training settings (same steps, batch and seed; the learning rate too unless the entry says
   otherwise) and evaluated on the held-out test split with ``evaluate`` (``--timing-sequences``
   windows, default 64, timed for the multiplexer as one batch and for naive and fast ISM of the demo
   base model: ms per window and the ratios).
2. **Beluga shape** (L = 2000, F = 2002; no training, random weights): the BelugaMultiplexer and the
   Beluga-shaped ``fast`` architecture timed on ``--beluga-batch`` windows, as built and rewritten for
   inference, against exact fast ISM of Beluga (random weights) on one window, on the same device.
3. **The inference rewrite** (:func:`pipeline.models.optimize_for_inference`, which ``evaluate`` and
   every command that runs a checkpoint apply): each architecture at the demo's shape (random weights,
   batch-norm statistics drawn away from the identity) timed as built and rewritten on one batch of
   ``--rewrite-batch`` windows, in ``--rewrite-rounds`` alternating rounds (medians), and the largest
   difference of the two outputs.

``--sections`` picks the parts (``demo,beluga,rewrite``, all by default).

    python scripts/bench_multiplexer.py --json bench/multiplexer.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from bench_vcf import ensure_demo
from benchlib import BELUGA_FAST, machine, package_version, write_result

from pipeline.apply.evaluate import evaluate
from pipeline.core.commands import EvaluateOptions
from pipeline.core.spec import spec_from_dict
from pipeline.demo.run import DEMO_SPEC
from pipeline.ism import fast_ism
from pipeline.models import build_base, build_multiplexer, optimize_for_inference
from pipeline.train import train, train_config

PLAIN = {"lr": 0.002, "effect_weight": 0.0}
"""The demo's training settings until issue 26 (the rows that name no others keep them)."""

ARCHITECTURES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "conv w32 k4 (demo default), lr 0.0052, effect_weight 0.3": ("conv", dict(DEMO_SPEC["train"]["kwargs"]), {}),
    "conv w64 k8 (demo default until issue 26)": (
        "conv",
        {"width1": 64, "width2": 64, "kernel_size": 8, "dilations": [2, 4, 8, 4, 2]},
        PLAIN,
    ),  # fmt: skip
    "conv_light (conv w32), lr 0.004": ("conv_light", {}, {**PLAIN, "lr": 0.004}),
    "fast w64 r64, lr 0.006": ("fast", {"width": 64, "rank": 64}, {**PLAIN, "lr": 0.006}),
    "fast w64 r64": ("fast", {"width": 64, "rank": 64}, PLAIN),
    "fast w48 r32": ("fast", {"width": 48, "rank": 32}, PLAIN),
}
"""Name -> (registered multiplexer, constructor arguments, training settings that differ from the demo's)."""

SECTIONS = ("demo", "beluga", "rewrite")
"""What ``--sections`` can run: the trained demo table, the Beluga shape, the inference rewrite."""


def demo_architecture(
    name: str, arch: str, kwargs: dict[str, Any], overrides: dict[str, Any], demo: Path, work: Path, args: Any
) -> dict[str, Any]:
    spec = spec_from_dict({**json.loads(json.dumps(DEMO_SPEC)), "genome": str((demo / "genome.fa").resolve()),
                           "store": str((demo / "store.zarr").resolve())}, base_dir=work)  # fmt: skip
    run = work / "".join(c if c.isalnum() else "_" for c in name)
    cfg = train_config(spec.train, multiplexer=arch, kwargs=kwargs, steps=args.steps, **overrides)
    t0 = time.perf_counter()
    train(str(spec.store_path()), str(run), cfg, device=args.device, progress=False)
    train_s = time.perf_counter() - t0
    options = EvaluateOptions(device=args.device, overwrite=True, timing_sequences=args.timing_sequences)
    report = evaluate(str(run / "best.pt"), str(spec.store_path()), str(run / "eval"), options, progress=False)
    t = report["seconds_per_sequence"]
    model = torch.load(run / "best.pt", weights_only=True, map_location="cpu")["model"]
    return {
        "architecture": arch,
        "kwargs": kwargs,
        "train_overrides": overrides,
        "parameters": int(
            sum(
                v.numel()
                for k, v in model.items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
            )
        ),
        "steps": cfg.steps,
        "train_s": round(train_s, 1),
        "held_out_weighted_pearson": report["weighted_pearson_mean"],
        "ms_per_window": round(1e3 * t["multiplexer"], 4),
        "fast_ism_ms_per_window": round(1e3 * t["fast_ism"], 3) if t["fast_ism"] else None,
        "naive_ism_ms_per_window": round(1e3 * t["naive_ism"], 3),
        "speedup_vs_fast_ism": report["speedup_vs_fast_ism"],
        "speedup_vs_naive_ism": report["speedup_vs_naive_ism"],
    }


def _time(fn: Any, device: torch.device, repeats: int) -> float:
    with torch.no_grad():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / repeats


def _rounds(fns: dict[str, Any], device: torch.device, repeats: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating rounds after a discarded one (so a
    slow spell of a shared machine falls on all of them alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # a discarded round: oneDNN builds its kernels on the first calls of each shape
        _time(fn, device, repeats)
    for _ in range(rounds):
        for key, fn in fns.items():
            times[key].append(_time(fn, device, repeats))
    return {k: float(statistics.median(v)) for k, v in times.items()}


def drawn_batch_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` in eval mode with batch-norm statistics drawn away from the identity, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(m.num_features, generator=g))
    return model.eval()


def one_hot_windows(batch: int, length: int, device: torch.device) -> torch.Tensor:
    X = torch.zeros(batch, 4, length, device=device)
    X[torch.arange(batch)[:, None], torch.randint(0, 4, (batch, length)), torch.arange(length)] = 1
    return X


def rewritten_pair(arch: str, kwargs: dict[str, Any], device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A built multiplexer (drawn batch norms) and its inference rewrite (:func:`optimize_for_inference`)."""
    model = drawn_batch_norms(build_multiplexer(arch, **kwargs)).to(device)
    return model, optimize_for_inference(copy.deepcopy(model))


def rewrite_speed(device: torch.device, batch: int, rounds: int) -> dict[str, Any]:
    """Milliseconds per window of each demo-shaped architecture, as trained and rewritten for inference,
    on one batch (``evaluate``'s timing), and the largest difference of their outputs."""
    torch.manual_seed(0)
    L, F = int(DEMO_SPEC["seq_len"]), int(DEMO_SPEC["base"]["kwargs"]["n_targets"])
    X = one_hot_windows(batch, L, device)
    out: dict[str, Any] = {"batch": batch, "rounds": rounds, "device": str(device), "architectures": {}}
    for name, (arch, kwargs, _) in ARCHITECTURES.items():
        model, fast = rewritten_pair(arch, {"seq_len": L, "n_targets": F, **kwargs}, device)
        t = _rounds({"plain": lambda m=model: m(X), "rewritten": lambda m=fast: m(X)}, device, 10, rounds)
        with torch.no_grad():
            y, z = model(X), fast(X)
        out["architectures"][name] = {
            "ms_per_window": round(1e3 * t["plain"] / batch, 4),
            "rewritten_ms_per_window": round(1e3 * t["rewritten"] / batch, 4),
            "speedup": round(t["plain"] / t["rewritten"], 2),
            "max_abs_difference_over_max_abs": float(((z - y).abs().max() / y.abs().max()).item()),
        }
        print("rewrite", name, json.dumps(out["architectures"][name]), flush=True)
    return out


def beluga_shape(device: torch.device, batch: int) -> dict[str, Any]:
    """The BelugaMultiplexer and a Beluga-shaped ``fast`` (random weights), as built and rewritten for
    inference, against exact fast ISM of Beluga on one window."""
    torch.manual_seed(0)
    X = one_hot_windows(batch, 2000, device)
    out: dict[str, Any] = {"batch": batch, "device": str(device)}
    for name, arch, kwargs in (("beluga_multiplexer", "beluga_multiplexer", {}),
                               ("fast", "fast", {"seq_len": 2000, "n_targets": 2002, **BELUGA_FAST})):  # fmt: skip
        model, fast = rewritten_pair(arch, kwargs, device)
        t = _rounds({"plain": lambda m=model: m(X), "rewritten": lambda m=fast: m(X)}, device, 1, 2)
        out[name] = {"ms_per_window": round(1e3 * t["plain"] / batch, 2),
                     "rewritten_ms_per_window": round(1e3 * t["rewritten"] / batch, 2),
                     "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
        del model, fast
    base = build_base("beluga").to(device).eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        fast_ism(base, X[:1], target="logfold", device=device)
        out["beluga_fast_ism_ms_per_window"] = round(1e3 * (time.perf_counter() - t0), 1)
    for name in ("beluga_multiplexer", "fast"):
        ism = out["beluga_fast_ism_ms_per_window"]
        out[name]["speedup_vs_fast_ism"] = round(ism / out[name]["ms_per_window"], 2)
        out[name]["rewritten_speedup_vs_fast_ism"] = round(ism / out[name]["rewritten_ms_per_window"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--demo", type=Path, default=Path("work/demo"))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, help="Training steps of every architecture (default: the demo's).")
    parser.add_argument("--timing-sequences", type=int, default=64)
    parser.add_argument("--beluga-batch", type=int, default=2)
    parser.add_argument("--only", help="Comma-separated architecture names (default: all).")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"Comma-separated, of {', '.join(SECTIONS)}.")
    parser.add_argument("--rewrite-batch", type=int, default=64, help="Windows per batch of the rewrite timings.")
    parser.add_argument("--rewrite-rounds", type=int, default=7, help="Alternating rounds of the rewrite timings.")
    args = parser.parse_args()
    sections = args.sections.split(",")
    if "demo" in sections:
        ensure_demo(args.demo)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-multiplexer-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(torch=package_version("torch")),
        "device": args.device,
        "timing_sequences": args.timing_sequences,
        "demo": {},
    }
    wanted = args.only.split(",") if args.only else list(ARCHITECTURES)
    for name in wanted if "demo" in sections else []:
        arch, kwargs, overrides = ARCHITECTURES[name]
        result["demo"][name] = demo_architecture(name, arch, kwargs, overrides, args.demo, work, args)
        print("demo", name, json.dumps(result["demo"][name]), flush=True)
    device = torch.device(args.device)
    if "rewrite" in sections:
        result["rewrite"] = rewrite_speed(device, args.rewrite_batch, args.rewrite_rounds)
    if "beluga" in sections:
        result["beluga_shape"] = beluga_shape(device, args.beluga_batch)
        print("beluga", json.dumps(result["beluga_shape"]), flush=True)
    write_result(result, args.json)


if __name__ == "__main__":
    main()
