"""Benchmark: training on a GPU, the model alone and ``train`` end to end.

Parts (``--parts``, comma-separated; each is written into ``--json`` as soon as it is measured, so a
run stopped by a time limit keeps what it measured, and a part not run keeps its earlier figures
with their own date):

* ``steps``: training steps per second of BelugaMultiplexer (L = 2000, F = 2002) and of the ``fast``
  multiplexer at the same shape, in ``train``'s precision on the device (bf16 on CUDA), on synthetic
  batches already on the device: the rate the loader has to feed. One step is what ``train`` does:
  forward under autocast, the per-sample loss (``sample_losses``), backward, AdamW, zero_grad.
* ``store``: local Beluga-shaped stores of random targets (``bench_loader.make_store``; format 4, the
  default codec, and a copy with storage codec ``zstd-gpu`` for GPU decode), kept in ``--workdir`` for
  the next parts.
* ``train``: ``train`` (the library call the command makes) with BelugaMultiplexer on that store, once
  per loader worker count, for ``--train-steps`` steps: samples/s from ``metrics.csv`` (the median of
  the logged windows after the first, which holds the start-up), and its share of the GPU-only rate.
  Each row names its feed: ``cpu-workers`` (the workers decode).
* ``train-gpu-decode``: the same on the ``zstd-gpu`` store with ``decode: gpu`` (the workers read and
  check the compressed chunks, nvCOMP decodes them on the device; ``--gpu-decode-workers`` worker
  counts), rows with feed ``gpu-decode``. Skipped, saying why, without a CUDA device or nvCOMP (the
  ``gpu`` extra).

    python scripts/bench_train_gpu.py --device cuda --json bench/train_cuda.json
    python scripts/bench_train_gpu.py --device cpu --tiny --json /tmp/train.json     # a dry run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from bench_loader import make_store
from benchlib import BELUGA_FAST, machine

from pipeline.core.spec import TrainSpec
from pipeline.errors import UserError
from pipeline.models import build_multiplexer
from pipeline.train import sample_losses, train
from pipeline.train.feed import nvcomp_module

SHAPE = {"seq_len": 2000, "n_targets": 2002}
TINY_SHAPE = {"seq_len": 200, "n_targets": 16}
MODELS = {
    "beluga_multiplexer": ("beluga_multiplexer", {}),
    "fast": ("fast", BELUGA_FAST),
}
TINY_MODELS = {
    "beluga_multiplexer": ("conv", {}),
    "fast": ("fast", {"width": 32, "rank": 16}),
}
"""What each measured model is (registered name, constructor arguments); tiny: small stand-ins."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(name: str, kwargs: dict, shape: dict, batch: int, device: torch.device, seconds: float) -> dict:
    """Samples/s of ``train``'s step on batches already on the device (after 3 warm-up steps)."""
    torch.manual_seed(0)
    model = build_multiplexer(name, **shape, **kwargs).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    L, F = shape["seq_len"], shape["n_targets"]
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (batch, L)), 4).permute(0, 2, 1).float().to(device)
    y = (torch.randn(batch, F, 4, L) * 0.3).to(device)
    amp = device.type == "cuda"  # train's default: bf16 on CUDA, none on a CPU

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y_hat = model(X)
        loss = sample_losses(y_hat, y, X, False).sum() / batch
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())  # train reads the loss every step

    for _ in range(3):
        step()
    sync(device)
    n, start = 0, time.perf_counter()
    while n < 3 or (time.perf_counter() - start < seconds and n < 200):
        step()
        n += 1
    sync(device)
    elapsed = time.perf_counter() - start
    return {
        "model": name,
        "kwargs": kwargs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "precision": "bf16" if amp else "float32",
        "steps": n,
        "step_seconds": round(elapsed / n, 5),
        "samples_per_s": round(batch * n / elapsed, 2),
    }


def train_rate(
    store: str, run_dir: Path, workers: int, steps: int, batch: int, model: tuple[str, dict], device: str,
    decode: str = "cpu",
) -> dict:  # fmt: skip
    """``train`` end to end with ``workers`` loader workers, decoding on ``decode`` (``cpu``: the
    workers; ``gpu``: nvCOMP on the device): samples/s of the logged windows."""
    shutil.rmtree(run_dir, ignore_errors=True)
    name, kwargs = model
    log_every = max(1, steps // 6)
    config = TrainSpec(
        multiplexer=name,
        kwargs=kwargs,
        steps=steps,
        batch_size=batch,
        valid_every=steps,
        valid_samples=batch,
        log_every=log_every,
        num_workers=workers,
        decode=decode,
    )
    start = time.perf_counter()
    train(store, str(run_dir), config, device=device, progress=False)
    wall = time.perf_counter() - start
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    rates = [float(r["samples_per_s"]) for r in rows[1:]] or [float(r["samples_per_s"]) for r in rows]
    return {
        "feed": "gpu-decode" if decode == "gpu" else "cpu-workers",
        "workers": workers,
        "steps": steps,
        "batch": batch,
        "wall_seconds": round(wall, 2),
        "samples_per_s": round(statistics.median(rates), 2),
        "samples_per_s_windows": rates,
    }


class Result:
    """The JSON file, rewritten after every measurement (parts not run keep their earlier figures)."""

    def __init__(self, path: Path | None, device: torch.device) -> None:
        self.path = path
        old = json.loads(path.read_text()) if path is not None and path.exists() else {}
        self.data: dict[str, Any] = {**old, "machine": machine(torch=torch.__version__, cuda=_gpu_name(device))}

    def part(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if self.path is not None:
            self.path.write_text(json.dumps(self.data, indent=1) + "\n")


def _gpu_name(device: torch.device) -> str | None:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def _stamp(x: dict) -> dict:
    return {**x, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_steps(args: argparse.Namespace, device: torch.device, result: Result, log: Callable[[str], None]) -> None:
    models, shape = (TINY_MODELS, TINY_SHAPE) if args.tiny else (MODELS, SHAPE)
    rates: dict[str, Any] = _stamp({"device": str(device), "shape": shape, "models": {}})
    for key, (name, kwargs) in models.items():
        rates["models"][key] = step_rate(name, kwargs, shape, args.batch, device, args.step_seconds)
        log(f"{key}: {rates['models'][key]['samples_per_s']} samples/s ({rates['models'][key]['step_seconds']} s/step)")
        result.part("step_rates", rates)


def run_store(args: argparse.Namespace, work: Path, log: Callable[[str], None], codec: str | None = None) -> str:
    """The store the train parts read (``codec``: a storage codec other than the default, in its own folder)."""
    shape = TINY_SHAPE if args.tiny else SHAPE
    path = work / ("beluga_shaped.zarr" if codec is None else f"beluga_shaped_{codec}.zarr")
    if not (path / "zarr.json").exists():
        t = time.perf_counter()
        make_store(path, args.store_samples, unit=8, storage={"codec": codec} if codec else None, **shape)
        log(f"store: {args.store_samples} samples written in {time.perf_counter() - t:.1f} s ({path})")
    return str(path)


def gpu_decode_problem(device: torch.device) -> str | None:
    """Why ``train --decode gpu`` cannot run here (``None``: it can)."""
    if device.type != "cuda":
        return f"it needs a CUDA device (this run is on {device.type})"
    try:
        nvcomp_module()
    except UserError as exc:
        return str(exc)
    return None


def run_train(
    args: argparse.Namespace, store: str, work: Path, result: Result, log: Callable[[str], None], decode: str = "cpu"
) -> None:
    """``train`` by worker count (``decode``: ``cpu``, or ``gpu`` on a ``zstd-gpu`` store); rows of the
    other feed already in the JSON are kept (each part replaces only its own feed's rows)."""
    models = TINY_MODELS if args.tiny else MODELS
    name, kwargs = models["beluga_multiplexer"]
    gpu_only = (result.data.get("step_rates") or {}).get("models", {}).get("beluga_multiplexer", {})
    feed = "gpu-decode" if decode == "gpu" else "cpu-workers"
    old = result.data.get("train") or {}
    kept = [row for row in old.get("rows", []) if row.get("feed", "cpu-workers") != feed]
    section: dict[str, Any] = _stamp({"model": name, "store": old.get("store", store), "rows": kept})
    if decode == "gpu":
        section["gpu_decode_store"] = store
    counts = args.gpu_decode_workers if decode == "gpu" else args.workers
    start = time.perf_counter()
    for w in [int(x) for x in counts.split(",")]:
        if time.perf_counter() - start > args.train_budget:
            log(f"train ({feed}): time budget of {args.train_budget} s spent; {w} workers and more not run")
            break
        run_dir = work / f"run-{feed}-w{w}"
        row = train_rate(store, run_dir, w, args.train_steps, args.batch, (name, kwargs), args.device, decode)
        if gpu_only.get("samples_per_s"):
            row["share_of_gpu_only"] = round(row["samples_per_s"] / gpu_only["samples_per_s"], 3)
        section["rows"].append(row)
        log(
            f"train ({feed}), {w} workers: {row['samples_per_s']} samples/s "
            f"({row.get('share_of_gpu_only', '-')} of GPU-only)"
        )
        result.part("train", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small stand-in models and store (a dry run)")
    parser.add_argument("--parts", default="steps,store,train,train-gpu-decode")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--step-seconds", type=float, default=5.0, help="time each model's steps this long")
    parser.add_argument("--store-samples", type=int, default=64)
    parser.add_argument("--workers", default="1,2,4,8,12", help="loader worker counts for the train part")
    parser.add_argument("--gpu-decode-workers", default="1,2,4", help="loader worker counts with GPU decode")
    parser.add_argument("--train-steps", type=int, default=36)
    parser.add_argument("--train-budget", type=float, default=150.0, help="start no worker count after this (s)")
    parser.add_argument("--workdir", help="keep the store and runs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    result = Result(args.json, device)
    parts = args.parts.split(",")

    def log(message: str) -> None:
        print(message, flush=True)

    if "steps" in parts:
        run_steps(args, device, result, log)
    if "store" in parts or "train" in parts:
        store = run_store(args, work, log)
        if "train" in parts:
            run_train(args, store, work, result, log)
    if "store" in parts or "train-gpu-decode" in parts:
        problem = gpu_decode_problem(device)
        if problem is not None:
            log(f"train with GPU decode: not run: {problem}")
        else:
            gpu_store = run_store(args, work, log, codec="zstd-gpu")
            if "train-gpu-decode" in parts:
                run_train(args, gpu_store, work, result, log, decode="gpu")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
