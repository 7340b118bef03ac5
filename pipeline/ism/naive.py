"""Naive ISM: one base-model forward pass per variant.

``naive_ism(model, X) -> (y, ref_pred)`` with ``X: [B, 4, L]`` one-hot, ``y: [B, F, 4, L]`` and
``ref_pred: [B, F]``. Only the ``3 · (L - #N)`` real variants and one reference pass per sequence go
through the model, in batches that include the last partial one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipeline.core.deprecation import moved_names
from pipeline.core.spec import ISM_BATCH_SIZE
from pipeline.ism._common import autocast as _autocast
from pipeline.ism._common import prepare_inputs as _prepare_inputs
from pipeline.ism.effects import effects_buffer, effects_from_alt
from pipeline.ism.variants import mutate_batch, variant_index


@torch.no_grad()
def predict_batched(model: nn.Module, X: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Run ``model`` over ``X: [N, 4, L]`` in batches on ``device``; returns ``[N, F]`` on ``device``."""
    outs = [model(X[i : i + batch_size].to(device, torch.float32)) for i in range(0, X.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, device=device)


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
    dev, X = _prepare_inputs(model, X, target, batch_size, device)
    with _autocast(dev, precision):
        ref_pred = predict_batched(model, X, batch_size, dev).float()  # [B, F]
    y = effects_buffer(ref_pred, target, X.shape[-1])
    seq, pos, base = variant_index(X)
    for start in range(0, seq.numel(), batch_size):
        s, p, b = seq[start : start + batch_size], pos[start : start + batch_size], base[start : start + batch_size]
        with _autocast(dev, precision):
            alt = model(mutate_batch(X, s, p, b)).float()  # [n, F]
        y[s, :, b, p] = effects_from_alt(alt, ref_pred[s], target)
        if progress is not None:
            progress(s.numel())
    return y.to(out_dtype).cpu(), ref_pred.float().cpu()


__getattr__ = moved_names(
    "pipeline.ism.naive", {name: "pipeline.ism" for name in ("autocast", "model_device", "prepare_inputs")}
)
