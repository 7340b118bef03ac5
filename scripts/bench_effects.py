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

- ``export`` (:func:`export_rows_per_s`, :func:`parquet_vs_tsv_size`) -- ``catalogue export`` of the
  demo's whole-genome catalogue to ``.tsv.gz`` (with its tabix index) and to ``.parquet``, each in a
  fresh process: rows/s and the process's peak RSS, next to the peak RSS of a process that only
  imports the same modules (the baseline) and of one that exports a single contig (memory must not
  grow with the genome); bytes of ``S.tsv.gz`` (+ index) against ``S.parquet``, per row, and the
  catalogue's own stored bytes. The catalogue (``catalogue --all``: L = 200, F = 16, stride 50) is
  built once into ``--workdir`` (default ``work/bench-effects``) and reused: with ``--checkpoint`` and
  ``--genome`` when given, else the demo's trained multiplexer when ``DIR/run/best.pt`` exists, else a
  multiplexer of the demo's architecture with random weights on the demo's genome (rows/s and RSS do
  not depend on the weights; sizes do, a little: random effects compress differently). Or
  ``--catalogue CAT.zarr``: export that complete catalogue.

- ``background`` (:func:`background_rate`) -- ``multiplexer background`` (256 windows of the demo's
  test split, the defaults) in a subprocess: wall and CPU seconds and peak RSS; then ``score-vcf`` on the
  ``values`` section's VCF (shared windows) with and without ``--background``: variants/s (start-up
  subtracted, wall and CPU) and the cost of the percentiles as the ratio of the rates.

``values`` and ``background`` need the demo's trained multiplexer (``--demo DIR``, default ``work/demo``: ``multiplexer
demo`` writes it, and the script runs it first when ``DIR/run/best.pt`` is missing), or
``--checkpoint`` and ``--genome``.

    python scripts/bench_effects.py --json bench/effects.json
    python scripts/bench_effects.py --n-variants 2000 --checkpoint best.pt --genome demo.fa   # a quick run
    python scripts/bench_effects.py --sections export --workdir work/bench-effects           # export only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench_vcf import _genome, _run, ensure_demo, write_snvs
from benchlib import machine, package_version, write_result

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
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


def background_rate(checkpoint: Path, genome: Path, n_variants: int, work: Path) -> dict[str, Any]:
    """``background`` build time, then ``score-vcf`` variants/s with and without ``--background``."""
    background = work / "bg.zarr"
    build = _run([str(BIN / "multiplexer"), "-q", "background", "--checkpoint", str(checkpoint), "--genome",
                  str(genome), "--out", str(background), "--device", "cpu"])  # fmt: skip
    if build["rc"]:
        raise SystemExit(f"background failed: {build.get('error')}")
    seqs = _genome(genome)
    vcf, one = work / "bg.vcf", work / "bg_one.vcf"
    n = write_snvs(seqs, n_variants, vcf, seed=25)
    write_snvs(seqs, 1, one, seed=25)
    startup = _score(checkpoint, genome, one, work / "bg_one.tsv.gz", [])
    runs: dict[str, Any] = {}
    for label, extra in (("plain", []), ("background", ["--background", str(background)])):
        run = _score(checkpoint, genome, vcf, work / f"bg_{label}.tsv.gz", extra)
        if run["rc"]:
            raise SystemExit(f"score-vcf {label} failed: {run.get('error')}")
        wall = max(run["wall_s"] - startup["wall_s"], 1e-9)
        cpu = max(run["cpu_s"] - startup["cpu_s"], 1e-9)
        runs[label] = {**run, "variants_per_s": round(n / wall, 1), "variants_per_cpu_s": round(n / cpu, 1)}
    return {
        "build": build,
        "n_variants": n,
        "startup_s": startup["wall_s"],
        "startup_cpu_s": startup["cpu_s"],
        "score_vcf": runs,
        "cost": round(runs["plain"]["variants_per_s"] / runs["background"]["variants_per_s"], 3),
        "cost_cpu": round(runs["plain"]["variants_per_cpu_s"] / runs["background"]["variants_per_cpu_s"], 3),
    }


EXPORT_CHILD = """
import json, sys, time
from pipeline.apply.variants.export import export_catalogue
from pipeline.apply.variants.options import ExportOptions
cat, out = sys.argv[1], sys.argv[2]
s = export_catalogue(cat, out, ExportOptions(top_k=3, overwrite=True), progress=False)
print(json.dumps({"rows": s.n_rows, "units": s.n_units, "seconds": s.seconds, "line": s.line()}))
"""

IMPORT_CHILD = """
import pyarrow.parquet, pysam
import pipeline.apply.variants.export
from pipeline.store.catalogue import open_catalogue
import sys
open_catalogue(sys.argv[1])
print("{}")
"""


def _child(code: str, *args: str) -> tuple[dict[str, Any], float, float]:
    """Run ``code`` in a fresh Python; its JSON line, wall seconds and peak RSS (MB, from ``wait4``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read() if proc.stdout is not None else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed ({proc.returncode}): {code.strip().splitlines()[1]}")
    return json.loads(out.strip().splitlines()[-1]), wall, usage.ru_maxrss / 1024


def _one_contig_catalogue(cat: Path, work: Path) -> Path:
    """A copy of the catalogue's metadata restricted to its first contig (the same data files, linked)."""
    import zarr

    from pipeline.store.meta_digest import write_meta_digest

    small = work / "one_contig.zarr"
    shutil.rmtree(small, ignore_errors=True)  # made again: it links to this catalogue's first contig
    small.mkdir()
    for item in cat.iterdir():
        if item.name == "c0":
            (small / "c0").symlink_to(item.resolve())
        elif item.is_file():
            (small / item.name).write_bytes(item.read_bytes())
    group = zarr.open_group(str(small), mode="r+")
    attrs = dict(group.attrs)
    attrs["contigs"] = attrs["contigs"][:1]
    attrs.pop("meta_digest", None)
    group.attrs.clear()
    group.attrs.update(write_meta_digest(attrs))
    return small


def export_rows_per_s(cat: Path, work: Path) -> dict[str, Any]:
    """``catalogue export`` to .tsv.gz and .parquet in fresh processes: rows/s and peak RSS."""
    _, _, baseline = _child(IMPORT_CHILD, str(cat))
    out: dict[str, Any] = {"baseline_rss_mb": round(baseline, 1)}
    for suffix in (".tsv.gz", ".parquet"):
        result, wall, rss = _child(EXPORT_CHILD, str(cat), str(work / f"S{suffix}"))
        out[suffix] = {
            "rows": result["rows"],
            "units": result["units"],
            "seconds": round(result["seconds"], 2),
            "wall_s_with_startup": round(wall, 2),
            "rows_per_s": round(result["rows"] / result["seconds"]),
            "peak_rss_mb": round(rss, 1),
            "line": result["line"],
        }
        one, _, one_rss = _child(EXPORT_CHILD, str(_one_contig_catalogue(cat, work)), str(work / f"one{suffix}"))
        out[suffix]["one_contig"] = {"rows": one["rows"], "peak_rss_mb": round(one_rss, 1)}
    return out


def parquet_vs_tsv_size(cat: Path, work: Path) -> dict[str, Any]:
    """Bytes of the two exports (written by :func:`export_rows_per_s`) and of the catalogue."""
    from pipeline.store.catalogue import catalogue_info

    tsv, parquet = work / "S.tsv.gz", work / "S.parquet"
    index = next(p for p in (work / "S.tsv.gz.tbi", work / "S.tsv.gz.csi") if p.is_file())
    rows = sum(1 for line in _bgzf_lines(tsv) if not line.startswith(b"#"))
    info = catalogue_info(cat)
    return {
        "rows": rows,
        "tsv_gz_bytes": tsv.stat().st_size,
        "tsv_index_bytes": index.stat().st_size,
        "parquet_bytes": parquet.stat().st_size,
        "tsv_gz_bytes_per_row": round(tsv.stat().st_size / rows, 2),
        "parquet_bytes_per_row": round(parquet.stat().st_size / rows, 2),
        "parquet_over_tsv_gz": round(parquet.stat().st_size / tsv.stat().st_size, 3),
        "catalogue_bytes": info["bytes"],
        "catalogue_targets": info["targets"],
    }


def _bgzf_lines(path: Path):
    import pysam

    with pysam.BGZFile(str(path), "rb", None) as handle:
        yield from handle


def export_catalogue_source(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    """The catalogue to export: ``--catalogue``, or the demo's whole genome (built once, then reused)."""
    if args.catalogue is not None:
        return args.catalogue, {"catalogue": str(args.catalogue)}
    from pipeline.apply.variants.catalogue import build_catalogue
    from pipeline.apply.variants.options import CatalogueOptions
    from pipeline.store.catalogue import catalogue_info

    demo_ckpt = args.demo / "run" / "best.pt"
    if args.checkpoint is not None:
        ckpt, genome, weights, out = args.checkpoint, str(args.genome), f"{args.checkpoint}", work / "given_all.zarr"
    elif demo_ckpt.is_file():
        ckpt, genome, weights, out = demo_ckpt, None, "the demo's trained multiplexer", work / "demo_all.zarr"
    else:
        ckpt, genome = _random_demo_checkpoint(work / "demo_random.pt", work), None
        weights, out = "random (the demo's architecture)", work / "demo_all_random.zarr"
    t0 = time.perf_counter()
    options = CatalogueOptions(all_contigs=True, genome=genome, device="cpu", batch_size=32)
    s = build_catalogue(str(ckpt), str(out), options, progress=False)
    return out, {
        "catalogue": "the demo's whole genome (catalogue --all)" if args.checkpoint is None else f"{out.name}",
        "weights": weights,
        "positions": catalogue_info(out)["positions"],  # s counts this run's only (a reused one: 0)
        "build_line": s.line(),
        "build_s": round(time.perf_counter() - t0, 1),
    }


def export_section(args: argparse.Namespace) -> dict[str, Any]:
    """The ``export`` section: the catalogue, then :func:`export_rows_per_s` and :func:`parquet_vs_tsv_size`."""
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cat, source = export_catalogue_source(args, work)
    return {"source": source, "export": export_rows_per_s(cat, work), "sizes": parquet_vs_tsv_size(cat, work)}


def _random_demo_checkpoint(path: Path, work: Path) -> Path:
    """A checkpoint of the demo's multiplexer architecture (the demo spec's) with random weights, on the
    demo's synthetic genome."""
    import torch

    from pipeline.demo import DEMO_SPEC, synth_genome
    from pipeline.models import build_multiplexer, save_checkpoint

    genome = work / "demo.fa"
    if not genome.is_file():
        synth_genome(genome)
    if path.is_file():
        return path
    train, L, F = DEMO_SPEC["train"], int(DEMO_SPEC["seq_len"]), int(DEMO_SPEC["base"]["kwargs"]["n_targets"])
    torch.manual_seed(0)
    kwargs = {**train["kwargs"], "seq_len": L, "n_targets": F}
    model = build_multiplexer(train["multiplexer"], **kwargs)
    save_checkpoint(path, {
        "model": model.state_dict(), "architecture": {"name": train["multiplexer"], "kwargs": kwargs},
        "seq_len": L, "n_targets": F, "alphabet": "AGCT", "target_names": [f"demo_{i:02d}" for i in range(F)],
        "target_kind": "logfold", "spec": {"seed": 0},
        "base": {"model": "demo", "init": "random (benchmark: speed and size only)"}, "genome": str(genome),
    })  # fmt: skip
    return path


SECTIONS = {"values": score_vcf_values_rate, "background": background_rate, "export": export_section}
"""Every section of this benchmark by name (``--sections``)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("work/demo"), help="Folder of `multiplexer demo`.")
    parser.add_argument("--checkpoint", type=Path, help="A checkpoint instead of the demo's (with --genome).")
    parser.add_argument("--genome", type=Path, help="The genome of --checkpoint.")
    parser.add_argument("--n-variants", type=int, default=5000, help="SNVs of the VCF scored (default 5,000).")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"Comma-separated: {', '.join(SECTIONS)}.")
    parser.add_argument("--json", type=Path, help="Write the result here.")
    parser.add_argument("--workdir", type=Path, default=Path("work/bench-effects"), help="export: catalogue, exports.")
    parser.add_argument("--catalogue", type=Path, help="export: this complete catalogue instead of the demo's.")
    args = parser.parse_args()
    if (args.checkpoint is None) != (args.genome is None):
        parser.error("give --checkpoint and --genome together")
    sections = args.sections.split(",")
    needs_demo = {"values", "background"} & set(sections)
    checkpoint = args.checkpoint or (ensure_demo(args.demo) if needs_demo else None)
    genome = args.genome or args.demo / "genome.fa"
    result: dict[str, Any] = {
        "benchmark": "effects",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(
            torch=package_version("torch"), pyarrow=package_version("pyarrow"), pysam=package_version("pysam")
        ),
        "load_average_before": list(os.getloadavg()),
        "checkpoint": None if checkpoint is None else str(checkpoint),
    }
    with tempfile.TemporaryDirectory(prefix="bench-effects-") as tmp:
        for name in sections:
            if name == "values" and checkpoint is not None:
                result["values"] = score_vcf_values_rate(checkpoint, genome, args.n_variants, Path(tmp))
            elif name == "background" and checkpoint is not None:
                result["background"] = background_rate(checkpoint, genome, args.n_variants, Path(tmp))
            elif name == "export":
                result["export"] = export_section(args)
    result["load_average_after"] = list(os.getloadavg())
    write_result(result, args.json)


if __name__ == "__main__":
    main()
