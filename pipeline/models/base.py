"""The frozen base model as one record: module, identity, window length, outputs and their names.

:func:`load_base` builds a spec's base model (``distill``, ``ism --spec``); :func:`build_base_from_identity`
rebuilds the base model recorded in a store or checkpoint (``evaluate``, ``predict --diff``,
``ism --checkpoint``), checking its weights file's sha256. A base model without a weights file is
initialised from the spec's seed, so every process (and every later command) builds the same one.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.spec import Spec
from pipeline.errors import UserError
from pipeline.models.registry import BASE_MODELS, build_base, model_class
from pipeline.models.weights import file_sha256


@dataclass
class BaseModel:
    """A base model ``[B, 4, L] -> [B, F]`` and what the pipeline records about it.

    Attributes
    ----------
    module : nn.Module
        In eval mode, gradients off.
    identity : dict
        Name, class, constructor arguments, weights path and sha256 (:func:`base_identity`).
    seq_len : int
        ``L``.
    n_targets : int
        ``F``.
    target_names : list of str, length F
    """

    module: nn.Module
    identity: dict[str, Any]
    seq_len: int
    n_targets: int
    target_names: list[str]

    def to(self, device: torch.device) -> BaseModel:
        """Move the module to ``device`` (in place) and return ``self``."""
        self.module.to(device)
        return self


def base_kwargs(spec: Spec) -> dict[str, Any]:
    """The spec's base-model arguments, plus ``seq_len`` when the class takes it and it is not given."""
    kwargs = dict(spec.base.kwargs)
    cls = model_class(spec.base_model, BASE_MODELS)
    if "seq_len" in inspect.signature(cls).parameters and "seq_len" not in kwargs:
        kwargs["seq_len"] = spec.seq_len
    return kwargs


def load_base(spec: Spec, device: torch.device | str = "cpu") -> BaseModel:
    """Build the spec's base model on ``device`` (seeded by the spec's ``seed`` when it has no weights)."""
    weights = spec.weights_path
    kwargs = base_kwargs(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        module = build_base(spec.base_model, weights, **kwargs).to(device)
    n_targets = probe_outputs(module, spec.seq_len)
    names = target_names_for(module, n_targets, spec.resolve_optional(spec.base.target_names))
    identity = base_identity(spec.base_model, weights, kwargs, module)
    return BaseModel(module, identity, spec.seq_len, n_targets, names)


def base_identity(
    name: str, weights: str | os.PathLike[str] | None, kwargs: Mapping[str, Any], model: nn.Module
) -> dict[str, Any]:
    """What identifies a base model in stores and checkpoints: name, class, kwargs, weights file and
    its sha256."""
    cls = type(model)
    return {
        "model": name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "kwargs": dict(kwargs),
        "weights": str(Path(weights).expanduser().resolve()) if weights is not None else None,
        "weights_sha256": file_sha256(weights) if weights is not None else None,
    }


def build_base_from_identity(
    identity: Mapping[str, Any],
    weights: str | os.PathLike[str] | None = None,
    *,
    model: str | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Rebuild the base model recorded in a store or checkpoint, checking the weights' sha256.

    Parameters
    ----------
    identity : mapping
        As written by :func:`base_identity`.
    weights : path, optional
        Use this weights file instead of the recorded path (it must have the recorded sha256).
    model : str, optional
        Use this name or import path instead of the recorded one (e.g. when the model's ``.py``
        file moved); the recorded constructor arguments and weights checksum still apply.
    seed : int, optional
        Seed the initialisation with this (the spec's ``seed``) when no weights file was recorded, as
        ``distill`` does, so a model without weights is rebuilt identically.
    """
    path = weights if weights is not None else identity.get("weights")
    expected = identity.get("weights_sha256")
    if expected is not None:
        if path is None or not Path(path).is_file():
            raise UserError(
                f"the base model's weights file {str(path) if path is not None else '(none recorded)'!r} is not "
                "available; pass its current path with --weights"
            )
        actual = file_sha256(path)
        if actual != expected:
            raise UserError(
                f"weights file {str(path)!r} has sha256 {actual[:12]}, but the base model was "
                f"recorded with {expected[:12]}"
            )
    name = model if model is not None else identity["model"]
    kwargs = dict(identity.get("kwargs", {}))
    if seed is None or expected is not None:
        return build_base(name, path if expected is not None else None, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_base(name, None, **kwargs)


def probe_outputs(model: nn.Module, seq_len: int) -> int:
    """Run the base model on one all-``N`` sequence and return ``F``; checks the ``[B, F]`` contract."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        try:
            out = model(torch.zeros(2, 4, seq_len, device=device))
        except Exception as exc:
            raise UserError(
                f"base model {type(model).__name__} fails on input [2, 4, {seq_len}]: {type(exc).__name__}: {exc}"
            ) from None
    if out.ndim != 2 or out.shape[0] != 2:
        raise UserError(
            f"base model {type(model).__name__} must return [B, F] for input [B, 4, {seq_len}], got {list(out.shape)}"
        )
    if not torch.isfinite(out).all() or (out < 0).any() or (out > 1).any():
        raise UserError(f"base model {type(model).__name__} must return probabilities in [0, 1]")
    return int(out.shape[1])


def target_names_for(model: nn.Module, n_targets: int, names_file: str | os.PathLike[str] | None = None) -> list[str]:
    """Target names: from a file (one per line), else the model's ``target_names``, else ``target_<i>``."""
    if names_file is not None:
        path = Path(names_file)
        if not path.is_file():
            raise UserError(f"target names file {str(path)!r} does not exist")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) != n_targets:
            raise UserError(
                f"target names file {str(path)!r} has {len(names)} names, the base model has {n_targets} outputs"
            )
        return names
    own = getattr(model, "target_names", None)
    if isinstance(own, (list, tuple)) and len(own) == n_targets:
        return [str(n) for n in own]
    return [f"target_{i}" for i in range(n_targets)]
