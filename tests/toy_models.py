"""Tiny deterministic base models for the tests (``[B, 4, L] -> [B, F]`` probabilities)."""

from __future__ import annotations

import torch
from torch import nn


def seed_parameters(module: nn.Module, seed: int, scale: float) -> None:
    """Set every parameter of ``module`` to ``scale`` times standard normal draws from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))


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
        seed_parameters(self, seed, 0.5)
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


class ExactMultiplexer(nn.Module):
    """A "multiplexer" that is exact: its forward runs naive ISM with the demo base model.

    Built from the same arguments as the base model (``seq_len``, ``n_targets``, ``channels``,
    ``hidden``), so a checkpoint can record it with the base model's identity; its output is the base
    model's log-fold effects ``[B, F, 4, L]`` (0 at reference bases and ``N`` columns).
    """

    def __init__(self, seq_len: int = 80, n_targets: int = 4, channels: int = 12, hidden: int = 8) -> None:
        super().__init__()
        from pipeline.models import build_base

        self.seq_len, self.n_targets = seq_len, n_targets
        self.base = build_base("demo", seq_len=seq_len, n_targets=n_targets, channels=channels, hidden=hidden)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` -> log-fold effects ``[B, F, 4, L]``."""
        from pipeline.ism import naive_ism

        y, _ = naive_ism(self.base, X, target="logfold", device=X.device)
        return y.to(X.device)


class DefaultInitNet(nn.Module):
    """A base model left at torch's default (random) initialisation: rebuilding it needs the seed."""

    def __init__(self, seq_len: int = 24, n_targets: int = 3) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.dense = nn.Linear(4 * seq_len, n_targets)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` -> ``[B, F]`` probabilities."""
        return torch.sigmoid(self.dense(X.flatten(1)))


class StrandMultiplexer(nn.Module):
    """A toy multiplexer ``[B, 4, L] -> [B, F, 4, L]``: one convolution ``h``, strand-symmetric or not.

    With ``symmetric`` its output is ``h(X) + rc(h(rc(X)))`` (``rc`` flips the base and position axes,
    the reverse complement in the ``A, G, C, T`` alphabet), so scoring the reverse-complemented window
    and reading it back gives exactly the forward scores. Without, it is ``h(X)``.
    """

    def __init__(self, seq_len: int = 80, n_targets: int = 4, symmetric: bool = True, seed: int = 1) -> None:
        super().__init__()
        self.seq_len, self.n_targets, self.symmetric = seq_len, n_targets, symmetric
        self.h = nn.Conv1d(4, 4 * n_targets, 9, padding=4)
        seed_parameters(self.h, seed, 0.5)
        self.eval()

    def _h(self, X: torch.Tensor) -> torch.Tensor:
        return self.h(X).reshape(X.shape[0], self.n_targets, 4, X.shape[-1])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` -> ``[B, F, 4, L]``."""
        y = self._h(X)
        if self.symmetric:
            y = y + self._h(X.flip((-2, -1))).flip((-2, -1))
        return y


class CentreBase(nn.Module):
    """A base model whose every output is ``sigmoid(scale · [base at index L//2 - 1 is `base`] - 1)``.

    The exact centred score of a variant is then known by construction: ``log_fold(sigmoid(scale - 1),
    sigmoid(-1))`` for an ALT equal to ``base`` (REF another base), its negative for the reverse, else 0.
    """

    def __init__(self, seq_len: int = 80, n_targets: int = 4, base: int = 2, scale: float = 3.0) -> None:
        super().__init__()
        self.seq_len, self.n_targets, self.base, self.scale = seq_len, n_targets, base, scale

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` -> ``[B, F]``."""
        hit = X[:, self.base, self.seq_len // 2 - 1]
        return torch.sigmoid(self.scale * hit - 1.0)[:, None].expand(-1, self.n_targets).contiguous()


class SymmetricBase(nn.Module):
    """A strand-symmetric base model: ``sigmoid(g(X) + g(rc(X)))`` for a small convolutional ``g``."""

    def __init__(self, seq_len: int = 80, n_targets: int = 4, seed: int = 2) -> None:
        super().__init__()
        self.seq_len, self.n_targets = seq_len, n_targets
        self.conv = nn.Conv1d(4, 6, 7)
        self.dense = nn.Linear(6 * (seq_len - 6), n_targets)
        seed_parameters(self, seed, 0.3)
        self.eval()

    def _g(self, X: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.relu(self.conv(X)).flatten(1))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` -> ``[B, F]``."""
        return torch.sigmoid(self._g(X) + self._g(X.flip((-2, -1))))


class CountingDemo(nn.Module):
    """The demo base model, counting the sequences it scores in the class attribute :attr:`seen`
    (every ISM variant and reference window of a distill run in this process)."""

    seen = 0

    def __init__(self, seq_len: int = 80, n_targets: int = 4, channels: int = 12, hidden: int = 8) -> None:
        super().__init__()
        from pipeline.models import build_base

        self.seq_len, self.n_targets = seq_len, n_targets
        self.inner = build_base("demo", seq_len=seq_len, n_targets=n_targets, channels=channels, hidden=hidden)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` -> ``[B, F]``."""
        type(self).seen += int(X.shape[0])
        return self.inner(X)
