"""multiplexer: distil a sequence model into a one-pass predictor of every single-nucleotide variant.

The package is layered (see ``docs/architecture.md``; ``make lint`` checks it): :mod:`pipeline.cli`
and :mod:`pipeline.demo` on top; the stages :mod:`pipeline.distill`, :mod:`pipeline.train` and
:mod:`pipeline.apply`, which never import each other; :mod:`pipeline.store`, :mod:`pipeline.ism`
and :mod:`pipeline.metrics`; :mod:`pipeline.models`; and :mod:`pipeline.core` with
:mod:`pipeline.errors` at the bottom.
"""

__version__ = "0.1.0"
