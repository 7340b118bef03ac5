"""The catalogue's integrity: completion markers that concurrent shards cannot lose, reads that are
checked against what was written, units wholly in ``N`` that complete, and values independent of how
a run was resumed (issue 29; issue 22, findings 1, 3 and the batch size of 10)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, flip_byte, invoke, make_format1, ok, process_env

import pipeline.store.tiles as tiles_module
from pipeline.apply.variants.catalogue import build_catalogue
from pipeline.apply.variants.options import CatalogueOptions
from pipeline.apply.variants.score_vcf import read_scores
from pipeline.core.genome import Genome
from pipeline.errors import UserError
from pipeline.store.catalogue import ARRAYS, N_CODE, open_catalogue, upgrade_catalogue, verify_catalogue
from pipeline.store.meta_digest import has_meta_digest, meta_digest_problems

L = 80
STRIDE = 20


@pytest.fixture()
def small_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """Units of 60 positions (3 tiles of 20) for 4 targets, so contigs span several units."""
    monkeypatch.setattr(tiles_module, "CHUNK_BYTES", 60 * 3 * 4 * 2)
    monkeypatch.setattr(tiles_module, "BLOCK_BYTES", 20 * 3 * 4 * 2)


# ------------------------------------------------------------------------------------------------
# issue 29: shards started together
# ------------------------------------------------------------------------------------------------

RACE_DRIVER = """
import json, multiprocessing, os, sys

import pipeline.apply.variants.catalogue  # the heavy imports once, before forking
import pipeline.store.tiles as tiles_module
from pipeline.cli import main
from pipeline.store.catalogue import open_catalogue, verify_catalogue

tiles_module.CHUNK_BYTES = 60 * 3 * 4 * 2  # units of 60 positions: the region is 5 units
tiles_module.BLOCK_BYTES = 20 * 3 * 4 * 2
ckpt, genome, work, n, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])


def shard(i, out, log, barrier):
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = ["multiplexer", "-q", "catalogue", "--checkpoint", ckpt, "--genome", genome, "--out", out,
                "--region", "chr21:601-900", "--stride", "20", "--device", "cpu", "--shard", f"{i}/{n}"]
    barrier.wait()
    main()


context = multiprocessing.get_context("fork")
results = []
for r in range(rounds):
    out = os.path.join(work, f"round{r}.zarr")
    barrier = context.Barrier(n)
    logs = [os.path.join(work, f"round{r}-shard{i}.log") for i in range(n)]
    procs = [context.Process(target=shard, args=(i, out, logs[i], barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = [open(log).read().strip() for log in logs]
    problems = verify_catalogue(open_catalogue(out)) if os.path.exists(out) else ["no catalogue"]
    results.append({"exit": [p.exitcode for p in procs], "lines": lines, "problems": problems})
print(json.dumps(results))
"""


@pytest.mark.processes
def test_shards_started_together_mark_every_unit(genome_path, trained_run, tmp_path):
    """4 shard processes forked at once (a barrier releases them together), 20 times over: every unit is
    marked complete every time, the last shard to finish says the catalogue is complete, and a shard
    that finishes while units remain says how many and which shards own them."""
    driver = tmp_path / "race.py"
    driver.write_text(RACE_DRIVER)
    n, rounds = 4, 20
    args = [sys.executable, driver, trained_run / "best.pt", genome_path, tmp_path, n, rounds]
    result = subprocess.run(list(map(str, args)), env=process_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rounds_run = json.loads(result.stdout.splitlines()[-1])
    assert [r["exit"] for r in rounds_run] == [[0] * n] * rounds, [r["lines"] for r in rounds_run]
    lost = {k: r["problems"] for k, r in enumerate(rounds_run) if r["problems"]}
    assert not lost, lost  # every unit marked complete, every time
    for k, r in enumerate(rounds_run):
        done = [line for line in r["lines"] if "the catalogue is complete" in line]
        assert done, (k, r["lines"])  # at least the last shard to finish saw every unit complete
        for i, line in enumerate(r["lines"]):
            if line not in done:  # finished while others ran: says how many units remain and whose they are
                m = re.search(r"(\d+) units? of 5 remains?, owned by shards? ([0-9/, ]+) \(", line)
                assert m is not None and int(m[1]) > 0, line
                owners = m[2].split(", ")
                assert f"{i}/{n}" not in owners and set(owners) <= {f"{j}/{n}" for j in range(n)}, line


def build(ckpt: Path, genome_path: Path, out: Path, **kwargs):
    kwargs.setdefault("stride", STRIDE)
    options = CatalogueOptions(genome=str(genome_path), device="cpu", **kwargs)
    return build_catalogue(str(ckpt), str(out), options, progress=False)


REGIONS = ["chr21:601-750", "chr21:880-1060"]  # units 10-12 and 14-17


@pytest.fixture()
def built(genome_path, trained_run, tmp_path, small_units) -> Path:
    out = tmp_path / "cat.zarr"
    build(trained_run / "best.pt", genome_path, out, regions=REGIONS)
    return out


def test_each_unit_has_its_own_marker_chunk(built):
    """No two units share a marker chunk, so no shard ever rewrites another's marker."""
    cat = open_catalogue(built)
    array = cat.array(0, "complete")
    assert cat.version == 2 and array.chunks == (1, 1 + 4 * cat.meta.blocks_per_unit)
    done = np.flatnonzero(cat.complete(0))
    assert list(done) == cat.meta.contigs[0].units(cat.meta.unit_positions)
    assert sorted(int(p.parent.name) for p in (built / "c0" / "complete" / "c").glob("*/0")) == list(done)


# ------------------------------------------------------------------------------------------------
# issue 22, finding 1: what lookup and score-vcf --catalogue read is checked
# ------------------------------------------------------------------------------------------------

DAMAGED = "chr21 unit 11 (positions 661-720)"


def _query(genome: Path, pos: int) -> str:
    ref = Genome(genome).fetch("chr21", pos - 1, pos).upper()
    return f"chr21:{pos}:{ref}>{next(b for b in 'ACGT' if b != ref)}"


DAMAGE = {
    "flipped effects byte": (lambda cat: flip_byte(cat / "c0/effects/c/11/0/0", 20), "effects", "cannot be read"),
    "flipped ref byte": (lambda cat: flip_byte(cat / "c0/ref/c/11", 10), "ref", "cannot be read"),
    "flipped shard index byte": (lambda cat: flip_byte(cat / "c0/effects/c/11/0/0", -10), "effects", "checksum"),
    "deleted effects shard": (lambda cat: (cat / "c0/effects/c/11/0/0").unlink(), "effects", "is missing"),
    "deleted ref shard": (lambda cat: (cat / "c0/ref/c/11").unlink(), "ref", "is missing"),
    "shard swapped with another unit's": (
        lambda cat: shutil.copy(cat / "c0/effects/c/10/0/0", cat / "c0/effects/c/11/0/0"),
        "effects",
        "does not match the checksum written with it",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_catalogue_is_a_one_line_error_for_every_reader(genome_path, trained_run, built, tmp_path, damage):
    """A damaged, missing or swapped chunk is never served: lookup, lookup --region and score-vcf
    --catalogue stop with one line naming the contig and unit, and leave no output; queries outside
    the damaged unit are still answered."""
    harm, array, problem = DAMAGE[damage]
    query = _query(genome_path, 670)  # unit 11, its first block (positions 661-680)
    healthy = tmp_path / "healthy.tsv"
    ok("lookup", built, "--variant", query, "--out", healthy)
    harm(built)
    out = tmp_path / "l.tsv"
    line = assert_one_line_error(invoke("lookup", built, "--variant", query, "--out", out), DAMAGED, problem)
    assert array in line and "store verify --unmark-damaged" in line and not out.exists()
    assert_one_line_error(invoke("lookup", built, "--region", "chr21:665-666", "--out", out), DAMAGED)
    vcf = tmp_path / "q.vcf"
    chrom, pos, alleles = query.split(":")
    ref, alt = alleles.split(">")
    vcf.write_text(
        f"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\t.\t.\n"
    )
    scored = invoke("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--genome", genome_path,
                    "--catalogue", built, "--device", "cpu", "--out", out)  # fmt: skip
    assert_one_line_error(scored, DAMAGED, problem)
    assert not out.exists()
    elsewhere = tmp_path / "e.tsv"  # unit 10 is intact
    ok("lookup", built, "--variant", _query(genome_path, 630), "--out", elsewhere)
    assert read_scores(elsewhere)[0]["status"] == "scored"
    assert_one_line_error(invoke("store", "verify", built), DAMAGED)


def test_a_flipped_ref_byte_never_relabels_a_base(genome_path, built, tmp_path):
    """A flip in ``ref`` that still decodes (the inner chunk's CRC-32C recomputed, as a bit rot the
    codec cannot see would leave it) is caught by the block digest, not served as another base."""
    import zarr

    array = zarr.open_array(str(built / "c0" / "ref"), mode="r+")
    values = array[660:680]
    values[9] = (values[9] + 1) % 4  # position 670 now holds another base
    array[660:680] = values  # rewritten through zarr: every codec checksum is right again
    assert_one_line_error(
        invoke("lookup", built, "--variant", _query(genome_path, 670), "--out", tmp_path / "l.tsv"),
        DAMAGED, "ref of positions 661-680 does not match the checksum written with it",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# format 1: still read (checked per unit), refused for writing, upgraded by `store upgrade`
# ------------------------------------------------------------------------------------------------


def assert_same_values(a: Path, b: Path) -> None:
    ca, cb = open_catalogue(a), open_catalogue(b)
    for k in range(len(ca.meta.contigs)):
        for name in ARRAYS:
            assert np.array_equal(ca.array(k, name)[:], cb.array(k, name)[:], equal_nan=True), (k, name)
        assert np.array_equal(ca.complete(k), cb.complete(k))


def test_a_format1_catalogue_is_read_checked_and_upgraded(genome_path, trained_run, built, tmp_path):
    ckpt = trained_run / "best.pt"
    fresh = tmp_path / "fresh.zarr"
    shutil.copytree(built, fresh)
    make_format1(built)
    assert open_catalogue(built).version == 1
    queries = [_query(genome_path, p) for p in (605, 670, 700, 890, 1000)]
    args = [a for q in queries for a in ("--variant", q)]
    old, new = tmp_path / "old.tsv", tmp_path / "new.tsv"
    ok("lookup", built, *args, "--out", old)
    ok("lookup", fresh, *args, "--out", new)
    assert read_scores(old) == read_scores(new)
    assert "complete and consistent" in ok("store", "verify", built).output
    with pytest.raises(UserError, match="store upgrade"):  # format 1's shared marker chunk: never written again
        build(ckpt, genome_path, built, regions=REGIONS)
    copy = tmp_path / "damaged.zarr"
    shutil.copytree(built, copy)
    flip_byte(copy / "c0/effects/c/11/0/0", 20)  # no CRC-32C in format 1: zstd or the unit digest finds it
    assert_one_line_error(invoke("lookup", copy, *args, "--out", tmp_path / "x.tsv"), DAMAGED, "effects")
    assert_one_line_error(invoke("store", "verify", copy), DAMAGED)

    assert "upgraded catalogue" in ok("store", "upgrade", built).output
    cat = open_catalogue(built)
    assert cat.version == 2 and cat.array(0, "complete").chunks == (1, 1 + 4 * cat.meta.blocks_per_unit)
    assert "already format 2" in ok("store", "upgrade", built).output
    assert "complete and consistent" in ok("store", "verify", built).output
    ok("lookup", built, *args, "--out", old, "--overwrite")
    assert read_scores(old) == read_scores(new)
    assert build(ckpt, genome_path, built, regions=REGIONS).n_computed == 0  # resumable again
    assert_same_values(built, fresh)
    assert "left incomplete" in (upgraded := ok("store", "upgrade", copy).output) and "1 damaged" in upgraded
    assert build(ckpt, genome_path, copy, regions=REGIONS).n_computed == 1  # recomputes the damaged unit
    assert_same_values(copy, fresh)


def test_an_interrupted_upgrade_finishes_when_rerun(built, monkeypatch):
    """Killed between the two renames that swap a contig's markers: the rerun completes the swap; a
    catalogue written before metadata digests is sealed by the same upgrade."""
    import os

    import zarr

    make_format1(built, meta_digest=False)
    real, calls = os.rename, []

    def rename(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise OSError("killed")
        return real(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="killed"):
        upgrade_catalogue(built)
    monkeypatch.setattr(os, "rename", real)
    assert not (built / "c0" / "complete").exists()
    assert open_catalogue(built).version == 1
    assert "added a metadata digest" in upgrade_catalogue(built)
    assert open_catalogue(built).version == 2 and verify_catalogue(open_catalogue(built)) == []
    attrs = dict(zarr.open_group(str(built), mode="r").attrs)
    assert has_meta_digest(attrs) and meta_digest_problems(attrs) == []
    assert sorted(p.name for p in (built / "c0").iterdir()) == ["complete", *sorted(ARRAYS), "zarr.json"]


# ------------------------------------------------------------------------------------------------
# issue 22, finding 3: units wholly in N
# ------------------------------------------------------------------------------------------------


@pytest.fixture()
def gapped_genome(tmp_path) -> Path:
    """chrT: 16 kb with N telomeres (1.5 kb each end) and a 10 kb N gap; chrN: 3 kb of N; chrC: 2 kb."""
    rng = np.random.default_rng(22)

    def bases(n: int) -> str:
        return "".join(rng.choice(list("ACGT"), size=n))

    seqs = {
        "chrT": "N" * 1500 + bases(500) + "N" * 10_000 + bases(2500) + "N" * 1500,
        "chrN": "N" * 3000,
        "chrC": bases(2000),
    }
    path = tmp_path / "gapped.fa"
    path.write_text("".join(f">{name}\n" + "\n".join(s[i : i + 60] for i in range(0, len(s), 60)) + "\n"
                            for name, s in seqs.items()))  # fmt: skip
    return path


@pytest.mark.parametrize("what", [["--chroms", "chrT,chrN,chrC"], ["--all"]], ids=["chroms", "all"])
def test_units_wholly_in_n_complete_and_verify(gapped_genome, trained_run, tmp_path, monkeypatch, what):
    """Every shard of a unit is written, even one that holds only fill values: N telomeres, a 10 kb
    gap and an all-N contig complete, verify, and answer with N rows; a lost all-fill shard is still
    found by verify."""
    monkeypatch.setattr(tiles_module, "CHUNK_BYTES", 1000 * 3 * 4 * 2)  # units of 1,000 positions
    monkeypatch.setattr(tiles_module, "BLOCK_BYTES", 100 * 3 * 4 * 2)
    out = tmp_path / "gapped.zarr"
    args = ["catalogue", "--checkpoint", trained_run / "best.pt", "--genome", gapped_genome, "--out", out,
            "--stride", STRIDE, "--device", "cpu", *what]  # fmt: skip
    assert "the catalogue is complete" in ok(*args).output
    assert "complete and consistent" in ok("store", "verify", out).output
    cat = open_catalogue(out)
    assert [c.name for c in cat.meta.contigs] == ["chrT", "chrN", "chrC"]
    assert (cat.array(1, "ref")[:] == N_CODE).all() and np.isnan(cat.array(1, "effects")[:]).all()
    assert "in 0 units" in (rerun := ok(*args).output) and "21 of 21 units were already complete" in rerun
    rows = tmp_path / "gap.tsv"
    ok("lookup", out, "--variant", "chrT:5000:A>G", "--variant", "chrN:5:A>G", "--variant", "chrT:1:A>G",
       "--out", rows)  # fmt: skip
    assert all(r["status"].startswith("skipped: the genome has N") for r in read_scores(rows))
    (out / "c0/effects/c/5/0/0").unlink()  # unit 5 lies in the gap: its shard holds only NaN
    assert_one_line_error(invoke("store", "verify", out), "chrT unit 5", "effects", "is missing")


# ------------------------------------------------------------------------------------------------
# issue 22, item 10: the batch size is part of the identity
# ------------------------------------------------------------------------------------------------


def test_a_resume_with_another_batch_size_is_refused(genome_path, trained_run, tmp_path, small_units):
    """A batched pass's float32 sums depend on the batch's size: a catalogue's units are all computed
    with one, recorded; another one is refused, none keeps the recorded one."""
    ckpt = trained_run / "best.pt"
    one, sharded = tmp_path / "one.zarr", tmp_path / "sharded.zarr"
    build(ckpt, genome_path, one, regions=REGIONS, batch_size=2)
    build(ckpt, genome_path, sharded, regions=REGIONS, batch_size=2, shard="0/2")
    assert open_catalogue(sharded).meta.batch_size == 2
    with pytest.raises(UserError, match=r"other batch_size \(batch_size 2: pass --batch-size 2, or leave it out\)"):
        build(ckpt, genome_path, sharded, regions=REGIONS, batch_size=5, shard="1/2")
    assert build(ckpt, genome_path, sharded, regions=REGIONS, shard="1/2").remaining == 0  # the recorded one is used
    assert_same_values(one, sharded)
    build(ckpt, genome_path, sharded, regions=REGIONS, batch_size=5, overwrite=True)
    assert open_catalogue(sharded).meta.batch_size == 5
