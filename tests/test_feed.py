"""The training feed: batches decoded into reusable slots, moved to the device a batch ahead, expanded
there; the GPU-decode path run on the CPU with a CPU decoder; one-line errors for what cannot work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, invoke

from pipeline.core.spec import load_spec
from pipeline.distill import distill
from pipeline.errors import UserError
from pipeline.train.data import BlockShuffle, RankBatchSampler, StoreDataset
from pipeline.train.feed import CpuChunkDecoder, Feed, Slots, on_device

CPU = torch.device("cpu")


def sampler_for(ds: StoreDataset, micro: int, rank: int = 0, world: int = 1) -> RankBatchSampler:
    return RankBatchSampler(BlockShuffle(len(ds), ds.unit_samples, 2, seed=5), micro, rank, world)


def one_epoch(feed: Feed, sampler: RankBatchSampler, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    sampler.set_epoch(epoch)
    return [batch for _, batch in feed.ahead(enumerate(feed))]


def expected_epoch(
    ds: StoreDataset, sampler: RankBatchSampler, epoch: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    sampler.set_epoch(epoch)
    return [on_device(*ds.__getitems__(indices), CPU) for indices in sampler]


def assert_same_batches(got, expected) -> None:
    assert len(got) == len(expected)
    for (X, y), (X_ref, y_ref) in zip(got, expected):
        assert X.dtype == y.dtype == torch.float32 and y.shape[2] == 4
        assert torch.equal(X, X_ref) and torch.equal(y, y_ref)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_feed_delivers_the_sampler_batches_expanded_on_the_device(tiny_store, workers):
    ds = StoreDataset(tiny_store, "train")
    sampler = sampler_for(ds, micro=1)
    with Feed(ds, sampler, CPU, workers=workers, prefetch_factor=1) as feed:
        assert feed.slots.count < len(sampler)  # more batches than slots: every slot is reused
        for epoch in (0, 1):  # a second pass: the same workers, the slots taken back
            assert_same_batches(one_epoch(feed, sampler, epoch), expected_epoch(ds, sampler, epoch))
    X, y = expected_epoch(ds, sampler)[0]
    reference = X.numpy().astype(bool)
    assert not y.numpy()[:, :, :][np.broadcast_to(reference[:, None], y.shape)].any()  # 0 at reference bases


def test_ranks_read_disjoint_parts_through_the_feed(tiny_store):
    ds = StoreDataset(tiny_store, "train")
    seen = []
    for rank in range(2):
        sampler = sampler_for(ds, micro=4, rank=rank, world=2)
        feed = Feed(ds, sampler, CPU)
        sampler.set_epoch(0)
        parts = list(sampler)
        got = one_epoch(feed, sampler)
        assert_same_batches(got, [on_device(*ds.__getitems__(p), CPU) for p in parts])
        seen += [i for p in parts for i in p]
    assert sorted(seen) == list(range(len(ds)))


def test_the_next_batch_is_started_before_the_current_one_is_handed_over(tiny_store):
    ds = StoreDataset(tiny_store, "valid")
    sampler = sampler_for(ds, micro=2)
    feed = Feed(ds, sampler, CPU)
    pulled = []

    def counted():
        for k, filled in enumerate(feed):
            pulled.append(k)
            yield k, filled

    for k, _ in feed.ahead(counted()):
        assert len(pulled) == min(k + 2, len(sampler))


def test_slots_are_reused_and_never_overcommitted():
    slots = Slots(2, 16)
    a, b = slots.acquire(), slots.acquire()
    assert {a, b} == {0, 1}
    with pytest.raises(RuntimeError, match="all 2 batch slots are in use"):
        slots.acquire()
    slots.release(a)
    assert slots.acquire() == a
    slots.view(b)[:] = 7
    assert (slots.buffer[b] == 7).all()
    slots.reclaim()
    assert sorted([slots.acquire(), slots.acquire()]) == [0, 1]


@pytest.fixture(scope="module")
def gpu_store(tmp_path_factory, write_spec) -> str:
    """The tiny spec distilled with ``storage.codec: zstd-gpu``."""
    folder = tmp_path_factory.mktemp("gpu")
    path = folder / "gpu.zarr"
    distill(load_spec(write_spec(folder, storage={"codec": "zstd-gpu"})), store_path=str(path), device="cpu",
            progress=False)  # fmt: skip
    return str(path)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_gpu_decode_path_on_the_cpu_equals_the_cpu_path(gpu_store, tiny_store, workers):
    """Everything of --decode gpu but the nvCOMP call: workers gather checked compressed chunks, the
    device side decodes (here with numcodecs), undoes the byte shuffle and assembles the targets."""
    ds = StoreDataset(gpu_store, "train")
    sampler = sampler_for(ds, micro=3)
    reference = StoreDataset(tiny_store, "train")  # the same windows, stored with blosc
    with (
        Feed(ds, sampler, CPU, workers=workers, decode="gpu", decoder=CpuChunkDecoder()) as gathered,
        Feed(ds, sampler, CPU, workers=workers) as decoded,
    ):
        for epoch in (0, 1):
            assert_same_batches(one_epoch(gathered, sampler, epoch), one_epoch(decoded, sampler, epoch))
            assert_same_batches(one_epoch(gathered, sampler, epoch), expected_epoch(reference, sampler, epoch))


def test_a_damaged_chunk_in_a_gathered_batch_is_one_line(gpu_store, tmp_path):
    import shutil

    copy = tmp_path / "gpu.zarr"
    shutil.copytree(gpu_store, copy)
    shard = copy / "train" / "targets" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0x11
    shard.write_bytes(bytes(data))
    ds = StoreDataset(str(copy), "train")
    sampler = sampler_for(ds, micro=10)
    with (
        Feed(ds, sampler, CPU, workers=2, decode="gpu", decoder=CpuChunkDecoder()) as feed,
        pytest.raises(UserError, match=r"split 'train' unit 1 sample \d: targets cannot be read") as caught,
    ):
        one_epoch(feed, sampler)
    assert "\n" not in str(caught.value)


def test_decode_gpu_without_a_gpu_or_on_a_store_it_cannot_decode_is_one_line(tiny_store, gpu_store, tmp_path):
    base = ("--steps", "1", "--valid-every", "1", "--device", "cpu", "--decode", "gpu")
    line = assert_one_line_error(invoke("train", gpu_store, "--run-dir", tmp_path / "a", *base), "--decode gpu")
    assert "CUDA device" in line
    line = assert_one_line_error(invoke("train", tiny_store, "--run-dir", tmp_path / "b", *base), "--decode gpu")
    assert "blosc" in line and "zstd-gpu" in line
    assert not (Path(tmp_path) / "a" / "last.pt").exists()


def test_a_damaged_chunk_read_by_a_worker_stops_training_in_one_line(store_copy, tmp_path):
    target = Path(store_copy) / "train" / "targets" / "c" / "5" / "0" / "0" / "0"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x5A
    target.write_bytes(bytes(data))
    result = invoke("train", store_copy, "--run-dir", tmp_path / "run", "--device", "cpu", "--steps", "6",
                    "--batch-size", "10", "--valid-every", "100", "--num-workers", "2")  # fmt: skip
    assert "unit 1" in assert_one_line_error(result, "split 'train'", "targets", "damaged")
