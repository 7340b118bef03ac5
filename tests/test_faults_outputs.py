"""Outputs under faults (issue 13): safe ``--overwrite``, interrupted writes, stale temporaries, bounded memory.

- ``--overwrite`` replaces only an output of the kind the command writes: never a training store, a
  checkpoint, a run folder or an input of the same command (every file is unchanged: sha256 before
  and after);
- a ``KeyboardInterrupt`` injected mid-write during an ``--overwrite`` run (through a seam of our own
  code: the effects writer, the summary's row counter, the figure class, the report writer) leaves the
  old output intact and no temporary behind;
- a temporary left by a killed process (a dead pid) is removed by the next run writing the same
  output; one of a live process is not;
- ``score-vcf`` holds a bounded number of rows however many records are skipped (records read minus
  rows written, counted around :func:`pipeline.apply.variants.score_vcf.read_vcf` and the table writer), and an
  ``.npz`` output too large for memory is refused before any work.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_one_line_error, invoke, ok, snapshot

import pipeline.apply.variants.score_vcf as vcf_module
import pipeline.apply.variants.writers as writers_module
from pipeline.apply.outputs import read_effects
from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.score_vcf import read_scores

REGIONS = "chr7\t3000\nchr7\t3010\nchr8\t2000\n"
ONE_VCF = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\nchr7\t3000\t.\tA\tG\nchr7\t3005\t.\tC\tT\n"


def temporaries(folder: Path) -> list[str]:
    """Names in ``folder`` (recursively) that look like a temporary or a set-aside old output."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp-" in p.name or "set-aside" in p.name)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def regions(tmp_path: Path) -> Path:
    path = tmp_path / "inputs" / "regions.txt"
    path.parent.mkdir()
    path.write_text(REGIONS)
    return path


def _predict(ckpt: Path, regions: Path, out: Path, *extra: Any) -> list[Any]:
    return ["predict", "--checkpoint", ckpt, "--regions", regions, "--out", out, "--device", "cpu",
            "--batch-size", "1", *extra]  # fmt: skip


# ------------------------------------------------------------------------------------------------
# --overwrite never replaces what the command does not write
# ------------------------------------------------------------------------------------------------


def _case_store(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    target = tmp / "store.zarr"
    shutil.copytree(store, target)
    return _predict(run / "best.pt", regions, target, "--overwrite"), ("store.zarr", "training store")


def _case_ism_store(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    target = tmp / "store.zarr"
    shutil.copytree(store, target)
    args = ["ism", "--checkpoint", run / "best.pt", "--region", "chr7:3000", "--out", target, "--overwrite",
            "--device", "cpu"]  # fmt: skip
    return args, ("store.zarr", "training store")


def _case_checkpoint(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    return _predict(run / "best.pt", regions, copy / "last.pt", "--overwrite"), ("last.pt", "checkpoint")


def _case_npz_checkpoint(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    target = tmp / "renamed.npz"
    shutil.copy(run / "best.pt", target)
    return _predict(run / "best.pt", regions, target, "--overwrite"), ("renamed.npz", "checkpoint")


def _case_run_folder(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    return _predict(run / "best.pt", regions, copy, "--overwrite"), ("run", "run folder")


def _case_own_checkpoint(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    ckpt = tmp / "model.pt"
    shutil.copy(run / "best.pt", ckpt)
    return _predict(ckpt, regions, ckpt, "--overwrite"), ("model.pt", "--checkpoint")


def _case_own_regions(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    return _predict(run / "best.pt", regions, regions, "--overwrite"), ("regions.txt", "--regions")


def _case_own_vcf(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    vcf = tmp / "variants.tsv"
    vcf.write_text(ONE_VCF)
    args = ["score-vcf", "--checkpoint", run / "best.pt", "--vcf", vcf, "--out", vcf, "--overwrite", "--device", "cpu"]
    return args, ("variants.tsv", "--vcf")


def _case_plot_checkpoint(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    pred = tmp / "pred.npz"
    ok(*_predict(run / "best.pt", regions, pred))
    image = tmp / "figure.png"
    shutil.copy(run / "best.pt", image)
    return ["plot", pred, "--out", image, "--overwrite"], ("figure.png", "checkpoint")


def _case_evaluate_store(tmp: Path, run: Path, store: str, regions: Path) -> tuple[list[Any], tuple[str, ...]]:
    target = tmp / "store.zarr"
    shutil.copytree(store, target)
    args = ["evaluate", "--checkpoint", run / "best.pt", "--store", target, "--out", target, "--overwrite",
            "--device", "cpu"]  # fmt: skip
    return args, ("store.zarr", "--store")


PROTECTED: dict[str, Callable[..., tuple[list[Any], tuple[str, ...]]]] = {
    "predict onto a training store": _case_store,
    "ism onto a training store": _case_ism_store,
    "predict onto a run folder's last.pt": _case_checkpoint,
    "predict onto a checkpoint named .npz": _case_npz_checkpoint,
    "predict onto a run folder": _case_run_folder,
    "predict --checkpoint X --out X": _case_own_checkpoint,
    "predict --regions X --out X": _case_own_regions,
    "score-vcf --vcf X --out X": _case_own_vcf,
    "plot onto a checkpoint named .png": _case_plot_checkpoint,
    "evaluate --store X --out X": _case_evaluate_store,
}


@pytest.mark.parametrize("name", list(PROTECTED))
def test_overwrite_refuses_what_the_command_does_not_write(name, tmp_path, trained_run, tiny_store, regions):
    args, fragments = PROTECTED[name](tmp_path, trained_run, tiny_store, regions)
    before = snapshot(tmp_path, trained_run, Path(tiny_store))
    line = assert_one_line_error(invoke(*args), *fragments, "--overwrite will not replace")
    assert "\n" not in line
    assert snapshot(tmp_path, trained_run, Path(tiny_store)) == before, "existing data modified or removed"
    assert temporaries(tmp_path) == []


def test_overwrite_still_replaces_an_output_of_the_same_kind(tmp_path, trained_run, regions):
    for name in ("p.zarr", "q.npz"):
        out = tmp_path / name
        ok(*_predict(trained_run / "best.pt", regions, out, "--tsv"))
        first = read_effects(out)
        ok(*_predict(trained_run / "best.pt", regions, out, "--tsv", "--overwrite"))
        assert read_effects(out)["effects"].shape == first["effects"].shape
    assert temporaries(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# an interrupted --overwrite keeps the old output
# ------------------------------------------------------------------------------------------------


def assert_interrupted(result: Any) -> None:
    """The run was stopped by the injected ``KeyboardInterrupt``: ``error: interrupted``, exit 130."""
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines()[-1] == "error: interrupted", result.stderr


def _interrupt_after(mp: pytest.MonkeyPatch, owner: Any, name: str, calls: int) -> list[int]:
    """Make ``owner.name`` raise ``KeyboardInterrupt`` at its ``calls``-th call (after ``calls - 1`` went through)."""
    real = getattr(owner, name)
    seen: list[int] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        if len(seen) >= calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    mp.setattr(owner, name, interrupted)
    return seen


@pytest.mark.parametrize("name", ["x.zarr", "x.npz"])
def test_interrupted_predict_overwrite_keeps_the_old_output(name, tmp_path, trained_run, regions, monkeypatch):
    from pipeline.apply.outputs import EffectsWriter

    out = tmp_path / name
    ok(*_predict(trained_run / "best.pt", regions, out, "--tsv"))
    before = snapshot(tmp_path)
    seen = _interrupt_after(monkeypatch, EffectsWriter, "write", 2)
    assert_interrupted(invoke(*_predict(trained_run / "best.pt", regions, out, "--tsv", "--overwrite")))
    assert len(seen) == 2
    assert snapshot(tmp_path) == before
    assert temporaries(tmp_path) == []


def test_interrupted_ism_overwrite_keeps_the_old_output(tmp_path, trained_run, regions, monkeypatch):
    from pipeline.apply.outputs import EffectsWriter

    out = tmp_path / "ism.zarr"
    args = ["ism", "--checkpoint", trained_run / "best.pt", "--regions", regions, "--out", out, "--device", "cpu"]
    ok(*args)
    before = snapshot(tmp_path)
    _interrupt_after(monkeypatch, EffectsWriter, "write", 2)
    assert_interrupted(invoke(*args, "--overwrite"))
    assert snapshot(tmp_path) == before
    assert temporaries(tmp_path) == []


def test_interrupted_score_vcf_overwrite_keeps_the_old_output(tmp_path, trained_run, monkeypatch):
    vcf = tmp_path / "v.vcf"
    vcf.write_text(ONE_VCF + "".join(f"chr7\t{p}\t.\tA\tAC\n" for p in range(3010, 3030)))
    out = tmp_path / "s.tsv.gz"
    args = ["score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", out, "--device", "cpu"]
    ok(*args)
    before = snapshot(tmp_path)
    _interrupt_after(monkeypatch, vcf_module.VcfSummary, "count", 5)
    assert_interrupted(invoke(*args, "--overwrite"))
    assert snapshot(tmp_path) == before
    assert temporaries(tmp_path) == []


def test_interrupted_plot_overwrite_keeps_the_old_image(tmp_path, trained_run, regions, monkeypatch):
    import pipeline.apply.plot as plot_module

    pred = tmp_path / "pred.npz"
    ok(*_predict(trained_run / "best.pt", regions, pred))
    image = tmp_path / "p.png"
    ok("plot", pred, "--out", image, "--dpi", "20")
    before = snapshot(tmp_path)

    class HalfWritten(plot_module.Figure):  # type: ignore[misc,name-defined]
        def savefig(self, fname: Any, *args: Any, **kwargs: Any) -> None:  # writes a little, then Ctrl-C
            Path(fname).write_bytes(b"\x89PNG half")
            raise KeyboardInterrupt

    monkeypatch.setattr(plot_module, "Figure", HalfWritten)
    assert_interrupted(invoke("plot", pred, "--out", image, "--dpi", "20", "--overwrite"))
    assert snapshot(tmp_path) == before
    assert temporaries(tmp_path) == []


def test_interrupted_evaluate_overwrite_keeps_the_old_report(tmp_path, trained_run, tiny_store, monkeypatch):
    import pipeline.apply.evaluate as evaluate_module

    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.json").write_text('{"weighted_pearson_mean": 0.5}\n')  # a report of an earlier run
    (out / "report.md").write_text("# Multiplexer evaluation\n\nearlier\n")
    (out / "weighted_pearson_hist.png").write_bytes(b"\x89PNG\r\n\x1a\nearlier")
    (out / "notes.txt").write_text("mine")
    args = ["evaluate", "--checkpoint", trained_run / "best.pt", "--store", tiny_store, "--out", out, "--device",
            "cpu", "--timing-sequences", "1"]  # fmt: skip
    assert_one_line_error(invoke(*args), "report.json", "exists", "--overwrite")
    before = snapshot(tmp_path)
    _interrupt_after(monkeypatch, evaluate_module, "_markdown", 1)  # report.json and the histogram are done by then
    assert_interrupted(invoke(*args, "--overwrite"))
    assert snapshot(tmp_path) == before
    assert temporaries(tmp_path) == []


def test_a_failed_zarr_swap_leaves_the_old_or_the_new_output(tmp_path, monkeypatch):
    """Publishing a folder output renames the old one aside, the new one in, then deletes the old one:
    interrupted at any of those steps, the final path holds the old or the new complete output."""
    from pipeline.core.files import staging

    steps = [(os, "rename", 1), (os, "rename", 2), (shutil, "rmtree", 1)]
    for k, (owner, name, at) in enumerate(steps):
        final = tmp_path / f"out{k}.zarr"
        final.mkdir()
        (final / "data").write_text("old")
        real = getattr(owner, name)
        calls: list[int] = []

        def step(*args: Any, _real: Any = real, _at: int = at, _calls: list = calls, **kwargs: Any) -> Any:
            _calls.append(1)
            if len(_calls) == _at:
                raise KeyboardInterrupt
            return _real(*args, **kwargs)

        with pytest.raises(KeyboardInterrupt):
            with staging(final) as stage:
                new = stage.path(final)
                new.mkdir()
                (new / "data").write_text("new")
                monkeypatch.setattr(owner, name, step)  # from publishing on
        monkeypatch.undo()
        assert (final / "data").read_text() == ("new" if name == "rmtree" else "old"), (name, at)
        assert temporaries(tmp_path) == [], (name, at)


# ------------------------------------------------------------------------------------------------
# temporaries of killed processes
# ------------------------------------------------------------------------------------------------


def _plant_temporaries(out: Path) -> tuple[list[Path], list[Path]]:
    """Temporaries of ``out`` left by a dead process (a folder, a file, the old naming) and by a live
    one (this process), plus one of another output; returns (stale, kept)."""
    dead = dead_pid()
    stale = [out.with_name(f".{out.name}.tmp-{dead}-0badc0de"), out.with_name(f".{out.name}.tmp-{dead}-deadbeef")]
    stale.append(out.with_name(f".{out.name}.tmp-{dead}"))  # the naming of earlier versions
    stale[0].mkdir()
    (stale[0] / out.name).write_bytes(b"half")
    stale[1].write_bytes(b"half")
    stale[2].write_bytes(b"half")
    live = out.with_name(f".{out.name}.tmp-{os.getpid()}-0123abcd")
    live.write_bytes(b"being written")
    other = out.with_name(f".other.tsv.tmp-{dead}-0123abcd")
    other.write_bytes(b"not ours")
    return stale, [live, other]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, trained_run, regions):
    out = tmp_path / "x.zarr"
    stale, kept = _plant_temporaries(out)
    ok(*_predict(trained_run / "best.pt", regions, out))
    assert [p for p in stale if os.path.lexists(p)] == []
    assert all(p.exists() for p in kept)


def test_stale_temporaries_are_removed_by_score_vcf_and_genome_synth(tmp_path, trained_run):
    vcf = tmp_path / "v.vcf"
    vcf.write_text(ONE_VCF)
    out = tmp_path / "s.tsv"
    stale, kept = _plant_temporaries(out)
    ok("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", out, "--device", "cpu")
    assert [p for p in stale if os.path.lexists(p)] == [] and all(p.exists() for p in kept)

    genome = tmp_path / "g" / "g.fa"
    genome.parent.mkdir()
    stale, kept = _plant_temporaries(genome)
    ok("genome", "synth", genome, "--divisor", "40000")
    assert [p for p in stale if os.path.lexists(p)] == [] and all(p.exists() for p in kept)
    assert genome.with_name("g.fa.fai").exists()


def test_a_set_aside_output_of_a_killed_swap_is_restored(tmp_path, trained_run, regions):
    """Killed between renaming the old output aside and renaming the new one in: the next run puts
    the old one back (so it is not lost), and then refuses to replace it without --overwrite."""
    out = tmp_path / "x.zarr"
    ok(*_predict(trained_run / "best.pt", regions, out))
    before = {p.replace(str(out), "X"): h for p, h in snapshot(out).items()}
    staging = tmp_path / f".x.zarr.tmp-{dead_pid()}-0badc0de"
    (staging / ".set-aside").mkdir(parents=True)
    out.rename(staging / ".set-aside" / "x.zarr")
    (staging / "x.zarr").mkdir()  # the new output, maybe incomplete
    assert_one_line_error(invoke(*_predict(trained_run / "best.pt", regions, out)), "x.zarr", "exists")
    assert {p.replace(str(out), "X"): h for p, h in snapshot(out).items()} == before
    assert temporaries(tmp_path) == []


def test_genome_synth_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    import pipeline.demo.synthetic as synthetic

    real = synthetic._synth_chrom
    calls: list[int] = []

    def full(*args: Any) -> bytes:
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)

    monkeypatch.setattr(synthetic, "_synth_chrom", full)
    out = tmp_path / "g.fa"
    assert_one_line_error(invoke("genome", "synth", out, "--divisor", "40000"), "g.fa", "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_publishing_fsyncs_before_the_rename(tmp_path, monkeypatch):
    from pipeline.core.files import atomic_path

    events: list[str] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync " + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("rename " + os.path.basename(dst))
        real_replace(src, dst)

    def rename(src: Any, dst: Any) -> None:
        events.append("rename " + os.path.basename(dst))
        real_rename(src, dst)

    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to name file descriptors")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    out = tmp_path / "a.txt"
    with atomic_path(out) as tmp:
        tmp.write_text("hello")
    monkeypatch.undo()
    assert out.read_text() == "hello"
    assert "fsync a.txt" in events and "rename a.txt" in events
    assert events.index("fsync a.txt") < events.index("rename a.txt")
    assert events[-1] == f"fsync {tmp_path.name}"  # the folder, so the rename itself is durable


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------


def _count_held(mp: pytest.MonkeyPatch) -> dict[str, int]:
    """Count records read from the VCF and rows handed to the output writer; ``max`` is the most rows
    read but not yet written at any moment (what score-vcf holds)."""
    state = {"read": 0, "written": 0, "max": 0}
    real_read, real_writer = vcf_module.read_vcf, writers_module.score_writer

    def read_vcf(path: Any) -> Iterator[Any]:
        for record in real_read(path):
            state["read"] += 1
            yield record

    @contextmanager
    def score_writer(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with real_writer(*args, **kwargs) as writer:
            real_write = writer.write

            def write(row: Any) -> None:
                state["written"] += 1
                state["max"] = max(state["max"], state["read"] - state["written"])
                real_write(row)

            writer.write = write
            yield writer

    mp.setattr(vcf_module, "read_vcf", read_vcf)
    mp.setattr(writers_module, "score_writer", score_writer)
    return state


def _vcf_lines(pattern: str, n: int) -> list[str]:
    snv = "chr7\t{}\t.\tA\tG\n"
    indel = "chr7\t{}\t.\tA\tAC\n"
    if pattern == "one SNV, then skipped records":
        return [snv.format(3000)] + [indel.format(3001 + k % 3000) for k in range(n)]
    if pattern == "only skipped records":
        return [indel.format(3001 + k % 3000) for k in range(n)]
    # SNVs every 500 records (each its own window), skipped records between them
    return [snv.format(2000 + 4 * k) if k % 500 == 0 else indel.format(2000 + 4 * k) for k in range(n)]


@pytest.mark.parametrize(
    "pattern", ["one SNV, then skipped records", "only skipped records", "SNV windows among skipped records"]
)
def test_score_vcf_holds_a_bounded_number_of_rows(pattern, tmp_path, trained_run, monkeypatch):
    bound = getattr(vcf_module, "MAX_HELD_ROWS", 4096)
    held = []
    for n in (2 * bound, 4 * bound):
        vcf = tmp_path / f"{n}.vcf"
        vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\n" + "".join(_vcf_lines(pattern, n)))
        state = _count_held(monkeypatch)
        out = tmp_path / f"{n}.tsv"
        vcf_module.score_vcf(
            str(trained_run / "best.pt"), str(vcf), str(out), ScoreVcfOptions(device="cpu"), progress=False
        )
        monkeypatch.undo()
        rows, lines = read_scores(out), _vcf_lines(pattern, n)
        assert len(rows) == len(lines) == state["read"] == state["written"]
        assert [r["pos"] for r in rows] == [int(line.split("\t")[1]) for line in lines]
        held.append(state["max"])
    assert max(held) <= bound, held  # independent of the number of records


def test_npz_output_too_large_for_memory_is_refused_before_any_work(tmp_path, trained_run, regions, monkeypatch):
    import pipeline.apply.outputs as outputs

    monkeypatch.setattr(outputs, "NPZ_MAX_BYTES", 10_000, raising=False)  # 3 windows x 4 x 4 x 80 x 4 B > 10 kB
    out = tmp_path / "big.npz"
    line = assert_one_line_error(invoke(*_predict(trained_run / "best.pt", regions, out)), "big.npz", "Zarr")
    assert ".npz" in line
    assert not out.exists() and temporaries(tmp_path) == []
    ok(*_predict(trained_run / "best.pt", regions, tmp_path / "big.zarr"))


# ------------------------------------------------------------------------------------------------
# memory running out inside torch (issue 27.2)
# ------------------------------------------------------------------------------------------------

LIMITED_PREDICT = """
import resource, sys
import pipeline.apply.predict as predict
from pipeline.cli import main
real = predict.multiplexer_effects
def limited(*args, **kwargs):  # the address space is capped when the first batch starts
    size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + 64 * 2**20, resource.RLIM_INFINITY))
    return real(*args, **kwargs)
predict.multiplexer_effects = limited
sys.argv[0] = "multiplexer"
main()
"""


@pytest.mark.processes
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the process size from /proc")
def test_predict_out_of_memory_in_torch_is_the_clis_one_line(tmp_path, trained_run):
    """``predict --batch-size 1000000`` under a memory limit: torch's CPU allocator raises a plain
    ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory"), which used to surface as an internal
    error; it is the CLI's own "out of memory; use smaller batches" line, and no output is left. The
    limit (64 MB more than the process holds) is set when the first batch starts, so torch's allocation
    of that batch (12,000 windows: about 240 MB of activations) is what fails."""
    from helpers import process_env

    positions = [f"chr{c}\t{p}" for c in (1, 2, 3) for p in range(100, 2100)]
    (tmp_path / "many.txt").write_text("\n".join((positions * 2)[:12000]) + "\n")
    args = ["-q", "predict", "--checkpoint", str(trained_run / "best.pt"), "--regions", str(tmp_path / "many.txt"),
            "--out", str(tmp_path / "x.zarr"), "--batch-size", "1000000", "--device", "cpu"]  # fmt: skip
    result = subprocess.run([sys.executable, "-c", LIMITED_PREDICT, *args], env=process_env(), capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert_one_line_error(result, "out of memory", "smaller batches", "--batch-size")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.txt"]


def test_torch_out_of_memory_errors_are_recognised():
    """The types and messages torch uses: ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the
    same class) and the CPU allocator's ``RuntimeError``; another ``RuntimeError`` is not memory."""
    import torch

    from pipeline.cli import out_of_memory

    assert torch.cuda.OutOfMemoryError is torch.OutOfMemoryError
    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB"))
    try:
        torch.empty(2**62, dtype=torch.uint8)  # no machine has 4 EiB: torch's own CPU allocator error
    except RuntimeError as exc:
        assert out_of_memory(exc), str(exc)
    else:
        pytest.fail("an allocation of 4 EiB succeeded")
    assert out_of_memory(MemoryError())
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
