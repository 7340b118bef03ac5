"""``predict`` and ``ism`` outputs, region inputs, and the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.encoding import one_hot
from pipeline.errors import UserError
from pipeline.genome import center_range
from pipeline.ism import naive_ism
from pipeline.models import build_base, load_checkpoint
from pipeline.outputs import read_effects
from pipeline.plot import plot_effects
from pipeline.predict import ism_effects, predict_effects
from pipeline.regions import Inputs, load_inputs, read_regions

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
    path = predict_effects(str(trained_run / "best.pt"), inputs, str(out), device="cpu", progress=False, batch_size=2)
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
        predict_effects(str(trained_run / "best.pt"), inputs, str(out), progress=False, overwrite=True)
        assert read_effects(out)["effects"].shape == (3, F, 4, L)
    folder = tmp_path / "not_zarr"
    folder.mkdir()
    with pytest.raises(UserError, match="not a Zarr store"):
        predict_effects(str(trained_run / "best.pt"), inputs, str(folder), progress=False, overwrite=True)


def test_predict_checks_the_length(trained_run, tmp_path):
    short = Inputs(np.zeros((1, 4, L - 1), dtype=np.uint8), ["x"], np.zeros(1, dtype=np.int64))
    with pytest.raises(UserError, match=str(L)):
        predict_effects(str(trained_run / "best.pt"), short, str(tmp_path / "x.npz"), progress=False)


def test_ism_effects_are_exact_base_model_ism(inputs, tmp_path):
    base = build_base("demo", seq_len=L, n_targets=F, channels=12, hidden=8)
    names = [f"t{i}" for i in range(F)]
    out = ism_effects(base, inputs, str(tmp_path / "ism.npz"), target="diff", target_names=names, progress=False)
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


@pytest.fixture(scope="module")
def prediction(trained_run, genome_path, tmp_path_factory) -> Path:
    inputs = load_inputs(seq_len=L, genome=genome_path, region="chr7:3000")
    out = tmp_path_factory.mktemp("pred") / "pred.zarr"
    return Path(predict_effects(str(trained_run / "best.pt"), inputs, str(out), progress=False))


@pytest.mark.parametrize("target", [None, 1, "1"])
def test_plot_png(prediction, tmp_path, target):
    import matplotlib.image

    out = tmp_path / "plot.png"
    assert plot_effects(str(prediction), str(out), target=target, width=40) == str(out)
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    rgb = image[..., :3]
    assert rgb.std() > 0.05  # not blank
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # a heatmap, letters and axes


def test_plot_pdf_and_named_target(prediction, tmp_path):
    names = read_effects(prediction)["target_names"]
    out = tmp_path / "plot.pdf"
    plot_effects(str(prediction), str(out), target=names[2])
    assert out.read_bytes().startswith(b"%PDF") and out.stat().st_size > 1000


def test_plot_errors(prediction, tmp_path):
    with pytest.raises(UserError, match="no_such_target"):
        plot_effects(str(prediction), str(tmp_path / "a.png"), target="no_such_target")
    with pytest.raises(UserError, match="out of range"):
        plot_effects(str(prediction), str(tmp_path / "a.png"), target=99)
    with pytest.raises(UserError, match="index"):
        plot_effects(str(prediction), str(tmp_path / "a.png"), index=5)
    with pytest.raises(UserError, match=".jpg"):
        plot_effects(str(prediction), str(tmp_path / "a.jpg"))
    existing = tmp_path / "b.png"
    plot_effects(str(prediction), str(existing))
    with pytest.raises(UserError, match="exists"):
        plot_effects(str(prediction), str(existing))
    plot_effects(str(prediction), str(existing), overwrite=True)
    with pytest.raises(UserError, match="does not exist"):
        plot_effects(str(tmp_path / "missing.zarr"), str(tmp_path / "c.png"))
