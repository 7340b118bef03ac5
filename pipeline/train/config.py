"""Training settings: command-line overrides, the learning-rate schedule, mixed precision, architecture.

The settings themselves are :class:`~pipeline.core.spec.TrainSpec` (declared once there, with their
rules); :func:`train_config` applies overrides through the same rules.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from pipeline.core.spec import TRAIN_RULES, TrainSpec, load_spec, option_flag
from pipeline.errors import StoreNotFoundError, UserError
from pipeline.models.registry import MULTIPLEXERS, model_class
from pipeline.store import Store, check_same_spec, open_store


def train_config(defaults: TrainSpec, **overrides: Any) -> TrainSpec:
    """``defaults`` with the non-``None`` overrides applied, each checked by its :data:`TRAIN_RULES` rule.

    Raises
    ------
    SpecError
        An override breaks its rule (the message names the option), or two settings disagree
        (``batch_size`` not a multiple of ``grad_accum``).
    """
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "kwargs":
            changes[key] = dict(value)
        else:
            changes[key] = TRAIN_RULES[key].check("option", option_flag(key), value)
    return replace(defaults, **changes)


def resolve_source(source: str, store_path: str | None = None) -> tuple[str, TrainSpec]:
    """The store to train on and the default settings, from ``train``'s SOURCE argument.

    A spec (``.yaml``/``.yml``) gives its store (or ``store_path``), which must exist and match it, and
    its ``train:`` section; a store gives itself and the built-in defaults.
    """
    if not source.endswith((".yaml", ".yml")):
        if store_path:
            raise UserError("--store goes with a SPEC argument; here SOURCE is already a store")
        return source, TrainSpec()
    spec = load_spec(source)
    path = store_path or str(spec.store_path())
    try:
        check_same_spec(open_store(path), spec)
    except StoreNotFoundError:
        raise UserError(f"store {path!r} does not exist; run `multiplexer distill {source}` first") from None
    return path, spec.train_defaults()


def lr_factor(step: int, config: TrainSpec) -> float:
    """Learning-rate multiplier after ``step`` optimizer steps: linear warm-up, then cosine or constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Precision:
    """Mixed precision of a run: the autocast dtype (``None``: off) and whether a gradient scaler is needed."""

    dtype: torch.dtype | None
    scaler: bool

    def autocast(self, device: torch.device) -> torch.autocast:
        """The autocast context of the forward pass (disabled without mixed precision)."""
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def precision_for(config: TrainSpec, device: torch.device) -> Precision:
    """``amp``: ``auto`` is bf16 on CUDA and none elsewhere; fp16 (with a gradient scaler) needs CUDA."""
    mode = config.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "none"
    if mode == "fp16" and device.type != "cuda":
        raise UserError("amp fp16 needs CUDA; use bf16 or none on a CPU")
    dtypes = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    return Precision(dtypes[mode], mode == "fp16")


def multiplexer_kwargs(name: str, store: Store, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments: the user's, plus ``seq_len``/``n_targets`` from the store when the
    class takes them (a conflicting explicit value is an error)."""
    params = inspect.signature(model_class(name, MULTIPLEXERS)).parameters
    full = dict(kwargs)
    for key, value in (("seq_len", store.seq_len), ("n_targets", store.n_targets)):
        if key in params and key not in full:
            full[key] = value
        elif key in full and full[key] != value:
            raise UserError(f"multiplexer argument {key}={full[key]} does not match the store's {key}={value}")
    return full
