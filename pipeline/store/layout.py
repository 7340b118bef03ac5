"""The targets' layouts: format 4 stores only the three alternatives of each position, not the reference row.

A window's effects ``[F, 4, L]`` are 0 by definition at the reference base of every position and at
every ``N`` column (a quarter of the values). Format 4 stores ``[F, 3, L]``: at position ``j`` with
reference base ``r``, row ``k`` holds the effect of base :data:`ALTS` ``[r][k]`` (the three other
bases in alphabet order, as the catalogue stores them); at an ``N`` column all three rows are 0.
:func:`expand_targets` rebuilds the ``[F, 4, L]`` tensor exactly (bit for bit: the stored values are
copied, every other entry is +0), on whatever device the tensors are, and :func:`compact_targets`
is its inverse for tensors that are 0 where they must be (:func:`dropped_nonzero` finds those that
are not).
"""

from __future__ import annotations

import numpy as np
import torch

ALTS = ((1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2))
"""``ALTS[r]``: the bases stored in rows 0, 1, 2 of a position whose reference base is ``r`` (alphabet
order ``A, G, C, T``); an ``N`` column uses ``ALTS[0]`` (its values are all 0)."""

STORED_ROWS = {3: 4, 4: 3}
"""Rows per position that a store of each format keeps (formats 1 to 3: all four bases)."""


def reference_index(X: torch.Tensor) -> torch.Tensor:
    """The reference base of each position, ``[B, 1, L]`` int64 (0 at an ``N`` column).

    Parameters
    ----------
    X : torch.Tensor, shape=(B, 4, L)
        One-hot references (any dtype; all-zero columns are ``N``).
    """
    return X.argmax(dim=1).unsqueeze(1)


def expand_targets(y: torch.Tensor, X: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The full effects of stored alternatives: ``[B, F, 3, L] -> [B, F, 4, L]``, +0 at reference bases
    and ``N`` columns (whatever is stored there).

    Base ``b`` of a position with reference ``r`` is stored in row ``b - 1`` when ``r < b`` and in row
    ``b`` when ``r > b`` (:data:`ALTS`): four element-wise selections, no index tensors.

    Parameters
    ----------
    y : torch.Tensor, shape=(B, F, 3, L)
        Stored targets (format 4).
    X : torch.Tensor, shape=(B, 4, L)
        The windows' one-hot references, on ``y``'s device.
    dtype : torch.dtype, optional
        The result's dtype (default ``y``'s): converting here saves a pass over the result.

    Returns
    -------
    y4 : torch.Tensor, shape=(B, F, 4, L)
    """
    B, F, rows, L = y.shape
    if rows != 3:
        raise ValueError(f"expand_targets takes [B, F, 3, L] targets, got shape {tuple(y.shape)}")
    ref = reference_index(X)
    present = X.amax(dim=1, keepdim=True) > 0  # [B, 1, L]: N columns get nothing
    out = torch.empty((B, F, 4, L), dtype=dtype or y.dtype, device=y.device)
    zero = torch.zeros((), dtype=y.dtype, device=y.device)
    out[:, :, 0] = torch.where(present & (ref > 0), y[:, :, 0], zero)
    for b in (1, 2):
        below, above = present & (ref < b), present & (ref > b)
        out[:, :, b] = torch.where(below, y[:, :, b - 1], torch.where(above, y[:, :, b], zero))
    out[:, :, 3] = torch.where(present & (ref < 3), y[:, :, 2], zero)
    return out


def compact_targets(y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """The stored form of full effects: ``[B, F, 4, L] -> [B, F, 3, L]`` (the inverse of
    :func:`expand_targets` for effects that are 0 at reference bases and ``N`` columns: row ``k`` holds
    base ``k`` where the reference is above it, else base ``k + 1``).

    Parameters
    ----------
    y : torch.Tensor, shape=(B, F, 4, L)
    X : torch.Tensor, shape=(B, 4, L)
    """
    B, F, _, L = y.shape
    ref = reference_index(X)
    out = torch.empty((B, F, 3, L), dtype=y.dtype, device=y.device)
    for k in range(3):
        out[:, :, k] = torch.where(ref <= k, y[:, :, k + 1], y[:, :, k])
    return out


def dropped_nonzero(y: np.ndarray, X: np.ndarray) -> int | None:
    """The first sample whose effects are not 0 where format 4 stores nothing (reference bases, ``N``
    columns), else ``None``: compacting it would lose values.

    Parameters
    ----------
    y : np.ndarray, shape=(n, F, 4, L)
    X : np.ndarray, shape=(n, 4, L)
    """
    present = X.sum(axis=1, keepdims=True) > 0  # [n, 1, L]
    dropped = ~(present & (X == 0))  # [n, 4, L]: reference bases and N columns
    bad = ((y != 0) & dropped[:, None]).reshape(len(y), -1).any(axis=1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None
