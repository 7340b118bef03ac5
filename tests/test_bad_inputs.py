"""The bad-input matrix: every command, driven through the CLI with bad inputs.

For each case: a non-zero exit, exactly one ``error: ...`` line on stderr that names the problem, no
traceback, no warning (it would be a second stderr line in a real run), and no existing data touched:
every file under the inputs (the case's folder, the shared assets, store, run and genome) has the
same sha256 before and after, none disappeared, and no new file appeared unless the case says which.

Read-only folders: ``chmod 0o555`` where the operating system enforces it; as root (which ignores
permission bits) the creation of anything inside the folder is refused by patching ``os.mkdir``,
``os.open`` and ``open`` to raise ``PermissionError`` (EACCES), as the kernel would. A full disk is a
failing writer behind a public seam: a registered fsspec test protocol (``fulldisk://``, the local
disk with slow accepted writes and ENOSPC after some), Python's ``open`` raising ENOSPC (zarr's local
store writes through it), ``np.savez`` failing half-way, and torch's own checkpoint writer writing
into ``/dev/full``.
"""

from __future__ import annotations

import builtins
import errno
import gzip
import io
import os
import pickle
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import fsspec
import numpy as np
import pytest
import torch
import zarr
from fsspec.implementations.local import LocalFileSystem
from helpers import (
    DEMO_KWARGS,
    DEMO_KWARGS_JSON,
    assert_one_line_error,
    flip_byte,
    invoke,
    make_format1,
    make_read_only,
    ok,
    rewrite_checkpoint,
    snapshot,
)

from pipeline.cli import cli
from pipeline.core.commands import DistillOptions, IsmOptions, PredictOptions
from pipeline.store import open_store

# ------------------------------------------------------------------------------------------------
# shared inputs (read by many cases; the snapshot checks that no case changes them)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets(tmp_path_factory, genome_path, write_spec, tiny_store, trained_run) -> dict[str, Path]:
    from pipeline.apply.exact_ism import ism_effects
    from pipeline.apply.inputs import load_inputs
    from pipeline.apply.predict import predict_effects
    from pipeline.core.spec import load_spec
    from pipeline.distill import distill
    from pipeline.models import base_from_checkpoint, build_base, read_checkpoint

    d = tmp_path_factory.mktemp("assets")
    a: dict[str, Path] = {}
    fasta = genome_path.read_bytes()
    fai = genome_path.with_name(genome_path.name + ".fai").read_text()

    def put(name: str, data: bytes | str) -> Path:
        a[name] = d / name
        (a[name].write_bytes if isinstance(data, bytes) else a[name].write_text)(data)
        return a[name]

    # genomes
    put("crlf.fa", fasta.replace(b"\n", b"\r\n"))
    put("genome.fa.gz", gzip.compress(fasta[:5000]))
    put("empty.fa", b"")
    put("noheader.fa", b"ACGT" * 20 + b"\nACGT\n")
    put("garbage.fa", fasta)
    put("garbage.fa.fai", "this is not a FASTA index\n")
    put("stale.fa", fasta)
    rows = [line.split("\t") for line in fai.splitlines()]
    rows[0][1] = str(int(rows[0][1]) * 3)  # chr1 three times longer than it is
    put("stale.fa.fai", "\n".join("\t".join(r) for r in rows) + "\n")
    # inputs of predict / score-vcf
    put("seqs79.fa", ">short_one\n" + "ACGT" * 19 + "AGC\n")
    put("one.vcf", "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\nchr7\t3000\t.\tA\tG\n")
    # weights files
    base = build_base("demo", **DEMO_KWARGS)
    torch.save(base.state_dict(), d / "demo.pt")
    a["demo.pt"] = d / "demo.pt"
    torch.save({k: v[:1] for k, v in base.state_dict().items()}, d / "wrong_shape.pt")
    a["wrong_shape.pt"] = d / "wrong_shape.pt"
    good = a["demo.pt"].read_bytes()
    put("truncated.pt", good[: len(good) // 2])
    put("plain_pickle.pt", pickle.dumps({"conv1.weight": [0.0] * 4}, protocol=4))
    torch.save([torch.zeros(2)], d / "list.pt")
    a["list.pt"] = d / "list.pt"
    put("seqs80.fa", ">s1\n" + "ACGT" * 20 + "\n")
    put("bad.vcf", "#CHROM\tPOS\tID\tREF\tALT\nchr7\tabc\t.\tA\tG\n")
    # checkpoints: damaged ones, one for L = 64, one whose recorded genome is gone
    best = (trained_run / "best.pt").read_bytes()
    put("truncated_ckpt.pt", best[: len(best) // 3])
    put("pickle_ckpt.pt", pickle.dumps({"format": "multiplexer-checkpoint", "model": [1, 2]}, protocol=4))
    put("corrupt.pt", b"PK\x03\x04 this is not a checkpoint" * 10)
    architecture = read_checkpoint(trained_run / "best.pt")["architecture"]
    l64 = {**architecture, "kwargs": {**architecture["kwargs"], "seq_len": 64}}
    a["l64.pt"] = rewrite_checkpoint(trained_run / "best.pt", d / "l64.pt", seq_len=64, architecture=l64)
    a["moved_genome.pt"] = rewrite_checkpoint(trained_run / "best.pt", d / "moved_genome.pt", genome=str(d / "gone.fa"))
    # stores: one with deleted chunk files (train unit 1, test unit 0), one of another L, one of another F
    a["lost.zarr"] = d / "lost.zarr"
    shutil.copytree(tiny_store, a["lost.zarr"])
    (a["lost.zarr"] / "train/targets/c/5/0/0/0").unlink()  # sample 5 lies in unit 1 (unit_samples 4)
    (a["lost.zarr"] / "test/targets/c/2/0/0/0").unlink()
    a["relabelled.zarr"] = d / "relabelled.zarr"  # one flipped byte: target name demo_03 reads demo_02
    shutil.copytree(tiny_store, a["relabelled.zarr"])
    root_json = a["relabelled.zarr"] / "zarr.json"
    root_json.write_text(root_json.read_text().replace('"demo_03"', '"demo_02"', 1))
    for name, overrides in (("l81.zarr", {"seq_len": 81}), ("f3.zarr", {"base": {"kwargs": {"n_targets": 3}}})):
        a[name] = d / name
        a[f"{name}.yaml"] = write_spec(d, f"{name}.yaml", store=str(a[name]), **overrides)
        spec = load_spec(a[f"{name}.yaml"])
        distill(spec, DistillOptions(splits=["test"], device="cpu"), progress=False)
    (d / "not_ours.zarr").mkdir()
    zarr.open_group(str(d / "not_ours.zarr"), mode="w").attrs["what"] = "someone else's data"
    a["not_ours.zarr"] = d / "not_ours.zarr"
    (d / "empty_folder").mkdir()
    a["empty_folder"] = d / "empty_folder"
    put("a_file.zarr", "I am a file")
    # an effects file, and a truncated copy
    inputs = load_inputs(seq_len=80, genome=genome_path, region="chr7:3000")
    predict_effects(
        str(trained_run / "best.pt"), inputs, str(d / "pred.npz"), PredictOptions(device="cpu"), progress=False
    )
    a["pred.npz"] = d / "pred.npz"
    effects = a["pred.npz"].read_bytes()
    put("truncated_pred.npz", effects[: len(effects) // 2])
    # exact ISM of the checkpoint's base model, one base beside pred.npz's region
    meta = read_checkpoint(trained_run / "best.pt")
    inputs = load_inputs(seq_len=80, genome=genome_path, region="chr7:3001")
    a["ism_3001.npz"] = Path(
        ism_effects(base_from_checkpoint(meta), inputs, str(d / "ism_3001.npz"), IsmOptions(target=meta["target_kind"]),
                    target_names=meta["target_names"], progress=False)
    )  # fmt: skip
    # a catalogue of chr21:601-1060 (one unit: chr21 is shorter than a unit of 4 targets)
    from pipeline.apply.variants.catalogue import build_catalogue
    from pipeline.apply.variants.options import CatalogueOptions

    a["cat.zarr"] = d / "cat.zarr"
    build_catalogue(str(trained_run / "best.pt"), str(a["cat.zarr"]), CatalogueOptions(regions=(CATALOGUED,),
                    device="cpu"), progress=False)  # fmt: skip
    a["root"] = d
    return a


CATALOGUED = "chr21:601-1060"
"""The region of the matrix's catalogue (``assets["cat.zarr"]``)."""


# ------------------------------------------------------------------------------------------------
# simulated read-only folders and full disks
# ------------------------------------------------------------------------------------------------


class FullDiskFS(LocalFileSystem):
    """``fulldisk://``: the local disk through fsspec, full for some writes (a registered test protocol).

    A write to a path containing :attr:`fragment` fails with ENOSPC once :attr:`after` such writes
    have been accepted; the accepted ones are slow (:attr:`delay`), so they are still being written
    when the failing one is reported. :attr:`in_flight` counts the writes still going on. Tests set
    the attributes with ``monkeypatch``, so the disk has space again when the test ends.
    """

    protocol = ("fulldisk",)
    fragment = ""
    after = 0
    delay = 0.3
    attempts: list[str] = []
    in_flight = 0
    _lock = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_mkdir", True)
        super().__init__(*args, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        cls = type(self)
        if not cls.fragment or cls.fragment not in path:
            return super().pipe_file(path, value, mode=mode, **kwargs)
        with cls._lock:
            cls.attempts.append(path)
            accepted = len(cls.attempts) <= cls.after
            cls.in_flight += accepted
        if not accepted:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        try:
            time.sleep(cls.delay)
            return super().pipe_file(path, value, mode=mode, **kwargs)
        finally:
            with cls._lock:
                cls.in_flight -= 1


fsspec.register_implementation("fulldisk", FullDiskFS, clobber=True)


def _full_disk_for(mp: pytest.MonkeyPatch, fragment: str) -> list[str]:
    """Python's ``open`` raises ENOSPC for files whose path contains ``fragment`` (what a full disk
    does to zarr's local store, which writes through ``open``); returns the list of attempted paths."""
    real_open, real_io_open = builtins.open, io.open
    attempts: list[str] = []

    def full(opener: Callable[..., Any]) -> Callable[..., Any]:
        def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if not isinstance(file, int) and any(m in mode for m in "wax+") and fragment in os.fsdecode(file):
                attempts.append(os.fsdecode(file))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(file))
            return opener(file, mode, *args, **kwargs)

        return open_

    mp.setattr(builtins, "open", full(real_open))
    mp.setattr(io, "open", full(real_io_open))
    return attempts


# ------------------------------------------------------------------------------------------------
# the cases
# ------------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """What a case builds its command line from."""

    tmp: Path
    assets: dict[str, Path]
    genome: Path
    store: str
    run: Path
    mp: pytest.MonkeyPatch
    write_spec: Callable[..., Path]
    n_specs: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    expect: list[str] = field(default_factory=list)
    """Fragments the error line must hold besides the case's own (known only once the case is built)."""

    @property
    def ckpt(self) -> Path:
        return self.run / "best.pt"

    def spec(self, **overrides: Any) -> Path:
        """A tiny spec in the case folder (its store, unless given, is a path nothing may create)."""
        self.n_specs += 1
        overrides.setdefault("store", str(self.tmp / "never.zarr"))
        return self.write_spec(self.tmp, f"spec{self.n_specs}.yaml", **overrides)

    def read_only(self, name: str = "readonly") -> Path:
        """A folder that refuses writes: chmod 0o555, or (as root) simulated, see the module docstring."""
        folder = self.tmp / name
        folder.mkdir()
        self.state.setdefault("restore", []).append(folder)
        make_read_only(self.mp, folder)
        return folder

    def demo_dir(self, genome_bytes: bytes | None = None, store: bool = False) -> Path:
        work = self.tmp / "demo"
        work.mkdir()
        if genome_bytes is None:
            shutil.copy(self.genome, work / "genome.fa")
            shutil.copy(self.genome.with_name(self.genome.name + ".fai"), work / "genome.fa.fai")
        else:
            (work / "genome.fa").write_bytes(genome_bytes)
        if store:
            shutil.copytree(self.store, work / "store.zarr")
        return work


@dataclass
class Case:
    id: str
    command: tuple[str, ...]
    build: Callable[[Ctx], list[Any]]
    expect: tuple[str, ...]
    allow_new: tuple[str, ...] = ()
    """Paths (relative to the case folder; ``"dir/"``: everything below it) of files a failing run may
    leave (never inputs)."""
    check: Callable[[Ctx], None] | None = None
    """Run after the common assertions."""


CASES: list[Case] = []


def case(
    id: str,
    command: str,
    *expect: str,
    allow_new: tuple[str, ...] = (),
    check: Callable[[Ctx], None] | None = None,
) -> Callable[[Callable[[Ctx], list[Any]]], Callable[[Ctx], list[Any]]]:
    def register(build: Callable[[Ctx], list[Any]]) -> Callable[[Ctx], list[Any]]:
        CASES.append(Case(id, tuple(command.split()), build, expect, allow_new, check))
        return build

    return register


# --- genome synth --------------------------------------------------------------------------------
@case("synth: divisor 0", "genome synth", "divisor", "0")
def _(c: Ctx) -> list[Any]:
    return ["genome", "synth", c.tmp / "g.fa", "--divisor", "0"]


@case("synth: read-only folder", "genome synth", "Permission denied", "readonly")
def _(c: Ctx) -> list[Any]:
    return ["genome", "synth", c.read_only() / "g.fa"]


@case("synth: output genome exists", "genome synth", "genome.fa", "exists")
def _(c: Ctx) -> list[Any]:
    return ["genome", "synth", c.genome]


# --- FASTA and .fai ------------------------------------------------------------------------------
@case("distill: genome FASTA missing", "distill", "missing.fa", "does not exist")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(genome=str(c.tmp / "missing.fa")), "--device", "cpu"]


@case("distill: empty genome FASTA", "distill", "empty.fa", "is empty")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(genome=str(c.assets["empty.fa"])), "--device", "cpu"]


@case("predict: genome FASTA without a header", "predict", "noheader.fa", "'>' header")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--genome", c.assets["noheader.fa"],
            "--out", c.tmp / "x.npz"]  # fmt: skip


@case("predict: gzip-compressed genome FASTA", "predict", "genome.fa.gz", "gunzip")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--genome", c.assets["genome.fa.gz"],
            "--out", c.tmp / "x.npz"]  # fmt: skip


@case("ism: genome FASTA with Windows line endings", "ism", "crlf.fa", "Windows")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--spec", c.spec(genome=str(c.assets["crlf.fa"])), "--region", "chr7:3000", "--out",
            c.tmp / "x.npz"]  # fmt: skip


@case("score-vcf: genome FASTA with Windows line endings", "score-vcf", "crlf.fa", "Windows")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.assets["one.vcf"], "--genome", c.assets["crlf.fa"],
            "--out", c.tmp / "s.tsv"]  # fmt: skip


@case("distill: corrupt .fai (garbage)", "distill", "garbage.fa.fai", "corrupt")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(genome=str(c.assets["garbage.fa"])), "--device", "cpu"]


@case("predict: .fai lengths do not match the FASTA", "predict", "stale.fa.fai", "does not match", "chr1")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--genome", c.assets["stale.fa"],
            "--out", c.tmp / "x.npz"]  # fmt: skip


@case("predict: empty --fasta file", "predict", "empty.fa", "no sequences")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--fasta", c.assets["empty.fa"], "--out", c.tmp / "x.npz"]


@case("demo: work folder genome with Windows line endings", "demo", "Windows", allow_new=("demo/spec.yaml",))
def _(c: Ctx) -> list[Any]:
    return ["demo", "--workdir", c.demo_dir(genome_bytes=c.assets["crlf.fa"].read_bytes()), "--device", "cpu"]


# --- real genomes: FASTA (issue 12) --------------------------------------------------------------
def _bgzip_genome(c: Ctx, name: str = "genome.fa.gz") -> Path:
    """The shared genome, bgzip-compressed (Biopython's BGZF writer) into the case folder."""
    from Bio import bgzf

    path = c.tmp / name
    writer = bgzf.BgzfWriter(str(path), "wb")
    writer.write(c.genome.read_bytes())
    writer.close()
    return path


@case("score-vcf: gzip (not bgzip) genome FASTA", "score-vcf", "genome.fa.gz", "not bgzip", "gunzip", "bgzip")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.assets["one.vcf"], "--genome", c.assets["genome.fa.gz"],
            "--out", c.tmp / "s.tsv"]  # fmt: skip


@case("predict: bgzip genome FASTA whose .fai is stale", "predict", "genome.fa.gz.fai", "does not match", "chr1")
def _(c: Ctx) -> list[Any]:
    from pipeline.core.genome import Genome

    path = _bgzip_genome(c)
    Genome(path)  # builds its .fai and .gzi; then the .fai goes stale (chr1 three times longer)
    (c.tmp / "genome.fa.gz.fai").write_bytes(c.assets["stale.fa.fai"].read_bytes())
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--genome", path, "--out", c.tmp / "x.npz"]


@case("score-vcf: truncated bgzip genome FASTA", "score-vcf", "cut.fa.gz", "truncated")
def _(c: Ctx) -> list[Any]:
    whole = _bgzip_genome(c).read_bytes()
    (c.tmp / "cut.fa.gz").write_bytes(whole[: len(whole) // 2])
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.assets["one.vcf"], "--genome", c.tmp / "cut.fa.gz",
            "--out", c.tmp / "s.tsv"]  # fmt: skip


@case("ism: region chromosome named without the genome's 'chr'", "ism", "'7'", "not in genome",
      "did you mean 'chr7'?")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["ism", "--checkpoint", c.ckpt, "--region", "7:3000", "--out", c.tmp / "x.npz"]


# (predict on a contig shorter than the window is in test_real_like.py: here the genome is not the
# checkpoint's, which predict would rightly warn about on a second stderr line)
@case("ism: chromosome shorter than the window", "ism", "chromosome 'chrM' (60 bp)",
      "is shorter than the window (80 bp)")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    from pipeline.core.genome import Genome

    path = c.tmp / "short.fa"
    path.write_text(">chr7\n" + "ACGT" * 250 + "\n>chrM\n" + "ACGTAC" * 10 + "\n")
    Genome(path)  # its .fai exists before the run
    return ["ism", "--spec", c.spec(genome=str(path)), "--region", "chrM:30", "--out", c.tmp / "x.npz"]


# --- explicit base weights (issue 12) -----------------------------------------------------------
@case("distill: Beluga without weights", "distill", "'beluga'", "base.weights", "deepsea.beluga.pth",
      "`weights: random`")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(seq_len=400, base={"model": "beluga", "kwargs": {"n_targets": 4}}), "--device", "cpu"]


@case("distill: random weights for the demo model", "distill", "'demo'", "sets its own weights", "weights: random")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(base={"weights": "random"}), "--device", "cpu"]


@case("ism: --base beluga without --weights", "ism", "'beluga'", "--weights", "deepsea.beluga.pth",
      "--weights random")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["ism", "--base", "beluga", "--base-kwargs", '{"n_targets": 4}', "--seq-len", "400", "--region",
            "chr7:3000", "--genome", c.genome, "--out", c.tmp / "x.npz"]  # fmt: skip


@case("ism: --seq-len disagrees with --base-kwargs seq_len", "ism", "--seq-len 400", "--base-kwargs seq_len 410")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--base", "beluga", "--weights", "random", "--base-kwargs", '{"seq_len": 410, "n_targets": 4}',
            "--seq-len", "400", "--region", "chr7:3000", "--genome", c.genome, "--out", c.tmp / "x.npz"]  # fmt: skip


# --- command-line arguments ---------------------------------------------------------------------
@case("distill: unknown option", "distill", "--bogus")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(), "--bogus"]


@case("distill: malformed --shard", "distill", "3/2")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(), "--shard", "3/2"]


@case("distill: unknown --split", "distill", "holdout")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(), "--split", "holdout"]


@case("ism: malformed --region", "ism", "chr7-3000")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--spec", c.spec(), "--region", "chr7-3000", "--out", c.tmp / "x.npz"]


@case("predict: a range as --region points to --regions", "predict", "chr7:3000-3199", "--regions", "chr7:3099")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000-3199", "--out", c.tmp / "x.npz"]


@case("ism: no input sequences given", "ism", "--region")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--spec", c.spec(), "--out", c.tmp / "x.npz"]


# --- chromosomes and windows ---------------------------------------------------------------------
@case("distill: split chromosome absent from the genome", "distill", "chrZ", "not in genome")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(splits={"train": {"chroms": ["chr1", "chrZ"]}}), "--device", "cpu"]


@case("predict: region chromosome absent", "predict", "chrZ", "not in genome")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chrZ:400", "--out", c.tmp / "x.npz"]


@case("predict: window off the start", "predict", "chr7:39", "does not fit")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:39", "--out", c.tmp / "x.npz"]


@case("ism: window off the end", "ism", "does not fit", "chr7")
def _(c: Ctx) -> list[Any]:
    from pipeline.core.genome import Genome

    end = Genome(c.genome).length("chr7")
    return ["ism", "--checkpoint", c.ckpt, "--region", f"chr7:{end - 39}", "--out", c.tmp / "x.npz"]


@case("predict: window off the end", "predict", "does not fit")
def _(c: Ctx) -> list[Any]:
    from pipeline.core.genome import Genome

    region = f"chr7:{Genome(c.genome).length('chr7') - 10}"
    c.expect.append(region)
    return ["predict", "--checkpoint", c.ckpt, "--region", region, "--out", c.tmp / "x.npz"]


@case("ism: region at the chromosome's last base (--spec)", "ism", "does not fit", "chr7")
def _(c: Ctx) -> list[Any]:
    from pipeline.core.genome import Genome

    end = Genome(c.genome).length("chr7")
    return ["ism", "--spec", c.spec(), "--region", f"chr7:{end}", "--out", c.tmp / "x.npz"]


# chromosomes start with max(100, len/100) N's: the first window that fits (center L/2 = 40) is all N
@case("predict: all-N window", "predict", "chr1:40", "all N")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr1:40", "--out", c.tmp / "x.npz"]


@case("ism: all-N window", "ism", "chr2:40", "all N")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--spec", c.spec(), "--region", "chr2:40", "--out", c.tmp / "x.zarr"]


# --- interval splits, validation before compute (issue 12) -------------------------------------
@case("distill: spec without a valid split", "distill", "no valid split", "regions", "--allow-no-valid")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(splits={"valid": None}), "--device", "cpu"]


# chromosomes start with max(100, len/100) N's, so chr9:1-100 holds only all-N windows; the check
# refuses it before the train and valid splits are computed, so no store appears
@case("distill: a split whose sequence is all N", "distill", "split 'test'", "mostly N")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(splits={"test": {"chroms": None, "regions": ["chr9:1-100"]}}), "--device", "cpu"]


@case("distill --check: a split whose sequence is all N", "distill", "split 'test'", "mostly N")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(splits={"test": {"chroms": None, "regions": ["chr9:1-100"]}}), "--check"]


@case("distill: splits' intervals overlap", "distill", "region chr8:1-3000 of split 'valid' overlaps", "'test'")
def _(c: Ctx) -> list[Any]:
    splits = {
        "valid": {"chroms": None, "regions": ["chr8:1-3000"]},
        "test": {"chroms": None, "regions": ["chr8:2001-4000"]},
    }
    return ["distill", c.spec(splits=splits), "--device", "cpu"]


@case("distill: more samples than a split's windows", "distill", "asks for 500 windows", "distinct windows")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(splits={"valid": {"chroms": None, "regions": ["chr8:1001-1200"], "samples": 500}})]


@case("distill: interval past the chromosome's end", "distill", "split 'valid'", "runs past the end of chr8")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(splits={"valid": {"chroms": None, "regions": ["chr8:1001-900000"]}}), "--device", "cpu"]


@case("distill: another genome at the spec's genome path", "distill", "another genome", "contig 'chr9' is",
      allow_new=("g.fa.fai",))  # fmt: skip
def _(c: Ctx) -> list[Any]:
    from pipeline.core.spec import load_spec
    from pipeline.distill import distill

    fasta = c.tmp / "g.fa"
    fasta.write_bytes(c.genome.read_bytes())
    spec = c.spec(genome=str(fasta), store=str(c.tmp / "g.zarr"), splits={"train": {"samples": 2}, "test": None})
    distill(load_spec(spec), DistillOptions(device="cpu"), progress=False)
    records = c.genome.read_text().split(">")[1:]  # the same path now holds a genome with a shorter chr9
    fasta.write_text(">" + ">".join(r if not r.startswith("chr9\n") else r[:-71] + "\n" for r in records))
    (c.tmp / "g.fa.fai").unlink()
    return ["distill", spec, "--device", "cpu"]


@case("distill: BED file of a split missing", "distill", "valid.bed", "does not exist")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(splits={"valid": {"chroms": None, "bed": "valid.bed"}}), "--device", "cpu"]


# --- specs ---------------------------------------------------------------------------------------
@case("distill: spec with an unknown key", "distill", "unknown key", "colour")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(colour="blue")]


@case("distill: spec file missing", "distill", "nope.yaml")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.tmp / "nope.yaml"]


@case("distill: spec with an unknown key in a section", "distill", "codek")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(storage={"codek": "zstd"})]


@case("train: spec with a wrong type", "train", "seq_len", "must be int")
def _(c: Ctx) -> list[Any]:
    return ["train", c.spec(seq_len="eighty"), "--run-dir", c.tmp / "run"]


@case("distill: spec with a negative count", "distill", "samples", ">= 1", "-3")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(splits={"train": {"samples": -3}})]


@case("train: spec with negative steps", "train", "steps", ">= 1")
def _(c: Ctx) -> list[Any]:
    return ["train", c.spec(train={"steps": -1}), "--run-dir", c.tmp / "run"]


@case("train: option below its range", "train", "--lr", "> 0", "0")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--lr", "0", "--device", "cpu"]


@case("train: option not one of its names", "train", "--schedule", "cosine, constant", "linear")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--schedule", "linear", "--device", "cpu"]


@case("train: options that disagree", "train", "batch_size (6)", "grad_accum (4)")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--batch-size", "6", "--grad-accum", "4", "--device", "cpu"]


@case("train: --arch-kwargs that is not JSON", "train", "--arch-kwargs", "JSON")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--arch-kwargs", "{width1: 4", "--device", "cpu"]


@case("ism: unknown --engine", "ism", "ISM engine", "quick")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--spec", c.spec(), "--engine", "quick", "--region", "chr7:3000", "--out", c.tmp / "x.npz"]


@case("ism: unknown --target", "ism", "target kind", "ratio")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--spec", c.spec(), "--target", "ratio", "--region", "chr7:3000", "--out", c.tmp / "x.npz"]


@case("ism: L too small for the demo base model", "ism", "seq_len >= 64", "40")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--spec", c.spec(seq_len=40), "--region", "chr7:3000", "--out", c.tmp / "x.npz"]


@case("distill: L too small for Beluga", "distill", "Beluga", "seq_len >= 310", "300")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(seq_len=300, base={"model": "beluga", "weights": "random", "kwargs": None}), "--device",
            "cpu"]  # fmt: skip


# --- weights files -------------------------------------------------------------------------------
@case("distill: weights of the wrong shape", "distill", "wrong_shape.pt", "does not fit", "conv1.weight")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(base={"weights": str(c.assets["wrong_shape.pt"])}), "--device", "cpu"]


@case("ism: weights of the wrong shape", "ism", "wrong_shape.pt", "does not fit DemoBase", "wrong shapes")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--base", "demo", "--base-kwargs", DEMO_KWARGS_JSON, "--weights", c.assets["wrong_shape.pt"],
            "--region", "chr7:3000", "--genome", c.genome, "--out", c.tmp / "x.npz"]  # fmt: skip


@case("distill: truncated weights file", "distill", "truncated.pt", "truncated")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(base={"weights": str(c.assets["truncated.pt"])}), "--device", "cpu"]


@case("ism: weights of another model", "ism", "demo.pt", "does not fit Beluga", "missing keys")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--base", "beluga", "--base-kwargs", '{"seq_len": 310, "n_targets": 4}', "--weights",
            c.assets["demo.pt"], "--region", "chr7:3000", "--genome", c.genome, "--out", c.tmp / "x.npz"]  # fmt: skip


@case("ism: truncated weights file", "ism", "truncated.pt", "truncated")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--base", "demo", "--base-kwargs", DEMO_KWARGS_JSON, "--weights", c.assets["truncated.pt"],
            "--region", "chr7:3000", "--genome", c.genome, "--out", c.tmp / "x.npz"]  # fmt: skip


@case("distill: weights file is a pickle, not a state dict", "distill", "plain_pickle.pt", "pickled")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(base={"weights": str(c.assets["plain_pickle.pt"])}), "--device", "cpu"]


@case("ism: weights file holds a list, not a state dict", "ism", "list.pt", "does not hold a state dict")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--base", "demo", "--base-kwargs", DEMO_KWARGS_JSON, "--weights", c.assets["list.pt"],
            "--region", "chr7:3000", "--genome", c.genome, "--out", c.tmp / "x.npz"]  # fmt: skip


@case("distill: weights file missing", "distill", "gone.pt", "does not exist")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(base={"weights": str(c.tmp / "gone.pt")}), "--device", "cpu"]


# --- stores --------------------------------------------------------------------------------------
@case("distill: store from another spec", "distill", "different spec", "seed", "--overwrite")
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(seed=7, store=c.store), "--device", "cpu"]


# --overwrite replaces only a training store (issue 22.2): a catalogue or a score-vcf Zarr output at
# --store is refused, like every other command refuses other kinds of output
@case("distill: --overwrite onto a catalogue", "distill", "cat.zarr", "another kind", "multiplexer-catalogue",
      "--overwrite will not replace it")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    out = c.tmp / "cat.zarr"
    ok("catalogue", "--checkpoint", c.ckpt, "--out", out, "--region", "chr7:3001-3040", "--device", "cpu")
    return ["distill", c.spec(), "--store", out, "--overwrite", "--device", "cpu"]


@case("distill: --overwrite onto a score-vcf Zarr output", "distill", "s.zarr", "another kind", "score-vcf",
      "--overwrite will not replace it")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    out = c.tmp / "s.zarr"
    ok("score-vcf", "--checkpoint", c.ckpt, "--vcf", c.assets["one.vcf"], "--out", out, "--device", "cpu")
    return ["distill", c.spec(), "--store", out, "--overwrite", "--device", "cpu"]


@case("distill: --overwrite onto someone else's Zarr group", "distill", "not_ours.zarr", "another kind",
      "--overwrite will not replace it")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["distill", c.spec(), "--store", c.assets["not_ours.zarr"], "--overwrite", "--device", "cpu"]


@case("train: store from another spec", "train", "different spec", "seed")
def _(c: Ctx) -> list[Any]:
    return ["train", c.spec(seed=7, store=c.store), "--run-dir", c.tmp / "run", "--device", "cpu"]


@case("demo: work folder holds a store of another spec", "demo", "store.zarr", "not the demo's store",
      allow_new=("demo/spec.yaml",))  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["demo", "--workdir", c.demo_dir(store=True), "--device", "cpu"]


@case("store verify: deleted chunk", "store verify", "lost.zarr", "unit 1", "(5, 0, 0, 0)", "missing")
def _(c: Ctx) -> list[Any]:
    return ["store", "verify", c.assets["lost.zarr"]]


@case("train: store with a deleted chunk", "train", "lost.zarr", "'train' unit 1", "missing")
def _(c: Ctx) -> list[Any]:
    return ["train", c.assets["lost.zarr"], "--run-dir", c.tmp / "run", "--steps", "2", "--device", "cpu"]


@case("evaluate: store with a deleted chunk", "evaluate", "lost.zarr", "'test' unit 0", "missing")
def _(c: Ctx) -> list[Any]:
    return ["evaluate", "--checkpoint", c.ckpt, "--store", c.assets["lost.zarr"], "--out", c.tmp / "eval"]


@case("store verify: a flipped target name", "store verify", "relabelled.zarr", "zarr.json",
      "attribute 'target_names' does not match its digest")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["store", "verify", c.assets["relabelled.zarr"]]


@case("train: a flipped target name", "train", "relabelled.zarr", "'target_names' does not match its digest")
def _(c: Ctx) -> list[Any]:
    return ["train", c.assets["relabelled.zarr"], "--run-dir", c.tmp / "run", "--steps", "2", "--device", "cpu"]


@case("evaluate: a flipped target name", "evaluate", "relabelled.zarr", "'target_names' does not match its digest")
def _(c: Ctx) -> list[Any]:
    return ["evaluate", "--checkpoint", c.ckpt, "--store", c.assets["relabelled.zarr"], "--out", c.tmp / "eval"]


@case("store info: store missing", "store info", "nowhere.zarr")
def _(c: Ctx) -> list[Any]:
    return ["store", "info", c.tmp / "nowhere.zarr"]


@case("store info: store path is a file", "store info", "a_file.zarr", "is a file")
def _(c: Ctx) -> list[Any]:
    return ["store", "info", c.assets["a_file.zarr"]]


@case("train: spec's store path is a file", "train", "a_file.zarr", "is a file")
def _(c: Ctx) -> list[Any]:
    return ["train", c.spec(store=str(c.assets["a_file.zarr"])), "--run-dir", c.tmp / "run"]


@case("store info: a Zarr group that is not a multiplexer store", "store info", "not_ours.zarr",
      "not a multiplexer store")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["store", "info", c.assets["not_ours.zarr"]]


@case("store upgrade: an empty folder", "store upgrade", "empty_folder", "not a readable Zarr store")
def _(c: Ctx) -> list[Any]:
    (c.tmp / "empty_folder").mkdir()
    return ["store", "upgrade", c.tmp / "empty_folder"]


@case("store verify: an empty folder", "store verify", "empty_folder", "not a readable Zarr store")
def _(c: Ctx) -> list[Any]:
    return ["store", "verify", c.assets["empty_folder"]]


# --- checkpoints for another L or F --------------------------------------------------------------
@case("predict: FASTA of another length than the checkpoint's", "predict", "short_one", "length 79", "80")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--fasta", c.assets["seqs79.fa"], "--out", c.tmp / "x.npz"]


@case("evaluate: store of another L", "evaluate", "L=80", "L=81", "l81.zarr")
def _(c: Ctx) -> list[Any]:
    return ["evaluate", "--checkpoint", c.ckpt, "--store", c.assets["l81.zarr"], "--out", c.tmp / "eval"]


@case("evaluate: store of another F", "evaluate", "F=4", "F=3", "f3.zarr")
def _(c: Ctx) -> list[Any]:
    return ["evaluate", "--checkpoint", c.ckpt, "--store", c.assets["f3.zarr"], "--out", c.tmp / "eval"]


@case("predict: FASTA of L=80 for a checkpoint of L=64", "predict", "length 80", "64")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.assets["l64.pt"], "--fasta", c.assets["seqs80.fa"], "--out", c.tmp / "x.npz"]


@case("evaluate: checkpoint of another L", "evaluate", "L=64", "L=80")
def _(c: Ctx) -> list[Any]:
    return ["evaluate", "--checkpoint", c.assets["l64.pt"], "--store", c.store, "--out", c.tmp / "eval"]


@case("ism: --seq-len differs from the checkpoint", "ism", "81", "80")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--checkpoint", c.ckpt, "--seq-len", "81", "--region", "chr7:3000", "--out", c.tmp / "x.npz"]


@case("predict: checkpoint missing", "predict", "missing.pt")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.tmp / "missing.pt", "--region", "chr7:3000", "--out", c.tmp / "x.npz"]


@case("predict: corrupt checkpoint", "predict", "corrupt.pt", "corrupt")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.assets["corrupt.pt"], "--region", "chr7:3000", "--out", c.tmp / "x.npz"]


@case("predict: checkpoint's recorded genome is gone", "predict", "gone.fa", "--genome")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.assets["moved_genome.pt"], "--region", "chr7:3000", "--out",
            c.tmp / "x.npz"]  # fmt: skip


@case("predict: truncated checkpoint", "predict", "truncated_ckpt.pt", "truncated")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.assets["truncated_ckpt.pt"], "--region", "chr7:3000", "--out",
            c.tmp / "x.npz"]  # fmt: skip


@case("score-vcf: checkpoint is a plain pickle", "score-vcf", "pickle_ckpt.pt", "pickled")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.assets["pickle_ckpt.pt"], "--vcf", c.assets["one.vcf"], "--out",
            c.tmp / "s.tsv"]  # fmt: skip


# --- read-only output folders --------------------------------------------------------------------
@case("predict: read-only output folder", "predict", "Permission denied", "readonly")
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--out", c.read_only() / "x.zarr"]


@case("evaluate: read-only output folder", "evaluate", "Permission denied", "readonly")
def _(c: Ctx) -> list[Any]:
    return ["evaluate", "--checkpoint", c.ckpt, "--store", c.store, "--out", c.read_only() / "eval"]


@case("train: read-only run folder", "train", "Permission denied", "readonly")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.read_only() / "run", "--steps", "2", "--device", "cpu"]


# --- full disks ----------------------------------------------------------------------------------
def _resumable_store(c: Ctx) -> Path:
    """A copy of the tiny store whose train unit 1 is not marked complete (an interrupted run)."""
    path = c.tmp / "resume.zarr"
    shutil.copytree(c.store, path)
    zarr.open_group(str(path), mode="r+")["train"]["complete"][1] = 0
    return path


def _unit_stays_incomplete(c: Ctx) -> None:
    # the failure was reported only once the unit's other writes had finished
    assert FullDiskFS.in_flight == 0, "a write of the unit was still going on when distill returned"
    assert len(FullDiskFS.attempts) >= 2  # the first chunk of unit 1 was accepted, the next one failed
    store = c.tmp / "resume.zarr"
    assert open_store(store).complete_units("train").tolist() == [True, False, True]
    c.mp.undo()  # the disk has space again: a rerun resumes and completes the unit
    assert invoke("distill", c.state["spec"], "--store", c.state["url"], "--device", "cpu").exit_code == 0
    assert open_store(store).complete_units("train").all()
    assert invoke("store", "verify", store).exit_code == 0


@case("distill: disk full while writing a unit", "distill", "No space left on device", "unit 1", "'train'",
      check=_unit_stays_incomplete)  # fmt: skip
def _(c: Ctx) -> list[Any]:
    store = _resumable_store(c)
    c.state["spec"] = c.spec(store=str(store))
    c.state["url"] = f"fulldisk://{store}"
    c.mp.setattr(FullDiskFS, "fragment", "resume.zarr/train/targets/")
    c.mp.setattr(FullDiskFS, "after", 1)
    c.mp.setattr(FullDiskFS, "attempts", [])
    return ["distill", c.state["spec"], "--store", c.state["url"], "--device", "cpu"]


def _no_partial_output(c: Ctx) -> None:
    assert c.state["attempts"], "the failing writer was never called"
    assert not (c.tmp / "x.zarr").exists() and not list(c.tmp.glob("x.*.tsv.gz"))


@case("predict: disk full while writing effects", "predict", "No space left on device", "x.zarr",
      check=_no_partial_output)  # fmt: skip
def _(c: Ctx) -> list[Any]:
    c.state["attempts"] = _full_disk_for(c.mp, "x.zarr/effects/c/")
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--out", c.tmp / "x.zarr", "--tsv"]


def _no_npz(c: Ctx) -> None:
    assert c.state["attempts"], "the failing writer was never called"
    assert [p.name for p in c.tmp.iterdir()] == [], "a partial output was left behind"


@case("ism: disk full while writing an .npz", "ism", "No space left on device", "x.npz", check=_no_npz)
def _(c: Ctx) -> list[Any]:
    real = np.savez_compressed
    attempts: list[str] = []

    def savez(file: Any, **arrays: Any) -> None:  # writes part of the file, then the disk is full
        attempts.append(str(file))
        real(file, **arrays)
        with open(file, "r+b") as handle:
            handle.truncate(100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    c.mp.setattr(np, "savez_compressed", savez)
    c.state["attempts"] = attempts
    return ["ism", "--base", "demo", "--base-kwargs", DEMO_KWARGS_JSON, "--region", "chr7:3000", "--genome",
            c.genome, "--out", c.tmp / "x.npz"]  # fmt: skip


def _no_checkpoint(c: Ctx) -> None:
    run = c.tmp / "run"
    assert not list(run.glob("*.pt")) and not list(run.glob(".*tmp*"))


@case("train: disk full while writing a checkpoint", "train", "cannot write checkpoint", "best.pt", "disk",
      allow_new=("run/",), check=_no_checkpoint)  # fmt: skip
def _(c: Ctx) -> list[Any]:
    real = torch.save
    if Path("/dev/full").exists():  # torch's own zip writer meets a real ENOSPC

        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            real(obj, "/dev/full", *args, **kwargs)
    else:

        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (is the disk full?)")

    c.mp.setattr(torch, "save", save)
    return ["train", c.store, "--run-dir", c.tmp / "run", "--steps", "2", "--valid-every", "2", "--device", "cpu"]


# --- safe overwrites (issue 13) ---
# --overwrite replaces only an output of the kind the command writes (the snapshot checks that the
# store, run folder and inputs below are untouched)
@case("predict: --overwrite onto a training store", "predict", "holds a multiplexer training store",
      "--overwrite will not replace it")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--out", c.store, "--overwrite"]


@case("predict: --overwrite onto a run folder", "predict", "training run folder", "--overwrite will not replace it")
def _(c: Ctx) -> list[Any]:  # (a checkpoint from elsewhere: the run folder is not an input here)
    return ["predict", "--checkpoint", c.assets["l64.pt"], "--region", "chr7:3000", "--out", c.run, "--overwrite"]


@case("predict: --out is the folder of the --checkpoint", "predict", "holds this command's --checkpoint",
      "--overwrite will not replace it")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--out", c.run, "--overwrite"]


@case("ism: --out is the --checkpoint", "ism", "best.pt", "this command's --checkpoint", "--overwrite will not")
def _(c: Ctx) -> list[Any]:
    return ["ism", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--out", c.ckpt, "--overwrite"]


@case("score-vcf: --out is the --vcf", "score-vcf", "v.tsv", "this command's --vcf", "--overwrite will not")
def _(c: Ctx) -> list[Any]:
    (c.tmp / "v.tsv").write_bytes(c.assets["one.vcf"].read_bytes())
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.tmp / "v.tsv", "--out", c.tmp / "v.tsv", "--overwrite"]


@case("plot: --overwrite onto a file that is not an image", "plot", "notes.png", "another kind",
      "--overwrite will not replace it")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    (c.tmp / "notes.png").write_text("my notes, not a figure\n")
    return ["plot", c.assets["pred.npz"], "--out", c.tmp / "notes.png", "--overwrite"]


@case("evaluate: --out is the --store", "evaluate", "this command's --store", "--overwrite will not")
def _(c: Ctx) -> list[Any]:
    return ["evaluate", "--checkpoint", c.ckpt, "--store", c.store, "--out", c.store, "--overwrite"]


@case("predict: .npz output too large for memory", "predict", "x.npz", "more than an .npz output may hold", "Zarr")
def _(c: Ctx) -> list[Any]:
    import pipeline.apply.outputs as outputs

    c.mp.setattr(outputs, "NPZ_MAX_BYTES", 1000)  # one window of the tiny model: 4 x 4 x 80 float32 = 5.1 kB
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--out", c.tmp / "x.npz"]


@case("synth: disk full while writing the genome", "genome synth", "cannot write genome", "g.fa",
      "No space left on device")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    import pipeline.demo.synthetic as synthetic

    def full(*args: Any) -> bytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    c.mp.setattr(synthetic, "_synth_chrom", full)
    return ["genome", "synth", c.tmp / "g.fa", "--divisor", "40000"]


# --- training faults (issue 13) ---
def _run_copy(c: Ctx, last: str = "last.pt") -> Path:
    """A private copy of the trained run (4 steps of the tiny spec), ``last.pt`` replaced by ``last``."""
    run = c.tmp / "run"
    shutil.copytree(c.run, run)
    if last != "last.pt":
        shutil.copy(run / last, run / "last.pt")
    return run


@case("train: --resume with a changed --lr", "train", "lr: 0.01 -> 0.005", "--allow-changes")
def _(c: Ctx) -> list[Any]:
    return ["train", c.spec(store=c.store), "--run-dir", _run_copy(c), "--resume", "--steps", "6", "--lr", "0.005",
            "--device", "cpu"]  # fmt: skip


@case("train: --resume with another seed, even with --allow-changes", "train", "seed: 0 -> 1",
      "cannot change within a run", "new run")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["train", c.spec(store=c.store), "--run-dir", _run_copy(c), "--resume", "--steps", "6", "--seed", "1",
            "--allow-changes", "--device", "cpu"]  # fmt: skip


@case("train: --resume from a best.pt copied over last.pt", "train", "last.pt", "without training state",
      "start a new run")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    return ["train", c.spec(store=c.store), "--run-dir", _run_copy(c, "best.pt"), "--resume", "--steps", "6",
            "--device", "cpu"]  # fmt: skip


@case("train: --allow-changes without --resume", "train", "--allow-changes", "--resume")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--steps", "2", "--allow-changes", "--device", "cpu"]


@case("train: --arch-kwargs with a negative width", "train", "--arch-kwargs", "width1", "-5")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--steps", "2", "--arch-kwargs", '{"width1": -5}',
            "--device", "cpu"]  # fmt: skip


@case("train: --arch-kwargs too large for the memory", "train", "--arch-kwargs", "parameters", "memory")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--steps", "2", "--arch-kwargs", '{"width2": 1000000}',
            "--device", "cpu"]  # fmt: skip


# --- smaller problems of issue 22.10 and the internal errors of issue 27.2 ---
@case("train: --max-samples beyond the store", "train", "--max-samples 1000", "split 'train'", "holds only 10")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--max-samples", "1000", "--device", "cpu"]


@case("train: --valid-samples beyond the store", "train", "--valid-samples 50", "split 'valid'", "holds only 6")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--valid-samples", "50", "--device", "cpu"]


@case("train: --arch-kwargs with a key given twice", "train", "--arch-kwargs", "'width1'", "given twice")
def _(c: Ctx) -> list[Any]:
    return ["train", c.store, "--run-dir", c.tmp / "run", "--arch-kwargs", '{"width1": 4, "width1": 8}',
            "--device", "cpu"]  # fmt: skip


@case("ism: --base-kwargs with a key given twice", "ism", "--base-kwargs", "'channels'", "given twice")
def _(c: Ctx) -> list[Any]:
    kwargs = DEMO_KWARGS_JSON[:-1] + ', "channels": 4}'
    return ["ism", "--base", "demo", "--base-kwargs", kwargs, "--region", "chr7:3000", "--genome", c.genome,
            "--out", c.tmp / "x.npz"]  # fmt: skip


@case("distill: spec with a leading-zero integer (YAML 1.1 octal)", "distill", "'seq_len'", "0120", "octal", "80")
def _(c: Ctx) -> list[Any]:
    spec = c.spec()
    spec.write_text(spec.read_text().replace("seq_len: 80", "seq_len: 0120"))  # octal 0120 is 80: it would run
    return ["distill", spec, "--device", "cpu"]


@case("train: spec with a base-60 integer", "train", "'steps'", "1:20", "base 60")
def _(c: Ctx) -> list[Any]:
    spec = c.spec()
    spec.write_text(spec.read_text().replace("steps: 4", "steps: 1:20"))
    return ["train", spec, "--run-dir", c.tmp / "run", "--device", "cpu"]


@case("store verify: damaged completion marker", "store verify", "train: unit 1", "completion marker")
def _(c: Ctx) -> list[Any]:
    store = c.tmp / "s.zarr"
    shutil.copytree(c.store, store)
    marker = store / "train/complete/c/1/0"
    marker.write_bytes(marker.read_bytes()[:-1] + bytes([marker.read_bytes()[-1] ^ 0x5A]))
    return ["store", "verify", store]


@case("train: store with a damaged completion marker", "train", "'train' unit 1", "completion marker",
      "train/complete/c/1/0")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    store = c.tmp / "s.zarr"
    shutil.copytree(c.store, store)
    marker = store / "train/complete/c/1/0"
    marker.write_bytes(marker.read_bytes()[:-1] + bytes([marker.read_bytes()[-1] ^ 0x5A]))
    return ["train", store, "--run-dir", c.tmp / "run", "--steps", "2", "--device", "cpu"]


@case("train: --resume with a metrics.csv of random bytes", "train", "metrics.csv", "damaged", "not UTF-8",
      "move it aside")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    run = _run_copy(c)
    (run / "metrics.csv").write_bytes(np.random.default_rng(0).integers(128, 256, 500, dtype=np.uint8).tobytes())
    return ["train", c.spec(store=c.store), "--run-dir", run, "--resume", "--steps", "6", "--device", "cpu"]


def _indexed_vcf(c: Ctx) -> Path:
    import pysam

    path = c.tmp / "v.vcf"
    path.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr7,length=7956>\n"
                    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nchr7\t3000\t.\tA\tG\t.\t.\t.\n")  # fmt: skip
    pysam.tabix_compress(str(path), str(path) + ".gz")
    pysam.tabix_index(str(path) + ".gz", preset="vcf")
    return Path(str(path) + ".gz")


@case("score-vcf: --region position past 64 bits", "score-vcf", "--region", "99999999999999999999", "out of range")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", _indexed_vcf(c), "--out", c.tmp / "s.tsv",
            "--region", "chr7:1-99999999999999999999"]  # fmt: skip


@case("lookup: --region position past 64 bits", "lookup", "--region", "99999999999999999999", "out of range")
def _(c: Ctx) -> list[Any]:
    out = c.tmp / "cat.zarr"
    ok("catalogue", "--checkpoint", c.ckpt, "--out", out, "--region", "chr7:3001-3040", "--device", "cpu")
    return ["lookup", out, "--region", "chr7:1-99999999999999999999", "--out", c.tmp / "l.tsv"]


@case("predict: CUDA out of memory", "predict", "out of memory", "smaller batches", "--batch-size")
def _(c: Ctx) -> list[Any]:
    import pipeline.apply.predict as predict

    def full(*args: Any, **kwargs: Any) -> Any:  # what torch raises when the GPU's memory is exhausted
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    c.mp.setattr(predict, "multiplexer_effects", full)
    return ["predict", "--checkpoint", c.ckpt, "--region", "chr7:3000", "--out", c.tmp / "x.zarr",
            "--batch-size", "1000000"]  # fmt: skip


# --- plot ----------------------------------------------------------------------------------------
@case("plot: truncated effects file", "plot", "truncated_pred.npz", "not an effects file")
def _(c: Ctx) -> list[Any]:
    return ["plot", c.assets["truncated_pred.npz"], "--out", c.tmp / "p.png"]


@case("plot: --index out of range", "plot", "--index 3", "out of range")
def _(c: Ctx) -> list[Any]:
    return ["plot", c.assets["pred.npz"], "--index", "3", "--out", c.tmp / "p.png"]


@case("plot: effects file missing", "plot", "none.npz")
def _(c: Ctx) -> list[Any]:
    return ["plot", c.tmp / "none.npz", "--out", c.tmp / "p.png"]


@case("plot: unknown target name", "plot", "no_such_profile")
def _(c: Ctx) -> list[Any]:
    return ["plot", c.assets["pred.npz"], "--target", "no_such_profile", "--out", c.tmp / "p.png"]


@case("plot: --compare holds another region", "plot", "chr7:3000")
def _(c: Ctx) -> list[Any]:
    return ["plot", c.assets["pred.npz"], "--compare", c.assets["ism_3001.npz"], "--out", c.tmp / "c.png"]


# --- background -----------------------------------------------------------------------------------
@case("background: a split the spec does not have", "background", "'nope'", "not a split")
def _(c: Ctx) -> list[Any]:
    return ["background", "--checkpoint", c.ckpt, "--split", "nope", "--out", c.tmp / "b.zarr"]


@case("background: fewer than 1,000 quantiles", "background", "--quantiles", "1000")
def _(c: Ctx) -> list[Any]:
    return ["background", "--checkpoint", c.ckpt, "--quantiles", "999", "--out", c.tmp / "b.zarr"]


@case("background: output is not .zarr", "background", "b.tsv", ".zarr")
def _(c: Ctx) -> list[Any]:
    return ["background", "--checkpoint", c.ckpt, "--chroms", "chr1", "--out", c.tmp / "b.tsv"]


@case("score-vcf: --background is not a background", "score-vcf", "not a background")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.assets["one.vcf"], "--background", c.genome,
            "--out", c.tmp / "s.tsv"]  # fmt: skip


# --- catalogue and lookup -------------------------------------------------------------------------
@case("catalogue: region past the contig's end", "catalogue", "chr1:1-999999999", "runs past the end")
def _(c: Ctx) -> list[Any]:
    return ["catalogue", "--checkpoint", c.ckpt, "--region", "chr1:1-999999999", "--out", c.tmp / "c.zarr"]


@case("catalogue: output is not .zarr", "catalogue", "c.tsv", ".zarr")
def _(c: Ctx) -> list[Any]:
    return ["catalogue", "--checkpoint", c.ckpt, "--chroms", "chr1", "--out", c.tmp / "c.tsv"]


@case("lookup: catalogue missing", "lookup", "none.zarr", "does not exist")
def _(c: Ctx) -> list[Any]:
    return ["lookup", c.tmp / "none.zarr", "--variant", "chr1:5:A>G", "--out", c.tmp / "l.tsv"]


@case("lookup: .vcf.gz output without --vcf", "lookup", "--vcf")
def _(c: Ctx) -> list[Any]:
    return ["lookup", c.tmp / "none.zarr", "--variant", "chr1:5:A>G", "--out", c.tmp / "l.vcf.gz"]


@case("lookup: --region past the contig's end", "lookup", "chr21:1-2000000000", "runs past the end", "2406 bp")
def _(c: Ctx) -> list[Any]:
    return ["lookup", c.assets["cat.zarr"], "--region", "chr21:1-2000000000", "--out", c.tmp / "l.tsv"]


@case("lookup: --region on a contig the catalogue lacks", "lookup", "chrUn", "not in the catalogue")
def _(c: Ctx) -> list[Any]:
    return ["lookup", c.assets["cat.zarr"], "--region", "chrUn:1-2000000000", "--out", c.tmp / "l.tsv"]


@case("lookup: --variant position of commas only", "lookup", "chr21:,,,:A>G", "chr:pos:REF>ALT")
def _(c: Ctx) -> list[Any]:
    return ["lookup", c.assets["cat.zarr"], "--variant", "chr21:,,,:A>G", "--out", c.tmp / "l.tsv"]


@case("lookup: --variant position past 32 bits", "lookup", "99999999999999999999", "chr:pos:REF>ALT")
def _(c: Ctx) -> list[Any]:
    return ["lookup", c.assets["cat.zarr"], "--variant", "chr21:99999999999999999999:A>G", "--out", c.tmp / "l.zarr"]


@case("lookup: a VCF ID that is not UTF-8", "lookup", "record 1", "not UTF-8", "0xff")
def _(c: Ctx) -> list[Any]:
    (c.tmp / "id.vcf").write_bytes(b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                                   b"chr21\t700\trs\xff\xfe\tA\tG\t.\t.\t.\n")  # fmt: skip
    return ["lookup", c.assets["cat.zarr"], "--vcf", c.tmp / "id.vcf", "--out", c.tmp / "l.tsv"]


def _damaged_catalogue(c: Ctx, harm: Callable[[Path], None]) -> Path:
    """A copy of the matrix's catalogue in the case folder, damaged by ``harm(copy)``."""
    copy = c.tmp / "cat.zarr"
    shutil.copytree(c.assets["cat.zarr"], copy)
    harm(copy)
    return copy


EFFECTS_SHARD = "c0/effects/c/0/0/0"


@case("lookup: a flipped byte in an effects chunk", "lookup", "chr21 unit 0", "effects", "cannot be read")
def _(c: Ctx) -> list[Any]:
    cat = _damaged_catalogue(c, lambda p: flip_byte(p / EFFECTS_SHARD, 20))
    return ["lookup", cat, "--region", "chr21:700-701", "--out", c.tmp / "l.tsv"]


@case("lookup: a flipped byte in ref", "lookup", "chr21 unit 0", "ref of positions", "cannot be read")
def _(c: Ctx) -> list[Any]:
    cat = _damaged_catalogue(c, lambda p: flip_byte(p / "c0/ref/c/0", 10))
    return ["lookup", cat, "--region", "chr21:700-701", "--out", c.tmp / "l.tsv"]


@case("lookup: a deleted shard", "lookup", "chr21 unit 0", "shard file of effects", "is missing")
def _(c: Ctx) -> list[Any]:
    cat = _damaged_catalogue(c, lambda p: (p / EFFECTS_SHARD).unlink())
    return ["lookup", cat, "--region", "chr21:700-701", "--out", c.tmp / "l.tsv"]


@case("lookup: a flipped byte in a shard index", "lookup", "chr21 unit 0", "checksum do not match")
def _(c: Ctx) -> list[Any]:
    cat = _damaged_catalogue(c, lambda p: flip_byte(p / EFFECTS_SHARD, -10))
    return ["lookup", cat, "--region", "chr21:700-701", "--out", c.tmp / "l.tsv"]


@case("lookup: a format-1 catalogue with a flipped byte", "lookup", "chr21 unit 0", "effects")
def _(c: Ctx) -> list[Any]:
    cat = _damaged_catalogue(c, lambda p: (make_format1(p), flip_byte(p / EFFECTS_SHARD, 20)))
    return ["lookup", cat, "--region", "chr21:700-701", "--out", c.tmp / "l.tsv"]


@case("store verify: a catalogue with a deleted shard", "store verify", "chr21 unit 0", "is missing")
def _(c: Ctx) -> list[Any]:
    return ["store", "verify", _damaged_catalogue(c, lambda p: (p / "c0/max_abs/c/0/0").unlink())]


@case("catalogue: resume with another --batch-size", "catalogue", "batch_size", "--batch-size 8")
def _(c: Ctx) -> list[Any]:
    cat = _damaged_catalogue(c, lambda p: None)
    return ["catalogue", "--checkpoint", c.ckpt, "--region", CATALOGUED, "--batch-size", "3", "--out", cat]


@case("catalogue: resume of a format-1 catalogue", "catalogue", "format 1", "multiplexer store upgrade")
def _(c: Ctx) -> list[Any]:
    return ["catalogue", "--checkpoint", c.ckpt, "--region", CATALOGUED, "--out", _damaged_catalogue(c, make_format1)]


@case("catalogue export: an incomplete catalogue", "catalogue export", "is not complete", "chr21 unit 0",
      "multiplexer catalogue")  # fmt: skip
def _(c: Ctx) -> list[Any]:
    cat = _damaged_catalogue(c, lambda p: zarr.open_array(str(p / "c0/complete"), mode="r+").__setitem__(0, 0))
    return ["catalogue", "export", cat, "--out", c.tmp / "S.tsv.gz"]


@case("catalogue export: a flipped byte in an effects chunk", "catalogue export", "chr21 unit 0", "cannot be read",
      allow_new=("S.tsv.gz.parts/",))  # fmt: skip
def _(c: Ctx) -> list[Any]:
    cat = _damaged_catalogue(c, lambda p: flip_byte(p / EFFECTS_SHARD, 20))
    return ["catalogue", "export", cat, "--out", c.tmp / "S.tsv.gz"]


@case("catalogue export: not .tsv.gz or .parquet", "catalogue export", ".tsv.gz or .parquet", "S.tsv")
def _(c: Ctx) -> list[Any]:
    return ["catalogue", "export", c.assets["cat.zarr"], "--out", c.tmp / "S.tsv"]


@case("catalogue export: .parquet without pyarrow", "catalogue export", "needs pyarrow", "multiplexer[tables]")
def _(c: Ctx) -> list[Any]:
    c.mp.setitem(sys.modules, "pyarrow", None)
    c.mp.setitem(sys.modules, "pyarrow.parquet", None)
    return ["catalogue", "export", c.assets["cat.zarr"], "--out", c.tmp / "S.parquet"]


@case("catalogue export: --top-k above the stored targets", "catalogue export", "--top-k 9", "at most 4")
def _(c: Ctx) -> list[Any]:
    return ["catalogue", "export", c.assets["cat.zarr"], "--out", c.tmp / "S.parquet", "--top-k", "9"]


@case("catalogue: one of its own options before export", "catalogue", "--region", "itself")
def _(c: Ctx) -> list[Any]:
    return ["catalogue", "--region", CATALOGUED, "export", c.assets["cat.zarr"], "--out", c.tmp / "S.tsv.gz"]


@case("score-vcf: .parquet without pyarrow", "score-vcf", "needs pyarrow", "multiplexer[tables]")
def _(c: Ctx) -> list[Any]:
    c.mp.setitem(sys.modules, "pyarrow", None)
    vcf = c.tmp / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\nchr21\t700\t.\tA\tG\n")
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", vcf, "--out", c.tmp / "s.parquet"]


@case("background: fewer than 1,000 quantile points", "background", "--quantiles", "1000")
def _(c: Ctx) -> list[Any]:
    return ["background", "--checkpoint", c.ckpt, "--out", c.tmp / "b.zarr", "--quantiles", "10"]


# --- compare ------------------------------------------------------------------------------------
@case("compare: a folder that is not a run", "compare", "not a run folder")
def _(c: Ctx) -> list[Any]:
    (c.tmp / "notrun").mkdir()
    return ["compare", c.tmp / "notrun", "--device", "cpu"]


# --- score-vcf -----------------------------------------------------------------------------------
@case("score-vcf: VCF missing", "score-vcf", "none.vcf", "does not exist")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.tmp / "none.vcf", "--out", c.tmp / "s.tsv"]


@case("score-vcf: malformed VCF", "score-vcf", "bad.vcf:2", "abc")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.assets["bad.vcf"], "--out", c.tmp / "s.tsv"]


@case("score-vcf: a VCF ID that is not UTF-8", "score-vcf", "id.vcf", "record 2", "not UTF-8", "0xff")
def _(c: Ctx) -> list[Any]:
    head = b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    (c.tmp / "id.vcf").write_bytes(head + b"chr7\t3000\t.\tA\tG\t.\t.\t.\nchr7\t3001\trs\xff\xfe\tA\tG\t.\t.\t.\n")
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.tmp / "id.vcf", "--out", c.tmp / "s.vcf.gz"]


@case("score-vcf --merge: the VCF changed after the parts", "score-vcf", "changed after the parts", "sha256")
def _(c: Ctx) -> list[Any]:
    vcf, out = c.tmp / "v.vcf", c.tmp / "s.tsv"
    vcf.write_text(c.assets["one.vcf"].read_text())
    (c.tmp / "s.tsv.parts").mkdir()
    (c.tmp / "s.tsv.parts/merge.lock").write_text(f"{os.uname().nodename} {os.getppid()}")  # a live merger
    ok("score-vcf", "--checkpoint", c.ckpt, "--vcf", vcf, "--out", out, "--device", "cpu", "--shard", "0/1")
    (c.tmp / "s.tsv.parts/merge.lock").unlink()
    vcf.write_text(vcf.read_text().replace("A\tG", "A\tC"))
    return ["score-vcf", "--merge", "--out", out]


@case("score-vcf: output is not .tsv", "score-vcf", "s.csv", ".tsv")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.assets["one.vcf"], "--out", c.tmp / "s.csv"]


@case("score-vcf: --region on a VCF without an index", "score-vcf", "one.vcf", "--region", "bcftools index", "tabix")
def _(c: Ctx) -> list[Any]:
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.assets["one.vcf"], "--out", c.tmp / "s.tsv",
            "--region", "chr7:1-5000"]  # fmt: skip


@case("score-vcf: only other chromosome names, --no-harmonise", "score-vcf", "no variant scored", "'7' for 'chr7'")
def _(c: Ctx) -> list[Any]:
    (c.tmp / "ensembl.vcf").write_text(c.assets["one.vcf"].read_text().replace("chr7", "7"))
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.tmp / "ensembl.vcf", "--out", c.tmp / "s.tsv",
            "--no-harmonise"]  # fmt: skip


@case("score-vcf: a BCF that is not one", "score-vcf", "junk.bcf", "not a valid VCF or BCF")
def _(c: Ctx) -> list[Any]:
    (c.tmp / "junk.bcf").write_bytes(b"BCF\x02\x02" + bytes(40))
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", c.tmp / "junk.bcf", "--out", c.tmp / "s.tsv"]


@case("score-vcf: --catalogue with a damaged chunk", "score-vcf", "chr21 unit 0", "effects", "cannot be read")
def _(c: Ctx) -> list[Any]:
    from pipeline.core.genome import Genome

    cat = _damaged_catalogue(c, lambda p: flip_byte(p / EFFECTS_SHARD, 20))
    ref = Genome(c.genome).fetch("chr21", 699, 700).upper()
    vcf = c.tmp / "v.vcf"
    vcf.write_text(
        f"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\nchr21\t700\t.\t{ref}\t{'A' if ref != 'A' else 'C'}\n"
    )
    return ["score-vcf", "--checkpoint", c.ckpt, "--vcf", vcf, "--catalogue", cat, "--out", c.tmp / "s.tsv"]


# ------------------------------------------------------------------------------------------------
# the tests
# ------------------------------------------------------------------------------------------------


def _leaf_commands(group: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    import click

    out: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out |= _leaf_commands(command, (*prefix, name))
            if command.invoke_without_command:  # `catalogue` runs itself too
                out.add((*prefix, name))
        else:
            out.add((*prefix, name))
    return out


def _allowed(path: Path, folder: Path, allow_new: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``allow_new`` (paths in ``folder``; ``"dir/"`` allows all below it)."""
    if folder not in path.parents:
        return False
    rel = path.relative_to(folder).as_posix()
    return any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in allow_new)


def test_the_matrix_covers_every_command():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.command for c in CASES} == _leaf_commands(cli)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, assets, genome_path, tiny_store, trained_run, write_spec, tmp_path, monkeypatch):
    c = Ctx(tmp_path, assets, genome_path, tiny_store, trained_run, monkeypatch, write_spec)
    try:
        args = case.build(c)
        assert tuple(map(str, args[: len(case.command)])) == case.command
        roots = (tmp_path, assets["root"], Path(tiny_store), trained_run, genome_path.parent)
        before = snapshot(*roots)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = invoke(*args)
        after = snapshot(*roots)

        assert_one_line_error(result, *case.expect, *c.expect)
        shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
        assert not shown, [f"{w.category.__name__}: {w.message}" for w in shown]  # each an extra stderr line

        changed = sorted(p for p in before if after.get(p) != before[p])
        assert not changed, f"existing data modified or removed: {changed}"
        new = sorted(p for p in set(after) - set(before) if not _allowed(Path(p), tmp_path, case.allow_new))
        assert not new, f"files left behind: {new}"
        if case.check is not None:
            case.check(c)
    finally:
        for folder in c.state.get("restore", []):
            folder.chmod(0o755)


def test_an_odd_window_length_is_not_a_bad_input(assets, genome, tmp_path):
    """L = 81: distill and ism follow the window convention (1-based ``pos - L//2 + 1 … pos + L - L//2``)."""
    from pipeline.apply.outputs import read_effects
    from pipeline.core.encoding import one_hot

    store = open_store(assets["l81.zarr"])
    assert store.seq_len == 81
    chrom, center = store.array("test", "chrom")[:], store.array("test", "center")[:]
    reference = store.array("test", "reference")[:]
    for k in range(len(center)):
        start = int(center[k]) - 40  # 0-based [pos - L//2, pos - L//2 + L)
        assert np.array_equal(reference[k], one_hot(genome.fetch(str(chrom[k]), start, start + 81)))
    out = tmp_path / "x.npz"
    result = invoke("ism", "--spec", assets["l81.zarr.yaml"], "--region", "chr7:3000", "--out", out)
    assert result.exit_code == 0, result.output
    data = read_effects(out)
    assert data["effects"].shape == (1, 4, 4, 81)
    assert np.array_equal(data["reference"][0], one_hot(genome.fetch("chr7", 3000 - 40, 3000 + 41)))
