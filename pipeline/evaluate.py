"""Compatibility module: ``pipeline.evaluate`` as it was before the package was layered.

The metric moved to :mod:`pipeline.metrics` and the ``evaluate`` command's work to
:mod:`pipeline.apply.evaluate`; these names keep working for code written against the old path
(``from pipeline.evaluate import weighted_pearson``). New code should import from the new homes.
"""

from pipeline.apply.evaluate import evaluate, pearson_histogram
from pipeline.metrics import PearsonAccumulator, nanmean, weighted_pearson

__all__ = ["PearsonAccumulator", "evaluate", "nanmean", "pearson_histogram", "weighted_pearson"]
