"""The single-nucleotide variants of a batch of one-hot sequences, listed and applied.

:func:`variant_index` lists every real variant (never the reference base, never an ``N`` column) in
(sequence, position, base) order; :func:`mutate_batch` builds the mutated sequences of a slice of
that list. Every engine and check that mutates sequences goes through these two.
"""

from __future__ import annotations

import torch


def variant_index(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All real single-nucleotide variants of a batch, in (sequence, position, base) order.

    Parameters
    ----------
    X : torch.Tensor, shape=(B, 4, L)
        One-hot sequences; all-zero columns are ``N``.

    Returns
    -------
    seq, pos, base : torch.Tensor, shape=(V,)
        ``V = sum_i 3 · (L - #N_i)``: every non-reference base at every non-N position.
    """
    _, _, L = X.shape
    present = X.sum(dim=1) > 0  # [B, L]
    alt_mask = (X == 0) & present.unsqueeze(1)  # [B, 4, L]: real alternatives
    seq, base, pos = alt_mask.nonzero(as_tuple=True)
    order = torch.argsort(seq * (4 * L) + pos * 4 + base)
    return seq[order], pos[order], base[order]


def mutate_batch(X: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Sequence ``seq[v]`` of ``X`` with position ``pos[v]`` set to base ``base[v]``, for each ``v``.

    Parameters
    ----------
    X : torch.Tensor, shape=(B, 4, L)
        One-hot sequences.
    seq, pos, base : torch.Tensor, shape=(V,)
        Which sequence, position and new base (long tensors on ``X``'s device).

    Returns
    -------
    Xv : torch.Tensor, shape=(V, 4, L)
        The mutated sequences (a new tensor; ``X`` is unchanged).
    """
    Xv = X[seq].clone()
    rows = torch.arange(seq.numel(), device=X.device)
    Xv[rows, :, pos] = 0
    Xv[rows, base, pos] = 1
    return Xv
