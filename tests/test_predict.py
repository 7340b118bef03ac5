"""``predict`` and ``ism`` outputs (effects files, per-region TSVs, ``--diff``) and region inputs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DEMO_KWARGS, rewrite_checkpoint

from pipeline.apply.exact_ism import ism_effects
from pipeline.apply.inputs import Inputs, load_inputs, read_regions
from pipeline.apply.outputs import read_effects, tsv_paths, variant_table
from pipeline.apply.predict import predict_effects
from pipeline.core.commands import InputOptions, IsmOptions, PredictOptions
from pipeline.core.encoding import decode, one_hot
from pipeline.core.windows import center_range
from pipeline.errors import UserError
from pipeline.ism import log_fold, logfold_to_diff, naive_ism
from pipeline.models import build_base, load_checkpoint

L, F = 80, 4


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    """Three sequences with N and IUPAC columns (all-zero one-hot)."""
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("AGCT"), size=L)) for _ in range(3)]
    seqs[0] = "N" + seqs[0][1:30] + "NNRY" + seqs[0][34:-1] + "n"
    seqs[2] = seqs[2].lower()
    X = np.stack([one_hot(s) for s in seqs])
    return Inputs(X, ["s0", "s1", "s2"], np.zeros(3, dtype=np.int64))


def assert_zero_at_reference_and_n(effects: np.ndarray, X: np.ndarray, dense: bool = True) -> None:
    at_ref = np.broadcast_to(X[:, None].astype(bool), effects.shape)
    n_cols = np.broadcast_to((X.sum(axis=1) == 0)[:, None, None, :], effects.shape)
    assert at_ref.any() and n_cols.any()
    assert (effects[at_ref] == 0).all()
    assert (effects[n_cols] == 0).all()
    real = effects[~at_ref & ~n_cols]
    assert (real != 0).mean() > 0.5 if dense else (real != 0).any()


@pytest.mark.parametrize("suffix", [".npz", ".zarr"])
def test_predict_writes_effects(trained_run, inputs, tmp_path, suffix):
    out = tmp_path / f"pred{suffix}"
    path = predict_effects(
        str(trained_run / "best.pt"), inputs, str(out), PredictOptions(device="cpu", batch_size=2), progress=False
    )
    assert path == str(out)
    data = read_effects(out)
    assert data["effects"].shape == (3, F, 4, L) and data["effects"].dtype == np.float32
    assert np.array_equal(data["reference"], inputs.X)
    assert data["chrom"] == ["s0", "s1", "s2"] and data["center"].tolist() == [0, 0, 0]
    assert_zero_at_reference_and_n(data["effects"], inputs.X)
    model, meta = load_checkpoint(trained_run / "best.pt")
    assert data["target_names"] == meta["target_names"]
    assert data["attrs"]["kind"] == "logfold" and data["attrs"]["source"] == "multiplexer"
    assert data["attrs"]["alphabet"] == "AGCT" and data["attrs"]["seq_len"] == L
    with torch.no_grad():
        direct = model(torch.from_numpy(inputs.X).float()).numpy()
    real = ~np.broadcast_to(inputs.X[:, None].astype(bool), direct.shape)
    real &= np.broadcast_to((inputs.X.sum(axis=1) > 0)[:, None, None, :], direct.shape)
    np.testing.assert_allclose(data["effects"][real], direct[real], rtol=1e-5, atol=1e-6)


def test_npz_and_zarr_outputs_agree(trained_run, inputs, tmp_path):
    a = read_effects(predict_effects(str(trained_run / "best.pt"), inputs, str(tmp_path / "a.npz"), progress=False))
    b = read_effects(predict_effects(str(trained_run / "best.pt"), inputs, str(tmp_path / "b"), progress=False))
    for key in ("effects", "reference", "center"):
        assert np.array_equal(a[key], b[key]), key
    assert a["chrom"] == b["chrom"] and a["target_names"] == b["target_names"]
    assert a["attrs"] == b["attrs"]


def test_existing_output_is_refused_without_overwrite(trained_run, inputs, tmp_path):
    for name in ("p.npz", "p.zarr"):
        out = tmp_path / name
        predict_effects(str(trained_run / "best.pt"), inputs, str(out), progress=False)
        with pytest.raises(UserError, match="exists"):
            predict_effects(str(trained_run / "best.pt"), inputs, str(out), progress=False)
        predict_effects(str(trained_run / "best.pt"), inputs, str(out), PredictOptions(overwrite=True), progress=False)
        assert read_effects(out)["effects"].shape == (3, F, 4, L)
    folder = tmp_path / "not_zarr"
    folder.mkdir()
    with pytest.raises(UserError, match="not a Zarr store"):
        predict_effects(
            str(trained_run / "best.pt"), inputs, str(folder), PredictOptions(overwrite=True), progress=False
        )


def test_predict_checks_the_length(trained_run, tmp_path):
    short = Inputs(np.zeros((1, 4, L - 1), dtype=np.uint8), ["x"], np.zeros(1, dtype=np.int64))
    with pytest.raises(UserError, match=str(L)):
        predict_effects(str(trained_run / "best.pt"), short, str(tmp_path / "x.npz"), progress=False)


def test_ism_effects_are_exact_base_model_ism(inputs, tmp_path):
    base = build_base("demo", **DEMO_KWARGS)
    names = [f"t{i}" for i in range(F)]
    out = ism_effects(
        base, inputs, str(tmp_path / "ism.npz"), IsmOptions(target="diff"), target_names=names, progress=False
    )
    data = read_effects(out)
    assert data["effects"].shape == (3, F, 4, L)
    assert data["attrs"]["kind"] == "diff" and data["attrs"]["source"] == "ism"
    assert data["target_names"] == names
    expected, _ = naive_ism(base, torch.from_numpy(inputs.X), target="diff")
    np.testing.assert_allclose(data["effects"], expected.numpy(), rtol=1e-4, atol=1e-6)
    assert_zero_at_reference_and_n(data["effects"], inputs.X, dense=False)


def test_regions_two_column_and_bed(genome, tmp_path):
    n = genome.length("chr4")
    lo, hi = center_range(n, L)
    two_col = tmp_path / "regions.txt"
    two_col.write_text(f"# comment\nchr4\t{lo}\n\nchr4 {hi}\nchr5 1,000\n")
    assert read_regions(two_col) == [("chr4", lo), ("chr4", hi), ("chr5", 1000)]
    got = load_inputs(seq_len=L, genome=genome.path, regions_file=two_col)
    assert got.chrom == ["chr4", "chr4", "chr5"] and got.center.tolist() == [lo, hi, 1000]
    assert np.array_equal(got.X[0], one_hot(genome.fetch("chr4", 0, L)))
    assert np.array_equal(got.X[1], one_hot(genome.fetch("chr4", n - L, n)))

    bed = tmp_path / "regions.bed"
    bed.write_text("track name=x\nbrowser position chr1\nchr6\t1000\t1080\tpeak1\t0\t+\nchr6\t2000\t2001\n")
    assert read_regions(bed) == [("chr6", 1040), ("chr6", 2000)]
    got = load_inputs(seq_len=L, genome=genome.path, regions_file=bed)
    # a BED interval of exactly L bases is that window
    assert np.array_equal(got.X[0], one_hot(genome.fetch("chr6", 1000, 1080)))
    assert got.center.tolist() == [1040, 2000]


def test_region_inputs_and_errors(genome, tmp_path):
    got = load_inputs(seq_len=L, genome=genome.path, region="chr7:3,000")
    assert got.chrom == ["chr7"] and got.center.tolist() == [3000]
    assert np.array_equal(got.X[0], one_hot(genome.window("chr7", 3000, L)))
    n = genome.length("chr7")
    with pytest.raises(UserError, match="does not fit"):
        load_inputs(seq_len=L, genome=genome.path, region=f"chr7:{n}")
    with pytest.raises(UserError, match="exactly one"):
        load_inputs(seq_len=L, genome=genome.path, region="chr7:3000", regions_file=tmp_path / "r.txt")
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t500\t400\n")
    with pytest.raises(UserError, match="bad.bed:1"):
        read_regions(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="no regions"):
        read_regions(empty)


def test_fasta_inputs(tmp_path):
    fasta = tmp_path / "seqs.fa"
    a, b = "ACGT" * 20, "N" + "gatc" * 19 + "AAA"
    fasta.write_text(f">first desc\n{a[:50]}\n{a[50:]}\n>second\n{b}\n")
    got = load_inputs(seq_len=L, fasta=fasta)
    assert got.chrom == ["first", "second"] and got.center.tolist() == [0, 0]
    assert np.array_equal(got.X, np.stack([one_hot(a), one_hot(b)]))
    with pytest.raises(UserError, match="first"):
        load_inputs(seq_len=L + 1, fasta=fasta)
    fasta.write_text(f">first\n{a}\n>second\n{b}A\n")
    with pytest.raises(UserError, match="second"):
        load_inputs(seq_len=L, fasta=fasta)


# ------------------------------------------------------------------------------------------------
# per-region TSVs


def read_tsv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Header, first column and the numeric columns of a gzipped TSV."""
    with gzip.open(path, "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in handle]
    return header, [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


def expected_rows(effects: np.ndarray, seq: str, name: str, first_pos: int) -> tuple[list[str], np.ndarray]:
    """Rows built by hand from the effect tensor ``[F, 4, L]`` and the window's letters."""
    labels, values = [], []
    for j, letter in enumerate(seq.upper()):
        ref = letter if letter in "ACGT" else "N"
        for b, alt in enumerate("AGCT"):
            if alt != ref:
                labels.append(f"{name}:{first_pos + j} {ref}>{alt}")
                values.append(effects[:, b, j])
    return labels, np.array(values)


@pytest.fixture(scope="module")
def n_edge_region(genome) -> tuple[str, int, int]:
    """``(chrom, center, start0)`` of a window whose first five positions are ``N`` (chr7's leading run)."""
    head = genome.fetch("chr7", 0, 1000).upper()
    k = next(i for i, c in enumerate(head) if c in "ACGT")
    start0 = k - 5
    return "chr7", start0 + L // 2, start0


def test_tsv_rows_match_the_effect_tensor(trained_run, genome, genome_path, n_edge_region, tmp_path):
    chrom, center, start0 = n_edge_region
    inputs = load_inputs(seq_len=L, genome=genome_path, region=f"{chrom}:{center}")
    out = tmp_path / "pred.zarr"
    predict_effects(str(trained_run / "best.pt"), inputs, str(out), PredictOptions(tsv=True), progress=False)
    data = read_effects(out)
    (path,) = tsv_paths(out, [chrom], [center])
    assert path == tmp_path / f"pred.0.{chrom}_{center}.tsv.gz" and path.is_file()
    header, labels, values = read_tsv(path)
    assert header == ["variant", *data["target_names"]]

    seq = genome.fetch(chrom, start0, start0 + L)
    want_labels, want_values = expected_rows(data["effects"][0], seq, chrom, start0 + 1)
    assert labels == want_labels
    np.testing.assert_allclose(values, want_values, rtol=1e-5, atol=1e-30)

    # by hand: window index 0 is 1-based position center - L//2 + 1, an N with four rows of exact zeros
    assert labels[:4] == [f"{chrom}:{center - L // 2 + 1} N>{b}" for b in "AGCT"]
    assert (values[:4] == 0).all()
    # the last window position, center + L - L//2, with its genome letter as REF and three rows
    last = center + L - L // 2
    ref = genome.fetch(chrom, last - 1, last).upper()
    assert labels[-3:] == [f"{chrom}:{last} {ref}>{b}" for b in "AGCT" if b != ref]
    b = "AGCT".index(labels[-1][-1])
    np.testing.assert_allclose(values[-1], data["effects"][0, :, b, L - 1], rtol=1e-5)
    # reference-base rows are left out: 3 rows per real position, 4 per N
    n_real = sum(c in "ACGT" for c in seq.upper())
    assert len(labels) == 3 * n_real + 4 * (L - n_real)


def test_tsv_for_fasta_inputs_and_existing_files(trained_run, inputs, tmp_path):
    out = tmp_path / "seqs.npz"
    predict_effects(str(trained_run / "best.pt"), inputs, str(out), PredictOptions(tsv=True), progress=False)
    data = read_effects(out)
    paths = tsv_paths(out, inputs.chrom, inputs.center)
    assert [p.name for p in paths] == ["seqs.0.s0.tsv.gz", "seqs.1.s1.tsv.gz", "seqs.2.s2.tsv.gz"]
    for i, path in enumerate(paths):
        _, labels, values = read_tsv(path)
        want_labels, want_values = expected_rows(data["effects"][i], decode(inputs.X[i]), inputs.chrom[i], 1)
        assert labels == want_labels  # name:index with a 1-based index
        np.testing.assert_allclose(values, want_values, rtol=1e-5, atol=1e-30)
    out.unlink()
    with pytest.raises(UserError, match="seqs.0.s0.tsv.gz"):  # a TSV left from before is not replaced
        predict_effects(str(trained_run / "best.pt"), inputs, str(out), PredictOptions(tsv=True), progress=False)
    assert not out.exists()
    predict_effects(
        str(trained_run / "best.pt"), inputs, str(out), PredictOptions(tsv=True, overwrite=True), progress=False
    )


def test_ism_tsv(inputs, tmp_path):
    base = build_base("demo", **DEMO_KWARGS)
    names = [f"t{i}" for i in range(F)]
    out = ism_effects(
        base, inputs, str(tmp_path / "ism"), IsmOptions(target="diff", tsv=True), target_names=names, progress=False
    )
    data = read_effects(out)
    header, labels, values = read_tsv(tmp_path / "ism.1.s1.tsv.gz")
    assert header == ["variant", *names]
    want_labels, want_values = expected_rows(data["effects"][1], decode(inputs.X[1]), "s1", 1)
    assert labels == want_labels
    np.testing.assert_allclose(values, want_values, rtol=1e-5, atol=1e-30)


def test_variant_table_shapes():
    X = one_hot("ANCT")
    effects = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    labels, values = variant_table(effects, X, "chr1", 10)  # L = 4: positions 9..12
    assert labels == ["chr1:9 A>G", "chr1:9 A>C", "chr1:9 A>T", "chr1:10 N>A", "chr1:10 N>G", "chr1:10 N>C",
                      "chr1:10 N>T", "chr1:11 C>A", "chr1:11 C>G", "chr1:11 C>T", "chr1:12 T>A", "chr1:12 T>G",
                      "chr1:12 T>C"]  # fmt: skip
    assert values.shape == (13, 2)
    assert values[0].tolist() == effects[:, 1, 0].tolist() and values[-1].tolist() == effects[:, 2, 3].tolist()


# ------------------------------------------------------------------------------------------------
# --diff


def test_logfold_to_diff_is_the_exact_inverse():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 5, generator=g, dtype=torch.float64) * 0.98 + 0.01
    alt = torch.rand(3, 5, 4, 7, generator=g, dtype=torch.float64) * 0.98 + 0.01
    lf = log_fold(alt, ref[:, :, None, None])
    lf[:, :, 0, 2] = 0.0
    diff = logfold_to_diff(lf, ref)
    expected = alt - ref[:, :, None, None]
    expected[:, :, 0, 2] = 0.0
    torch.testing.assert_close(diff, expected, rtol=1e-9, atol=1e-12)
    assert (diff[:, :, 0, 2] == 0).all()


@pytest.fixture(scope="module")
def region_inputs(genome_path, n_edge_region, tmp_path_factory) -> Inputs:
    """Three genomic windows (the first starts with five N)."""
    chrom, center, _ = n_edge_region
    regions = tmp_path_factory.mktemp("regions") / "diff_regions.txt"
    regions.write_text(f"{chrom} {center}\nchr3 2500\nchr5 3100\n")
    return load_inputs(seq_len=L, genome=genome_path, regions_file=regions)


def test_predict_diff_equals_base_model_alt_minus_ref(make_exact_checkpoint, genome_path, region_inputs, tmp_path):
    ckpt = make_exact_checkpoint(tmp_path / "exact.pt", genome_path)
    base = build_base("demo", **DEMO_KWARGS)
    X = torch.from_numpy(region_inputs.X)
    lf = read_effects(predict_effects(str(ckpt), region_inputs, str(tmp_path / "lf.npz"), progress=False))
    expected_lf, _ = naive_ism(base, X, target="logfold")
    np.testing.assert_allclose(lf["effects"], expected_lf.numpy(), rtol=1e-5, atol=1e-6)  # the toy is exact

    out = predict_effects(
        str(ckpt), region_inputs, str(tmp_path / "diff.npz"), PredictOptions(diff=True, batch_size=2), progress=False
    )
    got = read_effects(out)
    assert got["attrs"]["kind"] == "diff" and got["attrs"]["converted_from"] == "logfold"
    expected, ref_pred = naive_ism(base, X, target="diff")
    np.testing.assert_allclose(got["effects"], expected.numpy(), rtol=1e-4, atol=2e-7)
    assert_zero_at_reference_and_n(got["effects"], region_inputs.X, dense=False)
    # alt - ref by hand for one variant: the base model on the mutated sequence minus on the reference
    Xv = X[1:2].clone().float()
    j = 17
    b = int((Xv[0, :, j] == 0).nonzero()[0])
    Xv[0, :, j] = 0
    Xv[0, b, j] = 1
    with torch.no_grad():
        by_hand = (base(Xv) - base(X[1:2].float()))[0].numpy()
    np.testing.assert_allclose(got["effects"][1, :, b, j], by_hand, rtol=1e-4, atol=2e-7)


def test_predict_diff_finds_moved_weights(make_exact_checkpoint, genome_path, region_inputs, tmp_path):
    weights = tmp_path / "base.pt"
    ckpt = make_exact_checkpoint(tmp_path / "exact.pt", genome_path, weights=weights)
    moved = tmp_path / "moved.pt"
    weights.rename(moved)
    with pytest.raises(UserError, match="--weights"):
        predict_effects(str(ckpt), region_inputs, str(tmp_path / "d.npz"), PredictOptions(diff=True), progress=False)
    out = predict_effects(
        str(ckpt), region_inputs, str(tmp_path / "d.npz"), PredictOptions(diff=True, weights=moved), progress=False
    )
    expected, _ = naive_ism(build_base("demo", **DEMO_KWARGS), torch.from_numpy(region_inputs.X), target="diff")
    np.testing.assert_allclose(read_effects(out)["effects"], expected.numpy(), rtol=1e-4, atol=2e-7)
    other = tmp_path / "other.pt"
    torch.save({k: v + 1 for k, v in build_base("demo", **DEMO_KWARGS).state_dict().items()}, other)
    with pytest.raises(UserError, match="sha256"):
        predict_effects(
            str(ckpt), region_inputs, str(tmp_path / "e.npz"), PredictOptions(diff=True, weights=other), progress=False
        )
    with pytest.raises(UserError, match="--diff"):
        predict_effects(
            str(ckpt), region_inputs, str(tmp_path / "e.npz"), PredictOptions(weights=moved), progress=False
        )


def test_checkpoint_with_inconsistent_length_is_refused(trained_run, inputs, tmp_path):
    bad = rewrite_checkpoint(trained_run / "best.pt", tmp_path / "bad.pt", seq_len=L + 8)
    with pytest.raises(UserError, match=f"records seq_len {L + 8}"):
        predict_effects(str(bad), inputs, str(tmp_path / "x.npz"), progress=False)


def test_bf16_inference_is_close_to_float32_and_keeps_exact_zeros(trained_run, tmp_path):
    from pipeline.apply.outputs import read_effects
    from pipeline.apply.predict import predict_regions

    ckpt = str(trained_run / "best.pt")
    outs = {}
    for precision in ("float32", "bf16"):
        out = tmp_path / f"{precision}.npz"
        predict_regions(
            ckpt,
            str(out),
            InputOptions(region="chr1:5000"),
            PredictOptions(device="cpu", precision=precision),
            progress=False,
        )
        outs[precision] = read_effects(out)
    a, b = outs["float32"]["effects"], outs["bf16"]["effects"]
    reference = outs["float32"]["reference"].astype(bool)  # [N, 4, L]
    for i in range(len(b)):  # [F, 4, L] of window i: exact zeros at its reference bases
        assert (b[i][:, reference[i]] == 0).all()
    assert np.abs(b - a).max() <= 0.05 * np.abs(a).max() + 1e-6
    assert not np.array_equal(a, b)  # bf16 really ran
