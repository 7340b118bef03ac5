"""Shared fixtures: a small synthetic genome, tiny specs, a distilled store and a trained run.

Everything is built under pytest's temporary folders; nothing is written into the repository.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
import yaml
from helpers import DEMO_KWARGS, N_TARGETS, SEQ_LEN, TOY_MODELS

from pipeline.core.commands import DistillOptions

TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "genome": "<set by the fixture>",
    "seq_len": SEQ_LEN,
    "seed": 0,
    "max_n": 10,
    "target": "logfold",
    "base": {"model": "demo", "kwargs": {k: v for k, v in DEMO_KWARGS.items() if k != "seq_len"}},
    "splits": {
        "train": {"chroms": ["chr1", "chr2", "chr3"], "samples": 10},
        "valid": {"chroms": ["chr8"], "samples": 6},
        "test": {"chroms": ["chr9"], "samples": 5},
    },
    "storage": {"dtype": "float16", "codec": "blosc-zstd", "level": 3, "chunk_samples": 1, "unit_samples": 4},
    "ism_batch_size": 512,
    "train": {
        "multiplexer": "conv",
        "kwargs": {"width1": 8, "width2": 8, "kernel_size": 4, "dilations": [2, 2, 2, 2, 2]},
        "steps": 4,
        "batch_size": 4,
        "lr": 0.01,
        "valid_every": 2,
        "seed": 0,
    },
}
"""A spec that distils in well under a second: L = 80, F = 4, several write units per split."""


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (a value of ``None`` deletes the key)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own multiplexer cache (genome digests, indexes of read-only genomes), never the
    user's home; processes the tests start inherit it. A test may set its own."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("MULTIPLEXER_CACHE")
    os.environ["MULTIPLEXER_CACHE"] = str(folder)
    yield folder
    if old is None:
        del os.environ["MULTIPLEXER_CACHE"]
    else:
        os.environ["MULTIPLEXER_CACHE"] = old


@pytest.fixture(scope="session")
def genome_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic genome with chromosomes of about 2.4-12 kb (and its ``.fai``)."""
    from pipeline.demo.synthetic import synth_genome

    path = tmp_path_factory.mktemp("genome") / "genome.fa"
    synth_genome(path, divisor=20000)
    return path


@pytest.fixture(scope="session")
def genome(genome_path: Path):
    """:class:`pipeline.core.genome.Genome` of :func:`genome_path`."""
    from pipeline.core.genome import Genome

    return Genome(genome_path)


@pytest.fixture(scope="session")
def spec_dict(genome_path: Path) -> Callable[..., dict[str, Any]]:
    """``spec_dict(**overrides)``: the tiny spec as a plain dict, with nested overrides merged in."""

    def make(**overrides: Any) -> dict[str, Any]:
        return _merge({**TINY_SPEC, "genome": str(genome_path)}, overrides)

    return make


@pytest.fixture(scope="session")
def write_spec(spec_dict: Callable[..., dict[str, Any]]) -> Callable[..., Path]:
    """``write_spec(directory, filename="spec.yaml", **overrides)``: write a tiny spec YAML, return its path."""

    def write(directory: Path, filename: str = "spec.yaml", **overrides: Any) -> Path:
        path = Path(directory) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(spec_dict(**overrides), sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory, write_spec: Callable[..., Path]):
    """The tiny spec, loaded."""
    from pipeline.core.spec import load_spec

    return load_spec(write_spec(tmp_path_factory.mktemp("spec")))


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, tiny_spec) -> str:
    """Path of the complete store of :func:`tiny_spec` (read it, never modify it; see :func:`store_copy`)."""
    from pipeline.distill import distill

    path = tmp_path_factory.mktemp("store") / "tiny.zarr"
    distill(tiny_spec, DistillOptions(store_path=str(path), device="cpu"), progress=False)
    return str(path)


@pytest.fixture
def store_copy(tiny_store: str, tmp_path: Path) -> str:
    """A private copy of :func:`tiny_store` that a test may modify."""
    path = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, path)
    return str(path)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_spec, tiny_store: str) -> Path:
    """Run folder of a 4-step training on :func:`tiny_store` (``best.pt``, ``last.pt``, ...)."""
    from pipeline.train import train, train_config

    run = tmp_path_factory.mktemp("run") / "run"
    train(tiny_store, str(run), train_config(tiny_spec.train), device="cpu", progress=False)
    return run


@pytest.fixture(scope="session")
def make_exact_checkpoint() -> Callable[..., Path]:
    """``make_exact_checkpoint(path, genome, weights=None)``: a checkpoint whose multiplexer is exact ISM.

    The multiplexer is :class:`toy_models.ExactMultiplexer` (naive ISM of the demo base model built
    from :data:`helpers.DEMO_KWARGS`), recorded with that base model's identity, so ``--diff`` must give
    exactly the base model's ``alt - ref``. With ``weights``, the base model's state dict is saved
    there and recorded (path and sha256) in the identity.
    """
    from pipeline.models import base_identity, build_base, save_checkpoint

    def make(path: Path, genome: Path, weights: Path | None = None) -> Path:
        from toy_models import ExactMultiplexer

        base = build_base("demo", **DEMO_KWARGS)
        if weights is not None:
            torch.save(base.state_dict(), weights)
        payload = {
            "model": ExactMultiplexer(**DEMO_KWARGS).state_dict(),
            "architecture": {"name": f"{TOY_MODELS}:ExactMultiplexer", "kwargs": dict(DEMO_KWARGS)},
            "seq_len": SEQ_LEN,
            "n_targets": N_TARGETS,
            "alphabet": "AGCT",
            "target_names": [f"exact_{i}" for i in range(N_TARGETS)],
            "target_kind": "logfold",
            "spec": {"seed": 0},
            "base": base_identity("demo", weights, DEMO_KWARGS, base),
            "genome": str(genome),
        }
        save_checkpoint(path, payload)
        return Path(path)

    return make


@pytest.fixture(
    params=[
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")),
    ]
)
def device(request: pytest.FixtureRequest) -> Iterator[torch.device]:
    """Each device the tests can run on: CPU always, CUDA when present (exact float32, no TF32, for the
    test only: the flags are restored afterwards)."""
    from pipeline.core.runtime import exact_float32

    with exact_float32():
        yield torch.device(request.param)


@pytest.fixture
def assert_same_store() -> Callable[[str, str], None]:
    """``assert_same_store(a, b)``: every array of every split equal exactly, and equal attributes
    (root attributes except ``created``, ``history`` and the digest of them all, which must match)."""
    import zarr

    from pipeline.store.meta_digest import meta_digest_problems

    def check(a: str, b: str) -> None:
        ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
        assert meta_digest_problems(dict(ga.attrs)) == meta_digest_problems(dict(gb.attrs)) == []
        attrs_a = {k: v for k, v in ga.attrs.items() if k not in ("created", "history", "meta_digest")}
        attrs_b = {k: v for k, v in gb.attrs.items() if k not in ("created", "history", "meta_digest")}
        assert attrs_a == attrs_b
        splits_a = sorted(name for name, _ in ga.groups())
        assert splits_a == sorted(name for name, _ in gb.groups())
        assert splits_a, "store has no split groups"
        for split in splits_a:
            assert dict(ga[split].attrs) == dict(gb[split].attrs)
            names = sorted(name for name, _ in ga[split].arrays())
            assert names == sorted(name for name, _ in gb[split].arrays())
            for name in names:
                x, y = np.asarray(ga[split][name][:]), np.asarray(gb[split][name][:])
                assert x.dtype == y.dtype, f"{split}/{name}"
                assert x.shape == y.shape, f"{split}/{name}"
                assert np.array_equal(x, y), f"{split}/{name} differs"

    return check


NOT_THE_TESTS_ENV = ("PYTEST_CURRENT_TEST", "TORCHINDUCTOR_", "_TORCHINDUCTOR_")
"""Prefixes of environment variables that are no test's doing: pytest's own, and those torch's compiler
sets for itself when first imported or used."""


def _process_state() -> dict[str, Any]:
    """The process-wide settings a test could change and forget: torch's numerics and threads, the
    working folder, the environment, matplotlib's backend, zarr's and blosc's threading."""
    state: dict[str, Any] = {
        "torch threads": torch.get_num_threads(),
        "TF32": (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "cudnn": (torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "default dtype": torch.get_default_dtype(),
        "grad enabled": torch.is_grad_enabled(),
        "working folder": os.getcwd(),
        "environment": {k: v for k, v in os.environ.items() if not k.startswith(NOT_THE_TESTS_ENV)},
    }
    if "matplotlib" in sys.modules:
        state["matplotlib backend"] = sys.modules["matplotlib"].get_backend()
    if "zarr" in sys.modules:
        state["zarr threads"] = sys.modules["zarr"].config.get("threading.max_workers")
    if "numcodecs.blosc" in sys.modules:
        state["blosc threads"] = sys.modules["numcodecs.blosc"].get_nthreads()
    return state


@pytest.fixture(autouse=True)
def process_state_is_restored() -> Iterator[None]:
    """Every test leaves the process-wide settings as it found them (use ``monkeypatch`` or a restoring
    context manager such as :func:`pipeline.core.runtime.exact_float32` to change one)."""
    before = _process_state()
    yield
    after = _process_state()
    changed = {k: (before[k], after.get(k)) for k in before if after.get(k) != before[k]}
    if "environment" in changed:
        old, new = changed["environment"]
        changed["environment"] = {
            k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) != new.get(k)
        }
    assert not changed, f"the test changed process-wide state (before, after): {changed}"
