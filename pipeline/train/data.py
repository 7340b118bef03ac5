"""Streaming a store into training: a map-style Dataset and a block-shuffled, rank-aware batch order.

:class:`StoreDataset` opens the Zarr store lazily inside each DataLoader worker and reads a whole
batch at once (``__getitems__``; contiguous samples as one slice). It returns ``X`` as uint8 and ``y``
in the store's dtype (float16 by default): both are moved to the device as they are and converted
there.

:class:`BlockShuffle` gives each epoch's global sample order: the store's write units are permuted,
then the samples of a bounded buffer of units are shuffled together, so consecutive batches read from
a few units (one shard each when the store is sharded) while the order is still well mixed. It depends
only on ``(seed, epoch)``.

:class:`RankBatchSampler` cuts that order into global micro-batches of the same size whatever the
number of processes, and gives rank ``r`` the ``r``-th contiguous part of each (parts differ by at
most one sample; all ranks together see every sample of the epoch exactly once). It can start in the
middle of an epoch, which is what exact resume needs, and at any sample of it (``offset``), which is what
a batch size changed on resume needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numcodecs
import numpy as np
import torch
import zarr
from torch.utils.data import Dataset, Sampler

from pipeline.errors import UserError
from pipeline.store import open_store
from pipeline.store.digests import DIGESTED, read_checked

_READ = ("reference", "targets")
"""The arrays training reads."""


class StoreDataset(Dataset):
    """One split of a store as ``(X, y)`` batches.

    Parameters
    ----------
    path : str
        Store path or URL.
    split : str
        ``train``, ``valid`` or ``test``.
    limit : int, optional
        Use only the first ``limit`` samples; more than the split holds is an error (never a silent
        cut to what there is).
    limit_option : str
        How the error names ``limit`` (``"--max-samples"``).
    """

    def __init__(self, path: str, split: str, limit: int | None = None, limit_option: str = "limit") -> None:
        store = open_store(path)
        self.path, self.split = str(path), split
        n = store.split_info(split).n_samples
        if limit is not None and int(limit) > n:
            raise UserError(
                f"{limit_option} {limit}: split {split!r} of store {self.path!r} holds only {n} samples; leave "
                f"{limit_option} out to use all {n}, or grow the store (more samples for split {split!r} in the "
                "spec, then distill)"
            )
        store.require_complete(split, limit=limit)
        self.n = n if limit is None else int(limit)
        self.seq_len, self.n_targets = store.seq_len, store.n_targets
        targets = store.array(split, "targets")
        self.chunk_samples = int(targets.chunks[0])
        self.unit_samples = store.split_info(split).unit_samples
        self.target_dtype = np.dtype(targets.dtype)
        digests = store.digests(split)  # read with the completion markers: checked per sample as read
        self._digests = None if digests is None else digests[: self.n, [DIGESTED.index(a) for a in _READ]].copy()
        self._arrays: dict[str, Any] | None = None
        self._pid = os.getpid()

    def _open(self) -> dict[str, Any]:
        # opened lazily, once per process: a forked DataLoader worker must not reuse its parent's handles
        if self._arrays is None or self._pid != os.getpid():
            if torch.utils.data.get_worker_info() is not None:
                _single_threaded_decoding()  # workers are the parallelism: avoid workers × cores threads
            store = open_store(self.path)
            self._arrays = {name: store.array(self.split, name) for name in _READ}
            self._pid = os.getpid()
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None  # never ship open handles to worker processes
        return state

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = self.__getitems__([index])
        return X[0], y[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Read a batch.

        Returns
        -------
        X : torch.Tensor, shape=(n, 4, L), uint8
        y : torch.Tensor, shape=(n, F, 4, L), the store's dtype
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return (
                torch.zeros(0, 4, self.seq_len, dtype=torch.uint8),
                torch.from_numpy(np.zeros((0, self.n_targets, 4, self.seq_len), dtype=self.target_dtype)),
            )
        if idx.min() < 0 or idx.max() >= self.n:
            raise IndexError(f"sample index out of range 0..{self.n - 1}")
        arrays = self._open()
        uniq, inverse = np.unique(idx, return_inverse=True)
        # contiguous runs are read with basic slices, which zarr decodes much faster than an
        # orthogonal selection of the same samples
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(uniq, breaks)]
        X = np.concatenate([self._read(arrays, "reference", a, b) for a, b in runs])
        y = (
            np.concatenate([self._read(arrays, "targets", a, b) for a, b in runs])
            if len(runs) > 1
            else self._read(arrays, "targets", *runs[0])
        )
        if uniq.size != idx.size or not np.array_equal(uniq, idx):  # unsorted or repeated: reorder
            X, y = X[inverse], y[inverse]
        return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.ascontiguousarray(y))

    def _where(self, sample: int) -> str:
        unit = sample // self.unit_samples
        return f"store {self.path!r}: split {self.split!r} unit {unit} sample {sample}"

    def _read(self, arrays: dict[str, Any], name: str, start: int, stop: int) -> np.ndarray:
        """Samples ``start .. stop - 1`` of one array, checked against their chunk checksums and
        sample digests (:func:`~pipeline.store.digests.read_checked`)."""
        expected = None if self._digests is None else self._digests[start:stop, _READ.index(name)]
        return read_checked(arrays[name], name, start, stop, expected, self._where)


def _single_threaded_decoding() -> None:
    zarr.config.set({"threading.max_workers": 1})
    numcodecs.blosc.set_nthreads(1)


def collate_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``collate_fn`` for :class:`StoreDataset`: ``__getitems__`` already returns the batch ``(X, y)``."""
    X, y = batch
    return X, y


class BlockShuffle:
    """Per-epoch global order: blocks permuted, then samples shuffled within a buffer of blocks.

    Parameters
    ----------
    n : int
        Number of samples.
    block : int
        Samples per block (the store's write unit, a whole number of chunks).
    buffer : int
        Blocks whose samples are shuffled together.
    seed : int
        With the epoch, the only source of randomness.
    """

    def __init__(self, n: int, block: int, buffer: int, seed: int) -> None:
        self.n, self.block, self.buffer, self.seed = n, max(1, block), max(1, buffer), seed

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (a permutation of ``range(n)``)."""
        rng = np.random.default_rng([self.seed, epoch])
        n_blocks = -(-self.n // self.block)
        blocks = rng.permutation(n_blocks)
        out = []
        for start in range(0, n_blocks, self.buffer):
            members = np.concatenate(
                [
                    np.arange(b * self.block, min((b + 1) * self.block, self.n))
                    for b in blocks[start : start + self.buffer]
                ]
            )
            out.append(rng.permutation(members))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class RankBatchSampler(Sampler[list[int]]):
    """This rank's part of each global micro-batch of an epoch, from micro-batch ``start`` on.

    Parameters
    ----------
    order : BlockShuffle
        Gives the epoch's global order.
    micro_batch : int
        Global samples per micro-batch (the same for any number of ranks).
    rank, world : int
        This process and the number of processes.
    """

    def __init__(self, order: BlockShuffle, micro_batch: int, rank: int = 0, world: int = 1) -> None:
        self.source, self.micro_batch, self.rank, self.world = order, micro_batch, rank, world
        self.epoch, self.start, self.offset = 0, 0, 0

    def set_epoch(self, epoch: int, start: int = 0, offset: int = 0) -> None:
        """Iterate epoch ``epoch`` from global micro-batch ``start``, micro-batches being counted from
        sample ``offset`` of the epoch's order (0 unless the micro-batch size changed mid-epoch)."""
        self.epoch, self.start, self.offset = epoch, start, offset

    def batches_per_epoch(self) -> int:
        """Global micro-batches in the epoch from ``offset`` on (the last may be smaller)."""
        return -(-(self.source.n - self.offset) // self.micro_batch)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.source.order(self.epoch)
        for k in range(self.start, self.batches_per_epoch()):
            first = self.offset + k * self.micro_batch
            chunk = order[first : first + self.micro_batch]
            bounds = np.linspace(0, chunk.size, self.world + 1).round().astype(int)
            # sorted: the order inside a batch does not matter, and sorted reads need no reordering
            yield sorted(chunk[bounds[self.rank] : bounds[self.rank + 1]].tolist())
