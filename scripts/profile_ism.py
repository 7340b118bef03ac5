"""Profile the fast ISM engine: operator calls per window and per chunk, host syncs, and MACs per phase.

Device-independent figures (the same on CPU and CUDA for the same code and shapes): ``torch.profiler``
counts every ATen operator the engine calls; the *compute* operators (leaves of the call tree that are
not views or metadata) are what a GPU runs as kernels, so their count per window is the number of
kernel launches (up to a small factor: a few operators launch two kernels). Operators that make a CUDA
host wait (``item``, ``nonzero``, ``unique_consecutive``, ``masked_select``, …) are counted apart. The
multiply-adds of each phase come from the plan (widths of every layer's patch), for the engine's
formulation and for the previous one.

    python scripts/profile_ism.py                       # Beluga L=2000 F=2002, random weights, 1 window
    python scripts/profile_ism.py --model demo --windows 16
    python scripts/profile_ism.py --json bench/ism_profile.json
    python scripts/profile_ism.py --device cuda --windows 2 --batch-size 4096 --json bench/ism_profile_cuda.json

On CUDA it also sums the device time of the kernels each phase (``ism.*`` range) launched and of all
kernels, against the wall time: a device busy most of the wall time is limited by its kernels, one
that is mostly idle by launches and the host.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch
from benchlib import machine
from torch.profiler import ProfilerActivity, profile

from pipeline.core.runtime import exact_float32
from pipeline.ism import fast_ism, get_plan, variant_index
from pipeline.ism.plan import ConvStep, Plan, PoolStep
from pipeline.models import build_base

VIEW_OPS = {
    "aten::view",
    "aten::reshape",
    "aten::_reshape_alias",
    "aten::_unsafe_view",
    "aten::permute",
    "aten::expand",
    "aten::expand_as",
    "aten::slice",
    "aten::select",
    "aten::as_strided",
    "aten::unsqueeze",
    "aten::squeeze",
    "aten::t",
    "aten::transpose",
    "aten::detach",
    "aten::alias",
    "aten::lift_fresh",
    "aten::unfold",
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::result_type",
    "aten::is_nonzero",
    "aten::narrow",
    "aten::split",
    "aten::unbind",
    "aten::flatten",
    "aten::contiguous",
    "aten::to",
    "aten::_to_copy",
    "aten::chunk",
    "aten::broadcast_tensors",
    "aten::lift",
    "aten::matmul",
    "aten::linear",
    "aten::conv1d",
    "aten::convolution",
    "aten::_convolution",
    "aten::max_pool1d",
    "aten::numpy_T",
    "aten::resize_",
    "aten::as_strided_",
    "aten::_nested_tensor_from_mask_left_aligned",
    "aten::squeeze_",
    "aten::unsqueeze_",
    "aten::set_",
}
"""Views and composite wrappers: no kernel of their own (their children, if any, are counted)."""

SYNC_OPS = {
    "aten::item",
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::unique_consecutive",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::masked_select",
    "aten::nonzero_numpy",
    "aten::repeat_interleave",
}
"""Operators that make the host wait for a CUDA device (their output size or value is read on the host)."""


def random_windows(n: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4).permute(0, 2, 1).float()
    X[:, :, length // 3] = 0.0
    return X.contiguous()


def _aten_children(ev: object) -> list:
    """The nearest ATen operators below ``ev`` (through non-ATen ranges such as ``record_function``)."""
    out = []
    for c in ev.cpu_children:  # type: ignore[attr-defined]
        out += [c] if c.name.startswith("aten::") else _aten_children(c)
    return out


def count_ops(prof: profile) -> tuple[Counter, Counter, Counter]:
    """Compute operators (not a view, no compute operator below), top-level operators and sync
    operators, by name."""
    compute: Counter = Counter()
    top: Counter = Counter()
    sync: Counter = Counter()
    memo: dict[int, bool] = {}

    def computes(ev: object) -> bool:
        key = id(ev)
        if key not in memo:
            below = any([computes(c) for c in _aten_children(ev)])
            memo[key] = below or ev.name not in VIEW_OPS  # type: ignore[attr-defined]
        return memo[key]

    for ev in prof.events():
        if not ev.name.startswith("aten::"):
            continue
        parent = ev.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            top[ev.name] += 1
        if ev.name in SYNC_OPS:
            sync[ev.name] += 1
        if ev.name not in VIEW_OPS and not any(computes(c) for c in _aten_children(ev)):
            compute[ev.name] += 1
    return compute, top, sync


def phase_macs(plan: Plan) -> dict[str, dict[str, int]]:
    """Multiply-adds per variant of each phase: convolutions on spliced contexts (the engine before
    issue 23) and convolutions as a product on the change alone (patch input width only)."""
    conv0 = plan.first_conv
    width = conv0.dilation * (conv0.weight.shape[-1] - 1) + 1
    splice, delta = {}, {}
    for i, step in enumerate(plan.body[1:], start=1):
        if isinstance(step, ConvStep):
            c_out, c_in_g, k = step.weight.shape
            span = step.dilation * (k - 1)
            splice[f"{i}:{step.name}"] = (width + span) * c_out * c_in_g * k
            delta[f"{i}:{step.name}"] = width * c_out * c_in_g * k
            width += span
        elif isinstance(step, PoolStep):
            width = (width + step.kernel - 2) // step.kernel + 1
    f1 = plan.linear.weight.shape[0]
    lin = min(width, plan.flat_length) * plan.flat_channels * f1
    head = sum(s.weight.numel() for s in plan.head if hasattr(s, "weight"))
    for table in (splice, delta):
        table["first Linear (low rank)"] = lin
        table["head"] = head
        table["total"] = sum(table.values())
    return {"spliced_context_conv": splice, "delta_product_conv": delta}


def device_times(prof: profile) -> dict:
    """Kernel time per ``ism.*`` range, in all, and the busiest kernels (CUDA only)."""
    averages = prof.key_averages()

    def device_total(ev: object, own: bool = False) -> float:
        key = "self_device_time_total" if own else "device_time_total"
        fallback = "self_cuda_time_total" if own else "cuda_time_total"
        return float(getattr(ev, key, getattr(ev, fallback, 0.0)) or 0.0)

    kernels = [ev for ev in averages if not ev.key.startswith(("aten::", "ism.")) and device_total(ev, True) > 0]
    return {
        "region_device_seconds": {
            ev.key: round(device_total(ev) / 1e6, 4) for ev in averages if ev.key.startswith("ism.")
        },
        "kernel_seconds": round(sum(device_total(ev, True) for ev in kernels) / 1e6, 4),
        "kernel_launches": int(sum(ev.count for ev in kernels)),
        "top_kernels": {
            ev.key[:80]: {"seconds": round(device_total(ev, True) / 1e6, 4), "count": ev.count}
            for ev in sorted(kernels, key=lambda e: -device_total(e, True))[:15]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="beluga", choices=["beluga", "demo"])
    parser.add_argument("--tiny", action="store_true", help="Beluga's layout at L=400, F=64 (a dry run)")
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024, help="variants per chunk (the engine's batch_size)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    kwargs = {"seq_len": 400, "n_targets": 64} if args.tiny and args.model == "beluga" else {}
    model = build_base(args.model, **kwargs).to(device).eval()
    L = model.seq_len
    X = random_windows(args.windows, L, seed=1)
    n_variants = variant_index(X)[0].numel()
    with exact_float32():
        plan = get_plan(model, L, device)
        fast_ism(model, X[:1], target="logfold", batch_size=args.batch_size, device=device)  # warm-up
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        start = time.perf_counter()
        with profile(activities=activities, record_shapes=False) as prof:
            fast_ism(model, X, target="logfold", batch_size=args.batch_size, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        fast_ism(model, X, target="logfold", batch_size=args.batch_size, device=device)  # unprofiled
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        unprofiled = time.perf_counter() - start
    compute, top, sync = count_ops(prof)
    chunks = -(-n_variants // args.batch_size)
    regions = {ev.key: round(ev.cpu_time_total / 1e6, 3) for ev in prof.key_averages() if ev.key.startswith("ism.")}
    n_compute, n_top = sum(compute.values()), sum(top.values())
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": args.model,
        "device": str(device),
        "seq_len": L,
        "windows": args.windows,
        "variants": n_variants,
        "batch_size": args.batch_size,
        "chunks": chunks,
        "seconds_profiled": round(seconds, 3),
        "seconds_unprofiled": round(unprofiled, 3),
        "windows_per_s_unprofiled": round(args.windows / unprofiled, 4),
        "compute_ops": n_compute,
        "compute_ops_per_window": round(n_compute / args.windows, 1),
        "compute_ops_per_chunk": round(n_compute / chunks, 1),
        "top_level_ops": n_top,
        "top_level_ops_per_window": round(n_top / args.windows, 1),
        "sync_ops": dict(sync),
        "compute_ops_by_name": dict(compute.most_common(25)),
        "region_seconds": regions,
        "macs_per_variant": phase_macs(plan),
        **(device_times(prof) if device.type == "cuda" else {}),
        "machine": machine(torch=torch.__version__, threads=torch.get_num_threads()),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
