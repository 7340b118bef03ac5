"""Training settings: command-line overrides, the learning-rate schedule, mixed precision, architecture.

The settings themselves are :class:`~pipeline.core.spec.TrainSpec` (declared once there, with their
rules); :func:`train_config` applies overrides through the same rules. :func:`check_model_size` builds
the multiplexer on the ``meta`` device (no memory) to refuse bad or absurd arguments before anything is
allocated.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pipeline.core.spec import TRAIN_RULES, TrainSpec, load_spec, option_flag
from pipeline.errors import StoreNotFoundError, UserError
from pipeline.models.registry import MULTIPLEXERS, build_multiplexer, model_class
from pipeline.store import Store, check_same_spec, open_store

TRAINING_BYTES_PER_PARAMETER = 16
"""Memory a parameter takes in training, at least: float32 weight and gradient and AdamW's two moments
(activations come on top)."""


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


def _memory_available(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (``None``: not known). On a CPU the smaller of the
    kernel's ``MemAvailable`` and what the cgroup (container) limit leaves."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def _count_parameters(name: str, kwargs: Mapping[str, Any]) -> int | None:
    """Parameters of the multiplexer, counted on the ``meta`` device (nothing allocated); ``None`` when
    a user class cannot be built there (it is then built for real, unestimated)."""
    flag = option_flag("kwargs")
    try:
        with torch.device("meta"):
            model = build_multiplexer(name, **kwargs)
    except UserError as exc:  # the class refused its arguments (TypeError, ValueError)
        raise UserError(f"multiplexer arguments ({flag}): {exc}") from None
    except (RuntimeError, NotImplementedError) as exc:
        if name not in MULTIPLEXERS:
            return None  # a user class may need real tensors to be built
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"multiplexer arguments ({flag}) {json.dumps(dict(kwargs), default=str)}: cannot build {name}: {reason}"
        ) from None
    return sum(p.numel() for p in model.parameters())


def check_model_size(name: str, kwargs: Mapping[str, Any], device: torch.device) -> int | None:
    """Refuse a multiplexer whose arguments are bad or whose training state cannot fit in memory, before
    anything is allocated.

    The model is built on the ``meta`` device (shapes only) and its parameters counted; training needs at
    least :data:`TRAINING_BYTES_PER_PARAMETER` bytes each on ``device`` (and the float32 weights on the
    host, where the model is built first, when ``device`` is a GPU).

    Returns
    -------
    parameters : int or None
        The count (``None``: a user class that cannot be built on ``meta``).

    Raises
    ------
    UserError
        The class refuses the arguments, or the estimate exceeds the memory available; the message
        names ``--arch-kwargs``.
    """
    count = _count_parameters(name, kwargs)
    if count is None:
        return None
    needs = [(device, count * TRAINING_BYTES_PER_PARAMETER)]
    if device.type != "cpu":
        needs.append((torch.device("cpu"), count * 4))
    arguments = json.dumps(dict(kwargs), default=str)
    for where, need in needs:
        available = _memory_available(where)
        if available is not None and need > available:
            raise UserError(
                f"multiplexer arguments ({option_flag('kwargs')}) {arguments}: {name} would have {count:,} "
                f"parameters, at least {need / 1e9:,.1f} GB in training (weights, gradients, AdamW state), more "
                f"than the {available / 1e9:,.1f} GB of memory available on {where}; use smaller widths"
            )
    return count
