"""Benchmark: what content identities cost -- the genome's full sequence digest, cold and cached, and
the metadata digest checked on every open.

1. **A 150 Mb genome** (``--mb``, default 150) is written to a temporary folder (``--workdir``; never
   in the repository): 25 contigs of random bases, 60 per line, with soft-masked and ``N`` runs, plus a
   bgzip copy (``--no-bgzip`` to skip it). For each: opening it (index built), the quick sampled
   fingerprint, the full digest **cold** (an empty cache: every base read and hashed) and **cached**
   (a second open: the digest read back from the cache), in seconds; and the cold rate in Mb/s.
2. **hg19, an estimate**: its 3,137,161,264 bases (UCSC chrom sizes, N included) at the measured cold
   rate of the plain FASTA. Labelled as an estimate: a real disk may read slower than the page cache
   the generated file sits in.
3. **The metadata digest**: writing and checking the digest of a Beluga-shaped store's root
   attributes (2,002 target names), microseconds per open.

    python scripts/bench_identity.py --json bench/identity.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import machine, write_result
from Bio import bgzf

from pipeline.core.genome import Genome
from pipeline.store.meta_digest import meta_digest_problems, write_meta_digest

HG19_BASES = 3_137_161_264
"""hg19's length including N (UCSC ``hg19.chrom.sizes``, all 93 sequences)."""
CONTIGS = 25
LINE = 60


def write_genome(path: Path, megabases: int, seed: int = 0) -> int:
    """A random genome of about ``megabases`` Mb (soft-masked and N runs included); returns its bases."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    per_contig = megabases * 1_000_000 // CONTIGS // LINE * LINE
    with open(path, "wb") as out:
        for k in range(CONTIGS):
            seq = letters[rng.integers(0, 4, per_contig)]
            seq[1_000_000:1_200_000] += 32  # soft-masked (lower case)
            seq[2_000_000:2_050_000] = ord("N")
            rows = np.concatenate([seq.reshape(-1, LINE), np.full((per_contig // LINE, 1), 10, np.uint8)], axis=1)
            out.write(f">chr{k + 1}\n".encode())
            out.write(rows.tobytes())
    return per_contig * CONTIGS


def compress(plain: Path, packed: Path) -> None:
    """A bgzip copy of ``plain`` (Biopython's writer, 64 KiB blocks)."""
    with open(plain, "rb") as source, bgzf.BgzfWriter(str(packed), "wb") as out:
        shutil.copyfileobj(source, out, 16 * 2**20)


def timed(call: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = call()
    return value, time.perf_counter() - t0


def measure_fasta(path: Path, bases: int, cache: Path) -> dict[str, Any]:
    """Open, quick fingerprint, full digest cold (empty cache) and cached, for one FASTA."""
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["MULTIPLEXER_CACHE"] = str(cache)
    genome, open_s = timed(lambda: Genome(path))
    _, quick_s = timed(genome.quick_fingerprint)
    cold, cold_s = timed(genome.sequence_digest)
    again = Genome(path)
    cached, cached_s = timed(again.sequence_digest)
    assert cached == cold
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "bases": bases,
        "open_s": round(open_s, 3),
        "quick_fingerprint_s": round(quick_s, 4),
        "digest_cold_s": round(cold_s, 3),
        "digest_cached_s": round(cached_s, 5),
        "cold_mb_per_s": round(bases / 1e6 / cold_s, 1),
    }


def meta_digest_cost(repeats: int = 200) -> dict[str, Any]:
    """Microseconds to write and to check the digest of Beluga-shaped root attributes."""
    attrs = {
        "format": "multiplexer-store",
        "target_names": [f"target_{i:04d}_DNase_some_cell_line" for i in range(2002)],
        "alphabet": "AGCT",
        "seq_len": 2000,
        "n_targets": 2002,
        "spec": {"name": "beluga", "splits": {"train": {"chroms": [f"chr{i}" for i in range(1, 23)]}}},
    }
    t0 = time.perf_counter()
    for _ in range(repeats):
        sealed = write_meta_digest(attrs)
    write_us = (time.perf_counter() - t0) / repeats * 1e6
    t0 = time.perf_counter()
    for _ in range(repeats):
        assert meta_digest_problems(sealed) == []
    check_us = (time.perf_counter() - t0) / repeats * 1e6
    return {"targets": 2002, "write_us": round(write_us, 1), "check_us": round(check_us, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--mb", type=int, default=150, help="Size of the generated genome in Mb.")
    parser.add_argument("--workdir", type=Path, help="Where the genome is written (default: a temporary folder).")
    parser.add_argument("--no-bgzip", action="store_true", help="Skip the bgzip copy.")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-identity-", dir=args.workdir))
    saved = os.environ.get("MULTIPLEXER_CACHE")
    try:
        plain = work / "genome.fa"
        bases, write_s = timed(lambda: write_genome(plain, args.mb))
        rows = [measure_fasta(plain, bases, work / "cache")]
        if not args.no_bgzip:
            packed = work / "genome.fa.gz"
            compress(plain, packed)
            rows.append(measure_fasta(packed, bases, work / "cache"))
    finally:
        if saved is None:
            os.environ.pop("MULTIPLEXER_CACHE", None)
        else:
            os.environ["MULTIPLEXER_CACHE"] = saved
        shutil.rmtree(work, ignore_errors=True)
    rate = rows[0]["cold_mb_per_s"]
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "genome_mb": args.mb,
        "generate_s": round(write_s, 1),
        "genomes": rows,
        "hg19_estimate": {
            "bases": HG19_BASES,
            "cold_s": round(HG19_BASES / 1e6 / rate, 1),
            "note": "hg19's bases at the cold rate measured on the generated plain FASTA (read from the page cache)",
        },
        "meta_digest": meta_digest_cost(),
    }
    write_result(result, args.json)


if __name__ == "__main__":
    main()
