"""Base models (``[B, 4, L] -> [B, F]``) and multiplexers (``[B, 4, L] -> [B, F, 4, L]``).

Stable API: :func:`build_base`, :func:`build_multiplexer`, :func:`load_checkpoint`. A model is named
by a built-in name or an import path ``package.module:Class`` / ``path/to/file.py:Class``; weights are
always read with ``torch.load(..., weights_only=True)`` and checked key by key and shape by shape.
"""

from pipeline.models.beluga import Beluga
from pipeline.models.checkpoint import base_from_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from pipeline.models.demo import DemoBase
from pipeline.models.multiplexer import BelugaMultiplexer, ConvMultiplexer, positional_ramp
from pipeline.models.registry import (
    BASE_MODELS,
    MULTIPLEXERS,
    build_base,
    build_multiplexer,
    file_sha256,
    import_object,
    load_state_dict_file,
    load_weights,
)

__all__ = [
    "BASE_MODELS",
    "MULTIPLEXERS",
    "Beluga",
    "BelugaMultiplexer",
    "ConvMultiplexer",
    "DemoBase",
    "base_from_checkpoint",
    "build_base",
    "build_multiplexer",
    "file_sha256",
    "import_object",
    "load_checkpoint",
    "load_state_dict_file",
    "load_weights",
    "positional_ramp",
    "read_checkpoint",
    "save_checkpoint",
]
