"""Transcription-factor-like motifs shared by the synthetic genome and the demo base model.

The synthetic genome (:func:`pipeline.demo.synthetic.synth_genome`) plants these motifs, exact and with one
mismatch; the demo base model's first convolution has one filter matching each, so in-silico
mutagenesis of the demo model shows real, interpretable structure at the planted sites.
"""

from __future__ import annotations

DEMO_MOTIFS: tuple[tuple[str, str], ...] = (
    ("AP1", "TGACTCA"),
    ("CTCF", "CCACCAGGGG"),
    ("GATA", "AGATAAG"),
    ("EBOX", "CACGTG"),
    ("CRE", "TGACGTCA"),
    ("ETS", "CCGGAAGT"),
    ("NRF1", "GCGCATGCGC"),
    ("SP1", "GGGGCGGGG"),
    ("TATA", "TATAAAAG"),
    ("FOX", "TGTTTAC"),
)
"""``(name, consensus)`` pairs, all at most :data:`MOTIF_WIDTH` long."""

MOTIF_WIDTH = 10
