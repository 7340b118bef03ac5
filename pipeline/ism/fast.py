"""Exact incremental ISM: every SNV's base-model prediction without re-running the whole model.

A single-nucleotide change alters only a bounded span of each convolutional layer, so this engine
keeps the reference pass's activations and, for each variant, recomputes only the positions whose
receptive field contains the mutated base, splicing them into the cached reference activations:

* the first convolution's change is a lookup of weight differences ``W[:, alt] - W[:, ref]``;
* every later convolution, elementwise layer and pooling layer (``kernel == stride``) maps a
  fixed-width patch to the next layer's patch (blocks past the last full pooling window, which a
  floor pooling drops, come out as exactly zero change);
* the first Linear after the flatten is a low-rank update, ``ref_out + W[:, patch columns] @ Δ``,
  grouped by patch position so each group is one matrix product;
* the rest of the head (Linear, activations) runs densely on ``[V, hidden]``.

Variants of several sequences are batched together so the device sees large products, and log-fold
targets are computed on the device. The model is read by :func:`pipeline.ism.plan.read_plan`;
:func:`build_plan` also self-checks a few variants against the model, and :func:`get_plan` caches
the result (or the refusal) per model, length and device.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.spec import ISM_BATCH_SIZE
from pipeline.errors import UnsupportedModelError
from pipeline.ism.effects import effects_buffer, effects_from_alt
from pipeline.ism.naive import autocast, model_device, prepare_inputs
from pipeline.ism.plan import BodyStep, ConvStep, LinearStep, Plan, PoolStep, probe_input, read_plan
from pipeline.ism.variants import mutate_batch, variant_index

# ---------------------------------------------------------------------------------------------
# reference pass and variant patches
# ---------------------------------------------------------------------------------------------


def _apply_body(step: BodyStep, x: torch.Tensor) -> torch.Tensor:
    if isinstance(step, ConvStep):
        return F.conv1d(x, step.weight, step.bias, padding=0, dilation=step.dilation, groups=step.groups)
    if isinstance(step, PoolStep):
        return F.max_pool1d(x, step.kernel) if step.kind == "max" else F.avg_pool1d(x, step.kernel)
    return step.fn(x)


def _reference(plan: Plan, X: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Reference activations at the input of every body step, the first conv's output, and the
    first Linear's output (before the head)."""
    acts = []
    x = X
    first_out = X
    for i, step in enumerate(plan.body):
        acts.append(x)
        if isinstance(step, ConvStep):
            right = step.length_out - (x.shape[-1] + step.padding - step.dilation * (step.weight.shape[-1] - 1))
            x = F.pad(x, (step.padding, max(right, 0)))
        x = _apply_body(step, x)
        if i == 0:
            first_out = x
    acts.append(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        flat = x.float().reshape(x.shape[0], -1)
        lin = F.linear(flat, plan.linear.weight, plan.linear.bias)
    return acts, first_out, lin


def _head(plan: Plan, h: torch.Tensor) -> torch.Tensor:
    for step in plan.head:
        h = F.linear(h, step.weight, step.bias) if isinstance(step, LinearStep) else step.fn(h)
    return h


def _gather(act: torch.Tensor, seq: torch.Tensor, start: torch.Tensor, width: int) -> torch.Tensor:
    """``act[seq[v], :, start[v] : start[v] + width]`` with zeros outside ``[0, L)``: ``[V, C, width]``."""
    L = act.shape[-1]
    pos = start[:, None] + torch.arange(width, device=act.device)
    valid = (pos >= 0) & (pos < L)
    out = act[seq[:, None], :, pos.clamp(0, L - 1)]  # [V, width, C]
    return (out * valid[:, :, None].to(out.dtype)).permute(0, 2, 1).contiguous()


def _mask(patch: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    pos = start[:, None] + torch.arange(patch.shape[-1], device=patch.device)
    return patch * ((pos >= 0) & (pos < length)).to(patch.dtype)[:, None, :]


def _variant_alt(
    plan: Plan,
    acts: list[torch.Tensor],
    first_out: torch.Tensor,
    lin: torch.Tensor,
    seq: torch.Tensor,
    pos: torch.Tensor,
    alt: torch.Tensor,
    ref: torch.Tensor,
) -> torch.Tensor:
    """Head input (first Linear output) for each variant ``(seq, pos, alt)`` whose reference base is
    ``ref``: ``[V, F1]``."""
    conv0 = plan.first_conv
    k, d, p = conv0.weight.shape[-1], conv0.dilation, conv0.padding
    start = pos + p - d * (k - 1)
    width = d * (k - 1) + 1
    W = conv0.weight  # [C_out, 4, k]
    delta = W[:, alt, :] - W[:, ref, :]  # [C_out, V, k]
    patch = torch.zeros(pos.shape[0], W.shape[0], width, device=W.device, dtype=W.dtype)
    taps = d * (k - 1 - torch.arange(k, device=W.device))
    patch[:, :, taps] = delta.permute(1, 0, 2)
    patch = _mask(patch + _gather(first_out, seq, start, width), start, conv0.length_out)
    for i, step in enumerate(plan.body[1:], start=1):
        if isinstance(step, ConvStep):
            span = step.dilation * (step.weight.shape[-1] - 1)
            ctx = _gather(acts[i], seq, start - span, width + 2 * span)
            ctx[:, :, span : span + width] = patch
            patch = F.conv1d(ctx, step.weight, step.bias, dilation=step.dilation, groups=step.groups)
            start, width = start + step.padding - span, width + span
            patch = _mask(patch, start, step.length_out)
        elif isinstance(step, PoolStep):
            kk = step.kernel
            new_start = torch.div(start, kk, rounding_mode="floor")
            new_width = (width + kk - 2) // kk + 1
            ctx = _gather(acts[i], seq, new_start * kk, new_width * kk)
            offset = start - new_start * kk
            index = (offset[:, None] + torch.arange(width, device=ctx.device))[:, None, :].expand(-1, ctx.shape[1], -1)
            ctx.scatter_(2, index, patch.to(ctx.dtype))
            patch = F.max_pool1d(ctx, kk) if step.kind == "max" else F.avg_pool1d(ctx, kk)
            start, width = new_start, new_width
            patch = _mask(patch, start, step.length_out)
        else:
            length = acts[i].shape[-1]
            patch = _mask(step.fn(patch), start, length)
    # first Linear as a low-rank update over the patch's columns
    L_last = plan.flat_length
    # in float32 also under bf16 autocast: the targets are differences of nearby values
    delta = patch.float() - _gather(acts[-1], seq, start, width).float()  # [V, C, w], 0 outside [0, L_last)
    win = min(width, L_last)
    aligned = start.clamp(0, L_last - win)
    shift = aligned - start  # window position t holds patch t + shift
    idx = shift[:, None] + torch.arange(win, device=delta.device)
    ok = (idx >= 0) & (idx < width)
    delta = torch.gather(delta, 2, idx.clamp(0, width - 1)[:, None, :].expand(-1, delta.shape[1], -1))
    delta = (delta * ok[:, None, :].to(delta.dtype)).permute(0, 2, 1).reshape(pos.shape[0], -1)  # [V, win*C]
    Wwin = plan.window_weight()  # [L_last, C, F1]
    out = lin[seq].clone()
    order = torch.argsort(aligned, stable=True)
    starts, counts = torch.unique_consecutive(aligned[order], return_counts=True)
    done = 0
    with torch.autocast(device_type=out.device.type, enabled=False):
        for a, n in zip(starts.tolist(), counts.tolist()):
            rows = order[done : done + n]
            out[rows] += delta[rows] @ Wwin[a : a + win].reshape(-1, Wwin.shape[-1])
            done += n
    return out


def _self_check(model: nn.Module, plan: Plan, X: torch.Tensor) -> None:
    """Compare the plan with the model on the probe: reference output and a few variants."""
    with torch.no_grad():
        acts, first_out, lin = _reference(plan, X)
        expected = model(X)
        got = _head(plan, lin)
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise UnsupportedModelError(
                "fast ISM self-check failed: the layers read from the model do not reproduce its output"
            )
        L = X.shape[-1]
        positions = torch.tensor(sorted({0, 1, L // 2, L - 2, L - 1}), device=X.device)
        seq = torch.zeros_like(positions)
        ref = X[0, :, positions].argmax(0)
        alt = (ref + 1) % 4
        alt_out = _head(plan, _variant_alt(plan, acts, first_out, lin, seq, positions, alt, ref))
        direct = model(mutate_batch(X, seq, positions, alt))
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
    X = probe_input(seq_len, model_device(model, device))
    plan = read_plan(model, seq_len, X)
    if check:
        _self_check(model, plan, X)
    return plan


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
        Variants per batch (across sequences).
    device : str or torch.device, optional
        Defaults to the model's device.
    progress : callable, optional
        Called with the number of variants finished after each batch.
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
    L = X.shape[-1]
    plan = get_plan(model, L, dev)
    with autocast(dev, precision):
        acts, first_out, lin = _reference(plan, X)
    ref_pred = _head(plan, lin)  # [B, F], float32
    y = effects_buffer(ref_pred, target, L)
    seq, pos, base = variant_index(X)
    ref_base = X[seq, :, pos].argmax(dim=1)
    for start in range(0, seq.numel(), batch_size):
        sl = slice(start, start + batch_size)
        s, p, b = seq[sl], pos[sl], base[sl]
        with autocast(dev, precision):
            h = _variant_alt(plan, acts, first_out, lin, s, p, b, ref_base[sl])
        alt = _head(plan, h)
        y[s, :, b, p] = effects_from_alt(alt, ref_pred[s], target)
        if progress is not None:
            progress(s.numel())
    return y.to(out_dtype).cpu(), ref_pred.float().cpu()
