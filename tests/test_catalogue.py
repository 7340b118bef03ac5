"""``catalogue`` and ``lookup``: every value is the multiplexer's in its tile window, every non-N position
of the regions appears once, shards and resumes equal one process, lookups equal predict."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
import zarr
from helpers import assert_one_line_error, invoke, ok, process_env, run_cli, torchrun

import pipeline.store.tiles as tiles_module
from pipeline.apply.variants.catalogue import build_catalogue
from pipeline.apply.variants.lookup import lookup
from pipeline.apply.variants.options import CatalogueOptions, LookupOptions, ScoreVcfOptions
from pipeline.apply.variants.score_vcf import read_scores, score_vcf
from pipeline.core.encoding import ALPHABET, one_hot
from pipeline.errors import UserError
from pipeline.ism import mask_effects
from pipeline.models import load_checkpoint
from pipeline.store.catalogue import N_CODE, NOT_CATALOGUED, open_catalogue, verify_catalogue

L = 80
STRIDE = 20
LENGTHS = {"chrA": 700, "chrB": 300, "chrTiny": 50}


@pytest.fixture(scope="module")
def genome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """chrA (700 bp, Ns at 300..309 and a soft-masked run), chrB (300 bp), chrTiny (shorter than L)."""
    rng = np.random.default_rng(21)
    seqs = {name: "".join(rng.choice(list("ACGT"), size=n)) for name, n in LENGTHS.items()}
    a = list(seqs["chrA"])
    a[300:310] = ["N"] * 10
    a[400:420] = [c.lower() for c in a[400:420]]
    seqs["chrA"] = "".join(a)
    path = tmp_path_factory.mktemp("cat_genome") / "g.fa"
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in seqs.items()))
    return path, seqs


@pytest.fixture()
def small_units(monkeypatch):
    """Units of 60 positions (3 tiles of 20) for 4 targets, so contigs span several units."""
    monkeypatch.setattr(tiles_module, "CHUNK_BYTES", 60 * 3 * 4 * 2)
    monkeypatch.setattr(tiles_module, "BLOCK_BYTES", 20 * 3 * 4 * 2)


def tile_window(p: int, n: int) -> int:
    """0-based start of the tile window of 0-based position ``p``: the stride-long core holding ``p``,
    centred in an L-window, shifted inside the contig (written out here independently)."""
    k = p // STRIDE
    lo, hi = k * STRIDE, min((k + 1) * STRIDE, n)
    start = lo - (L - (hi - lo)) // 2
    return min(max(start, 0), n - L)


def build(ckpt, genome_path, out, **kwargs):
    kwargs.setdefault("stride", STRIDE)
    return build_catalogue(
        str(ckpt), str(out), CatalogueOptions(genome=str(genome_path), device="cpu", **kwargs), progress=False
    )


REGIONS = ["chrA:1-150", "chrA:280-460", "chrA:640-700"]


def test_every_value_is_the_multiplexers_in_its_tile_window(genome, trained_run, tmp_path, small_units):
    path, seqs = genome
    ckpt = trained_run / "best.pt"
    out = tmp_path / "cat.zarr"
    summary = build(ckpt, path, out, regions=REGIONS, chroms="chrB", batch_size=3)
    assert "the catalogue is complete" in summary.line()
    cat = open_catalogue(out)
    assert verify_catalogue(cat) == []
    model, meta = load_checkpoint(ckpt)
    names = list(meta["target_names"])
    assert cat.meta.unit_positions == 60 and cat.meta.stride == STRIDE
    wanted = {"chrA": np.zeros(700, bool), "chrB": np.ones(300, bool)}
    for region in REGIONS:
        lo, hi = (int(x) for x in region.split(":")[1].split("-"))
        wanted["chrA"][lo - 1 : hi] = True
    assert [c.name for c in cat.meta.contigs] == ["chrA", "chrB"]
    for k, contig in enumerate(cat.meta.contigs):
        n, seq = contig.length, seqs[contig.name]
        ref = cat.array(k, "ref")[:]
        effects = cat.array(k, "effects")[:].astype(np.float32)
        max_abs, top = cat.array(k, "max_abs")[:].astype(np.float32), cat.array(k, "top_target")[:]
        outside = ~wanted[contig.name]
        assert (ref[outside] == NOT_CATALOGUED).all() and np.isnan(effects[outside]).all()
        is_n = np.array([c not in "ACGTacgt" for c in seq]) & wanted[contig.name]
        assert (ref[is_n] == N_CODE).all() and np.isnan(effects[is_n]).all()
        starts = {tile_window(p, n) for p in np.flatnonzero(wanted[contig.name] & ~is_n)}
        windows = {s: seq[s : s + L] for s in starts}
        with torch.no_grad():
            X = torch.from_numpy(np.stack([one_hot(w) for w in windows.values()])).float()
            y = dict(zip(windows, mask_effects(model(X), X).numpy()))
        for p in np.flatnonzero(wanted[contig.name] & ~is_n):
            s = tile_window(p, n)
            base = ALPHABET.index(seq[p].upper())
            assert ref[p] == base
            alts = [b for b in range(4) if b != base]
            want = y[s][:, alts, p - s].T  # [3, F]
            np.testing.assert_allclose(effects[p], want, rtol=2e-3, atol=1e-4, err_msg=f"{contig.name}:{p + 1}")
            np.testing.assert_allclose(max_abs[p], np.abs(want).max(1), rtol=2e-3, atol=1e-4)
            assert [names[t] for t in top[p]] == [names[int(i)] for i in np.abs(want).argmax(1)]
    assert summary.n_positions == int(sum(w.sum() for w in wanted.values()))


def test_shards_and_resume_equal_one_process(genome, trained_run, tmp_path, small_units):
    path, _ = genome
    ckpt = trained_run / "best.pt"
    one, sharded = tmp_path / "one.zarr", tmp_path / "sharded.zarr"
    build(ckpt, path, one, regions=REGIONS, chroms="chrB")
    first = build(ckpt, path, sharded, regions=REGIONS, chroms="chrB", shard="1/3")
    assert first.remaining == first.n_units - first.n_computed > 0
    assert f"{first.remaining} units of {first.n_units} remain, owned by shards 0/3, 2/3" in first.line()
    assert verify_catalogue(open_catalogue(sharded))  # not complete yet
    second = build(ckpt, path, sharded, regions=REGIONS, chroms="chrB", shard="0/3")
    assert second.n_before == first.n_computed  # shard 0 saw shard 1's units done
    rest = build(ckpt, path, sharded, regions=REGIONS, chroms="chrB")  # resumes what is left: shard 2's units
    assert rest.n_before == first.n_computed + second.n_computed > 0
    assert rest.n_computed == rest.n_units - rest.n_before > 0
    assert_same_catalogue(one, sharded)


def assert_same_catalogue(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert dict(ga.attrs) == dict(gb.attrs)
    for key in ga.group_keys():
        for name in ("ref", "effects", "max_abs", "top_target", "complete"):
            assert np.array_equal(ga[key][name][:], gb[key][name][:], equal_nan=name in ("effects", "max_abs")), (
                f"{key}/{name}"
            )


def test_reopening_with_other_options_is_refused(genome, trained_run, tmp_path):
    path, _ = genome
    out = tmp_path / "cat.zarr"
    build(trained_run / "best.pt", path, out, regions=["chrB:1-100"])
    with pytest.raises(UserError, match="other stride"):
        build(trained_run / "best.pt", path, out, regions=["chrB:1-100"], stride=10)
    build(trained_run / "best.pt", path, out, regions=["chrB:1-100"], stride=10, overwrite=True)
    assert open_catalogue(out).meta.stride == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"regions": ["chrZ:1-10"]}, "not in the genome"),
        ({"regions": ["chrB:1-400"]}, "runs past the end"),
        ({"chroms": "chrTiny"}, "shorter than the model's window"),
        ({}, "say what to catalogue"),
        ({"regions": ["chrB:1-10"], "stride": 81}, "--stride must lie in 1..80"),
    ],
)
def test_bad_requests_are_one_line_errors(genome, trained_run, tmp_path, kwargs, message):
    path, _ = genome
    kwargs.setdefault("stride", None)
    with pytest.raises(UserError, match=message):
        build_catalogue(
            str(trained_run / "best.pt"),
            str(tmp_path / "c.zarr"),
            CatalogueOptions(genome=str(path), **kwargs),
            progress=False,
        )


def test_all_leaves_out_contigs_shorter_than_the_window(genome, trained_run, tmp_path):
    path, _ = genome
    out = tmp_path / "all.zarr"
    build(trained_run / "best.pt", path, out, all_contigs=True)
    assert [c.name for c in open_catalogue(out).meta.contigs] == ["chrA", "chrB"]


# ------------------------------------------------------------------------------------------------
# lookup
# ------------------------------------------------------------------------------------------------


@pytest.fixture()
def built(genome, trained_run, tmp_path, small_units) -> Path:
    path, _ = genome
    out = tmp_path / "cat.zarr"
    build(trained_run / "best.pt", path, out, regions=REGIONS)
    return out


def test_lookup_equals_predict_on_the_tile_window(genome, trained_run, built, tmp_path):
    path, seqs = genome
    seq = seqs["chrA"]
    positions = [5, 140, 405, 699]  # 1-based: a clamped window at each end, a soft-masked base
    queries = [f"chrA:{p}:{seq[p - 1].upper()}>{next(b for b in 'GTAC' if b != seq[p - 1].upper())}" for p in positions]
    out = tmp_path / "l.tsv"
    summary = lookup(str(built), str(out), LookupOptions(variants=queries), progress=False)
    assert summary.n_scored == 4 and summary.n_catalogue == 4
    rows = read_scores(out)
    for row in rows:
        center = row["window_center"]
        eff = tmp_path / f"p{row['pos']}.zarr"
        ok("predict", "--checkpoint", trained_run / "best.pt", "--region", f"chrA:{center}", "--out", eff,
           "--genome", path, "--device", "cpu")  # fmt: skip
        z = zarr.open_group(str(eff), mode="r")
        first = center - L // 2 + 1
        want = z["effects"][0][:, ALPHABET.index(row["alt"]), row["pos"] - first]
        np.testing.assert_allclose(list(row["effects"].values()), want, rtol=2e-3, atol=1e-4)
        assert first - 1 == tile_window(row["pos"] - 1, 700)


def test_lookup_bad_queries_are_rows_with_reasons(genome, built, tmp_path):
    _, seqs = genome
    seq = seqs["chrA"]
    ref = seq[9].upper()
    swapped_alt = next(b for b in "ACGT" if b != ref)
    queries = [
        "chrZ:5:A>G",  # absent contig
        "chrA:200:A>G",  # outside the regions
        "chrA:9999:A>G",  # past the contig
        "chrA:305:A>G",  # N
        f"chrA:10:{swapped_alt}>{ref}",  # REF and ALT swapped
        f"chrA:10:{ref}>{ref}A",  # not an SNV
    ]
    out = tmp_path / "l.tsv"
    lookup(str(built), str(out), LookupOptions(variants=queries), progress=False)
    rows = read_scores(out)
    status = [r["status"] for r in rows]
    assert status[0] == "skipped: contig 'chrZ' is not in the catalogue"
    assert "outside the catalogued regions" in status[1] and "position outside chrA" in status[2]
    assert status[3].startswith("skipped: the genome has N")
    assert status[4] == "scored" and rows[4]["ref_match"] == "swapped"
    assert all(v == 0 for v in rows[4]["effects"].values())  # ALT is the catalogue's base
    assert status[5].startswith("skipped: indel")
    assert_one_line_error(
        invoke("lookup", built, "--variant", "chrA:10", "--out", tmp_path / "x.tsv"), "chr:pos:REF>ALT"
    )
    (tmp_path / "folder").mkdir()
    bad = invoke("lookup", tmp_path / "folder", "--region", "chrA:1-5", "--out", tmp_path / "y.tsv")
    assert_one_line_error(bad, "not a catalogue")


def test_lookup_of_a_region_lists_three_alleles_per_position(built, tmp_path):
    out = tmp_path / "r.tsv.gz"
    summary = lookup(str(built), str(out), LookupOptions(region="chrA:299-302"), progress=False)
    rows = read_scores(out)
    assert [r["pos"] for r in rows] == [299, 299, 299, 300, 300, 300, 301, 302]  # 301, 302 are N
    assert summary.n_scored == 6 and rows[-1]["status"].startswith("skipped: the genome has N")


def test_score_vcf_answers_from_the_catalogue_and_falls_back_to_the_model(genome, trained_run, built, tmp_path):
    path, seqs = genome
    seq = seqs["chrA"]
    lines = [
        f"chrA\t{p}\tv{p}\t{seq[p - 1].upper()}\t{next(b for b in 'GTAC' if b != seq[p - 1].upper())}"
        for p in (20, 200, 420)
    ]
    vcf = tmp_path / "a.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        + "".join(f"{x}\t.\t.\t.\n" for x in lines)
    )
    out, plain, looked = tmp_path / "s.tsv", tmp_path / "m.tsv", tmp_path / "l.tsv"
    ckpt = str(trained_run / "best.pt")
    summary = score_vcf(
        ckpt, str(vcf), str(out), ScoreVcfOptions(genome=str(path), catalogue=str(built), device="cpu"), progress=False
    )
    assert summary.n_catalogue == 2 and summary.n_scored == 3  # 200 lies outside the regions
    score_vcf(ckpt, str(vcf), str(plain), ScoreVcfOptions(genome=str(path), device="cpu"), progress=False)
    lookup(str(built), str(looked), LookupOptions(vcf=str(vcf)), progress=False)
    got, model, table = read_scores(out), read_scores(plain), read_scores(looked)
    assert got[0]["effects"] == table[0]["effects"] and got[2]["effects"] == table[2]["effects"]
    # the model's row: the same window (batched with other windows in the plain run: float32 noise)
    assert got[1]["window_center"] == model[1]["window_center"]
    np.testing.assert_allclose(list(got[1]["effects"].values()), list(model[1]["effects"].values()), rtol=1e-5)
    with pytest.raises(UserError, match="forward-strand"):
        score_vcf(
            ckpt,
            str(vcf),
            str(tmp_path / "x.tsv"),
            ScoreVcfOptions(genome=str(path), catalogue=str(built), strand="both"),
            progress=False,
        )


def test_store_verify_finds_a_damaged_unit_and_a_rerun_repairs_it(genome, trained_run, built, tmp_path):
    path, _ = genome
    assert "complete and consistent" in ok("store", "verify", built).output
    chunk = built / "c0" / "effects" / "c" / "1" / "0" / "0"
    other = built / "c0" / "effects" / "c" / "0" / "0" / "0"
    shutil.copy(other, chunk)  # decodes, but is another unit's data
    assert_one_line_error(invoke("store", "verify", built), "chrA unit 1", "does not match")
    assert "marked 1 damaged units incomplete" in ok("store", "verify", built, "--unmark-damaged").output
    build(trained_run / "best.pt", path, built, regions=REGIONS)
    assert verify_catalogue(open_catalogue(built)) == []


# ------------------------------------------------------------------------------------------------
# processes: SIGKILL and rerun, torchrun
# ------------------------------------------------------------------------------------------------

KILL_DRIVER = """
import os, signal, sys
from zarr.core.array import Array

kill_at, count, original = int(sys.argv[1]), [0], Array.__setitem__

def patched(self, key, value):
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, key, value)

Array.__setitem__ = patched
from pipeline.cli import main
sys.argv = ["multiplexer", "-q", *sys.argv[2:]]
main()
"""


def _cli_args(ckpt, genome_path, out):
    return ["catalogue", "--checkpoint", ckpt, "--genome", genome_path, "--out", out, "--chroms", "chrA,chrB",
            "--stride", STRIDE, "--device", "cpu"]  # fmt: skip


@pytest.mark.processes
@pytest.mark.parametrize("kill_at", [2, 7, 10], ids=["mid-unit-1", "mid-unit-2", "before-marker-unit-2"])
def test_sigkill_then_rerun_equals_uninterrupted(genome, trained_run, tmp_path, kill_at):
    path, _ = genome
    ckpt = trained_run / "best.pt"
    single = tmp_path / "single.zarr"
    run_cli(*_cli_args(ckpt, path, single))
    driver = tmp_path / "kill.py"
    driver.write_text(KILL_DRIVER)
    killed = tmp_path / "killed.zarr"
    args = [str(a) for a in _cli_args(ckpt, path, killed)]
    result = subprocess.run([sys.executable, str(driver), str(kill_at), *args], env=process_env(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == -signal.SIGKILL
    run_cli(*_cli_args(ckpt, path, killed))
    assert_same_catalogue(single, killed)


@pytest.mark.processes
def test_torchrun_two_processes_equal_one(genome, trained_run, tmp_path):
    path, _ = genome
    ckpt = trained_run / "best.pt"
    single, two = tmp_path / "single.zarr", tmp_path / "two.zarr"
    run_cli(*_cli_args(ckpt, path, single))
    torchrun(2, *_cli_args(ckpt, path, two))
    assert_same_catalogue(single, two)


def test_lookup_reads_a_contig_the_catalogue_spells_otherwise(genome, built, tmp_path):
    _, seqs = genome
    ref = seqs["chrA"][19].upper()
    alt = next(b for b in "ACGT" if b != ref)
    out = tmp_path / "h.tsv"
    lookup(str(built), str(out), LookupOptions(variants=[f"chrA:20:{ref}>{alt}", f"A:20:{ref}>{alt}"]), progress=False)
    named, other = read_scores(out)
    assert other["chrom"] == "A" and other["status"] == "scored"  # the query's spelling is kept
    assert other["effects"] == named["effects"] and other["window_center"] == named["window_center"]


def test_store_info_summarises_a_catalogue(built):
    import json

    info = json.loads(ok("store", "info", built, "--json").output)
    assert info["positions"] == 150 + 181 + 61 and info["units_complete"] == info["units"] > 1
    assert info["stride"] == STRIDE and info["targets"] == 4 and info["bytes_per_position"] > 0
    assert "units complete" in ok("store", "info", built).output


def test_lookup_to_vcf_gz_publishes_its_tabix_index_as_score_vcf_does(genome, built, tmp_path):
    """lookup and score-vcf write through one writer registry: a sorted .vcf.gz gets its index beside it."""
    path, seqs = genome
    seq = seqs["chrA"]
    vcf = tmp_path / "a.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chrA,length=700>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        + "".join(f"chrA\t{p}\tv{p}\t{seq[p - 1].upper()}\tN\t.\t.\t.\n".replace("\tN\t", f"\t{alt}\t")
                  for p, alt in ((20, "A"), (120, "C"), (420, "G")))
    )  # fmt: skip
    out = tmp_path / "l.vcf.gz"
    lookup(str(built), str(out), LookupOptions(vcf=str(vcf)), progress=False)
    assert out.with_name(out.name + ".tbi").is_file()
    with pysam.VariantFile(str(out)) as indexed:
        assert [r.pos for r in indexed.fetch("chrA", 100, 130)] == [120]
