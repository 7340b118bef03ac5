"""Base models (``[B, 4, L] -> [B, F]``) and multiplexers (``[B, 4, L] -> [B, F, 4, L]``).

Stable API: :func:`build_base`, :func:`build_multiplexer`, :func:`load_checkpoint`. A model is named
by a built-in name or an import path ``package.module:Class`` / ``path/to/file.py:Class``; weights are
always read with ``torch.load(..., weights_only=True)`` and checked key by key and shape by shape.

Modules: :mod:`~pipeline.models.registry` (names and import paths), :mod:`~pipeline.models.weights`
(safe loading), :mod:`~pipeline.models.base` (the :class:`BaseModel` record of a frozen base model),
:mod:`~pipeline.models.checkpoint` (self-describing training checkpoints: the :class:`Checkpoint` record),
:mod:`~pipeline.models.inference` (a trained multiplexer rewritten for fast inference),
and the architectures :mod:`~pipeline.models.beluga`, :mod:`~pipeline.models.demo`,
:mod:`~pipeline.models.multiplexer`.
"""

from pipeline.core.identity import weights_label  # re-exported: stores, checkpoints and reports name weights alike
from pipeline.models.base import (
    BaseModel,
    base_identity,
    build_base_from_identity,
    build_seeded_base,
    check_weights_choice,
    load_base,
    probe_outputs,
    target_names_for,
)
from pipeline.models.beluga import Beluga
from pipeline.models.checkpoint import (
    INFERENCE_PRECISIONS,
    Checkpoint,
    base_from_checkpoint,
    for_inference,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from pipeline.models.demo import DemoBase
from pipeline.models.inference import optimize_for_inference
from pipeline.models.multiplexer import BelugaMultiplexer, ConvMultiplexer, positional_ramp
from pipeline.models.registry import (
    BASE_MODELS,
    MULTIPLEXERS,
    PUBLISHED_WEIGHTS,
    build_base,
    build_multiplexer,
    import_object,
    model_class,
)
from pipeline.models.weights import file_sha256, load_state_dict_file, load_weights

__all__ = [
    "BASE_MODELS",
    "MULTIPLEXERS",
    "PUBLISHED_WEIGHTS",
    "BaseModel",
    "Beluga",
    "BelugaMultiplexer",
    "Checkpoint",
    "ConvMultiplexer",
    "DemoBase",
    "base_from_checkpoint",
    "base_identity",
    "build_base",
    "build_base_from_identity",
    "build_multiplexer",
    "build_seeded_base",
    "check_weights_choice",
    "file_sha256",
    "import_object",
    "load_base",
    "load_checkpoint",
    "for_inference",
    "INFERENCE_PRECISIONS",
    "load_state_dict_file",
    "load_weights",
    "model_class",
    "optimize_for_inference",
    "positional_ramp",
    "probe_outputs",
    "read_checkpoint",
    "save_checkpoint",
    "target_names_for",
    "weights_label",
]
