"""The Python API (``pipeline.api``), used as a notebook would: load, predict, score, look up.

Each function runs on the demo-sized fixtures (the trained run and synthetic genome of ``conftest``),
and what it returns is compared with what the command line writes for the same inputs.
"""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from helpers import ok

from pipeline import api
from pipeline.errors import UserError

CHROM = "chr9"


@pytest.fixture(scope="module")
def model(trained_run: Path) -> api.Model:
    return api.load(trained_run / "best.pt", device="cpu")


@pytest.fixture(scope="module")
def bases(genome) -> str:
    return genome.fetch(CHROM, 0, 600).upper()


def snv(bases: str, pos: int, k: int = 0) -> str:
    ref = bases[pos - 1]
    return f"{CHROM}:{pos}:{ref}>{[b for b in 'ACGT' if b != ref][k]}"


def cli_frame(path: Path) -> pd.DataFrame:
    """The CLI's TSV read by pandas alone (the ``##`` lines skipped, text kept as text)."""
    n = sum(1 for line in path.read_text().splitlines() if line.startswith("##"))
    text = dict.fromkeys(["chrom", "id", "ref", "alt", "ref_check", "ref_match", "status"], str)
    return pd.read_csv(path, sep="\t", skiprows=n, dtype=text, keep_default_na=False, na_values=[""])


def same(frame: pd.DataFrame, cli: pd.DataFrame) -> None:
    assert list(frame.columns) == list(cli.columns)
    pd.testing.assert_frame_equal(frame.astype({"window_center": "float64"}), cli.astype({"window_center": "float64"}))


# ------------------------------------------------------------------------------------------------
# load and predict
# ------------------------------------------------------------------------------------------------


def test_load_reads_what_the_checkpoint_records(model, trained_run):
    assert model.seq_len == 80 and len(model.target_names) == 4 and model.target_kind == "logfold"
    assert model.device == torch.device("cpu") and not model.module.training


def test_predict_sequences_equals_predict_on_the_same_windows(model, trained_run, genome_path, genome, tmp_path):
    """Strings, one-hot numpy and torch give one answer, and it is `multiplexer predict`'s."""
    L = model.seq_len
    centres = [200, 333]
    windows = [genome.window(CHROM, c, L) for c in centres]
    y = api.predict(model, windows)
    assert isinstance(y, np.ndarray) and y.shape == (2, 4, 4, L) and y.dtype == np.float32
    from pipeline.core.encoding import one_hot

    X = np.stack([one_hot(w) for w in windows])
    np.testing.assert_array_equal(api.predict(model, X), y)
    t = api.predict(model, torch.from_numpy(X[0]), output="torch")
    assert isinstance(t, torch.Tensor) and t.shape == (1, 4, 4, L)
    np.testing.assert_allclose(t.numpy()[0], y[0], rtol=1e-5, atol=1e-6)  # a batch of 1: float32 rounding
    # exactly 0 at the reference bases
    assert np.all(y[0][:, X[0].astype(bool)] == 0)
    # the command line on the same regions
    regions = tmp_path / "regions.txt"
    regions.write_text("".join(f"{CHROM} {c}\n" for c in centres))
    ok("predict", "--checkpoint", trained_run / "best.pt", "--regions", regions, "--genome", genome_path,
       "--out", tmp_path / "p.zarr", "--device", "cpu")  # fmt: skip
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["effects"][:], y)
    np.testing.assert_array_equal(api.predict_regions(model, [f"{CHROM}:{c}" for c in centres]), y)
    np.testing.assert_array_equal(api.predict_regions(model, [(CHROM, c) for c in centres], genome=genome_path), y)


def test_predict_diff_is_alt_minus_ref(model, genome):
    w = genome.window(CHROM, 300, model.seq_len)
    lf, diff = api.predict(model, w), api.predict(model, w, diff=True)
    assert lf.shape == diff.shape and np.all((lf == 0) == (diff == 0))
    assert np.all(np.sign(lf) == np.sign(diff))  # log-fold and alt - ref agree in sign


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: api.predict(m, "ACGT"), "the model's length 80"),
        (lambda m: api.predict(m, np.zeros((2, 3, 80))), "[N, 4, L]"),
        (lambda m: api.predict(m, "N" * 80), "all N"),
        (lambda m: api.predict(m, "A" * 80, output="pandas"), "numpy or torch"),
        (lambda m: api.predict_regions(m, "chr9:5"), "does not fit"),
        (lambda m: api.score_variants(m, ["chr9:x:A>C"]), "chr:pos:REF>ALT"),
        (lambda m: api.score_variants(m, ["chr9:100:A>C"], shard="0/2"), "one process"),
        (lambda m: api.score_variants(m, ["chr9:100:A>C"], values="ref,nope"), "--values"),
    ],
)
def test_bad_calls_are_user_errors(model, call, message):
    with pytest.raises(UserError, match=None) as info:
        call(model)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------
# score variants and look them up: the DataFrame is the CLI's TSV
# ------------------------------------------------------------------------------------------------


def test_score_variants_equals_the_cli_tsv(model, trained_run, genome_path, bases, tmp_path):
    variants = [snv(bases, p, k) for p, k in [(120, 0), (125, 1), (300, 2), (450, 0)]]
    frame = api.score_variants(model, variants, values="ref,alt", genome=str(genome_path))
    assert list(frame["id"]) == variants and (frame["status"] == "scored").all()
    assert {f"{n}_{k}" for n in model.target_names for k in ("ref", "alt")} <= set(frame.columns)
    assert "values" in frame.attrs["semantics"]
    vcf = tmp_path / "v.vcf"
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    for v in variants:
        chrom, pos, change = v.split(":")
        ref, alt = change.split(">")
        lines.append(f"{chrom}\t{pos}\t{v}\t{ref}\t{alt}\t.\t.\t.")
    vcf.write_text("\n".join(lines) + "\n")
    for extra in ([], ["--exact"]):
        out = tmp_path / f"cli{len(extra)}.tsv"
        ok("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", out, "--genome", genome_path,
           "--values", "ref,alt", "--device", "cpu", *extra)  # fmt: skip
        got = api.score_variants(
            trained_run / "best.pt", vcf, values="ref,alt", genome=str(genome_path), device="cpu",
            mode="exact" if extra else "shared",
        )  # fmt: skip
        same(got, cli_frame(out))
    same(frame, cli_frame(tmp_path / "cli0.tsv"))


def test_lookup_equals_the_cli_tsv(trained_run, genome_path, bases, tmp_path):
    cat = tmp_path / "cat.zarr"
    ok("catalogue", "--checkpoint", trained_run / "best.pt", "--out", cat, "--genome", genome_path,
       "--region", f"{CHROM}:1-400", "--device", "cpu")  # fmt: skip
    frame = api.lookup(cat, region=f"{CHROM}:200-210")
    assert len(frame) == 33 and set(frame["status"]) == {"scored"}
    out = tmp_path / "l.tsv"
    ok("lookup", cat, "--region", f"{CHROM}:200-210", "--out", out)
    same(frame, cli_frame(out))
    queries = [snv(bases, 150), snv(bases, 390, 2)]
    valued = api.lookup(cat, queries, values="ref,alt", device="cpu")
    out = tmp_path / "v.tsv"
    ok("lookup", cat, *[a for q in queries for a in ("--variant", q)], "--values", "ref,alt", "--out", out)
    same(valued, cli_frame(out))
    # a notebook step: the table of one target by position and ALT
    table = frame.pivot(index="pos", columns="alt", values=model_target(frame))
    assert table.shape == (11, 4) and int(table.isna().sum().sum()) == 11  # the REF base of each position


def model_target(frame: pd.DataFrame) -> str:
    return [c for c in frame.columns if c.startswith("demo_")][0]


def test_without_pandas_the_dataframe_calls_name_the_extra(model, monkeypatch):
    real = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named 'pandas'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(UserError, match=r"pip install 'multiplexer\[tables\]'"):
        api.score_variants(model, ["chr9:100:A>C"])
