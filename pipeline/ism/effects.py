"""Effect arithmetic: the log-fold target, its exact inverse, and the entries that are 0 by definition.

With ``eps = 1e-6`` (the seed's definition)::

    lf(alt, ref) = log( ((alt + eps) (1 - ref + eps)) / ((1 - alt + eps) (ref + eps)) )
    z            = exp(lf) · (ref + eps) / (1 - ref + eps)
    alt          = (z (1 + eps) - eps) / (1 + z)              (the exact inverse)

Target kinds: ``logfold``, ``diff`` (``alt - ref``) and ``alt`` (the base model's prediction for each
variant). An effect tensor is ``[B, F, 4, L]``; at reference bases and ``N`` (all-zero) columns it is
exactly 0 (:func:`mask_effects`). This module imports nothing else of the package but its errors.
"""

from __future__ import annotations

import torch

from pipeline.errors import check_choice

EPS = 1e-6
"""The seed's epsilon in the log-fold definition."""

TARGETS = ("logfold", "diff", "alt")
"""Effect kinds an ISM engine computes."""


def log_fold(alt: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Log-fold change ``log(((alt + eps)(1 - ref + eps)) / ((1 - alt + eps)(ref + eps)))``.

    Parameters
    ----------
    alt, ref : torch.Tensor
        Probabilities in (0, 1), broadcastable against each other.
    """
    return torch.log(((alt + EPS) * (1 - ref + EPS)) / ((1 - alt + EPS) * (ref + EPS)))


def log_unfold(ref: torch.Tensor, lf: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`log_fold`: the ``alt`` with ``log_fold(alt, ref) == lf``.

    ``alt = (z (1 + eps) - eps) / (1 + z)`` with ``z = exp(lf) (ref + eps) / (1 - ref + eps)``.
    """
    z = torch.exp(lf) * (ref + EPS) / (1 - ref + EPS)
    return (z * (1 + EPS) - EPS) / (1 + z)


def logfold_to_diff(y: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Turn log-fold effects into ``alt - ref`` with the exact inverse :func:`log_unfold`.

    Parameters
    ----------
    y : torch.Tensor, shape=(B, F, 4, L)
        Log-fold effects (e.g. a multiplexer's prediction).
    ref : torch.Tensor, shape=(B, F)
        The base model's prediction on each reference sequence.

    Returns
    -------
    diff : torch.Tensor, shape=(B, F, 4, L), dtype of ``y``
        Computed in float64; entries where ``y`` is exactly 0 (reference bases, ``N`` columns) stay
        exactly 0.
    """
    ref64 = ref.to(device=y.device, dtype=torch.float64)[:, :, None, None]
    diff = log_unfold(ref64, y.double()) - ref64
    return torch.where(y == 0, torch.zeros((), dtype=diff.dtype, device=diff.device), diff).to(y.dtype)


def effects_from_alt(alt: torch.Tensor, ref: torch.Tensor, target: str) -> torch.Tensor:
    """Turn alternative predictions into effects of kind ``target``.

    Parameters
    ----------
    alt : torch.Tensor, shape=(..., F)
        Predictions for variants.
    ref : torch.Tensor, shape=(..., F)
        Reference predictions, broadcastable to ``alt``.
    target : str
        ``logfold``, ``diff`` or ``alt``.
    """
    check_choice("target kind", target, TARGETS)
    if target == "logfold":
        return log_fold(alt, ref)
    if target == "diff":
        return alt - ref
    return alt


def mask_effects(y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Set effects to exactly 0 where they are 0 by definition (reference bases and ``N`` columns).

    Parameters
    ----------
    y : torch.Tensor, shape=(B, F, 4, L)
    X : torch.Tensor, shape=(B, 4, L)
        One-hot inputs.
    """
    present = X.sum(dim=1, keepdim=True) > 0  # [B, 1, L]
    real = present & (X == 0)  # [B, 4, L]
    return torch.where(real.unsqueeze(1), y, torch.zeros((), dtype=y.dtype, device=y.device))


def effects_buffer(ref_pred: torch.Tensor, target: str, seq_len: int) -> torch.Tensor:
    """The ``[B, F, 4, L]`` output before any variant is filled in: 0, or for ``alt`` the reference
    prediction ``ref_pred [B, F]`` (the value at reference bases and ``N`` columns)."""
    fill = ref_pred if target == "alt" else torch.zeros_like(ref_pred)
    B, F = ref_pred.shape
    return fill[:, :, None, None].expand(B, F, 4, seq_len).contiguous()
