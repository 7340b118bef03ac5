"""``--values ref,alt`` of ``score-vcf`` and ``lookup``: the base model's reference prediction behind each
score, and the alternative probability the score implies (``log_unfold``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
import zarr
from helpers import DEMO_KWARGS, TOY_MODELS, assert_one_line_error, invoke, ok
from test_vcf_modes import centred, make_checkpoint, other, snvs, write_vcf

from pipeline.apply.variants.lookup import lookup
from pipeline.apply.variants.options import LookupOptions, ScoreVcfOptions
from pipeline.apply.variants.score_vcf import read_tsv_scores, score_vcf
from pipeline.apply.variants.values import implied_alt
from pipeline.core.encoding import one_hot
from pipeline.errors import UserError
from pipeline.ism import log_fold
from pipeline.models import build_base

L = 80
CHR = 600


@pytest.fixture(scope="module")
def genome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One random chromosome ``chr1`` of :data:`CHR` bases (plus ``chr2``, 300 bases)."""
    rng = np.random.default_rng(31)
    seq = "".join(rng.choice(list("ACGT"), size=CHR))
    seq2 = "".join(rng.choice(list("ACGT"), size=300))
    path = tmp_path_factory.mktemp("values") / "g.fa"
    path.write_text(">chr1\n" + seq + "\n>chr2\n" + seq2 + "\n")
    return path, seq


def predict(base: torch.nn.Module, windows: list[str]) -> np.ndarray:
    with torch.no_grad():
        return base(torch.from_numpy(np.stack([one_hot(w) for w in windows])).float()).numpy()


def test_implied_alt_is_the_exact_inverse_of_the_log_fold():
    rng = np.random.default_rng(0)
    ref = rng.uniform(1e-4, 1 - 1e-4, size=(50, 3))
    alt = rng.uniform(1e-4, 1 - 1e-4, size=(50, 3))
    lf = log_fold(torch.from_numpy(alt), torch.from_numpy(ref)).numpy()
    np.testing.assert_allclose(implied_alt(ref, lf, "logfold"), alt, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(implied_alt(ref, alt - ref, "diff"), alt, rtol=1e-6, atol=1e-7)


def test_exact_alt_is_the_base_model_on_the_alternative_window(genome, tmp_path):
    """The must-hold item: with --exact, alt equals base(alternative window) to 1e-5 (SNVs and indels)."""
    path, seq = genome
    kwargs = {"seq_len": L, "n_targets": 4}
    ckpt = make_checkpoint(tmp_path / "c.pt", path, base="SymmetricBase", base_kwargs=kwargs)
    rows = snvs(seq, [60, 300, 333])
    rows.append(("chr1", 200, "del", seq[199:203], seq[199]))
    rows.append(("chr1", 350, "ins", seq[349], seq[349] + "GATTACA"))
    rows.append(("chr1", 30, "too_close", seq[29], other(seq[29])))
    vcf = write_vcf(tmp_path / "a.vcf", rows)
    opts = ScoreVcfOptions(mode="exact", device="cpu", values="ref,alt")
    score_vcf(str(ckpt), str(vcf), str(tmp_path / "exact.tsv"), opts, progress=False)
    score_vcf(str(ckpt), str(vcf), str(tmp_path / "exact.zarr"), opts, progress=False)
    score_vcf(str(ckpt), str(vcf), str(tmp_path / "exact.vcf.gz"), opts, progress=False)
    base = build_base(f"{TOY_MODELS}:SymmetricBase", **kwargs)
    table = read_tsv_scores(tmp_path / "exact.tsv")
    assert set(table.semantics["values"]) == {"ref", "alt"} and len(table.target_names) == 4
    got = {r["id"]: r for r in table.rows}
    before = L // 2 - 1
    for _, pos, vid, ref, alt in rows[:-1]:
        alt_w = (seq[pos - 1 - before : pos - 1] + alt + seq[pos - 1 + len(ref) :])[:L]
        want_ref, want_alt = predict(base, [centred(seq, pos), alt_w])
        np.testing.assert_allclose(list(got[vid]["values"]["alt"].values()), want_alt, atol=1e-5, rtol=0)
        np.testing.assert_allclose(list(got[vid]["values"]["ref"].values()), want_ref, atol=1e-5, rtol=0)
    skipped = got["too_close"]
    assert skipped["values"]["ref"] == dict.fromkeys(table.target_names)  # empty cells
    # the Zarr and VCF outputs hold the same values
    z = zarr.open_group(str(tmp_path / "exact.zarr"), mode="r")
    assert z.attrs["values"] == ["ref", "alt"]
    tsv_alt = np.array([[np.nan if v is None else v for v in r["values"]["alt"].values()] for r in table.rows])
    np.testing.assert_allclose(z["alt_values"][:], tsv_alt, rtol=1e-5, atol=1e-6)
    with pysam.VariantFile(str(tmp_path / "exact.vcf.gz")) as vf:
        keys = [k for k in vf.header.info if k.endswith(("_ref", "_alt"))]
        assert len(keys) == 8 and "multiplexer_values" in str(vf.header)
        for record, row in zip(vf, table.rows):
            if row["status"] == "scored":
                first = keys[4]  # the first target's _alt
                assert record.info[first][0] == pytest.approx(list(row["values"]["alt"].values())[0], abs=1e-5)


@pytest.mark.parametrize("mode", ["shared", "centered"])
def test_multiplexer_modes_ref_is_the_scored_window_and_alt_the_mutated_one(genome, tmp_path, mode):
    """With an exact multiplexer (naive ISM of the demo base), the ref value is the base model on the very
    window the row was scored in (window_center), and alt the base model on that window with ALT in it."""
    path, seq = genome
    ckpt = make_checkpoint(tmp_path / "x.pt", path)
    rows = snvs(seq, [41, 45, 60, 200, 207, 560])
    vcf = write_vcf(tmp_path / "a.vcf", rows)
    out = tmp_path / "m.tsv"
    opts = ScoreVcfOptions(mode=mode, device="cpu", values="ref,alt", group_span=40 if mode == "shared" else None)
    score_vcf(str(ckpt), str(vcf), str(out), opts, progress=False)
    base = build_base("demo", **DEMO_KWARGS)
    got = read_tsv_scores(out).rows
    assert all(r["status"] == "scored" for r in got)
    for r in got:
        first = r["window_center"] - L // 2 + 1  # 1-based position of window index 0
        window = seq[first - 1 : first - 1 + L]
        j = r["pos"] - first
        mutated = window[:j] + r["alt"] + window[j + 1 :]
        want_ref, want_alt = predict(base, [window, mutated])
        np.testing.assert_allclose(list(r["values"]["ref"].values()), want_ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(list(r["values"]["alt"].values()), want_alt, atol=1e-5, rtol=0)
    if mode == "shared":
        assert len({r["window_center"] for r in got}) < len(got)  # windows really were shared


def test_values_columns_do_not_change_the_scores_and_diff_gives_ref_plus_score(genome, tmp_path):
    path, seq = genome
    ckpt = make_checkpoint(tmp_path / "x.pt", path)
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [50, 120, 400]))
    plain, valued, diff = tmp_path / "p.tsv", tmp_path / "v.tsv", tmp_path / "d.tsv"
    score_vcf(str(ckpt), str(vcf), str(plain), ScoreVcfOptions(device="cpu"), progress=False)
    score_vcf(str(ckpt), str(vcf), str(valued), ScoreVcfOptions(device="cpu", values="alt"), progress=False)
    score_vcf(str(ckpt), str(vcf), str(diff), ScoreVcfOptions(device="cpu", values="ref,alt", diff=True),
              progress=False)  # fmt: skip
    a, b, d = (read_tsv_scores(p) for p in (plain, valued, diff))
    assert [r["effects"] for r in a.rows] == [r["effects"] for r in b.rows]
    assert list(b.semantics["values"]) == ["alt"] and "values" not in a.semantics
    for rv, rd in zip(b.rows, d.rows):
        ref = np.array(list(rd["values"]["ref"].values()))
        np.testing.assert_allclose(ref + np.array(list(rd["effects"].values())), list(rd["values"]["alt"].values()),
                                   atol=2e-6)  # fmt: skip
        np.testing.assert_allclose(list(rv["values"]["alt"].values()), list(rd["values"]["alt"].values()), atol=2e-6)


def test_strand_both_ref_is_the_mean_of_both_strands(genome, tmp_path):
    path, seq = genome
    ckpt = make_checkpoint(tmp_path / "x.pt", path)
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [100, 300]))
    out = tmp_path / "b.tsv"
    opts = ScoreVcfOptions(mode="centered", strand="both", device="cpu", values="ref")
    score_vcf(str(ckpt), str(vcf), str(out), opts, progress=False)
    base = build_base("demo", **DEMO_KWARGS)
    comp = str.maketrans("ACGT", "TGCA")
    for r in read_tsv_scores(out).rows:
        w = centred(seq, r["pos"])
        want = predict(base, [w, w.translate(comp)[::-1]]).mean(0)
        np.testing.assert_allclose(list(r["values"]["ref"].values()), want, atol=1e-5, rtol=0)


def test_sharded_values_equal_one_process(genome, trained_run, tmp_path):
    path, seq = genome
    rng = np.random.default_rng(3)
    rows = [("chr1", int(p), f"r{k}", seq[p - 1], other(seq[p - 1], k % 3))
            for k, p in enumerate(rng.integers(1, CHR + 1, size=2100))]  # fmt: skip
    vcf = write_vcf(tmp_path / "long.vcf", rows)
    ckpt = str(trained_run / "best.pt")
    one, sharded = tmp_path / "one.tsv", tmp_path / "s.tsv"
    base = {"genome": str(path), "device": "cpu", "values": "ref,alt"}
    score_vcf(ckpt, str(vcf), str(one), ScoreVcfOptions(**base), progress=False)
    for shard in ("0/2", "1/2"):
        score_vcf(ckpt, str(vcf), str(sharded), ScoreVcfOptions(**base, shard=shard), progress=False)
    assert sharded.read_bytes() == one.read_bytes()
    score_vcf(ckpt, str(vcf), str(tmp_path / "t.tsv"), ScoreVcfOptions(**base, shard="0/2"), progress=False)
    with pytest.raises(UserError, match="other options"):  # parts of another --values are refused
        score_vcf(ckpt, str(vcf), str(tmp_path / "t.tsv"), ScoreVcfOptions(**{**base, "values": "ref"}, shard="1/2"),
                  progress=False)  # fmt: skip


def test_lookup_values_equal_score_vcf_from_the_catalogue(genome, trained_run, tmp_path):
    """lookup --values: ref is the base model on the row's tile window; score-vcf --catalogue agrees."""
    path, seq = genome
    ckpt = trained_run / "best.pt"
    cat = tmp_path / "cat.zarr"
    ok("catalogue", "--checkpoint", ckpt, "--out", cat, "--genome", path, "--region", "chr1:1-600", "--device", "cpu")
    positions = [5, 150, 333, 599]
    queries = [f"chr1:{p}:{seq[p - 1]}>{other(seq[p - 1])}" for p in positions]
    out = tmp_path / "l.tsv"
    lookup(str(cat), str(out), LookupOptions(variants=tuple(queries), values="ref,alt", device="cpu"), progress=False)
    from pipeline.models import base_from_checkpoint, read_checkpoint

    base = base_from_checkpoint(read_checkpoint(str(ckpt)))
    looked = read_tsv_scores(out).rows
    for r in looked:
        first = r["window_center"] - L // 2 + 1
        want = predict(base, [seq[first - 1 : first - 1 + L]])[0]
        ref = np.array(list(r["values"]["ref"].values()))
        np.testing.assert_allclose(ref, want, atol=1e-5, rtol=0)
        lf = log_fold(torch.tensor(list(r["values"]["alt"].values()), dtype=torch.float64), torch.from_numpy(ref))
        np.testing.assert_allclose(lf.numpy(), list(r["effects"].values()), atol=1e-3)
    vcf = write_vcf(tmp_path / "q.vcf", [("chr1", p, f"q{p}", seq[p - 1], other(seq[p - 1])) for p in positions])
    scored = tmp_path / "s.tsv"
    ok("score-vcf", "--checkpoint", ckpt, "--vcf", vcf, "--out", scored, "--genome", path, "--catalogue", cat,
       "--values", "ref,alt", "--device", "cpu")  # fmt: skip
    for a, b in zip(looked, read_tsv_scores(scored).rows):
        assert a["values"] == b["values"] and a["effects"] == b["effects"]


def test_bad_values_requests_are_one_line_errors(genome, trained_run, tmp_path):
    path, seq = genome
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [100]))
    ckpt = trained_run / "best.pt"
    result = invoke("score-vcf", "--checkpoint", ckpt, "--vcf", vcf, "--out", tmp_path / "x.tsv", "--values", "ref,q")
    assert_one_line_error(result, "--values", "ref, alt")
    result = invoke("lookup", tmp_path / "nothing.zarr", "--variant", "chr1:5:A>C", "--out", tmp_path / "y.tsv",
                    "--checkpoint", ckpt)  # fmt: skip
    assert_one_line_error(result, "only matter with --values")
    cat = tmp_path / "cat.zarr"
    ok("catalogue", "--checkpoint", ckpt, "--out", cat, "--genome", path, "--region", "chr1:1-200", "--device", "cpu")
    other_ckpt = make_checkpoint(tmp_path / "other.pt", path)
    result = invoke("lookup", cat, "--variant", f"chr1:5:{seq[4]}>{other(seq[4])}", "--out", tmp_path / "z.tsv",
                    "--values", "ref", "--checkpoint", other_ckpt)  # fmt: skip
    assert_one_line_error(result, "not the checkpoint the catalogue was made with")
