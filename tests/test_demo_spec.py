"""``data_specs/demo.yaml`` and the embedded ``pipeline.demo.DEMO_SPEC`` stay the same spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import pipeline
from pipeline.core.spec import load_spec, spec_from_dict
from pipeline.demo import DEMO_SPEC

DEMO_YAML = Path(pipeline.__file__).resolve().parents[1] / "data_specs" / "demo.yaml"
PATH_KEYS = ("genome", "store")
"""The only keys allowed to differ: where the files live."""


def test_demo_yaml_equals_demo_spec_as_written():
    written = yaml.safe_load(DEMO_YAML.read_text())
    assert set(written) == set(DEMO_SPEC)
    for key in DEMO_SPEC:
        if key not in PATH_KEYS:
            assert written[key] == DEMO_SPEC[key], key


def test_demo_yaml_equals_demo_spec_resolved():
    from_yaml = load_spec(DEMO_YAML).to_dict()
    embedded = spec_from_dict(DEMO_SPEC).to_dict()
    assert set(from_yaml) == set(embedded)
    differing = {k for k in from_yaml if from_yaml[k] != embedded[k]}
    assert differing <= set(PATH_KEYS)
    # and so they make the same store, apart from the genome path
    other = spec_from_dict({**DEMO_SPEC, "genome": load_spec(DEMO_YAML).genome})
    assert other.content_hash() == load_spec(DEMO_YAML).content_hash()


def test_demo_spec_is_the_paper_layout_in_miniature():
    spec = spec_from_dict(DEMO_SPEC)
    assert spec.base.model == "demo" and spec.target == "logfold"
    chroms = [c for s in spec.splits.values() for c in s.chroms]
    assert len(chroms) == len(set(chroms))
    assert "chr8" not in spec.splits["train"].chroms and "chr9" not in spec.splits["train"].chroms


def test_a_run_trained_with_other_settings_is_not_the_demos(trained_run):
    """A workdir whose run was trained with other settings (an earlier demo default) is refused in one
    line naming what differs; more steps than the run has done are a resume, not a difference."""
    from dataclasses import replace

    from pipeline.core.spec import TrainSpec
    from pipeline.demo.run import check_demo_run
    from pipeline.errors import UserError
    from pipeline.models import read_checkpoint

    last = trained_run / "last.pt"
    record = read_checkpoint(last)
    same = TrainSpec(**record["train"])
    assert check_demo_run(last, same) == record["step"]
    assert check_demo_run(last, replace(same, steps=same.steps + 100)) == record["step"]
    with pytest.raises(UserError, match=r"other settings than this demo's \(kwargs, lr\): remove it") as err:
        check_demo_run(last, replace(same, lr=same.lr * 2, kwargs={**same.kwargs, "width1": 3}))
    assert "\n" not in str(err.value)
