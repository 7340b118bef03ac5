"""``background``: per-target quantiles of the multiplexer's effects over seeded windows; a score's
percentile is the share of background effects at or below it (checked against the effects themselves,
recomputed independently), and a damaged or foreign background is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
import zarr
from helpers import assert_one_line_error, flip_byte, invoke, ok, rewrite_checkpoint

from pipeline.apply.variants.background import build_background
from pipeline.apply.variants.options import BackgroundOptions
from pipeline.apply.variants.score_vcf import read_tsv_scores
from pipeline.core.encoding import one_hot
from pipeline.core.genome import Genome
from pipeline.errors import MetadataError, UserError
from pipeline.ism import mask_effects
from pipeline.models import load_checkpoint
from pipeline.store.background import grid_share, open_background


@pytest.fixture(scope="module")
def built(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A background of 6 windows of the test split that keeps every effect of each window."""
    out = str(tmp_path_factory.mktemp("background") / "b.zarr")
    options = BackgroundOptions(windows=6, seed=3, values_per_window=10**6, device="cpu", batch_size=4)
    build_background(str(trained_run / "best.pt"), out, options, progress=False)
    return out


def _all_effects(checkpoint: Path, genome: Genome, chrom: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Every effect at a non-reference base of a non-N position of the windows, ``[F, n]``: recomputed
    from the model and the genome, one window at a time."""
    model, meta = load_checkpoint(checkpoint)
    values = []
    for c, p in zip(chrom, center, strict=True):
        X = torch.from_numpy(one_hot(genome.window(str(c), int(p), meta["seq_len"])))[None].float()
        with torch.no_grad():
            y = mask_effects(model(X).float(), X)[0].numpy()  # [F, 4, L]
        x = X[0].numpy()
        alternative = (x == 0) & (x.sum(axis=0) == 1)[None]
        values.append(y[:, alternative])
    return np.concatenate(values, axis=1)


def test_percentile_of_a_background_effect_is_its_rank(built, trained_run, genome, tiny_spec):
    """Every effect of the background's own windows: its percentile is its share among all of them
    (at or below), to within the quantile grid's step (and one value)."""
    bg = open_background(built)
    assert len(bg.probs) >= 1000 and bg.signed.shape == (4, len(bg.probs))
    chrom, center = open_zarr(built, "chrom"), open_zarr(built, "center")
    assert set(chrom) <= set(tiny_spec.splits["test"].chroms)  # the default: the spec's test split
    values = _all_effects(trained_run / "best.pt", genome, chrom, center)
    assert values.shape[1] == bg.attrs["windows"]["values_per_target"]  # everything was kept
    rng = np.random.default_rng(0)
    tolerance = 1 / (len(bg.probs) - 1) + 2 / values.shape[1]
    for f in range(values.shape[0]):
        x = rng.choice(values[f], size=300)
        share = (values[f][None, :] <= x[:, None]).mean(axis=1)
        q = bg.percentile(np.repeat(x[:, None], 2, axis=1), np.array([f, f]))
        assert np.abs(q[:, 0] - share).max() <= tolerance
        assert np.array_equal(q[:, 0], q[:, 1])
        abs_share = (np.abs(values[f])[None, :] <= np.abs(x)[:, None]).mean(axis=1)
        abs_q = grid_share(bg.absolute[f].astype(np.float64), bg.probs, np.abs(x))
        assert np.abs(abs_q - abs_share).max() <= tolerance


def open_zarr(path: str, name: str) -> np.ndarray:
    return np.asarray(zarr.open_group(path, mode="r")[name][...])


def test_grid_share_at_ties_and_ends():
    """At a level held by several quantiles the share is the largest of their probabilities; below the
    first level 0, at or above the last 1; NaN stays NaN."""
    levels = np.array([0.0, 1.0, 1.0, 1.0, 2.0])
    probs = np.linspace(0, 1, 5)
    got = grid_share(levels, probs, np.array([-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, np.nan]))
    assert got[:7].tolist() == [0.0, 0.0, 0.125, 0.75, 0.875, 1.0, 1.0]
    assert np.isnan(got[7])


def test_same_seed_same_background_other_seed_other_windows(built, trained_run, tmp_path):
    again = str(tmp_path / "again.zarr")
    other = str(tmp_path / "other.zarr")
    checkpoint = str(trained_run / "best.pt")
    same = BackgroundOptions(windows=6, seed=3, values_per_window=10**6, device="cpu", batch_size=4)
    build_background(checkpoint, again, same, progress=False)
    build_background(checkpoint, other, BackgroundOptions(windows=6, seed=4, values_per_window=50), progress=False)
    for name in ("chrom", "center", "signed", "absolute"):
        assert np.array_equal(open_zarr(built, name), open_zarr(again, name))
    assert not np.array_equal(open_zarr(built, "center"), open_zarr(other, "center"))
    assert open_background(other).attrs["windows"]["values_per_target"] == 6 * 50


def test_damaged_background_is_refused(built, tmp_path):
    for damage in ("array", "attribute"):
        copy = tmp_path / f"{damage}.zarr"
        shutil.copytree(built, copy)
        if damage == "array":
            chunk = next(p for p in (copy / "signed").rglob("*") if p.is_file() and p.name != "zarr.json")
            flip_byte(chunk, -3)
        else:
            meta = json.loads((copy / "zarr.json").read_text())
            meta["attributes"]["target_names"][1] = meta["attributes"]["target_names"][0]
            (copy / "zarr.json").write_text(json.dumps(meta))
        with pytest.raises(MetadataError):
            open_background(copy)


def test_another_checkpoint_is_refused(built):
    bg = open_background(built)
    bg.check_model(bg.checkpoint_sha256, bg.target_names, "the checkpoint")
    with pytest.raises(UserError, match="another checkpoint"):
        bg.check_model("0" * 64, bg.target_names, "checkpoint 'other.pt'")
    with pytest.raises(UserError, match="other targets"):
        bg.check_model(bg.checkpoint_sha256, bg.target_names[::-1], "checkpoint 'x.pt'")


def test_command_line(trained_run, tmp_path, built):
    checkpoint = trained_run / "best.pt"
    out = tmp_path / "cli.zarr"
    result = ok("background", "--checkpoint", checkpoint, "--out", out, "--windows", 2, "--device", "cpu",
                "--chroms", "chr8", "--values-per-window", 20)  # fmt: skip
    assert "background: 2 windows, 4 targets, 40 effects per target" in result.output
    assert set(open_zarr(str(out), "chrom")) == {"chr8"}
    assert_one_line_error(invoke("background", "--checkpoint", checkpoint, "--out", out), "exists")
    assert_one_line_error(
        invoke("background", "--checkpoint", checkpoint, "--out", tmp_path / "x.zarr", "--split", "nope"), "'nope'"
    )
    assert_one_line_error(invoke("background", "--checkpoint", checkpoint, "--out", tmp_path / "x.tsv"), ".zarr")
    assert_one_line_error(
        invoke("background", "--checkpoint", checkpoint, "--out", tmp_path / "y.zarr", "--split", "test",
               "--chroms", "chr8"), "one of",
    )  # fmt: skip
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "y.zarr").exists()
    assert_one_line_error(invoke("background", "--checkpoint", checkpoint, "--out", tmp_path / "q.zarr",
                                 "--quantiles", 10), "1000")  # fmt: skip


def test_percentile_of_many_targets_at_once_equals_one_target_at_a_time(built):
    """The vectorised search over all targets equals :func:`grid_share` target by target, ties included."""
    bg = open_background(built)
    rng = np.random.default_rng(1)
    levels = np.sort(rng.normal(size=(3, 1001)).round(1), axis=1).astype(np.float32)  # many ties
    fake = type(bg)(bg.path, bg.attrs, bg.probs, levels, levels)
    x = np.concatenate([rng.normal(size=(200, 3)) * 2, levels[:, ::97].T, np.full((1, 3), np.nan)])
    got = fake.percentile(x, np.arange(3))
    for j in range(3):
        expected = grid_share(levels[j].astype(np.float64), bg.probs, x[:, j])
        assert np.allclose(got[:, j], expected, atol=1e-9, equal_nan=True)


def _snv_vcf(path: Path, genome: Genome, chrom: str, positions: list[int]) -> Path:
    """A VCF of one SNV per position (ALT: the next base of ACGT after REF)."""
    rows = []
    for p in positions:
        ref = genome.fetch(chrom, p - 1, p).upper()
        if ref not in "ACGT":
            continue
        rows.append(f"{chrom}\t{p}\tv{p}\t{ref}\t{'ACGT'[('ACGT'.index(ref) + 1) % 4]}\t.\tPASS\t.\n")
    head = f"##fileformat=VCFv4.2\n##contig=<ID={chrom},length={genome.length(chrom)}>\n"
    path.write_text(head + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(rows))
    return path


def test_score_vcf_and_lookup_give_the_same_percentile(built, trained_run, genome, tmp_path):
    """The must-hold: lookup --background and score-vcf --background (its SNVs read from the same catalogue)
    give the same percentile for the same SNV and target, and it is the background's share at or below
    the score; the VCF and Zarr outputs hold the same percentiles."""
    checkpoint = trained_run / "best.pt"
    cat = tmp_path / "cat.zarr"
    ok("catalogue", "--checkpoint", checkpoint, "--out", cat, "--region", "chr9:1001-1400", "--device", "cpu")
    vcf = _snv_vcf(tmp_path / "a.vcf", genome, "chr9", [1050, 1120, 1121, 1260, 1399])
    looked, scored = tmp_path / "l.tsv", tmp_path / "s.tsv"
    ok("lookup", cat, "--vcf", vcf, "--out", looked, "--background", built)
    for out in (scored, tmp_path / "s.vcf.gz", tmp_path / "s.zarr"):
        ok("score-vcf", "--checkpoint", checkpoint, "--vcf", vcf, "--out", out, "--catalogue", cat,
           "--background", built, "--device", "cpu")  # fmt: skip
    a, b = read_tsv_scores(looked), read_tsv_scores(scored)
    assert a.semantics["background"]["windows"] == 6 and "q" in b.semantics["values"]
    bg = open_background(built)
    names = bg.target_names
    stored = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    effects = stored["scores"][:].astype(np.float64)  # the catalogue's float16 values, exactly
    for k, (x, y) in enumerate(zip(a.rows, b.rows, strict=True)):
        assert x["status"] == y["status"] == "scored"
        assert x["values"]["q"] == y["values"]["q"]
        expected = [grid_share(bg.signed[f].astype(np.float64), bg.probs, effects[k, f : f + 1])[0] for f in range(4)]
        np.testing.assert_allclose([y["values"]["q"][n] for n in names], expected, atol=1e-6)  # 6 digits in a TSV
    q_tsv = np.array([[r["values"]["q"][n] for n in names] for r in b.rows])
    np.testing.assert_allclose(stored["q_values"][:], q_tsv, atol=1e-6)
    with pysam.VariantFile(str(tmp_path / "s.vcf.gz")) as vf:
        keys = [k for k in vf.header.info if k.endswith("_q")]
        assert len(keys) == len(names)
        got = np.array([[record.info[k][0] for k in keys] for record in vf])
    np.testing.assert_allclose(got, q_tsv, atol=1e-5)


def test_model_scores_get_their_own_percentiles_and_shards_keep_them(built, trained_run, genome, tmp_path):
    """score-vcf from the model (shared windows): every percentile is the background's share at or below the
    row's own score; two shards (one unit each) merged equal one process."""
    checkpoint = trained_run / "best.pt"
    vcf = _snv_vcf(tmp_path / "a.vcf", genome, "chr8", list(range(1000, 2600)))  # 2 units of 1,000 records
    one = tmp_path / "one.tsv"
    ok("score-vcf", "--checkpoint", checkpoint, "--vcf", vcf, "--out", one, "--background", built, "--device", "cpu")
    bg = open_background(built)
    for row in read_tsv_scores(one).rows:
        effects = np.array([[row["effects"][n] for n in bg.target_names]], dtype=np.float64)
        q = bg.percentile(effects, np.arange(len(bg.target_names)))[0]
        # the row's percentile is of its float32 score; the TSV's score has 6 digits: near, not equal
        np.testing.assert_allclose([row["values"]["q"][n] for n in bg.target_names], q, atol=1e-3)
    sharded = tmp_path / "sharded.tsv"
    for shard in ("0/2", "1/2"):
        ok("score-vcf", "--checkpoint", checkpoint, "--vcf", vcf, "--out", sharded, "--background", built,
           "--device", "cpu", "--shard", shard)  # fmt: skip
    assert sharded.read_bytes() == one.read_bytes()


def test_a_background_of_another_checkpoint_or_quantity_is_refused(built, trained_run, genome, tmp_path):
    vcf = _snv_vcf(tmp_path / "a.vcf", genome, "chr8", [1000])
    other = rewrite_checkpoint(trained_run / "best.pt", tmp_path / "other.pt", step=999)
    result = invoke("score-vcf", "--checkpoint", other, "--vcf", vcf, "--out", tmp_path / "x.tsv", "--background",
                    built, "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "another checkpoint")
    result = invoke("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", tmp_path / "y.tsv",
                    "--background", built, "--diff", "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "logfold effects", "diff")
    result = invoke("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", tmp_path / "z.tsv",
                    "--background", vcf, "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "not a background")
    assert not any((tmp_path / n).exists() for n in ("x.tsv", "y.tsv", "z.tsv"))
