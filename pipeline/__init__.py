"""multiplexer: distil a sequence model into a one-pass predictor of every single-nucleotide variant.

The package is organised by concern: :mod:`pipeline.encoding` (alphabet and one-hot),
:mod:`pipeline.genome` (windows and the synthetic genome), :mod:`pipeline.sampling`,
:mod:`pipeline.spec`, :mod:`pipeline.models`, :mod:`pipeline.ism`, :mod:`pipeline.store`,
:mod:`pipeline.distill` (stage 1), :mod:`pipeline.data` and :mod:`pipeline.train` (stage 2),
:mod:`pipeline.predict`, :mod:`pipeline.evaluate`, :mod:`pipeline.plot` and :mod:`pipeline.demo`.
:mod:`pipeline.cli` only parses arguments and dispatches to them.
"""

__version__ = "0.1.0"
