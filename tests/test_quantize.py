"""``storage.quantize: bitround-K``: the stored targets are the lossless ones rounded to K mantissa bits,
within the documented bound, with exact zeros kept."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.commands import DistillOptions
from pipeline.core.quantize import bitround
from pipeline.core.spec import QUANTIZE, load_spec
from pipeline.distill import distill
from pipeline.errors import SpecError
from pipeline.store import open_store


@pytest.mark.parametrize("keep", [1, 3, 6, 9])
def test_bitround_meets_its_bound_and_keeps_zeros(keep):
    rng = np.random.default_rng(keep)
    x = (rng.standard_normal(50_000) * rng.choice([1e-2, 1, 30], size=50_000)).astype(np.float16)
    x[:50] = 0
    x[50:60] = -0.0
    y = bitround(x, f"bitround-{keep}")
    assert y.dtype == np.float16 and (y[:60] == 0).all()
    normal = np.abs(x) >= np.float16(6.104e-05)
    err = np.abs(y[normal].astype(np.float64) - x[normal]) / np.abs(x[normal].astype(np.float64))
    assert err.max() <= 2.0 ** -(keep + 1)
    assert np.array_equal(bitround(y, f"bitround-{keep}"), y)  # idempotent
    assert np.array_equal(bitround(x, "none"), x)


def test_a_quantized_store_holds_the_rounded_lossless_targets(tmp_path, write_spec, tiny_store):
    spec = load_spec(write_spec(tmp_path, storage={"quantize": "bitround-3"}))
    path = tmp_path / "q.zarr"
    distill(spec, DistillOptions(store_path=str(path), device="cpu"), progress=False)
    lossless, lossy = open_store(tiny_store), open_store(path)
    assert lossy.spec_hash != lossless.spec_hash  # another content
    for split in lossless.splits:
        a = np.asarray(lossless.array(split, "targets")[:])
        b = np.asarray(lossy.array(split, "targets")[:])
        assert np.array_equal(b, bitround(a, "bitround-3"))
        assert (b[a == 0] == 0).all()


def test_quantize_is_checked():
    assert "bitround-4" in QUANTIZE
    from pipeline.core.spec import spec_from_dict

    base = {"name": "x", "genome": "g.fa", "seq_len": 80, "base": {"model": "demo"},
            "splits": {"train": {"chroms": ["chr1"], "samples": 1}}}  # fmt: skip
    with pytest.raises(SpecError, match="quantize"):
        spec_from_dict({**base, "storage": {"quantize": "bitround-12"}})
    with pytest.raises(SpecError, match="needs dtype float16"):
        spec_from_dict({**base, "storage": {"quantize": "bitround-4", "dtype": "float32"}})
