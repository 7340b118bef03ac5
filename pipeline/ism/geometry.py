"""Where a variant's change lies at every layer of a plan: the fast ISM engine's static layout.

A single-nucleotide change at input position ``p`` can alter a layer's activation only in a window
``[start(p), start(p) + width)`` of that layer. The windows depend on the position alone (never on the
sequence or the base), so they are computed once per plan and sequence length, on the host, together
with every index table the engine needs on the device:

* the first convolution's change, a lookup table over ``(alt, ref)``;
* for each convolution after it, the product weight that turns an input change into an output change;
* for each run of elementwise and pooling layers between convolutions, the gather indices of the
  cached reference activations around each position's window, and (with pooling) where the change
  sits inside the pooling blocks;
* masks for the positions whose window crosses a layer's edge, and the positions whose change falls
  entirely outside some layer (their effect is exactly zero);
* for the first Linear, the runs of positions whose last window starts at the same column.

The engine processes variants position-major (all windows and all three alternatives of one position
next to each other), so every index here is per position and a chunk of positions is a slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.ism.plan import ConvStep, Plan, PointwiseStep, PoolStep

OTHER_BASES = ((1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2))
"""The three alternative bases of each reference base, in base order (the order of a variant list)."""


@dataclass
class Window:
    """The windows of one layer: ``start [L]`` (per input position), ``width``, and the layer's length."""

    start: np.ndarray
    width: int
    length: int
    edge: np.ndarray = field(init=False)  # [L] bool: the window leaves [0, length)
    empty: np.ndarray = field(init=False)  # [L] bool: the window misses [0, length) entirely
    mask: torch.Tensor | None = None  # [L, width] float, 1 inside [0, length); only when some edge

    def __post_init__(self) -> None:
        self.edge = (self.start < 0) | (self.start + self.width > self.length)
        self.empty = (self.start + self.width <= 0) | (self.start >= self.length)

    def with_mask(self, device: torch.device) -> Window:
        """Build :attr:`mask` on ``device`` when some position's window crosses an edge."""
        if self.edge.any():
            cols = self.start[:, None] + np.arange(self.width)
            inside = (cols >= 0) & (cols < self.length)
            self.mask = torch.from_numpy(inside.astype(np.float32)).to(device)
        return self


@dataclass
class FirstConv:
    """The first convolution: ``table [16, width, C]`` holds ``W[:, alt, t] - W[:, ref, t]`` placed at
    the output column ``d (k - 1 - t)`` of the window, for ``alt * 4 + ref``."""

    table: torch.Tensor
    out: Window


@dataclass
class ConvSegment:
    """A convolution after the first. Its change is the full correlation of the input change with the
    weight (no bias): one product ``[V w, C_in] @ product [C_in, k C_out]`` and an overlap-add of the
    ``k`` shifted slices. ``product`` is ``None`` for grouped convolutions (they run as a convolution)."""

    step: ConvStep
    product: torch.Tensor | None
    width_in: int
    out: Window

    @property
    def kernel(self) -> int:
        """``k``."""
        return int(self.step.weight.shape[-1])

    @property
    def span(self) -> int:
        """``d (k - 1)``: how much wider the output window is."""
        return self.step.dilation * (self.kernel - 1)


@dataclass
class MapSegment:
    """A run of elementwise and pooling layers (body steps ``first .. last - 1``).

    ``new = steps(ref_in[context] + change placed in the context)`` and the output change is
    ``new - ref_out[out]``. With pooling (``block`` = product of the kernels > 1) the context is the
    pooling blocks the change touches, and ``place [L, context width]`` indexes the change padded by
    ``block - 1`` columns on the left (``None`` without pooling: the change is the context)."""

    steps: list[PointwiseStep | PoolStep]
    first: int
    last: int
    block: int
    width_in: int
    context: Window
    place: torch.Tensor | None
    out: Window
    columns_in: torch.Tensor | None = None  # [L, context width]: columns of the padded input activation
    columns_out: torch.Tensor | None = None  # [L, out width]: columns of the padded output activation


Segment = ConvSegment | MapSegment


@dataclass
class Geometry:
    """Everything the engine precomputes for a plan and a sequence length (see the module docstring)."""

    seq_len: int
    first: FirstConv
    segments: list[Segment]
    last: Window
    pads: dict[int, tuple[int, int]]  # activation index -> zero columns (left, right) for the gathers
    dead: np.ndarray  # [L] bool: the change leaves every column of some layer (exactly zero effect)
    dead_mask: torch.Tensor  # dead, on the device
    other_bases: torch.Tensor  # [4, 3] long: OTHER_BASES on the device

    def linear_runs(self, positions: np.ndarray, rows_per_position: int) -> list[tuple[int, int, int, int, int]]:
        """The first Linear's update for consecutive variants of ``positions`` (chunk order):
        ``(row0, row1, col0, col1, start)`` for each run of positions whose last window starts at the
        same column ``start``; the update is ``change[rows, col0 - start : col1 - start] @ W[col0 : col1]``.
        Runs whose window misses the layer are left out."""
        start = self.last.start[positions]
        cuts = np.flatnonzero(np.diff(start)) + 1
        bounds = np.concatenate(([0], cuts, [positions.size]))
        runs = []
        for i0, i1 in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            s = int(start[i0])
            col0, col1 = max(s, 0), min(s + self.last.width, self.last.length)
            if col1 > col0:
                runs.append((i0 * rows_per_position, i1 * rows_per_position, col0, col1, s))
        return runs


def _first_conv(plan: Plan, seq_len: int, device: torch.device) -> FirstConv:
    conv = plan.first_conv
    W = conv.weight  # [C, 4, k]
    k, d = W.shape[-1], conv.dilation
    width = d * (k - 1) + 1
    table = torch.zeros(4, 4, width, W.shape[0], device=W.device, dtype=W.dtype)
    for t in range(k):
        column = W[:, :, t]  # [C, 4]
        table[:, :, d * (k - 1 - t), :] = (column.T[:, None, :] - column.T[None, :, :]).to(table.dtype)
    start = np.arange(seq_len) + conv.padding - d * (k - 1)
    return FirstConv(table.reshape(16, width, -1).contiguous(), Window(start, width, conv.length_out).with_mask(device))


def _product_weight(step: ConvStep) -> torch.Tensor | None:
    """``W [C_out, C_in, k]`` as ``[C_in, k C_out]`` with the taps reversed (``None`` for groups > 1)."""
    if step.groups != 1:
        return None
    W = step.weight
    return W.flip(-1).permute(1, 2, 0).reshape(W.shape[1], -1).contiguous()


def _map_segment(
    plan: Plan, first: int, start: np.ndarray, width: int, length: int, device: torch.device
) -> MapSegment:
    """The run of non-convolution steps from body step ``first``, its input windows ``start``/``width``
    in a layer of ``length``."""
    steps: list[PointwiseStep | PoolStep] = []
    block, out_length, last = 1, length, first
    while last < len(plan.body) and not isinstance(plan.body[last], ConvStep):
        step = plan.body[last]
        assert isinstance(step, (PointwiseStep, PoolStep))
        steps.append(step)
        if isinstance(step, PoolStep):
            block *= step.kernel
            out_length = step.length_out
        last += 1
    out_start = np.floor_divide(start, block)
    out_width = (width + block - 2) // block + 1 if block > 1 else width
    context = Window(out_start * block, out_width * block, length)
    place = None
    if block > 1:
        offset = start - out_start * block  # in [0, block)
        place = torch.from_numpy(np.arange(out_width * block)[None, :] - offset[:, None] + block - 1).to(device)
    out = Window(out_start, out_width, out_length).with_mask(device)
    return MapSegment(steps, first, last, block, width, context, place, out)


def build_geometry(plan: Plan, seq_len: int, device: torch.device) -> Geometry:
    """Compute a plan's :class:`Geometry` for sequences of ``seq_len`` on ``device``."""
    first = _first_conv(plan, seq_len, device)
    start, width, length = first.out.start, first.out.width, first.out.length
    dead = first.out.empty.copy()
    segments: list[Segment] = []
    i = 1
    while i < len(plan.body):
        step = plan.body[i]
        if isinstance(step, ConvStep):
            span = step.dilation * (step.weight.shape[-1] - 1)
            out = Window(start + step.padding - span, width + span, step.length_out).with_mask(device)
            segments.append(ConvSegment(step, _product_weight(step), width, out))
            i += 1
        else:
            segment = _map_segment(plan, i, start, width, length, device)
            segments.append(segment)
            out = segment.out
            i = segment.last
        start, width, length = out.start, out.width, out.length
        dead |= out.empty
    last = Window(start, width, length)
    if length != plan.flat_length:
        raise ValueError(f"the plan's flattened length {plan.flat_length} differs from its layers' ({length})")
    dead |= last.empty
    pads: dict[int, tuple[int, int]] = {}
    for seg in segments:
        if isinstance(seg, MapSegment):
            for act, win in ((seg.first, seg.context), (seg.last, seg.out)):
                lo = max(0, -int(win.start.min()))
                hi = max(0, int(win.start.max()) + win.width - win.length)
                old = pads.get(act, (0, 0))
                pads[act] = (max(old[0], lo), max(old[1], hi))
    for seg in segments:
        if isinstance(seg, MapSegment):
            seg.columns_in = _columns(seg.context, pads[seg.first][0], device)
            seg.columns_out = _columns(seg.out, pads[seg.last][0], device)
    other = torch.tensor(OTHER_BASES, device=device)
    return Geometry(seq_len, first, segments, last, pads, dead, torch.from_numpy(dead).to(device), other)


def _columns(window: Window, left: int, device: torch.device) -> torch.Tensor:
    """``[L, width]``: the columns of each position's window in an activation padded by ``left``."""
    return torch.from_numpy(window.start[:, None] + left + np.arange(window.width)).to(device)
