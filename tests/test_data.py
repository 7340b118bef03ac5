"""The training loader: batched store reads, block-shuffled order, rank-aware batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.store import open_store
from pipeline.train.data import BlockShuffle, RankBatchSampler, StoreDataset, collate_batch


def test_dataset_reads_batches_in_any_order(tiny_store):
    ds = StoreDataset(tiny_store, "valid", limit=5)
    assert len(ds) == 5
    X, y = ds.__getitems__([3, 0, 3])
    assert X.shape == (3, 4, ds.seq_len) and X.dtype == torch.uint8
    assert y.shape == (3, ds.n_targets, 3, ds.seq_len) and y.dtype == torch.float16  # as stored (format 4)
    assert torch.equal(X[0], X[2]) and torch.equal(y[0], y[2])
    store = open_store(tiny_store)
    assert np.array_equal(y[1].numpy(), store.array("valid", "targets")[0])
    assert np.array_equal(X[0].numpy(), store.array("valid", "reference")[3])
    X0, y0 = ds[0]
    assert torch.equal(X0, X[1]) and torch.equal(y0, y[1])
    empty_X, empty_y = ds.__getitems__([])
    assert empty_X.shape == (0, 4, ds.seq_len) and empty_y.shape[0] == 0
    with pytest.raises(IndexError):
        ds[5]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_with_workers_delivers_the_sampler_batches(tiny_store, workers):
    ds = StoreDataset(tiny_store, "train")
    sampler = RankBatchSampler(BlockShuffle(len(ds), ds.unit_samples, 2, seed=3), micro_batch=4)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch, num_workers=workers)  # the plain path
    expected = list(sampler)
    got = list(loader)
    assert len(got) == len(expected)
    for idx, (X, y) in zip(expected, got):
        X_ref, y_ref = ds.__getitems__(idx)
        assert torch.equal(X, X_ref) and torch.equal(y, y_ref)


@pytest.mark.parametrize(("n", "block", "buffer"), [(100, 16, 3), (10, 4, 1), (7, 1, 8), (33, 5, 100)])
def test_block_shuffle_is_a_seeded_permutation_that_keeps_blocks_together(n, block, buffer):
    order = BlockShuffle(n, block, buffer, seed=0)
    e0 = order.order(0)
    assert sorted(e0.tolist()) == list(range(n))
    assert np.array_equal(e0, BlockShuffle(n, block, buffer, seed=0).order(0))
    assert not np.array_equal(e0, order.order(1))  # another epoch, another order
    # locality: at any point of the order, at most `buffer` blocks are started but not finished
    sizes = {b: min(block, n - b * block) for b in range(-(-n // block))}
    seen: dict[int, int] = {}
    for i in e0:
        b = int(i) // block
        seen[b] = seen.get(b, 0) + 1
        assert sum(0 < count < sizes[k] for k, count in seen.items()) <= buffer


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_batches_cover_every_sample_once_and_the_global_order_is_world_independent(world):
    n, micro = 23, 6
    order = BlockShuffle(n, 4, 2, seed=7)
    single = list(RankBatchSampler(order, micro))
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world):
            sampler = RankBatchSampler(order, micro, rank, world)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        seen = [i for batches in per_rank for batch in batches for i in batch]
        assert sorted(seen) == list(range(n))
        lengths = {len(b) for b in per_rank}
        assert lengths == {len(single)}
        if epoch == 0:
            for k, global_batch in enumerate(single):  # rank parts make up the global batch
                assert sorted(sum((per_rank[r][k] for r in range(world)), [])) == global_batch
                sizes = [len(per_rank[r][k]) for r in range(world)]
                assert max(sizes) - min(sizes) <= 1


def test_rank_sampler_starts_mid_epoch():
    order = BlockShuffle(20, 4, 2, seed=1)
    sampler = RankBatchSampler(order, 6)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=2)
    assert list(sampler) == full[2:] and len(sampler) == len(full) - 2
