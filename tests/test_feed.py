"""The training feed: batches decoded into reusable slots, moved to the device a batch ahead, expanded
there; the GPU-decode path run on the CPU with a CPU decoder; one-line errors for what cannot work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import as_format3, assert_one_line_error, invoke

from pipeline.core.commands import DistillOptions
from pipeline.core.spec import load_spec
from pipeline.distill import distill
from pipeline.errors import UserError
from pipeline.store.layout import expand_targets
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
    spec = load_spec(write_spec(folder, storage={"codec": "zstd-gpu"}))
    distill(spec, DistillOptions(store_path=str(path), device="cpu"), progress=False)
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


@pytest.mark.parametrize(
    ("array", "chunk", "named"),
    [("targets", "c/5/0/0/0", "unit 1 sample 5: targets cannot be read"),
     ("reference", "c/1/0/0", "unit 1 sample 4: reference (the chunk of samples 4-7) cannot be read")],
)  # fmt: skip
def test_a_flipped_byte_in_a_chunk_read_by_a_worker_is_one_line_naming_the_chunk(store_copy, tmp_path, array, chunk,
                                                                                  named):  # fmt: skip
    target = Path(store_copy) / "train" / array / chunk
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x5A
    target.write_bytes(bytes(data))
    result = invoke("train", store_copy, "--run-dir", tmp_path / "run", "--device", "cpu", "--steps", "6",
                    "--batch-size", "10", "--valid-every", "100", "--num-workers", "2")  # fmt: skip
    line = assert_one_line_error(result, "split 'train'", named, "CRC-32C", "damaged")
    assert f"the chunk file train/{array}/{chunk} is damaged" in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_feed_with_prefetch_equals_the_feed_without(tiny_store):
    """Workers loading ahead (any prefetch factor) and the next batch moved early (``ahead``) change
    when a batch is read, never what it holds: the same batches as one process reading each batch when
    it is asked for, also for an epoch entered in its middle (a resumed run)."""
    ds = StoreDataset(tiny_store, "train")
    sampler = sampler_for(ds, micro=3)
    plain: dict[tuple[int, int], list] = {}
    with Feed(ds, sampler, CPU, workers=0) as feed:
        for epoch, start in ((0, 0), (1, 0), (1, 2)):
            sampler.set_epoch(epoch, start)
            plain[(epoch, start)] = [feed.stage.start(filled).result() for filled in feed]  # nothing ahead
    assert len(plain[(1, 2)]) == len(plain[(1, 0)]) - 2
    for workers, prefetch in ((1, 1), (2, 2), (2, 4)):
        with Feed(ds, sampler, CPU, workers=workers, prefetch_factor=prefetch) as feed:
            for (epoch, start), expected in plain.items():
                sampler.set_epoch(epoch, start)
                assert_same_batches([batch for _, batch in feed.ahead(enumerate(feed))], expected)


def test_format_4_batches_are_format_3_batches_without_the_reference_rows(tiny_store, store_copy):
    """The same windows stored both ways: format 4's ``[n, F, 3, L]`` targets expanded are format 3's
    ``[n, F, 4, L]`` bit for bit, whose reference-base rows and ``N`` columns are exactly +0; a quarter
    fewer bytes per sample; and the feed gives the same device batches from either."""
    as_format3(store_copy)
    new, old = StoreDataset(tiny_store, "train"), StoreDataset(store_copy, "train")
    assert (new.rows, old.rows) == (3, 4) and new.sample_bytes * 4 == old.sample_bytes * 3
    everything = list(range(len(new)))
    X4, y4 = new.__getitems__(everything)
    X3, y3 = old.__getitems__(everything)
    assert torch.equal(X4, X3) and y4.shape[2] == 3 and y3.shape[2] == 4
    assert torch.equal(expand_targets(y4, X4).view(torch.int16), y3.view(torch.int16))
    nothing_stored = X3.bool() | ~X3.bool().any(dim=1, keepdim=True)  # reference bases and N columns
    assert nothing_stored.sum() >= X3.shape[0] * X3.shape[2]
    assert (y3.view(torch.int16)[nothing_stored[:, None].expand_as(y3)] == 0).all()  # +0, not -0
    assert y3.abs().sum() > 0
    sampler = sampler_for(new, micro=4)
    with Feed(new, sampler, CPU, workers=2) as a, Feed(old, sampler, CPU, workers=2) as b:
        for epoch in (0, 1):
            assert_same_batches(one_epoch(a, sampler, epoch), one_epoch(b, sampler, epoch))


def test_references_the_chunk_reader_does_not_take_are_read_through_zarr(tiny_store, store_copy):
    """A store whose references are chunked across positions (no writer of this package makes one) is
    read through zarr, with the same sample digests."""
    group = zarr.open_group(str(Path(store_copy) / "train"), mode="r+")
    values = np.asarray(group["reference"][:])
    old = group["reference"]
    codecs, dims = old.compressors, old.metadata.dimension_names
    del group["reference"]
    group.create_array("reference", shape=values.shape, chunks=(4, 4, 16), dtype="uint8", fill_value=0,
                       compressors=codecs, dimension_names=dims)[:] = values  # fmt: skip
    ds, reference = StoreDataset(store_copy, "train"), StoreDataset(tiny_store, "train")
    picked = [0, 3, 4, 9]
    for got, want in zip(ds.__getitems__(picked), reference.__getitems__(picked)):
        assert torch.equal(got, want)
    group["reference"][5, 0, 0] = 1 - values[5, 0, 0]  # a changed value: its sample digest no longer matches
    with pytest.raises(UserError, match=r"unit 1 sample 5: reference does not match its checksum"):
        StoreDataset(store_copy, "train").__getitems__([5])
