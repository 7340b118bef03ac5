"""Dataset specs: validation naming the offending key, and the content hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import pipeline
from pipeline.core.spec import load_spec, spec_from_dict
from pipeline.errors import UserError

DATA_SPECS = Path(pipeline.__file__).resolve().parents[1] / "data_specs"


def test_tiny_spec_loads_with_defaults(tmp_path, write_spec):
    spec = load_spec(write_spec(tmp_path))
    assert spec.seq_len == 80
    assert spec.splits["train"].chroms == ("chr1", "chr2", "chr3")
    assert spec.train.num_workers == 0  # default filled in
    assert spec.base_dir == str(tmp_path.resolve())
    assert spec.genome_path.is_file()


def test_spec_is_frozen(tiny_spec):
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_spec.seq_len = 10
    with pytest.raises(TypeError):
        tiny_spec.base.kwargs["n_targets"] = 3


def test_defaults_are_not_shared_between_specs(spec_dict):
    a = spec_from_dict(spec_dict(train={"kwargs": None}))
    b = spec_from_dict(spec_dict(train={"kwargs": None}))
    assert dict(a.train.kwargs) == {} == dict(b.train.kwargs)
    with pytest.raises(TypeError):
        a.train.kwargs["width1"] = 3  # read-only, so no default can be mutated


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"colour": "red"}, "colour"),
        ({"storage": {"codek": "zstd"}}, "codek"),
        ({"base": {"wieghts": "x.pth"}}, "wieghts"),
        ({"train": {"stepz": 3}}, "stepz"),
        ({"splits": {"train": {"chromz": ["chr1"]}}}, "chromz"),
        ({"splits": {"holdout": {"chroms": ["chr4"], "samples": 2}}}, "holdout"),
    ],
)
def test_unknown_key_is_named(tmp_path, write_spec, overrides, key):
    with pytest.raises(UserError, match=key):
        load_spec(write_spec(tmp_path, **overrides))


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"seq_len": "abc"}, "seq_len"),
        ({"seq_len": 1}, "seq_len"),
        ({"seq_len": 80.5}, "seq_len"),
        ({"splits": {"train": {"samples": -1}}}, "samples"),
        ({"splits": {"train": {"samples": "many"}}}, "samples"),
        ({"seed": "zero"}, "seed"),
        ({"max_n": -3}, "max_n"),
        ({"target": "ratio"}, "target"),
        ({"storage": {"level": -1}}, "level"),
        ({"storage": {"dtype": "int8"}}, "dtype"),
        ({"train": {"lr": "fast"}}, "lr"),
        ({"train": {"steps": 0}}, "steps"),
        ({"base": {"kwargs": [1, 2]}}, "kwargs"),
        ({"splits": {"train": {"chroms": "chr1"}}}, "chroms"),
        ({"ism_batch_size": True}, "ism_batch_size"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_wrong_type_or_range_is_named(tmp_path, write_spec, overrides, key):
    with pytest.raises(UserError, match=key):
        load_spec(write_spec(tmp_path, **overrides))


@pytest.mark.parametrize("key", ["name", "genome", "seq_len", "splits"])
def test_missing_required_key_is_named(tmp_path, write_spec, key):
    with pytest.raises(UserError, match=key):
        load_spec(write_spec(tmp_path, **{key: None}))


def test_chromosome_in_two_splits_is_an_error(tmp_path, write_spec):
    path = write_spec(tmp_path, splits={"valid": {"chroms": ["chr8", "chr2"]}})
    with pytest.raises(UserError, match="chr2"):
        load_spec(path)


def test_unit_samples_must_be_a_multiple_of_chunk_samples(tmp_path, write_spec):
    with pytest.raises(UserError, match="unit_samples"):
        load_spec(write_spec(tmp_path, storage={"chunk_samples": 3, "unit_samples": 4}))


def test_missing_empty_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        load_spec(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="YAML"):
        load_spec(broken)
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_spec(a_list)


def test_content_hash_is_stable_across_loads_and_folders(tmp_path, write_spec):
    a = load_spec(write_spec(tmp_path / "a"))
    b = load_spec(write_spec(tmp_path / "a"))
    c = load_spec(write_spec(tmp_path / "c"))
    assert len(a.content_hash()) == 64
    assert a.content_hash() == b.content_hash() == c.content_hash()
    # a round trip through the resolved dict does not change it either
    assert spec_from_dict(a.to_dict()).content_hash() == a.content_hash()


@pytest.mark.parametrize(
    "overrides",
    [
        {"store": "elsewhere.zarr"},
        {"ism_batch_size": 7},
        {"train": {"steps": 99, "lr": 0.5, "multiplexer": "beluga_multiplexer"}},
        {"train": None},
    ],
)
def test_content_hash_ignores_operational_keys(tmp_path, write_spec, overrides):
    base = load_spec(write_spec(tmp_path, "base.yaml"))
    other = load_spec(write_spec(tmp_path, "other.yaml", **overrides))
    assert other.content_hash() == base.content_hash()


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "tiny2"},
        {"genome": "other.fa"},
        {"seq_len": 81},
        {"seed": 1},
        {"max_n": 3},
        {"target": "diff"},
        {"base": {"model": "beluga", "weights": "random"}},
        {"base": {"kwargs": {"hidden": 9}}},
        {"base": {"weights": "w.pth"}},
        {"splits": {"train": {"samples": 11}}},
        {"splits": {"valid": {"chroms": ["chr8", "chr10"]}}},
        {"splits": {"test": None}},
        {"storage": {"dtype": "float32"}},
        {"storage": {"codec": "zstd"}},
        {"storage": {"unit_samples": 2}},
    ],
)
def test_content_hash_changes_with_content_keys(tmp_path, write_spec, overrides):
    base = load_spec(write_spec(tmp_path, "base.yaml"))
    other = load_spec(write_spec(tmp_path, "other.yaml", **overrides))
    assert other.content_hash() != base.content_hash()


@pytest.mark.parametrize("name", ["demo.yaml", "beluga_hg19.yaml"])
def test_shipped_specs_load(name):
    spec = load_spec(DATA_SPECS / name)
    assert spec.name == name.removesuffix(".yaml")
    assert spec.base_dir == str(DATA_SPECS)
    chroms = [c for s in spec.splits.values() for c in s.chroms]
    assert len(chroms) == len(set(chroms))


def test_beluga_spec_is_the_paper_setting():
    spec = load_spec(DATA_SPECS / "beluga_hg19.yaml")
    assert spec.seq_len == 2000
    assert spec.base.model == "beluga"
    assert spec.splits["valid"].chroms == ("chr8", "chr9")
    assert not {"chr8", "chr9"} & set(spec.splits["train"].chroms)


def test_dump_spec_round_trips(tmp_path, tiny_spec):
    from pipeline.core.spec import dump_spec

    dump_spec(tiny_spec, tmp_path / "dumped.yaml")
    again = load_spec(tmp_path / "dumped.yaml")
    assert again.to_dict() == tiny_spec.to_dict()
    assert yaml.safe_load((tmp_path / "dumped.yaml").read_text()) == tiny_spec.to_dict()


def test_every_train_setting_is_a_train_option_with_its_rule():
    """The train command's options are derived from the TrainSpec declarations: one per setting."""
    from click.testing import CliRunner

    from pipeline.cli import cli
    from pipeline.core.spec import TRAIN_RULES, TrainSpec, option_flag

    text = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    for f in dataclasses.fields(TrainSpec):
        assert option_flag(f.name) in text, f.name
    assert "[x>=1]" in text and "[cosine|constant]" in text
    assert set(TRAIN_RULES) == {f.name for f in dataclasses.fields(TrainSpec)} - {"kwargs"}


@pytest.mark.parametrize(("key", "value"), [("lr", 0), ("clip_grad", 0.0), ("min_lr_ratio", 1.5), ("amp", "fp8")])
def test_a_training_rule_is_the_same_in_a_spec_and_on_the_command_line(spec_dict, key, value):
    from pipeline.core.spec import TrainSpec
    from pipeline.errors import SpecError
    from pipeline.train import train_config

    with pytest.raises(SpecError, match=key):
        spec_from_dict(spec_dict(train={key: value}))
    with pytest.raises(SpecError, match="--" + key.replace("_", "-")):
        train_config(TrainSpec(), **{key: value})
