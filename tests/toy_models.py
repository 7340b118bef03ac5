"""Tiny deterministic base models for the tests (``[B, 4, L] -> [B, F]`` probabilities)."""

from __future__ import annotations

import torch
from torch import nn


class TinyConvNet(nn.Module):
    """A small DeepSEA-like base model: Conv1d + ReLU + MaxPool + Linear + Sigmoid.

    Parameters
    ----------
    seq_len : int
        Input length ``L``.
    n_targets : int
        Number of outputs ``F``.
    channels : int
        Convolution width.
    kernel_size : int
        Convolution kernel.
    seed : int
        Seed of every weight; the same arguments give the same model.
    """

    def __init__(self, seq_len: int = 24, n_targets: int = 3, channels: int = 6, kernel_size: int = 5, seed: int = 0):
        super().__init__()
        self.seq_len, self.n_targets = seq_len, n_targets
        self.conv = nn.Conv1d(4, channels, kernel_size)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool1d(2)
        self.flatten = nn.Flatten()
        self.dense = nn.Linear(channels * ((seq_len - kernel_size + 1) // 2), n_targets)
        self.out = nn.Sigmoid()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        self.eval()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` one-hot -> ``[B, F]`` probabilities."""
        return self.out(self.dense(self.flatten(self.pool(self.act(self.conv(X))))))


class CountingModel(nn.Module):
    """Wraps a base model and records how many sequences went through ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_sequences = 0
        self.batch_sizes: list[int] = []

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        self.n_sequences += int(X.shape[0])
        self.batch_sizes.append(int(X.shape[0]))
        return self.model(X)


class PositionDetector(nn.Module):
    """A base model whose output ``target`` depends only on whether position ``position`` is ``base``.

    Every other output is a constant 0.5, so the only nonzero variant effect of a sequence whose
    ``position`` is not ``base`` lies at ``[target, base, position]``.
    """

    def __init__(self, seq_len: int = 24, n_targets: int = 3, position: int = 5, base: int = 2, target: int = 1):
        super().__init__()
        self.seq_len, self.n_targets = seq_len, n_targets
        self.position, self.base, self.target = position, base, target
        self.register_buffer("scale", torch.tensor(3.0))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` -> ``[B, F]``."""
        out = torch.full((X.shape[0], self.n_targets), 0.5, dtype=X.dtype, device=X.device)
        out[:, self.target] = torch.sigmoid(self.scale * X[:, self.base, self.position] - 1.0)
        return out
