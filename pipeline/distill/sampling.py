"""Split-aware, reproducible sampling of genome windows.

Within a split, a chromosome is drawn with probability proportional to its length, then a center
uniformly among the positions whose window fits; a window with more than ``max_n`` unknown bases
(``N``/``n`` or any other non-ACGT character) is rejected and both draws are repeated. Sample ``k``
of split ``s`` uses its own generator seeded by ``(spec seed, split code, k)``, so any sample can be
recomputed alone, by any worker, in any order, with identical results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.encoding import base_codes
from pipeline.core.genome import Genome
from pipeline.core.spec import SPLIT_NAMES, Spec
from pipeline.core.windows import center_range
from pipeline.errors import UserError

MAX_DRAWS = 1000
"""Draws per sample before giving up on finding a window with at most ``max_n`` unknown bases."""


@dataclass(frozen=True)
class Window:
    """One sampled window: chromosome, 1-based center and its sequence (length ``L``)."""

    chrom: str
    center: int
    seq: str


def split_code(split: str) -> int:
    """Stable integer of a split name, part of every sample's seed."""
    return SPLIT_NAMES.index(split)


class WindowSampler:
    """Draw the windows of one split of a spec.

    Parameters
    ----------
    genome : Genome
        The spec's genome.
    spec : Spec
        Gives the seed, window length, ``max_n`` and the split's chromosomes.
    split : str
        ``train``, ``valid`` or ``test``.
    """

    def __init__(self, genome: Genome, spec: Spec, split: str) -> None:
        if split not in spec.splits:
            raise UserError(f"spec {spec.name!r} has no split {split!r} (it has {', '.join(spec.splits)})")
        self.genome, self.spec, self.split = genome, spec, split
        seq_len = spec.seq_len
        chroms = spec.splits[split].chroms
        lengths = np.array([genome.length(c) for c in chroms], dtype=np.float64)
        fits = lengths >= seq_len
        if not fits.any():
            raise UserError(f"split {split!r}: no chromosome of {', '.join(chroms)} is at least {seq_len} bp long")
        self.chroms = [c for c, ok in zip(chroms, fits) if ok]
        self.lengths = lengths[fits].astype(np.int64)
        self.probs = lengths[fits] / lengths[fits].sum()

    def __call__(self, index: int) -> Window:
        """Sample ``index`` of the split (deterministic in ``(seed, split, index)``)."""
        spec = self.spec
        rng = np.random.default_rng([spec.seed, split_code(self.split), int(index)])
        for _ in range(MAX_DRAWS):
            k = int(rng.choice(len(self.chroms), p=self.probs))
            lo, hi = center_range(int(self.lengths[k]), spec.seq_len)
            center = int(rng.integers(lo, hi + 1))
            seq = self.genome.window(self.chroms[k], center, spec.seq_len)
            if int((base_codes(seq) == 4).sum()) <= spec.max_n:
                return Window(self.chroms[k], center, seq)
        raise UserError(
            f"split {self.split!r}: no window with at most max_n={spec.max_n} unknown bases in "
            f"{MAX_DRAWS} draws for sample {index}; the split's chromosomes are mostly N"
        )
