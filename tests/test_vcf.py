"""``score-vcf``: grouping variants into windows, shifted windows at chromosome ends, every skip reason."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DEMO_KWARGS, assert_one_line_error, invoke

from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.score_vcf import COLUMNS, read_scores, read_vcf, score_vcf
from pipeline.core.encoding import one_hot
from pipeline.core.windows import fitted_first
from pipeline.errors import UserError
from pipeline.ism import log_fold, mask_effects
from pipeline.models import build_base, load_checkpoint
from pipeline.models.motifs import DEMO_MOTIFS

L = 80
CHR_A = 400
N_AT = 200  # 1-based position of an N in chrA


@pytest.fixture(scope="module")
def small_genome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A genome with chrA (400 bp, an N at 200) and chrShort (50 bp, shorter than the window)."""
    rng = np.random.default_rng(3)
    seq = list("".join(rng.choice(list("ACGT"), size=CHR_A)))
    for k, at in enumerate(range(0, CHR_A - 10, 13)):  # the demo model's motifs, so effects are not all 0
        motif = DEMO_MOTIFS[k % len(DEMO_MOTIFS)][1]
        seq[at : at + len(motif)] = list(motif)
    seq[N_AT - 1] = "N"
    seq[300:310] = [c.lower() for c in seq[300:310]]  # soft-masked bases are ordinary bases
    chr_a = "".join(seq)
    path = tmp_path_factory.mktemp("vcf_genome") / "small.fa"
    short = "".join(rng.choice(list("ACGT"), size=50))
    lines = [">chrA"] + [chr_a[i : i + 60] for i in range(0, CHR_A, 60)] + [">chrShort", short]
    path.write_text("\n".join(lines) + "\n")
    return path, chr_a, short


def other(base: str, *avoid: str) -> str:
    return next(b for b in "ACGT" if b != base.upper() and b not in avoid)


@pytest.fixture(scope="module")
def vcf_records(small_genome) -> list[tuple[str, int, str, str, str, str]]:
    """``(chrom, pos, id, ref, alt, expected status prefix)`` of the test VCF, in file order."""
    _, g, short = small_genome
    ref = lambda p: g[p - 1].upper()  # noqa: E731
    mismatch_ref = other(ref(170))
    return [
        ("chrA", 3, "near_start", ref(3), other(ref(3)), "scored"),  # window shifted to start at 1
        ("chrA", 398, "near_end", ref(398), other(ref(398)), "scored"),  # window shifted to end at 400
        ("chrA", 100, "left_edge", ref(100), other(ref(100)), "scored"),  # j = 0 of the window 100..179
        ("chrA", 179, "right_edge", ref(179), other(ref(179)), "scored"),  # j = 79 of the same window
        ("chrA", 150, "indel", g[149:151].upper(), ref(150), "skipped: indel"),
        ("chrA", 160, "multi", ref(160), f"{other(ref(160))},{other(ref(160), other(ref(160)))}", "scored"),
        ("chrA", 170, "mismatch", mismatch_ref, other(ref(170), mismatch_ref), "scored"),
        ("chrZ", 100, "absent", "A", "G", "skipped: chromosome 'chrZ' is not in the genome"),
        ("chrShort", 10, "short", short[9], other(short[9]), "skipped: chromosome chrShort (50 bp) is shorter"),
        ("chrA", N_AT, "at_n", "A", "G", "skipped: the genome has N"),
        ("chrA", 305, "soft_masked", ref(305), other(ref(305)), "scored"),
    ]


def write_vcf(path: Path, records, gz: bool = False) -> Path:
    text = "##fileformat=VCFv4.2\n##contig=<ID=chrA>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    text += "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\t.\n" for c, p, i, r, a, _ in records)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def per_alt(records):
    """The expected rows: a multi-allelic record gives one row per ALT (same ID)."""
    return [(c, p, i, r, a, s) for c, p, i, r, alts, s in records for a in alts.split(",")]


def check_rows(rows, records, genome_seq: str, effect_at) -> list[bool]:
    """Every row in VCF order with the right status; scored rows hold ``effect_at(start, alt, j)``.

    Returns, per scored row, whether any of its effects is nonzero.
    """
    nonzero = []
    records = per_alt(records)
    assert [(r["chrom"], r["pos"], r["id"]) for r in rows] == [(c, p, i) for c, p, i, *_ in records]
    for row, (_, pos, _, ref, alt, status) in zip(rows, records):
        assert row["status"].startswith(status), (row["id"], row["status"])
        assert row["ref"] == ref and row["alt"] == alt
        if status != "scored":
            assert all(v is None for v in row["effects"].values()), row["id"]
            continue
        center = row["window_center"]
        start = center - L // 2 + 1  # 1-based window start
        assert start >= 1 and start + L - 1 <= CHR_A  # the window fits in the chromosome
        j = pos - start
        assert 0 <= j < L
        expected = effect_at(genome_seq[start - 1 : start - 1 + L], alt, j)
        got = np.array(list(row["effects"].values()))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg=row["id"])
        nonzero.append(bool(np.abs(got).max() > 0))
    return nonzero


def window_of(rows, name: str) -> tuple[int, int]:
    row = next(r for r in rows if r["id"] == name)
    start = row["window_center"] - L // 2 + 1
    return start, row["pos"] - start


def test_score_vcf_with_an_exact_multiplexer(small_genome, vcf_records, make_exact_checkpoint, tmp_path):
    genome_path, g, _ = small_genome
    ckpt = make_exact_checkpoint(tmp_path / "exact.pt", genome_path)  # records the small genome
    vcf = write_vcf(tmp_path / "calls.vcf", vcf_records)
    summary = score_vcf(
        str(ckpt),
        str(vcf),
        str(tmp_path / "scores.tsv"),
        ScoreVcfOptions(device="cpu", batch_size=2, group_span=L),
        progress=False,
    )
    rows = read_scores(tmp_path / "scores.tsv")
    base = build_base("demo", **DEMO_KWARGS)

    def effect_at(window: str, alt: str, j: int) -> np.ndarray:
        """log-fold of the base model on the mutated window against the reference window, by hand."""
        mutated = window[:j] + alt + window[j + 1 :]
        with torch.no_grad():
            ref = base(torch.from_numpy(one_hot(window)[None]).float())
            var = base(torch.from_numpy(one_hot(mutated)[None]).float())
        return log_fold(var, ref)[0].numpy()

    nonzero = check_rows(rows, vcf_records, g, effect_at)
    # real effects, not columns of zeros (the demo base model's pooling ignores the last window positions,
    # so near_end and right_edge are exactly 0 here; the trained multiplexer below has effects everywhere)
    assert sum(nonzero) >= 3, nonzero
    assert window_of(rows, "near_start") == (1, 2)
    assert window_of(rows, "near_end") == (CHR_A - L + 1, L - 3)
    assert window_of(rows, "left_edge") == (100, 0) and window_of(rows, "right_edge") == (100, L - 1)
    assert window_of(rows, "mismatch") == (100, 70)  # grouped with the two edge variants

    by_id = {r["id"]: r for r in rows}
    assert by_id["mismatch"]["ref_check"] == f"mismatch: genome has {g[169].upper()}"
    assert by_id["left_edge"]["ref_check"] == "ok" and by_id["soft_masked"]["ref_check"] == "ok"
    assert by_id["indel"]["ref_check"] == "ok"  # the REF of a skipped indel is still checked
    assert by_id["at_n"]["ref_check"] == "mismatch: genome has N" and by_id["short"]["ref_check"] == "ok"
    assert by_id["absent"]["ref_check"] == "n/a" and by_id["absent"]["window_center"] is None
    multi = [r for r in rows if r["id"] == "multi"]  # one row per ALT, numbered as bcftools does
    alts = next(x[4] for x in vcf_records if x[2] == "multi").split(",")
    assert [(r["allele_index"], r["alt"]) for r in multi] == [(1, alts[0]), (2, alts[1])]
    assert window_of(rows, "multi") == (100, 60)  # both ALTs share the edge variants' window
    assert by_id["mismatch"]["ref_match"] == "no" and by_id["left_edge"]["ref_match"] == "yes"
    assert by_id["absent"]["ref_match"] == "n/a" and by_id["at_n"]["ref_match"] == "no"
    assert summary.n_records == len(vcf_records) + 1 and summary.n_scored == 8 and summary.n_mismatch == 2
    assert summary.n_windows == 5  # near_start, near_end, 100..179, the N position, soft_masked
    assert summary.skipped == {
        "indel": 1,
        "chromosome not in the genome": 1,
        "chromosome shorter than the window": 1,
        "the genome has N at this position": 1,
    }


def test_score_vcf_cli_with_a_trained_multiplexer(trained_run, small_genome, vcf_records, tmp_path):
    """Through the CLI: gzipped VCF, --genome overriding the checkpoint's, exit code 0, summary line."""
    genome_path, g, _ = small_genome
    vcf = write_vcf(tmp_path / "calls.vcf.gz", vcf_records, gz=True)
    out = tmp_path / "scores.tsv.gz"
    args = ["score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", out, "--group-span", L]
    result = invoke(*args, "--genome", genome_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("scored 8 of 12 variants in 5 windows; 2 REF mismatches; skipped 4")
    assert "indel: 1" in line and "multi-allelic" not in line and str(out) in line
    with gzip.open(out, "rt") as handle:
        header = next(line for line in handle if not line.startswith("##")).rstrip("\n").split("\t")
    model, meta = load_checkpoint(trained_run / "best.pt")
    assert header == [*COLUMNS, *meta["target_names"]]

    def effect_at(window: str, alt: str, j: int) -> np.ndarray:
        X = torch.from_numpy(one_hot(window)[None]).float()
        with torch.no_grad():
            y = mask_effects(model(X), X)
        return y[0, :, "AGCT".index(alt), j].numpy()

    rows = read_scores(out)
    assert all(check_rows(rows, vcf_records, g, effect_at))

    assert_one_line_error(invoke(*args, "--genome", genome_path), "exists")  # the output is not replaced
    # one centred window per position with --group-span 1: the edge variants move to the middle
    out1 = tmp_path / "span1.tsv"
    args1 = ["score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", out1]
    result = invoke(*args1, "--genome", genome_path, "--group-span", "1")
    assert result.exit_code == 0 and "in 8 windows" in result.stdout  # the two ALTs at 160 share one
    rows1 = read_scores(out1)
    assert window_of(rows1, "left_edge")[1] == L // 2 - 1 and window_of(rows1, "right_edge")[1] == L // 2 - 1
    check_rows(rows1, vcf_records, g, effect_at)


def test_fitted_window_shifts_to_fit():
    assert fitted_first(100, 100, 1000, 80) == 61  # centred: index L//2 - 1 is the variant
    assert fitted_first(100, 179, 1000, 80) == 100
    assert fitted_first(3, 3, 1000, 80) == 1
    assert fitted_first(998, 998, 1000, 80) == 921
    with pytest.raises(ValueError):
        fitted_first(1, 81, 1000, 80)


def test_read_vcf_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        list(read_vcf(tmp_path / "none.vcf"))
    bad = tmp_path / "bad.vcf"
    bad.write_text("#CHROM\tPOS\tID\tREF\tALT\nchr1\t5\t.\tA\tG\nchr1\tfive\t.\tA\tG\n")
    with pytest.raises(UserError, match="bad.vcf:3: 'chr1.tfive.*malformed"):
        list(read_vcf(bad))
    bad.write_text("chr1\t5\t.\tA\n")
    with pytest.raises(UserError, match="bad.vcf:1: .*malformed"):
        list(read_vcf(bad))
    broken = tmp_path / "broken.vcf.gz"
    broken.write_bytes(gzip.compress(b"chr1\t5\t.\tA\tG\n" * 100)[:40])
    with pytest.raises(UserError, match="broken.vcf.gz"):
        list(read_vcf(broken))


def test_score_vcf_bad_inputs(trained_run, small_genome, tmp_path):
    genome_path, _, _ = small_genome
    vcf = write_vcf(tmp_path / "a.vcf", [("chrA", 50, ".", "A", "G", "")])
    ckpt = str(trained_run / "best.pt")
    with pytest.raises(UserError, match=r"\.tsv, \.tsv\.gz, \.vcf\.gz, \.zarr"):
        score_vcf(ckpt, str(vcf), str(tmp_path / "out.csv"), ScoreVcfOptions(genome=str(genome_path)), progress=False)
    with pytest.raises(UserError, match="group-span"):
        score_vcf(
            ckpt,
            str(vcf),
            str(tmp_path / "o.tsv"),
            ScoreVcfOptions(genome=str(genome_path), group_span=L + 1),
            progress=False,
        )
    with pytest.raises(UserError, match="missing.vcf"):
        score_vcf(ckpt, str(tmp_path / "missing.vcf"), str(tmp_path / "o.tsv"), progress=False)
    assert not (tmp_path / "o.tsv").exists()


def test_score_vcf_diff_is_alt_minus_ref(small_genome, vcf_records, make_exact_checkpoint, tmp_path):
    """``--diff`` with an exact multiplexer: each value is the base model's alt - ref for that variant."""
    genome_path, g, _ = small_genome
    ckpt = make_exact_checkpoint(tmp_path / "exact.pt", genome_path)
    vcf = write_vcf(tmp_path / "calls.vcf", vcf_records)
    score_vcf(str(ckpt), str(vcf), str(tmp_path / "d.tsv"), ScoreVcfOptions(diff=True), progress=False)
    base = build_base("demo", **DEMO_KWARGS)

    def effect_at(window: str, alt: str, j: int) -> np.ndarray:
        mutated = window[:j] + alt + window[j + 1 :]
        with torch.no_grad():
            ref = base(torch.from_numpy(one_hot(window)[None]).float())
            var = base(torch.from_numpy(one_hot(mutated)[None]).float())
        return (var - ref)[0].numpy()

    assert sum(check_rows(read_scores(tmp_path / "d.tsv"), vcf_records, g, effect_at)) >= 3
