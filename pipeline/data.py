"""Reading a store for training: a map-style ``Dataset`` and a resumable, seeded batch order.

:class:`StoreDataset` opens the Zarr store lazily (inside each DataLoader worker), serves
``(X, y)`` with ``X: [4, L]`` float32 one-hot and ``y: [F, 4, L]`` in the store's dtype (float16 by
default; upcast on the device), and reads a whole batch in one call (``__getitems__``).
:class:`EpochBatchSampler` yields batches of a per-epoch seeded permutation and can start in the
middle of an epoch, which is what exact resume needs.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.store import open_store


class StoreDataset(Dataset):
    """One split of a store as ``(X, y)`` pairs.

    Parameters
    ----------
    path : str
        Store path or URL.
    split : str
        ``train``, ``valid`` or ``test``.
    limit : int, optional
        Use only the first ``limit`` samples.
    """

    def __init__(self, path: str, split: str, limit: int | None = None) -> None:
        store = open_store(path)
        store.require_complete(split)
        self.path, self.split = str(path), split
        n = store.split_info(split).n_samples
        self.n = n if limit is None else min(n, int(limit))
        self.seq_len, self.n_targets = store.seq_len, store.n_targets
        self._arrays: dict[str, Any] | None = None

    def _open(self) -> dict[str, Any]:
        if self._arrays is None:  # opened lazily so each worker process has its own handles
            store = open_store(self.path)
            self._arrays = {name: store.array(self.split, name) for name in ("reference", "targets")}
        return self._arrays

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Read several samples with one orthogonal selection per array (chunks fetched together)."""
        arrays = self._open()
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"sample index out of range 0..{self.n - 1}")
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        X = arrays["reference"].get_orthogonal_selection((sorted_idx,))
        y = arrays["targets"].get_orthogonal_selection((sorted_idx,))
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        X, y = X[inverse], y[inverse]
        return [
            (torch.from_numpy(X[i].astype(np.float32)), torch.from_numpy(np.ascontiguousarray(y[i])))
            for i in range(idx.size)
        ]


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of a seeded permutation of ``range(n)``, starting at batch ``start`` of ``epoch``.

    Epoch ``e``'s order is ``torch.randperm(n)`` under a generator seeded with ``(seed, e)``, so it is
    the same in every run and after a resume. The last partial batch is kept.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int = 0, start: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.epoch, self.start = n, batch_size, seed, epoch, start

    def order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(self.epoch))
        return torch.randperm(self.n, generator=g)

    def __len__(self) -> int:
        return max(0, -(-self.n // self.batch_size) - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order().tolist()
        for b in range(self.start, -(-self.n // self.batch_size)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]
