"""Loading weights safely: ``torch.load(weights_only=True)``, key-by-key and shape-by-shape checks.

A pickle that would run code is refused without running it; a truncated or corrupt file, a mapping
that is not a state dict, and a state dict that does not fit the model are each one
:class:`~pipeline.errors.UserError` line naming the file and the offending keys.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import UserError


def file_sha256(path: str | os.PathLike[str]) -> str:
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


def torch_load_safely(path: str | os.PathLike[str], what: str) -> Any:
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


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
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
