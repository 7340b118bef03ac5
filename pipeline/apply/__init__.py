"""Using a trained multiplexer (and exact ISM for comparison): the commands after the two stages.

:mod:`~pipeline.apply.inputs` (regions, BED, FASTA), :mod:`~pipeline.apply.outputs` (effects files
and TSVs), :mod:`~pipeline.apply.predict`, :mod:`~pipeline.apply.exact_ism`, :mod:`~pipeline.apply.vcf`
(``score-vcf``), :mod:`~pipeline.apply.evaluate` and :mod:`~pipeline.apply.plot`. This stage reads
checkpoints (and, for ``evaluate``, stores); it never imports ``distill`` or ``train``.
"""
