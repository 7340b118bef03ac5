"""Variant effects: ``score-vcf``, the SNV ``catalogue`` and ``lookup``.

:mod:`~pipeline.apply.variants.records` reads VCF/BCF records through pysam;
:mod:`~pipeline.apply.variants.rows` classifies and groups them; :mod:`~pipeline.apply.variants.scorers`
scores groups of variants; :mod:`~pipeline.apply.variants.writers` writes TSV, VCF and Zarr outputs
(and the score semantics); :mod:`~pipeline.apply.variants.parts` holds the parts of a sharded run;
:mod:`~pipeline.apply.variants.score_vcf` runs ``score-vcf``; :mod:`~pipeline.apply.variants.catalogue`
builds a catalogue and :mod:`~pipeline.apply.variants.lookup` answers variants from one.
"""
