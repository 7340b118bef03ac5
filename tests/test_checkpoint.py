"""Checkpoints are a typed record (:class:`pipeline.models.Checkpoint`): the record is the file's layout,
it is built from the state dicts of the model and the training state, and checkpoints written in older
layouts keep loading and resuming."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserError
from pipeline.models import Checkpoint, ConvMultiplexer, load_checkpoint, read_checkpoint, save_checkpoint
from pipeline.train import train, train_config

LATER_KEYS = ("genome_fingerprint", "store", "train_samples", "package_version", "changes")
"""Top-level keys recorded since the first checkpoints of format version 1 (``train``, the settings, is
kept: without it a resume cannot tell which options changed, so it would not be the same resume)."""


def write_old_layout(source: Path, path: Path) -> Path:
    """``source`` rewritten in the oldest layout of format version 1, as a plain dict the way the trainer
    once built it by hand: without the keys recorded since, and (for ``last.pt``) a training state that
    carries neither its step (then only at the top level) nor an offset (then always 0)."""
    data = torch.load(source, map_location="cpu", weights_only=True)
    old = {k: v for k, v in data.items() if k not in LATER_KEYS}
    if "training" in old:
        assert old["training"]["offset"] == 0  # what the old layout implies
        old["training"] = {k: v for k, v in old["training"].items() if k not in ("step", "offset")}
    torch.save(old, path)
    return path


def assert_same_values(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_same_values(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_values(x, y)
    else:
        assert a == b or (a != a and b != b), (a, b)  # NaN equals NaN here


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_the_record_is_the_files_layout(trained_run, name):
    """Read with ``weights_only=True``, a checkpoint the trainer wrote is exactly its record's dict: the
    same keys in the same order, the same values."""
    raw = torch.load(trained_run / name, map_location="cpu", weights_only=True)
    record = Checkpoint.from_dict(raw)
    assert_same_values(record.to_dict(), raw)
    assert (record.training is not None) == (name == "last.pt")
    assert record.extra == {} and record.version == 1


def test_capture_builds_the_record_from_state_dicts_and_it_round_trips(tmp_path):
    class State:  # stands in for TrainState: anything with a state_dict()
        def state_dict(self):
            return {"step": 3, "offset": 0, "optimizer": {"lr": torch.tensor([0.5])}}

    model = ConvMultiplexer(seq_len=40, n_targets=2, width1=4, width2=4)
    fields = dict(architecture={"name": "conv", "kwargs": {}}, seq_len=40, n_targets=2, target_names=["a", "b"])
    record = Checkpoint.capture(model, target_kind="logfold", step=3, genome_fingerprint=None, **fields)
    assert record.training is None and list(record.model) == list(model.state_dict())
    last = record.with_training(State())
    assert last.training is not None
    assert_same_values(last.training, State().state_dict())
    save_checkpoint(tmp_path / "x.pt", last)
    raw = torch.load(tmp_path / "x.pt", map_location="cpu", weights_only=True)  # plain types and tensors only
    assert_same_values(raw, last.to_dict())
    assert "spec" not in raw and raw["genome_fingerprint"] is None  # not recorded vs recorded as None
    assert_same_values(Checkpoint.read(tmp_path / "x.pt").to_dict(), last.to_dict())


def test_old_layout_loads(trained_run, tmp_path):
    old = write_old_layout(trained_run / "last.pt", tmp_path / "old.pt")
    model, meta = load_checkpoint(old, optimize=False)
    for key, value in read_checkpoint(trained_run / "last.pt")["model"].items():
        assert torch.equal(model.state_dict()[key], value)
    assert meta["genome_fingerprint"] is None  # written as "not known", as for stores before fingerprints
    assert all(key not in meta for key in ("store", "train_samples", "package_version"))
    assert meta["changes"] == []
    record = Checkpoint.read(old)
    assert record.training is not None
    assert record.training["step"] == record.step and record.training["offset"] == 0  # brought up to date


def test_resume_from_an_old_layout_equals_resume_from_the_current_one(trained_run, tiny_spec, tiny_store, tmp_path):
    current, old = tmp_path / "current", tmp_path / "old"
    shutil.copytree(trained_run, current)
    shutil.copytree(trained_run, old)
    write_old_layout(trained_run / "last.pt", old / "last.pt")
    steps = read_checkpoint(trained_run / "last.pt")["step"] + 2
    cfg = dataclasses.replace(train_config(tiny_spec.train), steps=steps)
    for run in (current, old):
        assert train(tiny_store, str(run), cfg, resume=True, device="cpu", progress=False).step == steps
    a, b = read_checkpoint(current / "last.pt"), read_checkpoint(old / "last.pt")
    assert_same_values(a["model"], b["model"])
    assert b["train"] == a["train"] and b["genome_fingerprint"] == a["genome_fingerprint"]  # written anew


def test_unknown_keys_are_kept_and_a_newer_format_is_refused(trained_run, tmp_path):
    raw = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    torch.save({**raw, "note": "from a later version"}, tmp_path / "extra.pt")
    assert read_checkpoint(tmp_path / "extra.pt")["note"] == "from a later version"
    torch.save({**raw, "format_version": 2}, tmp_path / "newer.pt")
    with pytest.raises(UserError, match="format version 2, this version reads 1"):
        read_checkpoint(tmp_path / "newer.pt")
    missing = {k: v for k, v in raw.items() if k != "target_kind"}
    with pytest.raises(UserError, match="lacks target_kind"):
        Checkpoint.from_dict(missing, "checkpoint x")
