"""Accuracy of predicted effects against the base model's: streaming (weighted) Pearson, MSE, nanmean.

:func:`weighted_pearson` is the published comparison's metric: for each target ``f``, the Pearson
correlation over all samples, bases and positions (flattened) of ``y_true[:, f]`` and
``y_pred[:, f]``, each term weighted by ``|y_true|``. :class:`PearsonAccumulator` computes it (and the
unweighted Pearson and the MSE) in one streaming pass from float64 sums, so a held-out split never
has to fit in memory, and :meth:`PearsonAccumulator.all_reduce` adds the sums of every rank of a
``torchrun`` job.
"""

from __future__ import annotations

import torch

from pipeline.core.runtime import Launch, all_reduce_sum


class PearsonAccumulator:
    """Streaming per-target weighted and unweighted Pearson correlation and MSE (float64 sums).

    Parameters
    ----------
    n_targets : int
        ``F``.
    """

    def __init__(self, n_targets: int) -> None:
        self.n_targets = n_targets
        self.w = torch.zeros(2, 6, n_targets, dtype=torch.float64)  # [weighted?, moment, F]
        self.sq_err = torch.zeros(n_targets, dtype=torch.float64)
        self.count = 0

    @torch.no_grad()
    def update(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
        """Add a batch.

        Parameters
        ----------
        y_true, y_pred : torch.Tensor, shape=(B, F, 4, L)
        """
        if y_true.shape != y_pred.shape or y_true.ndim < 2 or y_true.shape[1] != self.n_targets:
            raise ValueError(f"shapes {list(y_true.shape)} and {list(y_pred.shape)} do not match F={self.n_targets}")
        a = y_true.transpose(0, 1).reshape(self.n_targets, -1).double().cpu()
        b = y_pred.transpose(0, 1).reshape(self.n_targets, -1).double().cpu()
        for k, w in enumerate((torch.ones_like(a), a.abs())):
            self.w[k] += torch.stack(
                [w.sum(1), (w * a).sum(1), (w * b).sum(1), (w * a * a).sum(1), (w * b * b).sum(1), (w * a * b).sum(1)]
            )
        self.sq_err += ((a - b) ** 2).sum(1)
        self.count += a.shape[1]

    def all_reduce(self, launch: Launch) -> PearsonAccumulator:
        """Sum the statistics of every rank into each rank's accumulator (a no-op for one process)."""
        if launch.active:
            all_reduce_sum(self.w, launch)
            all_reduce_sum(self.sq_err, launch)
            count = all_reduce_sum(torch.tensor([self.count], dtype=torch.float64), launch)
            self.count = int(count.item())
        return self

    def _pearson(self, k: int) -> torch.Tensor:
        sw, sa, sb, saa, sbb, sab = self.w[k]
        cov = sab / sw - (sa / sw) * (sb / sw)
        va = saa / sw - (sa / sw) ** 2
        vb = sbb / sw - (sb / sw) ** 2
        return cov / torch.sqrt(va.clamp_min(0) * vb.clamp_min(0))

    def weighted_pearson(self) -> torch.Tensor:
        """``[F]`` weighted Pearson (NaN for a target whose effects are all 0)."""
        return self._pearson(1)

    def pearson(self) -> torch.Tensor:
        """``[F]`` unweighted Pearson."""
        return self._pearson(0)

    def mse(self) -> torch.Tensor:
        """``[F]`` mean squared error."""
        return self.sq_err / max(self.count, 1)


def weighted_pearson(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Per-target Pearson correlation weighted by ``|y_true|``.

    Parameters
    ----------
    y_true : torch.Tensor, shape=(N, F, 4, L)
        Base-model effects (the reference).
    y_pred : torch.Tensor, shape=(N, F, 4, L)
        Multiplexer effects.

    Returns
    -------
    r : torch.Tensor, shape=(F,), float64
    """
    acc = PearsonAccumulator(y_true.shape[1])
    acc.update(y_true, y_pred)
    return acc.weighted_pearson()


def nanmean(values: torch.Tensor) -> float:
    """Mean over the finite entries (targets without any effect give NaN correlations)."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")
