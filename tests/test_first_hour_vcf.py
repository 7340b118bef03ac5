"""Issue 28, the variant commands: one REF rule for lookup and score-vcf, pipes (``--vcf -``, ``--out -``),
``--centered --catalogue``, runs that score nothing, lookup's errors, ``TOP_TARGET`` of all-zero scores,
and the catalogue's progress bar."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pysam
import pytest
import zarr
from helpers import BIN, PROCESS_TIMEOUT, assert_one_line_error, invoke, process_env

import pipeline.apply.variants.catalogue as catalogue_module
from pipeline.apply.variants.catalogue import build_catalogue
from pipeline.apply.variants.diagnose import closest_contig
from pipeline.apply.variants.lookup import lookup
from pipeline.apply.variants.options import CatalogueOptions, LookupOptions, ScoreVcfOptions
from pipeline.apply.variants.score_vcf import read_scores, score_vcf
from pipeline.core.progress import Bar
from pipeline.errors import UserError

L = 80
STRIDE = 20
N = 700
GI = "gi|9626243|ref|NC_001416.1|"


@pytest.fixture(scope="module")
def genome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """chrA (700 random bases) and chrB (300)."""
    rng = np.random.default_rng(28)
    seq = "".join(rng.choice(list("ACGT"), size=N))
    other = "".join(rng.choice(list("ACGT"), size=300))
    path = tmp_path_factory.mktemp("g28") / "g.fa"
    path.write_text(f">chrA\n{seq}\n>chrB\n{other}\n")
    return path, seq


@pytest.fixture(scope="module")
def built(genome, trained_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = genome
    out = tmp_path_factory.mktemp("cat28") / "cat.zarr"
    opts = CatalogueOptions(genome=str(path), device="cpu", stride=STRIDE, regions=("chrA:1-700",))
    build_catalogue(str(trained_run / "best.pt"), str(out), opts, progress=False)
    return out


def write_vcf(path: Path, records: list[tuple[str, int, str, str]]) -> Path:
    body = "".join(f"{c}\t{p}\tv{k}\t{r}\t{a}\t.\t.\t.\n" for k, (c, p, r, a) in enumerate(records))
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + body)
    return path


def other(base: str, *avoid: str) -> str:
    return next(b for b in "ACGT" if b != base.upper() and b not in avoid)


def every_kind(seq: str) -> list[tuple[str, int, str, str]]:
    """SNVs, MNVs, insertions and deletions, each with the genome's REF and with a wrong one (and a
    swapped SNV), at positions whose REF lies inside chrA."""
    g = seq.upper()
    out = []
    for p in range(100, 600, 40):
        ref1 = g[p - 1]
        wrong1 = other(ref1)
        wrong2 = other(g[p + 4]) + g[p + 5]
        out += [
            ("chrA", p, ref1, other(ref1)),  # SNV
            ("chrA", p + 1, wrong1, other(wrong1, ref1)),  # SNV, wrong REF
            ("chrA", p + 2, other(g[p + 1]), g[p + 1]),  # SNV, REF and ALT swapped
            ("chrA", p + 3, g[p + 2 : p + 4], other(g[p + 2]) + other(g[p + 3])),  # MNV (TG>AA)
            ("chrA", p + 5, wrong2, other(wrong2[0], g[p + 4]) + other(wrong2[1])),  # MNV, wrong REF
            ("chrA", p + 7, g[p + 6], g[p + 6] + "CA"),  # insertion
            ("chrA", p + 9, other(g[p + 8]), other(g[p + 8]) + "T"),  # insertion, wrong REF
            ("chrA", p + 11, g[p + 10 : p + 14], g[p + 10]),  # deletion (TTCT>T: not swapped)
            ("chrA", p + 16, g[p + 15] + other(g[p + 16]) + g[p + 17], g[p + 15]),  # deletion, wrong REF
        ]
    return out


def expected(seq: str, pos: int, ref: str, alt: str) -> tuple[str, str]:
    """The REF check written out independently: the genome's bases under the whole REF."""
    have = seq[pos - 1 : pos - 1 + len(ref)].upper()
    if have == ref:
        return "ok", "yes"
    swapped = have == alt
    return f"mismatch: genome has {have}" + (" (the ALT allele: REF and ALT may be swapped)" if swapped else ""), (
        "swapped" if swapped else "no"
    )


def test_lookup_and_score_vcf_check_ref_alike(genome, trained_run, built, tmp_path):
    path, seq = genome
    records = every_kind(seq)
    vcf = write_vcf(tmp_path / "kinds.vcf", records)
    scored, looked = tmp_path / "s.tsv", tmp_path / "l.tsv"
    score_vcf(str(trained_run / "best.pt"), str(vcf), str(scored), ScoreVcfOptions(genome=str(path), device="cpu"),
              progress=False)  # fmt: skip
    lookup(str(built), str(looked), LookupOptions(vcf=str(vcf)), progress=False)
    a, b = read_scores(scored), read_scores(looked)
    assert len(a) == len(b) == len(records)
    for (_, p, r, alt), x, y in zip(records, a, b):
        assert (x["ref_check"], x["ref_match"]) == (y["ref_check"], y["ref_match"]) == expected(seq, p, r, alt)
    matches = {row["ref_match"] for row in a}
    assert matches == {"yes", "no", "swapped"}
    deletions = [row for row in b if len(row["ref"]) == 4 and row["ref_check"] == "ok"]
    assert deletions and all(row["ref_match"] == "yes" for row in deletions)  # TTCT>T is not 'swapped'


# ------------------------------------------------------------------------------------------------ pipes


def shell(command: str) -> subprocess.CompletedProcess:
    env = {**process_env(), "PATH": f"{BIN}:{process_env().get('PATH', '')}"}
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT)  # fmt: skip


def snvs(seq: str) -> list[tuple[str, int, str, str]]:
    g = seq.upper()
    return [("chrA", p, g[p - 1], other(g[p - 1])) for p in range(50, 650, 37)] + [("chrA", 120, "A", "AT")]


@pytest.mark.processes
def test_score_vcf_and_lookup_read_stdin_and_write_stdout(genome, trained_run, built, tmp_path):
    path, seq = genome
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq))
    gz = tmp_path / "a.vcf.gz"
    pysam.tabix_compress(str(vcf), str(gz))
    ckpt = trained_run / "best.pt"
    common = f"--checkpoint {ckpt} --genome {path} --device cpu"
    reader = "bcftools view" if shutil.which("bcftools") else "cat"
    file_run = shell(f"multiplexer -q score-vcf {common} --vcf {vcf} --out {tmp_path / 'f.tsv'}")
    assert file_run.returncode == 0, file_run.stderr
    want = (tmp_path / "f.tsv").read_text()
    for source in (vcf, gz):
        piped = shell(f"{reader} {source} | multiplexer score-vcf {common} --vcf - --out -")
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout == want  # the rows only: progress and summary on stderr
        assert "scored 17 of 18 variants" in piped.stderr and "wrote standard output" in piped.stderr
    ok_vcf = shell(f"multiplexer -q score-vcf {common} --vcf {gz} --out {tmp_path / 'f.vcf.gz'}")
    assert ok_vcf.returncode == 0, ok_vcf.stderr
    piped = shell(f"cat {gz} | multiplexer -q score-vcf {common} --vcf - --out - --out-format vcf")
    assert piped.returncode == 0, piped.stderr
    (tmp_path / "p.vcf").write_text(piped.stdout)
    with pysam.VariantFile(str(tmp_path / "p.vcf")) as p, pysam.VariantFile(str(tmp_path / "f.vcf.gz")) as f:
        got, wanted = [dict(r.info) for r in p], [dict(r.info) for r in f]
    assert got == wanted and len(got) == 18
    looked = shell(f"cat {vcf} | multiplexer -q lookup {built} --vcf - --out -")
    assert looked.returncode == 0, looked.stderr
    assert lookup(str(built), str(tmp_path / "l.tsv"), LookupOptions(vcf=str(vcf)), progress=False).n_scored == 17
    assert looked.stdout == (tmp_path / "l.tsv").read_text() and "scored 17 of 18" in looked.stderr
    refused = shell(f"cat {vcf} | multiplexer -q score-vcf {common} --vcf - --out {tmp_path / 'x.tsv'} --shard 0/2")
    assert_one_line_error(refused, "stream", "--shard")
    assert not (tmp_path / "x.tsv").exists()


def test_streams_refuse_what_needs_a_file(genome, trained_run, tmp_path):
    path, seq = genome
    ckpt = str(trained_run / "best.pt")
    opts = {"genome": str(path), "device": "cpu"}
    with pytest.raises(UserError, match="--region needs an indexed VCF file"):
        score_vcf(ckpt, "-", str(tmp_path / "a.tsv"), ScoreVcfOptions(region="chrA:1-10", **opts), progress=False)
    with pytest.raises(UserError, match="torchrun need a VCF file"):
        score_vcf(ckpt, "-", str(tmp_path / "a.tsv"), ScoreVcfOptions(shard="0/2", **opts), progress=False)
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq))
    with pytest.raises(UserError, match="--out-format is for score-vcf --out -"):
        score_vcf(ckpt, str(vcf), str(tmp_path / "a.tsv"), ScoreVcfOptions(out_format="vcf", **opts), progress=False)
    assert_one_line_error(invoke("score-vcf", "--merge", "--out", "-"), "standard output")
    assert_one_line_error(
        invoke("score-vcf", "--checkpoint", ckpt, "--vcf", vcf, "--out", "-", "--shard", "0/2"), "standard output"
    )


# ------------------------------------------------------------------------------------------------ scoring nothing


def assert_error(result, *fragments: str) -> str:
    """:func:`assert_one_line_error`, with the warning that the test genome is not the model's set aside."""
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: genome")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_closest_contig():
    names = ["chrA", GI, "gi|1|ref|NC_000913.3|"]
    assert closest_contig("NC_001416.1", names) == GI
    assert closest_contig("NC_001416", names) == GI
    assert closest_contig("NC_000913.2", names) == "gi|1|ref|NC_000913.3|"
    assert closest_contig("gi|7|ref|chrA|", names) == "chrA"
    assert closest_contig("chra1", names) == "chrA"
    assert closest_contig("scaffold_99", names) is None


def test_a_run_that_scores_nothing_names_the_likely_cause(genome, trained_run, tmp_path):
    path, seq = genome
    ckpt = str(trained_run / "best.pt")
    gi_genome = tmp_path / "lambda.fa"
    gi_genome.write_text(f">{GI} Escherichia phage lambda\n{seq}\n")
    records = snvs(seq)
    accession = write_vcf(tmp_path / "acc.vcf", [("NC_001416.1", p, r, a) for _, p, r, a in records])
    out = tmp_path / "o.tsv"
    result = invoke("score-vcf", "--checkpoint", ckpt, "--vcf", accession, "--out", out, "--genome", gi_genome,
                    "--device", "cpu")  # fmt: skip
    assert_error(result, "no variant scored", "'NC_001416.1'", repr(GI))
    assert not out.exists()

    g = seq.upper()
    wrong = write_vcf(tmp_path / "wrong.vcf", [("chrA", p, other(g[p - 1]), g[p - 1]) for _, p, _, _ in records])
    result = invoke("score-vcf", "--checkpoint", ckpt, "--vcf", wrong, "--out", out, "--genome", path,
                    "--device", "cpu", "--ref-mismatch", "skip")  # fmt: skip
    assert_error(result, "no variant scored", "another assembly", "REF of")
    summary = score_vcf(ckpt, str(wrong), str(out), ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)
    assert summary.n_scored == len(records) and "another assembly" in summary.line()  # scored, with a warning

    far = write_vcf(tmp_path / "far.vcf", [("chrA", p + 10_000, r, a) for _, p, r, a in records])
    result = invoke("score-vcf", "--checkpoint", ckpt, "--vcf", far, "--out", tmp_path / "far.tsv", "--genome", path,
                    "--device", "cpu")  # fmt: skip
    assert_error(result, "no variant scored", "outside the genome's chromosomes", "chrA has 700 bp")

    empty = write_vcf(tmp_path / "empty.vcf", [])
    out = tmp_path / "empty.tsv"
    summary = score_vcf(ckpt, str(empty), str(out), ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)
    assert summary.n_records == 0 and out.exists()  # nothing to score is not a fault
    indels = write_vcf(tmp_path / "indels.vcf", [("chrA", p, r, r + "A") for _, p, r, _ in records])
    out = tmp_path / "indels.tsv"
    summary = score_vcf(ckpt, str(indels), str(out), ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)
    assert summary.n_scored == 0 and summary.skipped["indel"] == len(records) and out.exists()  # what the mode skips


def test_lookup_names_the_closest_catalogued_contig(built, tmp_path):
    vcf = write_vcf(tmp_path / "a.vcf", [("chrA_1", 10, "A", "G"), ("chrA_1", 11, "C", "G")])
    result = invoke("lookup", built, "--vcf", vcf, "--out", tmp_path / "o.tsv")
    assert_one_line_error(result, "no variant scored", "the catalogue", "'chrA'")


# ------------------------------------------------------------------------------------------------ small things


def test_lookup_errors_name_lookup_and_suggest_quoting(built, tmp_path):
    message = assert_one_line_error(invoke("lookup", built, "--variant", "chrA:10:A", "--out", tmp_path / "hit.txt"))
    assert "lookup output must end in" in message and "score-vcf" not in message
    message = assert_one_line_error(invoke("lookup", built, "--variant", "chrA:10:A", "--out", tmp_path / "hit.tsv"))
    assert "--variant 'chr8:1000000:A>G'" in message and "quoted" in message


def test_top_target_is_empty_when_every_score_is_0(genome, built, tmp_path, monkeypatch, trained_run):
    path, seq = genome
    g = seq.upper()
    vcf = write_vcf(tmp_path / "a.vcf", [("chrA", 200, other(g[199]), g[199]), ("chrA", 260, g[259], other(g[259]))])
    out = tmp_path / "l.vcf.gz"
    lookup(str(built), str(out), LookupOptions(vcf=str(vcf)), progress=False)  # the first: ALT is the genome's base
    with pysam.VariantFile(str(out)) as f:
        first, second = list(f)
    assert first.info["MAX_ABS"] == (0.0,) and first.info["TOP_TARGET"] == (".",)
    assert second.info["MAX_ABS"][0] > 0 and second.info["TOP_TARGET"][0].startswith("demo_")

    monkeypatch.setattr(catalogue_module, "mask_effects", lambda y, X: y * 0)  # every effect 0
    zero = tmp_path / "zero.zarr"
    opts = CatalogueOptions(genome=str(path), device="cpu", stride=STRIDE, regions=("chrA:1-100",))
    build_catalogue(str(trained_run / "best.pt"), str(zero), opts, progress=False)
    assert (zarr.open_group(str(zero), mode="r")["c0"]["top_target"][:100] == -1).all()
    assert (zarr.open_group(str(built), mode="r")["c0"]["top_target"][:100] >= 0).all()


def test_catalogue_bar_counts_positions_and_moves_within_a_unit(genome, trained_run, tmp_path, monkeypatch):
    path, _ = genome
    bars: list[Bar] = []
    updates: list[float] = []

    class Recorded(Bar):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            bars.append(self)

        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    def recorded(*, enabled: bool = True, **kw):
        return Recorded(**kw)

    monkeypatch.setattr(catalogue_module, "progress_bar", recorded)
    out = tmp_path / "c.zarr"
    regions = ("chrA:1-150", "chrA:401-700")
    opts = CatalogueOptions(genome=str(path), device="cpu", stride=STRIDE, regions=regions, batch_size=2)
    summary = build_catalogue(str(trained_run / "best.pt"), str(out), opts, progress=True)
    (bar,) = bars
    assert bar.total == 450 == summary.n_positions and bar.unit == "position"
    assert sum(updates) == pytest.approx(450)
    assert len(updates) > summary.n_computed  # batch by batch, not unit by unit


# ------------------------------------------------------------------------------------------- --centered --catalogue


def test_centered_catalogue_answers_only_centred_tile_windows(genome, trained_run, built, tmp_path):
    path, seq = genome
    g = seq.upper()
    positions = range(45, 655, 3)
    vcf = write_vcf(tmp_path / "c.vcf", [("chrA", p, g[p - 1], other(g[p - 1])) for p in positions])
    ckpt = str(trained_run / "best.pt")
    both, model = tmp_path / "both.tsv", tmp_path / "model.tsv"
    opts = {"genome": str(path), "device": "cpu", "mode": "centered"}
    summary = score_vcf(ckpt, str(vcf), str(both), ScoreVcfOptions(catalogue=str(built), **opts), progress=False)
    score_vcf(ckpt, str(vcf), str(model), ScoreVcfOptions(**opts), progress=False)
    a, b = read_scores(both), read_scores(model)

    def centred_tile(p: int) -> bool:  # the tile window of p (written out) has p at index L//2 - 1
        k = (p - 1) // STRIDE
        lo, hi = k * STRIDE, min((k + 1) * STRIDE, N)
        start = min(max(lo - (L - (hi - lo)) // 2, 0), N - L)
        return start + L // 2 == p

    answered = [p for p in positions if centred_tile(p)]
    assert answered and summary.n_catalogue == len(answered) < len(a)
    for x, y in zip(a, b):
        assert x["window_center"] == y["window_center"] == x["pos"]  # every value is a centred score
        np.testing.assert_allclose(list(x["effects"].values()), list(y["effects"].values()), rtol=2e-3, atol=1e-4)
    header = both.read_text().splitlines()[:12]
    assert any("only where a tile's window is the centred window" in line for line in header)


def test_a_stream_error_names_standard_input_and_the_copy_is_removed(genome, trained_run, tmp_path, monkeypatch):
    path, _ = genome
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello\n")))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # read TMPDIR again
    try:
        with pytest.raises(UserError, match=r"^standard input:1: 'hello'"):
            score_vcf(str(trained_run / "best.pt"), "-", str(tmp_path / "o.tsv"),
                      ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)  # fmt: skip
    finally:
        tempfile.tempdir = None
    assert not list(tmp_path.glob("multiplexer-stdin-*")) and not (tmp_path / "o.tsv").exists()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(UserError, match="the stream was empty"):
        score_vcf(str(trained_run / "best.pt"), "-", str(tmp_path / "o.tsv"),
                  ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)  # fmt: skip


def test_score_vcf_bar_counts_variants_as_they_finish(genome, trained_run, tmp_path, monkeypatch):
    path, seq = genome
    import pipeline.apply.variants.score_vcf as score_vcf_module

    updates: list[float] = []

    class Recorded(Bar):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(score_vcf_module, "progress_bar", lambda *, enabled=True, **kw: Recorded(**kw))
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq))
    opts = ScoreVcfOptions(genome=str(path), device="cpu", batch_size=1, group_span=1)
    summary = score_vcf(str(trained_run / "best.pt"), str(vcf), str(tmp_path / "o.tsv"), opts, progress=True)
    assert sum(updates) == summary.n_records and len(updates) > 1  # within the one unit of records
