"""In-silico saturation mutagenesis (ISM): the base model's effect of every single-nucleotide variant.

``saturation_mutagenesis(model, X) -> y`` with ``X: [B, 4, L]`` one-hot and ``y: [B, F, 4, L]``,
where ``y[i, f, b, j]`` is the effect on target ``f`` of setting position ``j`` of sequence ``i`` to
base ``b``. Reference-base entries are exactly 0 and are never computed; an ``N`` (all-zero) column
gets 0 for all four bases and is never computed either.

Engines (:data:`ENGINES`), all with the call shape ``engine(model, X, ...) -> (y, ref_pred)``:
``fast`` (:mod:`pipeline.ism.fast`, exact incremental ISM) and ``naive`` (:mod:`pipeline.ism.naive`,
one pass per variant). :func:`choose_engine` resolves ``auto``. Effect arithmetic lives in
:mod:`pipeline.ism.effects`, the variant list in :mod:`pipeline.ism.variants`. This package knows
nothing of stores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from pipeline.core.spec import ISM_BATCH_SIZE, PRECISIONS
from pipeline.errors import UnsupportedModelError, check_choice
from pipeline.ism._common import autocast, model_device, prepare_inputs
from pipeline.ism.effects import (
    EPS,
    TARGETS,
    effects_buffer,
    effects_from_alt,
    log_fold,
    log_unfold,
    logfold_to_diff,
    mask_effects,
)
from pipeline.ism.fast import build_plan, fast_ism, get_plan, supports
from pipeline.ism.naive import naive_ism, predict_batched
from pipeline.ism.variants import mutate_batch, variant_index


class Engine(Protocol):
    """The call shape of an ISM engine."""

    def __call__(
        self,
        model: nn.Module,
        X: torch.Tensor,
        *,
        target: str = ...,
        batch_size: int = ...,
        device: str | torch.device | None = ...,
        progress: Callable[[int], None] | None = ...,
        precision: str = ...,
        out_dtype: torch.dtype = ...,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Effects ``[B, F, 4, L]`` and reference predictions ``[B, F]`` of ``X [B, 4, L]``."""
        ...


ENGINES: dict[str, Engine] = {"fast": fast_ism, "naive": naive_ism}
"""``fast``: exact incremental ISM; ``naive``: one base-model pass per variant."""
ENGINE_CHOICES = ("auto", *ENGINES)
"""What ``--engine`` accepts: an engine, or ``auto`` (:func:`choose_engine`)."""


def choose_engine(
    model: nn.Module, seq_len: int, engine: str, device: torch.device, notify: Callable[[str], None] | None = None
) -> str:
    """Resolve ``auto`` | ``fast`` | ``naive`` for a model.

    ``auto`` takes the fast engine when it supports the model and otherwise the naive one, saying so
    once through ``notify``; ``fast`` on an unsupported model raises
    :class:`~pipeline.errors.UnsupportedModelError` naming the layer.
    """
    check_choice("ISM engine", engine, ENGINE_CHOICES)
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
    model: nn.Module, X: torch.Tensor, *, engine: str = "fast", **options: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Effects ``[B, F, 4, L]`` (``out_dtype``, CPU) and reference predictions ``[B, F]`` with the named
    engine (``fast`` or ``naive``; see :data:`ENGINES`).

    ``options`` are the engine's keywords, the same for every engine (:class:`Engine`): ``target``,
    ``batch_size``, ``device``, ``progress``, ``precision`` and ``out_dtype``.
    """
    run = ENGINES[check_choice("ISM engine", engine, tuple(ENGINES))]
    return run(model, X, **options)


def saturation_mutagenesis(
    model: nn.Module,
    X: torch.Tensor,
    *,
    engine: str = "fast",
    target: str = "logfold",
    batch_size: int = ISM_BATCH_SIZE,
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
        ``"fast"`` (exact incremental ISM; raises :class:`~pipeline.errors.UnsupportedModelError`
        for models it cannot follow) or ``"naive"`` (one forward pass per variant).
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


__all__ = [
    "ENGINES",
    "ENGINE_CHOICES",
    "EPS",
    "PRECISIONS",
    "TARGETS",
    "Engine",
    "UnsupportedModelError",
    "autocast",
    "build_plan",
    "choose_engine",
    "effects_buffer",
    "effects_from_alt",
    "fast_ism",
    "get_plan",
    "log_fold",
    "log_unfold",
    "logfold_to_diff",
    "mask_effects",
    "model_device",
    "mutate_batch",
    "naive_ism",
    "predict_batched",
    "prepare_inputs",
    "run_ism",
    "saturation_mutagenesis",
    "supports",
    "variant_index",
]
