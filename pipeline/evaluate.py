"""Compatibility module: ``pipeline.evaluate`` as it was before the package was layered.

The metric moved to :mod:`pipeline.metrics` and the ``evaluate`` command's work to
:mod:`pipeline.apply.evaluate`. These names keep working for code written against the old path
(``from pipeline.evaluate import weighted_pearson``), each use with a :class:`DeprecationWarning` that
names its new home.
"""

from pipeline.core.deprecation import moved_names

__getattr__ = moved_names(
    "pipeline.evaluate",
    {
        "PearsonAccumulator": "pipeline.metrics",
        "nanmean": "pipeline.metrics",
        "weighted_pearson": "pipeline.metrics",
        "evaluate": "pipeline.apply.evaluate",
        "pearson_histogram": "pipeline.apply.evaluate",
    },
)
