"""``background``: per-target quantiles of the multiplexer's effects over seeded windows; a score's
percentile is the share of background effects at or below it (checked against the effects themselves,
recomputed independently), and a damaged or foreign background is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import assert_one_line_error, flip_byte, invoke, ok

from pipeline.apply.variants.background import build_background
from pipeline.apply.variants.options import BackgroundOptions
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
