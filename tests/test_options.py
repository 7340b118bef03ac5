"""Each command's options are declared once (:mod:`pipeline.core.commands`): the command line's options
are derived from the declarations, a command line reaches the library as the options object it
describes, and a library call is checked by the same rules."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from pipeline.cli import cli, settings
from pipeline.core.commands import (
    DistillOptions,
    EvaluateOptions,
    InputOptions,
    IsmOptions,
    IsmSource,
    PredictOptions,
)
from pipeline.core.options import declared
from pipeline.core.spec import TRAIN_RULES, TrainSpec, option_flag
from pipeline.errors import SpecError

COMMANDS = {
    "distill": ((DistillOptions,), {"spec", "check"}, ["s.yaml"]),
    "predict": ((InputOptions, PredictOptions), {"checkpoint", "out"}, ["--checkpoint", "c.pt", "--out", "o"]),
    "ism": ((IsmSource, InputOptions, IsmOptions), {"out"}, ["--out", "o"]),
    "evaluate": (
        (EvaluateOptions,),
        {"checkpoint", "store_path", "out"},
        ["--checkpoint", "c", "--store", "s", "--out", "o"],
    ),
}
"""Each command's options classes, the parameters it declares by hand (what it works on), and the
shortest command line it takes."""


def parse(command: str, *args: str) -> dict:
    return cli.commands[command].make_context(command, list(args)).params


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_setting_is_an_option_with_its_declared_flag_default_and_help(name):
    classes, by_hand, shortest = COMMANDS[name]
    params = {p.name: p for p in cli.commands[name].params if p.name != "help"}
    values = parse(name, *shortest)
    settings_ = {k: d for cls in classes for k, d in declared(cls).items() if d.command_line}
    assert set(params) == set(settings_) | by_hand
    for key, setting in settings_.items():
        param = params[key]
        assert isinstance(param, click.Option)
        assert setting.flag in param.opts + param.secondary_opts, (key, param.opts)
        assert param.help == setting.help
        assert values[key] == setting.default, key  # what the command passes when the option is not given


def test_a_command_line_reaches_the_library_as_its_options_object():
    params = parse(
        "distill", "s.yaml", "--split", "train", "--split", "valid", "--no-overlap", "--batch-size", "3",
        "--shard", "1/4", "--store", "x.zarr", "--engine", "naive",
    )  # fmt: skip
    assert settings(DistillOptions, params) == DistillOptions(
        splits=("train", "valid"), overlap=False, batch_size=3, shard="1/4", store_path="x.zarr", engine="naive"
    )
    assert settings(DistillOptions, parse("distill", "s.yaml")) == DistillOptions()

    params = parse("predict", "--checkpoint", "c.pt", "--out", "o.npz", "--region", "chr1:5", "--diff", "--tsv")
    assert settings(InputOptions, params) == InputOptions(region="chr1:5")
    assert settings(PredictOptions, params) == PredictOptions(diff=True, tsv=True)

    params = parse("ism", "--out", "o", "--base", "demo", "--seq-len", "96", "--target", "diff", "--fasta", "f.fa")
    assert settings(IsmSource, params) == IsmSource(base="demo", seq_len=96)
    assert settings(InputOptions, params) == InputOptions(fasta="f.fa")
    assert settings(IsmOptions, params) == IsmOptions(target="diff")

    params = parse("evaluate", "--checkpoint", "c", "--store", "s", "--out", "o", "--precision", "bf16")
    assert settings(EvaluateOptions, params) == EvaluateOptions(precision="bf16")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: DistillOptions(batch_size=0), "distill: option --batch-size must be >= 1, got 0"),
        (lambda: DistillOptions(splits="train"), "option --split must be a list"),
        (lambda: DistillOptions(overwrite="yes"), "option --overwrite must be bool"),
        (lambda: PredictOptions(precision="fp8"), "option --precision must be one of float32, bf16"),
        (lambda: IsmSource(seq_len=1), "option --seq-len must be >= 2"),
        (lambda: EvaluateOptions(timing_sequences=-1), "option --timing-sequences must be >= 0"),
    ],
)
def test_a_library_call_is_checked_by_the_same_rules(make, fragment):
    with pytest.raises(SpecError, match=fragment):
        make()


def test_paths_may_be_path_objects():
    assert PredictOptions(weights=Path("w.pt")).weights == "w.pt"
    assert DistillOptions(store_path=Path("s.zarr"), splits=["valid"]) == DistillOptions(
        store_path="s.zarr", splits=("valid",)
    )


def test_the_train_options_are_derived_as_before():
    params = {p.name: p for p in cli.commands["train"].params}
    values = parse("train", "spec.yaml", "--run-dir", "run")
    for name, rule in TRAIN_RULES.items():
        param = params[name]
        assert option_flag(name) in param.opts and values[name] is None  # the spec's train: section decides
        if rule.kind is bool:
            assert param.secondary_opts == [f"--no-{option_flag(name)[2:]}"]
    assert set(TRAIN_RULES) == set(declared(TrainSpec)) - {"kwargs"}
    assert params["kwargs"].opts == ["--arch-kwargs"] and params["kwargs"].metavar == "JSON"
