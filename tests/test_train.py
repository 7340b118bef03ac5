"""Stage 2: training writes self-describing checkpoints, resumes exactly, and learns."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers import content_hash

from pipeline.core.spec import TrainSpec
from pipeline.errors import UserError
from pipeline.models import ConvMultiplexer, load_checkpoint, read_checkpoint
from pipeline.store import open_store
from pipeline.train import METRIC_FIELDS, TrainResult, train, train_config


def config(tiny_spec, **overrides) -> TrainSpec:
    return train_config(tiny_spec.train, **overrides)


def run(store: str, run_dir: Path, cfg: TrainSpec, **kwargs):
    return train(store, str(run_dir), cfg, device="cpu", progress=False, **kwargs)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_its_outputs(trained_run, tiny_spec, tiny_store):
    for name in ("best.pt", "last.pt", "metrics.csv", "config.json"):
        assert (trained_run / name).is_file(), name
    rows = read_metrics(trained_run)
    assert list(rows[0]) == list(METRIC_FIELDS)
    steps, every = tiny_spec.train.steps, tiny_spec.train.valid_every
    assert [int(r["step"]) for r in rows] == list(range(every, steps + 1, every))
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["spec_hash"] == content_hash(tiny_spec, open_store(tiny_store))
    assert cfg["train"]["steps"] == steps
    assert cfg["train"]["kwargs"]["n_targets"] == 4 and cfg["train"]["kwargs"]["seq_len"] == 80
    assert Path(cfg["store"]) == Path(tiny_store)


def test_checkpoint_rebuilds_the_model_with_its_metadata(trained_run, tiny_spec, tiny_store):
    store = open_store(tiny_store)
    model, meta = load_checkpoint(trained_run / "last.pt", optimize=False)
    assert isinstance(model, ConvMultiplexer) and not model.training
    assert meta["seq_len"] == 80 and meta["n_targets"] == 4
    assert meta["target_names"] == store.target_names
    assert meta["alphabet"] == "AGCT"
    assert meta["spec_hash"] == content_hash(tiny_spec, store) == store.spec_hash
    assert meta["target_kind"] == "logfold"
    assert meta["step"] == tiny_spec.train.steps
    assert meta["base"] == store.meta.base
    assert "model" not in meta and "training" not in meta
    # plain tensors and types only: loads with weights_only=True
    raw = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    assert raw["format"] == "multiplexer-checkpoint"
    X = torch.zeros(2, 4, 80)
    X[:, 0] = 1
    with torch.no_grad():
        assert model(X).shape == (2, 4, 4, 80)
    # the saved weights are what load_checkpoint puts into the model
    for key, value in read_checkpoint(trained_run / "last.pt")["model"].items():
        assert torch.equal(model.state_dict()[key], value)


def test_resume_equals_uninterrupted(tiny_spec, tiny_store, tmp_path):
    # 10 train samples, batch 4: an epoch is 3 batches, so the resume point (step 4) is mid-epoch
    # a shorter first run stands in for a killed one: the schedule must not depend on `steps`
    cfg = config(tiny_spec, steps=8, valid_every=2, lr=0.005, schedule="constant")
    straight = run(tiny_store, tmp_path / "straight", cfg)
    assert straight.step == 8
    run(tiny_store, tmp_path / "resumed", dataclasses.replace(cfg, steps=4))
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 4
    resumed = run(tiny_store, tmp_path / "resumed", cfg, resume=True)
    assert resumed.step == 8
    a = read_checkpoint(tmp_path / "straight" / "last.pt")
    b = read_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["training"]["epoch"] == b["training"]["epoch"] and a["training"]["position"] == b["training"]["position"]
    # the metrics of both runs agree row by row (the resumed run appends to its file)
    rows_a, rows_b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert [float(r["valid_loss"]) for r in rows_a] == [float(r["valid_loss"]) for r in rows_b]
    assert [float(r["train_loss"]) for r in rows_a] == [float(r["train_loss"]) for r in rows_b]


def test_resume_at_an_epoch_boundary(tiny_spec, tiny_store, tmp_path):
    cfg = config(tiny_spec, steps=6, valid_every=3, batch_size=5, schedule="constant")  # 2 batches per epoch
    run(tiny_store, tmp_path / "straight", cfg)
    run(tiny_store, tmp_path / "resumed", dataclasses.replace(cfg, steps=3))
    run(tiny_store, tmp_path / "resumed", cfg, resume=True)
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_checkpoints_are_refused_without_resume(trained_run, tiny_spec, tiny_store):
    before = (trained_run / "last.pt").read_bytes()
    with pytest.raises(UserError, match="resume"):
        run(tiny_store, trained_run, config(tiny_spec))
    assert (trained_run / "last.pt").read_bytes() == before


def test_resume_errors(tiny_spec, tiny_store, trained_run, tmp_path):
    with pytest.raises(UserError, match="last.pt"):
        run(tiny_store, tmp_path / "empty", config(tiny_spec), resume=True)
    before = (trained_run / "last.pt").read_bytes()
    done = run(tiny_store, trained_run, config(tiny_spec), resume=True)  # already finished: a no-op
    assert done.finished_before and done.step == tiny_spec.train.steps
    assert (trained_run / "last.pt").read_bytes() == before
    wider = config(tiny_spec, steps=10, kwargs={**dict(tiny_spec.train.kwargs), "width1": 6})
    with pytest.raises(UserError, match="architecture"):
        run(tiny_store, trained_run, wider, resume=True)


def test_multiplexer_arguments_must_match_the_store(tiny_spec, tiny_store, tmp_path):
    cfg = config(tiny_spec, kwargs={**dict(tiny_spec.train.kwargs), "n_targets": 5})
    with pytest.raises(UserError, match="n_targets"):
        run(tiny_store, tmp_path / "r", cfg)


def test_incomplete_store_is_refused(tiny_spec, store_copy, tmp_path):
    import zarr

    zarr.open_group(store_copy, mode="r+")["train"]["complete"][0] = 0
    with pytest.raises(UserError, match="incomplete"):
        run(store_copy, tmp_path / "r", config(tiny_spec))


def test_loss_decreases(tiny_spec, tiny_store, tmp_path):
    cfg = config(tiny_spec, steps=40, valid_every=5, lr=0.01, batch_size=5)
    run(tiny_store, tmp_path / "run", cfg)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 8
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < 0.8 * first
    assert min(float(r["valid_loss"]) for r in rows) < float(rows[0]["valid_loss"])
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert best["metrics"]["valid_loss"] == min(float(r["valid_loss"]) for r in rows)


def test_bad_checkpoints_are_user_errors(tmp_path, trained_run):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(UserError, match="junk.pt"):
        load_checkpoint(junk)
    state_dict_only = tmp_path / "weights.pt"
    torch.save(read_checkpoint(trained_run / "best.pt")["model"], state_dict_only)
    with pytest.raises(UserError, match="not a multiplexer checkpoint"):
        load_checkpoint(state_dict_only)


@pytest.mark.parametrize(
    ("pearson", "warned"), [(0.012, True), (-0.3, True), (0.0999, True), (0.1, False), (0.84, False)]
)
def test_the_summary_warns_once_when_validation_pearson_is_below_0_1(pearson, warned):
    """After brief training on real sequence the validation weighted Pearson is about 0: the summary
    says, once, that the model has learned nothing yet (issue 28)."""
    row = {"valid_loss": 0.1, "valid_weighted_pearson": pearson}
    line = TrainResult("runs/x", 100, 0.1, row).line()
    assert line.startswith("trained to step 100")
    assert line.count("warning:") == (1 if warned else 0) and line.count("\n") == (1 if warned else 0)
    if warned:
        assert "below 0.1" in line and "--steps" in line
    assert TrainResult("runs/x", 100, 0.1, {"valid_loss": 0.1, "valid_weighted_pearson": float("nan")}).warning is None
