"""Benchmark: multiplexer architectures -- held-out accuracy after the same training budget, parameters,
and milliseconds per window next to exact fast ISM and naive ISM, on the same device in the same run.

1. **Demo** (``--demo DIR``, default ``work/demo``; its store and genome, created by the demo when
   missing): each architecture of :data:`ARCHITECTURES` is trained on the demo store with the demo's
   training settings (same steps, batch and seed; the learning rate too unless the entry says
   otherwise) and evaluated on the held-out test split with ``evaluate`` (``--timing-sequences``
   windows, default 64, timed for the multiplexer as one batch and for naive and fast ISM of the demo
   base model: ms per window and the ratios).
2. **Beluga shape** (L = 2000, F = 2002; no training, random weights): the BelugaMultiplexer and the
   Beluga-shaped ``fast`` architecture timed on ``--beluga-batch`` windows, against exact fast ISM of
   Beluga (random weights) on one window, on the same device.

    python scripts/bench_multiplexer.py --json bench/multiplexer.json
"""

from __future__ import annotations

import argparse
import json
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
from pipeline.models import build_base, build_multiplexer
from pipeline.train import train, train_config

ARCHITECTURES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "conv (demo default)": ("conv", dict(DEMO_SPEC["train"]["kwargs"]), {}),
    "conv_light (conv w32), lr 0.004": ("conv_light", {}, {"lr": 0.004}),
    "fast w64 r64, lr 0.006": ("fast", {"width": 64, "rank": 64}, {"lr": 0.006}),
    "fast w64 r64": ("fast", {"width": 64, "rank": 64}, {}),
    "fast w48 r32": ("fast", {"width": 48, "rank": 32}, {}),
}
"""Name -> (registered multiplexer, constructor arguments, training settings that differ from the demo's)."""


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


def beluga_shape(device: torch.device, batch: int) -> dict[str, Any]:
    torch.manual_seed(0)
    X = torch.zeros(batch, 4, 2000, device=device)
    X[:, torch.randint(0, 4, (2000,)), torch.arange(2000)] = 1
    out: dict[str, Any] = {"batch": batch, "device": str(device)}
    for name, arch, kwargs in (("beluga_multiplexer", "beluga_multiplexer", {}),
                               ("fast", "fast", {"seq_len": 2000, "n_targets": 2002, **BELUGA_FAST})):  # fmt: skip
        model = build_multiplexer(arch, **kwargs).to(device).eval()
        seconds = _time(lambda m=model: m(X), device, repeats=2) / batch
        out[name] = {"ms_per_window": round(1e3 * seconds, 2), "parameters": sum(p.numel() for p in model.parameters())}
        del model
    base = build_base("beluga").to(device).eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        fast_ism(base, X[:1], target="logfold", device=device)
        out["beluga_fast_ism_ms_per_window"] = round(1e3 * (time.perf_counter() - t0), 1)
    for name in ("beluga_multiplexer", "fast"):
        out[name]["speedup_vs_fast_ism"] = round(out["beluga_fast_ism_ms_per_window"] / out[name]["ms_per_window"], 2)
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
    args = parser.parse_args()
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
    for name in wanted:
        arch, kwargs, overrides = ARCHITECTURES[name]
        result["demo"][name] = demo_architecture(name, arch, kwargs, overrides, args.demo, work, args)
        print("demo", name, json.dumps(result["demo"][name]), flush=True)
    result["beluga_shape"] = beluga_shape(torch.device(args.device), args.beluga_batch)
    print("beluga", json.dumps(result["beluga_shape"]), flush=True)
    write_result(result, args.json)


if __name__ == "__main__":
    main()
