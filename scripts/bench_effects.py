"""Benchmark: what the effects people rank, query and load cost (issue 25).

Sections (each a function that returns its figures; ``--sections`` picks them):

- ``values`` (:func:`score_vcf_values_rate`) -- ``score-vcf`` variants/s on a small demo VCF (SNVs
  drawn uniformly over the demo genome, as ``bench_vcf.py`` draws them), with and without
  ``--values ref,alt`` (which runs the base model once per window the variants were scored in),
  shared windows and ``--exact``. Each run is ``multiplexer -q score-vcf ... --out OUT.tsv.gz
  --device cpu --batch-size 32`` in a subprocess; variants/s = variants / (wall - start-up), the
  start-up being the wall time of the same command on a one-record VCF, and the same from the child's
  CPU time (user + system, less the start-up's: the steadier figure on a shared machine); the cost of
  ``--values`` as the ratio of the two rates; peak RSS of the child.

Needs the demo's trained multiplexer (``--demo DIR``, default ``work/demo``: ``multiplexer demo``
writes it, and the script runs it first when ``DIR/run/best.pt`` is missing), or ``--checkpoint`` and
``--genome``.

    python scripts/bench_effects.py --json bench/effects.json
    python scripts/bench_effects.py --n-variants 2000 --checkpoint best.pt --genome demo.fa   # a quick run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench_vcf import _genome, _run, ensure_demo, write_snvs
from benchlib import machine, package_version, write_result

BIN = Path(sys.executable).parent
VALUES_MODES = {"shared": [], "exact": ["--exact"]}
"""The scoring modes :func:`score_vcf_values_rate` times, with their flags."""


def _score(checkpoint: Path, genome: Path, vcf: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    args = [str(BIN / "multiplexer"), "-q", "score-vcf", "--checkpoint", str(checkpoint), "--vcf", str(vcf)]
    args += ["--genome", str(genome), "--out", str(out), "--device", "cpu", "--batch-size", "32", "--overwrite"]
    return _run([*args, *extra])


def score_vcf_values_rate(checkpoint: Path, genome: Path, n_variants: int, work: Path) -> dict[str, Any]:
    """``score-vcf`` variants/s with and without ``--values ref,alt``, per mode (see the module docstring)."""
    seqs = _genome(genome)
    vcf, one = work / "values.vcf", work / "one.vcf"
    n = write_snvs(seqs, n_variants, vcf, seed=25)
    write_snvs(seqs, 1, one, seed=25)
    startup = _score(checkpoint, genome, one, work / "one.tsv.gz", [])
    result: dict[str, Any] = {"n_variants": n, "startup_s": startup["wall_s"], "startup_cpu_s": startup["cpu_s"]}
    result["modes"] = {}
    for mode, flags in VALUES_MODES.items():
        runs = {}
        for label, extra in (("plain", []), ("values_ref_alt", ["--values", "ref,alt"])):
            run = _score(checkpoint, genome, vcf, work / f"{mode}_{label}.tsv.gz", [*flags, *extra])
            if run["rc"]:
                raise SystemExit(f"score-vcf {mode} {label} failed: {run.get('error')}")
            wall = max(run["wall_s"] - startup["wall_s"], 1e-9)
            cpu = max(run["cpu_s"] - startup["cpu_s"], 1e-9)
            runs[label] = {**run, "variants_per_s": round(n / wall, 1), "variants_per_cpu_s": round(n / cpu, 1)}
        plain, valued = runs["plain"], runs["values_ref_alt"]
        runs["values_cost"] = round(plain["variants_per_s"] / valued["variants_per_s"], 3)
        runs["values_cost_cpu"] = round(plain["variants_per_cpu_s"] / valued["variants_per_cpu_s"], 3)
        result["modes"][mode] = runs
    return result


SECTIONS = {"values": score_vcf_values_rate}
"""Every section of this benchmark by name (``--sections``)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("work/demo"), help="Folder of `multiplexer demo`.")
    parser.add_argument("--checkpoint", type=Path, help="A checkpoint instead of the demo's (with --genome).")
    parser.add_argument("--genome", type=Path, help="The genome of --checkpoint.")
    parser.add_argument("--n-variants", type=int, default=5000, help="SNVs of the VCF scored (default 5,000).")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"Comma-separated: {', '.join(SECTIONS)}.")
    parser.add_argument("--json", type=Path, help="Write the result here.")
    args = parser.parse_args()
    if (args.checkpoint is None) != (args.genome is None):
        parser.error("give --checkpoint and --genome together")
    checkpoint = args.checkpoint or ensure_demo(args.demo)
    genome = args.genome or args.demo / "genome.fa"
    result: dict[str, Any] = {
        "benchmark": "effects",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(torch=package_version("torch")),
        "load_average_before": list(os.getloadavg()),
        "checkpoint": str(checkpoint),
    }
    with tempfile.TemporaryDirectory(prefix="bench-effects-") as tmp:
        for name in args.sections.split(","):
            if name == "values":
                result["values"] = score_vcf_values_rate(checkpoint, genome, args.n_variants, Path(tmp))
    result["load_average_after"] = list(os.getloadavg())
    write_result(result, args.json)


if __name__ == "__main__":
    main()
