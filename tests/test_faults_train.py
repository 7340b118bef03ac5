"""Training faults (issue 13): resuming with changed options, metrics.csv after kills, stale temporaries,
durable checkpoints, a best.pt in place of last.pt, and architecture arguments checked before allocation.

Every case builds its own run folder (a copy of the session's trained run, or a new run); the shared
fixtures are never modified.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import assert_one_line_error, invoke, ok, run_cli, start_cli

from pipeline.core.runtime import Launch
from pipeline.models import read_checkpoint, save_checkpoint
from pipeline.train import METRIC_FIELDS, RunDir, Trainer, lr_factor, train, train_config
from pipeline.train.data import BlockShuffle, StoreDataset

HEADER = ",".join(METRIC_FIELDS)


def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's 4-step run (tiny spec: batch 4, lr 0.01, valid every 2)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


def spec_for(write_spec, tmp_path: Path, tiny_store: str, **train: Any) -> Path:
    """The tiny spec (its store is the session's), with ``train:`` keys overridden."""
    return write_spec(tmp_path, "train.yaml", store=tiny_store, **({"train": train} if train else {}))


def resume(spec: Path, run: Path, *args: Any):
    return invoke("train", spec, "--run-dir", run, "--resume", "--device", "cpu", *args)


def metric_lines(run: Path) -> list[str]:
    return (run / "metrics.csv").read_text().splitlines()


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_clean_metrics(run: Path) -> list[int]:
    """One header, on the first line; every other line a row; steps strictly increasing. Returns the steps."""
    lines = metric_lines(run)
    assert lines and lines[0] == HEADER, lines[:2]
    assert lines.count(HEADER) == 1, lines
    steps = [int(r["step"]) for r in metric_rows(run)]
    assert all(b > a for a, b in zip(steps, steps[1:])), steps
    return steps


def dead_pid() -> int:
    """The pid of a process that has exited (and been waited for)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------------
# item 3: resuming with changed options
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["flag", "spec"])
def test_a_changed_lr_is_refused_on_resume_listing_the_change(via, trained_run, tiny_store, write_spec, tmp_path):
    run = copy_run(trained_run, tmp_path)
    before = (run / "last.pt").read_bytes()
    if via == "flag":
        result = resume(spec_for(write_spec, tmp_path, tiny_store), run, "--steps", "6", "--lr", "0.005")
    else:
        result = resume(spec_for(write_spec, tmp_path, tiny_store, lr=0.005), run, "--steps", "6")
    line = assert_one_line_error(result, "lr: 0.01 -> 0.005", "--allow-changes")
    assert "steps: 4 -> 6" not in line  # more steps need no flag
    assert (run / "last.pt").read_bytes() == before


def test_allow_changes_applies_a_new_lr_and_records_it(trained_run, tiny_spec, tiny_store, write_spec, tmp_path):
    run = copy_run(trained_run, tmp_path)
    spec = spec_for(write_spec, tmp_path, tiny_store)
    ok("train", spec, "--run-dir", run, "--resume", "--device", "cpu", "--steps", "8", "--lr", "0.005",
       "--allow-changes")  # fmt: skip
    new = train_config(tiny_spec.train, steps=8, lr=0.005)
    rows = {int(r["step"]): r for r in metric_rows(run)}
    # the logged lr after the resume point follows the new peak lr (cosine over the new 8 steps)
    assert float(rows[6]["lr"]) == pytest.approx(0.005 * lr_factor(6, new), rel=1e-12)
    assert float(rows[6]["lr"]) > 0
    last = read_checkpoint(run / "last.pt")
    group = last["training"]["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == pytest.approx(0.005)
    assert group["lr"] == pytest.approx(0.005 * lr_factor(8, new))
    assert last["training"]["scheduler"]["base_lrs"] == [pytest.approx(0.005)]
    change = {"step": 4, "option": "lr", "old": 0.01, "new": 0.005}
    config = json.loads((run / "config.json").read_text())
    assert change in config["changes"] and change in last["changes"]
    assert {"step": 4, "option": "steps", "old": 4, "new": 8} in config["changes"]
    assert config["train"]["lr"] == 0.005 and last["train"]["lr"] == 0.005


def test_a_changed_batch_size_is_refused_then_applied_with_allow_changes(
    trained_run, tiny_spec, tiny_store, write_spec, tmp_path, monkeypatch
):
    run = copy_run(trained_run, tmp_path)
    spec = spec_for(write_spec, tmp_path, tiny_store)
    assert_one_line_error(
        resume(spec, run, "--steps", "6", "--batch-size", "3"), "batch_size: 4 -> 3", "--allow-changes"
    )

    # record which train samples each step reads
    reads: list[list[int]] = []
    real = StoreDataset.read_into

    def read_into(self: StoreDataset, indices: Any, *args: Any) -> Any:
        if self.split == "train":
            reads.append([int(i) for i in indices])
        return real(self, indices, *args)

    monkeypatch.setattr(StoreDataset, "read_into", read_into)
    # 10 train samples, batch 4: step 4 ended after the first 4 samples of epoch 1
    cfg = train_config(tiny_spec.train, steps=6, batch_size=3)
    train(tiny_store, str(run), cfg, resume=True, allow_changes=True, device="cpu", progress=False)
    # the new batch size, from the first step after the resume (then the batch the feed read ahead: the
    # first of epoch 2, unused)
    assert [len(r) for r in reads] == [3, 3, 3]
    assert sorted(reads[2]) == sorted(BlockShuffle(10, 4, 8, 0).order(2)[:3].tolist())
    reads = reads[:2]
    last = read_checkpoint(run / "last.pt")
    # the rest of epoch 1 (6 samples) was read exactly once: the epoch is complete, nothing skipped
    assert last["training"]["epoch"] == 2 and last["training"]["samples"] == 14 + 6
    order = BlockShuffle(10, 4, 8, 0).order(1)
    assert sorted(reads[0] + reads[1]) == sorted(order[4:].tolist())
    assert {"step": 4, "option": "batch_size", "old": 4, "new": 3} in last["changes"]
    assert [int(r["samples"]) for r in metric_rows(run)][-1] == 20


@pytest.mark.parametrize(("change", "reset"), [({"valid_samples": 2}, True), ({"lr": 0.005}, False)])
def test_another_validation_set_starts_the_best_loss_anew(change, reset, trained_run, tiny_spec, tiny_store, tmp_path):
    run = copy_run(trained_run, tmp_path)
    recorded = read_checkpoint(run / "last.pt")["training"]["best_valid_loss"]
    cfg = train_config(tiny_spec.train, steps=6, **change)
    with torch.random.fork_rng():
        trainer = Trainer(tiny_store, RunDir(run), cfg, launch=Launch(), device=torch.device("cpu"), resume=True,
                          allow_changes=True)  # fmt: skip
    # the loss on 2 of the 6 validation samples does not compare with the best loss on all 6
    assert trainer.state.best_valid_loss == (math.inf if reset else recorded)


def test_more_steps_resume_without_the_flag_and_are_recorded(trained_run, tiny_store, write_spec, tmp_path):
    run = copy_run(trained_run, tmp_path)
    ok("train", spec_for(write_spec, tmp_path, tiny_store), "--run-dir", run, "--resume", "--steps", "6",
       "--device", "cpu")  # fmt: skip
    assert read_checkpoint(run / "last.pt")["step"] == 6
    config = json.loads((run / "config.json").read_text())
    assert config["changes"] == [{"step": 4, "option": "steps", "old": 4, "new": 6}]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--seed", "1"], "seed: 0 -> 1"),
        (["--shuffle-buffer", "2"], "shuffle_buffer: 8 -> 2"),
        (["--arch-kwargs", '{"width1": 6, "width2": 8, "kernel_size": 4, "dilations": [2, 2, 2, 2, 2]}'],
         "kwargs.width1: 8 -> 6"),
    ],
)  # fmt: skip
def test_options_fixed_for_a_run_are_refused_even_with_allow_changes(
    args, fragment, trained_run, tiny_store, write_spec, tmp_path
):
    run = copy_run(trained_run, tmp_path)
    before = (run / "last.pt").read_bytes()
    spec = spec_for(write_spec, tmp_path, tiny_store)
    for extra in ([], ["--allow-changes"]):
        assert_one_line_error(resume(spec, run, "--steps", "6", *args, *extra), fragment, "new run")
    assert (run / "last.pt").read_bytes() == before


def test_allow_changes_needs_resume(tiny_store, tmp_path):
    result = invoke("train", tiny_store, "--run-dir", tmp_path / "r", "--steps", "1", "--device", "cpu",
                    "--allow-changes")  # fmt: skip
    assert_one_line_error(result, "--allow-changes", "--resume")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------
# item 8: metrics.csv after kills
# ------------------------------------------------------------------------------------------------


def test_an_empty_metrics_file_of_a_killed_first_run_gets_its_header(tiny_store, write_spec, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("")  # killed before its first row: no checkpoint, an empty file
    ok("train", spec_for(write_spec, tmp_path, tiny_store), "--run-dir", run, "--device", "cpu")
    assert assert_clean_metrics(run) == [2, 4]


def test_resume_after_a_kill_before_the_first_row(trained_run, tiny_store, write_spec, tmp_path):
    run = copy_run(trained_run, tmp_path)
    (run / "metrics.csv").write_text("")
    ok("train", spec_for(write_spec, tmp_path, tiny_store), "--run-dir", run, "--resume", "--steps", "6",
       "--device", "cpu")  # fmt: skip
    steps = assert_clean_metrics(run)
    assert steps[-1] == 6 and 4 in steps  # the checkpoint's own row comes back from last.pt


def test_rows_written_after_the_last_checkpoint_are_dropped_on_resume(trained_run, tiny_store, write_spec, tmp_path):
    run = copy_run(trained_run, tmp_path)
    with open(run / "metrics.csv", "a", newline="") as handle:  # a run killed after rows 5 and 6
        writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
        for step in (5, 6):
            writer.writerow({**{k: "" for k in METRIC_FIELDS}, "step": step, "train_loss": 999.0, "lr": 0.01})
        handle.write("7,1,3")  # and half of a row
    ok("train", spec_for(write_spec, tmp_path, tiny_store), "--run-dir", run, "--resume", "--steps", "8",
       "--device", "cpu")  # fmt: skip
    assert assert_clean_metrics(run) == [2, 4, 6, 8]
    assert all(float(r["train_loss"]) != 999.0 for r in metric_rows(run))


def test_headerless_and_duplicated_rows_are_repaired_on_resume(trained_run, tiny_store, write_spec, tmp_path):
    run = copy_run(trained_run, tmp_path)
    rows = metric_lines(run)[1:]
    (run / "metrics.csv").write_text("\n".join(rows + rows) + "\n")  # what the old appending left
    ok("train", spec_for(write_spec, tmp_path, tiny_store), "--run-dir", run, "--resume", "--steps", "6",
       "--device", "cpu")  # fmt: skip
    assert assert_clean_metrics(run) == [2, 4, 6]


def test_the_row_of_the_checkpoint_step_comes_back_after_a_kill_before_it(
    trained_run, tiny_store, write_spec, tmp_path
):
    run = copy_run(trained_run, tmp_path)
    lines = metric_lines(run)
    (run / "metrics.csv").write_text("\n".join(lines[:-1]) + "\n")  # killed after last.pt, before its row
    saved = read_checkpoint(run / "last.pt")["metrics"]
    ok("train", spec_for(write_spec, tmp_path, tiny_store), "--run-dir", run, "--resume", "--steps", "6",
       "--device", "cpu")  # fmt: skip
    assert assert_clean_metrics(run) == [2, 4, 6]
    row = metric_rows(run)[1]
    assert float(row["valid_loss"]) == saved["valid_loss"] and float(row["train_loss"]) == saved["train_loss"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(bytes(range(128, 256)) * 4, "not UTF-8 text"), (b"step,epoch\x00\x00\x00", "NUL"),
     (b"lorem ipsum\ndolor sit amet\n", "no line of it")],
    ids=["random-bytes", "nul-bytes", "foreign-text"],
)  # fmt: skip
def test_a_damaged_metrics_file_is_refused_naming_it_and_can_be_set_aside(
    trained_run, tiny_store, write_spec, tmp_path, content, reason
):
    """Issue 27.2: a ``metrics.csv`` overwritten with random bytes made ``--resume`` impossible
    (``UnicodeDecodeError``). It is one line naming the file and the way on; nothing in the run folder
    changes; with the file moved aside the run resumes, its new file starting from the checkpoint's row
    (rows before it are not in the checkpoint: refusing keeps the user from losing them unknowingly)."""
    run = copy_run(trained_run, tmp_path)
    (run / "metrics.csv").write_bytes(content)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    spec = spec_for(write_spec, tmp_path, tiny_store)
    result = invoke("train", spec, "--run-dir", run, "--resume", "--steps", "6", "--device", "cpu")
    assert_one_line_error(result, str(run / "metrics.csv"), "damaged", reason, "move it aside")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (run / "metrics.csv").rename(tmp_path / "metrics.csv.damaged")
    ok("train", spec, "--run-dir", run, "--resume", "--steps", "6", "--device", "cpu")
    assert assert_clean_metrics(run) == [4, 6]


@pytest.mark.processes
def test_sigkill_then_resume_leaves_clean_metrics_and_no_temporaries(tiny_store, tmp_path):
    """A real kill, somewhere after the first checkpoint (rows after it, maybe a checkpoint being written)."""
    args = ["--steps", "12", "--batch-size", "4", "--valid-every", "3", "--log-every", "1", "--device", "cpu"]
    run = tmp_path / "run"
    proc = start_cli("train", tiny_store, "--run-dir", run, *args)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run_cli("train", tiny_store, "--run-dir", run, *args, "--resume")
    assert assert_clean_metrics(run) == list(range(1, 13))
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]


# ------------------------------------------------------------------------------------------------
# item 9: temporaries of killed runs, durable checkpoints
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resuming", [True, False])
def test_stale_temporaries_of_dead_processes_are_removed(resuming, trained_run, tiny_store, write_spec, tmp_path):
    if resuming:
        run = copy_run(trained_run, tmp_path)
    else:
        run = tmp_path / "run"
        run.mkdir()
    dead, live = dead_pid(), os.getppid()  # the parent is alive and is not this process
    stale = [run / f".best.pt.tmp-{dead}", run / f".last.pt.tmp-{dead}", run / f".config.json.tmp-{dead}"]
    kept = [run / f".last.pt.tmp-{live}", run / f".notes.txt.tmp-{dead}", run / "best.pt.tmp-1"]
    for path in stale + kept:
        path.write_bytes(b"half a checkpoint")
    staged = run / f".metrics.csv.tmp-{dead}-0a1b2c3d"  # a staging folder of core.files.atomic_path
    staged.mkdir()
    (staged / "metrics.csv").write_text("step\n")
    args = ["--resume", "--steps", "6"] if resuming else []
    ok("train", spec_for(write_spec, tmp_path, tiny_store), "--run-dir", run, "--device", "cpu", *args)
    assert [p.name for p in [*stale, staged] if p.exists()] == []
    assert all(p.read_bytes() == b"half a checkpoint" for p in kept)


def test_a_checkpoint_is_fsynced_before_it_is_published(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        events.append(f"rename to {Path(dst).name}")
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path / "x.pt", {"model": {}, "step": 1})
    assert events == ["fsync file", "rename to x.pt", "fsync folder"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


# ------------------------------------------------------------------------------------------------
# item 10: internal errors that are bad inputs
# ------------------------------------------------------------------------------------------------


def test_best_pt_copied_over_last_pt_is_a_one_line_error(trained_run, tiny_store, write_spec, tmp_path):
    run = copy_run(trained_run, tmp_path)
    shutil.copy(run / "best.pt", run / "last.pt")
    result = resume(spec_for(write_spec, tmp_path, tiny_store), run, "--steps", "6")
    assert_one_line_error(result, "last.pt", "without training state", "start a new run")


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"width1": -5}, ["width1", "-5"]),
        ({"width2": 0}, ["width2", "0"]),
        ({"kernel_size": 0}, ["kernel_size"]),
        ({"dilations": [0, 2, 2, 2, 2]}, ["dilations"]),
        ({"width1": "wide"}, ["width1"]),
        ({"width1": 10**5}, ["parameters", "memory", "width1"]),
        ({"width2": 10**6}, ["parameters", "memory", "width2"]),
        ({"width1": 10**9}, ["width1", "cannot build"]),  # more elements than a tensor can have
        ({"width2": 10**12}, ["width2", "cannot build"]),
    ],
)
def test_bad_architecture_arguments_are_refused_before_allocating(kwargs, fragments, tiny_store, tmp_path):
    start = time.perf_counter()
    result = invoke("train", tiny_store, "--run-dir", tmp_path / "r", "--steps", "1", "--device", "cpu",
                    "--arch-kwargs", json.dumps(kwargs))  # fmt: skip
    assert_one_line_error(result, "--arch-kwargs", *fragments)
    assert time.perf_counter() - start < 5  # nothing of that size was allocated
    assert not (tmp_path / "r").exists()
