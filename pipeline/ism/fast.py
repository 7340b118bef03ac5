"""Exact incremental ISM: every SNV's base-model prediction without re-running the whole model.

A single-nucleotide change alters only a bounded window of each layer, so this engine keeps the
reference pass's activations and, for each variant, propagates only the *change* through the layers
(:mod:`pipeline.ism.geometry` computes, once per plan, where that window lies at every layer):

* the first convolution's change is a lookup of weight differences ``W[:, alt] - W[:, ref]``;
* every later convolution is linear, so its change is the convolution of the input change alone (no
  bias, no reference context): one matrix product ``[V·w, C_in] @ [C_in, k·C_out]`` over the columns
  that changed, then an overlap-add of the ``k`` shifted slices;
* a run of elementwise and pooling layers (``kernel == stride``) maps ``ref + change`` gathered from
  the cached reference activations (one gather per run) and subtracts the cached reference output;
  columns outside a layer (the padding, or what a floor pooling drops) have no change;
* the first Linear after the flatten is a low-rank update, ``ref_out + W[:, window columns] @ change``,
  one in-place product per run of positions whose window starts at the same column;
* the rest of the head (Linear, activations) runs densely on ``[V, hidden]``.

Variants are processed position-major: a chunk is a range of positions of a group of windows with the
three alternatives of each, so every index is precomputed per position, a chunk is a slice, and the
host never waits for the device inside the loop (no ``.item()``, no data-dependent shapes). Log-fold
targets are computed on the device. The model is read by :func:`pipeline.ism.plan.read_plan`;
:func:`build_plan` also self-checks a few variants against the model, and :func:`get_plan` caches
the result (or the refusal) per model, length and device.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from pipeline.core.spec import ISM_BATCH_SIZE
from pipeline.errors import UnsupportedModelError
from pipeline.ism._common import autocast, model_device, prepare_inputs
from pipeline.ism.effects import effects_from_alt
from pipeline.ism.geometry import ConvSegment, Geometry, MapSegment, Window, build_geometry
from pipeline.ism.plan import BodyStep, ConvStep, LinearStep, Plan, PoolStep, probe_input, read_plan
from pipeline.ism.variants import mutate_batch

# ---------------------------------------------------------------------------------------------
# reference pass
# ---------------------------------------------------------------------------------------------


def _apply_body(step: BodyStep, x: torch.Tensor) -> torch.Tensor:
    if isinstance(step, ConvStep):
        return F.conv1d(x, step.weight, step.bias, padding=0, dilation=step.dilation, groups=step.groups)
    if isinstance(step, PoolStep):
        return F.max_pool1d(x, step.kernel) if step.kind == "max" else F.avg_pool1d(x, step.kernel)
    return step.fn(x)


def _reference(plan: Plan, X: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Reference activations at the input of every body step (and the body's output), and the first
    Linear's output (before the head), ``[B, F1]`` in float32."""
    acts = []
    x = X
    for step in plan.body:
        acts.append(x)
        if isinstance(step, ConvStep):
            right = step.length_out - (x.shape[-1] + step.padding - step.dilation * (step.weight.shape[-1] - 1))
            x = F.pad(x, (step.padding, max(right, 0)))
        x = _apply_body(step, x)
    acts.append(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        flat = x.float().reshape(x.shape[0], -1)
        lin = F.linear(flat, plan.linear.weight, plan.linear.bias)
    return acts, lin


def _head(plan: Plan, h: torch.Tensor) -> torch.Tensor:
    for step in plan.head:
        h = F.linear(h, step.weight, step.bias) if isinstance(step, LinearStep) else step.fn(h)
    return h


@dataclass
class _Batch:
    """What the chunks of one call share: the reference activations the runs of elementwise and
    pooling layers gather from (channels last, zero-padded: ``[B, Lp, C]``), the first Linear's
    reference output ``lin [B, F1]``, the reference prediction
    ``ref_pred [B, F]``, and per position and window ``code [L, B, 3]`` (``alt · 4 + ref``), ``alt
    [L, B, 3]`` and ``invalid [L, B]`` (an ``N`` column, or a change that reaches no column)."""

    padded: dict[int, torch.Tensor]
    lin: torch.Tensor
    ref_pred: torch.Tensor
    code: torch.Tensor
    alt: torch.Tensor
    invalid: torch.Tensor


def _prepare(plan: Plan, geometry: Geometry, X: torch.Tensor, precision: str) -> _Batch:
    """The reference pass of ``X [B, 4, L]`` and the per-call tables."""
    with autocast(X.device, precision):
        acts, lin = _reference(plan, X)
    padded = {
        act: F.pad(acts[act], (left, right)).transpose(1, 2).contiguous()  # [B, Lp, C]
        for act, (left, right) in geometry.pads.items()
    }
    ref = X.argmax(dim=1)  # [B, L]; 0 at N columns (masked through invalid)
    other = geometry.other_bases[ref]  # [B, L, 3]
    invalid = (X.sum(dim=1) == 0) | geometry.dead_mask[None, :]
    return _Batch(
        padded=padded,
        lin=lin,
        ref_pred=_head(plan, lin),
        code=(other * 4 + ref[..., None]).transpose(0, 1).contiguous(),
        alt=other.transpose(0, 1).contiguous(),
        invalid=invalid.T.contiguous(),
    )


@dataclass
class _Group:
    """A group of windows processed together: ``rows``, a slice of the call's windows."""

    rows: slice

    @property
    def size(self) -> int:
        return int(self.rows.stop - self.rows.start)


@dataclass
class _Chunk:
    """Positions processed together: ``positions`` on the host, ``rows`` (a slice, or the positions as
    a tensor on the device) to select them from per-position tables."""

    positions: np.ndarray
    rows: slice | torch.Tensor

    @property
    def size(self) -> int:
        return int(self.positions.size)

    def take(self, table: torch.Tensor) -> torch.Tensor:
        """The chunk's rows of a per-position table."""
        return table[self.rows] if isinstance(self.rows, slice) else table.index_select(0, self.rows)


# ---------------------------------------------------------------------------------------------
# a chunk's changes, layer by layer
# ---------------------------------------------------------------------------------------------


def _mask(change: torch.Tensor, window: Window, chunk: _Chunk) -> torch.Tensor:
    """Zero the change outside the layer (only for chunks with a position at an edge)."""
    if window.mask is None or not window.edge[chunk.positions].any():
        return change
    mask = chunk.take(window.mask).view(chunk.size, 1, 1, window.width, 1)
    return change * mask.to(change.dtype)


def _conv(seg: ConvSegment, change: torch.Tensor, chunk: _Chunk) -> torch.Tensor:
    """The change after a convolution: ``[P, Bg, 3, w, C_in] -> [P, Bg, 3, w + span, C_out]``."""
    P, Bg, A, w, C = change.shape
    V, k, d, span = P * Bg * A, seg.kernel, seg.step.dilation, seg.span
    if seg.product is not None:
        Y = (change.reshape(V * w, C) @ seg.product).view(V, w, k, -1)
        out = Y.new_zeros(V, w + span, Y.shape[-1])
        for u in range(k):
            out[:, d * u : d * u + w].add_(Y[:, :, u])
    else:
        x = change.reshape(V, w, C).transpose(1, 2)
        out = F.conv1d(x, seg.step.weight, padding=span, dilation=d, groups=seg.step.groups).transpose(1, 2)
    return _mask(out.reshape(P, Bg, A, w + span, -1), seg.out, chunk)


def _gather(batch: _Batch, group: _Group, chunk: _Chunk, act: int, columns: torch.Tensor | None) -> torch.Tensor:
    """Reference activation ``act`` around each position's window: ``[P, Bg, 1, w, C]`` (a view)."""
    assert columns is not None
    cols = chunk.take(columns)  # [P, w]
    P, w = cols.shape
    ref = batch.padded[act][group.rows].index_select(1, cols.reshape(-1))  # [Bg, P w, C]
    return ref.view(group.size, P, w, -1).transpose(0, 1).unsqueeze(2)


def _map(seg: MapSegment, change: torch.Tensor, batch: _Batch, group: _Group, chunk: _Chunk) -> torch.Tensor:
    """The change after a run of elementwise and pooling layers."""
    P, Bg, A, w, C = change.shape
    ref_in = _gather(batch, group, chunk, seg.first, seg.columns_in)
    width = seg.context.width
    if seg.place is not None:  # the change inside the pooling blocks it touches
        padded = F.pad(change, (0, 0, seg.block - 1, width - w))
        index = chunk.take(seg.place).view(P, 1, 1, width, 1).expand(P, Bg, A, width, C)
        change = torch.gather(padded, 3, index)
    x = (change + ref_in).reshape(P * Bg * A, width, C)  # change first: the sum is laid out like it
    for step in seg.steps:
        if isinstance(step, PoolStep):
            x = x.reshape(x.shape[0], -1, step.kernel, C)
            x = x.amax(dim=2) if step.kind == "max" else x.mean(dim=2)
        else:
            x = step.fn(x.transpose(1, 2)).transpose(1, 2)
    ref_out = _gather(batch, group, chunk, seg.last, seg.columns_out)
    out = x.reshape(P, Bg, A, seg.out.width, C) - ref_out
    return _mask(out, seg.out, chunk)


def _change(geometry: Geometry, batch: _Batch, group: _Group, chunk: _Chunk) -> torch.Tensor:
    """The change at the flattened layer for every variant of the chunk: ``[P, Bg, 3, w, C]``."""
    first = geometry.first
    with record_function("ism.first_conv"):
        code = chunk.take(batch.code)[:, group.rows]  # [P, Bg, 3]
        change = first.table.index_select(0, code.reshape(-1))
        change = _mask(change.view(chunk.size, group.size, 3, first.out.width, -1), first.out, chunk)
    for seg in geometry.segments:
        if isinstance(seg, ConvSegment):
            with record_function("ism.conv"):
                change = _conv(seg, change, chunk)
        else:
            with record_function("ism.map"):
                change = _map(seg, change, batch, group, chunk)
    return change


def _linear(
    plan: Plan, geometry: Geometry, batch: _Batch, group: _Group, chunk: _Chunk, change: torch.Tensor
) -> torch.Tensor:
    """The first Linear's output for every variant: ``lin + W[:, window] @ change``, ``[V, F1]``."""
    P, Bg, A, w, C = change.shape
    V = P * Bg * A
    W = plan.window_weight()  # [L_last, C, F1]
    with torch.autocast(device_type=change.device.type, enabled=False):
        delta = change.float().reshape(V, w, C)
        out = batch.lin[group.rows].view(1, Bg, 1, -1).expand(P, Bg, A, -1).contiguous().view(V, -1)
        for r0, r1, c0, c1, start in geometry.linear_runs(chunk.positions, Bg * A):
            lhs = delta[r0:r1, c0 - start : c1 - start].reshape(r1 - r0, -1)
            out[r0:r1].addmm_(lhs, W[c0:c1].reshape(-1, W.shape[-1]))
    return out


def _chunk_alt(
    plan: Plan, geometry: Geometry, batch: _Batch, group: _Group, chunk: _Chunk, precision: str
) -> torch.Tensor:
    """The base model's prediction for every variant of the chunk: ``[P, Bg, 3, F]``, float32."""
    with autocast(batch.lin.device, precision):
        change = _change(geometry, batch, group, chunk)
    with record_function("ism.linear"):
        h = _linear(plan, geometry, batch, group, chunk, change)
    with record_function("ism.head"):
        alt = _head(plan, h)
    return alt.view(chunk.size, group.size, 3, -1)


def _self_check(model: nn.Module, plan: Plan, geometry: Geometry, X: torch.Tensor) -> None:
    """Compare the plan with the model on the probe: reference output and a few variants."""
    with torch.no_grad():
        batch = _prepare(plan, geometry, X, "float32")
        expected = model(X)
        got = batch.ref_pred
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise UnsupportedModelError(
                "fast ISM self-check failed: the layers read from the model do not reproduce its output"
            )
        L = X.shape[-1]
        positions = np.array(sorted({0, 1, L // 2, L - 2, L - 1}))
        rows = torch.from_numpy(positions).to(X.device)
        group = _Group(slice(0, 1))
        alt_out = _chunk_alt(plan, geometry, batch, group, _Chunk(positions, rows), "float32").reshape(
            -1, got.shape[-1]
        )
        bases = batch.alt.index_select(0, rows)[:, 0].reshape(-1)
        direct = model(mutate_batch(X, torch.zeros_like(bases), rows.repeat_interleave(3), bases))
        if not torch.allclose(alt_out, direct, rtol=1e-4, atol=1e-5):
            err = (alt_out - direct).abs().max().item()
            raise UnsupportedModelError(f"fast ISM self-check failed on probe variants (max error {err:.2e})")


# ---------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------


def build_plan(model: nn.Module, seq_len: int, *, device: torch.device | None = None, check: bool = True) -> Plan:
    """Read ``model`` into a :class:`~pipeline.ism.plan.Plan` for the fast engine.

    Parameters
    ----------
    model : nn.Module
        Base model in eval mode, ``[B, 4, L] -> [B, F]``.
    seq_len : int
        ``L``.
    device : torch.device, optional
        Where the probe runs (the model's device by default).
    check : bool
        Self-check a few variants against the model itself.

    Raises
    ------
    UnsupportedModelError
        Naming the first layer (or the step of ``forward``) the engine cannot follow, or when the
        self-check fails.
    """
    dev = model_device(model, device)
    X = probe_input(seq_len, dev)
    plan = read_plan(model, seq_len, X)
    if check:
        _self_check(model, plan, geometry_of(plan, dev), X)
    return plan


def geometry_of(plan: Plan, device: torch.device) -> Geometry:
    """The plan's :class:`~pipeline.ism.geometry.Geometry` on ``device`` (built once, kept on the plan)."""
    key = f"geometry:{device}"
    if key not in plan.engine_cache:
        plan.engine_cache[key] = build_geometry(plan, plan.seq_len, device)
    geometry = plan.engine_cache[key]
    assert isinstance(geometry, Geometry)
    return geometry


_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, str], Plan | UnsupportedModelError]] = (
    weakref.WeakKeyDictionary()
)


def get_plan(model: nn.Module, seq_len: int, device: torch.device) -> Plan:
    """:func:`build_plan`, cached per model, length and device (a refusal is cached too)."""
    per_model = _PLANS.setdefault(model, {})
    key = (seq_len, str(device))
    if key not in per_model:
        try:
            per_model[key] = build_plan(model, seq_len, device=device)
        except UnsupportedModelError as exc:
            per_model[key] = exc
    plan = per_model[key]
    if isinstance(plan, UnsupportedModelError):
        raise plan
    return plan


def supports(model: nn.Module, seq_len: int, device: torch.device | None = None) -> str | None:
    """``None`` when the fast engine can run ``model``, else the reason it cannot."""
    try:
        get_plan(model, seq_len, model_device(model, device))
    except UnsupportedModelError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# engine
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def fast_ism(
    model: nn.Module,
    X: torch.Tensor,
    *,
    target: str = "logfold",
    batch_size: int = ISM_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "float32",
    out_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ISM with incremental computation; same contract as :func:`pipeline.ism.naive.naive_ism`.

    Parameters
    ----------
    model : nn.Module
        Base model ``[n, 4, L] -> [n, F]`` built from supported layers (see module docstring).
    X : torch.Tensor, shape=(B, 4, L)
        One-hot sequences; all-zero columns are ``N``.
    target : str
        ``logfold``, ``diff`` or ``alt``.
    batch_size : int
        Variants per chunk: the three alternatives at each of ``batch_size // (3 Bg)`` positions of
        ``Bg = min(B, batch_size // 3)`` windows (on a GPU, larger chunks mean larger products).
    device : str or torch.device, optional
        Defaults to the model's device.
    progress : callable, optional
        Called with the number of variants finished after each chunk.
    precision : str
        ``float32`` or ``bf16`` (convolution trunk under bfloat16 autocast; the first Linear's
        update, the head and the targets in float32).
    out_dtype : torch.dtype
        dtype of the returned effects (cast on the device).

    Returns
    -------
    y : torch.Tensor, shape=(B, F, 4, L), ``out_dtype``, CPU
    ref_pred : torch.Tensor, shape=(B, F), float32, CPU
        The plan's own reference output (equal to ``model(X)`` up to rounding), so a variant that
        changes nothing has exactly zero effect.
    """
    dev, X = prepare_inputs(model, X, target, batch_size, device)
    present = (X.sum(dim=1) > 0).cpu().numpy()  # [B, L], for the progress counts (before the loop)
    B, _, L = X.shape
    plan = get_plan(model, L, dev)
    geometry = geometry_of(plan, dev)
    with record_function("ism.reference"):
        batch = _prepare(plan, geometry, X, precision)
        ref_pred = batch.ref_pred  # [B, F], float32
        n_targets = ref_pred.shape[-1]
        # the effects, position-major so that a chunk's rows are contiguous: [L, B, 4, F]
        fill = ref_pred if target == "alt" else torch.zeros_like(ref_pred)
        buffer = fill[None, :, None, :].expand(L, B, 4, n_targets).contiguous()
    per_group = min(B, max(1, batch_size // 3))
    per_chunk = max(1, min(L, batch_size // (3 * per_group)))
    for b0 in range(0, B, per_group):
        group = _Group(slice(b0, min(B, b0 + per_group)))
        for p0 in range(0, L, per_chunk):
            rows = slice(p0, min(L, p0 + per_chunk))
            chunk = _Chunk(np.arange(rows.start, rows.stop), rows)
            alt = _chunk_alt(plan, geometry, batch, group, chunk, precision)
            with record_function("ism.effects"):
                _write_effects(buffer, batch, group, chunk, alt, target)
            if progress is not None:
                progress(3 * int(present[group.rows, rows].sum()))
    with record_function("ism.output"):
        y = torch.empty((B, n_targets, 4, L), dtype=out_dtype, device=dev)
        y.copy_(buffer.permute(1, 3, 2, 0))
        return y.cpu(), ref_pred.float().cpu()


def _write_effects(
    buffer: torch.Tensor, batch: _Batch, group: _Group, chunk: _Chunk, alt: torch.Tensor, target: str
) -> None:
    """Effects of the chunk's variants from their predictions ``alt [P, Bg, 3, F]`` into ``buffer``
    (``[L, B, 4, F]``); ``N`` columns and changes that reach no column get the fill value."""
    ref = batch.ref_pred[group.rows][None, :, None, :]
    effects = effects_from_alt(alt, ref, target)
    fill = ref if target == "alt" else torch.zeros((), dtype=effects.dtype, device=effects.device)
    invalid = chunk.take(batch.invalid)[:, group.rows]  # [P, Bg]
    effects = torch.where(invalid[:, :, None, None], fill, effects)
    bases = chunk.take(batch.alt)[:, group.rows, :, None].expand_as(effects)
    buffer[chunk.rows, group.rows].scatter_(2, bases, effects)
