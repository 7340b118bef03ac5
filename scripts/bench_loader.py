"""Benchmark: can the loader keep a GPU fed, and is its cost the decode itself?

On a Beluga-shaped store (L = 2000, F = 2002, float16, the default codec blosc-zstd bitshuffle level
3, one sample per chunk, format 4: the three alternatives of each position), measured back to back in
one process, ``--repeats`` times, in rotating order (so load from elsewhere falls on all alike):

1. **raw decode**: every targets chunk of the train split, read into memory beforehand, decoded with
   numcodecs on one core into one buffer (no checks): the codec's own speed on these chunks;
2. **loader, one worker**: the training feed (:class:`pipeline.train.feed.Feed`: block-shuffled batches
   of 4, one DataLoader worker decoding into the shared batch slots, checksums checked) over the whole
   split, as the main process receives it (before the device copy);
3. **plain zarr read**: ``reference`` and ``targets`` of every sample through zarr, one thread, in
   order, batches of 4, no checks beyond zarr's own chunk CRC-32C;
4. **loader in this process**: the feed with no worker (one thread, checksums included), all samples.
5. **checksums**: the checks of pass 4 alone on the same bytes (CRC-32C of every targets and reference
   chunk, the samples' targets digests from the trailers, the CRC-32 of each decoded reference).

Ratios: (1)/(2) is one worker's decoded GB/s against the raw single-core decode (goal >= 0.8);
(4)/(3) the end-to-end time of the loader against a plain read (goal <= 1.15); (5)/(4) the share of a
read the checksums cost (goal <= 0.05), next to its floor on this CPU (the same CRC-32C on bytes already
in cache: :func:`checksum_floor`). The median over the
repeats is reported, with the spread, on the wall clock and in CPU seconds (this process and its
worker processes, read from ``/proc``): on a machine shared with other jobs the CPU time is the steady
figure (it counts only the work done), the wall clock also the share of the cores each pass got.
Also: samples/s by worker count, decoded and stored bytes per
sample against format 3's ``F · 4 · L · 2`` (goal <= 0.75), the layout/codec candidates (stored bytes
and one-core decode speed of ``[F, 4, L]`` and ``[F, 3, L]`` windows under each codec, on random
windows and, with ``--ism-windows``, on windows of real fast ISM of a random-weight Beluga), and the
training step times from which the number of workers one device needs follows.

    python scripts/bench_loader.py --json bench/loader.json
    python scripts/bench_loader.py --quick         # fewer samples and repeats, no ISM windows, no Beluga step
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import torch
import zarr
from benchlib import machine

from pipeline.core.spec import spec_from_dict
from pipeline.models import BelugaMultiplexer, ConvMultiplexer
from pipeline.store import create_or_open_store, open_store, store_info
from pipeline.store.chunkio import crc32c, trailer_digest
from pipeline.store.layout import compact_targets
from pipeline.train.data import BlockShuffle, RankBatchSampler, StoreDataset, _single_threaded_decoding
from pipeline.train.feed import Feed

L, F = 2000, 2002
BATCH = 4
N_FRACTION = 0.01
"""Share of positions that are ``N`` (all-zero reference columns)."""


def unit_data(rng: np.random.Generator, k: int, n_targets: int, seq_len: int, ism: dict | None = None) -> dict:
    """One unit's arrays: one-hot references with ``N`` columns; targets random (normal, sd 0.3) or the
    given ISM windows (in turn), 0 at reference bases and ``N`` columns."""
    if ism is not None:
        pick = rng.integers(0, len(ism["X"]), k)
        X, y = ism["X"][pick], ism["y"][pick]
    else:
        X = np.zeros((k, 4, seq_len), dtype=np.uint8)
        X[np.arange(k)[:, None], rng.integers(0, 4, (k, seq_len)), np.arange(seq_len)[None, :]] = 1
        X[np.broadcast_to(rng.random((k, 1, seq_len)) < N_FRACTION, X.shape)] = 0
        y = (rng.standard_normal((k, n_targets, 4, seq_len), dtype=np.float32) * 0.3).astype(np.float16)
        keep = (X.sum(axis=1, keepdims=True) > 0) & (X == 0)
        y[~np.broadcast_to(keep[:, None], y.shape)] = 0
    return {
        "reference": X,
        "ref_pred": np.full((k, n_targets), 0.5, np.float32),
        "targets": y,
        "chrom": ["chr1"] * k,
        "center": np.full(k, 1000),
    }


def make_store(
    path: Path,
    n: int,
    unit: int,
    *,
    seq_len: int = L,
    n_targets: int = F,
    storage: dict | None = None,
    ism: dict | None = None,
) -> str:
    """A store of ``n`` train samples (and one unit of valid samples) of random targets, or of the
    ``ism`` windows; ``storage``: spec storage settings beyond ``unit_samples``. Beluga-shaped by default;
    another shape gives the base model that shape (its ``kwargs``)."""
    kwargs = {} if (seq_len, n_targets) == (L, F) else {"kwargs": {"seq_len": seq_len, "n_targets": n_targets}}
    spec = spec_from_dict(
        {
            "name": "loader_bench",
            "genome": "unused.fa",
            "seq_len": seq_len,
            "base": {"model": "beluga", "weights": "random", **kwargs},
            "splits": {"train": {"chroms": ["chr1"], "samples": n}, "valid": {"chroms": ["chr2"], "samples": unit}},
            "storage": {"unit_samples": unit, **(storage or {})},
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
            store.write_unit(split, u, **unit_data(rng, b - a, n_targets, seq_len, ism))
    return str(path)


@contextlib.contextmanager
def one_decode_thread() -> Iterator[None]:
    """What a DataLoader worker does (``_single_threaded_decoding``), undone afterwards."""
    threads = zarr.config.get("threading.max_workers")
    previous = numcodecs.blosc.get_nthreads()
    _single_threaded_decoding()
    try:
        yield
    finally:
        zarr.config.set({"threading.max_workers": threads})
        numcodecs.blosc.set_nthreads(previous)


def children_cpu() -> float:
    """CPU seconds used so far by this process's live child processes (the DataLoader workers), from
    ``/proc`` (0 where there is none)."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``fn()`` (CPU: this process, all its threads, and its worker processes
    while ``fn`` ran): the CPU time is what load from other jobs on the machine barely changes."""
    wall, cpu, kids = time.perf_counter(), time.process_time(), children_cpu()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu + children_cpu() - kids


class Passes:
    """The four timed passes over a store's train split (see the module docstring)."""

    def __init__(self, path: str, workers_pass: int = 1) -> None:
        self.path = path
        store = open_store(path)
        self.n = store.split_meta("train").n_samples
        self.chunks = store.target_chunks("train")
        self.blobs = [np.array(b) for b in self.chunks.encoded(self.chunks.pieces(0, self.n))]  # copies, in memory
        refs = store.target_chunks("train", "reference")
        self.ref_blobs = [np.array(b) for b in refs.encoded(refs.pieces(0, self.n))]
        self.references = np.ascontiguousarray(store.read("train", "reference", 0, self.n))
        self.out = np.empty(self.chunks.chunk_nbytes(self.chunks.pieces(0, 1)[0]), dtype=np.uint8)
        self.ds = StoreDataset(path, "train")
        self.sampler = RankBatchSampler(BlockShuffle(self.n, self.ds.unit_samples, 8, seed=0), BATCH)
        self.worker_feed = Feed(self.ds, self.sampler, torch.device("cpu"), workers=workers_pass, prefetch_factor=2)
        self.inline_feed = Feed(self.ds, self.sampler, torch.device("cpu"), workers=0)
        self.epoch = 0

    def raw_decode(self) -> None:
        codec = self.chunks.codec
        for blob in self.blobs:  # the trailer left off, not checked
            codec.decode_into(blob[:-4] if codec.crc32c else blob, self.out, self.chunks.scratch)

    def checksums(self) -> None:
        """The checks a loader pass makes, alone, on the same bytes: the CRC-32C of every targets and
        reference chunk (the trailer), the format-4 targets digest of each sample (of its chunks'
        trailers) and the CRC-32 of each decoded reference (its sample digest)."""
        for blob in self.blobs:
            crc32c(blob[:-4])
            trailer_digest(blob[-4:].view("<u4"))
        for blob in self.ref_blobs:
            crc32c(blob[:-4])
        for sample in self.references:
            zlib.crc32(sample.data)

    def _feed_pass(self, feed: Feed) -> None:
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        assert received(feed) == self.n

    def loader_worker(self) -> None:
        self._feed_pass(self.worker_feed)

    def loader_inline(self) -> None:
        self._feed_pass(self.inline_feed)

    def zarr_plain(self) -> None:
        group = zarr.open_group(self.path, mode="r")["train"]
        reference, targets = group["reference"], group["targets"]
        for a in range(0, self.n, BATCH):
            np.asarray(reference[a : a + BATCH])
            np.asarray(targets[a : a + BATCH])

    def close(self) -> None:
        self.worker_feed.close()


def best_cpu_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The least CPU time of ``repeats`` runs of ``fn()`` (seconds, as :func:`timed` counts it)."""
    return min(timed(fn)[1] for _ in range(repeats))


def checksum_floor(passes: Passes, loader_read_s: float) -> dict[str, float]:
    """What the checks could cost at best on this CPU, against a loader read of ``loader_read_s`` seconds.

    The CRC-32C of a chunk is one pass over its compressed bytes, as stored. Measured here, one core:
    the CRC-32C rate on a buffer already in cache (256 KiB, read again and again), the rate on the
    stored chunks (each larger than the core's cache, all of them larger than the last-level cache:
    the bytes come from memory) and the plain read bandwidth of memory (an XOR over the same chunks). The
    floor is the checks' share of a read (both in CPU time) if every byte checked came from cache: the
    same CRC-32C with no memory traffic of its own."""
    blobs = passes.blobs + passes.ref_blobs
    checked = sum(b.size - 4 for b in blobs)
    hot = passes.blobs[0][: 256 * 1024]
    rounds = 4096  # about 1 GB: long enough that reading the CPU clocks costs nothing against it
    in_cache = best_cpu_seconds(lambda: [crc32c(hot) for _ in range(rounds)], 5) / rounds
    from_memory = best_cpu_seconds(lambda: [crc32c(b[:-4]) for b in blobs], 3)
    words = [b[: b.size // 8 * 8].view(np.uint64) for b in blobs]
    read = best_cpu_seconds(lambda: [np.bitwise_xor.reduce(w) for w in words], 3)
    floor = checked / (hot.size / in_cache) / loader_read_s
    return {
        "checked_MB": round(checked / 1e6, 2),
        "crc32c_in_cache_GB_per_s": round(hot.size / in_cache / 1e9, 2),
        "crc32c_from_memory_GB_per_s": round(checked / from_memory / 1e9, 2),
        "memory_read_GB_per_s": round(sum(b.size for b in blobs) / read / 1e9, 2),
        "floor_share_of_loader_read": round(floor, 4),
    }


def received(feed: Feed) -> int:
    """One pass of the feed as the main process receives it (each slot given back at once, as the
    device copy would): the samples delivered."""
    n = 0
    for filled in feed:
        feed.slots.release(filled.slot)
        n += filled.n
    return n


def back_to_back(passes: Passes, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Each pass ``repeats`` times, the order rotating every round, after one warm-up round."""
    names = ["raw_decode", "loader_worker", "zarr_plain", "loader_inline", "checksums"]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with one_decode_thread():
        for name in names:  # warm-up: page cache, worker start, imports
            getattr(passes, name)()
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(timed(getattr(passes, name)))
    return times


def median_ratio(a: list[tuple[float, float]], b: list[tuple[float, float]], clock: int = 0) -> dict[str, float]:
    """Median and range of ``a / b`` over the rounds (wall clock by default)."""
    ratios = [x[clock] / y[clock] for x, y in zip(a, b, strict=True)]
    return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3), "max": round(max(ratios), 3)}


def by_workers(path: str, workers: list[int]) -> list[dict]:
    """Samples/s and decoded GB/s of the feed (host side) with each worker count, one pass after a warm-up."""
    ds = StoreDataset(path, "train")
    sampler = RankBatchSampler(BlockShuffle(len(ds), ds.unit_samples, 8, seed=0), BATCH)
    rows = []
    for w in workers:
        with Feed(ds, sampler, torch.device("cpu"), workers=w) as feed, one_decode_thread():
            sampler.set_epoch(0)
            received(feed)
            sampler.set_epoch(1)
            wall, _ = timed(lambda feed=feed: received(feed))
        rows.append({
            "workers": w,
            "samples_per_s": round(len(ds) / wall, 2),
            "decoded_GB_per_s": round(len(ds) * ds.sample_bytes / wall / 1e9, 3),
        })  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------
# layouts and codecs
# ------------------------------------------------------------------------------------------------

CANDIDATES = {
    "blosc-zstd bitshuffle (default)": lambda: numcodecs.Blosc("zstd", 3, numcodecs.Blosc.BITSHUFFLE),
    "blosc-lz4 bitshuffle": lambda: numcodecs.Blosc("lz4", 5, numcodecs.Blosc.BITSHUFFLE),
    "blosc-zstd shuffle": lambda: numcodecs.Blosc("zstd", 3, numcodecs.Blosc.SHUFFLE),
    "zstd": lambda: [numcodecs.Zstd(3)],
    "shuffle + zstd (zstd-gpu)": lambda: [numcodecs.Shuffle(2), numcodecs.Zstd(3)],
}
"""The codecs compared (level 3 for zstd, 5 for lz4, as the spec's defaults and bench_distill)."""


def _encode(codec: Any, raw: np.ndarray) -> bytes:
    if isinstance(codec, list):
        data: Any = raw
        for step in codec:
            data = step.encode(data)
        return bytes(data)
    return bytes(codec.encode(raw))


def _decode(codec: Any, blob: bytes, out: np.ndarray, tmp: np.ndarray) -> None:
    if isinstance(codec, list):
        if len(codec) == 1:
            codec[0].decode(blob, out=out)
        else:
            codec[1].decode(blob, out=tmp)
            codec[0].decode(tmp, out=out)
    else:
        codec.decode(blob, out=out)


def layouts(windows: dict[str, tuple[np.ndarray, np.ndarray]], repeats: int) -> list[dict]:
    """Stored MB and one-core decode GB/s (CPU time, best of ``repeats``) per window, for each layout
    and codec candidate, on each kind of window (``{kind: (X, y)}``)."""
    numcodecs.blosc.set_nthreads(1)
    rows = []
    for kind, (X, y4) in windows.items():
        y3 = compact_targets(torch.from_numpy(y4), torch.from_numpy(X)).numpy()
        for layout, y in (("[F, 4, L] (format 3)", y4), ("[F, 3, L] (format 4)", y3)):
            raws = [np.ascontiguousarray(w).view(np.uint8).reshape(-1) for w in y]
            for name, make in CANDIDATES.items():
                codec = make()
                blobs = [_encode(codec, r) for r in raws]
                out, tmp = np.empty_like(raws[0]), np.empty_like(raws[0])
                best = best_cpu_seconds(
                    lambda codec=codec, blobs=blobs, out=out, tmp=tmp: [_decode(codec, b, out, tmp) for b in blobs],
                    repeats,
                )
                rows.append({
                    "windows": kind,
                    "layout": layout,
                    "codec": name,
                    "decoded_MB": round(raws[0].size / 1e6, 3),
                    "stored_MB": round(sum(map(len, blobs)) / len(blobs) / 1e6, 3),
                    "decode_GB_per_s_one_core": round(sum(r.size for r in raws) / best / 1e9, 3),
                })  # fmt: skip
    return rows


def random_windows(k: int) -> tuple[np.ndarray, np.ndarray]:
    data = unit_data(np.random.default_rng(1), k, F, L)
    return data["reference"], data["targets"]


def ism_windows(k: int, cache: Path) -> dict:
    """``k`` windows of fast ISM (log-fold, float16) of Beluga with random weights (seed 0), cached."""
    if cache.exists():
        with np.load(cache) as saved:
            if len(saved["X"]) >= k:
                return {"X": saved["X"][:k], "y": saved["y"][:k]}
    from pipeline.ism import saturation_mutagenesis
    from pipeline.models import build_base

    torch.manual_seed(0)
    model = build_base("beluga")
    X, _ = random_windows(k)
    y = saturation_mutagenesis(model, torch.from_numpy(X).float(), engine="fast", target="logfold")
    out = {"X": X, "y": y.half().numpy()}
    np.savez(cache, **out)
    return out


# ------------------------------------------------------------------------------------------------
# training steps
# ------------------------------------------------------------------------------------------------


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
    parser.add_argument("--samples", type=int, default=None, help="train samples in the store (default 48; quick 16)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of the back-to-back passes (default 5)")
    parser.add_argument("--targets", choices=("random", "ism"), default="random",
                        help="the store's targets: random, or the ISM windows (repeated)")  # fmt: skip
    parser.add_argument("--ism-windows", type=int, default=None, help="real ISM windows for the layouts (default 2)")
    parser.add_argument("--max-workers", type=int, default=max(2, min(8, os.cpu_count() or 2)))
    parser.add_argument("--beluga-step", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--json")
    parser.add_argument("--workdir", help="keep the store (and the ISM windows) here")
    args = parser.parse_args()
    n = args.samples or (16 if args.quick else 48)
    repeats = args.repeats or (2 if args.quick else 5)
    k_ism = args.ism_windows if args.ism_windows is not None else (0 if args.quick else 2)
    beluga_step = args.beluga_step if args.beluga_step is not None else not args.quick
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-loader-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    ism = ism_windows(max(k_ism, 1), work / "beluga_ism.npz") if (k_ism or args.targets == "ism") else None
    path = work / "beluga_shaped.zarr"
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    make_store(path, n, unit=8, ism=ism if args.targets == "ism" else None)
    info = store_info(open_store(str(path)))["splits"]["train"]
    decoded, format3 = info["decoded_bytes_per_sample"], F * 4 * L * 2
    print(
        f"store ({args.targets} targets): {n} samples of L={L}, F={F}: {info['bytes_per_sample'] / 1e6:.2f} MB/sample "
        f"stored, {decoded / 1e6:.2f} MB decoded ({decoded / format3:.2f} of format 3's {format3 / 1e6:.2f} MB), "
        f"written in {time.perf_counter() - t:.1f}s"
    )
    passes = Passes(str(path))
    try:
        times = back_to_back(passes, repeats)
        med = {name: statistics.median(w for w, _ in ts) for name, ts in times.items()}
        med_cpu = {name: statistics.median(c for _, c in ts) for name, ts in times.items()}
        floor = checksum_floor(passes, med_cpu["loader_inline"])
    finally:
        passes.close()
    rate = {name: n * decoded / s / 1e9 for name, s in med.items()}
    rate_cpu = {name: n * decoded / s / 1e9 for name, s in med_cpu.items()}
    ratios = {
        clock: {
            "one_worker_share_of_raw_decode": median_ratio(times["raw_decode"], times["loader_worker"], k),
            "loader_time_over_plain_zarr_read": median_ratio(times["loader_inline"], times["zarr_plain"], k),
            "one_worker_time_over_plain_zarr_read": median_ratio(times["loader_worker"], times["zarr_plain"], k),
            "checksum_share_of_loader_read": median_ratio(times["checksums"], times["loader_inline"], k),
        }
        for clock, k in (("wall", 0), ("cpu", 1))
    }
    for name in med:
        print(
            f"{name:14} {med[name]:.3f} s per pass, {med_cpu[name]:.3f} s CPU ({rate[name]:.3f} GB/s decoded, "
            f"{rate_cpu[name]:.3f} per CPU second; median of {repeats})"
        )
    for clock, r in ratios.items():
        print(
            f"{clock}: one worker / raw decode: {r['one_worker_share_of_raw_decode']['median']:.3f} of the speed "
            f"(range {r['one_worker_share_of_raw_decode']['min']}-{r['one_worker_share_of_raw_decode']['max']}; goal "
            f">= 0.8); loader / plain zarr read: {r['loader_time_over_plain_zarr_read']['median']:.3f} of the time in "
            f"this process, {r['one_worker_time_over_plain_zarr_read']['median']:.3f} with one worker (goal <= 1.15); "
            f"checksums: {r['checksum_share_of_loader_read']['median']:.3f} of a read (goal <= 0.05)"
        )
    print(
        f"CRC-32C on one core: {floor['crc32c_in_cache_GB_per_s']} GB/s in cache, "
        f"{floor['crc32c_from_memory_GB_per_s']} on the stored chunks (memory reads {floor['memory_read_GB_per_s']} "
        f"GB/s); the checks' floor, every byte checked from cache: {floor['floor_share_of_loader_read']:.3f} of a read"
    )
    workers = sorted({0, 1, 2, *[w for w in (4, 8) if w <= args.max_workers]})
    rates = by_workers(str(path), workers)
    for r in rates:
        print(f"loader, {r['workers']} workers: {r['samples_per_s']:.2f} samples/s, {r['decoded_GB_per_s']:.3f} GB/s")
    windows = {"random": random_windows(2)}
    if ism is not None and k_ism:
        windows["Beluga fast ISM (random weights)"] = (ism["X"][:k_ism], ism["y"][:k_ism])
    table = layouts(windows, repeats=3)
    for row in table:
        print(
            f"{row['windows'][:12]:12} {row['layout']:22} {row['codec']:32} {row['stored_MB']:7.2f} MB stored "
            f"{row['decode_GB_per_s_one_core']:6.2f} GB/s"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    demo = ConvMultiplexer(200, 16, 64, 64, 8, (2, 4, 8, 4, 2))
    steps = {"demo (L=200, F=16, batch 16)": step_time(demo, 16, 200, 16, device, 5)}
    if beluga_step:
        batch = 8 if device.type == "cuda" else 1
        steps[f"BelugaMultiplexer (L=2000, F=2002, batch {batch})"] = step_time(
            BelugaMultiplexer(), batch, L, F, device, repeats=3 if device.type == "cuda" else 1
        )
    for name, seconds in steps.items():
        print(f"training step on {device.type}: {name}: {seconds:.3f} s")
    per_worker = next(r["samples_per_s"] for r in rates if r["workers"] == 1)
    feed = {}
    for name, seconds in steps.items():
        if name.startswith("BelugaMultiplexer"):
            need = int(name.rsplit("batch ", 1)[1].rstrip(")")) / seconds
            feed = {
                "device": device.type,
                "model_samples_per_s": round(need, 3),
                "loader_samples_per_s_per_worker": per_worker,
                "workers_needed": math.ceil(need / per_worker),
            }
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(
            torch=torch.__version__,
            zarr=zarr.__version__,
            numcodecs=numcodecs.__version__,
            cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        ),  # fmt: skip
        "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        "store": {
            "samples": n,
            "targets": args.targets,
            "format_version": open_store(str(path)).meta.format_version,
            "codec": "blosc-zstd bitshuffle level 3",
            "bytes_per_sample": info["bytes_per_sample"],
            "decoded_bytes_per_sample": decoded,
            "format3_decoded_bytes_per_sample": format3,
            "decoded_share_of_format3": round(decoded / format3, 4),
        },
        "passes": {
            "repeats": repeats,
            "batch": BATCH,
            "median_wall_seconds": {k: round(v, 4) for k, v in med.items()},
            "median_cpu_seconds": {k: round(v, 4) for k, v in med_cpu.items()},
            "decoded_GB_per_s": {k: round(v, 3) for k, v in rate.items()},
            "decoded_GB_per_cpu_s": {k: round(v, 3) for k, v in rate_cpu.items()},
            "wall_cpu_seconds": {k: [[round(w, 4), round(c, 4)] for w, c in v] for k, v in times.items()},
        },
        "must_hold": {**ratios, "decoded_bytes_share_of_format3": round(decoded / format3, 4)},
        "checksum_floor": floor,
        "loader": rates,
        "layouts": table,
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
