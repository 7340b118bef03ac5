"""Skipped records from the text (issue 27, item 3): the fast path gives the per-record path's output.

A sites-only text VCF is read from its text, and a record skipped for its alleles, chromosome or
position travels as a tuple in a block (:class:`~pipeline.apply.variants.rows.SkippedRows`) instead of
a pysam record, a ``VcfRecord`` and a ``Row``. Every output format must hold the same bytes as the
per-record path (htslib, one ``Row`` per allele) gives for the same input: checked here over VCFs that
mix scored records with every kind of skip, in every mode, sharded and not, and over lines the text
path leaves to htslib.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pytest

import pipeline.apply.variants.score_vcf as score_module
import pipeline.apply.variants.writers as writers_module
from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.records import VcfRecord, VcfSource, parse_line, read_vcf, reads_as_text, text_lines
from pipeline.apply.variants.rows import Batcher, Group, Row, Rules, SkippedRows, expand
from pipeline.apply.variants.score_vcf import score_vcf
from pipeline.errors import UserError

HEAD = "##fileformat=VCFv4.2\n##contig=<ID=chr7,length=7956>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
OUTPUTS = ("s.tsv", "s.tsv.gz", "s.vcf.gz", "s.zarr")


def _records(genome, n: int, seed: int) -> list[str]:
    """``n`` records of every kind: SNVs (REF right, wrong, swapped), indels, MNVs, symbolic and missing
    ALTs, IUPAC REFs, REF equal to ALT, a chromosome the genome lacks, another spelling of one it has,
    positions past the end, multi-allelic records, empty ID and REF, lower case."""
    rng = np.random.default_rng(seed)
    seq = genome.fetch("chr7", 0, genome.length("chr7")).upper()
    lines = []
    for k in range(n):
        chrom = str(rng.choice(["chr7", "chr7", "chr7", "7", "chrUn", "chr8"]))
        pos = int(rng.integers(1, genome.length("chr7") + 40))
        base = seq[pos - 1] if pos <= len(seq) else "A"
        other = "C" if base != "C" else "G"
        ref, alt = [
            (base, other), (base, other), (other, base), ("A", "AC"), (base + "G", "TT"), ("A", "<DEL>"),
            (base, "."), ("R", "A"), (base, base), (base, f"{other},T"), (base, "*"), (base.lower(), other.lower()),
            ("", "G"), ("N", "A"), (base, "G,<*>"),
        ][k % 15]  # fmt: skip
        vid = "" if k % 17 == 0 else f"v{k}"
        lines.append(f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t.\tPASS\tDP={k}\n")
    chrom_order = {"chr7": 0, "7": 1, "chr8": 2, "chrUn": 3}
    return sorted(lines, key=lambda line: (chrom_order[line.split("\t")[0]], int(line.split("\t")[1])))


def _vcf(path: Path, lines: list[str], bgzip: bool = False) -> Path:
    path.write_text(HEAD + "".join(lines))
    if bgzip:
        pysam.tabix_compress(str(path), str(path) + ".gz", force=True)
        return Path(str(path) + ".gz")
    return path


def _tree(path: Path) -> dict[str, bytes]:
    """Every file's bytes (a gzip file's modification time set to 0: it holds when it was written)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    out = {}
    for p in files:
        data = p.read_bytes()
        if p.name.endswith(".tsv.gz"):
            data = data[:4] + b"\0\0\0\0" + data[8:]
        out[str(p.relative_to(path)) if path.is_dir() else p.name] = data
    return out


def _outputs(run: Path, vcf: Path, folder: Path, opts: dict, monkeypatch, fast: bool) -> dict[str, Any]:
    """Every output format of one ``score_vcf`` call each, by the text path or (``fast`` false) htslib's,
    and the summaries of the calls."""
    folder.mkdir()
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(score_module, "reads_as_text", lambda source: False)
        summaries = []
        for name in OUTPUTS:
            out = folder / name
            summary = score_vcf(str(run / "best.pt"), str(vcf), str(out), ScoreVcfOptions(device="cpu", **opts),
                                progress=False)  # fmt: skip
            summaries.append({k: v for k, v in vars(summary).items() if k not in ("out", "note")})
    found: dict[str, Any] = {name: _tree(folder / name) for name in OUTPUTS}
    found["summaries"] = summaries  # counts, examples, the first REF mismatch: the same too
    index = folder / "s.vcf.gz.tbi"
    found[index.name] = _tree(index) if index.is_file() else {}  # none for unsorted records
    return found


@pytest.mark.parametrize(
    "opts",
    [{}, {"mode": "centered"}, {"mode": "exact"}, {"ref_mismatch": "skip", "harmonise": False}],
    ids=["shared", "centered", "exact", "ref-skip-no-harmonise"],
)
def test_every_output_of_the_text_path_is_the_per_record_paths(tmp_path, trained_run, genome, monkeypatch, opts):
    """Chunks of 61 rows in the Zarr store (blocks of skipped rows end and begin inside them)."""
    monkeypatch.setattr(writers_module, "ZARR_CHUNK_BYTES", 2 * 4 * 61)
    vcf = _vcf(tmp_path / "v.vcf", _records(genome, 600, seed=1))
    assert reads_as_text(VcfSource(vcf))
    fast = _outputs(trained_run, vcf, tmp_path / "fast", opts, monkeypatch, fast=True)
    slow = _outputs(trained_run, vcf, tmp_path / "slow", opts, monkeypatch, fast=False)
    assert fast == slow
    rows = (tmp_path / "fast" / "s.tsv").read_text().splitlines()
    statuses = {line.split("\t")[9].split(" (")[0] for line in rows if not line.startswith(("#", "chrom"))}
    assert "scored" in statuses and len(statuses) >= 6  # scored rows among many kinds of skip


def test_with_values_and_a_background(tmp_path, trained_run, genome, monkeypatch):
    """``--values ref,alt --background``: the added columns and arrays of skipped rows are empty in both paths."""
    from pipeline.apply.variants.background import build_background
    from pipeline.apply.variants.options import BackgroundOptions

    background = str(tmp_path / "b.zarr")
    options = BackgroundOptions(windows=2, seed=1, values_per_window=1000, device="cpu", batch_size=4)
    build_background(str(trained_run / "best.pt"), background, options, progress=False)
    vcf = _vcf(tmp_path / "v.vcf", _records(genome, 400, seed=8))
    opts = {"values": "ref,alt", "background": background}
    fast = _outputs(trained_run, vcf, tmp_path / "fast", opts, monkeypatch, fast=True)
    assert fast == _outputs(trained_run, vcf, tmp_path / "slow", opts, monkeypatch, fast=False)
    assert {"ref_values/zarr.json", "alt_values/zarr.json", "q_values/zarr.json"} <= set(fast["s.zarr"])


def test_a_bgzipped_vcf_over_several_units_and_shards(tmp_path, trained_run, genome, monkeypatch):
    """2,500 records (three units), bgzipped: one process and two shards, text path and htslib's."""
    vcf = _vcf(tmp_path / "v.vcf", _records(genome, 2500, seed=2), bgzip=True)
    assert reads_as_text(VcfSource(vcf))
    fast = _outputs(trained_run, vcf, tmp_path / "fast", {}, monkeypatch, fast=True)
    slow = _outputs(trained_run, vcf, tmp_path / "slow", {}, monkeypatch, fast=False)
    assert fast == slow
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for shard in ("0/2", "1/2"):
        opts = ScoreVcfOptions(device="cpu", shard=shard)
        score_vcf(str(trained_run / "best.pt"), str(vcf), str(sharded / "s.tsv"), opts, progress=False)
    assert _tree(sharded / "s.tsv") == fast["s.tsv"]


def test_lines_the_text_path_leaves_to_htslib(tmp_path, trained_run, genome, monkeypatch):
    """A POS with a leading zero, an empty ALT in a list, a line of 7 columns: htslib reads on from there
    (the same rows, or its error); a VCF with samples or not UTF-8 is read by htslib from the start."""
    lines = _records(genome, 300, seed=3)
    odd = [*lines[:100], "chr7\t0100\todd\tA\tAC\t.\t.\t.\n", *lines[100:150], "chr7\t200\tgap\tA\tG,,T\t.\t.\t.\n",
           *lines[150:]]  # fmt: skip
    vcf = _vcf(tmp_path / "v.vcf", odd)
    assert _outputs(trained_run, vcf, tmp_path / "fast", {}, monkeypatch, fast=True) == _outputs(
        trained_run, vcf, tmp_path / "slow", {}, monkeypatch, fast=False
    )
    short = _vcf(tmp_path / "short.vcf", [*lines[:20], "chr7\t100\tx\tA\tG\t.\t.\n", *lines[20:]])
    for fast in (True, False):
        with monkeypatch.context() as m, pytest.raises(UserError) as caught:
            if not fast:
                m.setattr(score_module, "reads_as_text", lambda source: False)
            score_vcf(str(trained_run / "best.pt"), str(short), str(tmp_path / f"e{fast}.tsv"),
                      ScoreVcfOptions(device="cpu"), progress=False)  # fmt: skip
        if fast:
            first = str(caught.value)
    assert str(caught.value) == first and "short.vcf:24" in first
    samples = tmp_path / "samples.vcf"
    samples.write_text(HEAD.replace("INFO\n", "INFO\tFORMAT\tS1\n") + "chr7\t100\t.\tA\tG\t.\t.\t.\tGT\t0/1\n")
    assert not reads_as_text(VcfSource(samples))
    assert not reads_as_text(VcfSource(vcf, "chr7:1-100"))


def test_text_records_are_htslibs(tmp_path, genome):
    """:func:`text_lines` and :func:`parse_line` give the records :func:`read_vcf` gives (htslib), every
    one, when each line is plain; a block that is not UTF-8 ends the text."""
    lines = _records(genome, 500, seed=4)
    for bgzip in (False, True):
        vcf = _vcf(tmp_path / f"v{bgzip}.vcf", lines, bgzip)
        text = [r for block in text_lines(vcf) for r in block]
        assert all(block is not None for block in text_lines(vcf))
        parsed = [r for k, line in enumerate(text, start=1) for r in (parse_line(k, line) or [])]
        assert parsed == list(read_vcf(vcf))
    crlf = tmp_path / "crlf.vcf"  # CR LF line ends, no end after the last line
    crlf.write_bytes((HEAD + "".join(lines)).replace("\n", "\r\n").encode()[:-2])
    text = [r for block in text_lines(crlf) for r in block]
    assert [r for k, line in enumerate(text, start=1) for r in (parse_line(k, line) or [])] == list(read_vcf(crlf))
    bad = tmp_path / "bad.vcf"
    bad.write_bytes(HEAD.encode() + b"chr7\t5\t\xff\tA\tG\t.\t.\t.\n")
    assert list(text_lines(bad)) == [None]


def test_rules_skipped_gives_classify_answer(genome):
    """:meth:`Rules.skipped` against :meth:`Rules.classify` record by record: the same contig, REF check,
    match and skip when it answers; ``None`` only for records classify scores or skips for another
    reason (the centred window, the REF rule). Windows of 80 and 3,000 (longer than some chromosomes)."""
    rng = np.random.default_rng(5)
    chroms = ["chr7", "7", "chr21", "chrUn", "CHR8", "chrM", "21"]
    records = []
    for k in range(3000):
        pos = int(rng.integers(1, 9000))
        ref = "".join(rng.choice(list("ACGTNacgt"), size=int(rng.integers(1, 3))))
        alt = str(rng.choice(["A", "C", "G", "T", "AC", "<DEL>", ".", "N", "*", "g"]))
        records.append(VcfRecord(k + 1, chroms[k % len(chroms)], pos, ".", ref, alt, 0 if alt == "." else 1))
    for seq_len in (80, 3000):
        for harm, mismatch in ((True, "score"), (False, "skip")):
            for centred, indels in ((False, False), (True, False), (True, True)):
                rules = Rules(genome, seq_len, harm, mismatch, centred=centred, indels=indels)
                other = Rules(genome, seq_len, harm, mismatch, centred=centred, indels=indels)
                answered = 0
                for record in records:
                    got = rules.skipped(record.number, record.chrom, str(record.pos), "rs", record.ref, record.alt)
                    row, scoreable = other.classify(record)
                    if got is None:
                        reason = "" if row.skip is None else row.skip.kind
                        assert scoreable or reason.startswith(("too close", "REF ", "insertion"))
                        continue
                    answered += 1
                    assert not scoreable
                    assert SkippedRows([got]).rows().__next__() == replace(row, record=replace(row.record, id="rs"))
                assert answered > 1000


class _Scorer:
    """Marks groups done; records each batch's groups (their first positions)."""

    n_windows = 0

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def run(self, groups: list[Group]) -> None:
        if groups:  # an empty call scores nothing
            self.batches.append([g.first for g in groups])
        for g in groups:
            g.done = True


def test_a_block_of_skipped_rows_is_what_its_rows_one_by_one_are():
    """:meth:`Batcher.add_skipped` against :meth:`Batcher.add` of each row: the same rows leave in the
    same order and the scorer sees the same batches, also when the rows held pass ``max_rows``."""
    rng = np.random.default_rng(6)
    items: list[tuple[Row, bool] | list[Row]] = []
    pos = 0
    for k in range(400):
        pos += int(rng.integers(1, 30))
        if rng.random() < 0.3:
            items.append((Row(VcfRecord(k, "chr1", pos, ".", "A", "G")), True))
        else:
            n = int(rng.integers(1, 12))
            items.append([Row(VcfRecord(k, "chr1", pos + j, ".", "A", "AC")) for j in range(n)])
    for max_rows in (5, 16, 4096):
        one, blocks = _Scorer(), _Scorer()
        by_row, by_block = Batcher(one, 50, 3, max_rows), Batcher(blocks, 50, 3, max_rows)
        got_row: list = []
        got_block: list = []
        for item in items:
            if isinstance(item, tuple):  # a variant to score: one Row each (a row belongs to one group)
                got_row += by_row.add(item[0], True)
                got_block += by_block.add(Row(item[0].record), True)
                continue
            for row in item:
                got_row += by_row.add(row, False)
            tuples = [(r.record.number, r.record.chrom, str(r.record.pos), ".", "A", "AC", 1, "", "n/a", "n/a",
                       None) for r in item]  # fmt: skip
            got_block += by_block.add_skipped(SkippedRows(tuples))  # type: ignore[arg-type]
        got_row += by_row.finish()
        got_block += by_block.finish()
        assert one.batches == blocks.batches
        key = deque((r.record.number, r.record.pos) for r in expand(got_block))
        assert [(r.record.number, r.record.pos) for r in got_row] == list(key)
        assert by_block.held == by_row.held == 0 and len(got_row) == sum(
            len(x) if isinstance(x, list) else 1 for x in items
        )
