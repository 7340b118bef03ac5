"""Self-describing training checkpoints, as a typed record: :class:`Checkpoint`.

A checkpoint file is a ``torch.save``d dict of plain types and tensors only (so it loads with
``weights_only=True``): ``format`` (``"multiplexer-checkpoint"``), ``format_version``, then the fields
of :class:`Checkpoint` (its :meth:`~Checkpoint.to_dict`), where the schema is declared once. The
trainer builds the record from its Stateful pieces (:meth:`Checkpoint.capture`: the model's and the
training state's ``state_dict()``); readers get it back through :meth:`Checkpoint.from_dict`, which
checks it and brings the layouts of older checkpoints up to date, so files written by earlier
versions keep loading.

``predict``, ``evaluate`` and ``score-vcf`` need nothing but this file. It is written durably
(:func:`save_checkpoint`, through :func:`~pipeline.core.files.atomic_path`): a temporary
``.NAME.tmp-PID-RANDOM/NAME`` beside it, flushed to the disk, renamed, and the folder flushed, so
neither a crash nor a power loss leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from pipeline.core.encoding import ALPHABET
from pipeline.core.files import atomic_path
from pipeline.errors import UserError, WriteError
from pipeline.models.base import build_base_from_identity
from pipeline.models.inference import optimize_for_inference
from pipeline.models.registry import build_multiplexer
from pipeline.models.weights import load_weights, torch_load_safely

FORMAT = "multiplexer-checkpoint"
FORMAT_VERSION = 1
"""The layout this version writes; :meth:`Checkpoint.from_dict` reads every version up to it."""
REQUIRED = ("model", "architecture", "seq_len", "n_targets", "alphabet", "target_names", "target_kind")
"""Keys every checkpoint has had since format version 1."""


class Stateful(Protocol):
    """What a checkpoint is built from: an object whose state is a ``state_dict()`` (an ``nn.Module``,
    the trainer's :class:`~pipeline.train.state.TrainState`)."""

    def state_dict(self) -> Mapping[str, Any]:
        """The object's state: plain types and tensors."""
        ...


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A training checkpoint: the multiplexer's weights and everything needed to use or resume it.

    The fields, in file order, are the file's keys (:meth:`to_dict`). An optional field that is
    ``None`` was not recorded (checkpoints written before it existed, or ``best.pt``'s ``training``)
    and is left out of the file; ``genome_fingerprint`` is always written (``None``: the store
    predates fingerprints).

    Attributes
    ----------
    architecture : dict
        ``{"name": "conv" | "beluga_multiplexer" | "pkg.mod:Class", "kwargs": {...}}``.
    seq_len, n_targets : int
        ``L`` and ``F``.
    target_names : list of str, length F
    target_kind : str
        ``logfold`` or ``diff``.
    alphabet : str
        The one-hot order, ``AGCT``.
    spec, spec_hash : dict, str
        The dataset spec the store was distilled from, and its content hash.
    base : dict
        The base model's identity (name, class, kwargs, weights path and sha256, and ``init``:
        ``"weights file"``, ``"built in"`` or ``"random (seed N)"``; see
        :func:`pipeline.models.base.weights_label`).
    genome : str
        Absolute path of the spec's genome at distillation time.
    genome_fingerprint : dict or None
        Its :meth:`~pipeline.core.genome.Genome.fingerprint` (``None`` when the store predates
        fingerprints), compared with the genome ``predict`` and ``score-vcf`` read.
    store : str
        The store trained on.
    train_samples : int
        Train samples used (``--max-samples`` or the whole split).
    package_version : str
    train : dict
        The training settings (:meth:`~pipeline.core.spec.TrainSpec.to_dict`).
    changes : list of dict
        The options a resume changed, ``{"step", "option", "old", "new"}`` each.
    model : dict
        The multiplexer's state dict.
    step : int
        Optimizer steps done.
    metrics : dict
        The latest metrics row, validation included.
    training : dict or None
        (``last.pt`` only) :meth:`~pipeline.train.state.TrainState.state_dict`: optimizer, scheduler,
        scaler, data position, best validation loss, samples seen, RNG states.
    extra : dict
        Keys this version does not know, kept as they were.
    version : int
        The file's ``format_version``.
    """

    architecture: dict[str, Any]
    seq_len: int
    n_targets: int
    alphabet: str = ALPHABET
    target_names: list[str]
    target_kind: str
    spec: dict[str, Any] | None = None
    spec_hash: str | None = None
    base: dict[str, Any] | None = None
    genome: str | None = None
    genome_fingerprint: dict[str, Any] | None = None
    store: str | None = None
    train_samples: int | None = None
    package_version: str | None = None
    train: dict[str, Any] | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    model: Mapping[str, torch.Tensor]
    step: int | None = None
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = ("genome_fingerprint",)
    """Optional fields written even when ``None`` (their ``None`` is a recorded value)."""

    @classmethod
    def capture(cls, model: Stateful, state: Stateful | None = None, **record: Any) -> Checkpoint:
        """The checkpoint of ``model`` (its ``state_dict()``) and, for ``last.pt``, the training
        ``state`` (its ``state_dict()``); ``record`` gives the other fields."""
        training = dict(state.state_dict()) if state is not None else None
        return cls(model=model.state_dict(), training=training, **record)

    def with_training(self, state: Stateful) -> Checkpoint:
        """This checkpoint with the training ``state`` (what ``last.pt`` holds besides ``best.pt``'s)."""
        return replace(self, training=dict(state.state_dict()))

    def to_dict(self) -> dict[str, Any]:
        """The file's dict: ``format``, ``format_version``, the recorded fields in order, then :attr:`extra`."""
        out: dict[str, Any] = {"format": FORMAT, "format_version": self.version}
        for f in fields(self):
            if f.name in ("extra", "version"):
                continue
            value = getattr(self, f.name)
            if value is not None or f.name in self.ALWAYS_WRITTEN:
                out[f.name] = value
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: Any, source: str = "checkpoint") -> Checkpoint:
        """Check a loaded checkpoint dict and bring an older layout up to date.

        Older layouts: a ``training`` state without its ``step`` (it was only at the top level) or
        without ``offset`` (0 before batch-size changes on resume); keys recorded since are absent
        (``None``). A bad dict is a :class:`~pipeline.errors.UserError` naming ``source``.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise UserError(f"{source} is not a multiplexer checkpoint")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
            raise UserError(f"{source} has format version {version}, this version reads {FORMAT_VERSION}")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise UserError(f"{source} lacks {', '.join(missing)}")
        if data["alphabet"] != ALPHABET:
            raise UserError(f"{source} uses alphabet {data['alphabet']!r}, expected {ALPHABET!r}")
        known = {f.name for f in fields(cls)} - {"extra", "version"}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in ("format", "format_version")}
        if isinstance(values.get("training"), Mapping):
            training = values["training"] = dict(values["training"])
            training.setdefault("step", data.get("step"))  # it was only at the top level
            training.setdefault("offset", 0)  # 0 before batch-size changes on resume
        if values.get("changes") is None:
            values.pop("changes", None)
        return cls(**values, extra=extra, version=version)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Read a checkpoint file (``weights_only=True``); a bad file is a :class:`~pipeline.errors.UserError`."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"checkpoint {str(path)!r} does not exist")
        source = f"checkpoint {str(path)!r}"
        data = torch_load_safely(path, source)
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise UserError(f"{str(path)!r} is not a multiplexer checkpoint")
        return cls.from_dict(data, source)

    def meta(self) -> dict[str, Any]:
        """Everything but the state dicts (``model``, ``training``), as :meth:`to_dict` writes it."""
        return {k: v for k, v in self.to_dict().items() if k not in ("model", "training")}


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint | Mapping[str, Any]) -> None:
    """Write a checkpoint durably: a temporary file in the same folder, flushed to the disk (``fsync``),
    renamed over ``path``, then the folder flushed.

    ``checkpoint`` is a :class:`Checkpoint`, or a mapping of its fields (written as given, after
    ``format`` and ``format_version``).
    """
    path = Path(path)
    if isinstance(checkpoint, Checkpoint):
        data = checkpoint.to_dict()
    else:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, **checkpoint}
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
    """Read and check a checkpoint (``weights_only=True``) as its dict (:meth:`Checkpoint.to_dict`, older
    layouts brought up to date); a bad file is a :class:`UserError`."""
    return Checkpoint.read(path).to_dict()


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", *, optimize: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the multiplexer of a checkpoint, for inference.

    Parameters
    ----------
    path : path
        A ``best.pt`` or ``last.pt`` written by ``multiplexer train``.
    device : str or torch.device
        Where to put the model.
    optimize : bool
        Rewrite a built-in multiplexer for fast inference
        (:func:`~pipeline.models.inference.optimize_for_inference`: the same function to float32
        rounding, but no longer trainable); ``False`` keeps the trained modules as they are.

    Returns
    -------
    model : nn.Module
        The multiplexer in eval mode, ``[B, 4, L] -> [B, F, 4, L]``.
    meta : dict
        Everything else in the checkpoint (:meth:`Checkpoint.meta`), without the state dicts.
    """
    record = Checkpoint.read(path)
    arch = record.architecture
    model = build_multiplexer(arch["name"], **arch.get("kwargs", {}))
    load_weights(model, record.model, source=f"checkpoint {str(path)!r}")
    model_len = getattr(model, "seq_len", None)
    if model_len is not None and int(model_len) != int(record.seq_len):
        raise UserError(
            f"checkpoint {str(path)!r} records seq_len {record.seq_len} but its model takes sequences of "
            f"length {model_len}"
        )
    model.to(device).eval()
    if optimize:
        optimize_for_inference(model)
    return model, record.meta()


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
