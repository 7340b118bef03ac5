"""The frozen base model as one record: module, identity, window length, outputs and their names.

:func:`load_base` builds a spec's base model (``distill``, ``ism --spec``); :func:`build_base_from_identity`
rebuilds the base model recorded in a store or checkpoint (``evaluate``, ``predict --diff``,
``ism --checkpoint``), checking its weights file's sha256. A base model without a weights file is
initialised from the spec's seed, so every process (and every later command) builds the same one. A
built-in model with published weights (Beluga) needs its weights file, or random weights asked for
explicitly (``weights: random``, :func:`check_weights_choice`); the identity records which
(``init``, read back by :func:`weights_label`).
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

from pipeline.core.identity import BUILT_IN, WEIGHTS_FILE, code_digest
from pipeline.core.spec import Spec
from pipeline.errors import SpecError, UserError
from pipeline.models.closure import local_imports
from pipeline.models.registry import BASE_MODELS, BUILT_IN_WEIGHTS, PUBLISHED_WEIGHTS, build_base, model_class
from pipeline.models.weights import file_sha256


@dataclass
class BaseModel:
    """A base model ``[B, 4, L] -> [B, F]`` and what the pipeline records about it.

    Attributes
    ----------
    module : nn.Module
        In eval mode, gradients off.
    identity : dict
        Name, class, constructor arguments, weights path and sha256, and how the weights were set
        (:func:`base_identity`).
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
    """Build the spec's base model on ``device`` (seeded by the spec's ``seed`` when it has no weights).

    Raises
    ------
    SpecError
        If the model has published weights and the spec names neither a weights file nor
        ``weights: random`` (or asks for random weights of a model that sets its own).
    """
    weights = spec.weights_path
    check_weights_choice(
        spec.base_model,
        has_file=weights is not None,
        random=spec.random_weights,
        file_fix="set base.weights to its state-dict file",
        random_form="`weights: random`",
    )
    kwargs = base_kwargs(spec)
    if isinstance(kwargs.get("n_targets"), int) and kwargs["n_targets"] < 1:
        raise UserError(f"base.kwargs n_targets is {kwargs['n_targets']}: a base model needs at least one output")
    module = build_seeded_base(spec.base_model, weights, spec.seed, kwargs).to(device)
    n_targets = probe_outputs(module, spec.seq_len)
    names = target_names_for(module, n_targets, spec.resolve_optional(spec.base.target_names))
    identity = base_identity(spec.base_model, weights, kwargs, module, seed=spec.seed)
    return BaseModel(module, identity, spec.seq_len, n_targets, names)


def check_weights_choice(name: str, *, has_file: bool, random: bool, file_fix: str, random_form: str) -> None:
    """Refuse a built-in base model with published weights that is given neither a weights file nor
    random weights explicitly, and random weights for a model that sets its own.

    Parameters
    ----------
    name : str
        The base model's name or import path (import paths are never refused).
    has_file : bool
        A weights file was given.
    random : bool
        Random weights were asked for (``weights: random`` / ``--weights random``).
    file_fix : str
        How the user gives the weights file, e.g. ``"set base.weights to its state-dict file"``.
    random_form : str
        How the user asks for random weights, e.g. ``"`weights: random`"``.

    Raises
    ------
    SpecError
        With a one-line message that says the fix.
    """
    published = PUBLISHED_WEIGHTS.get(name)
    if published is not None and not has_file and not random:
        raise SpecError(
            f"base model {name!r} needs weights: {file_fix} (the published {published}), "
            f"or {random_form} for a seeded random model"
        )
    if name in BUILT_IN_WEIGHTS and random:
        raise SpecError(f"base model {name!r} sets its own weights (its seed argument); drop {random_form}")


def build_seeded_base(
    name: str, weights: str | os.PathLike[str] | None, seed: int, kwargs: Mapping[str, Any]
) -> nn.Module:
    """:func:`~pipeline.models.registry.build_base` with its initialisation seeded by ``seed`` (the
    global random state is restored afterwards), so a model without weights is the same every time."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_base(name, weights, **kwargs)


def weights_init(name: str, weights: str | os.PathLike[str] | None, seed: int | None) -> str:
    """The identity's ``init``: :data:`WEIGHTS_FILE`, :data:`BUILT_IN` (the demo model) or
    ``"random (seed N)"`` (``"random"`` when the initialisation was not seeded)."""
    if weights is not None:
        return WEIGHTS_FILE
    if name in BUILT_IN_WEIGHTS:
        return BUILT_IN
    return f"random (seed {seed})" if seed is not None else "random"


def base_identity(
    name: str,
    weights: str | os.PathLike[str] | None,
    kwargs: Mapping[str, Any],
    model: nn.Module,
    *,
    seed: int | None = None,
) -> dict[str, Any]:
    """What identifies a base model in stores and checkpoints: name, class, kwargs, weights file and
    its sha256 (both ``None`` without a file), and ``init``: how its weights were set
    (:func:`weights_init`; ``seed`` is the seed a model without weights was initialised from)."""
    cls = type(model)
    return {
        "model": name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "kwargs": dict(kwargs),
        "weights": str(Path(weights).expanduser().resolve()) if weights is not None else None,
        "weights_sha256": file_sha256(weights) if weights is not None else None,
        "init": weights_init(name, weights, seed),
        **source_identity(cls),
    }


def source_identity(cls: type) -> dict[str, Any]:
    """The code of a user's model class (not this package's, which the package version identifies), so
    an edited model file, or an edited helper module it imports, is noticed like edited weights.

    Returns
    -------
    dict
        ``source`` and ``source_sha256``: the file defining the class; ``imports``: ``[name, file,
        sha256]`` of every local module it imports (:func:`~pipeline.models.closure.local_imports`);
        ``code_sha256``: one digest of all of them (:func:`~pipeline.core.identity.code_digest`).
        Empty for classes of this package or without a source file.
    """
    module = inspect.getmodule(cls)
    if module is None or module.__name__.split(".")[0] == __name__.split(".")[0]:
        return {}
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # built into the interpreter
        return {}
    if path is None or not Path(path).is_file():
        return {}
    imports = [[name, str(file), file_sha256(file)] for name, file in local_imports(module)]
    source_sha256 = file_sha256(path)
    return {
        "source": str(Path(path).resolve()),
        "source_sha256": source_sha256,
        "imports": imports,
        "code_sha256": code_digest(source_sha256, imports),
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
    return build_seeded_base(name, None, seed, kwargs)


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
    if out.shape[1] < 1:
        raise UserError(
            f"base model {type(model).__name__} returns [B, 0]: it needs at least one output (F >= 1); "
            "check its n_targets argument"
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
