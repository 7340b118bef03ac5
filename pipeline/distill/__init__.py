"""Stage 1, ``distill``: sampled windows -> exact ISM of the base model -> the Zarr store.

:mod:`~pipeline.distill.sampling` (reproducible windows of a split), :mod:`~pipeline.distill.check`
(every split can be sampled, checked before anything is written), :mod:`~pipeline.distill.units`
(the prepare -> compute -> write executor) and :mod:`~pipeline.distill.run` (:func:`distill`, the main
flow). This stage meets ``train`` only through the store it writes.
"""

from pipeline.core.commands import DistillOptions
from pipeline.core.runtime import Launch, parse_shard
from pipeline.distill.check import SplitCheck, check_spec, check_splits, format_checks, require_valid_split
from pipeline.distill.run import DistillSummary, distill
from pipeline.distill.sampling import Window, WindowSampler, split_code, split_samplers, split_segments

__all__ = [
    "DistillOptions",
    "DistillSummary",
    "Launch",
    "SplitCheck",
    "Window",
    "WindowSampler",
    "check_spec",
    "check_splits",
    "distill",
    "format_checks",
    "parse_shard",
    "require_valid_split",
    "split_code",
    "split_samplers",
    "split_segments",
]
