"""Check that ``score-vcf`` (and ``catalogue``, ``lookup``) write the same outputs as an old revision.

Runs the same command lines with the code of an old git revision (``--old``, default ``a150e29``: main
just before the variants wing, with the metadata digests and catalogue format 2 of issues 27 and 29;
checked out with ``git worktree add`` and put first on ``PYTHONPATH``) and with this checkout's code, on
the same inputs, and compares what they wrote:

- plain files (``.tsv``, ``.vcf.gz``, its ``.tbi``/``.csi``): every byte;
- ``.tsv.gz`` (Python's gzip, whose header records the time of writing): every byte but the header's
  ``MTIME`` field (bytes 4-7), which differs between any two runs of the same code;
- Zarr stores (``.zarr`` outputs, catalogues): every array's shape, dtype and contents, and the
  attributes; and whether every file of the two trees is byte-identical.

The inputs are made once, with the old revision's code: the synthetic genome (``genome synth
--divisor 20000``), a tiny spec distilled and trained for 4 steps (L = 80, 4 targets), a sorted VCF of
about 3,000 records (SNVs, multi-allelic records, indels, REF mismatches, ``N`` positions, records
too close to an end, a contig spelt ``X`` for ``chrX``), its bgzipped and indexed copy, and a
catalogue of two regions. The command lines cover every output suffix, ``--centered``, ``--exact``,
``--strand both``, ``--diff``, ``--targets``, ``--group-span``, ``--ref-mismatch skip``,
``--no-harmonise``, ``--region``, ``--catalogue``, a run sharded ``--shard 0/2`` + ``1/2`` (the
second merges), ``catalogue`` and ``lookup``.

    python scripts/check_score_vcf_identical.py                 # exit 1 when an output differs
    python scripts/check_score_vcf_identical.py --old main --keep /tmp/identical
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import yaml
from bench_vcf import _genome as read_fasta

ROOT = Path(__file__).resolve().parents[1]

SPEC: dict[str, Any] = {
    "name": "identical",
    "seq_len": 80,
    "seed": 0,
    "max_n": 10,
    "target": "logfold",
    "base": {"model": "demo", "kwargs": {"n_targets": 4, "channels": 12, "hidden": 8}},
    "splits": {
        "train": {"chroms": ["chr1", "chr2", "chr3"], "samples": 10},
        "valid": {"chroms": ["chr8"], "samples": 6},
        "test": {"chroms": ["chr9"], "samples": 5},
    },
    "storage": {"dtype": "float16", "codec": "blosc-zstd", "level": 3, "chunk_samples": 1, "unit_samples": 4},
    "ism_batch_size": 512,
    "train": {
        "multiplexer": "conv",
        "kwargs": {"width1": 8, "width2": 8, "kernel_size": 4, "dilations": [2, 2, 2, 2, 2]},
        "steps": 4,
        "batch_size": 4,
        "lr": 0.01,
        "valid_every": 2,
        "seed": 0,
    },
}

CASES: list[tuple[str, list[str]]] = [
    ("shared.tsv", []),
    ("shared.tsv.gz", []),
    ("shared.vcf.gz", []),
    ("shared.zarr", []),
    ("centered.tsv", ["--centered"]),
    ("centered_both.vcf.gz", ["--centered", "--strand", "both"]),
    ("exact.tsv", ["--exact"]),
    ("exact_both.zarr", ["--exact", "--strand", "both"]),
    ("both.tsv.gz", ["--strand", "both"]),
    ("reverse.tsv", ["--strand", "reverse"]),
    ("diff.tsv", ["--diff"]),
    ("targets.zarr", ["--targets", "demo_01,^demo_0[23]"]),
    ("span_L.tsv", ["--group-span", "80"]),
    ("skip_mismatch.tsv", ["--ref-mismatch", "skip"]),
    ("no_harmonise.tsv", ["--no-harmonise"]),
    ("region.vcf.gz", ["--region", "chr7:1-3000", "--vcf-indexed"]),
    ("from_catalogue.tsv", ["--catalogue", "{catalogue}"]),
    ("from_catalogue_centered.zarr", ["--catalogue", "{catalogue}", "--centered"]),
]
"""Output name and extra options of each ``score-vcf`` run (``--vcf-indexed``: read the bgzipped copy)."""

SHARDED = [("sharded.tsv", []), ("sharded_exact.vcf.gz", ["--exact"]), ("sharded_centered.zarr", ["--centered"])]
"""Outputs written by two shards, ``--shard 0/2`` then ``--shard 1/2`` (which merges)."""


INTENDED = {
    "lookup.vcf.gz.tbi": "new: lookup publishes the index of a .vcf.gz output, as score-vcf does (docs/decisions.md)",
}
"""Outputs that one revision writes and the other does not, on purpose (not counted as differences)."""


def _env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1", "MULTIPLEXER_DEBUG": "1"}


def _cli(code: Path, *args: Any) -> str:
    """Run ``multiplexer -q ARGS`` with the package at ``code``; its stdout (stderr shown on failure)."""
    cmd = [sys.executable, "-m", "pipeline.cli", "-q", *map(str, args)]
    done = subprocess.run(cmd, env=_env(code), capture_output=True, text=True, cwd=code)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    return done.stdout


def _checkout(rev: str, where: Path) -> Path:
    """A worktree of ``rev`` at ``where`` (reused when it is already there at that revision)."""
    want = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    if (where / ".git").exists():
        have = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True).stdout
        if have == want:
            return where
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, check=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(where), want.strip()], cwd=ROOT, check=True)
    return where


def _vcf_rows(genome: dict[str, str], n: int, seed: int = 0) -> list[str]:
    """About ``n`` sorted records of every kind ``score-vcf`` treats differently."""
    rng = random.Random(seed)
    rows = []
    chroms = [c for c in genome if c in ("chr1", "chr2", "chr7", "chr8", "chrX")]
    for chrom in chroms:
        seq = genome[chrom]
        positions = sorted(rng.sample(range(1, len(seq) + 1), n // len(chroms)))
        positions[:3] = [1, 20, 41]  # too close to the start for a centred window
        positions = sorted(set(positions))
        for k, pos in enumerate(positions):
            ref = seq[pos - 1].upper()
            others = [b for b in "ACGT" if b != ref] or ["A"]
            alt = rng.choice(others)
            kind = k % 23
            name = "X" if chrom == "chrX" else chrom  # the other spelling: --harmonise
            if kind == 5:
                alt = ",".join(rng.sample(others, 2))  # multi-allelic
            elif kind == 7 and pos + 3 <= len(seq):
                ref, alt = seq[pos - 1 : pos + 2].upper(), ref  # deletion
            elif kind == 11:
                alt = ref + "GAT"  # insertion
            elif kind == 13:
                ref = others[0]  # REF mismatch (sometimes swapped with ALT)
            elif kind == 17:
                alt = "*"  # a spanning deletion: no plain ALT
            rows.append((chrom, pos, f"{name}\t{pos}\tv{chrom}_{pos}\t{ref}\t{alt}\t.\tPASS\t."))
    order = {c: k for k, c in enumerate(genome)}
    rows.sort(key=lambda r: (order[r[0]], r[1]))
    return [r[2] for r in rows]


def make_inputs(old: Path, work: Path) -> dict[str, Path]:
    """Genome, checkpoint, VCFs and a catalogue, all made with the old revision's code (kept in ``work``
    and reused by a later run with ``--keep`` against the same revision)."""
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=old, capture_output=True, text=True).stdout
    made = {
        "genome": work / "genome.fa",
        "checkpoint": work / "run" / "best.pt",
        "vcf": work / "variants.vcf",
        "indexed": work / "variants.vcf.gz",
        "catalogue": work / "catalogue.zarr",
    }
    if (work / "done").is_file() and (work / "done").read_text() == revision:
        return made
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    genome = work / "genome.fa"
    _cli(old, "genome", "synth", genome, "--divisor", 20000)
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "genome": str(genome)}, sort_keys=False))
    store = work / "store.zarr"
    _cli(old, "distill", spec, "--store", store, "--device", "cpu")
    run = work / "run"
    _cli(old, "train", spec, "--store", store, "--run-dir", run, "--device", "cpu")
    seqs = read_fasta(genome)
    contigs = "".join(f"##contig=<ID={c},length={len(s)}>\n" for c, s in seqs.items()) + "##contig=<ID=X>\n"
    head = "##fileformat=VCFv4.2\n" + contigs + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    vcf = work / "variants.vcf"
    vcf.write_text(head + "".join(line + "\n" for line in _vcf_rows(seqs, 3000)))
    indexed = work / "variants.vcf.gz"
    pysam.tabix_compress(str(vcf), str(indexed), force=True)
    pysam.tabix_index(str(indexed), preset="vcf", force=True)
    catalogue = work / "catalogue.zarr"
    ckpt = run / "best.pt"
    _cli(old, "catalogue", "--checkpoint", ckpt, "--out", catalogue, "--region", "chr1:1-1500",
         "--region", "chr7:200-2600", "--device", "cpu")  # fmt: skip
    (work / "done").write_text(revision)  # complete, made by this revision
    return made


RUNNER = """
import json, sys
from pipeline.cli import cli
for args in json.load(open(sys.argv[1])):
    try:
        cli.main(["-q", *args], prog_name="multiplexer", standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            sys.exit(f"failed: multiplexer {' '.join(args)}")
"""
"""Runs a list of command lines in one process (one start-up of torch per revision, not one per command)."""


def command_lines(inputs: dict[str, Path], out: Path) -> tuple[list[list[str]], list[str]]:
    """Every command line, writing into ``out``, and the outputs they write."""
    base = ["--checkpoint", inputs["checkpoint"], "--genome", inputs["genome"], "--device", "cpu"]
    runs: list[list[Any]] = []
    names = []
    for name, extra in CASES:
        vcf = inputs["indexed"] if "--vcf-indexed" in extra else inputs["vcf"]
        args = [a.format(catalogue=inputs["catalogue"]) for a in extra if a != "--vcf-indexed"]
        runs.append(["score-vcf", *base, "--vcf", vcf, "--out", out / name, *args])
        names.append(name)
    for name, extra in SHARDED:
        for shard in ("0/2", "1/2"):
            runs.append(["score-vcf", *base, "--vcf", inputs["vcf"], "--out", out / name, "--shard", shard, *extra])
        names.append(name)
    runs.append(["catalogue", "--checkpoint", inputs["checkpoint"], "--out", out / "catalogue.zarr",
                 "--region", "chr2:100-900", "--chroms", "chr8", "--stride", "16", "--device", "cpu"])  # fmt: skip
    names.append("catalogue.zarr")
    for name, extra in [
        ("lookup.tsv", ["--vcf", inputs["vcf"]]),
        ("lookup.vcf.gz", ["--vcf", inputs["vcf"]]),
        ("lookup_region.zarr", ["--region", "chr7:190-260"]),
        ("lookup_variants.tsv.gz", ["--variant", "chr1:100:A>G", "--variant", "X:300:C>T", "--variant", "chr7:5:A>C"]),
    ]:
        runs.append(["lookup", inputs["catalogue"], "--out", out / name, *extra])
        names.append(name)
    return [[str(a) for a in run] for run in runs], names


def run_cases(revisions: dict[str, Path], inputs: dict[str, Path], work: Path) -> dict[str, list[str]]:
    """Every command line with the package of each revision (one process each, side by side), writing into
    ``work/<revision>``; the outputs' names of each (with the indexes written beside them)."""
    started, names = {}, {}
    for label, code in revisions.items():
        out = work / label
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        runs, names[label] = command_lines(inputs, out)
        listing = work / f"{label}-commands.json"
        listing.write_text(json.dumps(runs, indent=1))
        started[label] = subprocess.Popen([sys.executable, "-c", RUNNER, str(listing)], env=_env(code), cwd=code,
                                          text=True, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)  # fmt: skip
    for label, proc in started.items():
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{label}: {err.strip().splitlines()[-1:]}\n{err[-3000:]}")
        out = work / label
        names[label] += sorted(p.name for p in out.iterdir() if p.name.endswith((".tbi", ".csi")))
    return names


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _zarr_same(a: Path, b: Path) -> tuple[bool, str]:
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    if dict(ga.attrs) != dict(gb.attrs):
        return False, "root attributes differ"
    arrays_a = dict(ga.arrays()) | {f"{k}/{n}": x for k, g in ga.groups() for n, x in g.arrays()}
    arrays_b = dict(gb.arrays()) | {f"{k}/{n}": x for k, g in gb.groups() for n, x in g.arrays()}
    if sorted(arrays_a) != sorted(arrays_b):
        return False, f"arrays differ: {sorted(arrays_a)} vs {sorted(arrays_b)}"
    for key, x in arrays_a.items():
        y = arrays_b[key]
        if x.shape != y.shape or x.dtype != y.dtype or dict(x.attrs) != dict(y.attrs):
            return False, f"{key}: shape, dtype or attributes differ"
        if not np.array_equal(x[...], y[...], equal_nan=x.dtype.kind == "f"):
            return False, f"{key}: contents differ"
    raw = "every file byte-identical" if _files(a) == _files(b) else "contents equal, stored bytes differ"
    return True, f"{len(arrays_a)} arrays and attributes equal; {raw}"


def compare(a: Path, b: Path) -> tuple[bool, str]:
    """Whether two outputs are the same, and how that was judged."""
    if a.is_dir() or b.is_dir():
        if not (a.is_dir() and b.is_dir()):
            return False, "one is a folder, the other not"
        return _zarr_same(a, b)
    x, y = a.read_bytes(), b.read_bytes()
    if a.name.endswith(".tsv.gz"):
        same = len(x) == len(y) and x[:4] == y[:4] and x[8:] == y[8:]
        return same, f"{len(x)} bytes identical but the gzip MTIME" if same else "bytes differ"
    return x == y, f"{len(x)} bytes identical" if x == y else f"bytes differ ({len(x)} vs {len(y)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="a150e29", help="the revision to compare with (default: %(default)s)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="identical-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        old = _checkout(args.old, work / "old-code")
        inputs = make_inputs(old, work / "inputs")
        written = run_cases({"old": old, "new": ROOT}, inputs, work)
        results = []
        for name in sorted(set(written["old"]) | set(written["new"])):
            a, b = work / "old" / name, work / "new" / name
            if a.exists() and b.exists():
                same, how = compare(a, b)
            elif name in INTENDED:
                same, how = None, INTENDED[name]
            else:
                same, how = False, "written by one revision only"
            results.append({"output": name, "identical": same, "how": how})
            print(f"{'same' if same else 'intended' if same is None else 'DIFFERENT':9s}  {name:34s}  {how}")
        compared = [r for r in results if r["identical"] is not None]
        n_same = sum(bool(r["identical"]) for r in compared)
        print(f"{n_same} of {len(compared)} outputs identical to {args.old}")
        if args.json:
            args.json.write_text(json.dumps({"old": args.old, "results": results}, indent=1) + "\n")
        return 0 if n_same == len(compared) else 1
    finally:
        if args.keep is None:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "old-code")], cwd=ROOT)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
