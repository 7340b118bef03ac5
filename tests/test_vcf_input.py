"""``score-vcf`` input through pysam: VCF, bgzipped VCF and BCF alike; ``--region``; multi-allelic
records split; chromosome names harmonised; REF checks; malformed files are one error line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pysam
import pysam.bcftools
import pytest
from helpers import assert_one_line_error, invoke

from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.records import VcfSource, read_vcf
from pipeline.apply.variants.score_vcf import read_scores, score_vcf
from pipeline.errors import UserError
from pipeline.models.motifs import DEMO_MOTIFS

N = 400  # length of chr17 and chrM


@pytest.fixture(scope="module")
def genome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A genome spelled the UCSC way: chr17 and chrM (400 bp each, demo motifs so effects are not 0)."""
    rng = np.random.default_rng(7)
    seqs = {}
    for name in ("chr17", "chrM"):
        seq = list("".join(rng.choice(list("ACGT"), size=N)))
        for k, at in enumerate(range(0, N - 10, 11)):
            motif = DEMO_MOTIFS[k % len(DEMO_MOTIFS)][1]
            seq[at : at + len(motif)] = list(motif)
        seqs[name] = "".join(seq)
    path = tmp_path_factory.mktemp("vcf_input_genome") / "g.fa"
    path.write_text(
        "".join(f">{n}\n" + "\n".join(s[i : i + 60] for i in range(0, N, 60)) + "\n" for n, s in seqs.items())
    )
    return path, seqs


@pytest.fixture(scope="module")
def checkpoint(genome, make_exact_checkpoint, tmp_path_factory) -> Path:
    return make_exact_checkpoint(tmp_path_factory.mktemp("vcf_input_ckpt") / "exact.pt", genome[0])


def alt_of(base: str, k: int = 0) -> str:
    return [b for b in "ACGT" if b != base][k]


HEADER = "##fileformat=VCFv4.2\n##contig=<ID={c1},length=400>\n##contig=<ID={c2},length=400>\n"
HEADER += "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def write_vcf(path: Path, lines: list[str], c1: str = "chr17", c2: str = "chrM") -> Path:
    path.write_text(HEADER.format(c1=c1, c2=c2) + "".join(line + "\n" for line in lines))
    return path


def line(chrom: str, pos: int, vid: str, ref: str, alt: str) -> str:
    return f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t.\tPASS\t."


def formats(vcf: Path) -> dict[str, Path]:
    """The same records as ``.vcf``, bgzipped ``.vcf.gz`` (with a ``.tbi``) and ``.bcf`` (with a ``.csi``)."""
    gz = Path(pysam.tabix_index(str(shutil.copy(vcf, vcf.with_name("calls.vcf"))), preset="vcf", force=True))
    bcf = vcf.with_name("calls.bcf")
    with pysam.VariantFile(str(vcf)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for record in src:
            dst.write(record)
    pysam.bcftools.index(str(bcf))
    return {"vcf": vcf, "vcf.gz": gz, "bcf": bcf}


@pytest.fixture
def calls(genome, tmp_path) -> Path:
    """Sorted calls on chr17 and chrM: SNVs, a multi-allelic record, an indel."""
    _, g = genome
    ref = lambda c, p: g[c][p - 1]  # noqa: E731
    lines = [
        line("chr17", 50, "a", ref("chr17", 50), alt_of(ref("chr17", 50))),
        line("chr17", 120, "multi", ref("chr17", 120), f"{alt_of(ref('chr17', 120))},{alt_of(ref('chr17', 120), 1)}"),
        line("chr17", 200, "indel", ref("chr17", 200), ref("chr17", 200) + "A"),
        line("chr17", 300, "b", ref("chr17", 300), alt_of(ref("chr17", 300))),
        line("chrM", 40, "m1", ref("chrM", 40), alt_of(ref("chrM", 40))),
        line("chrM", 250, "m2", ref("chrM", 250), alt_of(ref("chrM", 250), 2)),
    ]
    return write_vcf(tmp_path / "src.vcf", lines)


def score(checkpoint: Path, vcf: Path, out: Path, **kwargs) -> tuple[list[dict], object]:
    summary = score_vcf(str(checkpoint), str(vcf), str(out), ScoreVcfOptions(device="cpu", **kwargs), progress=False)
    return read_scores(out), summary


def test_vcf_vcf_gz_and_bcf_give_the_same_rows(checkpoint, calls, tmp_path):
    files = formats(calls)
    tables = {}
    for kind, path in files.items():
        rows, summary = score(checkpoint, path, tmp_path / f"{kind}.tsv")
        tables[kind] = rows
        assert summary.n_records == 7 and summary.n_scored == 6, kind
    assert tables["vcf"] == tables["vcf.gz"] == tables["bcf"]
    assert any(v for r in tables["vcf"] if r["status"] == "scored" for v in r["effects"].values())


@pytest.mark.parametrize("kind", ["vcf.gz", "bcf"])
def test_region_gives_exactly_the_records_inside(kind, checkpoint, calls, tmp_path):
    indexed = formats(calls)[kind]
    rows, _ = score(checkpoint, indexed, tmp_path / "r.tsv", region="chr17:100-300")
    assert [(r["id"], r["allele_index"]) for r in rows] == [("multi", 1), ("multi", 2), ("indel", 1), ("b", 1)]
    rows, _ = score(checkpoint, indexed, tmp_path / "m.tsv", region="chrM")
    assert [r["id"] for r in rows] == ["m1", "m2"]
    rows, _ = score(checkpoint, indexed, tmp_path / "e.tsv", region="chr17:301-400")
    assert rows == []


def test_region_needs_an_index(checkpoint, calls, tmp_path, capfd):
    args = ["score-vcf", "--checkpoint", checkpoint, "--vcf", calls, "--out", tmp_path / "s.tsv", "--device", "cpu"]
    assert_one_line_error(invoke(*args, "--region", "chr17:1-100"), "src.vcf", "no index", "bcftools index", "tabix")
    gz = formats(calls)["vcf.gz"]
    args[4] = gz
    assert_one_line_error(invoke(*args, "--region", "chr99:1-100"), "chr99", "calls.vcf.gz")
    assert capfd.readouterr().err == ""  # htslib said nothing
    assert not (tmp_path / "s.tsv").exists()


def test_multi_allelic_records_give_one_row_per_alt(checkpoint, calls, tmp_path):
    rows, _ = score(checkpoint, calls, tmp_path / "s.tsv")
    multi = [r for r in rows if r["id"] == "multi"]
    assert [r["allele_index"] for r in multi] == [1, 2]
    assert len({r["alt"] for r in multi}) == 2 and all(r["status"] == "scored" for r in multi)
    assert [r["id"] for r in rows] == ["a", "multi", "multi", "indel", "b", "m1", "m2"]  # VCF order
    records = list(read_vcf(VcfSource(calls)))
    assert [(r.number, r.allele_index) for r in records][:3] == [(1, 1), (2, 1), (2, 2)]


def test_chromosome_names_are_harmonised(checkpoint, calls, genome, tmp_path):
    ucsc, _ = score(checkpoint, calls, tmp_path / "ucsc.tsv")
    ensembl = tmp_path / "ensembl.vcf"
    text = calls.read_text().replace("chr17", "17").replace("chrM", "MT")
    ensembl.write_text(text)
    rows, summary = score(checkpoint, ensembl, tmp_path / "e.tsv")
    assert summary.n_harmonised == 7 and "harmonised the chromosome names of 7" in summary.line()
    assert [r["chrom"] for r in rows] == ["17"] * 5 + ["MT"] * 2  # as in the VCF
    assert [r["effects"] for r in rows] == [r["effects"] for r in ucsc]

    ensembl.write_text(text + line("chr17", 50, "ucsc", ucsc[0]["ref"], ucsc[0]["alt"]) + "\n")
    rows, summary = score(checkpoint, ensembl, tmp_path / "n.tsv", harmonise=False)
    assert summary.n_scored == 1 and summary.n_harmonised == 0 and summary.skipped["chromosome naming differs"] == 6
    naming = [r for r in rows if r["id"] != "indel"]  # the indel is skipped as an indel first
    assert all("is not in the genome, which has 'chr" in r["status"] for r in naming[:6])
    assert all("--no-harmonise" in r["status"] for r in naming[:6]) and rows[7]["status"] == "scored"
    assert rows[7]["chrom"] == "chr17" and None not in rows[7]["effects"].values()


def test_nothing_scored_for_naming_alone_is_an_error(checkpoint, calls, tmp_path):
    ensembl = tmp_path / "ensembl.vcf"
    ensembl.write_text(calls.read_text().replace("chr17", "17").replace("chrM", "MT"))
    out = tmp_path / "s.tsv"
    args = ["score-vcf", "--checkpoint", checkpoint, "--vcf", ensembl, "--out", out, "--device", "cpu"]
    assert_one_line_error(invoke(*args, "--no-harmonise"), "no variant scored", "--no-harmonise", "rename")
    assert not out.exists()
    result = invoke(*args)
    assert result.exit_code == 0 and "harmonised" in result.stdout


def test_ref_mismatch_and_swapped_alleles(checkpoint, genome, tmp_path):
    _, g = genome
    r50, r60, r70 = g["chr17"][49], g["chr17"][59], g["chr17"][69]
    lines = [
        line("chr17", 50, "ok", r50, alt_of(r50)),
        line("chr17", 60, "swapped", alt_of(r60), r60),  # the genome has the ALT
        line("chr17", 70, "wrong", alt_of(r70), alt_of(r70, 1)),
    ]
    vcf = write_vcf(tmp_path / "s.vcf", lines)
    rows, summary = score(checkpoint, vcf, tmp_path / "score.tsv")
    assert [r["ref_match"] for r in rows] == ["yes", "swapped", "no"]
    assert [r["status"] for r in rows] == ["scored"] * 3 and summary.n_mismatch == 2
    rows, summary = score(checkpoint, vcf, tmp_path / "skip.tsv", ref_mismatch="skip")
    assert [r["ref_match"] for r in rows] == ["yes", "swapped", "no"]
    assert rows[0]["status"] == "scored"
    assert rows[1]["status"].startswith("skipped: REF and ALT swapped")
    assert rows[2]["status"].startswith(f"skipped: REF is not the genome's base: the genome has {r70}")
    assert all(v is None for r in rows[1:] for v in r["effects"].values())
    with pytest.raises(UserError, match="--ref-mismatch"):
        score(checkpoint, vcf, tmp_path / "x.tsv", ref_mismatch="ignore")


@pytest.mark.parametrize("kind", ["vcf", "vcf.gz"])
def test_a_malformed_record_is_one_error_naming_the_line(kind, checkpoint, calls, tmp_path, capfd):
    """htslib cannot read past a POS that is not a number: one error naming the file and line."""
    text = calls.read_text().splitlines()
    assert "\t120\t" in text[5]
    text[5] = text[5].replace("\t120\t", "\tabc\t")  # the second record, line 6
    bad = tmp_path / "bad.vcf"
    bad.write_text("\n".join(text) + "\n")
    if kind == "vcf.gz":
        pysam.tabix_compress(str(bad), str(bad) + ".gz")
        bad = bad.with_name("bad.vcf.gz")
    out = tmp_path / "s.tsv"
    args = ["score-vcf", "--checkpoint", checkpoint, "--vcf", bad, "--out", out, "--device", "cpu"]
    assert_one_line_error(invoke(*args), f"{bad.name}:6", "abc", "malformed")
    assert capfd.readouterr().err == "" and not out.exists()


def test_not_a_vcf_is_one_error(checkpoint, tmp_path, capfd):
    junk = tmp_path / "junk.vcf"
    junk.write_bytes(b"\x00\x01 this is not a VCF\n" * 10)
    args = ["score-vcf", "--checkpoint", checkpoint, "--vcf", junk, "--out", tmp_path / "s.tsv", "--device", "cpu"]
    assert_one_line_error(invoke(*args), "junk.vcf:1", "malformed")  # no header: read as a minimal VCF
    (tmp_path / "junk.bcf").write_bytes(b"BCF\x02\x02" + b"\x00" * 40)
    args[4] = tmp_path / "junk.bcf"
    assert_one_line_error(invoke(*args), "junk.bcf", "not a valid VCF or BCF")
    assert capfd.readouterr().err == ""


def test_minimal_five_column_vcfs_are_still_read(tmp_path):
    """No ``##fileformat``, five columns: read through a normalised copy, as before."""
    vcf = tmp_path / "min.vcf"
    vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\nchr7\t3000\trs1\tA\tG,T\n")
    records = list(read_vcf(vcf))
    assert [(r.chrom, r.pos, r.id, r.ref, r.alt, r.allele_index) for r in records] == [
        ("chr7", 3000, "rs1", "A", "G", 1),
        ("chr7", 3000, "rs1", "A", "T", 2),
    ]
    with pytest.raises(UserError, match="--region needs"):
        list(read_vcf(VcfSource(vcf, "chr7:1-10")))


def test_a_region_past_a_32_bit_vcf_query_is_refused_by_the_options_and_the_command(tmp_path):
    """pysam passes query positions to htslib as 32-bit integers: the options refuse a larger one, so a
    library call is refused like the command line, before anything is read."""
    with pytest.raises(UserError, match="--region"):
        ScoreVcfOptions(region="chr1:1-5000000000")
    assert ScoreVcfOptions(region="chr1:1-2,000,000").region == "chr1:1-2,000,000"
    vcf = tmp_path / "a.vcf"
    vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\nchr1\t5\t.\tA\tG\n")
    result = invoke("score-vcf", "--checkpoint", vcf, "--vcf", vcf, "--region", "chr1:3000000000",
                    "--out", tmp_path / "o.tsv")  # fmt: skip
    assert_one_line_error(result, "--region")
