"""Building models by name or import path, and loading weights safely.

Import paths are resolved only from what the user wrote: ``package.module:Class`` through the normal
import system, ``path/to/file.py:Class`` from exactly that file. Weights files are read with
``torch.load(weights_only=True)``, so a pickle that would run code is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models.beluga import Beluga
from pipeline.models.demo import DemoBase
from pipeline.models.multiplexer import BelugaMultiplexer, ConvMultiplexer

BASE_MODELS: dict[str, type[nn.Module]] = {"beluga": Beluga, "demo": DemoBase}
MULTIPLEXERS: dict[str, type[nn.Module]] = {"conv": ConvMultiplexer, "beluga_multiplexer": BelugaMultiplexer}


def import_object(path: str) -> Any:
    """Import ``package.module:Name`` or ``path/to/file.py:Name``.

    Raises
    ------
    UserError
        If the module or the name cannot be found (the message names which).
    """
    module_part, sep, name = path.rpartition(":")
    if not sep or not module_part or not name:
        raise UserError(f"import path {path!r} must look like package.module:Class or file.py:Class")
    if module_part.endswith(".py"):
        file = Path(module_part).expanduser()
        if not file.is_file():
            raise UserError(f"model file {str(file)!r} does not exist")
        mod_name = f"_multiplexer_user_{hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]}"
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, file)
            if spec is None or spec.loader is None:
                raise UserError(f"cannot import model file {str(file)!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[mod_name]
                raise UserError(f"importing {str(file)!r} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise UserError(f"cannot import module {module_part!r}: {exc}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise UserError(f"module {module_part!r} has no attribute {name!r}") from None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_refusal(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused or failed, in a few words (one line)."""
    text = " ".join(str(exc).split())
    if "Weights only load failed" in text:
        found = re.search(r"(?:unsupported )?GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"it holds pickled Python objects{what}, not only tensors; a weights-only load refuses them "
            "without running their code"
        )
    detail = f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__
    return f"it is truncated, corrupt or not a PyTorch file ({detail})"


def torch_load_safely(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is one :class:`UserError` line.

    Parameters
    ----------
    path : path
        The file.
    what : str
        How the message names it (``"weights file '/x/y.pt'"``).
    """
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{what} cannot be loaded: {_load_refusal(exc)}") from None


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``.

    Accepts a plain ``{name: tensor}`` mapping, or one wrapped under ``"state_dict"`` or ``"model"``
    (as in training checkpoints).

    Raises
    ------
    UserError
        Missing, truncated or corrupt file; a pickle that is not a plain state dict (refused without
        running its code); a mapping whose values are not tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist")
    obj = torch_load_safely(path, f"weights file {str(path)!r}")
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"weights file {str(path)!r} does not hold a state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"weights file {str(path)!r}: entries {bad[:5]} are not tensors")
    return dict(obj)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "state dict") -> nn.Module:
    """Load ``state`` into ``model`` after checking every key and shape.

    A model class may define ``convert_state_dict(state) -> state`` to accept another layout (Beluga
    accepts the published Conv2d weights).

    Raises
    ------
    UserError
        Naming the missing, unexpected and mis-shaped keys.
    """
    convert = getattr(type(model), "convert_state_dict", None)
    if convert is not None:
        state = convert(dict(state))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} (model expects {list(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if unexpected:
        problems.append(
            f"unexpected keys {unexpected[:5]}" + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
        )
    if shapes:
        problems.append(
            "wrong shapes: " + "; ".join(shapes[:3]) + (f" and {len(shapes) - 3} more" if len(shapes) > 3 else "")
        )
    if problems:
        raise UserError(f"{source} does not fit {type(model).__name__}: " + ", ".join(problems))
    model.load_state_dict(state, strict=True)
    return model


def _construct(cls: Any, kwargs: Mapping[str, Any], what: str, name: str) -> nn.Module:
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise UserError(f"{what} {name!r} is not an nn.Module class (it is a {type(cls).__name__})")
    try:
        return cls(**dict(kwargs))
    except TypeError as exc:
        raise UserError(f"cannot build {cls.__name__} with arguments {dict(kwargs)}: {exc}") from None
    except ValueError as exc:
        raise UserError(f"cannot build {cls.__name__}: {exc}") from None


def _resolve(name_or_import_path: str, builtins: Mapping[str, type[nn.Module]], what: str) -> Any:
    if name_or_import_path in builtins:
        return builtins[name_or_import_path]
    if ":" in name_or_import_path:
        return import_object(name_or_import_path)
    raise UserError(
        f"unknown {what} {name_or_import_path!r}: use one of {', '.join(builtins)} "
        "or an import path package.module:Class / file.py:Class"
    )


def build_base(name_or_import_path: str, weights: str | os.PathLike | None = None, **kwargs: Any) -> nn.Module:
    """Build a frozen base model ``[B, 4, L] -> [B, F]`` in eval mode.

    Parameters
    ----------
    name_or_import_path : str
        ``"beluga"``, ``"demo"`` or ``package.module:Class`` / ``path/file.py:Class``.
    weights : path, optional
        State-dict file (e.g. the published ``deepsea.beluga.pth``). Without it, built-in models keep
        their own initialisation (the demo model is deterministic; Beluga is random).
    **kwargs
        Constructor arguments.

    Returns
    -------
    model : nn.Module
        In eval mode, gradients disabled.
    """
    cls = _resolve(name_or_import_path, BASE_MODELS, "base model")
    model = _construct(cls, kwargs, "base model", name_or_import_path)
    if weights is not None:
        load_weights(model, load_state_dict_file(weights), source=f"weights file {str(weights)!r}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_multiplexer(name_or_import_path: str, weights: str | os.PathLike | None = None, **kwargs: Any) -> nn.Module:
    """Build a multiplexer ``[B, 4, L] -> [B, F, 4, L]``.

    Parameters
    ----------
    name_or_import_path : str
        ``"conv"`` (:class:`ConvMultiplexer`, configurable), ``"beluga_multiplexer"`` (the published
        architecture) or an import path.
    weights : path, optional
        State dict (e.g. ``BelugaMultiplexerWeights.pth``) or one of our checkpoints.
    **kwargs
        Constructor arguments (``seq_len``, ``n_targets``, widths, ...).
    """
    cls = _resolve(name_or_import_path, MULTIPLEXERS, "multiplexer")
    model = _construct(cls, kwargs, "multiplexer", name_or_import_path)
    if weights is not None:
        load_weights(model, load_state_dict_file(weights), source=f"weights file {str(weights)!r}")
    return model


def base_identity(
    name: str, weights: str | os.PathLike | None, kwargs: Mapping[str, Any], model: nn.Module
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
    weights: str | os.PathLike | None = None,
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


def target_names_for(model: nn.Module, n_targets: int, names_file: str | os.PathLike | None = None) -> list[str]:
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
    names = getattr(model, "target_names", None)
    if isinstance(names, (list, tuple)) and len(names) == n_targets:
        return [str(n) for n in names]
    return [f"target_{i}" for i in range(n_targets)]
