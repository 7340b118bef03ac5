"""Multiplexer networks: ``[B, 4, L] -> [B, F, 4, L]``, the effect of every SNV in one pass.

:class:`ConvMultiplexer` is the published BelugaMultiplexer's architecture with its widths, kernel,
dilations, ``F`` and ``L`` as arguments; :class:`BelugaMultiplexer` fixes them to the published
values (L = 2000, F = 2002, widths 640/1280, dilations 4/16/64/16/4) and keeps the published module
names ``model_one`` … ``model_six``, ``model_final``, so ``BelugaMultiplexerWeights.pth`` loads
unchanged. The positional channel is built inside the model, on the input's device and dtype.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import torch
from torch import nn


def positional_ramp(
    seq_len: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The 5th input channel: a ramp rising 0 → 1 at the middle then falling back.

    ``ramp[i] = 1 - |i - L//2| / (L//2)``; for L = 2000 exactly ``0.000, 0.001, …, 1.000, 0.999, …,
    0.001`` (computed in float64, then cast).

    Returns
    -------
    ramp : torch.Tensor, shape=(L,)
    """
    half = seq_len // 2
    i = torch.arange(seq_len, dtype=torch.float64)
    ramp = 1.0 - (i - half).abs() / half
    return ramp.to(device=device, dtype=dtype or torch.float32)


def with_ramp(X: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The model input: ``X`` (``[B, 4, L]``, checked against ``seq_len``) and the :func:`positional_ramp`
    as a 5th channel, ``[B, 5, L]``."""
    B, _, L = X.shape
    if L != seq_len:
        raise ValueError(f"this multiplexer takes sequences of length {seq_len}, got {L}")
    ramp = positional_ramp(L, device=X.device, dtype=X.dtype)
    return torch.cat([X, ramp.expand(B, 1, L)], dim=1)


def as_layout(x: torch.Tensor, layout_2d: bool) -> torch.Tensor:
    """``x`` (``[B, C, L]``) as is, or with ``layout_2d`` as ``[B, C, 1, L]`` in channels-last memory, the
    layout the inference rewrite (:func:`pipeline.models.inference.optimize_for_inference`) runs in."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last) if layout_2d else x


def from_layout(out: torch.Tensor, layout_2d: bool) -> torch.Tensor:
    """The network's output back as a contiguous ``[B, C, L]`` from :func:`as_layout`'s layout."""
    return out.squeeze(2).contiguous() if layout_2d else out


def _positive(name: str, value: Any) -> int:
    """``value`` as an ``int`` when it is a whole number >= 1, else a :class:`ValueError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _pair(c_in: int, c_out: int, kernel: int, dilation: int, pads: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=pads[0]),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
        nn.Conv1d(c_out, c_out, kernel, dilation=dilation, padding=pads[1]),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
    )


class ConvMultiplexer(nn.Module):
    """Dilated residual CNN multiplexer (the BelugaMultiplexer architecture, configurable).

    Forward: ``x1 = one(x)``, ``x2 = two(x1)``, ``x3 = three(x2)``, ``x5 = five(four(x3))``,
    ``x6 = six(x3 + x5)``, ``out = final(x2 + x6)`` reshaped to ``[B, F, 4, L]``.

    Parameters
    ----------
    seq_len : int
        Input length ``L``.
    n_targets : int
        Number of base-model targets ``F``.
    width1 : int
        Channels of ``model_one``.
    width2 : int
        Channels of ``model_two`` … ``model_six``.
    kernel_size : int
        Kernel of every non-final convolution.
    dilations : sequence of 5 int
        Dilations of ``model_two`` … ``model_six``; ``dilation · (kernel_size - 1)`` must be even.
    """

    layout_2d = False
    """Whether the layers are the 2-D channels-last ones of the inference rewrite (not a setting: see
    :func:`pipeline.models.inference.optimize_for_inference`)."""

    def __init__(
        self,
        seq_len: int,
        n_targets: int,
        width1: int = 64,
        width2: int = 64,
        kernel_size: int = 8,
        dilations: tuple[int, int, int, int, int] | list[int] = (4, 16, 64, 16, 4),
    ) -> None:
        super().__init__()
        width1, width2 = _positive("width1", width1), _positive("width2", width2)
        kernel_size, n_targets = _positive("kernel_size", kernel_size), _positive("n_targets", n_targets)
        if isinstance(dilations, (str, bytes)) or not hasattr(dilations, "__len__"):
            raise ValueError(f"dilations must be a list of 5 whole numbers, got {dilations!r}")
        dils = tuple(_positive("dilations entry", d) for d in dilations)
        if len(dils) != 5:
            raise ValueError(f"dilations must have 5 entries (model_two … model_six), got {len(dils)}")
        for d in dils:
            if d * (kernel_size - 1) % 2:
                raise ValueError(
                    f"dilation {d} with kernel_size {kernel_size} cannot keep the length "
                    "(dilation · (kernel_size - 1) must be even)"
                )
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.seq_len, self.n_targets = seq_len, n_targets
        self.config = {
            "seq_len": seq_len,
            "n_targets": n_targets,
            "width1": width1,
            "width2": width2,
            "kernel_size": kernel_size,
            "dilations": list(dils),
        }
        k = kernel_size
        first = (k - 1) // 2
        self.model_one = _pair(5, width1, k, 1, (first, k - 1 - first))

        def same(d: int) -> tuple[int, int]:
            return (d * (k - 1) // 2,) * 2

        d2, d3, d4, d5, d6 = dils
        self.model_two = _pair(width1, width2, k, d2, same(d2))
        self.model_three = _pair(width2, width2, k, d3, same(d3))
        self.model_four = _pair(width2, width2, k, d4, same(d4))
        self.model_five = _pair(width2, width2, k, d5, same(d5))
        self.model_six = _pair(width2, width2, k, d6, same(d6))
        self.model_final = nn.Sequential(
            nn.Conv1d(width2, 4 * n_targets, 1),
            nn.BatchNorm1d(4 * n_targets),
            nn.ReLU(),
            nn.Conv1d(4 * n_targets, 4 * n_targets, 1),
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Predict all variant effects.

        Parameters
        ----------
        X : torch.Tensor, shape=(B, 4, L)
            One-hot sequences in A, G, C, T order.

        Returns
        -------
        y_hat : torch.Tensor, shape=(B, F, 4, L)
            ``y_hat[i, f, b, j]``: predicted effect on target ``f`` of setting position ``j`` to ``b``.
        """
        B, _, L = X.shape
        out = self.trunk(as_layout(with_ramp(X, self.seq_len), self.layout_2d))
        return from_layout(out, self.layout_2d).reshape(B, self.n_targets, 4, L)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The network between the input (with its ramp) and the reshape.

        Parameters
        ----------
        x : torch.Tensor, shape=(B, 5, L), or (B, 5, 1, L) channels-last (:attr:`layout_2d`)

        Returns
        -------
        out : torch.Tensor, shape=(B, 4F, L), or (B, 4F, 1, L)
        """
        x2 = self.model_two(self.model_one(x))
        x3 = self.model_three(x2)
        x5 = self.model_five(self.model_four(x3))
        x6 = self.model_six(x3 + x5)
        return self.model_final(x2 + x6)


class BelugaMultiplexer(ConvMultiplexer):
    """The published BelugaMultiplexer (L = 2000, F = 2002; about 202 M parameters)."""

    def __init__(self, seq_len: int = 2000, n_targets: int = 2002) -> None:
        super().__init__(seq_len, n_targets, width1=640, width2=1280, kernel_size=8, dilations=(4, 16, 64, 16, 4))


class _SeparableBlock(nn.Module):
    """A residual block: depthwise dilated convolution, then a pointwise (1x1) mix, each with BN + ReLU."""

    conv_bn_pairs = (("depthwise", "bn1"), ("pointwise", "bn2"))
    """Each batch norm and the convolution whose output is its only input (folded for inference)."""

    def __init__(self, width: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.depthwise = nn.Conv1d(width, width, kernel_size, dilation=dilation, padding=pad, groups=width)
        self.bn1 = nn.BatchNorm1d(width)
        self.pointwise = nn.Conv1d(width, width, 1)
        self.bn2 = nn.BatchNorm1d(width)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, L]`` -> ``[B, C, L]``."""
        y = self.act(self.bn1(self.depthwise(x)))
        return x + self.act(self.bn2(self.pointwise(y)))


class FastMultiplexer(nn.Module):
    """A multiplexer built for speed: depthwise-separable dilated residual blocks and a low-rank head.

    The published architecture spends most of its time in full dilated convolutions and in a head of
    two 1x1 convolutions ``C -> 4F -> 4F`` at every position (8,008 x 8,008 for Beluga). Here each block
    is a depthwise dilated convolution (``k`` multiply-adds per channel and position) followed by a 1x1
    mix, and the head goes through ``rank`` channels: ``width -> rank -> 4F``, so its cost grows with
    ``rank · 4F`` instead of ``(4F)^2``.

    Forward: ``x = stem([X, ramp])``, ``x = block_i(x)`` for each dilation, ``out = head(x)``, reshaped
    to ``[B, F, 4, L]``.

    Parameters
    ----------
    seq_len : int
        Input length ``L``.
    n_targets : int
        Number of base-model targets ``F``.
    width : int
        Channels of the stem and blocks.
    kernel_size : int
        Kernel of the stem and of every depthwise convolution (odd).
    dilations : sequence of int
        One residual block per entry; the receptive field is ``1 + (k - 1)(1 + sum(dilations))``.
    rank : int
        Channels between the trunk and the ``4F`` outputs.
    """

    layout_2d = False
    """As :attr:`ConvMultiplexer.layout_2d`."""

    def __init__(
        self,
        seq_len: int,
        n_targets: int,
        width: int = 64,
        kernel_size: int = 9,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4, 8, 16),
        rank: int = 64,
    ) -> None:
        super().__init__()
        width, rank = _positive("width", width), _positive("rank", rank)
        kernel_size, n_targets = _positive("kernel_size", kernel_size), _positive("n_targets", n_targets)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (to keep the length), got {kernel_size}")
        if isinstance(dilations, (str, bytes)) or not hasattr(dilations, "__len__") or not dilations:
            raise ValueError(f"dilations must be a non-empty list of whole numbers, got {dilations!r}")
        dils = [_positive("dilations entry", d) for d in dilations]
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.seq_len, self.n_targets = seq_len, n_targets
        self.config = {"seq_len": seq_len, "n_targets": n_targets, "width": width, "kernel_size": kernel_size,
                       "dilations": dils, "rank": rank}  # fmt: skip
        self.stem = nn.Sequential(
            nn.Conv1d(5, width, kernel_size, padding=kernel_size // 2), nn.BatchNorm1d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(_SeparableBlock(width, kernel_size, d) for d in dils))
        self.head = nn.Sequential(
            nn.Conv1d(width, rank, 1), nn.BatchNorm1d(rank), nn.ReLU(), nn.Conv1d(rank, 4 * n_targets, 1)
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Predict all variant effects.

        Parameters
        ----------
        X : torch.Tensor, shape=(B, 4, L)
            One-hot sequences in A, G, C, T order.

        Returns
        -------
        y_hat : torch.Tensor, shape=(B, F, 4, L)
        """
        B, _, L = X.shape
        out = self.head(self.blocks(self.stem(as_layout(with_ramp(X, self.seq_len), self.layout_2d))))
        return from_layout(out, self.layout_2d).reshape(B, self.n_targets, 4, L)


class LightConvMultiplexer(ConvMultiplexer):
    """The ``conv`` architecture made light for speed: widths 32 (the demo's ``conv`` uses 64), so each
    full convolution costs a quarter; the same dilated residual layout and head. Every argument of
    :class:`ConvMultiplexer` can still be given."""

    def __init__(
        self,
        seq_len: int,
        n_targets: int,
        width1: int = 32,
        width2: int = 32,
        kernel_size: int = 8,
        dilations: tuple[int, int, int, int, int] | list[int] = (2, 4, 8, 4, 2),
    ) -> None:
        super().__init__(seq_len, n_targets, width1, width2, kernel_size, dilations)
