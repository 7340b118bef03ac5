"""Benchmark: lighter target storage -- bytes per window for each ``storage.quantize`` setting, and what
the demo multiplexer trained on each store loses in held-out accuracy.

For each setting (``--settings``, default ``none`` = lossless float16, ``bitround-6/4/3/2``):

1. the demo spec (the demo's genome from ``--demo``, default ``work/demo``, which is created when
   missing) is distilled on the CPU with that ``storage.quantize`` into its own store; bytes per
   window = the stored bytes of every split's ``targets`` array / windows, and as a share of raw
   float16 (``F · 4 · L · 2`` bytes);
2. the demo multiplexer is trained on it (the demo's settings, same seed, same steps; ``--steps``
   shortens all runs alike);
3. it is evaluated on the held-out test split of the **lossless** store (the exact targets), and the
   loss of mean weighted Pearson against the lossless run is reported.

Beluga-shaped targets (F = 2002, L = 2000): ``--beluga-windows`` synthetic windows (Laplace log-fold
effects of scale 0.05, exactly 0 at the reference base of every position: the zero structure of real
targets, not their correlations, so the bytes are a rough guide) written with the demo's codec
(blosc-zstd level 3, bitshuffle, one window per chunk), per setting.

    python scripts/bench_storage.py --json bench/storage.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from bench_vcf import ensure_demo
from benchlib import machine, package_version, write_result

from pipeline.apply.evaluate import evaluate
from pipeline.core.commands import DistillOptions, EvaluateOptions
from pipeline.core.quantize import bitround
from pipeline.core.spec import StorageSpec, spec_from_dict
from pipeline.demo.run import DEMO_SPEC
from pipeline.distill import distill
from pipeline.store import open_store
from pipeline.store.chunks import stored_bytes
from pipeline.store.format import compressors, target_codec
from pipeline.train import train, train_config

SETTINGS = "none,bitround-6,bitround-4,bitround-3,bitround-2"


def _spec(work: Path, genome: Path, quantize: str) -> Any:
    d = json.loads(json.dumps(DEMO_SPEC))
    d["genome"] = str(genome.resolve())
    d["storage"]["quantize"] = quantize
    d["store"] = str(work / f"store-{quantize}.zarr")
    return spec_from_dict(d, base_dir=work, where="bench spec")


def _bytes_per_window(path: Path) -> tuple[float, int]:
    store = open_store(path)
    total = n = 0
    for split in store.splits:
        total += stored_bytes(store.array(split, "targets"))
        n += store.split_info(split).n_samples
    return total / n, n


def demo_setting(
    work: Path, genome: Path, quantize: str, steps: int | None, lossless_store: str | None
) -> dict[str, Any]:
    spec = _spec(work, genome, quantize)
    t0 = time.perf_counter()
    distill(spec, DistillOptions(device="cpu"), progress=False)
    distill_s = time.perf_counter() - t0
    per_window, n = _bytes_per_window(spec.store_path())
    raw = spec.base.kwargs.get("n_targets", 16) * 4 * spec.seq_len * 2
    run = work / f"run-{quantize}"
    t0 = time.perf_counter()
    train(str(spec.store_path()), str(run), train_config(spec.train, steps=steps), device="cpu", progress=False)
    train_s = time.perf_counter() - t0
    truth = lossless_store or str(spec.store_path())
    options = EvaluateOptions(device="cpu", overwrite=True, timing_sequences=1)
    report = evaluate(str(run / "best.pt"), truth, str(work / f"eval-{quantize}"), options, progress=False)
    return {
        "quantize": quantize,
        "windows": n,
        "bytes_per_window": round(per_window, 1),
        "raw_float16_bytes_per_window": raw,
        "share_of_raw": round(per_window / raw, 4),
        "distill_s": round(distill_s, 1),
        "train_s": round(train_s, 1),
        "held_out_weighted_pearson": report["weighted_pearson_mean"],
        "evaluated_on": truth,
    }


def beluga_shaped(settings: list[str], windows: int, work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    F, L = 2002, 2000
    storage = StorageSpec()
    out: dict[str, Any] = {"windows": windows, "raw_float16_bytes_per_window": F * 4 * L * 2, "bytes_per_window": {}}
    ref = rng.integers(0, 4, size=(windows, L))
    data = rng.laplace(0, 0.05, size=(windows, F, 4, L)).astype(np.float16)
    data[np.arange(windows)[:, None], :, ref, np.arange(L)[None, :]] = 0
    for q in settings:
        z = zarr.open_group(str(work / f"beluga-{q}.zarr"), mode="w")
        a = z.create_array("t", shape=data.shape, chunks=(1, F, 4, L), dtype="float16", fill_value=0.0,
                           compressors=compressors(target_codec(storage), storage))  # fmt: skip
        a[:] = bitround(data, q)
        out["bytes_per_window"][q] = round(stored_bytes(a) / windows, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--demo", type=Path, default=Path("work/demo"))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--settings", default=SETTINGS)
    parser.add_argument("--steps", type=int, help="Training steps of every run (default: the demo's).")
    parser.add_argument("--beluga-windows", type=int, default=2)
    args = parser.parse_args()
    ensure_demo(args.demo)
    genome = args.demo / "genome.fa"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-storage-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = args.settings.split(",")
    result: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(torch=package_version("torch"), zarr=package_version("zarr")),
        "steps": args.steps or DEMO_SPEC["train"]["steps"],
        "demo": [],
    }
    lossless = None
    for q in settings:
        row = demo_setting(work, genome, q, args.steps, lossless)
        if q == "none":
            lossless = str(_spec(work, genome, "none").store_path())
        result["demo"].append(row)
        print("demo", json.dumps(row), flush=True)
    base = next((r for r in result["demo"] if r["quantize"] == "none"), None)
    for r in result["demo"]:
        if base is not None:
            r["pearson_loss_vs_lossless"] = round(base["held_out_weighted_pearson"] - r["held_out_weighted_pearson"], 4)
    result["beluga_shaped"] = beluga_shaped(settings, args.beluga_windows, work)
    print("beluga", json.dumps(result["beluga_shaped"]), flush=True)
    write_result(result, args.json)


if __name__ == "__main__":
    main()
