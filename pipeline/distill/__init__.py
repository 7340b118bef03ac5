"""Stage 1, ``distill``: sampled windows -> exact ISM of the base model -> the Zarr store.

:mod:`~pipeline.distill.sampling` (reproducible windows of a split), :mod:`~pipeline.distill.units`
(the prepare -> compute -> write executor) and :mod:`~pipeline.distill.run` (:func:`distill`, the main
flow). This stage meets ``train`` only through the store it writes.
"""

from pipeline.core.runtime import Launch, parse_shard
from pipeline.distill.run import DistillSummary, distill
from pipeline.distill.sampling import Window, WindowSampler, split_code

__all__ = ["DistillSummary", "Launch", "Window", "WindowSampler", "distill", "parse_shard", "split_code"]
