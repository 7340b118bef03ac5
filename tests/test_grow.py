"""Growing a store: more samples or a new split compute only the new units and equal a store
distilled at the larger size from scratch; older formats are read, and upgraded in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from helpers import DEMO_KWARGS, TOY_MODELS, as_format3, assert_one_line_error, invoke, make_legacy, ok

from pipeline.core.commands import DistillOptions
from pipeline.core.spec import load_spec
from pipeline.distill import distill
from pipeline.errors import UserError
from pipeline.models import BASE_MODELS, model_class
from pipeline.store import open_store

COUNTING = {"model": f"{TOY_MODELS}:CountingDemo", "kwargs": {k: v for k, v in DEMO_KWARGS.items() if k != "seq_len"}}


def counting_spec(write_spec, folder: Path, train: int, valid: int = 4, test: int | None = None) -> Path:
    splits = {"train": {"samples": train}, "valid": {"samples": valid}}
    if test is not None:
        splits["test"] = {"chroms": ["chr9"], "samples": test}
    spec = write_spec(folder, f"spec-{train}-{valid}-{test}.yaml", base=COUNTING, splits=splits)
    if test is None:  # the tiny spec has a test split: drop it
        d = yaml.safe_load(spec.read_text())
        d["splits"].pop("test")
        spec.write_text(yaml.safe_dump(d, sort_keys=False))
    return spec


def run(spec_path: Path, store: Path) -> tuple[int, object]:
    """Distill; the number of sequences the base model scored (the class distill itself loads)."""
    counting = model_class(COUNTING["model"], BASE_MODELS)
    before = counting.seen
    summary = distill(
        load_spec(spec_path), DistillOptions(store_path=str(store), device="cpu", engine="naive"), progress=False
    )
    return counting.seen - before, summary


def test_growing_computes_only_the_new_units_and_equals_a_store_made_at_that_size(
    tmp_path, write_spec, assert_same_store
):
    grown, scratch = tmp_path / "grown.zarr", tmp_path / "scratch.zarr"
    small, large = counting_spec(write_spec, tmp_path, 8), counting_spec(write_spec, tmp_path, 16, valid=6)
    first, _ = run(small, grown)
    again, summary = run(large, grown)
    full, _ = run(large, scratch)
    probe, _ = run(large, scratch)  # nothing left to compute: what loading the model costs (its probe)
    first, again, full = first - probe, again - probe, full - probe
    # the first run and the growth together scored exactly what one run at the larger size scores
    assert first > 0 and again > 0 and first + again == full
    # train 8 -> 16: units 2 and 3 (unit_samples 4); valid 4 -> 6: unit 1
    assert summary.per_split == {"train": {"units": 4, "computed": 2}, "valid": {"units": 2, "computed": 1}}
    assert_same_store(str(grown), str(scratch))
    history = zarr.open_group(str(grown), mode="r").attrs["history"]
    assert [h["samples"] for h in history] == [{"train": 8, "valid": 4}, {"train": 16, "valid": 6}]


def test_a_partial_last_unit_is_completed_and_a_new_split_added(tmp_path, write_spec, assert_same_store):
    grown, scratch = tmp_path / "grown.zarr", tmp_path / "scratch.zarr"
    small = counting_spec(write_spec, tmp_path, 6)  # unit 1 of train holds 2 of 4 samples
    large = counting_spec(write_spec, tmp_path, 9, test=3)
    run(small, grown)
    _, summary = run(large, grown)
    run(large, scratch)
    assert summary.per_split == {
        "train": {"units": 3, "computed": 2},  # unit 1 (was partial) and unit 2
        "valid": {"units": 1, "computed": 0},
        "test": {"units": 1, "computed": 1},
    }  # train unit 1 (4 samples) and unit 2 (1), test (3)
    assert_same_store(str(grown), str(scratch))


def test_a_store_never_shrinks_and_other_windows_are_refused(tmp_path, write_spec):
    store = tmp_path / "s.zarr"
    run(counting_spec(write_spec, tmp_path, 8), store)
    with pytest.raises(UserError, match=r"stores only grow.*--max-samples 4"):
        run(counting_spec(write_spec, tmp_path, 4), store)
    # each split's hint names the option that reads a prefix of it (issue 22.10: valid named --max-samples)
    with pytest.raises(UserError, match=r"split 'valid'.*stores only grow.*`train --valid-samples 2`") as refused:
        run(counting_spec(write_spec, tmp_path, 8, valid=2), store)
    assert "--max-samples" not in str(refused.value)
    run(counting_spec(write_spec, tmp_path, 8, test=3), store)
    with pytest.raises(UserError, match=r"split 'test'.*read whole.*new store") as refused:
        run(counting_spec(write_spec, tmp_path, 8, test=2), store)
    assert "--max-samples" not in str(refused.value)
    other = counting_spec(write_spec, tmp_path, 8)
    d = yaml.safe_load(other.read_text())
    d["splits"]["train"]["chroms"] = ["chr4"]
    other.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(UserError, match="samples from other places"):
        distill(load_spec(other), DistillOptions(store_path=str(store), device="cpu"), progress=False)


def test_a_format_2_store_is_read_and_upgraded_in_one_line(tmp_path, write_spec, assert_same_store):
    spec = counting_spec(write_spec, tmp_path, 8)
    store = tmp_path / "old.zarr"
    run(spec, store)
    old_spec = load_spec(spec)
    as_format3(store)  # targets with their reference-base rows
    make_legacy(store, old_spec)  # no content identity, no metadata digest
    g = zarr.open_group(str(store), mode="r+")
    g.attrs.update({"format_version": 2, "spec_hash": old_spec.content_hash()})  # as format 2 wrote it
    del g.attrs["history"]
    assert open_store(store).complete_units("train").all()  # read as it is
    larger = counting_spec(write_spec, tmp_path, 12)
    line = assert_one_line_error(invoke("distill", larger, "--store", store, "--device", "cpu"), "store upgrade")
    assert "format 2" in line
    assert "upgraded store" in ok("store", "upgrade", store).output
    _, summary = run(larger, store)
    assert summary.per_split["train"] == {"units": 3, "computed": 1}
    assert np.asarray(zarr.open_group(str(store), mode="r")["train"]["center"][:]).shape == (12,)


def test_max_samples_trains_on_a_prefix_and_a_grown_store_resumes_only_on_the_same_data(tmp_path, write_spec):
    from pipeline.models import read_checkpoint
    from pipeline.train import train, train_config

    store = tmp_path / "s.zarr"
    run(counting_spec(write_spec, tmp_path, 8), store)
    spec = load_spec(counting_spec(write_spec, tmp_path, 8))
    cfg = train_config(spec.train, steps=2, valid_every=2)
    folder = tmp_path / "run"
    train(str(store), str(folder), cfg, device="cpu", progress=False)
    assert read_checkpoint(folder / "last.pt")["train_samples"] == 8
    run(counting_spec(write_spec, tmp_path, 16), store)  # the store grows under the run
    longer = train_config(spec.train, steps=4, valid_every=2)
    with pytest.raises(UserError, match="--max-samples 8"):
        train(str(store), str(folder), longer, device="cpu", progress=False, resume=True)
    pinned = train_config(spec.train, steps=4, valid_every=2, max_samples=8)
    train(str(store), str(folder), pinned, device="cpu", progress=False, resume=True)  # same data: allowed
    assert read_checkpoint(folder / "last.pt")["step"] == 4
    prefix = tmp_path / "prefix"
    train(str(store), str(prefix), train_config(spec.train, steps=2, valid_every=2, max_samples=5), device="cpu",
          progress=False)  # fmt: skip
    assert read_checkpoint(prefix / "last.pt")["train_samples"] == 5
    # more than the store holds is refused, not cut silently to what there is (issue 22.10)
    for option, value in (("max_samples", 1000), ("valid_samples", 50)):
        flag = "--" + option.replace("_", "-")
        config = train_config(spec.train, steps=2, valid_every=2, **{option: value})
        with pytest.raises(UserError, match=f"{flag} {value}: split .* holds only (16|4) samples"):
            train(str(store), str(tmp_path / f"too_many_{option}"), config, device="cpu", progress=False)
        assert not (tmp_path / f"too_many_{option}").exists()
