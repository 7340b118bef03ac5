"""Benchmark: ``score-vcf`` on the demo genome -- variants/s and peak memory of every mode, what sharing
windows costs, and memory that stays flat from 10,000 to 1,000,000 records.

Needs the demo's trained multiplexer (``--demo DIR``, default ``work/demo``: ``multiplexer demo``
writes it; the script runs the demo there first when ``DIR/run/best.pt`` is missing). Then:

1. **Modes** -- a VCF of ``--n-variants`` (default 100,000) SNVs at uniformly drawn positions of the
   demo genome (sorted; REF the genome's base, ALT another base at random; positions at ``N`` left
   out), scored by ``multiplexer -q score-vcf ... --out OUT.tsv.gz --device cpu`` in a subprocess,
   once per mode: shared windows (default ``--group-span L//4``), shared windows with ``--group-span L``
   (the most sharing), ``--centered``, ``--strand both`` (shared windows, both
   strands) and ``--exact`` (the base model on the centred reference and alternative windows: the
   classical scoring). Reported: wall time of the command (start-up included; start-up alone is the
   wall time of ``score-vcf`` on a one-record VCF), variants/s = variants / (wall - start-up), and the
   child's peak RSS (``ru_maxrss`` from ``os.wait4``).
2. **What sharing costs** -- on the held-out chromosome of the demo (chr9, the test split: never seen in
   training), the Pearson correlation between the scores of each pair of modes over every
   (variant, target) and the mean over targets of the per-target correlation: shared vs centred
   (the cost of sharing windows), and each multiplexer mode vs exact (how well the multiplexer
   reproduces the classical score).
3. **Flat memory** -- VCFs of 10,000 and 1,000,000 SNV records (the same draw, larger), scored with
   shared windows to ``.tsv.gz``; peak RSS of each run and their ratio.
4. **Skipped records** (issue 27) -- a VCF of one SNV then ``--skipped`` (default 1,000,000) records
   that cannot be scored, of four kinds in turn: an indel, a chromosome the genome lacks, a symbolic
   ALT (``<DEL>``) and a REF that is not A/C/G/T. Records/s = records / (wall - start-up), and the
   same from the child's CPU time (user + system, less the start-up's): on a shared machine the
   CPU figure is the steadier one. ``--compare-with DIR`` scores the same VCF with the code of
   another checkout (``PYTHONPATH=DIR``, this environment's packages), in the same run, for the
   ratio. ``--skipped-only`` measures only this (``--checkpoint``/``--genome`` instead of the demo).

    python scripts/bench_vcf.py --json bench/vcf.json
    python scripts/bench_vcf.py --n-variants 20000 --sizes 10000,100000   # a quick run
    python scripts/bench_vcf.py --skipped-only --checkpoint best.pt --genome genome.fa \
        --compare-with /tmp/old-checkout --json bench/vcf_skipped.json      # skipped records, old vs new
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import machine, package_version, write_result

BIN = Path(sys.executable).parent
MODES = {
    "shared": [],
    "shared_span_L": ["--group-span", "{L}"],
    "centered": ["--centered"],
    "strand_both": ["--strand", "both"],
    "exact": ["--exact"],
}
HELD_OUT = "chr9"


def _run(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command; its wall time, CPU time, exit code, peak RSS (kB) and last output line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    result = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rc": proc.returncode, "peak_rss_kb": usage.ru_maxrss}
    if proc.returncode:
        result["error"] = (err.strip().splitlines() or ["?"])[-1]
    result["line"] = (out.strip().splitlines() or [""])[-1]
    return result


def _genome(fasta: Path) -> dict[str, str]:
    seqs: dict[str, list[str]] = {}
    name = ""
    for line in fasta.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            seqs[name] = []
        else:
            seqs[name].append(line.strip())
    return {k: "".join(v) for k, v in seqs.items()}


def write_snvs(genome: dict[str, str], n: int, path: Path, seed: int = 0) -> int:
    """A sorted VCF of ``n`` SNVs at positions drawn uniformly over the genome (``N`` positions left out)."""
    rng = np.random.default_rng(seed)
    names = list(genome)
    lengths = np.array([len(genome[c]) for c in names])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    draws = rng.integers(0, offsets[-1], size=int(n * 1.25) + 100)
    chroms = np.searchsorted(offsets, draws, side="right") - 1
    refs = [genome[names[k]][d - offsets[k]].upper() for k, d in zip(chroms.tolist(), draws.tolist())]
    keep = np.flatnonzero([r in "ACGT" for r in refs])[:n]
    keep = keep[np.argsort(draws[keep], kind="stable")]
    alts = rng.integers(0, 3, size=len(keep))
    with open(path, "w") as handle:
        handle.write("##fileformat=VCFv4.2\n")
        for c, length in zip(names, lengths):
            handle.write(f"##contig=<ID={c},length={length}>\n")
        handle.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, (k, a) in enumerate(zip(keep.tolist(), alts.tolist())):
            chrom, pos, ref = names[chroms[k]], int(draws[k] - offsets[chroms[k]] + 1), refs[k]
            alt = [b for b in "ACGT" if b != ref][a]
            handle.write(f"{chrom}\t{pos}\tv{i}\t{ref}\t{alt}\t.\t.\t.\n")
    return len(keep)


def _env(code: Path | None) -> dict[str, str] | None:
    return None if code is None else {**os.environ, "PYTHONPATH": str(code)}


def imported_from(code: Path | None) -> str:
    """The ``pipeline`` package a child started as :func:`score` starts it imports (its folder)."""
    args = [sys.executable, "-P", "-c", "import pipeline; print(pipeline.__file__)"]
    found = subprocess.run(args, env=_env(code), capture_output=True, text=True, check=True).stdout.strip()
    return str(Path(found).parent)


def score(checkpoint: Path, vcf: Path, out: Path, extra: list[str], code: Path | None = None) -> dict[str, Any]:
    """``score-vcf`` in a subprocess; with ``code``, the ``pipeline`` package of that checkout.

    ``python -P``: ``-m`` alone puts the working directory first on ``sys.path``, so a run from one
    checkout imported that checkout's code whatever ``PYTHONPATH`` said."""
    command = [sys.executable, "-P", "-m", "pipeline.cli"]
    args = [*command, "-q", "score-vcf", "--checkpoint", str(checkpoint), "--vcf", str(vcf)]
    env = _env(code)
    return _run([*args, "--out", str(out), "--device", "cpu", "--batch-size", "32", "--overwrite", *extra], env)


def write_skipped(genome: dict[str, str], n: int, path: Path) -> None:
    """One SNV, then ``n`` records no mode scores: an indel, a chromosome the genome lacks, a symbolic
    ALT and a REF that is not A/C/G/T, in turn (sorted within each chromosome)."""
    chrom = max(genome, key=lambda c: len(genome[c]))
    seq = genome[chrom]
    length = len(seq)
    with open(path, "w") as handle:
        handle.write("##fileformat=VCFv4.2\n")
        handle.write(f"##contig=<ID={chrom},length={length}>\n##contig=<ID=chrUn_bench,length={10 * n + 10}>\n")
        handle.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        first = next(p for p in range(length // 2, length) if seq[p].upper() in "ACGT")
        ref = seq[first].upper()
        handle.write(f"{chrom}\t{first + 1}\tsnv\t{ref}\t{'C' if ref != 'C' else 'A'}\t.\t.\t.\n")
        kinds = ["{c}\t{p}\ti{k}\tA\tAC", "{c}\t{p}\ts{k}\tA\t<DEL>", "{c}\t{p}\tn{k}\tR\tA"]
        lines = []
        for k in range(n):
            if k % 4 == 3:
                continue
            pos = first + 2 + (k // 4) % max(1, length - first - 3)
            lines.append(kinds[k % 4 if k % 4 < 3 else 0].format(c=chrom, p=pos, k=k) + "\t.\t.\t.\n")
        lines.sort(key=lambda line: int(line.split("\t")[1]))
        handle.writelines(lines)
        for k in range(3, n, 4):
            handle.write(f"chrUn_bench\t{k + 1}\tu{k}\tA\tG\t.\t.\t.\n")


def skipped_records(ckpt: Path, genome_path: Path, n: int, work: Path, compare: Path | None) -> dict[str, Any]:
    """Records/s of ``score-vcf`` over ``n`` skipped records (this code, and the code of ``compare``)."""
    vcf = work / "skipped.vcf"
    write_skipped(_genome(genome_path), n, vcf)
    one = work / "one.vcf"
    write_snvs(_genome(genome_path), 1, one, seed=1)
    result: dict[str, Any] = {"records": n + 1, "kinds": ["indel", "chromosome not in the genome",
                              "symbolic ALT", "REF not A/C/G/T"]}  # fmt: skip
    for name, code in (("this", None), ("compared", compare)):
        if name == "compared" and code is None:
            continue
        extra = ["--genome", str(genome_path)]
        start = score(ckpt, one, work / f"one-{name}.tsv.gz", extra, code)
        run = score(ckpt, vcf, work / f"skipped-{name}.tsv.gz", extra, code)
        run["startup"] = start
        if not run["rc"]:
            run["records_per_s"] = round((n + 1) / max(run["wall_s"] - start["wall_s"], 1e-9), 1)
            run["records_per_cpu_s"] = round((n + 1) / max(run["cpu_s"] - start["cpu_s"], 1e-9), 1)
        run["imports"] = imported_from(code)
        if code is not None:
            run["code"] = str(code)
        result[name] = run
        print("skipped", name, json.dumps(run), flush=True)
    this, other = result.get("this", {}), result.get("compared", {})
    if "records_per_s" in this and "records_per_s" in other:
        result["speedup_wall"] = round(this["records_per_s"] / other["records_per_s"], 2)
        result["speedup_cpu"] = round(this["records_per_cpu_s"] / other["records_per_cpu_s"], 2)
        same = gzip.open(work / "skipped-this.tsv.gz").read() == gzip.open(work / "skipped-compared.tsv.gz").read()
        result["same_output"] = same
        result["same_code"] = this.get("imports") == other.get("imports")  # then the ratio means nothing
    result["load_average"] = list(os.getloadavg())
    return result


def _scores(path: Path, chrom: str) -> dict[str, np.ndarray]:
    """``id -> scores`` of the scored rows of ``chrom`` in a score-vcf TSV."""
    out = {}
    with gzip.open(path, "rt") as handle:
        header: list[str] = []
        for line in handle:
            if line.startswith("##"):
                continue
            cols = line.rstrip("\n").split("\t")
            if not header:
                header = cols
                status, first = header.index("status"), header.index("status") + 1
                continue
            if cols[0] == chrom and cols[status] == "scored":
                out[cols[2]] = np.array(cols[first:], dtype=np.float64)
    return out


def _correlations(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, Any]:
    keys = sorted(set(a) & set(b))
    if len(keys) < 3:
        return {"n_variants": len(keys)}
    A, B = np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys])
    per_target = [np.corrcoef(A[:, f], B[:, f])[0, 1] for f in range(A.shape[1]) if A[:, f].std() and B[:, f].std()]
    return {
        "n_variants": len(keys),
        "pearson_all": round(float(np.corrcoef(A.ravel(), B.ravel())[0, 1]), 4),
        "pearson_mean_per_target": round(float(np.mean(per_target)), 4) if per_target else None,
    }


def ensure_demo(demo: Path) -> Path:
    ckpt = demo / "run" / "best.pt"
    if not ckpt.is_file():
        print(f"running the demo in {demo} (its trained multiplexer is needed)", flush=True)
        subprocess.run([str(BIN / "multiplexer"), "-q", "demo", "--workdir", str(demo)], check=True)
    return ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--demo", type=Path, default=Path("work/demo"), help="The demo's workdir.")
    parser.add_argument("--n-variants", type=int, default=100_000)
    parser.add_argument("--seq-len", type=int, default=200, help="The demo model's window (for --group-span L).")
    parser.add_argument("--sizes", default="10000,1000000", help="Record counts of the flat-memory runs.")
    parser.add_argument("--workdir", type=Path, help="Where VCFs and outputs go (default: a temporary folder).")
    parser.add_argument("--skipped", type=int, default=1_000_000, help="Records of the skipped-records run (0: none).")
    parser.add_argument("--compare-with", type=Path, help="A checkout of other code to score the skipped VCF with too.")
    parser.add_argument("--skipped-only", action="store_true", help="Measure only the skipped records.")
    parser.add_argument("--checkpoint", type=Path, help="With --skipped-only: a checkpoint instead of the demo's.")
    parser.add_argument("--genome", type=Path, help="With --skipped-only: its genome FASTA.")
    args = parser.parse_args()
    if args.skipped_only:
        work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-vcf-"))
        work.mkdir(parents=True, exist_ok=True)
        ckpt = args.checkpoint or ensure_demo(args.demo)
        genome_path = args.genome or args.demo / "genome.fa"
        result = {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(torch=package_version("torch"), pysam=package_version("pysam")),
            "checkpoint": str(ckpt),
            "skipped": skipped_records(ckpt, genome_path, args.skipped, work, args.compare_with),
        }
        write_result(result, args.json)
        return
    ckpt = ensure_demo(args.demo)
    genome_path = args.demo / "genome.fa"
    genome = _genome(genome_path)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-vcf-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(torch=package_version("torch"), pysam=package_version("pysam")),
        "genome_bp": sum(len(s) for s in genome.values()),
        "checkpoint": str(ckpt),
        "modes": {},
    }
    one = work / "one.vcf"
    write_snvs(genome, 1, one, seed=1)
    startup = score(ckpt, one, work / "one.tsv.gz", [])
    result["startup"] = startup
    vcf = work / "snvs.vcf"
    n = write_snvs(genome, args.n_variants, vcf)
    result["n_variants"] = n
    outs = {}
    for mode, extra in MODES.items():
        outs[mode] = work / f"{mode}.tsv.gz"
        run = score(ckpt, vcf, outs[mode], [x.format(L=args.seq_len) for x in extra])
        run["variants_per_s"] = round(n / max(run["wall_s"] - startup["wall_s"], 1e-9), 1)
        result["modes"][mode] = run
        print(mode, json.dumps(run), flush=True)
    held = {mode: _scores(path, HELD_OUT) for mode, path in outs.items() if path.is_file()}
    pairs = [
        ("shared", "centered"),
        ("shared_span_L", "centered"),
        ("shared", "strand_both"),
        ("centered", "exact"),
        ("shared", "exact"),
        ("shared_span_L", "exact"),
    ]
    result["held_out"] = {
        "chrom": HELD_OUT,
        **{f"{a}_vs_{b}": _correlations(held[a], held[b]) for a, b in pairs if a in held and b in held},
    }
    print("held-out", json.dumps(result["held_out"]), flush=True)
    result["memory"] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        path = work / f"flat-{size}.vcf"
        write_snvs(genome, size, path, seed=2)
        run = score(ckpt, path, work / f"flat-{size}.tsv.gz", [])
        run["records"] = size
        result["memory"][str(size)] = run
        print("memory", size, json.dumps(run), flush=True)
    rss = [r["peak_rss_kb"] for r in result["memory"].values() if not r["rc"]]
    if len(rss) >= 2:
        result["memory_ratio_largest_to_smallest"] = round(rss[-1] / rss[0], 3)
    if args.skipped:
        result["skipped"] = skipped_records(ckpt, genome_path, args.skipped, work, args.compare_with)
    write_result(result, args.json)


if __name__ == "__main__":
    main()
