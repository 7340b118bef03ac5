"""``catalogue export`` (a bgzip TSV with a tabix index, or Parquet) and ``score-vcf``'s ``.parquet`` output:
the exported rows are the catalogue's, as ``lookup`` answers them; Parquet equals the TSV; an interrupted
export resumes by contig; bad inputs are one line."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pysam
import pytest
from helpers import assert_one_line_error, invoke, ok

import pipeline.apply.variants.export as export_module
import pipeline.store.tiles as tiles_module
from pipeline.apply.variants.catalogue import build_catalogue
from pipeline.apply.variants.export import export_catalogue
from pipeline.apply.variants.lookup import lookup
from pipeline.apply.variants.options import CatalogueOptions, ExportOptions, LookupOptions, ScoreVcfOptions
from pipeline.apply.variants.score_vcf import read_scores, score_vcf
from pipeline.core.encoding import ALPHABET
from pipeline.errors import UserError
from pipeline.store.catalogue import N_CODE, open_catalogue

REGIONS = ["chrX:1-3000", "chr21:101-1300"]
"""Three contigs' worth of units once chr19 is added whole (units of 60 positions: see ``small_units``)."""


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, trained_run, genome_path) -> Path:
    """A complete catalogue of the shared genome (chrX, chr21 regions and chr19 whole), in units of 60
    positions so contigs span many units."""
    out = tmp_path_factory.mktemp("export") / "cat.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiles_module, "CHUNK_BYTES", 60 * 3 * 4 * 2)
        mp.setattr(tiles_module, "BLOCK_BYTES", 20 * 3 * 4 * 2)
        options = CatalogueOptions(regions=tuple(REGIONS), chroms="chr19", stride=20, genome=str(genome_path),
                                   device="cpu")  # fmt: skip
        build_catalogue(str(trained_run / "best.pt"), str(out), options, progress=False)
    return out


def read_tsv(path: Path) -> pd.DataFrame:
    """The export TSV as pandas reads it: skip the ``##`` lines, the ``#`` header names the columns."""
    with gzip.open(path, "rt") as handle:
        meta = 0
        while handle.readline().startswith("##"):
            meta += 1
    frame = pd.read_csv(path, sep="\t", skiprows=meta, keep_default_na=False, na_values=[""])
    return frame.rename(columns={"#chrom": "chrom"})


def snvs_of(cat_path: Path) -> list[tuple[str, int, str, str]]:
    """Every SNV of the catalogue, from its ``ref`` arrays (independently of the export)."""
    cat = open_catalogue(cat_path)
    out = []
    for k, contig in enumerate(cat.meta.contigs):
        ref = np.asarray(cat.array(k, "ref")[:])
        for p in np.flatnonzero(ref < N_CODE):
            base = ALPHABET[int(ref[p])]
            out += [(contig.name, int(p) + 1, base, alt) for alt in ALPHABET if alt != base]
    return out


def test_tabix_region_returns_the_catalogues_snvs_as_lookup_answers_them(catalogue, tmp_path):
    out = tmp_path / "S.tsv.gz"
    line = ok("catalogue", "export", catalogue, "--out", out).output
    assert "exported" in line and out.with_name("S.tsv.gz.tbi").is_file()
    assert not out.with_name("S.tsv.gz.parts").exists()
    with pysam.TabixFile(str(out)) as tabix:
        header = list(tabix.header)
        rows = [r.split("\t") for r in tabix.fetch("chrX", 999, 2000)]
    assert header[-1].startswith("#chrom\tpos\tref\talt\tmax_abs\ttop_target\ttop1_target\ttop1_effect")
    assert any(h.startswith("##quantity=") for h in header) and any(h.startswith("##column_max_abs=") for h in header)
    looked = tmp_path / "l.tsv"
    lookup(str(catalogue), str(looked), LookupOptions(region="chrX:1000-2000"), progress=False)
    scored = [r for r in read_scores(looked) if r["status"] == "scored"]
    assert [(r[0], int(r[1]), r[2], r[3]) for r in rows] == [(r["chrom"], r["pos"], r["ref"], r["alt"]) for r in scored]
    assert len(rows) == 3 * 1001 - 3 * sum(r["status"] != "scored" for r in read_scores(looked))
    for row, want in zip(rows, scored):
        values = np.array(list(want["effects"].values()), dtype=np.float16)  # every target is stored
        names = list(want["effects"])
        assert np.float16(row[4]) == np.abs(values).max()
        best = np.flatnonzero(np.abs(values) == np.abs(values).max())
        assert row[5] in [names[b] for b in best]  # the catalogue's top target (ties in float16: any of them)
    whole = read_tsv(out)
    assert list(zip(whole.chrom, whole.pos, whole.ref, whole.alt)) == snvs_of(catalogue)


def test_top_k_ranks_the_stored_targets_by_absolute_effect(catalogue, tmp_path):
    out = tmp_path / "S.tsv.gz"
    export_catalogue(str(catalogue), str(out), ExportOptions(top_k=2), progress=False)
    table = read_tsv(out)
    assert list(table.columns[6:]) == ["top1_target", "top1_effect", "top2_target", "top2_effect"]
    looked = tmp_path / "l.tsv"
    lookup(str(catalogue), str(looked), LookupOptions(region="chr21:101-200"), progress=False)
    want = {(r["pos"], r["alt"]): r["effects"] for r in read_scores(looked) if r["status"] == "scored"}
    got = table[(table.chrom == "chr21") & (table.pos <= 200)]
    assert len(got) == len(want) > 0
    for r in got.itertuples():
        effects = want[(r.pos, r.alt)]
        ranked = sorted(effects, key=lambda name: -abs(np.float16(effects[name])))  # stable: target order
        assert [r.top1_target, r.top2_target] == ranked[:2]
        assert np.float16(r.top1_effect) == np.float16(effects[ranked[0]])
        assert np.float16(r.top2_effect) == np.float16(effects[ranked[1]])
        assert np.float16(r.max_abs) == abs(np.float16(r.top1_effect))  # all targets are stored


def test_parquet_equals_the_tsv_in_row_groups_of_one_contig(catalogue, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "ROW_GROUP_ROWS", 1000)
    tsv, parquet = tmp_path / "S.tsv.gz", tmp_path / "S.parquet"
    export_catalogue(str(catalogue), str(tsv), progress=False)
    summary = export_catalogue(str(catalogue), str(parquet), progress=False)
    assert summary.index is None and summary.n_rows == len(snvs_of(catalogue))
    a, b = read_tsv(tsv), pd.read_parquet(parquet)
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        if column == "max_abs" or column.endswith("_effect"):
            assert b[column].dtype == np.float32
            assert np.array_equal(b[column].to_numpy(), b[column].to_numpy().astype(np.float16))  # float16, exact
            assert np.array_equal(a[column].to_numpy().astype(np.float16), b[column].to_numpy().astype(np.float16))
        else:
            assert a[column].tolist() == b[column].tolist(), column
    meta = pq.ParquetFile(parquet).metadata
    chrom = list(b.columns).index("chrom")
    groups = [meta.row_group(g).column(chrom).statistics for g in range(meta.num_row_groups)]
    assert all(s.min == s.max for s in groups)  # no row group spans two contigs
    assert meta.num_row_groups > 3 and max(meta.row_group(g).num_rows for g in range(meta.num_row_groups)) <= 1000 + 180


def test_an_interrupted_export_resumes_by_contig(catalogue, tmp_path, monkeypatch):
    whole = tmp_path / "whole.tsv.gz"
    export_catalogue(str(catalogue), str(whole), progress=False)
    out = tmp_path / "S.tsv.gz"
    real = export_module.read_checked_unit

    def interrupted(cat, contig, unit):
        if contig == 1:
            raise KeyboardInterrupt
        return real(cat, contig, unit)

    monkeypatch.setattr(export_module, "read_checked_unit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_catalogue(str(catalogue), str(out), progress=False)
    assert not out.exists() and not out.with_name("S.tsv.gz.tbi").exists()
    parts = out.with_name("S.tsv.gz.parts")
    assert sorted(p.name for p in parts.iterdir()) == ["contig-000000.tsv.gz", "plan.json"]  # no half part
    assert_one_line_error(invoke("catalogue", "export", catalogue, "--out", out, "--top-k", "2"), "other top_k")
    monkeypatch.setattr(export_module, "read_checked_unit", real)
    summary = export_catalogue(str(catalogue), str(out), progress=False)
    assert summary.n_before == 1 and "1 of 3 contigs were exported before" in summary.line()
    with gzip.open(whole, "rt") as a, gzip.open(out, "rt") as b:
        assert a.read() == b.read()
    assert not parts.exists()
    with pysam.TabixFile(str(out)) as tabix:
        assert [r.split("\t")[1] for r in tabix.fetch("chr21", 100, 101)] == ["101"] * 3


def test_an_incomplete_catalogue_is_refused(trained_run, genome_path, tmp_path):
    cat = tmp_path / "part.zarr"
    options = CatalogueOptions(regions=("chr21:1-400",), stride=20, genome=str(genome_path), device="cpu",
                               shard="0/2")  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiles_module, "CHUNK_BYTES", 60 * 3 * 4 * 2)
        mp.setattr(tiles_module, "BLOCK_BYTES", 20 * 3 * 4 * 2)
        build_catalogue(str(trained_run / "best.pt"), str(cat), options, progress=False)
    result = invoke("catalogue", "export", cat, "--out", tmp_path / "S.tsv.gz")
    assert_one_line_error(result, "is not complete", "chr21 unit 1", "multiplexer catalogue")
    assert not (tmp_path / "S.tsv.gz.parts").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "S.tsv"], "must end in one"),
        (["--out", "S.tsv.gz", "--top-k", "5"], "stores 4 targets; give at most 4"),
        (["--out", "S.tsv.gz", "--top-k", "-1"], "--top-k"),
    ],
)
def test_bad_exports_are_one_line_errors(catalogue, tmp_path, args, message):
    args = [str(tmp_path / a) if a.startswith("S.") else a for a in args]
    assert_one_line_error(invoke("catalogue", "export", catalogue, *args), message)


def test_an_existing_export_is_replaced_only_with_overwrite(catalogue, tmp_path):
    out = tmp_path / "S.parquet"
    export_catalogue(str(catalogue), str(out), ExportOptions(top_k=1), progress=False)
    assert_one_line_error(invoke("catalogue", "export", catalogue, "--out", out), "exists")
    ok("catalogue", "export", catalogue, "--out", out, "--overwrite")
    assert "top3_effect" in pd.read_parquet(out).columns
    other = tmp_path / "notes.parquet"
    other.write_text("mine")
    assert_one_line_error(invoke("catalogue", "export", catalogue, "--out", other, "--overwrite"), "will not replace")
    assert_one_line_error(invoke("catalogue", "--region", "chrX:1-10", "export", catalogue, "--out", out), "--region")


def test_parquet_without_pyarrow_is_a_one_line_error(catalogue, trained_run, genome_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = invoke("catalogue", "export", catalogue, "--out", tmp_path / "S.parquet")
    assert_one_line_error(result, "needs pyarrow", "multiplexer[tables]")
    vcf = tmp_path / "a.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nchrX\t100\t.\tA\tG\t.\t.\t.\n")
    result = invoke("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--genome", genome_path,
                    "--out", tmp_path / "s.parquet", "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "needs pyarrow")
    assert not list(tmp_path.glob("*parquet*"))
    with pytest.raises(UserError, match="needs pyarrow"):
        lookup(str(catalogue), str(tmp_path / "l.parquet"), LookupOptions(region="chrX:1-5"), progress=False)


def test_score_vcf_parquet_equals_its_tsv(trained_run, genome, genome_path, tmp_path):
    seq = genome.fetch("chrX", 0, 2000).upper()
    at = [p for p in range(1000, 2000) if seq[p - 1] in "ACGT"]
    records = [(p, seq[p - 1], next(b for b in "ACGT" if b != seq[p - 1])) for p in (at[0], at[1], at[50], at[300])]
    lines = [f"chrX\t{p}\tv{p}\t{r}\t{a}" for p, r, a in records]
    multi = ",".join(b for b in "ACGT" if b != seq[at[400] - 1])
    lines += [f"chrX\t{at[200]}\tindel\t{seq[at[200] - 1]}\t{seq[at[200] - 1]}T", "chrZ\t5\tnowhere\tA\tG",
              f"chrX\t{at[400]}\tmulti\t{seq[at[400] - 1]}\t{multi}"]  # fmt: skip
    vcf = tmp_path / "a.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        + "".join(f"{x}\t.\t.\t.\n" for x in lines)
    )
    tsv, parquet = tmp_path / "s.tsv", tmp_path / "s.parquet"
    for out in (tsv, parquet):
        score_vcf(str(trained_run / "best.pt"), str(vcf), str(out), ScoreVcfOptions(genome=str(genome_path),
                  device="cpu", values="ref,alt"), progress=False)  # fmt: skip
    with open(tsv) as handle:
        meta = sum(1 for line in handle if line.startswith("##"))
    a = pd.read_csv(tsv, sep="\t", skiprows=meta, keep_default_na=False, na_values=[""])
    b = pd.read_parquet(parquet)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 9
    targets = list(a.columns[10:])  # 4 targets, then --values: <target>_ref, then <target>_alt
    assert len(targets) == 12 and targets[4].endswith("_ref") and targets[-1].endswith("_alt")
    assert all(b[t].dtype == np.float32 for t in targets)
    for column in a.columns[:10]:
        assert a[column].tolist() == b[column].tolist() or np.allclose(a[column], b[column], equal_nan=True), column
    for t in targets:  # the TSV prints %.6g of the stored float32; Parquet keeps it whole
        want = a[t].to_numpy()
        got = b[t].to_numpy().astype(np.float64)
        assert np.array_equal(np.isnan(want), np.isnan(got))
        scored = ~np.isnan(got)
        assert [f"{v:.6g}" for v in got[scored]] == [f"{v:.6g}" for v in want[scored]]
    assert (b["status"] == "scored").sum() == 7 and b[targets].isna().all(axis=1).sum() == 2
    assert "quantity" in pq.read_schema(parquet).metadata[b"multiplexer"].decode()


def test_a_damaged_unit_stops_the_export_in_one_line(catalogue, tmp_path):
    import shutil

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(catalogue, damaged)
    shutil.copy(damaged / "c0" / "effects" / "c" / "0" / "0" / "0", damaged / "c0" / "effects" / "c" / "3" / "0" / "0")
    result = invoke("catalogue", "export", damaged, "--out", tmp_path / "S.tsv.gz")
    assert_one_line_error(result, "unit 3", "does not match")
    assert not (tmp_path / "S.tsv.gz").exists()


def test_top_k_lists_only_the_stored_targets(trained_run, genome_path, tmp_path):
    cat = tmp_path / "two.zarr"
    options = CatalogueOptions(regions=("chr21:101-400",), targets="demo_01,demo_02", genome=str(genome_path),
                               device="cpu")  # fmt: skip
    build_catalogue(str(trained_run / "best.pt"), str(cat), options, progress=False)
    with pytest.raises(UserError, match="stores 2 targets; give at most 2"):
        export_catalogue(str(cat), str(tmp_path / "x.tsv.gz"), progress=False)
    export_catalogue(str(cat), str(tmp_path / "S.tsv.gz"), ExportOptions(top_k=2), progress=False)
    table = read_tsv(tmp_path / "S.tsv.gz")
    assert len(table) == len(snvs_of(cat)) > 0
    assert set(table.top1_target) | set(table.top2_target) <= {"demo_01", "demo_02"}
    assert (table.top1_target != table.top2_target).all()
    assert (np.abs(table.top1_effect) >= np.abs(table.top2_effect)).all()
    assert (table.max_abs >= np.abs(table.top1_effect)).all()  # max_abs covers all four targets
    assert set(table.top_target) <= {"demo_00", "demo_01", "demo_02", "demo_03"}
    export_catalogue(str(cat), str(tmp_path / "none.parquet"), ExportOptions(top_k=0), progress=False)
    assert list(pd.read_parquet(tmp_path / "none.parquet").columns) == [
        "chrom", "pos", "ref", "alt", "max_abs", "top_target"
    ]  # fmt: skip


KILL_DRIVER = """
import os, signal, sys
import pipeline.apply.variants.export as export

kill_at, count, original = int(sys.argv[1]), [0], export.read_checked_unit

def patched(cat, contig, unit):
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(cat, contig, unit)

export.read_checked_unit = patched
from pipeline.cli import main
sys.argv = ["multiplexer", "-q", *sys.argv[2:]]
main()
"""


@pytest.mark.processes
@pytest.mark.parametrize("suffix", [".tsv.gz", ".parquet"])
def test_sigkill_mid_contig_then_rerun_equals_uninterrupted(catalogue, tmp_path, suffix):
    import signal
    import subprocess

    from helpers import process_env, run_cli

    whole, out = tmp_path / f"whole{suffix}", tmp_path / f"S{suffix}"
    run_cli("catalogue", "export", catalogue, "--out", whole)
    meta = open_catalogue(catalogue).meta
    kill_at = len(meta.contigs[0].units(meta.unit_positions)) + 3  # inside the second contig
    driver = tmp_path / "kill.py"
    driver.write_text(KILL_DRIVER)
    args = [sys.executable, str(driver), str(kill_at), "catalogue", "export", str(catalogue), "--out", str(out)]
    result = subprocess.run(args, env=process_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL
    parts = out.with_name(out.name + ".parts")
    assert not out.exists() and sorted(p.name for p in parts.glob("contig-*")) == [f"contig-000000{suffix}"]
    assert "1 of 3 contigs were exported before" in run_cli("catalogue", "export", catalogue, "--out", out).stdout
    if suffix == ".tsv.gz":
        with gzip.open(whole, "rt") as a, gzip.open(out, "rt") as b:
            assert a.read() == b.read()
    else:
        assert pd.read_parquet(whole).equals(pd.read_parquet(out))
        assert pq.ParquetFile(out).metadata.num_row_groups == pq.ParquetFile(whole).metadata.num_row_groups
    assert not parts.exists() and not list(tmp_path.glob(".*tmp*"))


def test_lookup_writes_parquet_as_its_tsv(catalogue, tmp_path):
    tsv, parquet = tmp_path / "l.tsv", tmp_path / "l.parquet"
    for out in (tsv, parquet):
        lookup(str(catalogue), str(out), LookupOptions(region="chr21:99-103"), progress=False)
    with open(tsv) as handle:
        meta = sum(1 for line in handle if line.startswith("##"))
    a = pd.read_csv(tsv, sep="\t", skiprows=meta, keep_default_na=False, na_values=[""])
    b = pd.read_parquet(parquet)
    assert len(a) == len(b) == 2 + 3 * 3 and list(a.columns) == list(b.columns)  # 99, 100: outside, one row each
    assert a["status"].tolist() == b["status"].tolist() and a["pos"].tolist() == b["pos"].tolist()
    for t in a.columns[10:]:  # float16 catalogue values: %.6g is exact
        assert np.array_equal(a[t].to_numpy(np.float16), b[t].to_numpy(np.float16), equal_nan=True)
    assert_one_line_error(invoke("lookup", catalogue, "--region", "chr21:101-102", "--out", parquet), "exists")
    ok("lookup", catalogue, "--region", "chr21:101-102", "--out", parquet, "--overwrite")
    assert len(pd.read_parquet(parquet)) == 6


@pytest.fixture(scope="module")
def background(trained_run, tmp_path_factory) -> Path:
    """A background of the trained run (6 windows of its test split)."""
    from pipeline.apply.variants.background import build_background
    from pipeline.apply.variants.options import BackgroundOptions

    out = tmp_path_factory.mktemp("export_background") / "b.zarr"
    options = BackgroundOptions(windows=6, seed=3, values_per_window=2000, device="cpu", batch_size=4)
    build_background(str(trained_run / "best.pt"), str(out), options, progress=False)
    return out


def test_background_adds_each_listed_effects_percentile_as_lookup_gives_it(catalogue, background, tmp_path):
    from pipeline.store.background import grid_share, open_background

    tsv, parquet = tmp_path / "S.tsv.gz", tmp_path / "S.parquet"
    for out in (tsv, parquet):
        export_catalogue(str(catalogue), str(out), ExportOptions(top_k=2, background=str(background)), progress=False)
    table = read_tsv(tsv)
    assert list(table.columns[6:]) == [
        "top1_target", "top1_effect", "top1_q", "top2_target", "top2_effect", "top2_q"
    ]  # fmt: skip
    b = pd.read_parquet(parquet)
    assert list(b.columns) == list(table.columns) and b["top1_q"].dtype == np.float32
    assert np.allclose(table["top2_q"], b["top2_q"], rtol=1e-5, atol=0)  # the TSV prints %.6g
    looked = tmp_path / "l.tsv"
    lookup(str(catalogue), str(looked), LookupOptions(region="chrX:1000-1100", background=str(background)),
           progress=False)  # fmt: skip
    with open(looked) as handle:
        meta = sum(1 for line in handle if line.startswith("##"))
    want = pd.read_csv(looked, sep="\t", skiprows=meta, keep_default_na=False, na_values=[""])
    want = want[want.status == "scored"].set_index(["pos", "alt"])
    got = table[(table.chrom == "chrX") & table.pos.between(1000, 1100)]
    assert len(got) == len(want) > 0
    bg = open_background(background)
    for r in got.itertuples():
        for i in (1, 2):
            name, effect, q = getattr(r, f"top{i}_target"), getattr(r, f"top{i}_effect"), getattr(r, f"top{i}_q")
            assert q == want.loc[(r.pos, r.alt), f"{name}_q"]  # the same text: lookup --background's percentile
            t = bg.target_names.index(name)
            assert q == pytest.approx(float(grid_share(bg.signed[t], bg.probs, float(np.float16(effect)))), abs=1e-6)
    assert "background" in next(h for h in pysam.TabixFile(str(tsv)).header if h.startswith("##background="))


def test_a_background_of_another_checkpoint_is_refused(catalogue, trained_run, tmp_path):
    from helpers import rewrite_checkpoint

    from pipeline.apply.variants.background import build_background
    from pipeline.apply.variants.options import BackgroundOptions

    other = rewrite_checkpoint(trained_run / "best.pt", tmp_path / "other.pt", spec={"seed": 99})
    bg = tmp_path / "other.zarr"
    options = BackgroundOptions(chroms="chr21", windows=2, values_per_window=100, device="cpu")
    build_background(str(other), str(bg), options, progress=False)
    result = invoke("catalogue", "export", catalogue, "--out", tmp_path / "S.tsv.gz", "--background", bg)
    assert_one_line_error(result, "another checkpoint")
    assert not (tmp_path / "S.tsv.gz.parts").exists()
