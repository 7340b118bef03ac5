"""Explicit base-model weights (issue 12): a built-in model with published weights needs its weights file
or ``weights: random``; the recorded identity says how the weights were set; ``ism --seq-len`` reaches
the constructor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from helpers import DEMO_KWARGS, DEMO_KWARGS_JSON, N_TARGETS, TOY_MODELS, assert_one_line_error, invoke, ok

from pipeline.apply.exact_ism import ISM_SEED, ism_setup
from pipeline.core.commands import DistillOptions, EvaluateOptions, IsmSource
from pipeline.core.spec import load_spec
from pipeline.errors import SpecError, UserError
from pipeline.models import (
    PUBLISHED_WEIGHTS,
    Beluga,
    base_identity,
    build_base,
    build_base_from_identity,
    load_base,
    read_checkpoint,
    weights_label,
)
from pipeline.store import format_info, open_store, store_info

BELUGA_KWARGS = {"n_targets": 4}
"""A Beluga small enough to build often (L comes from the spec or ``--seq-len``)."""


def beluga_spec(tmp_path: Path, spec_dict: Any, name: str = "beluga.yaml", **base: Any) -> Any:
    """The tiny spec with a Beluga base model at L = 310 (its shortest window)."""
    data = spec_dict(seq_len=310)
    data["base"] = {"model": "beluga", "kwargs": dict(BELUGA_KWARGS), **base}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------
# specs: beluga needs a weights file or `weights: random`
# ------------------------------------------------------------------------------------------------


def test_beluga_in_a_spec_without_weights_is_refused_with_the_fix(tmp_path, spec_dict):
    assert PUBLISHED_WEIGHTS["beluga"] == "deepsea.beluga.pth"
    spec = beluga_spec(tmp_path, spec_dict)
    with pytest.raises(SpecError) as info:
        load_base(spec)
    message = str(info.value)
    assert "\n" not in message
    for fragment in ("'beluga'", "base.weights", "deepsea.beluga.pth", "`weights: random`"):
        assert fragment in message, (fragment, message)


def test_random_weights_are_the_spec_seeds_initialisation(tmp_path, spec_dict):
    """``weights: random`` builds the same model every time: torch's initialisation under the spec's seed."""
    data = spec_dict(seq_len=310, seed=3)
    data["base"] = {"model": "beluga", "weights": "random", "kwargs": dict(BELUGA_KWARGS)}
    (tmp_path / "random.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "random.yaml")
    state = torch.random.get_rng_state()
    first, second = load_base(spec), load_base(spec)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is left alone
    assert same_weights(first.module, second.module)
    torch.manual_seed(3)
    expected = Beluga(seq_len=310, **BELUGA_KWARGS)
    assert same_weights(first.module, expected)
    assert first.identity["weights"] is None and first.identity["weights_sha256"] is None
    assert first.identity["init"] == "random (seed 3)" == weights_label(first.identity)
    # a later command rebuilds it from the identity and the seed
    assert same_weights(build_base_from_identity(first.identity, seed=3), expected)
    data["seed"] = 4
    (tmp_path / "seed4.yaml").write_text(yaml.safe_dump(data))
    other = load_spec(tmp_path / "seed4.yaml")
    assert not same_weights(load_base(other).module, expected)


def test_a_weights_file_needs_no_random(tmp_path, spec_dict):
    weights = tmp_path / "deepsea.beluga.pth"
    torch.save(Beluga(seq_len=310, **BELUGA_KWARGS).state_dict(), weights)
    spec = beluga_spec(tmp_path, spec_dict, weights=str(weights))
    loaded = load_base(spec)
    assert loaded.identity["weights"] == str(weights.resolve()) == weights_label(loaded.identity)
    assert loaded.identity["weights_sha256"] is not None and loaded.identity["init"] == "weights file"


def test_random_weights_for_the_demo_model_are_refused(tmp_path, write_spec):
    spec = load_spec(write_spec(tmp_path, base={"weights": "random"}))
    with pytest.raises(SpecError, match="'demo' sets its own weights.*weights: random"):
        load_base(spec)


def test_user_models_keep_working_without_weights(tmp_path, spec_dict):
    """A user class without weights is seeded by the spec (as before), and says so."""
    data = spec_dict(seed=5)
    data["base"] = {"model": f"{TOY_MODELS}:DefaultInitNet", "kwargs": {"n_targets": N_TARGETS}}
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(data))
    loaded = load_base(load_spec(tmp_path / "user.yaml"))
    assert loaded.identity["init"] == "random (seed 5)" and loaded.identity["weights"] is None


# ------------------------------------------------------------------------------------------------
# the identity's wording, old identities included
# ------------------------------------------------------------------------------------------------


def test_identity_init_and_its_label(tmp_path):
    demo = build_base("demo", **DEMO_KWARGS)
    assert base_identity("demo", None, DEMO_KWARGS, demo)["init"] == "built in"
    assert weights_label(base_identity("demo", None, DEMO_KWARGS, demo)) == "built in"
    weights = tmp_path / "demo.pt"
    torch.save(demo.state_dict(), weights)
    with_file = base_identity("demo", weights, DEMO_KWARGS, demo)
    assert with_file["init"] == "weights file" and weights_label(with_file) == str(weights.resolve())
    net = build_base(f"{TOY_MODELS}:DefaultInitNet", seq_len=10)
    assert base_identity("x.py:Net", None, {}, net, seed=2)["init"] == "random (seed 2)"
    # identities written before `init` existed keep today's wording
    old = {"model": "beluga", "class": "Beluga", "kwargs": {}, "weights": None, "weights_sha256": None}
    assert weights_label(old) == "built in"
    assert weights_label({**old, "weights": "/data/deepsea.beluga.pth"}) == "/data/deepsea.beluga.pth"


def test_store_info_of_an_old_store_without_init(tiny_store):
    info = store_info(open_store(tiny_store))
    assert "weights built in" in format_info(info)  # the demo model
    info["base"] = {k: v for k, v in info["base"].items() if k != "init"}
    assert "weights built in" in format_info(info)
    info["base"]["weights"] = "/data/w.pth"
    assert "weights /data/w.pth" in format_info(info)


# ------------------------------------------------------------------------------------------------
# a store, a checkpoint and a report of a randomly initialised base model
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_run(tmp_path_factory, spec_dict) -> dict[str, Path]:
    """Distil, train (4 steps) and evaluate a tiny spec whose base model is seeded random (seed 2)."""
    from pipeline.apply.evaluate import evaluate
    from pipeline.distill import distill
    from pipeline.train import train, train_config

    d = tmp_path_factory.mktemp("random_run")
    data = spec_dict(seed=2, splits={"train": {"samples": 4}, "valid": {"samples": 2}, "test": {"samples": 2}})
    data["base"] = {"model": f"{TOY_MODELS}:DefaultInitNet", "weights": "random", "kwargs": {"n_targets": N_TARGETS}}
    (d / "spec.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(d / "spec.yaml")
    store = d / "store.zarr"
    distill(spec, DistillOptions(store_path=str(store), device="cpu"), progress=False)
    train(str(store), str(d / "run"), train_config(spec.train), device="cpu", progress=False)
    evaluate(
        str(d / "run" / "best.pt"),
        str(store),
        str(d / "eval"),
        EvaluateOptions(device="cpu", timing_sequences=1),
        progress=False,
    )
    return {"store": store, "checkpoint": d / "run" / "best.pt", "eval": d / "eval"}


def test_store_info_says_random_with_its_seed(random_run):
    result = ok("store", "info", random_run["store"])
    assert "weights random (seed 2)" in result.output
    assert open_store(str(random_run["store"])).meta.base["init"] == "random (seed 2)"


def test_checkpoint_records_random_with_its_seed(random_run):
    base = read_checkpoint(random_run["checkpoint"])["base"]
    assert base["weights"] is None and base["weights_sha256"] is None
    assert weights_label(base) == "random (seed 2)"


def test_report_names_the_random_weights(random_run):
    report = json.loads((random_run["eval"] / "report.json").read_text())
    assert report["base_model"] == {"model": f"{TOY_MODELS}:DefaultInitNet", "weights": "random (seed 2)"}
    assert "weights random (seed 2)" in (random_run["eval"] / "report.md").read_text()


# ------------------------------------------------------------------------------------------------
# ism --base: --weights random, --seq-len
# ------------------------------------------------------------------------------------------------


def test_ism_base_beluga_needs_weights_or_random():
    with pytest.raises(SpecError, match="--weights with its state-dict file.*deepsea.beluga.pth.*--weights random"):
        ism_setup(IsmSource(base="beluga", base_kwargs=json.dumps(BELUGA_KWARGS), seq_len=400))
    setup = ism_setup(IsmSource(base="beluga", weights="random", base_kwargs=json.dumps(BELUGA_KWARGS), seq_len=400))
    assert setup.base.identity["init"] == f"random (seed {ISM_SEED})" and setup.base.identity["weights"] is None
    torch.manual_seed(ISM_SEED)
    assert same_weights(setup.base.module, Beluga(seq_len=400, **BELUGA_KWARGS))


def test_ism_seq_len_reaches_the_constructor(tmp_path):
    """``--base beluga --seq-len 400`` runs (no matrix-shape error) and is the model ``--base-kwargs
    '{"seq_len": 400}'`` builds."""
    fasta = tmp_path / "one.fa"
    rng = np.random.default_rng(0)
    fasta.write_text(">s1\n" + "".join(rng.choice(list("ACGT"), 400)) + "\n")
    out = tmp_path / "ism.npz"
    ok("ism", "--base", "beluga", "--weights", "random", "--seq-len", "400", "--base-kwargs", json.dumps(BELUGA_KWARGS),
       "--fasta", fasta, "--engine", "fast", "--batch-size", "4096", "--device", "cpu", "--out", out)  # fmt: skip
    from pipeline.apply.outputs import read_effects

    effects = read_effects(out)["effects"]
    assert effects.shape == (1, 4, 4, 400) and np.isfinite(effects).all()
    by_option = ism_setup(
        IsmSource(base="beluga", weights="random", base_kwargs=json.dumps(BELUGA_KWARGS), seq_len=400)
    )
    by_kwargs = ism_setup(
        IsmSource(base="beluga", weights="random", base_kwargs=json.dumps({**BELUGA_KWARGS, "seq_len": 400}))
    )
    assert by_option.base.seq_len == by_kwargs.base.seq_len == 400
    assert by_option.base.identity == by_kwargs.base.identity
    assert same_weights(by_option.base.module, by_kwargs.base.module)
    # the same kwargs given both ways agree
    same = ism_setup(
        IsmSource(
            base="beluga", weights="random", base_kwargs=json.dumps({**BELUGA_KWARGS, "seq_len": 400}), seq_len=400
        )
    )
    assert same.base.identity == by_option.base.identity


def test_ism_seq_len_conflicting_with_base_kwargs_names_both():
    with pytest.raises(SpecError, match=r"--seq-len 400 and --base-kwargs seq_len 410"):
        ism_setup(
            IsmSource(base="beluga", weights="random", base_kwargs='{"seq_len": 410, "n_targets": 4}', seq_len=400)
        )


def test_ism_seq_len_for_the_demo_model():
    kwargs = json.dumps({k: v for k, v in DEMO_KWARGS.items() if k != "seq_len"})
    setup = ism_setup(IsmSource(base="demo", base_kwargs=kwargs, seq_len=96))
    assert setup.base.seq_len == 96 == setup.base.module.seq_len
    assert setup.base.identity["init"] == "built in"
    with pytest.raises(SpecError, match="'demo' sets its own weights .*drop --weights random"):
        ism_setup(IsmSource(base="demo", weights="random", base_kwargs=DEMO_KWARGS_JSON))


def test_ism_seq_len_a_model_cannot_take(tmp_path):
    """A class without a seq_len argument, whose window differs from --seq-len: one clear line."""
    (tmp_path / "fixed.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Fixed(nn.Module):\n"
        "    def __init__(self, n_targets=2):\n"
        "        super().__init__()\n"
        "        self.seq_len = 24\n"
        "        self.dense = nn.Linear(4 * 24, n_targets)\n\n"
        "    def forward(self, x):\n"
        "        return torch.sigmoid(self.dense(x.flatten(1)))\n"
    )
    name = f"{tmp_path / 'fixed.py'}:Fixed"
    with pytest.raises(SpecError, match="--seq-len 30 does not fit base model .*window is 24 bases"):
        ism_setup(IsmSource(base=name, seq_len=30))
    setup = ism_setup(IsmSource(base=name, seq_len=24))
    assert setup.base.seq_len == 24 and setup.base.identity["init"] == f"random (seed {ISM_SEED})"
    assert same_weights(setup.base.module, ism_setup(IsmSource(base=name)).base.module)  # seeded: the same every time


def test_ism_checkpoint_refuses_weights_random(trained_run):
    with pytest.raises(UserError, match="drop --weights random"):
        ism_setup(IsmSource(checkpoint=str(trained_run / "best.pt"), weights="random"))


def test_ism_cli_without_weights_is_one_line(genome_path, tmp_path):
    result = invoke("ism", "--base", "beluga", "--base-kwargs", json.dumps(BELUGA_KWARGS), "--seq-len", "400",
                    "--region", "chr7:3000", "--genome", genome_path, "--out", tmp_path / "x.npz")  # fmt: skip
    assert_one_line_error(result, "deepsea.beluga.pth", "--weights random")
    assert not (tmp_path / "x.npz").exists()
