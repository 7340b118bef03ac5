"""In-silico saturation mutagenesis (ISM): the base model's effect of every single-nucleotide variant.

``saturation_mutagenesis(model, X) -> y`` with ``X: [B, 4, L]`` one-hot and ``y: [B, F, 4, L]``,
where ``y[i, f, b, j]`` is the effect on target ``f`` of setting position ``j`` of sequence ``i`` to
base ``b``. Reference-base entries are exactly 0 and are never computed; an ``N`` (all-zero) column
gets 0 for all four bases and is never computed either. Only the ``3 · (L - #N)`` real variants and
one reference pass per sequence go through the model, in batches that include the last partial one.

Target kinds: ``logfold`` (the seed's log-fold change, :func:`log_fold`), ``diff`` (``alt - ref``)
and ``alt`` (the base model's prediction for each variant; the reference prediction at the reference
base and at ``N`` columns).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

EPS = 1e-6
"""The seed's epsilon in the log-fold definition."""

ENGINES = ("fast", "naive")
"""``fast``: exact incremental ISM (:mod:`pipeline.fast_ism`); ``naive``: one pass per variant."""
TARGETS = ("logfold", "diff", "alt")
PRECISIONS = ("float32", "bf16")
"""``float32`` (exact; TF32 off) or ``bf16`` (the base model's trunk under bfloat16 autocast, meant for
CUDA; predictions and log-folds stay float32)."""


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a precision (disabled for ``float32``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


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
    """Turn alternative predictions into targets of kind ``target``.

    Parameters
    ----------
    alt : torch.Tensor, shape=(..., F)
        Predictions for variants.
    ref : torch.Tensor, shape=(..., F)
        Reference predictions, broadcastable to ``alt``.
    """
    if target == "logfold":
        return log_fold(alt, ref)
    if target == "diff":
        return alt - ref
    if target == "alt":
        return alt
    raise ValueError(f"unknown target kind {target!r} (expected one of {', '.join(TARGETS)})")


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


def variant_index(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All real single-nucleotide variants of a batch, in (sequence, position, base) order.

    Parameters
    ----------
    X : torch.Tensor, shape=(B, 4, L)
        One-hot sequences; all-zero columns are ``N``.

    Returns
    -------
    seq, pos, base : torch.Tensor, shape=(V,)
        ``V = sum_i 3 · (L - #N_i)``: every non-reference base at every non-N position.
    """
    B, _, L = X.shape
    present = X.sum(dim=1) > 0  # [B, L]
    alt_mask = (X == 0) & present.unsqueeze(1)  # [B, 4, L]: real alternatives
    seq, base, pos = alt_mask.nonzero(as_tuple=True)
    order = torch.argsort(seq * (4 * L) + pos * 4 + base)
    return seq[order], pos[order], base[order]


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def predict_batched(model: nn.Module, X: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Run ``model`` over ``X: [N, 4, L]`` in batches on ``device``; returns ``[N, F]`` on ``device``."""
    outs = [model(X[i : i + batch_size].to(device, torch.float32)) for i in range(0, X.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, device=device)


def prepare_inputs(
    model: nn.Module, X: torch.Tensor, target: str, batch_size: int, device: str | torch.device | None
) -> tuple[torch.device, torch.Tensor]:
    """Check the arguments shared by the ISM engines; returns the device and ``X`` as contiguous
    float32 on it (the published Beluga's reshape needs contiguous input)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target kind {target!r} (expected one of {', '.join(TARGETS)})")
    if X.ndim != 3 or X.shape[1] != 4:
        raise ValueError(f"X must have shape [B, 4, L], got {list(X.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = _resolve_device(model, device)
    return dev, X.to(dev, torch.float32).contiguous()


def effects_buffer(ref_pred: torch.Tensor, target: str, seq_len: int) -> torch.Tensor:
    """The ``[B, F, 4, L]`` output before any variant is filled in: 0, or for ``alt`` the reference
    prediction (the value at reference bases and ``N`` columns)."""
    fill = ref_pred if target == "alt" else torch.zeros_like(ref_pred)
    B, F = ref_pred.shape
    return fill[:, :, None, None].expand(B, F, 4, seq_len).contiguous()


@torch.no_grad()
def naive_ism(
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
    """Naive ISM: one base-model forward pass per variant, batched across sequences and variants.

    Parameters
    ----------
    model : nn.Module
        Base model ``[n, 4, L] -> [n, F]`` probabilities, in eval mode.
    X : torch.Tensor, shape=(B, 4, L)
        One-hot sequences (any numeric dtype).
    target : str
        ``logfold``, ``diff`` or ``alt``.
    batch_size : int
        Variants per forward pass (the last batch may be smaller; none is dropped).
    device : str or torch.device, optional
        Where to run; defaults to the model's device.
    progress : callable, optional
        Called with the number of variants finished after each batch.
    precision : str
        ``float32`` or ``bf16`` (the whole model under bfloat16 autocast; effects in float32).
    out_dtype : torch.dtype
        dtype of the returned effects (cast on the device, e.g. float16 for storage).

    Returns
    -------
    y : torch.Tensor, shape=(B, F, 4, L), ``out_dtype``, CPU
        Effects (see module docstring).
    ref_pred : torch.Tensor, shape=(B, F), float32, CPU
        The base model's prediction on each reference sequence.
    """
    dev, X = prepare_inputs(model, X, target, batch_size, device)
    with autocast(dev, precision):
        ref_pred = predict_batched(model, X, batch_size, dev).float()  # [B, F]
    y = effects_buffer(ref_pred, target, X.shape[-1])
    seq, pos, base = variant_index(X)
    for start in range(0, seq.numel(), batch_size):
        s, p, b = seq[start : start + batch_size], pos[start : start + batch_size], base[start : start + batch_size]
        n = s.numel()
        Xv = X[s].clone()  # [n, 4, L]
        rows = torch.arange(n, device=dev)
        Xv[rows, :, p] = 0.0
        Xv[rows, b, p] = 1.0
        with autocast(dev, precision):
            alt = model(Xv).float()  # [n, F]
        y[s, :, b, p] = effects_from_alt(alt, ref_pred[s], target)
        if progress is not None:
            progress(n)
    return y.to(out_dtype).cpu(), ref_pred.float().cpu()


def choose_engine(
    model: nn.Module, seq_len: int, engine: str, device: torch.device, notify: Callable[[str], None] | None = None
) -> str:
    """Resolve ``auto`` | ``fast`` | ``naive`` for a model.

    ``auto`` takes the fast engine when it supports the model and otherwise the naive one, saying so
    once through ``notify``; ``fast`` on an unsupported model raises
    :class:`pipeline.fast_ism.UnsupportedModelError` naming the layer.
    """
    from pipeline.fast_ism import UnsupportedModelError, supports

    if engine not in ENGINES + ("auto",):
        raise ValueError(f"unknown ISM engine {engine!r} (available: auto, {', '.join(ENGINES)})")
    if engine == "naive":
        return "naive"
    reason = supports(model, seq_len, device)
    if reason is None:
        return "fast"
    if engine == "fast":
        raise UnsupportedModelError(f"--engine fast cannot run this model: {reason}")
    if notify is not None:
        notify(f"note: the fast ISM engine does not support this model ({reason}); using the naive engine")
    return "naive"


def run_ism(
    model: nn.Module,
    X: torch.Tensor,
    *,
    engine: str = "fast",
    target: str = "logfold",
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "float32",
    out_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Effects ``[B, F, 4, L]`` (``out_dtype``) and reference predictions ``[B, F]`` with the named engine."""
    kwargs = {
        "target": target,
        "batch_size": batch_size,
        "device": device,
        "progress": progress,
        "precision": precision,
        "out_dtype": out_dtype,
    }
    if engine == "fast":
        from pipeline.fast_ism import fast_ism

        return fast_ism(model, X, **kwargs)
    if engine == "naive":
        return naive_ism(model, X, **kwargs)
    raise ValueError(f"unknown ISM engine {engine!r} (available: {', '.join(ENGINES)})")


def saturation_mutagenesis(
    model: nn.Module,
    X: torch.Tensor,
    *,
    engine: str = "fast",
    target: str = "logfold",
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Effects of every single-nucleotide variant of each sequence, computed with the base model.

    Parameters
    ----------
    model : nn.Module
        Base model ``[n, 4, L] -> [n, F]`` probabilities.
    X : torch.Tensor, shape=(B, 4, L)
        One-hot sequences; all-zero columns are ``N``.
    engine : str
        ``"fast"`` (exact incremental ISM; raises
        :class:`~pipeline.fast_ism.UnsupportedModelError` for models it cannot follow) or ``"naive"``
        (one forward pass per variant).
    target : str
        ``"logfold"``, ``"diff"`` or ``"alt"``.
    batch_size : int
        Variants per batch.
    device : str or torch.device, optional
        Defaults to the model's device.

    Returns
    -------
    y : torch.Tensor, shape=(B, F, 4, L), float32, CPU
    """
    y, _ = run_ism(model, X, engine=engine, target=target, batch_size=batch_size, device=device)
    return y
