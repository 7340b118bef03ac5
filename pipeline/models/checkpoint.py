"""Self-describing training checkpoints.

A checkpoint is a ``torch.save``d dict of plain types and tensors only (so it loads with
``weights_only=True``)::

    format            "multiplexer-checkpoint"
    format_version    1
    model             the multiplexer's state dict
    architecture      {"name": "conv" | "beluga_multiplexer" | "pkg.mod:Class", "kwargs": {...}}
    seq_len, n_targets, alphabet, target_names, target_kind
    spec, spec_hash   the dataset spec the store was distilled from, and its content hash
    base              the base model's identity (name, class, kwargs, weights path and sha256, and
                      ``init``: "weights file", "built in" or "random (seed N)"; see
                      :func:`pipeline.models.base.weights_label`)
    genome            absolute path of the spec's genome at distillation time
    genome_fingerprint  its :meth:`~pipeline.core.genome.Genome.fingerprint` (``None`` when the store
                      predates fingerprints), compared with the genome ``predict`` and ``score-vcf`` read
    step, metrics     optimizer steps done and the latest validation metrics
    train, changes    the training settings, and the options a resume changed (``{"step", "option",
                      "old", "new"}`` each)
    training          (``last`` only) optimizer, scheduler, sampler position and RNG states

``predict``, ``evaluate`` and ``score-vcf`` need nothing but this file. It is written durably
(:func:`save_checkpoint`, through :func:`~pipeline.core.files.atomic_path`): a temporary
``.NAME.tmp-PID-RANDOM/NAME`` beside it, flushed to the disk, renamed, and the folder flushed, so
neither a crash nor a power loss leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.encoding import ALPHABET
from pipeline.core.files import atomic_path
from pipeline.errors import UserError, WriteError
from pipeline.models.base import build_base_from_identity
from pipeline.models.registry import build_multiplexer
from pipeline.models.weights import load_weights, torch_load_safely

FORMAT = "multiplexer-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("model", "architecture", "seq_len", "n_targets", "alphabet", "target_names", "target_kind")


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a checkpoint durably: a temporary file in the same folder, flushed to the disk (``fsync``),
    renamed over ``path``, then the folder flushed."""
    path = Path(path)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    try:
        with atomic_path(path) as tmp:  # flushed to the disk, renamed over path, the folder flushed
            torch.save(data, tmp)
    except (OSError, RuntimeError) as exc:
        # a full disk is an OSError from Python's writer, a RuntimeError from torch's zip writer
        # ("[enforce fail at inline_container.cc:...] unexpected pos ..." or "PytorchStreamWriter failed ...")
        text = " ".join(str(exc).split())
        if isinstance(exc, RuntimeError) and "inline_container" not in text and "Writer" not in text:
            raise
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        else:
            reason = f"the write failed ({text[:120]}); is the disk full?"
        raise WriteError(f"cannot write checkpoint {str(path)!r}: {reason}") from None


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint (``weights_only=True``); a bad file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    data = torch_load_safely(path, f"checkpoint {str(path)!r}")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} is not a multiplexer checkpoint")
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {str(path)!r} has format version {data.get('format_version')}, "
            f"this version reads {FORMAT_VERSION}"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UserError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}")
    if data["alphabet"] != ALPHABET:
        raise UserError(f"checkpoint {str(path)!r} uses alphabet {data['alphabet']!r}, expected {ALPHABET!r}")
    return data


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the multiplexer of a checkpoint.

    Parameters
    ----------
    path : path
        A ``best.pt`` or ``last.pt`` written by ``multiplexer train``.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    model : nn.Module
        The multiplexer in eval mode, ``[B, 4, L] -> [B, F, 4, L]``.
    meta : dict
        Everything else in the checkpoint (see module docstring), without the state dicts.
    """
    data = read_checkpoint(path)
    arch = data["architecture"]
    model = build_multiplexer(arch["name"], **arch.get("kwargs", {}))
    load_weights(model, data["model"], source=f"checkpoint {str(path)!r}")
    model_len = getattr(model, "seq_len", None)
    if model_len is not None and int(model_len) != int(data["seq_len"]):
        raise UserError(
            f"checkpoint {str(path)!r} records seq_len {data['seq_len']} but its model takes sequences of "
            f"length {model_len}"
        )
    model.to(device).eval()
    meta = {k: v for k, v in data.items() if k not in ("model", "training")}
    return model, meta


def base_from_checkpoint(
    meta: dict[str, Any], *, weights: str | os.PathLike[str] | None = None, model: str | None = None
) -> nn.Module:
    """Rebuild the base model a checkpoint's multiplexer was distilled from (eval mode, CPU).

    Parameters
    ----------
    meta : dict
        From :func:`read_checkpoint` or :func:`load_checkpoint`.
    weights : path, optional
        The recorded weights file's current path, if it moved (its sha256 must match).
    model : str, optional
        The base model's current import path, if its ``.py`` file moved.
    """
    identity = meta.get("base")
    if not isinstance(identity, dict) or "model" not in identity:
        raise UserError("the checkpoint does not record its base model")
    seed = (meta.get("spec") or {}).get("seed")
    return build_base_from_identity(identity, weights, model=model, seed=seed)


INFERENCE_PRECISIONS = ("float32", "bf16")
"""``--precision`` of the commands that run a multiplexer: exact float32, or bfloat16 autocast."""


class Autocast(nn.Module):
    """A model run under bfloat16 autocast (convolutions and matrix products in bf16, on CPU or CUDA);
    the output is cast back to float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``X: [B, 4, L]`` -> the wrapped model's output, in float32."""
        with torch.autocast(device_type=X.device.type, dtype=torch.bfloat16):
            return self.model(X).float()


def for_inference(model: nn.Module, precision: str = "float32") -> nn.Module:
    """``model`` for ``precision`` (:data:`INFERENCE_PRECISIONS`): itself, or wrapped in :class:`Autocast`."""
    if precision not in INFERENCE_PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    return model if precision == "float32" else Autocast(model).eval()
