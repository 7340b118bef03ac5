"""The Zarr store contract: layout, attributes, and the integrity check."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr
from fsspec.implementations.memory import MemoryFileSystem
from helpers import content_hash

import pipeline
from pipeline.core.commands import DistillOptions
from pipeline.errors import UserError
from pipeline.store import ROOT_ATTRS, n_units, open_store, store_info, unit_range, verify_store

SEQ_LEN, N_TARGETS = 80, 4
"""The tiny spec's window length and number of targets (checked against it below)."""


def test_tiny_spec_dimensions(tiny_spec):
    assert (tiny_spec.seq_len, tiny_spec.base.kwargs["n_targets"]) == (SEQ_LEN, N_TARGETS)


def test_layout_shapes_dtypes_and_dimension_names(tiny_store, tiny_spec):
    store = open_store(tiny_store)
    assert store.splits == ["train", "valid", "test"]
    L, F = SEQ_LEN, N_TARGETS
    for split in store.splits:
        n = tiny_spec.splits[split].samples
        units = n_units(n, tiny_spec.storage.unit_samples)
        expected = {
            "reference": ((n, 4, L), np.uint8, ("sample", "base", "position")),
            "ref_pred": ((n, F), np.float32, ("sample", "target")),
            "targets": ((n, F, 3, L), np.float16, ("sample", "target", "alt", "position")),  # format 4
            "center": ((n,), np.int64, ("sample",)),
            "complete": ((units, 1 + 5 * tiny_spec.storage.unit_samples), np.uint32, ("unit", "marker")),
        }
        for name, (shape, dtype, dims) in expected.items():
            array = store.array(split, name)
            assert array.shape == shape, (split, name)
            assert np.dtype(array.dtype) == dtype, (split, name)
            assert tuple(array.metadata.dimension_names) == dims, (split, name)
        chrom = store.array(split, "chrom")
        assert chrom.shape == (n,)
        assert tuple(chrom.metadata.dimension_names) == ("sample",)
        assert all(isinstance(c, str) and c in tiny_spec.splits[split].chroms for c in chrom[:])
        # targets are chunked by whole samples
        assert store.array(split, "targets").chunks == (1, F, 3, L)
        assert store.complete_units(split).all()
        assert (np.asarray(store.array(split, "center")[:]) >= 1).all()


def test_root_attributes(tiny_store, tiny_spec):
    store = open_store(tiny_store)
    attrs = dict(store.group.attrs)  # the on-disk contract
    assert set(ROOT_ATTRS) <= set(attrs)
    assert attrs["alphabet"] == "AGCT"
    assert attrs["spec_hash"] == content_hash(tiny_spec, store) and attrs["spec_hash_version"] == 2
    assert attrs["spec"] == tiny_spec.to_dict()
    assert attrs["target_kind"] == "logfold"
    assert attrs["n_targets"] == N_TARGETS and attrs["seq_len"] == SEQ_LEN
    assert len(attrs["target_names"]) == N_TARGETS
    assert attrs["package_version"] == pipeline.__version__
    assert attrs["base"]["model"] == "demo"
    assert attrs["base"]["class"].endswith("DemoBase")
    assert attrs["base"]["kwargs"]["seq_len"] == SEQ_LEN
    assert Path(attrs["genome"]) == tiny_spec.genome_path.resolve()
    assert store.spec().content_hash() == tiny_spec.content_hash()
    # the record read once at opening says the same
    meta = store.meta
    assert (meta.spec_hash, meta.seq_len, meta.n_targets, meta.target_kind) == (
        attrs["spec_hash"],
        SEQ_LEN,
        N_TARGETS,
        "logfold",
    )
    assert list(meta.target_names) == attrs["target_names"] and dict(meta.base) == attrs["base"]


def test_units_cover_all_samples_once():
    for n, u in [(10, 4), (8, 4), (1, 4), (5, 1)]:
        ranges = [unit_range(n, u, k) for k in range(n_units(n, u))]
        covered = [i for a, b in ranges for i in range(a, b)]
        assert covered == list(range(n))
        assert all(b - a <= u for a, b in ranges)


def test_verify_good_store(tiny_store):
    assert verify_store(open_store(tiny_store)) == []


def test_store_info_reports_bytes_per_sample(tiny_store, tiny_spec):
    info = store_info(open_store(tiny_store))
    assert info["spec_hash"] == content_hash(tiny_spec, open_store(tiny_store))
    assert info["seq_len"] == SEQ_LEN and info["n_targets"] == N_TARGETS
    for split, s in info["splits"].items():
        n = tiny_spec.splits[split].samples
        assert s["n_samples"] == s["complete_samples"] == n
        assert s["complete_units"] == s["n_units"]
        assert s["raw_float32_bytes_per_sample"] == N_TARGETS * 4 * SEQ_LEN * 4
        assert s["bytes_per_sample"] == pytest.approx(s["target_bytes_stored"] / n)
        assert 0 < s["bytes_per_sample"] < s["raw_float32_bytes_per_sample"]
        assert math.isfinite(s["compression_vs_float32"]) and s["compression_vs_float32"] > 1


def _group(path: str, split: str):
    return zarr.open_group(path, mode="r+")[split]


def _redigest(path: str, split: str, *samples: int) -> None:
    """Rewrite the markers of the units of ``samples`` with digests of their data as it is now: what a
    writer that computed wrong values leaves (the checksums match; only the conventions can tell)."""
    from pipeline.store.chunkio import TargetChunks
    from pipeline.store.digests import DIGESTED, marker_row

    store = open_store(path, mode="r+")
    meta = store.split_meta(split)
    for u in {k // meta.unit_samples for k in samples}:
        a, b = meta.unit_range(u)
        data = {name: np.asarray(store.array(split, name)[a:b]) for name in DIGESTED}
        row = marker_row(data, meta.unit_samples)
        if store.meta.format_version >= 4:  # the targets' digests are of their chunks' trailers
            k = 1 + DIGESTED.index("targets")
            row[k : k + (b - a) * len(DIGESTED) : len(DIGESTED)] = TargetChunks(store.array(split, "targets")).digests(
                a, b
            )
        store.array(split, "complete")[u] = row


def test_verify_reports_cleared_completion_marker(store_copy):
    _group(store_copy, "train")["complete"][1] = 0
    problems = verify_store(open_store(store_copy))
    assert len(problems) == 1
    assert "train" in problems[0] and "unit 1" in problems[0]
    info = store_info(open_store(store_copy))["splits"]["train"]
    assert info["complete_units"] == info["n_units"] - 1


def test_verify_reports_deleted_targets_chunk(store_copy):
    chunk = Path(store_copy) / "valid" / "targets" / "c" / "5" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.unlink()
    problems = verify_store(open_store(store_copy))
    assert len(problems) == 1
    assert "valid" in problems[0] and "targets" in problems[0] and "missing" in problems[0]


def test_verify_reports_nan_in_targets(store_copy):
    g = _group(store_copy, "test")
    X = np.asarray(g["reference"][4])
    j = int(np.flatnonzero(X.sum(axis=0))[0])
    g["targets"][4, 0, 2, j] = np.nan  # the third alternative of a position
    _redigest(store_copy, "test", 4)
    problems = verify_store(open_store(store_copy))
    assert len(problems) == 1 and "test" in problems[0] and "NaN" in problems[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_verify_in_one_or_several_processes_finds_the_same_first_problem(store_copy, workers):
    """``verify`` reads a local store's units in worker processes; the first problem is the same."""
    g = _group(store_copy, "train")
    for sample in (9, 5):  # units 2 and 1: the first offending unit is 1
        g["targets"][sample, 1, 0, 0] = np.inf
    _redigest(store_copy, "train", 9, 5)
    problems = verify_store(open_store(store_copy), workers=workers)
    assert len(problems) == 1 and "train: unit 1 (samples 4-7)" in problems[0] and "infinity" in problems[0]


def test_verify_reports_nonzero_at_reference_base(store_copy):
    """Format 3 (format 4 stores nothing at reference bases)."""
    from helpers import as_format3

    as_format3(store_copy)
    g = _group(store_copy, "train")
    X = np.asarray(g["reference"][9])
    j = SEQ_LEN // 2
    while X[:, j].sum() == 0:
        j += 1
    g["targets"][9, 2, int(X[:, j].argmax()), j] = 0.5
    _redigest(store_copy, "train", 9)
    problems = verify_store(open_store(store_copy))
    assert len(problems) == 1 and "reference base" in problems[0] and "unit 2" in problems[0]


def test_verify_reports_nonzero_at_n_position(store_copy):
    g = _group(store_copy, "valid")
    X = np.asarray(g["reference"][0])
    y = np.asarray(g["targets"][0])
    j = int(np.flatnonzero(np.abs(y).sum(axis=(0, 1)))[0])  # a position with nonzero effects
    X[:, j] = 0  # make it an N in the reference, leaving its effects
    g["reference"][0] = X
    _redigest(store_copy, "valid", 0)
    problems = verify_store(open_store(store_copy))
    assert len(problems) == 1 and "N positions" in problems[0]


def test_open_store_refuses_non_stores(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_store(tmp_path / "nothing.zarr")
    a_file = tmp_path / "file.zarr"
    a_file.write_text("x")
    with pytest.raises(UserError, match="file"):
        open_store(a_file)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(UserError, match="not a multiplexer store"):
        open_store(tmp_path / "plain.zarr")


@pytest.mark.parametrize("url", [False, True], ids=["local", "file-url"])
def test_distill_overwrite_replaces_only_a_training_store(tmp_path, tiny_spec, store_copy, url):
    """``distill --overwrite`` replaces a training store (also one whose root metadata was lost, or an
    empty group left by a creation cut short) and nothing else: a catalogue or a score-vcf output at
    the path stays, locally and behind a URL (issue 22.2)."""
    import shutil

    from pipeline.distill import distill

    def at(path: Path) -> str:
        return f"file://{path}" if url else str(path)

    def run(path: Path) -> int:
        return distill(
            tiny_spec,
            DistillOptions(store_path=at(path), splits=["test"], overwrite=True, device="cpu"),
            progress=False,
        ).computed_units

    for name, attrs in (("cat.zarr", {"format": "multiplexer-catalogue"}), ("s.zarr", {"kind": "score-vcf"})):
        zarr.open_group(str(tmp_path / name), mode="w").attrs.update(attrs)
        with pytest.raises(UserError, match=r"another kind .*--overwrite will not replace it"):
            run(tmp_path / name)
        assert dict(zarr.open_group(str(tmp_path / name), mode="r").attrs) == attrs
    assert run(Path(store_copy)) == 2  # a training store: replaced, its test units computed again
    lost_root = tmp_path / "lost_root.zarr"
    shutil.copytree(store_copy, lost_root)
    (lost_root / "zarr.json").unlink()  # its split groups still say what it is
    assert run(lost_root) == 2
    zarr.open_group(str(tmp_path / "cut_short.zarr"), mode="w")  # nothing in it yet
    assert run(tmp_path / "cut_short.zarr") == 2


def test_require_complete_names_the_unit(store_copy):
    _group(store_copy, "valid")["complete"][1] = 0
    with pytest.raises(UserError, match="unit 1"):
        open_store(store_copy).require_complete("valid")
    with pytest.raises(UserError, match="holdout"):
        open_store(store_copy).split_group("holdout")


# ------------------------------------------------------------------------------------------------
# what reading and writing a store costs, counted on an fsspec memory store
# ------------------------------------------------------------------------------------------------


class CountingMemoryFS(MemoryFileSystem):
    """An fsspec memory filesystem that counts the requests it serves (``countmem://``)."""

    protocol = ("countmem",)
    calls: Counter[str] = Counter()

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        self.calls["read"] += 1
        return super().cat_file(path, start=start, end=end, **kwargs)

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        self.calls["write"] += 1
        super().pipe_file(path, value, **kwargs)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        self.calls["info"] += 1
        return super().info(path, **kwargs)

    def exists(self, path: str, **kwargs: Any) -> bool:
        self.calls["exists"] += 1
        return super().exists(path, **kwargs)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        self.calls["list"] += 1
        return super().ls(path, detail=detail, **kwargs)

    def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
        self.calls["list"] += 1
        return super().find(path, *args, **kwargs)


fsspec.register_implementation("countmem", CountingMemoryFS, clobber=True)


@pytest.fixture
def counted_store(spec_dict, tmp_path) -> Callable[..., tuple[str, Any]]:
    """``make(n_units, shards=False)``: a new ``countmem://`` store whose train split has ``n_units``
    one-sample write units (nothing written yet) and its spec."""
    from pipeline.core.spec import spec_from_dict
    from pipeline.distill import distill

    made: list[str] = []

    def make(units: int, shards: bool = False) -> tuple[str, Any]:
        url = f"countmem://{tmp_path.name}/{len(made)}.zarr"
        spec = spec_from_dict(
            spec_dict(
                splits={"train": {"samples": units}, "valid": {"samples": 1}, "test": None},
                storage={"unit_samples": 1, "chunk_samples": 1, "shards": shards},
            )
        )
        distill(spec, DistillOptions(store_path=url, device="cpu", create_only=True), progress=False)
        made.append(url)
        return url, spec

    yield make
    for url in made:
        fs, path = fsspec.core.url_to_fs(url)
        fs.rm(path, recursive=True)


def _unit_data(n: int = 1) -> dict[str, Any]:
    return {
        "reference": np.zeros((n, 4, SEQ_LEN), dtype=np.uint8),
        "ref_pred": np.full((n, N_TARGETS), 0.5, dtype=np.float32),
        "targets": np.zeros((n, N_TARGETS, 4, SEQ_LEN), dtype=np.float16),
        "chrom": ["chr1"] * n,
        "center": np.full(n, 100, dtype=np.int64),
    }


@pytest.mark.parametrize("shards", [False, True])
def test_requests_per_unit_written_do_not_grow_with_the_units(counted_store, shards):
    """Writing a unit costs the same requests in a store of 8 or 64 units, first unit or last, and
    reads nothing (no completion marker or attribute is read again)."""
    per_unit: dict[int, list[dict[str, int]]] = {}
    for units in (8, 64):
        url, _ = counted_store(units, shards=shards)
        store = open_store(url, mode="r+")
        store.complete_units("train")  # distill reads the markers once before writing
        costs = []
        for u in range(units):
            CountingMemoryFS.calls.clear()
            store.write_unit("train", u, **_unit_data())
            costs.append(dict(CountingMemoryFS.calls))
        per_unit[units] = costs[1:]  # the first write also opens the arrays (reads their metadata once)
        assert all(cost == costs[1] for cost in costs[1:]), costs
        # writes only (a sharded unit: zarr reads the shard's index once), no listing or existence checks
        assert set(costs[1]) <= {"write", "read"} and costs[1].get("read", 0) <= int(shards), costs[1]
        assert store.complete_units("train").all()  # the cached markers followed the writes
        assert open_store(url).complete_units("train").all()  # and so did the store
    assert per_unit[8][0] == per_unit[64][0] == per_unit[64][-1]


def test_reading_a_store_costs_requests_in_proportion_to_its_units(counted_store):
    """Opening, ``store info`` and the start-up checks of train/evaluate read each completion marker
    once: their requests grow linearly with the units, not quadratically."""
    counts = {}
    for units in (16, 128):
        url, _ = counted_store(units)
        store = open_store(url, mode="r+")
        for u in range(units):
            store.write_unit("train", u, **_unit_data())
        CountingMemoryFS.calls.clear()
        store = open_store(url)
        info = store_info(store)
        store.require_complete("train")
        store.split_info("train"), list(store.iter_units("train")), store.unit_range("train", units - 1)
        assert info["splits"]["train"]["complete_units"] == units
        counts[units] = sum(CountingMemoryFS.calls.values())
    # 8 times the units: at most 8 times the requests; per unit, its marker and the size of its chunk
    assert counts[128] <= 8 * counts[16], counts
    assert counts[128] - counts[16] <= 2 * (128 - 16), counts
