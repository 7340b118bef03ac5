"""Streaming a store into training: a map-style Dataset and a block-shuffled, rank-aware batch order.

:class:`StoreDataset` opens the store lazily in each process and reads a batch of samples at once:
the references through zarr, the targets straight from their chunks into the caller's buffer
(:class:`~pipeline.store.chunkio.TargetChunks`: no copy between the decoder and the batch), both
checked against their checksums. ``X`` is uint8 and ``y`` is in the store's dtype and layout
(``[n, F, 3, L]`` in format 4, ``[n, F, 4, L]`` before): both are moved to the device as they are,
and expanded and converted there (:mod:`pipeline.train.feed`).

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
from pipeline.store import Store, open_store
from pipeline.store.chunkio import TargetChunks, runs_of
from pipeline.store.digests import DIGESTED, chunks_checked, read_checked, read_targets


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

    Attributes
    ----------
    rows : int
        Rows per position of the stored targets (3 in format 4, 4 before).
    sample_bytes : int
        Bytes of one sample's stored targets (``F · rows · L · itemsize``).
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
        chunks = store.target_chunks(split)
        self.rows, self.format_version = store.rows, store.meta.format_version
        self.unit_samples = store.split_info(split).unit_samples
        self.target_dtype = chunks.dtype
        self.sample_bytes = chunks.sample_bytes
        self.gpu_problem = chunks.gpu_problem() or (
            f"it has format {self.format_version} (`multiplexer store upgrade {self.path}` makes it format 4)"
            if self.format_version < 4
            else None
        )
        digests = store.digests(split)  # read with the completion markers: checked per sample as read
        columns = [DIGESTED.index(a) for a in ("reference", "targets")]
        self._digests = None if digests is None else digests[: self.n, columns].copy()
        self._store: Store | None = None
        self._pid = os.getpid()

    def _open(self) -> Store:
        # opened lazily, once per process: a forked DataLoader worker must not reuse its parent's handles
        if self._store is None or self._pid != os.getpid():
            if torch.utils.data.get_worker_info() is not None:
                _single_threaded_decoding()  # workers are the parallelism: avoid workers × cores threads
            self._store = open_store(self.path)
            self._pid = os.getpid()
        return self._store

    def target_chunks(self) -> TargetChunks:
        """The reader of this split's targets chunks (opened in this process)."""
        return self._open().target_chunks(self.split)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None  # never ship open handles to worker processes
        return state

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = self.__getitems__([index])
        return X[0], y[0]

    def empty(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Buffers for ``n`` samples: ``X`` ``[n, 4, L]`` uint8 and ``y`` ``[n, F, rows, L]``."""
        return (
            np.empty((n, 4, self.seq_len), dtype=np.uint8),
            np.empty((n, self.n_targets, self.rows, self.seq_len), dtype=self.target_dtype),
        )

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Read a batch (any order, repeats allowed).

        Returns
        -------
        X : torch.Tensor, shape=(n, 4, L), uint8
        y : torch.Tensor, shape=(n, F, rows, L), the store's dtype (:attr:`rows`)
        """
        idx = np.asarray(indices, dtype=np.int64)
        uniq, inverse = np.unique(idx, return_inverse=True)
        X, y = self.empty(uniq.size)
        self.read_into(uniq.tolist(), X, y)
        if uniq.size != idx.size or not np.array_equal(uniq, idx):  # unsorted or repeated: reorder
            X, y = X[inverse], y[inverse]
        return torch.from_numpy(X), torch.from_numpy(y)

    def read_into(self, indices: Sequence[int], X: np.ndarray, y: np.ndarray) -> None:
        """Read sorted, distinct samples into ``X`` ``[n, 4, L]`` and ``y`` ``[n, F, rows, L]`` (the
        targets decoded straight into ``y``), checked against their chunk checksums and sample digests.

        Raises
        ------
        IndexError
            An index outside ``0 .. len - 1``.
        UserError
            A damaged chunk or a sample that does not match its digest (naming store, split, unit and
            sample).
        """
        if not len(indices):
            return
        if indices[0] < 0 or indices[-1] >= self.n:
            raise IndexError(f"sample index out of range 0..{self.n - 1}")
        runs = list(runs_of(indices))
        store = self._open()
        self._read_reference(store, runs, indices, X)
        expected = None if self._digests is None else self._digests[np.asarray(indices), 1]
        read_targets(store.target_chunks(self.split), runs, y, expected, self.format_version, self._where)

    def gather_into(self, indices: Sequence[int], X: np.ndarray, buffer: np.ndarray) -> np.ndarray:
        """Read sorted, distinct samples' references into ``X`` and their checked compressed targets
        chunks into ``buffer``, for a device decoder (format 4, one sample per chunk: :attr:`gpu_problem`);
        returns the chunks' table (:meth:`~pipeline.store.chunkio.TargetChunks.gather_into`)."""
        if indices[0] < 0 or indices[-1] >= self.n:
            raise IndexError(f"sample index out of range 0..{self.n - 1}")
        runs = list(runs_of(indices))
        store = self._open()
        self._read_reference(store, runs, indices, X)
        expected = None if self._digests is None else self._digests[np.asarray(indices), 1]
        chunks = store.target_chunks(self.split)
        with chunks_checked(chunks.chunk[0], self._where):
            return chunks.gather_into(runs, buffer, expected)

    def _read_reference(self, store: Store, runs: list[tuple[int, int]], indices: Sequence[int], X: np.ndarray) -> None:
        """The references of ``runs`` into ``X``, from their chunks (a write unit each), checked against
        the chunks' CRC-32C and the samples' digests (the CRC-32 of each decoded sample). A store whose
        references the chunk reader does not take (a codec or chunking no writer of this package made) is
        read through zarr, with the same checks."""
        expected = None if self._digests is None else self._digests[np.asarray(indices), 0]
        try:
            chunks = store.target_chunks(self.split, "reference")
        except ValueError:
            at = 0
            for a, b in runs:
                part = None if expected is None else expected[at : at + b - a]
                X[at : at + b - a] = read_checked(store.array(self.split, "reference"), "reference", a, b, part,
                                                  self._where)  # fmt: skip
                at += b - a
            return
        with chunks_checked(chunks.chunk[0], self._where, "reference"):
            chunks.read_into(runs, X, expected, "decoded")

    def _where(self, sample: int) -> str:
        unit = sample // self.unit_samples
        return f"store {self.path!r}: split {self.split!r} unit {unit} sample {sample}"


def _single_threaded_decoding() -> None:
    zarr.config.set({"threading.max_workers": 1})
    numcodecs.blosc.set_nthreads(1)


def collate_batch(batch: Any) -> Any:
    """``collate_fn`` for :class:`StoreDataset` (and the feed's slots): ``__getitems__`` already returns
    the batch."""
    return batch


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

    def max_rank_batch(self) -> int:
        """The most samples a rank's part of a micro-batch holds."""
        return -(-self.micro_batch // self.world)

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
