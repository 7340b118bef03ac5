"""The variants wing's registries: a new scoring mode is one class, a new output format is one writer class.

A toy mode (the window starts at the variant) and a toy writer (JSON lines) are registered here, through
:func:`register_scorer` and :func:`register_writer` only, and work end to end: the library call, the
command line (``--mode``, the output suffix), the semantics, ``--overwrite``. They are removed again
after each test, so the rest of the suite sees the built-in registries.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, invoke, ok

from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.rows import Group, Row
from pipeline.apply.variants.score_vcf import read_scores, score_vcf
from pipeline.apply.variants.scorers import SCORERS, MultiplexerScorer, register_scorer
from pipeline.apply.variants.semantics import WINDOWS
from pipeline.apply.variants.writers import WRITERS, OutputPlan, ScoreWriter, register_writer
from pipeline.core.encoding import ALPHABET, one_hot
from pipeline.core.genome import Genome
from pipeline.core.windows import center_of
from pipeline.errors import OutputExistsError
from pipeline.ism import mask_effects
from pipeline.models import load_checkpoint


class StartScorer(MultiplexerScorer):
    """Toy mode: the multiplexer window whose index 0 is the variant, shifted left to fit the chromosome."""

    name = "toy_start"
    window = "toy: the window whose index 0 is the variant, shifted to fit the chromosome"
    centred = False

    def first(self, group: Group) -> int:
        return min(group.first, self.genome.length(group.chrom) - self.L + 1)


class JsonLines(ScoreWriter):
    """Toy writer: a JSON header line (semantics, targets), then one JSON object per row."""

    suffixes = (".jsonl",)

    def __init__(self, path: Path, plan: OutputPlan) -> None:
        super().__init__(path, plan)
        self.handle = open(path, "w")
        head = {"semantics": plan.semantics.as_dict(), "targets": [plan.names[k] for k in plan.selection]}
        self.handle.write(json.dumps(head) + "\n")

    def write(self, row: Row) -> None:
        values = None if row.values is None else [float(v) for v in row.values[self.plan.selection]]
        r = row.record
        line = {"chrom": r.chrom, "pos": r.pos, "ref": r.ref, "alt": r.alt, "center": row.center, "values": values}
        self.handle.write(json.dumps({**line, "status": row.status}) + "\n")

    def close(self) -> None:
        self.handle.close()

    def discard(self) -> None:
        self.handle.close()

    @classmethod
    def recognises(cls, path: Path) -> bool:
        try:
            with open(path) as handle:
                return path.is_file() and "semantics" in json.loads(handle.readline())
        except (OSError, ValueError):
            return False


@pytest.fixture
def toys():
    """Register the toy mode and writer through the registries; remove them after the test."""
    register_scorer(StartScorer)
    register_writer(JsonLines)
    yield
    del SCORERS[StartScorer.name], WINDOWS[StartScorer.name], WRITERS[".jsonl"]


def _lines(path: Path) -> tuple[dict, list[dict]]:
    head, *rows = (json.loads(line) for line in path.read_text().splitlines())
    return head, rows


@pytest.fixture
def variants(genome_path: Path, tmp_path: Path) -> tuple[Path, list[tuple[str, int, str, str]]]:
    """SNVs of chr7: two mid-chromosome, the last base before the N run at its end, and one at its very
    last base (an ``N``: its window is shifted to fit, and it is skipped)."""
    g = Genome(genome_path)
    n = g.length("chr7")
    last = max(p for p in range(n - 200, n + 1) if g.fetch("chr7", p - 1, p).upper() in "ACGT")
    out = []
    for pos in (3000, 3002, last, n):
        ref = g.fetch("chr7", pos - 1, pos).upper()
        ref = ref if ref in "ACGT" else "A"
        out.append(("chr7", pos, ref, next(b for b in "ACGT" if b != ref)))
    path = tmp_path / "toy.vcf"
    path.write_text("#CHROM\tPOS\tID\tREF\tALT\n" + "".join(f"{c}\t{p}\t.\t{r}\t{a}\n" for c, p, r, a in out))
    return path, out


def test_a_registered_toy_mode_and_writer_score_end_to_end(toys, trained_run, genome_path, variants, tmp_path):
    vcf, records = variants
    ckpt = trained_run / "best.pt"
    opts = ScoreVcfOptions(mode="toy_start", genome=str(genome_path), device="cpu")
    out = tmp_path / "toy.jsonl"
    summary = score_vcf(str(ckpt), str(vcf), str(out), opts, progress=False)
    assert (summary.n_records, summary.n_scored) == (4, 3)
    head, rows = _lines(out)
    assert head["semantics"]["mode"] == "toy_start" and head["semantics"]["window"] == StartScorer.window
    model, meta = load_checkpoint(ckpt)
    L, g = int(meta["seq_len"]), Genome(genome_path)
    for row, (chrom, pos, _, alt) in zip(rows, records):
        first = min(pos, g.length(chrom) - L + 1)  # what the toy mode does, by hand
        assert (row["pos"], row["center"]) == (pos, center_of(first, L))
        if pos == g.length(chrom):  # shifted to fit, and at an N
            assert first < pos and row["status"].startswith("skipped: the genome has N") and row["values"] is None
            continue
        X = torch.from_numpy(one_hot(g.fetch(chrom, first - 1, first - 1 + L))[None]).float()
        with torch.no_grad():
            y = mask_effects(model(X), X)[0, :, ALPHABET.index(alt), pos - first]
        assert row["status"] == "scored"
        np.testing.assert_allclose(row["values"], y.numpy(), rtol=1e-5, atol=1e-7)
    # the same mode into a built-in format, and the toy format from the command line
    tsv = tmp_path / "toy.tsv"
    score_vcf(str(ckpt), str(vcf), str(tsv), opts, progress=False)
    for got, row in zip(read_scores(tsv), rows):
        effects = list(got["effects"].values())
        assert effects == [None] * 4 if row["values"] is None else np.allclose(effects, row["values"], rtol=1e-5)
    cli_out = tmp_path / "cli.jsonl"
    ok("score-vcf", "--checkpoint", ckpt, "--vcf", vcf, "--genome", genome_path, "--mode", "toy_start",
       "--out", cli_out, "--device", "cpu")  # fmt: skip
    assert _lines(cli_out)[1] == rows
    # --overwrite: the toy writer recognises its own output
    with pytest.raises(OutputExistsError):
        score_vcf(str(ckpt), str(vcf), str(out), opts, progress=False)
    score_vcf(str(ckpt), str(vcf), str(out), replace(opts, overwrite=True), progress=False)
    assert _lines(out)[1] == rows


def test_names_are_registered_once(toys):
    class Again(StartScorer):
        pass

    class Shared(StartScorer):
        name = "shared"

    class Tsv(JsonLines):
        suffixes = (".tsv",)

    register_scorer(StartScorer)  # the same class again: nothing changes
    for cls in (Again, Shared):
        with pytest.raises(ValueError, match="already registered"):
            register_scorer(cls)
    with pytest.raises(ValueError, match="already registered"):
        register_writer(Tsv)
    assert SCORERS[StartScorer.name] is StartScorer and WRITERS[".tsv"].__name__ == "TsvScores"


def test_an_unknown_mode_or_suffix_is_one_line_naming_the_registered_ones(trained_run, genome_path, variants, tmp_path):
    vcf, _ = variants
    base = ["score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--genome", genome_path]
    result = invoke(*base, "--mode", "toy_start", "--out", tmp_path / "a.tsv")
    assert_one_line_error(result, "shared, centered, exact")
    result = invoke(*base, "--out", tmp_path / "a.jsonl")
    assert_one_line_error(result, ".tsv, .tsv.gz, .vcf.gz, .zarr")
    result = invoke(*base, "--mode", "exact", "--centered", "--out", tmp_path / "a.tsv")
    assert_one_line_error(result, "--centered is --mode centered")
