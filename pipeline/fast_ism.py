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
targets are computed on the device. Supported modules: Conv1d/Conv2d with the kernel along the
sequence (stride 1, zero padding, dilation, groups), elementwise activations, BatchNorm (eval),
Dropout (eval), Identity, max/avg pooling with ``kernel == stride``, Flatten (or a reshape in
``forward``) and Linear. :func:`build_plan` reads the model by running it once with hooks on its
leaf modules, checks that they form a chain, and self-checks a few variants against the model; a
model it cannot follow raises :class:`UnsupportedModelError` naming the layer.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError

ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.LogSigmoid,
    nn.Tanhshrink,
    nn.Threshold,
)
"""Modules applied position by position."""

IDENTITY_LIKE = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
"""Modules that are the identity in eval mode."""

RESHAPES = (nn.Flatten, nn.Unflatten)


class UnsupportedModelError(UserError):
    """The fast engine cannot follow this model; the message names the layer and why."""


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------


@dataclass
class _Conv:
    name: str
    weight: torch.Tensor  # [C_out, C_in / groups, k]
    bias: torch.Tensor | None
    dilation: int
    padding: int  # left padding (zeros)
    groups: int
    length_out: int = 0


@dataclass
class _Pool:
    name: str
    kind: str  # "max" | "avg"
    kernel: int
    length_out: int = 0


@dataclass
class _Pointwise:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Linear:
    name: str
    weight: torch.Tensor  # [out, in]
    bias: torch.Tensor | None


@dataclass
class Plan:
    """A model read as ``conv section -> flatten -> first Linear -> dense head``."""

    seq_len: int
    body: list = field(default_factory=list)  # _Conv | _Pool | _Pointwise on [N, C, L]
    first_linear: _Linear | None = None
    head: list = field(default_factory=list)  # _Linear | _Pointwise on [N, H]
    flat_channels: int = 0
    flat_length: int = 0
    _window_weight: torch.Tensor | None = None  # first Linear's weight as [L_last, C, F1]

    def describe(self) -> str:
        names = [s.name for s in self.body] + [self.first_linear.name] + [s.name for s in self.head]
        return " -> ".join(names)

    def to(self, device: torch.device) -> Plan:
        """Move every weight to ``device`` (the plan is rebuilt per device, so in place is fine)."""
        for step in [*self.body, self.first_linear, *self.head]:
            for attr in ("weight", "bias"):
                value = getattr(step, attr, None)
                if isinstance(value, torch.Tensor):
                    setattr(step, attr, value.to(device))
            if isinstance(step, _Pointwise) and isinstance(step.fn, nn.Module):
                step.fn.to(device)
        self._window_weight = None
        return self

    def window_weight(self) -> torch.Tensor:
        """The first Linear's weight arranged ``[L_last, C, F1]`` so a window of positions is one
        contiguous ``[w * C, F1]`` matrix."""
        if self._window_weight is None:
            W = self.first_linear.weight
            self._window_weight = (
                W.reshape(W.shape[0], self.flat_channels, self.flat_length).permute(2, 1, 0).contiguous()
            )
        return self._window_weight


def _int1(value: int | tuple[int, ...], what: str, name: str) -> int:
    if isinstance(value, int):
        return value
    if len(value) == 1:
        return int(value[0])
    if len(value) == 2 and value[0] in (0, 1) and what in ("padding", "stride", "dilation", "kernel"):
        if what == "padding" and value[0] != 0:
            raise UnsupportedModelError(f"layer {name}: padding {value} pads the singleton axis")
        return int(value[1])
    raise UnsupportedModelError(f"layer {name}: {what} {value} is not along the sequence axis only")


def _conv_step(name: str, m: nn.Module) -> _Conv:
    if m.padding_mode != "zeros":
        raise UnsupportedModelError(
            f"layer {name} ({type(m).__name__}): padding_mode {m.padding_mode!r}; only zero padding"
        )
    weight = m.weight.detach()
    if isinstance(m, nn.Conv2d):
        if weight.shape[2] != 1:
            raise UnsupportedModelError(f"layer {name} (Conv2d): kernel {tuple(m.kernel_size)} spans more than one row")
        weight = weight[:, :, 0, :]
        kernel_axis = (1, weight.shape[-1])
    else:
        kernel_axis = m.kernel_size
    _int1(kernel_axis, "kernel", name)
    if _int1(m.stride, "stride", name) != 1:
        raise UnsupportedModelError(f"layer {name} ({type(m).__name__}): stride {m.stride}; only stride 1")
    dilation = _int1(m.dilation, "dilation", name)
    k = weight.shape[-1]
    if isinstance(m.padding, str):
        padding = 0 if m.padding == "valid" else dilation * (k - 1) // 2
    else:
        padding = _int1(m.padding, "padding", name)
    bias = m.bias.detach() if m.bias is not None else None
    return _Conv(name, weight, bias, dilation, padding, m.groups)


def _pool_step(name: str, m: nn.Module) -> _Pool:
    kind = "max" if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) else "avg"
    kernel = _int1(m.kernel_size, "kernel", name)
    stride = _int1(m.stride if m.stride is not None else m.kernel_size, "stride", name)
    padding = _int1(m.padding, "padding", name)
    if kernel != stride or padding != 0 or getattr(m, "ceil_mode", False):
        raise UnsupportedModelError(
            f"layer {name} ({type(m).__name__}): only pooling with kernel == stride, no padding, floor mode"
        )
    if kind == "max" and _int1(m.dilation, "dilation", name) != 1:
        raise UnsupportedModelError(f"layer {name} ({type(m).__name__}): dilated pooling")
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) and m.return_indices:
        raise UnsupportedModelError(f"layer {name}: pooling that returns indices")
    return _Pool(name, kind, kernel)


def _batchnorm_fn(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    return fn


def _same_data(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.numel() == b.numel() and torch.equal(a.reshape(-1), b.reshape(-1))


def _record_calls(
    model: nn.Module, X: torch.Tensor
) -> tuple[list[tuple[str, nn.Module, torch.Tensor | None, torch.Tensor | None]], torch.Tensor]:
    """Run ``model(X)`` with hooks on its leaf modules; returns their calls in order and the output."""
    calls: list[tuple[str, nn.Module, torch.Tensor | None, torch.Tensor | None]] = []

    def hook(mod: nn.Module, args: tuple, out: object, name: str) -> None:
        if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            calls.append((name, mod, args[0].detach(), out.detach()))
        else:
            calls.append((name, mod, None, None))

    handles = [
        module.register_forward_hook(lambda mod, args, out, name=name: hook(mod, args, out, name))
        for name, module in model.named_modules()
        if next(module.children(), None) is None
    ]
    try:
        with torch.no_grad():
            out = model(X)
    finally:
        for h in handles:
            h.remove()
    return calls, out


def build_plan(model: nn.Module, seq_len: int, *, device: torch.device | None = None, check: bool = True) -> Plan:
    """Read ``model`` into a :class:`Plan` for the fast engine.

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
        Naming the first layer (or the step of ``forward``) the engine cannot follow.
    """
    if model.training:
        raise UnsupportedModelError("the model is in training mode; call model.eval() first")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 4, (2, seq_len), generator=g)
    X = F.one_hot(codes, 4).permute(0, 2, 1).float().contiguous()
    X[1, :, seq_len // 3] = 0.0  # an N column
    X = X.to(device)
    calls, out = _record_calls(model, X)
    if not calls:
        raise UnsupportedModelError(f"{type(model).__name__} has no layers the fast engine can read")
    seen: set[int] = set()
    plan = Plan(seq_len=seq_len)
    previous, previous_label = X, "the input"
    flat = False
    for name, module, inp, outp in calls:
        label = f"{name} ({type(module).__name__})"
        if id(module) in seen:
            raise UnsupportedModelError(f"layer {label} is applied twice in forward")
        seen.add(id(module))
        if inp is None:
            raise UnsupportedModelError(f"layer {label} does not map one tensor to one tensor")
        if not _same_data(inp, previous):
            raise UnsupportedModelError(
                f"the model's forward changes the data between {previous_label} and {label} "
                "(operations outside modules, such as torch.relu or x * 2, are not supported)"
            )
        if inp.ndim == 2 and previous.ndim > 2:
            flat = True  # a view/reshape in forward flattened it
        reshape_like = not isinstance(module, ELEMENTWISE + IDENTITY_LIKE) and not list(module.parameters())
        if isinstance(module, RESHAPES) or (reshape_like and _same_data(inp, outp)):
            if outp.ndim == 2 and inp.ndim > 2:
                flat = True
            previous, previous_label = outp, label
            continue
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            if flat:
                raise UnsupportedModelError(f"layer {label} comes after the flatten")
            step = _conv_step(name, module)
            if not plan.body and step.groups != 1:
                raise UnsupportedModelError(f"layer {label}: the first convolution must have groups=1")
            step.length_out = outp.shape[-1]
            plan.body.append(step)
        elif isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
            if flat:
                raise UnsupportedModelError(f"layer {label} comes after the flatten")
            step = _pool_step(name, module)
            step.length_out = outp.shape[-1]
            plan.body.append(step)
        elif isinstance(module, IDENTITY_LIKE):
            pass  # dropout is the identity in eval mode
        elif isinstance(module, ELEMENTWISE):
            if not plan.body:
                raise UnsupportedModelError(f"layer {label} comes before the first convolution")
            (plan.head if plan.first_linear is not None else plan.body).append(_Pointwise(name, module))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if flat and plan.first_linear is None:
                raise UnsupportedModelError(f"layer {label} normalises the flattened features")
            if not plan.body:
                raise UnsupportedModelError(f"layer {label} comes before the first convolution")
            target = plan.head if plan.first_linear is not None else plan.body
            target.append(_Pointwise(name, _batchnorm_fn(module)))
        elif isinstance(module, nn.Linear):
            step = _Linear(name, module.weight.detach(), module.bias.detach() if module.bias is not None else None)
            if plan.first_linear is None:
                if not flat or inp.ndim != 2:
                    raise UnsupportedModelError(f"layer {label} is not applied to the flattened convolution output")
                if not plan.body or not isinstance(plan.body[0], _Conv):
                    raise UnsupportedModelError("the model must start with a convolution")
                last = _last_shape(calls, name)
                plan.flat_channels, plan.flat_length = last
                plan.first_linear = step
            else:
                plan.head.append(step)
        else:
            raise UnsupportedModelError(f"layer {label} is not supported by the fast ISM engine")
        previous, previous_label = outp, label
    if plan.first_linear is None:
        raise UnsupportedModelError("no Linear layer after the convolutions; the model must end in [B, F] via Linear")
    if not _same_data(previous, out):
        raise UnsupportedModelError("the model's forward changes the output after its last layer")
    if check:
        _self_check(model, plan, X)
    return plan


def _last_shape(calls: list, linear_name: str) -> tuple[int, int]:
    """Channels and length of the activation that was flattened into ``linear_name``."""
    shape = None
    for name, _, _, outp in calls:
        if name == linear_name:
            break
        if outp is not None and outp.ndim >= 3:
            shape = outp.shape
    if shape is None:
        raise UnsupportedModelError(f"cannot find what is flattened into {linear_name}")
    return int(shape[1]), int(shape[-1])


# ---------------------------------------------------------------------------------------------
# reference pass and variant patches
# ---------------------------------------------------------------------------------------------


def _apply_body(step: object, x: torch.Tensor) -> torch.Tensor:
    if isinstance(step, _Conv):
        return F.conv1d(x, step.weight, step.bias, padding=0, dilation=step.dilation, groups=step.groups)
    if isinstance(step, _Pool):
        return F.max_pool1d(x, step.kernel) if step.kind == "max" else F.avg_pool1d(x, step.kernel)
    return step.fn(x)


def _reference(plan: Plan, X: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Reference activations at the input of every body step, the first conv's output, and the
    first Linear's output (before the head)."""
    acts = []
    x = X
    for i, step in enumerate(plan.body):
        acts.append(x)
        if isinstance(step, _Conv):
            right = step.length_out - (x.shape[-1] + step.padding - step.dilation * (step.weight.shape[-1] - 1))
            x = F.pad(x, (step.padding, max(right, 0)))
        x = _apply_body(step, x)
        if i == 0:
            first_out = x
    acts.append(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        flat = x.float().reshape(x.shape[0], -1)
        lin = F.linear(flat, plan.first_linear.weight, plan.first_linear.bias)
    return acts, first_out, lin


def _head(plan: Plan, h: torch.Tensor) -> torch.Tensor:
    for step in plan.head:
        h = F.linear(h, step.weight, step.bias) if isinstance(step, _Linear) else step.fn(h)
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
    conv0: _Conv = plan.body[0]
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
        if isinstance(step, _Conv):
            span = step.dilation * (step.weight.shape[-1] - 1)
            ctx = _gather(acts[i], seq, start - span, width + 2 * span)
            ctx[:, :, span : span + width] = patch
            patch = F.conv1d(ctx, step.weight, step.bias, dilation=step.dilation, groups=step.groups)
            start, width = start + step.padding - span, width + span
            patch = _mask(patch, start, step.length_out)
        elif isinstance(step, _Pool):
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
    offset = 0
    with torch.autocast(device_type=out.device.type, enabled=False):
        for a, n in zip(starts.tolist(), counts.tolist()):
            rows = order[offset : offset + n]
            out[rows] += delta[rows] @ Wwin[a : a + win].reshape(-1, Wwin.shape[-1])
            offset += n
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
        Xv = X[seq].clone()
        rows = torch.arange(positions.numel(), device=X.device)
        Xv[rows, :, positions] = 0.0
        Xv[rows, alt, positions] = 1.0
        direct = model(Xv)
        if not torch.allclose(alt_out, direct, rtol=1e-4, atol=1e-5):
            err = (alt_out - direct).abs().max().item()
            raise UnsupportedModelError(f"fast ISM self-check failed on probe variants (max error {err:.2e})")


# ---------------------------------------------------------------------------------------------
# engine
# ---------------------------------------------------------------------------------------------

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
        get_plan(model, seq_len, device or next((p.device for p in model.parameters()), torch.device("cpu")))
    except UnsupportedModelError as exc:
        return str(exc)
    return None


@torch.no_grad()
def fast_ism(
    model: nn.Module,
    X: torch.Tensor,
    *,
    target: str = "logfold",
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "float32",
    out_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ISM with incremental computation; same contract as :func:`pipeline.ism.naive_ism`.

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
    from pipeline.ism import autocast, effects_buffer, effects_from_alt, prepare_inputs, variant_index

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
