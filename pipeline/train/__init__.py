"""Stage 2, ``train``: stream a store into a multiplexer, with validation, checkpoints and exact resume.

:mod:`~pipeline.train.data` (the store as a Dataset and a rank-aware, block-shuffled batch order),
:mod:`~pipeline.train.config` (overrides, schedule, precision, architecture arguments),
:mod:`~pipeline.train.state` (:class:`TrainState` and the run folder), :mod:`~pipeline.train.changes`
(what ``--resume`` may change), :mod:`~pipeline.train.loop` (:func:`train` and the loop),
:mod:`~pipeline.train.sync_bn` and :mod:`~pipeline.train.logging`.
This stage meets ``distill`` only through the store, and the commands that use a trained model only
through its checkpoints.
"""

from pipeline.train.config import lr_factor, multiplexer_kwargs, resolve_source, train_config
from pipeline.train.logging import METRIC_FIELDS
from pipeline.train.loop import Trainer, TrainResult, sample_losses, train, validate
from pipeline.train.state import RunDir, TrainState

__all__ = [
    "METRIC_FIELDS",
    "RunDir",
    "TrainResult",
    "TrainState",
    "Trainer",
    "lr_factor",
    "multiplexer_kwargs",
    "resolve_source",
    "sample_losses",
    "train",
    "train_config",
    "validate",
]
