"""Distillation at scale: torchrun and --shard equal one process, SIGKILL + rerun equals an
uninterrupted run, the spec hash guards reuse, overlap/sharding/precision options.

The tests that start processes (the console script, torchrun, a SIGKILL driver) are marked
``processes``; the rest run in this process."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import BIN, PROCESS_TIMEOUT, assert_one_line_error, ok, process_env, run_cli, start_cli, torchrun

from pipeline.core.commands import DistillOptions
from pipeline.core.spec import spec_from_dict
from pipeline.distill import Launch, distill
from pipeline.errors import StoreMismatchError, StoreNotFoundError, UserError
from pipeline.store import open_store, store_info, verify_store

ARRAYS = ("reference", "ref_pred", "targets", "chrom", "center", "complete")

KILL_DRIVER = """
import os, signal, sys, threading
from zarr.core.array import Array

from pipeline.store.chunkio import TargetWriter

kill_at = int(sys.argv[1])
count, lock = [0], threading.Lock()

def counted(write):
    def wrapper(self, *args, **kwargs):
        with lock:
            count[0] += 1
            n = count[0]
        if n == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return write(self, *args, **kwargs)
    return wrapper

Array.__setitem__ = counted(Array.__setitem__)
TargetWriter.put = counted(TargetWriter.put)  # format 4 writes the targets' chunk files itself
from pipeline.cli import main
sys.argv = ["multiplexer", "-q", *sys.argv[2:]]
main()
"""


def assert_arrays_equal(a: str, b: str) -> None:
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    assert ga.attrs["spec_hash"] == gb.attrs["spec_hash"]
    for split in ga.attrs["spec"]["splits"]:
        for name in ARRAYS:
            assert np.array_equal(ga[split][name][:], gb[split][name][:]), f"{split}/{name} differs"


@pytest.fixture()
def spec_file(tmp_path, write_spec) -> Path:
    return write_spec(tmp_path)


@pytest.fixture()
def single(tmp_path, spec_file) -> str:
    """The store of one uninterrupted single-process run (same thread count as the workers)."""
    path = str(tmp_path / "single.zarr")
    run_cli("distill", spec_file, "--store", path, "--device", "cpu")
    return path


@pytest.mark.processes
def test_torchrun_two_processes_equal_one(tmp_path, spec_file, single):
    path = str(tmp_path / "torchrun.zarr")
    result = torchrun(2, "distill", spec_file, "--store", path, "--device", "cpu")
    assert "rank 0/2" in result.stdout and "rank 1/2" in result.stdout and "all 2 ranks" in result.stdout
    assert_arrays_equal(path, single)
    assert verify_store(open_store(path)) == []


@pytest.mark.processes
def test_concurrent_shards_equal_one(tmp_path, spec_file, single):
    """Two --shard jobs started at the same moment (both try to create the store) equal one run."""
    path = str(tmp_path / "shards.zarr")
    procs = [start_cli("distill", spec_file, "--store", path, "--device", "cpu", "--shard", f"{i}/2") for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert_arrays_equal(path, single)
    assert not [p for p in Path(tmp_path).iterdir() if ".creating-" in p.name]


def test_launch_partitions_units():
    owners = {}
    for shard in range(3):
        for rank in range(2):
            launch = Launch(rank=rank, world=2, shard=(shard, 3))
            for u in range(30):
                if launch.owns(u):
                    assert u not in owners
                    owners[u] = (shard, rank)
    assert sorted(owners) == list(range(30))
    assert {u for u in range(30) if Launch(rank=1, world=2).owns(u)} == set(range(1, 30, 2))


WRITES_PER_UNIT = 4 + 4 + 1
"""Writes of one full unit of the tiny spec: each of its 4 targets chunk files (one sample each, written
by the store's :class:`~pipeline.store.chunkio.TargetWriter`), reference, ref_pred, chrom and center
(one chunk each, in any order), then its marker."""


@pytest.mark.processes
@pytest.mark.parametrize(
    "kill_at",
    [1, 5, WRITES_PER_UNIT + 5, 2 * WRITES_PER_UNIT],
    ids=["before-first-write", "mid-write-unit-1", "mid-write-unit-2", "before-marker-unit-2"],
)
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, spec_file, single, kill_at):
    """Kill with SIGKILL before the k-th array write (see :data:`WRITES_PER_UNIT`), rerun, compare
    with an uninterrupted run."""
    driver = tmp_path / "kill.py"
    driver.write_text(KILL_DRIVER)
    path = str(tmp_path / "killed.zarr")
    killed = subprocess.run(
        [sys.executable, str(driver), str(kill_at), "distill", str(spec_file), "--store", path, "--device", "cpu",
         "--no-overlap"],
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    before = open_store(path)
    done = {split: before.complete_units(split).sum() for split in before.splits}
    assert sum(done.values()) == (kill_at - 1) // WRITES_PER_UNIT  # only units whose marker was written count
    assert verify_store(before)  # the interrupted store is not complete
    run_cli("distill", spec_file, "--store", path, "--device", "cpu")
    assert_arrays_equal(path, single)
    assert verify_store(open_store(path)) == []
    assert "complete and consistent" in run_cli("store", "verify", path).stdout


@pytest.mark.processes
def test_sigkill_at_a_random_moment_with_overlap(tmp_path, write_spec):
    """A kill at a random time while writer threads are busy; the rerun still equals one run."""
    spec_file = write_spec(tmp_path, splits={"train": {"samples": 48}}, storage={"unit_samples": 2})
    reference = str(tmp_path / "reference.zarr")
    run_cli("distill", spec_file, "--store", reference, "--device", "cpu", "--engine", "naive")
    path = str(tmp_path / "killed.zarr")
    proc = start_cli("distill", spec_file, "--store", path, "--device", "cpu", "--engine", "naive")
    deadline = time.monotonic() + 60
    while not (Path(path) / "zarr.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run_cli("distill", spec_file, "--store", path, "--device", "cpu", "--engine", "naive")
    assert_arrays_equal(path, reference)
    assert verify_store(open_store(path)) == []


@pytest.mark.processes
def test_same_spec_reuses_without_recomputing(tmp_path, spec_file, single):
    files = {p: p.stat().st_mtime_ns for p in Path(single).rglob("*") if p.is_file()}
    result = run_cli("distill", spec_file, "--store", single, "--device", "cpu")
    assert "distilled 0 samples" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in Path(single).rglob("*") if p.is_file()} == files


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"seq_len": 96}, "seq_len"),
        ({"seed": 1}, "seed"),
        ({"max_n": 3}, "max_n"),
        ({"target": "diff"}, "target"),
        ({"precision": "bf16"}, "precision"),
        ({"splits": {"train": {"chroms": ["chr1", "chr2"]}}}, "splits.train.chroms"),
        ({"base": {"kwargs": {"hidden": 9}}}, "base.kwargs.hidden"),
        ({"storage": {"dtype": "float32"}}, "storage.dtype"),
        ({"storage": {"codec": "zstd"}}, "storage.codec"),
        ({"storage": {"unit_samples": 2}}, "storage.unit_samples"),
        ({"storage": {"shards": True}}, "storage.shards"),
    ],
)
def test_any_content_key_change_refuses_reuse(tmp_path, spec_dict, tiny_store, change, key):
    changed = spec_from_dict(spec_dict(**change), base_dir=tmp_path)
    before = {p: p.stat().st_mtime_ns for p in Path(tiny_store).rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=f"differing keys: .*{key}"):
        distill(changed, DistillOptions(store_path=tiny_store, device="cpu"), progress=False)
    assert {p: p.stat().st_mtime_ns for p in Path(tiny_store).rglob("*") if p.is_file()} == before


@pytest.mark.processes
def test_changed_spec_is_one_error_line_from_the_cli(tmp_path, write_spec, single):
    changed = write_spec(tmp_path / "changed", precision="bf16")
    before = {p: p.stat().st_mtime_ns for p in Path(single).rglob("*") if p.is_file()}
    result = run_cli("distill", changed, "--store", single, "--device", "cpu", check=False)
    assert result.returncode == 1
    assert_one_line_error(result, "precision")
    assert {p: p.stat().st_mtime_ns for p in Path(single).rglob("*") if p.is_file()} == before


@pytest.mark.processes
def test_torchrun_refusal_reaches_every_rank(tmp_path, write_spec, single):
    changed = write_spec(tmp_path / "changed", seed=5)
    result = torchrun(2, "distill", changed, "--store", single, "--device", "cpu", check=False)
    assert result.returncode != 0
    assert result.stderr.count("error: store") >= 2  # both ranks say why, neither hangs
    # torchrun prints its own launcher traceback when a worker fails; none comes from our code
    assert "pipeline/" not in result.stderr.replace("-m pipeline.cli", "")


TYPED_REFUSAL = """
import os, sys
from pathlib import Path
from pipeline.core.commands import DistillOptions
from pipeline.core.spec import load_spec
from pipeline.distill import distill
from pipeline.errors import StoreMismatchError
try:
    distill(load_spec(sys.argv[1]), DistillOptions(store_path=sys.argv[2], device="cpu"), progress=False)
except StoreMismatchError as exc:  # one file per rank: two ranks' prints on one pipe can interleave
    (Path(sys.argv[3]) / f"rank{os.environ['RANK']}").write_text(f"StoreMismatchError {exc.path}")
"""


@pytest.mark.processes
def test_torchrun_refusal_keeps_its_type_on_every_rank(tmp_path, write_spec, single):
    """Rank 0's typed error (here :class:`StoreMismatchError`, with its attributes) is raised as itself on
    every rank, so a library caller can branch on it under torchrun too."""
    changed = write_spec(tmp_path / "changed", seed=5)
    script = tmp_path / "refusal.py"
    script.write_text(TYPED_REFUSAL)
    seen = tmp_path / "seen"
    seen.mkdir()
    command = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script), str(changed), single]
    command.append(str(seen))
    result = subprocess.run(command, env=process_env(), capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr
    expected = {f"rank{r}": f"StoreMismatchError {single}" for r in (0, 1)}
    assert {p.name: p.read_text() for p in seen.iterdir()} == expected


def test_store_errors_pickle_with_their_type_and_attributes():
    """What crosses from rank 0 to the others (torch pickles it) is the same error."""
    for error in (StoreMismatchError("s.zarr", "made from another spec"), StoreNotFoundError("t.zarr")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and vars(copy) == vars(error)


def test_overlap_and_sequential_give_the_same_store(tmp_path, tiny_spec, tiny_store):
    path = str(tmp_path / "sequential.zarr")
    distill(tiny_spec, DistillOptions(store_path=path, device="cpu", overlap=False), progress=False)
    assert_arrays_equal(path, tiny_store)


def test_sharded_targets_store(tmp_path, spec_dict):
    plain = spec_from_dict(spec_dict(), base_dir=tmp_path)
    sharded = spec_from_dict(spec_dict(storage={"shards": True}), base_dir=tmp_path)
    distill(plain, DistillOptions(store_path=str(tmp_path / "plain.zarr"), device="cpu"), progress=False)
    distill(sharded, DistillOptions(store_path=str(tmp_path / "sharded.zarr"), device="cpu"), progress=False)
    a, b = open_store(str(tmp_path / "plain.zarr")), open_store(str(tmp_path / "sharded.zarr"))
    assert b.array("train", "targets").shards is not None
    for split in plain.splits:
        for name in ARRAYS:
            assert np.array_equal(a.array(split, name)[:], b.array(split, name)[:])
    assert verify_store(b) == []
    shard_files = sorted((tmp_path / "sharded.zarr" / "train" / "targets" / "c").iterdir())
    assert len(shard_files) == b.split_info("train").n_units  # one file per write unit
    for f in (tmp_path / "sharded.zarr" / "train" / "targets" / "c" / "1").rglob("*"):
        if f.is_file():
            f.unlink()
    problems = verify_store(open_store(str(tmp_path / "sharded.zarr")))
    assert problems and "unit 1" in problems[0] and "missing" in problems[0]


def test_bf16_precision_on_cpu_stays_close_to_float32(tmp_path, spec_dict):
    base = spec_dict(storage={"dtype": "float32"})
    exact = spec_from_dict(base, base_dir=tmp_path)
    bf16 = spec_from_dict({**base, "precision": "bf16"}, base_dir=tmp_path)
    notes: list[str] = []
    distill(
        exact, DistillOptions(store_path=str(tmp_path / "f32.zarr"), device="cpu", splits=["valid"]), progress=False
    )
    distill(
        bf16,
        DistillOptions(store_path=str(tmp_path / "bf16.zarr"), device="cpu", splits=["valid"]),
        progress=False,
        notify=notes.append,
    )
    assert any("bf16" in n for n in notes)
    n = spec_dict()["splits"]["valid"]["samples"]
    a = open_store(str(tmp_path / "f32.zarr")).read("valid", "targets", 0, n)
    b = open_store(str(tmp_path / "bf16.zarr")).read("valid", "targets", 0, n)
    assert np.isfinite(b).all() and not np.array_equal(a, b)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    X = open_store(str(tmp_path / "bf16.zarr")).array("valid", "reference")[:]
    assert (b[np.broadcast_to(X[:, None].astype(bool), b.shape)] == 0).all()


def test_overwrite_with_shards_is_refused(tmp_path, tiny_spec):
    with pytest.raises(UserError, match="--overwrite cannot be combined with --shard"):
        distill(
            tiny_spec, DistillOptions(store_path=str(tmp_path / "x.zarr"), shard="0/2", overwrite=True), progress=False
        )


@pytest.mark.parametrize("codec", ["blosc-lz4", "blosc-zstd", "zstd", "none"])
def test_codecs_and_store_info(tmp_path, spec_dict, codec):
    spec = spec_from_dict(spec_dict(storage={"codec": codec, "shuffle": "shuffle"}), base_dir=tmp_path)
    path = str(tmp_path / f"{codec}.zarr")
    distill(spec, DistillOptions(store_path=path, device="cpu", splits=["valid"]), progress=False)
    info = store_info(open_store(path))["splits"]["valid"]
    assert info["raw_float32_bytes_per_sample"] == spec.seq_len * 4 * 4 * 4
    assert info["bytes_per_sample"] > 0
    if codec == "none":  # float16 of 3 of the 4 rows (format 4), uncompressed
        assert info["compression_vs_float32"] == pytest.approx(2 * 4 / 3, rel=0.1)  # and zarr.json
    else:
        assert info["compression_vs_float32"] > 2 * 4 / 3
    out = ok("store", "info", path).stdout
    assert "MB/sample" in out and "raw float32" in out


def test_store_at_an_fsspec_url(tmp_path, tiny_spec, tiny_store):
    """A store given as a ``file://`` URL goes through fsspec: distill, resume, verify and train."""
    from pipeline.train import train, train_config

    url = f"file://{tmp_path}/url.zarr"
    distill(tiny_spec, DistillOptions(store_path=url, device="cpu"), progress=False)
    assert distill(tiny_spec, DistillOptions(store_path=url, device="cpu"), progress=False).computed_samples == 0
    store = open_store(url)
    assert verify_store(store) == []
    assert_arrays_equal(str(tmp_path / "url.zarr"), tiny_store)
    result = train(
        url, str(tmp_path / "run"), train_config(tiny_spec.train, steps=2, valid_every=2), device="cpu", progress=False
    )
    assert result.step == 2
