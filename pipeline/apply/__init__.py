"""Using a trained multiplexer (and exact ISM for comparison): the commands after the two stages.

:mod:`~pipeline.apply.inputs` (regions, BED, FASTA), :mod:`~pipeline.apply.outputs` (effects files
and TSVs), :mod:`~pipeline.apply.predict`, :mod:`~pipeline.apply.exact_ism`, :mod:`~pipeline.apply.evaluate`,
:mod:`~pipeline.apply.compare` and :mod:`~pipeline.apply.plot`; the variant-effect commands
(``score-vcf``, ``catalogue``, ``lookup``) in the wing :mod:`~pipeline.apply.variants`. This stage
reads checkpoints (and, for ``evaluate``, stores); it never imports ``distill`` or ``train``. The old
module paths of the wing (``pipeline.apply.vcf``, ...) still import, with a ``DeprecationWarning``
(:mod:`~pipeline.apply._moved`).
"""

from pipeline.apply import _moved

_moved.install()
