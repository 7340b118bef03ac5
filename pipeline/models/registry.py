"""Building models by name or import path.

Import paths are resolved only from what the user wrote: ``package.module:Class`` through the normal
import system, ``path/to/file.py:Class`` from exactly that file. Built-in names: base models
``beluga`` and ``demo``; multiplexers ``conv`` and ``beluga_multiplexer``. Which built-in base models
have published weights (:data:`PUBLISHED_WEIGHTS`) or weights of their own (:data:`BUILT_IN_WEIGHTS`)
is recorded here too.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from pipeline.errors import UserError
from pipeline.models.beluga import Beluga
from pipeline.models.demo import DemoBase
from pipeline.models.multiplexer import BelugaMultiplexer, ConvMultiplexer, FastMultiplexer, LightConvMultiplexer
from pipeline.models.weights import load_state_dict_file, load_weights

BASE_MODELS: dict[str, type[nn.Module]] = {"beluga": Beluga, "demo": DemoBase}
MULTIPLEXERS: dict[str, type[nn.Module]] = {
    "conv": ConvMultiplexer,
    "beluga_multiplexer": BelugaMultiplexer,
    "fast": FastMultiplexer,
    "conv_light": LightConvMultiplexer,
}
PUBLISHED_WEIGHTS: dict[str, str] = {"beluga": "deepsea.beluga.pth"}
"""Built-in base models whose trained weights are published, and the published file's name: such a
model is only loaded with a weights file, or with random weights asked for explicitly."""
BUILT_IN_WEIGHTS: frozenset[str] = frozenset({"demo"})
"""Built-in base models that set deterministic weights themselves (the demo model, from its own
``seed`` argument): they need no weights file, and random weights do not apply to them."""


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


def build_base(name_or_import_path: str, weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build a frozen base model ``[B, 4, L] -> [B, F]`` in eval mode.

    Parameters
    ----------
    name_or_import_path : str
        ``"beluga"``, ``"demo"`` or ``package.module:Class`` / ``path/file.py:Class``.
    weights : path, optional
        State-dict file (e.g. the published ``deepsea.beluga.pth``). Without it, built-in models keep
        their own initialisation (the demo model is deterministic; Beluga is random: the commands
        refuse it without a weights file unless random weights are asked for, see
        :data:`PUBLISHED_WEIGHTS`).
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


def build_multiplexer(
    name_or_import_path: str, weights: str | os.PathLike[str] | None = None, **kwargs: Any
) -> nn.Module:
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


def model_class(name_or_import_path: str, builtins: Mapping[str, type[nn.Module]]) -> Any:
    """The class a built-in name or an import path refers to (for inspecting its signature)."""
    return _resolve(name_or_import_path, builtins, "base model" if builtins is BASE_MODELS else "multiplexer")
