"""``score-vcf`` modes and outputs: centred and exact scores, strands, .vcf.gz/.zarr, semantics, shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
import zarr
from helpers import DEMO_KWARGS, N_TARGETS, SEQ_LEN, TOY_MODELS, assert_one_line_error, invoke, ok

from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.score_vcf import merge_scores, read_scores, read_tsv_scores, score_vcf
from pipeline.apply.variants.scorers import alt_window, reverse_complement
from pipeline.apply.variants.writers import FIXED_INFO, info_ids
from pipeline.core.encoding import ALPHABET, one_hot
from pipeline.core.genome import Genome
from pipeline.errors import UserError
from pipeline.ism import log_fold, mask_effects
from pipeline.models import base_identity, build_base, load_checkpoint, save_checkpoint

L = SEQ_LEN
CHR = 600


@pytest.fixture(scope="module")
def genome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One random chromosome ``chr1`` of :data:`CHR` bases (plus ``chr2``, 300 bases)."""
    rng = np.random.default_rng(11)
    seq = "".join(rng.choice(list("ACGT"), size=CHR))
    seq2 = "".join(rng.choice(list("ACGT"), size=300))
    path = tmp_path_factory.mktemp("modes") / "g.fa"
    path.write_text(">chr1\n" + seq + "\n>chr2\n" + seq2 + "\n")
    return path, seq


def make_checkpoint(path: Path, genome: Path, *, base: str = "demo", base_kwargs=None, mux=None) -> Path:
    """A checkpoint with base model ``base`` (a name or ``toy_models.py:Class``) and multiplexer ``mux``
    (``(class name in toy_models.py, kwargs)``; default the exact one)."""
    from toy_models import ExactMultiplexer, StrandMultiplexer

    base_kwargs = dict(DEMO_KWARGS if base_kwargs is None else base_kwargs)
    name = base if base == "demo" else f"{TOY_MODELS}:{base}"
    module = build_base(name, **base_kwargs)
    mux_name, mux_kwargs = mux or ("ExactMultiplexer", dict(DEMO_KWARGS))
    mux_model = {"ExactMultiplexer": ExactMultiplexer, "StrandMultiplexer": StrandMultiplexer}[mux_name](**mux_kwargs)
    payload = {
        "model": mux_model.state_dict(),
        "architecture": {"name": f"{TOY_MODELS}:{mux_name}", "kwargs": mux_kwargs},
        "seq_len": L,
        "n_targets": N_TARGETS,
        "alphabet": "AGCT",
        "target_names": ["DNase|GM12878", "CTCF|GM12878", "CTCF|K562", "H3K27ac K562"],
        "target_kind": "logfold",
        "spec": {"seed": 0},
        "base": base_identity(name, None, base_kwargs, module),
        "genome": str(genome),
    }
    save_checkpoint(path, payload)
    return path


def other(base: str, k: int = 0) -> str:
    return [b for b in "ACGT" if b != base.upper()][k]


def write_vcf(path: Path, rows: list[tuple[str, int, str, str, str]], contigs=("chr1", "chr2")) -> Path:
    head = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c}>\n" for c in contigs)
    head += "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    path.write_text(head + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\t.\n" for c, p, i, r, a in rows))
    return path


def snvs(seq: str, positions, chrom: str = "chr1", k: int = 0) -> list[tuple[str, int, str, str, str]]:
    return [(chrom, p, f"v{p}", seq[p - 1], other(seq[p - 1], k)) for p in positions]


def scores_of(path: Path) -> dict[tuple[int, str], np.ndarray]:
    return {
        (r["pos"], r["alt"]): np.array(list(r["effects"].values()))
        for r in read_scores(path)
        if r["status"] == "scored"
    }


def centred(seq: str, pos: int) -> str:
    """The window centred on 1-based ``pos``: ``pos`` at 0-based index ``L//2 - 1``."""
    start = pos - L // 2  # 0-based
    return seq[start : start + L]


# ------------------------------------------------------------------------------------------------
# exact and centred scores
# ------------------------------------------------------------------------------------------------


def test_exact_centred_score_is_known_by_construction(genome, tmp_path):
    """A base model that sees only index L//2 - 1: the exact centred score is closed-form."""
    path, seq = genome
    ckpt = make_checkpoint(tmp_path / "c.pt", path, base="CentreBase", base_kwargs={"seq_len": L, "n_targets": 4})
    positions = [100, 250, 400]
    rows = [("chr1", p, f"to_C{p}", seq[p - 1], "C") for p in positions if seq[p - 1] != "C"]
    rows += [("chr1", p, f"to_T{p}", seq[p - 1], "T") for p in positions if seq[p - 1] not in "CT"]
    vcf = write_vcf(tmp_path / "a.vcf", rows)
    out = tmp_path / "exact.tsv"
    score_vcf(str(ckpt), str(vcf), str(out), ScoreVcfOptions(mode="exact", device="cpu"), progress=False)
    hit, miss = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(-1.0))
    expected_c = float(log_fold(hit, miss))  # ALT C (channel 2) at the centre: the model fires
    got = read_scores(out)
    assert len(got) == len(rows) and all(r["status"] == "scored" for r in got)
    for r in got:
        want = expected_c if r["alt"] == "C" else 0.0
        np.testing.assert_allclose(list(r["effects"].values()), [want] * 4, rtol=1e-6, atol=1e-7)
        assert r["window_center"] == r["pos"]


def test_exact_scores_equal_an_independent_log_fold_of_hand_built_windows(genome, tmp_path):
    """SNVs, a deletion and an insertion: log_fold(base(alt window), base(ref window)) by hand."""
    path, seq = genome
    kwargs = {"seq_len": L, "n_targets": 4}
    ckpt = make_checkpoint(tmp_path / "c.pt", path, base="SymmetricBase", base_kwargs=kwargs)
    rows = snvs(seq, [60, 300])
    rows.append(("chr1", 200, "del", seq[199:203], seq[199]))  # 3 bases deleted after the anchor
    rows.append(("chr1", 350, "ins", seq[349], seq[349] + "GATTACA"))
    rows.append(("chr1", 30, "too_close", seq[29], other(seq[29])))  # no centred window fits
    vcf = write_vcf(tmp_path / "a.vcf", rows)
    out = tmp_path / "exact.tsv"
    summary = score_vcf(str(ckpt), str(vcf), str(out), ScoreVcfOptions(mode="exact", device="cpu"), progress=False)
    assert summary.n_scored == 4
    base = build_base(f"{TOY_MODELS}:SymmetricBase", **kwargs)

    def by_hand(pos: int, ref: str, alt: str) -> np.ndarray:
        ref_w = centred(seq, pos)
        before = L // 2 - 1
        alt_w = (seq[pos - 1 - before : pos - 1] + alt + seq[pos - 1 + len(ref) :])[:L]
        assert len(alt_w) == L and alt_w[before : before + len(alt)] == alt
        with torch.no_grad():
            p = base(torch.from_numpy(np.stack([one_hot(ref_w), one_hot(alt_w)])).float())
        return log_fold(p[1:], p[:1])[0].numpy()

    got = {r["id"]: r for r in read_scores(out)}
    for _, pos, vid, ref, alt in rows[:-1]:
        np.testing.assert_allclose(list(got[vid]["effects"].values()), by_hand(pos, ref, alt), rtol=1e-5, atol=1e-6)
    assert got["too_close"]["status"].startswith("skipped: too close to an end of chr1")
    assert any(abs(v) > 1e-4 for v in got["del"]["effects"].values())  # a real effect, not zeros


def test_alt_window_keeps_the_variant_at_the_centre_index(genome):
    path, seq = genome
    g = Genome(path)
    before = L // 2 - 1
    assert (
        alt_window(g, "chr1", 300, seq[299], "G", L)
        == centred(seq, 300)[:before] + "G" + centred(seq, 300)[before + 1 :]
    )
    deletion = alt_window(g, "chr1", 300, seq[299:305], seq[299], L)
    assert deletion == seq[299 - before : 300] + seq[305 : 305 + L - before - 1]


def test_centred_multiplexer_scores_are_its_output_at_the_centre_index(genome, trained_run, tmp_path):
    path, seq = genome
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [100, 101, 350]) + snvs(seq, [350], k=1))
    out = tmp_path / "centred.tsv"
    ckpt = trained_run / "best.pt"
    score_vcf(
        str(ckpt), str(vcf), str(out), ScoreVcfOptions(mode="centered", genome=str(path), device="cpu"), progress=False
    )
    model, _ = load_checkpoint(ckpt)
    rows = read_scores(out)
    assert len(rows) == 4
    for r in rows:
        X = torch.from_numpy(one_hot(centred(seq, r["pos"]))[None]).float()
        with torch.no_grad():
            y = mask_effects(model(X).float(), X)[0]
        want = y[:, ALPHABET.index(r["alt"]), L // 2 - 1].numpy()
        np.testing.assert_allclose(list(r["effects"].values()), want, rtol=1e-5, atol=1e-6)
        assert r["window_center"] == r["pos"]


def test_centred_and_group_span_do_not_mix(genome, trained_run, tmp_path):
    path, seq = genome
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [100]))
    with pytest.raises(UserError, match="--group-span"):
        score_vcf(
            str(trained_run / "best.pt"),
            str(vcf),
            str(tmp_path / "o.tsv"),
            ScoreVcfOptions(mode="centered", genome=str(path), group_span=5),
            progress=False,
        )


# ------------------------------------------------------------------------------------------------
# strands
# ------------------------------------------------------------------------------------------------


def test_reverse_complement_flips_bases_and_positions():
    X = torch.from_numpy(one_hot("AAGCTTTG")[None]).float()
    assert reverse_complement(X)[0].argmax(0).tolist() == [ALPHABET.index(b) for b in "CAAAGCTT"]


@pytest.mark.parametrize("mode", ["shared", "centered"])
def test_a_strand_symmetric_multiplexer_scores_the_same_on_both_strands(genome, tmp_path, mode):
    path, seq = genome
    ckpt = make_checkpoint(tmp_path / "s.pt", path, mux=("StrandMultiplexer", {"seq_len": L, "n_targets": 4}))
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [50, 52, 300, 570]) + snvs(seq, [300], k=2))
    got = {}
    for strand in ("forward", "reverse", "both"):
        out = tmp_path / f"{mode}-{strand}.tsv"
        score_vcf(
            str(ckpt), str(vcf), str(out), ScoreVcfOptions(mode=mode, strand=strand, device="cpu"), progress=False
        )
        got[strand] = scores_of(out)
    assert len(got["forward"]) == (5 if mode == "shared" else 4)  # 570 has no centred window
    for key, forward in got["forward"].items():
        assert np.abs(forward).max() > 0
        np.testing.assert_array_equal(got["reverse"][key], forward)
        np.testing.assert_array_equal(got["both"][key], forward)


def test_reverse_strand_reads_the_complement_at_the_mirrored_index(genome, tmp_path):
    """An asymmetric multiplexer: the reverse score is its output on the RC window at [3 - b, L-1-j]."""
    path, seq = genome
    kwargs = {"seq_len": L, "n_targets": 4, "symmetric": False}
    ckpt = make_checkpoint(tmp_path / "a.pt", path, mux=("StrandMultiplexer", kwargs))
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [300]))
    outs = {s: tmp_path / f"{s}.tsv" for s in ("forward", "reverse", "both")}
    for strand, out in outs.items():
        score_vcf(
            str(ckpt), str(vcf), str(out), ScoreVcfOptions(mode="centered", strand=strand, device="cpu"), progress=False
        )
    model, _ = load_checkpoint(ckpt)
    X = torch.from_numpy(one_hot(centred(seq, 300))[None]).float()
    b, j = ALPHABET.index(other(seq[299])), L // 2 - 1
    with torch.no_grad():
        rc = reverse_complement(X)
        y_rc = mask_effects(model(rc), rc)[0]
        y = mask_effects(model(X), X)[0]
    rev = y_rc[:, 3 - b, L - 1 - j].numpy()
    fwd = y[:, b, j].numpy()
    (got_f,), (got_r,), (got_b,) = (scores_of(outs[s]).values() for s in ("forward", "reverse", "both"))
    np.testing.assert_allclose(got_f, fwd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_r, rev, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, (fwd + rev) / 2, rtol=1e-5, atol=1e-6)
    assert np.abs(fwd - rev).max() > 1e-3  # the test would see a wrong mapping


def test_exact_scores_of_a_strand_symmetric_base_model_agree_on_both_strands(genome, tmp_path):
    path, seq = genome
    ckpt = make_checkpoint(tmp_path / "s.pt", path, base="SymmetricBase", base_kwargs={"seq_len": L, "n_targets": 4})
    rows = snvs(seq, [100, 420]) + [("chr1", 200, "del", seq[199:202], seq[199])]
    vcf = write_vcf(tmp_path / "a.vcf", rows)
    got = {}
    for strand in ("forward", "reverse", "both"):
        out = tmp_path / f"{strand}.tsv"
        score_vcf(
            str(ckpt), str(vcf), str(out), ScoreVcfOptions(mode="exact", strand=strand, device="cpu"), progress=False
        )
        got[strand] = scores_of(out)
    assert len(got["forward"]) == 3
    for key, forward in got["forward"].items():
        np.testing.assert_array_equal(got["reverse"][key], forward)
        np.testing.assert_allclose(got["both"][key], forward, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------


def test_vcf_gz_output_reads_back_typed_and_answers_a_region_query(genome, tmp_path):
    path, seq = genome
    rows = snvs(seq, [50, 120])
    rows.append(("chr1", 200, "multi", seq[199], f"{other(seq[199])},{other(seq[199], 1)}"))
    rows.append(("chr1", 250, "indel", seq[249], seq[249] + "A"))
    rows += snvs(seq, [300]) + [("chr2", 150, "second", "A", "G")]
    vcf = write_vcf(tmp_path / "a.vcf", rows)
    mux = ("StrandMultiplexer", {"seq_len": L, "n_targets": 4, "symmetric": False})
    ckpt = str(make_checkpoint(tmp_path / "a.pt", path, mux=mux))
    tsv, out = tmp_path / "s.tsv", tmp_path / "s.vcf.gz"
    for o in (tsv, out):
        score_vcf(ckpt, str(vcf), str(o), ScoreVcfOptions(targets="CTCF,^DNase", device="cpu"), progress=False)
    table = read_tsv_scores(tsv)
    assert table.target_names == ["DNase|GM12878", "CTCF|GM12878", "CTCF|K562"]
    with pysam.VariantFile(str(out)) as v:
        info = v.header.info
        keys = info_ids(table.target_names, set())
        for key in keys:
            assert info[key].type == "Float" and info[key].number == "A"
        for key, (kind, _) in FIXED_INFO.items():
            assert info[key].type == kind and info[key].number == "A"
        meta = {r.key: r.value for r in v.header.records if r.key.startswith("multiplexer_")}
        assert meta["multiplexer_quantity"] == "logfold" and meta["multiplexer_log_base"] == "e"
        assert json.loads(meta["multiplexer_genome"])["fingerprint"]["n_contigs"] == 2
        records = list(v)
        assert [(r.chrom, r.pos, r.id) for r in records] == [(c, p, i) for c, p, i, _, _ in rows]
        by_key = {(r["pos"], r["alt"]): r for r in table.rows}
        for rec in records:
            for k, alt in enumerate(rec.alts):
                row = by_key[(rec.pos, alt)]
                assert rec.info["REF_MATCH"][k] == row["ref_match"]
                if row["status"] != "scored":
                    assert rec.info["MAX_ABS"][k] is None and rec.info[keys[0]][k] is None
                    continue
                want = np.array(list(row["effects"].values()))
                got = np.array([rec.info[key][k] for key in keys])
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
                assert rec.info["MAX_ABS"][k] == pytest.approx(np.abs(want).max(), rel=1e-4)
                assert rec.info["TOP_TARGET"][k] == table.target_names[int(np.abs(want).argmax())].replace(" ", "_")
        assert Path(str(out) + ".tbi").is_file()
        assert [r.id for r in v.fetch("chr1", 100, 210)] == ["v120", "multi"]
        assert [r.id for r in v.fetch("chr2")] == ["second"]


def test_zarr_output_holds_the_scores_and_the_variant_table(genome, trained_run, tmp_path):
    path, seq = genome
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [50, 120, 300]) + [("chr9", 5, "absent", "A", "G")])
    ckpt = str(trained_run / "best.pt")
    tsv, out = tmp_path / "s.tsv", tmp_path / "s.zarr"
    for o in (tsv, out):
        score_vcf(ckpt, str(vcf), str(o), ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)
    table = read_tsv_scores(tsv)
    z = zarr.open_group(str(out), mode="r")
    assert z.attrs["kind"] == "score-vcf" and z.attrs["target_names"] == table.target_names
    assert z.attrs["semantics"] == table.semantics
    scores = z["scores"][:]
    assert scores.dtype == np.float16 and scores.shape == (4, len(table.target_names))
    for k, row in enumerate(table.rows):
        assert z["id"][k] == row["id"] and int(z["pos"][k]) == row["pos"] and z["status"][k] == row["status"]
        if row["status"] == "scored":
            np.testing.assert_allclose(scores[k], list(row["effects"].values()), rtol=2e-3, atol=1e-4)
        else:
            assert np.isnan(scores[k]).all() and int(z["window_center"][k]) == -1


def test_every_output_says_what_the_scores_mean(genome, trained_run, tmp_path):
    path, seq = genome
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [300]))
    out = tmp_path / "s.tsv.gz"
    score_vcf(
        str(trained_run / "best.pt"),
        str(vcf),
        str(out),
        ScoreVcfOptions(genome=str(path), diff=True, strand="both", device="cpu"),
        progress=False,
    )
    meaning = read_tsv_scores(out).semantics
    assert (
        meaning["quantity"] == "diff" and meaning["formula"] == "alt - ref" and meaning["converted_from"] == "logfold"
    )
    assert meaning["sign"].startswith("ALT relative to REF") and meaning["strand"].startswith("both")
    assert meaning["mode"] == "shared" and "L//2" not in meaning["window"]
    assert meaning["model"]["scored_with"] == "multiplexer" and len(meaning["model"]["checkpoint_sha256"]) == 64
    assert meaning["genome"]["fingerprint"]["n_contigs"] == 2


def test_targets_are_chosen_by_name_regex_or_file(genome, trained_run, tmp_path):
    path, seq = genome
    vcf = write_vcf(tmp_path / "a.vcf", snvs(seq, [300]))
    ckpt = str(trained_run / "best.pt")
    _, meta = load_checkpoint(ckpt)
    names = list(meta["target_names"])
    listing = tmp_path / "targets.txt"
    listing.write_text(f"{names[2]}\n{names[0]}\n")
    out = tmp_path / "f.tsv"
    score_vcf(
        ckpt, str(vcf), str(out), ScoreVcfOptions(genome=str(path), targets=str(listing), device="cpu"), progress=False
    )
    assert read_tsv_scores(out).target_names == [names[0], names[2]]  # the checkpoint's order
    with pytest.raises(UserError, match="matches no target"):
        score_vcf(
            ckpt,
            str(vcf),
            str(tmp_path / "g.tsv"),
            ScoreVcfOptions(genome=str(path), targets="nothing_like_this"),
            progress=False,
        )
    assert not (tmp_path / "g.tsv").exists()


# ------------------------------------------------------------------------------------------------
# shards
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_vcf(genome, tmp_path_factory) -> Path:
    """2,500 records (three units of 1,000), SNVs and a few indels, unsorted in places."""
    path, seq = genome
    rng = np.random.default_rng(5)
    positions = rng.integers(1, CHR + 1, size=2500)
    rows = []
    for k, p in enumerate(positions.tolist()):
        if k % 97 == 0:
            rows.append(("chr1", p, f"r{k}", seq[p - 1], seq[p - 1] + "T"))
        else:
            rows.append(("chr1", p, f"r{k}", seq[p - 1], other(seq[p - 1], k % 3)))
    return write_vcf(tmp_path_factory.mktemp("long") / "long.vcf", rows)


def test_sharded_runs_equal_one_process_and_reruns_skip_finished_units(genome, trained_run, long_vcf, tmp_path):
    path, _ = genome
    ckpt = str(trained_run / "best.pt")
    one = tmp_path / "one.tsv"
    score_vcf(
        ckpt, str(long_vcf), str(one), ScoreVcfOptions(genome=str(path), device="cpu", batch_size=4), progress=False
    )
    out = tmp_path / "sharded.tsv"
    first = score_vcf(
        ckpt,
        str(long_vcf),
        str(out),
        ScoreVcfOptions(genome=str(path), shard="0/2", device="cpu", batch_size=4),
        progress=False,
    )
    assert "wait for other shards" in first.line() and not out.exists()
    with pytest.raises(UserError, match="1 units are not done"):
        merge_scores(str(out), progress=False)
    parts = sorted((tmp_path / "sharded.tsv.parts").glob("unit-*.npz"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    again = score_vcf(
        ckpt,
        str(long_vcf),
        str(out),
        ScoreVcfOptions(genome=str(path), shard="0/2", device="cpu", batch_size=4),
        progress=False,
    )
    assert again.n_records == 0  # every unit of shard 0 was done
    assert [p.stat().st_mtime_ns for p in parts] == stamps
    last = score_vcf(
        ckpt,
        str(long_vcf),
        str(out),
        ScoreVcfOptions(genome=str(path), shard="1/2", device="cpu", batch_size=4),
        progress=False,
    )
    assert "merged 3 units" in last.line() and last.n_records == 2500 + 0
    assert out.read_bytes() == one.read_bytes()
    assert not (tmp_path / "sharded.tsv.parts").exists()


def test_shard_parts_refuse_other_options(genome, trained_run, long_vcf, tmp_path):
    path, _ = genome
    ckpt = str(trained_run / "best.pt")
    out = tmp_path / "s.tsv"
    score_vcf(
        ckpt, str(long_vcf), str(out), ScoreVcfOptions(genome=str(path), shard="0/3", device="cpu"), progress=False
    )
    with pytest.raises(UserError, match="parts computed with other options"):
        score_vcf(
            ckpt, str(long_vcf), str(out), ScoreVcfOptions(genome=str(path), shard="1/3", strand="both"), progress=False
        )


def test_merge_from_the_command_line(genome, trained_run, long_vcf, tmp_path):
    path, _ = genome
    out = tmp_path / "s.vcf.gz"
    base = ["score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", long_vcf, "--genome", path]
    ok(*base, "--out", out, "--shard", "0/2", "--device", "cpu")
    assert_one_line_error(invoke("score-vcf", "--out", out, "--merge"), "units are not done")
    assert_one_line_error(invoke("score-vcf", "--out", out, "--merge", "--centered"), "--merge takes only")
    ok(*base, "--out", out, "--shard", "1/2", "--device", "cpu")
    with pysam.VariantFile(str(out)) as v:
        assert sum(1 for _ in v) == 2500
    assert not Path(str(out) + ".tbi").exists()  # the records are not sorted
    assert_one_line_error(invoke("score-vcf", "--out", tmp_path / "x.tsv", "--merge"), "nothing to merge")
    assert_one_line_error(invoke("score-vcf", "--out", tmp_path / "x.tsv"), "--checkpoint and --vcf")


def test_torchrun_ranks_split_units_like_shards(genome, trained_run, long_vcf, tmp_path, monkeypatch):
    """Under torchrun (RANK/WORLD_SIZE), each rank takes its units; the last one to finish merges."""
    path, _ = genome
    ckpt = str(trained_run / "best.pt")
    one = tmp_path / "one.tsv"
    score_vcf(ckpt, str(long_vcf), str(one), ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)
    out = tmp_path / "ranks.tsv"
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        score_vcf(ckpt, str(long_vcf), str(out), ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)
    assert out.read_bytes() == one.read_bytes()
