"""Variant outputs under faults (issue 22, items 5-8; issue 27, item 3).

- a ``.vcf.gz`` output of a VCF that declares no contig, INFO or FILTER it uses, or that holds a
  symbolic ALT (``<DEL>``, with or without ``END``), is written (htslib used to exit the process
  inside ``bcf_translate``/``vcf_format``, leaving a staging folder), and the symbolic ALT is a
  skipped row in every output format;
- a sharded run's parts are refused, on resume and by ``--merge``, once the VCF's content changed
  (size and time kept; ALTs edited or records deleted);
- a second writer of one new output is refused while the first writes;
- the skipped-record fast paths (one name lookup per chromosome, REF checks from a block of the
  genome) give what the per-record functions give.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pysam
import pytest
import zarr
from helpers import assert_one_line_error, invoke, ok

import pipeline.apply.variants.writers as writers_module
from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.parts import parts_folder
from pipeline.apply.variants.records import VcfRecord
from pipeline.apply.variants.rows import Rules, genome_ref, harmonise, ref_check, skip_reason
from pipeline.apply.variants.score_vcf import read_scores, score_vcf
from pipeline.errors import UserError

HEAD = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def _score(run: Path, vcf: Path, out: Path, *extra: object) -> None:
    ok("score-vcf", "--checkpoint", run / "best.pt", "--vcf", vcf, "--out", out, "--device", "cpu", *extra)


def _body(records: list[str]) -> list[str]:
    return [r for r in records if not r.startswith("#")]


def test_a_vcf_gz_output_declares_what_the_vcf_does_not(tmp_path, trained_run, genome):
    """No ##contig, an undeclared INFO key and FILTER: written, the contigs with the genome's lengths,
    the scores those of the TSV output."""
    vcf = tmp_path / "v.vcf"
    vcf.write_text(
        HEAD + "chr7\t3000\trs1\tA\tG\t.\tPASS\tFOO=1\nchr7\t3005\t.\tC\tT\t.\tq10\t.\nchr8\t2000\t.\tA\tC\t.\t.\tBAR\n"
    )
    _score(trained_run, vcf, tmp_path / "s.vcf.gz")
    _score(trained_run, vcf, tmp_path / "s.tsv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tsv", "s.vcf.gz", "s.vcf.gz.tbi", "v.vcf"]
    with pysam.VariantFile(str(tmp_path / "s.vcf.gz")) as out:
        assert {name: out.header.contigs[name].length for name in out.header.contigs} == {
            "chr7": genome.length("chr7"),
            "chr8": genome.length("chr8"),
        }
        assert {"FOO", "BAR"} <= set(out.header.info) and "q10" in out.header.filters
        records = list(out)
    rows = read_scores(tmp_path / "s.tsv")
    assert [(r.chrom, r.pos, r.info["FOO"] if "FOO" in r.info else None) for r in records] == [
        ("chr7", 3000, "1"),
        ("chr7", 3005, None),
        ("chr8", 2000, None),
    ]
    for record, row in zip(records, rows):
        for name, value in row["effects"].items():
            assert record.info[f"MPX_{name}"][0] == pytest.approx(value, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("out_name", ["s.tsv", "s.vcf.gz", "s.zarr"])
def test_a_symbolic_alt_is_a_skipped_row_in_every_format(out_name, tmp_path, trained_run):
    vcf = tmp_path / "v.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chr7,length=7956>\n"
        '##INFO=<ID=SVLEN,Number=A,Type=Integer,Description="x">\n' + HEAD.split("\n", 1)[1]
        + "chr7\t3000\tdel\tA\t<DEL>\t.\tPASS\t.\nchr7\t3005\tsnv\tC\tT\t.\t.\t.\n"
        + "chr7\t3010\tdup\tA\t<DUP>,G\t.\t.\tSVLEN=50,.\n"
    )  # fmt: skip
    out = tmp_path / out_name
    _score(trained_run, vcf, out)
    if out_name == "s.tsv":
        status = [(r["id"], r["alt"], r["status"]) for r in read_scores(out)]
    elif out_name == "s.zarr":
        group = zarr.open_group(str(out), mode="r")
        status = list(zip(group["id"][:], group["alt"][:], group["status"][:]))
    else:
        with pysam.VariantFile(str(out)) as handle:
            status = [(r.id, a, s) for r in handle for a, s in zip(r.alts, r.info["MPX_STATUS"])]
    skipped = [(i, a) for i, a, s in status if s != "scored"]
    assert skipped == [("del", "<DEL>"), ("dup", "<DUP>")], status
    assert all("plain alternate allele" in s.replace("_", " ") for _, _, s in status if s != "scored")


def _parts_left(tmp_path: Path, run: Path, vcf: Path, out: Path) -> None:
    """Score ``vcf`` as shard 0/1 while another (live) process holds the merge: the parts stay."""
    folder = parts_folder(out)
    folder.mkdir()
    (folder / "merge.lock").write_text(f"{os.uname().nodename} {os.getppid()}")
    result = ok("score-vcf", "--checkpoint", run / "best.pt", "--vcf", vcf, "--out", out, "--device", "cpu",
                "--shard", "0/1")  # fmt: skip
    assert "another process is merging" in result.output
    (folder / "merge.lock").unlink()


def _same_size_and_time(path: Path, text: str) -> None:
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


VCF3 = HEAD + "chr7\t3000\ta\tA\tG\t.\t.\t.\nchr7\t3005\tb\tC\tT\t.\t.\t.\nchr8\t2000\tc\tA\tC\t.\t.\t.\n"


@pytest.mark.parametrize("out_name", ["s.tsv", "s.vcf.gz"])
def test_merge_refuses_a_vcf_whose_alts_changed(out_name, tmp_path, trained_run):
    vcf, out = tmp_path / "v.vcf", tmp_path / out_name
    vcf.write_text(VCF3)
    _parts_left(tmp_path, trained_run, vcf, out)
    _same_size_and_time(vcf, VCF3.replace("A\tG", "A\tC").replace("C\tT", "C\tA"))
    result = invoke("score-vcf", "--merge", "--out", out)
    assert_one_line_error(result, "changed after the parts were computed", "sha256")
    assert not out.exists() and (parts_folder(out) / "run.json").is_file()  # the parts are kept, not merged
    assert not (parts_folder(out) / "merge.lock").exists()


@pytest.mark.parametrize("out_name", ["s.tsv", "s.vcf.gz"])
def test_merge_refuses_a_vcf_whose_records_were_deleted(out_name, tmp_path, trained_run):
    vcf, out = tmp_path / "v.vcf", tmp_path / out_name
    vcf.write_text(VCF3)
    _parts_left(tmp_path, trained_run, vcf, out)
    vcf.write_text(HEAD + VCF3.splitlines(keepends=True)[2])
    result = invoke("score-vcf", "--merge", "--out", out)
    assert_one_line_error(result, "changed after the parts were computed")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder


def test_resume_refuses_a_vcf_whose_content_changed(tmp_path, trained_run):
    vcf, out = tmp_path / "v.vcf", tmp_path / "s.tsv"
    vcf.write_text(VCF3)
    _parts_left(tmp_path, trained_run, vcf, out)
    _same_size_and_time(vcf, VCF3.replace("A\tG", "A\tC"))
    result = invoke("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", out, "--device",
                    "cpu", "--shard", "0/1")  # fmt: skip
    assert_one_line_error(result, "another content of the VCF", "sha256")


def test_a_vcf_gz_writer_refuses_records_the_vcf_no_longer_has(tmp_path, trained_run, monkeypatch):
    """The input read again for a .vcf.gz output ends early (deleted between the passes): one line, not
    ``StopIteration``."""
    vcf, out = tmp_path / "v.vcf", tmp_path / "s.vcf.gz"
    vcf.write_text(VCF3)
    real = writers_module.raw_records

    def fewer(variants, source):
        return iter(list(real(variants, source))[:1])

    monkeypatch.setattr(writers_module, "raw_records", fewer)
    result = invoke("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", out, "--device", "cpu")
    assert_one_line_error(result, "ends at record 1", "changed while it was read")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.vcf"]


def test_a_second_writer_of_one_new_output_is_refused(tmp_path, trained_run, monkeypatch):
    """While one run writes ``s.tsv``, a second run to the same new output is refused in one line; the
    first one's output is the one published."""
    vcf, other, out = tmp_path / "v.vcf", tmp_path / "w.vcf", tmp_path / "s.tsv"
    vcf.write_text(VCF3)
    other.write_text(HEAD + "chr7\t3000\tother\tA\tG\t.\t.\t.\n")
    seen: list[str] = []
    real_write = writers_module.TsvScores.write

    def write(self, row):
        if not seen:
            seen.append("second")
            second = invoke("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", other, "--out", out,
                            "--device", "cpu")  # fmt: skip
            seen.append(assert_one_line_error(second, "another process", "is writing", "s.tsv"))
        real_write(self, row)

    monkeypatch.setattr(writers_module.TsvScores, "write", write)
    score_vcf(str(trained_run / "best.pt"), str(vcf), str(out), ScoreVcfOptions(device="cpu"), progress=False)
    assert len(seen) == 2
    assert [r["id"] for r in read_scores(out)] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tsv", "v.vcf", "w.vcf"]  # no lock left


def test_a_lock_of_a_dead_writer_is_taken_over(tmp_path, trained_run):
    from test_faults_outputs import dead_pid

    vcf, out = tmp_path / "v.vcf", tmp_path / "s.tsv"
    vcf.write_text(VCF3)
    writers_module.lock_path(out).write_text(f"{os.uname().nodename} {dead_pid()}")
    _score(trained_run, vcf, out)
    assert len(read_scores(out)) == 3 and not writers_module.lock_path(out).exists()


def test_the_fast_classification_gives_the_per_record_functions_answer(genome_path, genome):
    """:meth:`Rules.classify` (one name lookup per chromosome, REF from a block of the genome) against
    :func:`skip_reason` and :func:`genome_ref` record by record, over every kind of skip."""
    rng = np.random.default_rng(3)
    chroms = ["chr7", "7", "chr21", "chrUn", "CHR8", "chrM"]
    records = []
    for k in range(3000):
        chrom = chroms[k % len(chroms)]
        pos = int(rng.integers(-5, 9000))
        ref = "".join(rng.choice(list("ACGTN"), size=int(rng.integers(1, 3))))
        alt = str(rng.choice(["A", "C", "G", "T", "AC", "<DEL>", ".", "N"]))
        records.append(VcfRecord(k + 1, chrom, max(pos, 0), ".", ref, alt))
    for harm in (True, False):
        for centred, indels in ((False, False), (True, False), (True, True)):
            rules = Rules(genome, 80, harm, "skip", centred=centred, indels=indels)
            for record in records:
                row, scoreable = rules.classify(record)
                named = (harmonise(record, genome) or record) if harm else record
                expected = skip_reason(named, genome, 80, centred=centred, indels=indels)
                bases = genome_ref(named, genome)
                assert row.record == named
                assert row.check == ref_check(named, bases)
                if expected is not None:
                    assert row.skip == expected and not scoreable
                else:
                    assert scoreable == (row.match == "yes")


def test_a_vcf_gz_output_of_a_five_column_vcf_without_contigs(tmp_path, trained_run, genome):
    vcf = tmp_path / "v.vcf.gz"
    with gzip.open(vcf, "wt") as handle:  # plain gzip and five columns: read through a normalised copy
        handle.write("#CHROM\tPOS\tID\tREF\tALT\nchr7\t3000\t.\tA\tG\nchrUn\t5\t.\tA\tG\n")
    _score(trained_run, vcf, tmp_path / "s.vcf.gz")
    with pysam.VariantFile(str(tmp_path / "s.vcf.gz")) as out:
        assert out.header.contigs["chr7"].length == genome.length("chr7")
        assert "chrUn" in out.header.contigs and out.header.contigs["chrUn"].length is None
        assert [tuple(r.info["MPX_STATUS"]) for r in out] == [("scored",), ("chromosome_not_in_the_genome",)]


def test_a_record_that_is_not_utf8_is_named_after_the_good_ones(tmp_path):
    """The records before it are read; the error names the record and the byte."""
    from pipeline.apply.variants.records import read_vcf

    vcf = tmp_path / "v.vcf"
    vcf.write_bytes(HEAD.encode() + b"chr7\t3000\tok\tA\tG\t.\t.\t.\nchr7\t3001\trs\xff\xfe\tA\tG\t.\t.\t.\n")
    got = []
    with pytest.raises(UserError, match=r"record 2 is not UTF-8 text \(byte 0xff"):
        for record in read_vcf(vcf):
            got.append(record.id)
    assert got == ["ok"]
