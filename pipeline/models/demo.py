"""The demo base model: a small DeepSEA-style CNN built deterministically, no download needed.

``[B, 4, L] -> [B, F]`` probabilities. Its first convolution holds one filter per planted motif of
:data:`pipeline.models.motifs.DEMO_MOTIFS` (+1 for the consensus base, -1 otherwise, a bias that makes an
exact match score 3 and a one-mismatch copy 1) plus weak random filters; a second convolution mixes
motif channels (single motifs and motif pairs); each target reads a few motif channels through a
positional envelope centred near the middle of the window, as trained DeepSEA models do. In-silico
mutagenesis of this model therefore shows the planted motifs, with signs and strengths that differ
between targets.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.core.encoding import ALPHABET
from pipeline.models.motifs import DEMO_MOTIFS, MOTIF_WIDTH


def _flat_length(seq_len: int, kernel2: int) -> int:
    length = (seq_len - MOTIF_WIDTH + 1) // 4
    return (length - kernel2 + 1) // 4


def _fill(layer: nn.Conv1d | nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Copy ``weight`` and ``bias`` into a layer built with a bias."""
    if layer.bias is None:
        raise ValueError(f"{type(layer).__name__} was built without a bias")
    layer.weight.copy_(weight)
    layer.bias.copy_(bias)


class DemoBase(nn.Module):
    """Deterministic demo base model.

    Parameters
    ----------
    seq_len : int
        Input length ``L`` (at least 64).
    n_targets : int
        Number of outputs ``F``.
    channels : int
        Width of both convolutions (at least the number of motifs).
    hidden : int
        Width of the hidden dense layer.
    seed : int
        Seed of every random weight; the same arguments give the same model.
    """

    kernel2 = 5

    def __init__(
        self, seq_len: int = 200, n_targets: int = 16, channels: int = 32, hidden: int = 64, seed: int = 0
    ) -> None:
        super().__init__()
        n_motifs = len(DEMO_MOTIFS)
        if channels < n_motifs:
            raise ValueError(f"DemoBase needs channels >= {n_motifs}, got {channels}")
        positions = _flat_length(seq_len, self.kernel2)
        if seq_len < 64 or positions < 1:
            raise ValueError(f"DemoBase needs seq_len >= 64, got {seq_len}")
        self.seq_len, self.n_targets = seq_len, n_targets
        self.conv1 = nn.Conv1d(4, channels, MOTIF_WIDTH)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool1d(4)
        self.conv2 = nn.Conv1d(channels, channels, self.kernel2)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool1d(4)
        self.flatten = nn.Flatten()
        self.dense1 = nn.Linear(channels * positions, hidden)
        self.act3 = nn.ReLU()
        self.dense2 = nn.Linear(hidden, n_targets)
        self.out = nn.Sigmoid()
        self.target_names = [f"demo_{i:02d}" for i in range(n_targets)]
        with torch.no_grad():
            self._build(torch.Generator().manual_seed(seed), n_motifs, channels, hidden, positions)
        self.eval()

    def _build(self, g: torch.Generator, n_motifs: int, channels: int, hidden: int, positions: int) -> None:
        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g)

        # conv1: motif detectors, then weak random filters
        w1 = 0.15 * randn(channels, 4, MOTIF_WIDTH)
        b1 = torch.full((channels,), -0.6)
        for c, (_, motif) in enumerate(DEMO_MOTIFS):
            w1[c] = 0.0
            for i, base in enumerate(motif):
                w1[c, :, i] = -1.0
                w1[c, ALPHABET.index(base), i] = 1.0
            b1[c] = -(len(motif) - 3.0)
        _fill(self.conv1, w1, b1)

        # conv2: pass-through of each motif channel (smoothed), then motif-pair channels
        w2 = 0.02 * randn(channels, channels, self.kernel2)
        b2 = torch.zeros(channels)
        for c in range(n_motifs):
            w2[c, c] += torch.tensor([0.3, 0.6, 1.0, 0.6, 0.3])
        for c in range(n_motifs, channels):
            i, j = torch.randperm(n_motifs, generator=g)[:2].tolist()
            w2[c, i] += 0.8
            w2[c, j, 1:4] += 0.8
            b2[c] = -3.0
        _fill(self.conv2, w2, b2)

        # dense1: each hidden unit reads 1-3 channels through a Gaussian positional envelope
        grid = torch.arange(positions, dtype=torch.float32)
        w3 = 0.01 * randn(hidden, channels, positions)
        for h in range(hidden):
            mid = (positions - 1) / 2 + 0.15 * positions * randn(1).item()
            width = positions * (0.15 + 0.25 * torch.rand(1, generator=g).item())
            envelope = torch.exp(-0.5 * ((grid - mid) / width) ** 2)
            n_read = 1 + int(torch.randint(3, (1,), generator=g))
            for c in torch.randperm(channels, generator=g)[:n_read].tolist():
                w3[h, c] += (0.4 + 0.6 * torch.rand(1, generator=g).item()) * envelope
        _fill(self.dense1, w3.reshape(hidden, -1), torch.full((hidden,), -0.5))

        # dense2: each target is a signed mix of a few hidden units
        w4 = torch.zeros(self.n_targets, hidden)
        for f in range(self.n_targets):
            picks = torch.randperm(hidden, generator=g)[:4]
            signs = torch.where(torch.rand(4, generator=g) < 0.7, 1.0, -1.0)
            w4[f, picks] = signs * (0.5 + torch.rand(4, generator=g))
        _fill(self.dense2, w4, -1.5 + 0.5 * randn(self.n_targets))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Predict.

        Parameters
        ----------
        X : torch.Tensor, shape=(B, 4, L)
            One-hot sequences in A, G, C, T order.

        Returns
        -------
        y_hat : torch.Tensor, shape=(B, F)
            Probabilities.
        """
        h = self.pool1(self.act1(self.conv1(X)))
        h = self.pool2(self.act2(self.conv2(h)))
        h = self.act3(self.dense1(self.flatten(h)))
        return self.out(self.dense2(h))
