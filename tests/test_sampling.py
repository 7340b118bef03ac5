"""Reproducible, split-aware window sampling."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.core.encoding import base_codes
from pipeline.core.spec import spec_from_dict
from pipeline.core.windows import center_range
from pipeline.distill.sampling import WindowSampler
from pipeline.errors import UserError


@pytest.fixture(scope="module")
def spec(spec_dict):
    return spec_from_dict(spec_dict(splits={"train": {"samples": 40}}))


def test_sample_alone_equals_sample_among_others_in_any_order(genome, spec):
    everything = [WindowSampler(genome, spec, "train")(k) for k in range(40)]
    for k in (0, 17, 39):
        assert WindowSampler(genome, spec, "train")(k) == everything[k]
    sampler = WindowSampler(genome, spec, "train")
    for k in reversed(range(40)):
        assert sampler(k) == everything[k]
    for k in (5, 5, 30, 2):  # repeated and out of order
        assert sampler(k) == everything[k]


def test_two_samplers_are_deterministic(genome, spec):
    a, b = WindowSampler(genome, spec, "valid"), WindowSampler(genome, spec, "valid")
    assert [a(k) for k in range(10)] == [b(k) for k in range(10)]


def test_samples_differ(genome, spec):
    sampler = WindowSampler(genome, spec, "train")
    windows = {(w.chrom, w.center) for w in (sampler(k) for k in range(40))}
    assert len(windows) > 30


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_splits_use_only_their_own_chromosomes(genome, spec, split):
    sampler = WindowSampler(genome, spec, split)
    chroms = {sampler(k).chrom for k in range(30)}
    assert chroms <= set(spec.splits[split].chroms)
    if split == "train":
        assert len(chroms) > 1  # all of the split's chromosomes are used


def test_windows_fit_match_the_genome_and_respect_max_n(genome, spec):
    for split in spec.splits:
        sampler = WindowSampler(genome, spec, split)
        for k in range(30):
            w = sampler(k)
            lo, hi = center_range(genome.length(w.chrom), spec.seq_len)
            assert lo <= w.center <= hi
            assert w.seq == genome.window(w.chrom, w.center, spec.seq_len)
            assert int((base_codes(w.seq) == 4).sum()) <= spec.max_n


def test_max_n_zero_rejects_every_unknown_base(genome, spec):
    strict = dataclasses.replace(spec, max_n=0)
    sampler = WindowSampler(genome, strict, "train")
    for k in range(30):
        assert (base_codes(sampler(k).seq) == 4).sum() == 0


def test_seed_and_split_change_the_windows(genome, spec):
    other = dataclasses.replace(spec, seed=spec.seed + 1)
    a = [WindowSampler(genome, spec, "train")(k) for k in range(10)]
    b = [WindowSampler(genome, other, "train")(k) for k in range(10)]
    assert a != b


def test_unknown_split_is_an_error(genome, spec_dict):
    spec = spec_from_dict(spec_dict(splits={"test": None}))
    with pytest.raises(UserError, match="test"):
        WindowSampler(genome, spec, "test")


def test_chromosome_missing_from_genome_is_an_error(genome, spec_dict):
    spec = spec_from_dict(spec_dict(splits={"test": {"chroms": ["chrNope"]}}))
    with pytest.raises(UserError, match="chrNope"):
        WindowSampler(genome, spec, "test")
