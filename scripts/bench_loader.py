"""Benchmark: can the loader keep a GPU fed?

1. Writes a Beluga-sized store (L = 2000, F = 2002, random float16 targets, the default codec).
2. Raw decode speed of that codec on one core (numcodecs, one thread), for reference.
3. Samples/s and decoded GB/s delivered by the training loader alone (StoreDataset + block-shuffled
   RankBatchSampler + DataLoader) for 0, 1, 2, ... workers.
4. Training step time of the demo multiplexer and of the full BelugaMultiplexer (CPU here; CUDA when
   present), and from it the number of loader workers one device needs to stay fed.

    python scripts/bench_loader.py --json bench/loader.json
    python scripts/bench_loader.py --quick         # smaller store, no BelugaMultiplexer step
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.core.spec import spec_from_dict
from pipeline.models import BelugaMultiplexer, ConvMultiplexer
from pipeline.store import create_or_open_store, open_store, store_info
from pipeline.train.data import BlockShuffle, RankBatchSampler, StoreDataset, collate_batch

L, F = 2000, 2002


def make_store(path: Path, n: int, unit: int, seq_len: int = L, n_targets: int = F) -> str:
    """A store of ``n`` train samples (and one unit of valid) with random one-hot windows and random
    float16 targets (0 at reference bases), Beluga-shaped by default, in the default layout and codec."""
    kwargs = {} if (seq_len, n_targets) == (L, F) else {"kwargs": {"seq_len": seq_len, "n_targets": n_targets}}
    spec = spec_from_dict(
        {
            "name": "loader_bench",
            "genome": "unused.fa",
            "seq_len": seq_len,
            "base": {"model": "beluga", "weights": "random", **kwargs},
            "splits": {"train": {"chroms": ["chr1"], "samples": n}, "valid": {"chroms": ["chr2"], "samples": unit}},
            "storage": {"unit_samples": unit},
        },
        base_dir=path.parent,
    )
    store = create_or_open_store(
        str(path),
        spec,
        base_identity={"model": "beluga", "weights": None, "weights_sha256": None, "init": "random (seed 0)"},
        n_targets=n_targets,
        target_names=[f"t{i}" for i in range(n_targets)],
    )
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for u, a, b in store.iter_units(split):
            k = b - a
            X = np.zeros((k, 4, seq_len), dtype=np.uint8)
            X[np.arange(k)[:, None], rng.integers(0, 4, (k, seq_len)), np.arange(seq_len)[None, :]] = 1
            y = (rng.standard_normal((k, n_targets, 4, seq_len), dtype=np.float32) * 0.3).astype(np.float16)
            y[np.broadcast_to(X[:, None].astype(bool), y.shape)] = 0
            store.write_unit(
                split,
                u,
                reference=X,
                ref_pred=np.full((k, n_targets), 0.5, np.float32),
                targets=y,
                chrom=["chr1"] * k,
                center=np.full(k, 1000),
            )
    return str(path)


def raw_decode(path: str) -> dict:
    """Decode every targets chunk file of the train split with one Blosc thread: GB/s of float16 output."""
    import numcodecs

    numcodecs.blosc.set_nthreads(1)
    arr = open_store(path).array("train", "targets")
    codec = arr.compressors[0]
    files = [
        Path(path) / "train" / "targets" / arr.metadata.encode_chunk_key((i, 0, 0, 0)) for i in range(arr.shape[0])
    ]
    blobs = [f.read_bytes() for f in files]
    blosc = numcodecs.Blosc()  # cname and shuffle are read from each frame's header
    start = time.perf_counter()
    out = sum(len(blosc.decode(blob)) for blob in blobs)
    seconds = time.perf_counter() - start
    return {
        "codec": f"blosc-{codec.cname.value} {codec.shuffle.value} level {codec.clevel}",
        "decoded_GB_per_s_one_core": round(out / seconds / 1e9, 3),
        "compressed_MB_per_sample": round(sum(map(len, blobs)) / len(blobs) / 1e6, 2),
    }


def loader_rate(path: str, workers: int, batch: int, epochs: int) -> dict:
    ds = StoreDataset(path, "train")
    sampler = RankBatchSampler(BlockShuffle(len(ds), ds.unit_samples, 8, seed=0), batch)
    loader = DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=collate_batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
    )
    next(iter(loader))  # start workers, open stores
    samples, start = 0, time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for X, _y in loader:
            samples += X.shape[0]
    seconds = time.perf_counter() - start
    bytes_per = F * 4 * L * 2
    return {
        "workers": workers,
        "samples_per_s": round(samples / seconds, 2),
        "decoded_GB_per_s": round(samples * bytes_per / seconds / 1e9, 3),
    }


def step_time(
    model: torch.nn.Module, batch: int, seq_len: int, n_targets: int, device: torch.device, repeats: int
) -> float:
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (batch, seq_len)), 4).permute(0, 2, 1).float().to(device)
    y = torch.randn(batch, n_targets, 4, seq_len, device=device)
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.mse_loss(model(X).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int, default=None, help="train samples in the store (default 48)")
    parser.add_argument("--max-workers", type=int, default=max(2, min(8, os.cpu_count() or 2)))
    parser.add_argument("--json")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-loader-"))
    work.mkdir(parents=True, exist_ok=True)
    n = args.samples or (16 if args.quick else 48)
    path = work / "beluga_sized.zarr"
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    make_store(path, n, unit=8)
    info = store_info(open_store(str(path)))["splits"]["train"]
    print(
        f"store: {n} samples of L={L}, F={F}: {info['bytes_per_sample'] / 1e6:.1f} MB/sample stored "
        f"({info['raw_float32_bytes_per_sample'] / 1e6:.1f} MB raw float32), written in {time.perf_counter() - t:.1f}s"
    )
    decode = raw_decode(str(path))
    print(f"raw decode, one core ({decode['codec']}): {decode['decoded_GB_per_s_one_core']:.3f} GB/s")
    workers = sorted({0, 1, 2, *[w for w in (4, 8) if w <= args.max_workers]})
    rates = []
    for w in workers:
        rates.append(loader_rate(str(path), w, batch=4, epochs=1 if args.quick else 2))
        print(
            f"loader, {w} workers: {rates[-1]['samples_per_s']:.2f} samples/s, {rates[-1]['decoded_GB_per_s']:.3f} GB/s"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = {}
    demo = ConvMultiplexer(200, 16, 64, 64, 8, (2, 4, 8, 4, 2))
    steps["demo (L=200, F=16, batch 16)"] = step_time(demo, 16, 200, 16, device, repeats=5)
    if not args.quick:
        beluga_batch = 8 if device.type == "cuda" else 1
        steps[f"BelugaMultiplexer (L=2000, F=2002, batch {beluga_batch})"] = step_time(
            BelugaMultiplexer(), beluga_batch, L, F, device, repeats=3 if device.type == "cuda" else 1
        )
    for name, seconds in steps.items():
        print(f"training step on {device.type}: {name}: {seconds:.3f} s")
    per_worker = max(r["samples_per_s"] / max(r["workers"], 1) for r in rates if r["workers"] > 0)
    feed = {}
    for name, seconds in steps.items():
        if name.startswith("BelugaMultiplexer"):
            batch = int(name.rsplit("batch ", 1)[1].rstrip(")"))
            need = batch / seconds
            feed = {
                "device": device.type,
                "model_samples_per_s": round(need, 3),
                "loader_samples_per_s_per_worker": round(per_worker, 2),
                "workers_needed": math.ceil(need / per_worker),
            }
            print(
                f"{device.type} trains the BelugaMultiplexer at {need:.3f} samples/s; one loader worker gives "
                f"{per_worker:.2f} samples/s -> {feed['workers_needed']} worker(s) keep it fed"
            )
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "store": {"samples": n, "bytes_per_sample": info["bytes_per_sample"]},
        "raw_decode": decode,
        "loader": rates,
        "step_seconds": steps,
        "feed": feed,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
