"""Benchmark: naive vs fast (exact, incremental) ISM on Beluga and on the demo base model.

In one process: for each model and device (CPU, and CUDA when present), time the fast engine over
every variant of the windows, time the naive engine (over every variant for the demo model; over an
evenly spread sample of variants for Beluga, whose 6000 full forward passes per window take minutes
on a CPU: the naive cost per variant is the same for every variant), and compare the two on the
variants both computed. Prints variants/s, the speedup and the max absolute error of the alternative
predictions and of the log-fold targets; ``--json`` writes the figures.

    python scripts/bench_ism.py                  # Beluga L=2000 F=2002 (random weights) + demo
    python scripts/bench_ism.py --quick          # smaller: for a smoke run
    python scripts/bench_ism.py --devices cuda --tf32-check --json bench/ism_cuda.json   # on a GPU
    python scripts/bench_ism.py --devices cpu --tiny   # Beluga's layout at L=400, F=64: a dry run

``--tf32-check`` also runs the fast engine with TF32 products allowed and compares its float16 effects
(what a store keeps) with the exact float32 run's: the share of stored elements that change and the
largest change. On a CPU TF32 does not exist, so both runs are the same computation.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone

import torch

from pipeline.core.runtime import exact_float32
from pipeline.ism import fast_ism, get_plan, log_fold, mutate_batch, variant_index
from pipeline.models import Beluga, DemoBase

TINY_BELUGA = {"seq_len": 400, "n_targets": 64}
"""Beluga's layers at a small size, for a dry run of the GPU script on a CPU."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_windows(n: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4).permute(0, 2, 1).float()
    X[:, :, length // 3] = 0.0  # one N column per window
    return X.contiguous()


@torch.no_grad()
def naive_sample(model: torch.nn.Module, X: torch.Tensor, n_variants: int | None, batch: int, device: torch.device):
    """Naive ISM (one forward pass per variant) over all variants, or an evenly spread sample."""
    seq, pos, base = variant_index(X)
    if n_variants is not None and n_variants < seq.numel():
        pick = torch.linspace(0, seq.numel() - 1, n_variants).round().long()
        seq, pos, base = seq[pick], pos[pick], base[pick]
    Xd = X.to(device)
    outs = []
    sync(device)
    start = time.perf_counter()
    for i in range(0, seq.numel(), batch):
        s, p, b = seq[i : i + batch], pos[i : i + batch], base[i : i + batch]
        outs.append(model(mutate_batch(Xd, s.to(device), p.to(device), b.to(device))))
    sync(device)
    seconds = time.perf_counter() - start
    return (seq, pos, base), torch.cat(outs).cpu(), seconds


def tf32_check(model: torch.nn.Module, X: torch.Tensor, device: torch.device, batch: int) -> dict:
    """Fast ISM with TF32 products allowed against exact float32, both stored as float16 (log-fold)."""
    exact, _ = fast_ism(model, X, target="logfold", batch_size=batch, device=device, out_dtype=torch.float16)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        fast_ism(model, X[:1], target="logfold", batch_size=batch, device=device)  # warm-up
        sync(device)
        t = time.perf_counter()
        tf32, _ = fast_ism(model, X, target="logfold", batch_size=batch, device=device, out_dtype=torch.float16)
        sync(device)
        seconds = time.perf_counter() - t
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    changed = exact != tf32
    return {
        "tf32_fast_variants_per_s": round(variant_index(X)[0].numel() / seconds, 1),
        "tf32_stored_elements": int(exact.numel()),
        "tf32_share_changed": float(changed.double().mean()),
        "tf32_max_abs_change": float((exact.float() - tf32.float()).abs().max()),
        "tf32_max_abs_logfold": float(exact.float().abs().max()),
    }


def bench(
    name: str,
    model: torch.nn.Module,
    X: torch.Tensor,
    device: torch.device,
    naive_variants: int | None,
    fast_batch: int,
    naive_batch: int,
) -> dict:
    model = model.to(device).eval()
    L = X.shape[-1]
    t = time.perf_counter()
    get_plan(model, L, device)
    plan_s = time.perf_counter() - t
    fast_ism(model, X[:1], target="alt", batch_size=fast_batch, device=device)  # warm-up
    sync(device)
    t = time.perf_counter()
    alt_fast, ref = fast_ism(model, X, target="alt", batch_size=fast_batch, device=device)
    sync(device)
    fast_s = time.perf_counter() - t
    n_all = variant_index(X)[0].numel()
    (seq, pos, base), alt_naive, naive_s = naive_sample(model, X, naive_variants, naive_batch, device)
    fast_at = alt_fast[seq, :, base, pos]
    ref_at = ref[seq]
    alt_err = (fast_at - alt_naive).abs().max().item()
    lf_err = (log_fold(fast_at, ref_at) - log_fold(alt_naive, ref_at)).abs().max().item()
    fast_rate, naive_rate = n_all / fast_s, seq.numel() / naive_s
    return {
        "model": name,
        "device": str(device),
        "seq_len": L,
        "n_targets": int(ref.shape[1]),
        "windows": X.shape[0],
        "variants": n_all,
        "naive_variants_timed": int(seq.numel()),
        "plan_seconds": round(plan_s, 3),
        "fast_seconds": round(fast_s, 3),
        "naive_seconds": round(naive_s, 3),
        "fast_batch": fast_batch,
        "fast_windows_per_s": round(X.shape[0] / fast_s, 3),
        "fast_variants_per_s": round(fast_rate, 1),
        "naive_variants_per_s": round(naive_rate, 2),
        "speedup": round(fast_rate / naive_rate, 2),
        "max_abs_error_alt": alt_err,
        "max_abs_error_logfold": lf_err,
    }


@exact_float32()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Beluga on fewer naive variants (smoke run)")
    parser.add_argument("--tiny", action="store_true", help="Beluga's layout at L=400, F=64 (a dry run)")
    parser.add_argument("--devices", default="auto", help="cpu, cuda, or auto (CPU, plus CUDA when present)")
    parser.add_argument("--windows", type=int, default=None, help="Beluga windows (default: 1 on CPU, 4 on CUDA)")
    parser.add_argument("--fast-batch", type=int, default=None, help="fast engine's variants per chunk")
    parser.add_argument("--naive-variants", type=int, default=None, help="naive engine's sample of variants")
    parser.add_argument("--tf32-check", action="store_true", help="also run fast ISM with TF32 (see above)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else [args.devices]
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        cuda = device.type == "cuda"
        torch.manual_seed(0)
        beluga = Beluga(**TINY_BELUGA) if args.tiny else Beluga()  # random weights; L = 2000, F = 2002
        L = beluga.seq_len
        X = random_windows(args.windows or (4 if cuda else 1), L, seed=1)
        fast_batch = args.fast_batch or (4096 if cuda else 512)
        naive = args.naive_variants or (4096 if cuda else 32 if args.tiny else 64 if args.quick else 256)
        rows.append(
            bench(
                "beluga",
                beluga,
                X,
                device,
                naive_variants=naive,
                fast_batch=fast_batch,
                naive_batch=128 if cuda else 32,
            )
        )
        if args.tf32_check:
            rows[-1].update(tf32_check(beluga.to(device), X, device, fast_batch))
        write(rows, args.json)  # each row as soon as it is measured: a time limit keeps what was done
        del beluga
        demo = DemoBase()
        rows.append(
            bench(
                "demo",
                demo,
                random_windows(16, demo.seq_len, seed=2),
                device,
                naive_variants=None,
                fast_batch=4096,
                naive_batch=4096,
            )
        )
        write(rows, args.json)
    header = (
        f"{'model':8} {'device':6} {'L':>5} {'F':>5} {'fast var/s':>11} {'naive var/s':>12} {'speedup':>8} "
        f"{'max err alt':>12} {'max err lf':>11}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['model']:8} {r['device']:6} {r['seq_len']:5d} {r['n_targets']:5d} {r['fast_variants_per_s']:11.1f} "
            f"{r['naive_variants_per_s']:12.2f} {r['speedup']:7.1f}x {r['max_abs_error_alt']:12.2e} "
            f"{r['max_abs_error_logfold']:11.2e}"
        )
    for r in rows:
        if "tf32_share_changed" in r:
            print(
                f"{r['model']} with TF32 on {r['device']}: {r['tf32_fast_variants_per_s']:.1f} variants/s; "
                f"{100 * r['tf32_share_changed']:.3f} % of the stored float16 log-fold elements change, "
                f"the largest by {r['tf32_max_abs_change']:.3g}"
            )
    if args.json:
        print(f"wrote {args.json}")


def write(rows: list[dict], path: str | None) -> None:
    if path is None:
        return
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "results": rows,
    }
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
