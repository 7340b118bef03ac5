"""Faults that once lost data or gave a wrong answer with exit 0: stale indexes, ambiguous specs,
corrupt or swapped store chunks, inputs changed between a killed run and its resume, leftovers of
killed processes.

Each test reproduces the fault through a public seam (files edited on disk, bytes flipped in chunk
files, a process's temporary folder left behind) and asserts the product now refuses it or cleans it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import as_format3, assert_one_line_error, invoke, make_legacy, ok

from pipeline.core.commands import DistillOptions
from pipeline.core.genome import Genome
from pipeline.core.spec import load_spec
from pipeline.errors import SpecError, UserError

# ------------------------------------------------------------------------------------------------
# inputs: genome index, spec files
# ------------------------------------------------------------------------------------------------


def test_a_newer_fai_with_renamed_records_is_refused(tmp_path):
    """Two records of the same length, their names swapped in a .fai newer than the FASTA: the offsets
    and lengths all fit, but each name would read the other record's bases."""
    fasta = tmp_path / "g.fa"
    fasta.write_text(">alpha\n" + "A" * 60 + "\n>beta\n" + "C" * 60 + "\n")
    Genome(fasta)
    fai = tmp_path / "g.fa.fai"
    rows = [line.split("\t") for line in fai.read_text().splitlines()]
    rows[0][0], rows[1][0] = rows[1][0], rows[0][0]
    fai.write_text("".join("\t".join(r) + "\n" for r in rows))
    os.utime(fai, (fasta.stat().st_mtime + 10, fasta.stat().st_mtime + 10))
    with pytest.raises(UserError, match=r"record 'beta': the header line before its offset \d+ is '>alpha'"):
        Genome(fasta)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_duplicate_key_in_a_spec_names_the_key_and_both_lines(tmp_path, spec_dict):
    text = yaml.safe_dump(spec_dict(), sort_keys=False)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("seq_len:"))
    lines.insert(at + 2, "seq_len: 100")
    path = write_yaml(tmp_path / "dup.yaml", "\n".join(lines) + "\n")
    with pytest.raises(SpecError, match=rf"key 'seq_len' is given twice \(lines {at + 1} and {at + 3}\)"):
        load_spec(path)
    nested = text.replace("  steps: 4\n", "  steps: 4\n  steps: 5\n")
    with pytest.raises(SpecError, match="key 'steps' is given twice"):
        load_spec(write_yaml(tmp_path / "dup2.yaml", nested))


@pytest.mark.parametrize(
    ("written", "fragments"),
    [
        ("seq_len: 0310", ("key 'seq_len'", "'0310'", "octal (200)")),
        ("seq_len: +0120", ("key 'seq_len'", "'+0120'", "octal (80)")),
        ("seq_len: 1:30", ("key 'seq_len'", "'1:30'", "base 60 (90)")),
        ("seq_len: 80\n  dilations: [2, 02, 2]", ("'02'", "octal")),
    ],
)
def test_integers_yaml_1_1_reads_in_another_base_are_refused(tmp_path, spec_dict, written, fragments):
    """Issue 22.10: ``seq_len: 0310`` was read as the octal 200 (YAML 1.1), silently; it and base-60
    integers (``1:30`` is 90) are refused naming the key, the text and the value YAML 1.1 gives it."""
    text = yaml.safe_dump(spec_dict(), sort_keys=False)
    if "dilations" in written:
        text = text.replace("    - 2\n" * 5, "").replace("    dilations:\n", "    dilations: [2, 02, 2]\n")
        assert "[2, 02, 2]" in text
    else:
        text = text.replace("seq_len: 80", written)
    with pytest.raises(SpecError) as refused:
        load_spec(write_yaml(tmp_path / "octal.yaml", text))
    assert "octal.yaml" in str(refused.value) and "on line" in str(refused.value)
    for fragment in fragments:
        assert fragment in str(refused.value), (fragment, str(refused.value))


def test_zero_hex_and_underscored_integers_are_read(tmp_path, spec_dict):
    text = yaml.safe_dump(spec_dict(), sort_keys=False)
    assert "seed: 0\n" in text and load_spec(write_yaml(tmp_path / "zero.yaml", text)).seed == 0
    spec = load_spec(write_yaml(tmp_path / "hex.yaml", text.replace("seq_len: 80", "seq_len: 0x50")))
    assert spec.seq_len == 80
    assert load_spec(write_yaml(tmp_path / "under.yaml", text.replace("seed: 0", "seed: 1_000"))).seed == 1000


def test_a_yaml_alias_bomb_is_refused_before_it_grows(tmp_path, spec_dict):
    """Nested aliases in base.kwargs that would expand to 9**9 nodes: refused from the node count."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    base = yaml.safe_dump(spec_dict(base={"kwargs": None}), sort_keys=False).replace("base:\n", "base:\n  kwargs:\n")
    text = base.replace("  kwargs:\n", "  kwargs:\n" + "".join(f"    {line}\n" for line in lines), 1)
    with pytest.raises(SpecError, match="expands to .* nodes through its aliases"):
        load_spec(write_yaml(tmp_path / "bomb.yaml", text))


@pytest.mark.parametrize(
    "raw, message",
    [
        ("\ufeffname: x\n".encode("utf-16"), "UTF-8"),
        (b"\x00\x01\x02\xff\xfe binary", "UTF-8"),
    ],
)
def test_binary_or_utf16_specs_are_refused(tmp_path, raw, message):
    path = tmp_path / "odd.yaml"
    path.write_bytes(raw)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"storage": {"level": 99}}, "level"),
        ({"storage": {"codec": "zstd", "level": 30}}, "level"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**80}, "seed"),
        ({"base": {"kwargs": {"n_targets": 0}}}, "at least one output"),
    ],
)
def test_values_that_failed_after_creating_the_store_are_refused_first(tmp_path, write_spec, overrides, message):
    spec = write_spec(tmp_path, store=str(tmp_path / "s.zarr"), **overrides)
    result = invoke("distill", spec, "--device", "cpu")
    assert_one_line_error(result, message)
    assert not (tmp_path / "s.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.zarr")]


# ------------------------------------------------------------------------------------------------
# inputs changed between a killed run and its resume
# ------------------------------------------------------------------------------------------------

USER_MODEL = """from torch import nn


class Net(nn.Module):
    def __init__(self, seq_len=80):
        super().__init__()
        self.conv = nn.Conv1d(4, 3, 5)
        self.fc = nn.Linear(3 * (seq_len - 4), 2)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1)).sigmoid()
"""


def test_an_edited_user_model_file_is_refused_on_resume(tmp_path, spec_dict):
    """The store records the sha256 of a user model's source file: editing it between a killed run
    and its rerun is refused, naming the file, instead of mixing two models' targets in one store."""
    from pipeline.distill import distill
    from pipeline.errors import StoreMismatchError
    from pipeline.store import open_store

    (tmp_path / "toy.py").write_text(USER_MODEL)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec_dict(base={"model": "toy.py:Net", "kwargs": None})))
    spec = load_spec(tmp_path / "spec.yaml")
    store = tmp_path / "user.zarr"
    distill(
        spec, DistillOptions(store_path=str(store), splits=["train"], device="cpu"), progress=False
    )  # "killed" after train
    base = open_store(store).meta.base
    assert base["source"] == str((tmp_path / "toy.py").resolve()) and len(base["source_sha256"]) == 64
    (tmp_path / "toy.py").write_text(USER_MODEL.replace("nn.Conv1d(4, 3, 5)", "nn.Conv1d(4, 3, 5, bias=False)"))
    with pytest.raises(StoreMismatchError, match=r"source file .*toy.py.*the model's code changed"):
        distill(spec, DistillOptions(store_path=str(store), device="cpu"), progress=False)


# ------------------------------------------------------------------------------------------------
# corrupt and swapped chunks
# ------------------------------------------------------------------------------------------------

CHUNK_OF_SAMPLE_5 = {  # sample 5 of a split: unit 1 (unit_samples 4, chunk_samples 1)
    "reference": "reference/c/1/0/0",
    "ref_pred": "ref_pred/c/1/0",
    "targets": "targets/c/5/0/0/0",
    "chrom": "chrom/c/1",
    "center": "center/c/1",
}


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", list(CHUNK_OF_SAMPLE_5))
def test_a_flipped_byte_in_any_array_is_caught_by_verify(store_copy, name):
    flip_a_byte(Path(store_copy) / "train" / CHUNK_OF_SAMPLE_5[name])
    line = assert_one_line_error(invoke("store", "verify", store_copy), "failed verification", "train: unit")
    assert name in line and "unit 1" in line


@pytest.mark.parametrize("name", ["reference", "targets"])
def test_a_flipped_byte_stops_training_naming_the_sample(store_copy, tiny_spec, tmp_path, name):
    """Training reads every sample through its checksums: the corrupt one is a one-line error (before,
    a flipped byte made a target of 1494 and training went on with a loss 100 times too high)."""
    flip_a_byte(Path(store_copy) / "train" / CHUNK_OF_SAMPLE_5[name])
    result = invoke("train", store_copy, "--run-dir", tmp_path / "run", "--device", "cpu", "--steps", "6",
                    "--batch-size", "10", "--valid-every", "100")  # fmt: skip
    line = assert_one_line_error(result, f"store {store_copy!r}: split 'train'", name)
    assert "unit 1" in line and "damaged" in line


def test_a_flipped_byte_stops_evaluate(store_copy, trained_run, tmp_path):
    flip_a_byte(Path(store_copy) / "test" / CHUNK_OF_SAMPLE_5["targets"].replace("c/5/", "c/4/"))
    result = invoke("evaluate", "--checkpoint", trained_run / "best.pt", "--store", store_copy, "--out", tmp_path / "e")
    assert_one_line_error(result, "split 'test' unit 1 sample 4", "targets")


def swap(a: Path, b: Path) -> None:
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def test_swapped_chunk_files_are_caught(store_copy, tmp_path):
    """Two chunk files swapped: each is intact (its CRC-32C matches), but not the sample its unit's
    marker says; verify, train and evaluate all refuse them."""
    train = Path(store_copy) / "train"
    swap(train / "targets/c/5/0/0/0", train / "targets/c/6/0/0/0")
    line = assert_one_line_error(invoke("store", "verify", store_copy), "train: unit 1", "sample 5")
    assert "targets does not match its checksum" in line
    result = invoke("train", store_copy, "--run-dir", tmp_path / "run", "--device", "cpu", "--steps", "3",
                    "--batch-size", "10", "--valid-every", "100")  # fmt: skip
    assert_one_line_error(result, "split 'train' unit 1 sample 5", "swapped")
    swap(train / "targets/c/5/0/0/0", train / "targets/c/6/0/0/0")  # back: sound again
    ok("store", "verify", store_copy)
    swap(train / "ref_pred/c/0/0", train / "ref_pred/c/1/0")  # whole units of ref_pred
    assert_one_line_error(invoke("store", "verify", store_copy), "train: unit 0", "ref_pred does not match")


def test_a_truncated_chunk_is_a_one_line_error_mid_training(store_copy, tmp_path):
    path = Path(store_copy) / "train" / "targets/c/9/0/0/0"
    path.write_bytes(path.read_bytes()[:7])
    result = invoke("train", store_copy, "--run-dir", tmp_path / "run", "--device", "cpu", "--steps", "6",
                    "--batch-size", "10", "--valid-every", "100")  # fmt: skip
    assert_one_line_error(result, "split 'train' unit 2 sample 9", "cannot be read")


# ------------------------------------------------------------------------------------------------
# leftovers of killed processes; damaged metadata
# ------------------------------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_creation_is_cleaned_by_the_next_run(tmp_path, tiny_spec):
    """``.<store>.creating-<pid>-<random>-<host>`` folders of dead processes of this host are removed
    when the store is next created; a live process's, and another host's, are left alone."""
    import platform

    from pipeline.distill import distill

    host = platform.node()
    dead = tmp_path / f".s.zarr.creating-{dead_pid()}-0a1b2c3d-{host}"
    live = tmp_path / f".s.zarr.creating-{os.getpid()}-0a1b2c3d-{host}"
    other = tmp_path / f".s.zarr.creating-{dead_pid()}-0a1b2c3d-{host}-elsewhere"
    for folder in (dead, live, other):
        (folder / "train").mkdir(parents=True)
    distill(
        tiny_spec, DistillOptions(store_path=str(tmp_path / "s.zarr"), splits=["test"], device="cpu"), progress=False
    )
    assert not dead.exists() and live.exists() and other.exists()


def test_a_damaged_completion_marker_means_the_unit_is_redone(store_copy, tiny_spec, assert_same_store, tiny_store):
    """A kill while a marker was being written leaves it unreadable: the unit counts as incomplete, and
    the rerun recomputes it (the result equals the uninterrupted store)."""
    from pipeline.distill import distill
    from pipeline.store import open_store

    marker = Path(store_copy) / "train" / "complete" / "c" / "1" / "0"
    marker.write_bytes(marker.read_bytes()[:5])
    assert not open_store(store_copy).complete_units("train")[1]
    summary = distill(tiny_spec, DistillOptions(store_path=store_copy, device="cpu"), progress=False)
    assert summary.computed_units == 1
    assert_same_store(store_copy, tiny_store)


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (lambda root: (root / "train/targets/zarr.json").unlink(), ("train", "targets", "zarr.json")),
        (lambda root: (root / "train/targets/zarr.json").write_text('{"zarr_format": 3, "no'), ("train", "targets")),
        (lambda root: shutil.rmtree(root / "valid"), ("valid",)),
    ],
)  # fmt: skip
def test_damaged_store_metadata_is_a_one_line_error(store_copy, tmp_path, damage, fragments):
    damage(Path(store_copy))
    for args in (("store", "verify", store_copy), ("store", "info", store_copy)):
        assert_one_line_error(invoke(*args), store_copy, *fragments)
    result = invoke("train", store_copy, "--run-dir", tmp_path / "run", "--device", "cpu", "--steps", "2")
    assert_one_line_error(result, store_copy)


def test_overwrite_refuses_a_store_another_process_is_writing(store_copy, tiny_spec):
    """Each distill process holds a lease file in the store while it writes; ``--overwrite`` refuses to
    delete a store with a live lease (a dead process's lease does not count)."""
    import platform
    import subprocess
    import sys

    from pipeline.distill import distill

    leases = Path(store_copy).with_name(f".{Path(store_copy).name}.writers")
    leases.mkdir(exist_ok=True)
    (leases / f"{platform.node()}-{dead_pid()}").touch()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (leases / f"{platform.node()}-{writer.pid}").touch()
        with pytest.raises(UserError, match=f"is being written by process {writer.pid} on"):
            distill(tiny_spec, DistillOptions(store_path=store_copy, overwrite=True, device="cpu"), progress=False)
        assert (Path(store_copy) / "train" / "targets" / "zarr.json").is_file()
    finally:
        writer.kill()
        writer.wait()
    summary = distill(tiny_spec, DistillOptions(store_path=store_copy, overwrite=True, device="cpu"), progress=False)
    assert summary.computed_units > 0 and not leases.exists()  # our own lease is gone too


def test_a_format_1_store_is_read_but_not_extended(store_copy, tiny_spec, tmp_path):
    """Stores written before checksums (format 1: uint8 markers, no digests) still train and verify;
    distill refuses to add units to one (it would mix formats)."""
    import zarr

    from pipeline.distill import distill
    from pipeline.errors import StoreMismatchError

    as_format3(store_copy)  # targets with their reference-base rows
    make_legacy(store_copy, tiny_spec)  # written before content identities and metadata digests
    root = zarr.open_group(store_copy, mode="r+")
    root.attrs["format_version"] = 1
    for split in ("train", "valid", "test"):
        n_units = root[split]["complete"].shape[0]
        del root[split]["complete"]
        root[split].create_array("complete", shape=(n_units,), chunks=(1,), dtype="uint8", fill_value=0)
        root[split]["complete"][:] = 1
    ok("store", "verify", store_copy)
    ok("train", store_copy, "--run-dir", tmp_path / "run", "--device", "cpu", "--steps", "2")
    with pytest.raises(StoreMismatchError, match="format 1 .* not extended"):
        distill(tiny_spec, DistillOptions(store_path=store_copy, device="cpu"), progress=False)


def test_unmark_damaged_then_distill_repairs_the_store(store_copy, tiny_spec, tiny_store, assert_same_store):
    """The way back from a damaged store without recomputing all of it: ``store verify
    --unmark-damaged`` clears the markers of exactly the damaged units, and distill recomputes them."""
    from pipeline.distill import distill

    train = Path(store_copy) / "train"
    flip_a_byte(train / "targets/c/5/0/0/0")  # unit 1
    swap(train / "ref_pred/c/2/0", train / "ref_pred/c/0/0")  # units 0 and 2
    (Path(store_copy) / "test/reference/c/1/0/0").unlink()  # test unit 1
    out = ok("store", "verify", store_copy, "--unmark-damaged").stdout
    assert "train: 3" in out and "test: 1" in out and "valid" not in out
    assert distill(tiny_spec, DistillOptions(store_path=store_copy, device="cpu"), progress=False).computed_units == 4
    ok("store", "verify", store_copy)
    assert_same_store(store_copy, tiny_store)
    assert ok("store", "verify", store_copy, "--unmark-damaged").stdout.endswith("no damaged unit\n")


def test_a_damaged_marker_is_a_damaged_unit(store_copy, tiny_spec, tiny_store, assert_same_store, tmp_path):
    """Issue 27.2: a flipped byte in a completion marker's chunk was ``ValueError: Stored and computed
    checksum do not match`` in verify, and ``--unmark-damaged`` found "no damaged unit". verify names
    the unit (in one process and with workers), train refuses it in one line naming the chunk,
    ``--unmark-damaged`` clears the marker, and distill recomputes the unit."""
    from pipeline.distill import distill
    from pipeline.store import open_store, verify_store

    flip_a_byte(Path(store_copy) / "train/complete/c/1/0")
    line = assert_one_line_error(invoke("store", "verify", store_copy), "train: unit 1", "completion marker")
    assert "cannot be read" in line
    for workers in (1, 2):
        problems = verify_store(open_store(store_copy), workers=workers)
        assert problems == ["train: unit 1: its completion marker cannot be read (a damaged chunk)"], workers
    result = invoke("train", store_copy, "--run-dir", tmp_path / "run", "--device", "cpu", "--steps", "2")
    assert_one_line_error(result, "split 'train' unit 1", "completion marker", "train/complete/c/1/0", "distill")
    assert not (tmp_path / "run").exists()
    assert "train: 1" in ok("store", "verify", store_copy, "--unmark-damaged").stdout
    assert distill(tiny_spec, DistillOptions(store_path=store_copy, device="cpu"), progress=False).computed_units == 1
    assert_same_store(store_copy, tiny_store)
    ok("store", "verify", store_copy)


def test_a_store_whose_parent_folder_is_read_only_is_still_written(store_copy, tiny_spec, monkeypatch):
    """The writer lease lives beside the store; where that folder cannot be written, distill writes the
    store without one instead of failing."""
    from pipeline.distill import distill

    marker = Path(store_copy) / "train" / "complete" / "c" / "1" / "0"
    marker.write_bytes(marker.read_bytes()[:5])  # one unit to redo
    parent = Path(store_copy).parent
    leases = parent / f".{Path(store_copy).name}.writers"
    real_mkdir = os.mkdir

    def mkdir(path, mode=0o777, *, dir_fd=None):
        if Path(os.fsdecode(path)) == leases:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir)
    assert distill(tiny_spec, DistillOptions(store_path=store_copy, device="cpu"), progress=False).computed_units == 1
    assert not leases.exists()


# ------------------------------------------------------------------------------------------------
# a growth cut short (issue 22.10)
# ------------------------------------------------------------------------------------------------


class KilledError(Exception):
    """Stands for a kill at the patched point."""


def _killed(*args: object, **kwargs: object) -> None:
    raise KilledError


@pytest.mark.parametrize(
    ("seam", "add_test"),
    [("history_entry", False), ("history_entry", True), ("marker_width", True)],
    ids=["before-root-update", "before-root-update-new-split", "inside-new-split"],
)
def test_a_growth_cut_short_is_finished_by_the_next_run(
    tmp_path, write_spec, assert_same_store, monkeypatch, seam, add_test
):
    """Growing train 6 -> 10 (and adding the test split), cut short after the resize and before the root
    attributes record it (``history_entry`` is called there), or halfway through creating the new split's
    arrays (``marker_width`` is called before its markers): the rerun repairs the store, which then equals
    one distilled at the larger size, root spec and history included (they used to stay at the old size
    forever, or the rerun failed on the half-made split)."""
    import zarr

    import pipeline.store.store as store_module
    from pipeline.distill import distill

    small = load_spec(write_spec(tmp_path, "small.yaml", splits={"train": {"samples": 6}, "test": None}))
    large = load_spec(write_spec(tmp_path, "large.yaml", splits={} if add_test else {"test": None}))
    grown, scratch = tmp_path / "grown.zarr", tmp_path / "scratch.zarr"
    distill(small, DistillOptions(store_path=str(grown), device="cpu"), progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(store_module, seam, _killed)
        with pytest.raises(KilledError):
            distill(large, DistillOptions(store_path=str(grown), device="cpu"), progress=False)
    assert zarr.open_group(str(grown), mode="r").attrs["spec"]["splits"]["train"]["samples"] == 6  # cut short
    distill(large, DistillOptions(store_path=str(grown), device="cpu"), progress=False)
    distill(large, DistillOptions(store_path=str(scratch), device="cpu"), progress=False)
    assert_same_store(str(grown), str(scratch))
    history = zarr.open_group(str(grown), mode="r").attrs["history"]
    grown_to = {"train": 10, "valid": 6, **({"test": 5} if add_test else {})}
    assert [h["samples"] for h in history] == [{"train": 6, "valid": 6}, grown_to]
    ok("store", "verify", grown)
