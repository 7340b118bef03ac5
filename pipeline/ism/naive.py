"""Naive ISM: one base-model forward pass per variant, and the argument checks every engine shares.

``naive_ism(model, X) -> (y, ref_pred)`` with ``X: [B, 4, L]`` one-hot, ``y: [B, F, 4, L]`` and
``ref_pred: [B, F]``. Only the ``3 · (L - #N)`` real variants and one reference pass per sequence go
through the model, in batches that include the last partial one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipeline.core.spec import ISM_BATCH_SIZE, PRECISIONS
from pipeline.errors import check_choice
from pipeline.ism.effects import TARGETS, effects_buffer, effects_from_alt
from pipeline.ism.variants import mutate_batch, variant_index


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a precision: bfloat16 for ``bf16``, disabled for ``float32``."""
    check_choice("precision", precision, PRECISIONS)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """``device`` when given, else the device of the model's parameters (CPU for none)."""
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
    check_choice("target kind", target, TARGETS)
    if X.ndim != 3 or X.shape[1] != 4:
        raise ValueError(f"X must have shape [B, 4, L], got {list(X.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = model_device(model, device)
    return dev, X.to(dev, torch.float32).contiguous()


@torch.no_grad()
def naive_ism(
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
        Effects: 0 at reference bases and ``N`` columns (``alt``: the reference prediction).
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
        with autocast(dev, precision):
            alt = model(mutate_batch(X, s, p, b)).float()  # [n, F]
        y[s, :, b, p] = effects_from_alt(alt, ref_pred[s], target)
        if progress is not None:
            progress(s.numel())
    return y.to(out_dtype).cpu(), ref_pred.float().cpu()
