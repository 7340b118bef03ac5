"""Benchmark: what the store's checksums cost (``storage.checksums`` on, the default, against off).

Two Beluga-sized stores (L = 2000, F = 2002, float16 targets, the default codec blosc-zstd level 3
bitshuffle, one sample per chunk, ``unit_samples: 4``), identical except for ``storage.checksums``:
on, every chunk ends with zarr's ``crc32c`` codec and every unit's completion marker holds a CRC-32
of each sample's decoded bytes per array (``pipeline.store.digests``); off, neither (the fsync of a
unit's chunk files before its marker stays in both). Targets are random (normal, sd 0.3, like
``bench_loader.py``) but exactly 0 at every reference base and at the ``N`` columns (1 % of
positions), so both stores verify. For each store:

1. **write** -- seconds per sample of ``Store.write_unit`` (the store made by ``create_or_open_store``
   from a ``spec_from_dict`` spec, as ``bench_loader.py`` does). The two stores are written unit by
   unit in turn, from the same data (made outside the timed calls), the order alternating per unit,
   so drift in the machine's speed falls on both alike; the median unit is reported. zarr's default
   threading, as ``distill``.
2. **read** -- ``StoreDataset.__getitems__`` on contiguous batches of 4 (one unit each), in this
   process with one decode thread (``_single_threaded_decoding``, what every loader worker does):
   samples/s and decoded GB/s of float16 targets. After one warm-up pass per store, each pass reads
   every batch from both stores in turn (the order alternating per batch); the median batch is
   reported (the passes' totals are in the JSON). Page cache warm.
3. **verify** -- seconds per sample of ``verify_store(open_store(path), workers=1)`` (this process
   only, zarr's default threading); repeats alternate between the stores; the median is reported.
4. **stored bytes** per sample -- of ``targets`` (``store info``'s figure) and of every file of the
   store (the markers' digests and the other arrays included).

For reference, the speed of the two hashes alone on one core (GB/s over a 32 MB buffer): the
chunks' CRC-32C (``google_crc32c``, what zarr's codec calls) and the samples' CRC-32 (``zlib``).

Each time is taken on the wall clock and as this process's CPU time (all its threads; other work
on the machine barely changes it, while it slows the wall clock). The cost of each measure is
``with / without - 1`` of its time or bytes per sample, in percent; for the times, the median of
that ratio over the pairs timed back to back (units written, batches read, verify runs), with its
quartiles over the pairs to show the spread. That keeps it steady when other work shares the
machine, though not exact: on a busy 2-core machine the write and verify costs move by several
percent between runs. Everything lives in a temporary folder (or ``--workdir``, whose stores are
replaced) and is removed afterwards unless ``--workdir`` is given.

    python scripts/bench_checksums.py --json bench/checksums.json
    python scripts/bench_checksums.py --quick          # F = 200 and fewer samples and repeats
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from benchlib import machine, package_version

from pipeline.core.spec import spec_from_dict
from pipeline.store import Store, create_or_open_store, open_store, store_info, verify_store
from pipeline.store.digests import DIGESTED
from pipeline.train.data import StoreDataset, _single_threaded_decoding

L, F, F_QUICK = 2000, 2002, 200
UNIT = 4
"""Samples per write unit (and per read batch)."""
N_FRACTION = 0.01
"""Share of positions that are ``N`` (all-zero reference columns)."""
SETTINGS = (True, False)
"""``storage.checksums`` of the two stores: on (the default) first."""
LABEL = {True: "on", False: "off"}


def make_store(path: Path, n: int, n_targets: int, checksums: bool) -> Store:
    spec = spec_from_dict(
        {
            "name": "checksums_bench",
            "genome": "unused.fa",
            "seq_len": L,
            "base": {"model": "beluga", "weights": "random"},
            "splits": {"train": {"chroms": ["chr1"], "samples": n}},
            "storage": {"unit_samples": UNIT, "checksums": checksums},
        },
        base_dir=path.parent,
    )
    return create_or_open_store(
        str(path),
        spec,
        base_identity={"model": "beluga", "weights": None, "weights_sha256": None, "init": "random (seed 0)"},
        n_targets=n_targets,
        target_names=[f"t{i}" for i in range(n_targets)],
    )


def unit_data(rng: np.random.Generator, k: int, n_targets: int) -> dict[str, Any]:
    """One unit's arrays: one-hot references with ``N`` columns, targets 0 at reference bases and ``N``."""
    X = np.zeros((k, 4, L), dtype=np.uint8)
    X[np.arange(k)[:, None], rng.integers(0, 4, (k, L)), np.arange(L)[None, :]] = 1
    X[rng.random((k, L))[:, None, :].repeat(4, axis=1) < N_FRACTION] = 0
    y = (rng.standard_normal((k, n_targets, 4, L), dtype=np.float32) * 0.3).astype(np.float16)
    y[np.broadcast_to(X[:, None].astype(bool), y.shape)] = 0
    y[np.broadcast_to((X.sum(axis=1) == 0)[:, None, None, :], y.shape)] = 0
    return {
        "reference": X,
        "ref_pred": np.full((k, n_targets), 0.5, np.float32),
        "targets": y,
        "chrom": ["chr1"] * k,
        "center": np.full(k, 1000),
    }


Times = dict[bool, list[tuple[float, float]]]
"""Per store (checksums on / off): ``(wall, cpu)`` seconds of each timed call, in order."""


def timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """``((wall, cpu), fn())``: wall-clock seconds, and CPU seconds of this process (all its threads),
    which other work on the machine barely changes."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def write(stores: dict[bool, Store], n_targets: int) -> Times:
    """Write every unit of both stores from the same data; the seconds of each ``write_unit`` call."""
    rng = np.random.default_rng(0)
    seconds: Times = {c: [] for c in SETTINGS}
    for u, a, b in stores[True].iter_units("train"):
        data = unit_data(rng, b - a, n_targets)
        for c in SETTINGS if u % 2 == 0 else SETTINGS[::-1]:
            t, _ = timed(lambda c=c, u=u, data=data: stores[c].write_unit("train", u, **data))
            seconds[c].append(t)
    return seconds


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


def read_batch(ds: StoreDataset, a: int) -> tuple[float, float]:
    """Seconds to read the contiguous batch of ``UNIT`` samples from ``a`` on, as training does."""
    t, (X, y) = timed(lambda: ds.__getitems__(list(range(a, min(a + UNIT, len(ds))))))
    assert y.shape[0] == X.shape[0]
    return t


def read(paths: dict[bool, str], repeats: int) -> Times:
    """Seconds of each batch read, pass after pass, per store; each batch is read from both stores in
    turn (the order alternating), so load from elsewhere on the machine falls on both alike."""
    seconds: Times = {c: [] for c in SETTINGS}
    with one_decode_thread():
        datasets = {c: StoreDataset(paths[c], "train") for c in SETTINGS}
        assert (datasets[True]._digests is not None) and (datasets[False]._digests is None)
        for c in SETTINGS:  # warm-up pass: arrays opened, page cache filled
            for a in range(0, len(datasets[c]), UNIT):
                read_batch(datasets[c], a)
        for _ in range(repeats):
            for k, a in enumerate(range(0, len(datasets[True]), UNIT)):
                for c in SETTINGS if k % 2 == 0 else SETTINGS[::-1]:
                    seconds[c].append(read_batch(datasets[c], a))
    return seconds


def verify(paths: dict[bool, str], repeats: int) -> Times:
    seconds: Times = {c: [] for c in SETTINGS}
    for r in range(repeats):
        for c in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            t, problems = timed(lambda c=c: verify_store(open_store(paths[c]), workers=1))
            seconds[c].append(t)
            assert not problems, problems
    return seconds


def describe(path: str, n: int) -> dict[str, Any]:
    """Codecs, marker width and stored bytes of a finished store."""
    store = open_store(path)
    targets = store.array("train", "targets")
    files = [f for f in Path(path).rglob("*") if f.is_file()]
    return {
        "targets_codecs": [type(c).__name__ for c in (*targets.compressors,)],
        "marker_columns": int(store.array("train", "complete").shape[1]),
        "digests": store.digests("train") is not None,
        "files": len(files),
        "targets_bytes_per_sample": store_info(store)["splits"]["train"]["bytes_per_sample"],
        "store_bytes_per_sample": sum(f.stat().st_size for f in files) / n,
    }


def hash_speed(repeats: int = 10) -> dict[str, float]:
    """GB/s of each hash alone over a 32 MB buffer, on one core."""
    import google_crc32c

    from pipeline.store.chunkio import crc32c

    buffer = np.random.default_rng(0).bytes(32_000_000)
    out = {}
    hashes = (("crc32c_chunk", crc32c), ("google_crc32c", google_crc32c.value), ("zlib_crc32_sample", zlib.crc32))
    for name, fn in hashes:
        fn(buffer)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(buffer)
        out[f"{name}_GB_per_s"] = round(repeats * len(buffer) / (time.perf_counter() - start) / 1e9, 2)
    return out


def cost(on: float, off: float) -> float:
    """``on / off - 1`` in percent."""
    return (on / off - 1) * 100


def machine_info() -> dict[str, Any]:
    import google_crc32c

    return machine(
        torch=torch.__version__,
        zarr=zarr.__version__,
        numcodecs=numcodecs.__version__,
        numpy=np.__version__,
        google_crc32c=f"{package_version('google-crc32c')} ({google_crc32c.implementation} implementation)",
        crc32c=package_version("crc32c"),
    )


def print_table(result: dict[str, Any]) -> None:
    rows = [
        ("write s/sample", "write_s_per_sample", "{:.4f}"),
        ("  CPU s/sample", "write_cpu_s_per_sample", "{:.4f}"),
        ("read s/sample", "read_s_per_sample", "{:.4f}"),
        ("  CPU s/sample", "read_cpu_s_per_sample", "{:.4f}"),
        ("  samples/s", "read_samples_per_s", "{:.2f}"),
        ("  decoded GB/s", "read_decoded_GB_per_s", "{:.3f}"),
        ("verify s/sample", "verify_s_per_sample", "{:.4f}"),
        ("  CPU s/sample", "verify_cpu_s_per_sample", "{:.4f}"),
        ("targets bytes/sample", "targets_bytes_per_sample", "{:,.0f}"),
        ("store bytes/sample", "store_bytes_per_sample", "{:,.0f}"),
    ]
    on, off, pct = result["checksums_on"], result["checksums_off"], result["cost_pct"]
    spread = result["cost_pct_quartiles"]
    print(f"{'':<22} {'checksums on':>14} {'checksums off':>14} {'cost':>11}  {'pairs: quartiles of cost':<24}")
    for label, key, fmt in rows:
        c = pct.get(key)
        shown = "" if c is None else f"{c:+.5f} %" if "bytes" in key else f"{c:+.1f} %"
        q = f"{spread[key][0]:+.1f} .. {spread[key][2]:+.1f} %" if key in spread else ""
        print(f"{label:<22} {fmt.format(on[key]):>14} {fmt.format(off[key]):>14} {shown:>11}  {q}")


def summarise(
    checksums: bool, n: int, n_targets: int, times: dict[str, list[tuple[float, float]]], store: dict
) -> dict:
    out: dict[str, Any] = {"checksums": checksums}
    batches = n // UNIT
    for clock, i in (("", 0), ("cpu_", 1)):
        series = {name: [t[i] for t in ts] for name, ts in times.items()}
        passes = [sum(series["read"][k : k + batches]) for k in range(0, len(series["read"]), batches)]
        out[f"write_{clock}s_per_sample"] = statistics.median(series["write"]) / UNIT
        out[f"read_{clock}s_per_sample"] = statistics.median(series["read"]) / UNIT
        out[f"verify_{clock}s_per_sample"] = statistics.median(series["verify"]) / n
        out[f"write_{clock}s_per_unit"] = [round(x, 4) for x in series["write"]]
        out[f"read_pass_{clock}s"] = [round(x, 4) for x in passes]
        out[f"verify_{clock}s"] = [round(x, 4) for x in series["verify"]]
    out["read_samples_per_s"] = 1 / out["read_s_per_sample"]
    out["read_decoded_GB_per_s"] = n_targets * 4 * L * 2 / out["read_s_per_sample"] / 1e9
    return out | store


def paired_costs(on: list[tuple[float, float]], off: list[tuple[float, float]], clock: int) -> list[float]:
    """``on / off - 1`` in percent of each pair (the same unit, batch or repeat, timed back to back), of
    wall (``clock`` 0) or CPU (1) seconds."""
    return [cost(a[clock], b[clock]) for a, b in zip(on, off, strict=True)]


def quartiles(values: list[float]) -> list[float]:
    """First quartile, median and third quartile."""
    if len(values) < 2:
        return [values[0]] * 3
    return [round(q, 2) for q in statistics.quantiles(values, n=4, method="inclusive")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"F = {F_QUICK}, fewer samples and repeats")
    parser.add_argument("--samples", type=int, default=None, help="samples per store (default 48; --quick 32)")
    parser.add_argument("--repeats", type=int, default=None, help="read passes (default 4; --quick 2)")
    parser.add_argument("--verify-repeats", type=int, default=None, help="verify runs per store (default 8; --quick 3)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--workdir", help="work here (default: a temporary folder, removed afterwards)")
    args = parser.parse_args()
    n_targets = F_QUICK if args.quick else F
    n = args.samples or (32 if args.quick else 48)
    repeats = args.repeats or (2 if args.quick else 4)
    verify_repeats = args.verify_repeats or (3 if args.quick else 8)
    if n % UNIT:
        raise SystemExit(f"--samples must be a multiple of {UNIT}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-checksums-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = {c: str(work / f"checksums-{LABEL[c]}.zarr") for c in SETTINGS}
    load_before = os.getloadavg()
    try:
        for p in paths.values():
            shutil.rmtree(p, ignore_errors=True)
        stores = {c: make_store(Path(paths[c]), n, n_targets, c) for c in SETTINGS}
        t = time.perf_counter()
        writes = write(stores, n_targets)
        print(f"wrote 2 stores of {n} samples (L={L}, F={n_targets}) in {time.perf_counter() - t:.1f}s")
        reads = read(paths, repeats)
        verifies = verify(paths, verify_repeats)
        pairs = {"write": writes, "read": reads, "verify": verifies}
        results = {
            c: summarise(
                c,
                n,
                n_targets,
                {"write": writes[c], "read": reads[c], "verify": verifies[c]},
                describe(paths[c], n),
            )
            for c in SETTINGS
        }
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    on, off = results[True], results[False]
    assert on["digests"] and not off["digests"], "the stores do not differ in their checksums"
    spread = {
        f"{k}_{clock}s_per_sample": quartiles(paired_costs(v[True], v[False], i))
        for clock, i in (("", 0), ("cpu_", 1))
        for k, v in pairs.items()
    }
    pct = {k: q[1] for k, q in spread.items()}
    pct |= {k: round(cost(on[k], off[k]), 5) for k in ("targets_bytes_per_sample", "store_bytes_per_sample")}
    hashes = hash_speed()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        "settings": {
            "seq_len": L,
            "n_targets": n_targets,
            "samples": n,
            "unit_samples": UNIT,
            "chunk_samples": 1,
            "dtype": "float16",
            "codec": "blosc-zstd level 3 bitshuffle",
            "n_fraction": N_FRACTION,
            "read_batch": UNIT,
            "read_passes": repeats,
            "verify_runs": verify_repeats,
            "pairs": {k: len(v[True]) for k, v in pairs.items()},
            "digested": list(DIGESTED),
            "quick": args.quick,
        },
        "checksums_on": on,
        "checksums_off": off,
        "cost_pct": pct,
        "cost_pct_quartiles": spread,
        "hash_speed": hashes,
        "extra_bytes_per_sample": {
            "targets": on["targets_bytes_per_sample"] - off["targets_bytes_per_sample"],
            "store": on["store_bytes_per_sample"] - off["store_bytes_per_sample"],
        },
    }
    print_table(result)
    print(
        f"hashes alone, one core: CRC-32C {hashes['crc32c_chunk_GB_per_s']} GB/s (chunks), "
        f"zlib CRC-32 {hashes['zlib_crc32_sample_GB_per_s']} GB/s (samples)"
    )
    print(
        f"extra bytes per sample with checksums: {result['extra_bytes_per_sample']['targets']:.1f} (targets), "
        f"{result['extra_bytes_per_sample']['store']:.1f} (whole store)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
