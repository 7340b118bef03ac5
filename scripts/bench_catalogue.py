"""Benchmark: the SNV catalogue -- positions/s, bytes per position, lookup latency, the stride, and what
hg38 x Beluga would cost.

Needs the demo's trained multiplexer (``--demo DIR``, default ``work/demo``; the demo is run there
first when ``DIR/run/best.pt`` is missing). On this machine's CPU:

1. **Demo, whole genome** -- ``build_catalogue(--all)`` with the demo multiplexer (L = 200, F = 16,
   default stride): positions/s, windows, and stored bytes per catalogued position.
2. **The stride** -- on the held-out chr9 (``--stride-region``, default its first 10 kb), catalogues
   at strides L, L/2, L/4 and L/8; each one's tile scores of every SNV (3 per position) against the
   variant-centred multiplexer scores (``score-vcf --centered``) of the same SNVs: Pearson over every
   (variant, target), and the windows per position (the cost).
3. **A BelugaMultiplexer-shaped model** (L = 2000, F = 2002, random weights: speed and size only) on
   ``--beluga-region`` of the demo genome (default chr21:1-4000), default stride: positions/s on the
   CPU, and bytes per position storing 1, 20 or all 2,002 targets (the effects array rewritten with
   the first 1 / 20 targets, same codec; random weights compress worse than trained ones, so these
   are upper bounds).
4. **Lookup** -- 10,000 SNVs at random positions of the demo catalogue, answered one at a time in
   random order by a fresh :class:`~pipeline.apply.variants.lookup.CatalogueReader` (so most queries read
   and decode their block from disk): p50 / p99 latency, with the checks every read makes (the
   unit's marker, the shard's existence, the block's CRC-32C and digest) and without them (blocks
   read as stored, markers read once per contig: the reads before issue 22), alternating over 3
   rounds in one process; and ``lookup --vcf`` of the same SNVs sorted: variants/s.
5. **hg38 x Beluga on one H100, an estimate**: windows = hg38 positions / stride, times the
   BelugaMultiplexer bf16 forward measured on an H100 (``bench/multiplexer_forward_cuda.txt``, batch 8),
   next to exact fast ISM of the same 3 SNVs per position at the H100's measured Beluga rate
   (``bench/ism_cuda.json``); storage from step 3's bytes per position. Compute only: reading the
   genome and writing the store are not in it.

    python scripts/bench_catalogue.py --json bench/catalogue.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from bench_vcf import _correlations, ensure_demo
from benchlib import machine, package_version, write_result

from pipeline.apply.variants.catalogue import build_catalogue
from pipeline.apply.variants.lookup import CatalogueReader, lookup
from pipeline.apply.variants.options import CatalogueOptions, LookupOptions, ScoreVcfOptions
from pipeline.apply.variants.records import VcfRecord
from pipeline.apply.variants.rows import Row
from pipeline.apply.variants.score_vcf import read_scores, score_vcf
from pipeline.core.genome import Genome
from pipeline.models import build_multiplexer, read_checkpoint, save_checkpoint
from pipeline.store.catalogue import Catalogue, CheckedReader, open_catalogue
from pipeline.store.chunks import stored_bytes

HG38_POSITIONS = 3_099_734_149
"""hg38's length including N (GRCh38 primary assembly, UCSC); an upper bound on catalogued positions."""
BENCH = Path(__file__).resolve().parents[1] / "bench"


def _stored_per_position(cat_path: Path) -> dict[str, float]:
    cat = open_catalogue(cat_path)
    n = sum(int((cat.array(k, "ref")[:] != 255).sum()) for k in range(len(cat.meta.contigs)))
    total = {name: 0 for name in ("ref", "effects", "max_abs", "top_target")}
    for k in range(len(cat.meta.contigs)):
        for name in total:
            total[name] += stored_bytes(cat.array(k, name))
    return {name: round(b / max(n, 1), 3) for name, b in total.items()} | {"positions": n}


def demo_whole_genome(ckpt: Path, work: Path) -> dict[str, Any]:
    out = work / "demo_all.zarr"
    t0 = time.perf_counter()
    s = build_catalogue(
        str(ckpt),
        str(out),
        CatalogueOptions(all_contigs=True, device="cpu", batch_size=32, overwrite=True),
        progress=False,
    )
    wall = time.perf_counter() - t0
    return {
        "positions": s.n_positions,
        "n_positions_at_N": s.n_at_n,
        "windows": s.n_windows,
        "seconds": round(wall, 2),
        "positions_per_s": round(s.n_positions / wall, 1),
        "stride": open_catalogue(out).meta.stride,
        "bytes_per_position": _stored_per_position(out),
        "line": s.line(),
    }


def _region_vcf(genome: Genome, region: str, path: Path) -> int:
    chrom, span = region.rsplit(":", 1)
    a, b = (int(x) for x in span.split("-"))
    seq = genome.fetch(chrom, a - 1, b).upper()
    n = 0
    with open(path, "w") as handle:
        handle.write("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, ref in enumerate(seq):
            if ref not in "ACGT":
                continue
            for alt in "AGCT":
                if alt != ref:
                    handle.write(f"{chrom}\t{a + i}\t.\t{ref}\t{alt}\t.\t.\t.\n")
                    n += 1
    return n


def _by_variant(path: Path) -> dict[str, np.ndarray]:
    return {
        f"{r['chrom']}:{r['pos']}{r['alt']}": np.array(list(r["effects"].values()))
        for r in read_scores(path)
        if r["status"] == "scored"
    }


def stride_choice(ckpt: Path, genome: Genome, work: Path, region: str, seq_len: int) -> dict[str, Any]:
    vcf = work / "stride.vcf"
    n = _region_vcf(genome, region, vcf)
    centred = work / "centred.tsv"
    t0 = time.perf_counter()
    score_vcf(
        str(ckpt),
        str(vcf),
        str(centred),
        ScoreVcfOptions(mode="centered", device="cpu", batch_size=32, overwrite=True),
        progress=False,
    )
    centred_s = time.perf_counter() - t0
    reference = _by_variant(centred)
    out: dict[str, Any] = {"region": region, "variants": n, "centred_seconds": round(centred_s, 2), "strides": {}}
    for stride in (seq_len, seq_len // 2, seq_len // 4, seq_len // 8):
        cat = work / f"stride{stride}.zarr"
        t0 = time.perf_counter()
        s = build_catalogue(
            str(ckpt),
            str(cat),
            CatalogueOptions(regions=[region], stride=stride, device="cpu", batch_size=32, overwrite=True),
            progress=False,
        )
        seconds = time.perf_counter() - t0
        looked = work / f"stride{stride}.tsv"
        lookup(str(cat), str(looked), LookupOptions(vcf=str(vcf), overwrite=True), progress=False)
        out["strides"][str(stride)] = {
            "windows": s.n_windows,
            "windows_per_position": round(s.n_windows / max(s.n_positions, 1), 4),
            "seconds": round(seconds, 2),
            "vs_centred": _correlations(_by_variant(looked), reference),
        }
        print("stride", stride, json.dumps(out["strides"][str(stride)]), flush=True)
    return out


def _beluga_checkpoint(path: Path, genome_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_multiplexer("beluga_multiplexer")
    payload = {
        "model": model.state_dict(),
        "architecture": {"name": "beluga_multiplexer", "kwargs": {}},
        "seq_len": 2000,
        "n_targets": 2002,
        "alphabet": "AGCT",
        "target_names": [f"t{i:04d}" for i in range(2002)],
        "target_kind": "logfold",
        "spec": {"seed": 0},
        "base": {"model": "beluga", "init": "random (benchmark: speed and size only)"},
        "genome": str(genome_path),
    }
    save_checkpoint(path, payload)
    return path


def beluga_shaped(genome_path: Path, work: Path, region: str) -> dict[str, Any]:
    ckpt = _beluga_checkpoint(work / "beluga_mux.pt", genome_path)
    out = work / "beluga.zarr"
    t0 = time.perf_counter()
    s = build_catalogue(
        str(ckpt),
        str(out),
        CatalogueOptions(regions=[region], device="cpu", batch_size=2, overwrite=True),
        progress=False,
    )
    wall = time.perf_counter() - t0
    cat = open_catalogue(out)
    effects = cat.array(0, "effects")
    sizes = {}
    rows = np.flatnonzero(cat.array(0, "ref")[:] != 255)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    data = effects[lo:hi]
    for n_targets in (1, 20, 2002):
        z = zarr.open_group(str(work / f"size{n_targets}.zarr"), mode="w")
        a = z.create_array("e", shape=(hi - lo, 3, n_targets), chunks=(cat.meta.unit_positions, 3, n_targets),
                           dtype="float16", fill_value=np.nan)  # fmt: skip
        a[:] = data[:, :, :n_targets]
        summaries = (
            stored_bytes(cat.array(0, "max_abs"))
            + stored_bytes(cat.array(0, "top_target"))
            + stored_bytes(cat.array(0, "ref"))
        )
        sizes[str(n_targets)] = round((stored_bytes(a) + summaries) / (hi - lo), 2)
    read_checkpoint(ckpt)  # the checkpoint is valid
    return {
        "region": region,
        "positions": s.n_positions,
        "windows": s.n_windows,
        "stride": cat.meta.stride,
        "seconds": round(wall, 2),
        "positions_per_s": round(s.n_positions / wall, 2),
        "seconds_per_window": round(wall / max(s.n_windows, 1), 3),
        "bytes_per_position_by_targets": sizes,
    }


class UncheckedReader(CheckedReader):
    """The reads of ``lookup`` before issue 22, for the cost of the checks: every contig's markers read
    once, blocks used as stored (no existence, decode-error or digest check)."""

    def __init__(self, cat: Catalogue) -> None:
        super().__init__(cat)
        self.done = {k: cat.complete(k) for k in range(len(cat.meta.contigs))}

    def complete(self, contig: int, unit: int) -> bool:
        return bool(self.done[contig][unit])

    def block(self, contig: int, block: int, name: str) -> np.ndarray:
        return self.cat.read_block(contig, block, name)


def _latencies(cat_path: Path, queries: list[VcfRecord], checked: bool) -> np.ndarray:
    """Milliseconds per query, answered in order by a fresh reader (catalogue opened anew)."""
    reader = CatalogueReader(open_catalogue(cat_path))
    if not checked:
        reader.checked = UncheckedReader(reader.cat)
    times = []
    for record in queries:
        t0 = time.perf_counter()
        reader.answer(Row(record))
        times.append(time.perf_counter() - t0)
    return np.array(times) * 1e3


def lookup_latency(cat_path: Path, genome: Genome, work: Path, n: int = 10_000) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    cat = open_catalogue(cat_path)
    names = [c.name for c in cat.meta.contigs]
    lengths = np.array([c.length for c in cat.meta.contigs])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    queries = []
    while len(queries) < n:
        d = int(rng.integers(0, offsets[-1]))
        k = int(np.searchsorted(offsets, d, side="right") - 1)
        pos = d - int(offsets[k]) + 1
        ref = genome.fetch(names[k], pos - 1, pos).upper()
        if ref in "ACGT":
            alt = [b for b in "ACGT" if b != ref][int(rng.integers(0, 3))]
            queries.append(VcfRecord(len(queries) + 1, names[k], pos, ".", ref, alt))
    runs: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for _ in range(3):  # alternate, so both see the same machine load and page cache
        for checked in (False, True):
            runs[checked].append(_latencies(cat_path, queries, checked))
    ms, raw = np.concatenate(runs[True]), np.concatenate(runs[False])
    vcf = work / "lookup.vcf"
    ordered = sorted(queries, key=lambda r: (names.index(r.chrom), r.pos))
    with open(vcf, "w") as handle:
        handle.write("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        handle.writelines(f"{r.chrom}\t{r.pos}\t.\t{r.ref}\t{r.alt}\t.\t.\t.\n" for r in ordered)
    t0 = time.perf_counter()
    lookup(str(cat_path), str(work / "lookup.tsv"), LookupOptions(vcf=str(vcf), overwrite=True), progress=False)
    wall = time.perf_counter() - t0
    return {
        "queries": n,
        "unit_positions": cat.meta.unit_positions,
        "block_positions": cat.meta.block_positions,
        "random_order_ms_p50": round(float(np.percentile(ms, 50)), 3),
        "random_order_ms_p99": round(float(np.percentile(ms, 99)), 3),
        "unchecked_random_order_ms_p50": round(float(np.percentile(raw, 50)), 3),
        "unchecked_random_order_ms_p99": round(float(np.percentile(raw, 99)), 3),
        "check_cost_p50_percent": round(100 * (np.percentile(ms, 50) / np.percentile(raw, 50) - 1), 1),
        "check_cost_p99_percent": round(100 * (np.percentile(ms, 99) / np.percentile(raw, 99) - 1), 1),
        "sorted_vcf_lookup_variants_per_s": round(n / wall, 1),
    }


def hg38_estimate(beluga: dict[str, Any]) -> dict[str, Any] | None:
    forward = BENCH / "multiplexer_forward_cuda.txt"
    ism = BENCH / "ism_cuda.json"
    if not forward.exists() or not ism.exists():
        return None
    m = re.search(r"B=8 bf16: [0-9.]+ ms/batch, ([0-9.]+) ms/window", forward.read_text())
    ism_rate = next(r["fast_variants_per_s"] for r in json.loads(ism.read_text())["results"] if r["model"] == "beluga")
    device = json.loads(ism.read_text())["machine"]["cuda"]
    stride = beluga["stride"]
    windows = HG38_POSITIONS / stride
    ms = float(m.group(1)) if m else float("nan")
    catalogue_h = windows * ms / 1e3 / 3600
    ism_h = 3 * HG38_POSITIONS / ism_rate / 3600
    return {
        "label": "estimate (arithmetic from measured per-window and per-variant rates; not run)",
        "device": device,
        "positions": HG38_POSITIONS,
        "stride": stride,
        "windows": round(windows),
        "multiplexer_ms_per_window_bf16_b8": ms,
        "catalogue_hours": round(catalogue_h, 2),
        "exact_fast_ism_variants_per_s": ism_rate,
        "exact_fast_ism_hours": round(ism_h, 1),
        "speedup": round(ism_h / catalogue_h, 1),
        "storage_TB_by_targets": {
            k: round(v * HG38_POSITIONS / 1e12, 2) for k, v in beluga["bytes_per_position_by_targets"].items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--demo", type=Path, default=Path("work/demo"))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--stride-region", default="chr9:1-10000")
    parser.add_argument("--beluga-region", default="chr21:1-4000")
    parser.add_argument("--note", help="a remark printed with the figures (e.g. what else loaded the machine)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ckpt = ensure_demo(args.demo)
    genome = Genome(args.demo / "genome.fa")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-catalogue-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(torch=package_version("torch"), zarr=package_version("zarr")),
        "load_average_1min": {"start": round(os.getloadavg()[0], 2)},
    }
    if args.note:
        result["note"] = args.note
    result["demo"] = demo_whole_genome(ckpt, work)
    print("demo", json.dumps(result["demo"]), flush=True)
    result["stride"] = stride_choice(ckpt, genome, work, args.stride_region, 200)
    result["lookup"] = lookup_latency(work / "demo_all.zarr", genome, work)
    print("lookup", json.dumps(result["lookup"]), flush=True)
    result["beluga_shaped"] = beluga_shaped(args.demo / "genome.fa", work, args.beluga_region)
    print("beluga", json.dumps(result["beluga_shaped"]), flush=True)
    result["hg38_h100_estimate"] = hg38_estimate(result["beluga_shaped"])
    result["load_average_1min"]["end"] = round(os.getloadavg()[0], 2)
    write_result(result, args.json)


if __name__ == "__main__":
    main()
