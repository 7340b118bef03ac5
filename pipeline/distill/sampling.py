"""Split-aware, reproducible sampling of genome windows.

A split samples from its segments (:func:`split_segments`): its whole chromosomes, less the other
splits' intervals widened by the window length, and its own intervals. A segment is drawn with
probability proportional to its length, then a center uniformly among the positions whose window
lies inside it (for a split of whole chromosomes: a chromosome by its length, then any center whose
window fits, as before intervals existed); a window with more than ``max_n`` unknown bases
(``N``/``n`` or any other non-ACGT character) is rejected and both draws are repeated. Sample ``k``
of split ``s`` uses its own generator seeded by ``(spec seed, split code, k)``, so any sample can be
recomputed alone, by any worker, in any order, with identical results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.core.encoding import base_codes
from pipeline.core.genome import Genome
from pipeline.core.intervals import Interval, merge, subtract
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


def split_segments(spec: Spec, genome: Genome) -> dict[str, list[Interval]]:
    """The intervals each split samples windows from; a window lies inside one of its split's.

    A split's whole chromosomes lose every other split's intervals widened by ``L`` on each side
    (so a window of one split is at least ``L`` bases from a window of another); its own intervals
    are merged where they overlap.

    Parameters
    ----------
    spec : Spec
        Gives the splits and ``L``.
    genome : Genome
        Gives the chromosome lengths.

    Raises
    ------
    UserError
        When a chromosome or an interval of a split is not in the genome (or runs past its end).
    """
    lengths = {}
    for name, split in spec.splits.items():
        try:
            lengths.update({c: genome.length(c) for c in split.chroms + tuple(r.chrom for r in split.regions)})
        except UserError as exc:
            raise UserError(f"split {name!r}: {exc}") from None
        for region in split.regions:
            if region.end > lengths[region.chrom]:
                raise UserError(
                    f"split {name!r}: region {region} runs past the end of {region.chrom} "
                    f"({lengths[region.chrom]:,} bp)"
                )
    out = {}
    for name, split in spec.splits.items():
        others = [r.widened(spec.seq_len) for other, s in spec.splits.items() if other != name for r in s.regions]
        whole = [piece for c in split.chroms for piece in subtract(Interval(c, 0, lengths[c]), others)]
        out[name] = whole + merge(split.regions)
    return out


def split_samplers(
    spec: Spec, genome: Genome, segments: Mapping[str, list[Interval]] | None = None
) -> dict[str, WindowSampler]:
    """A :class:`WindowSampler` for every split of ``spec``, by split, in the spec's order.

    ``segments`` are :func:`split_segments` of ``spec`` and ``genome`` (computed when not given), so a
    caller that needs them too computes them once.
    """
    segments = segments if segments is not None else split_segments(spec, genome)
    return {name: WindowSampler(genome, spec, name, segments[name]) for name in spec.splits}


class WindowSampler:
    """Draw the windows of one split of a spec.

    Parameters
    ----------
    genome : Genome
        The spec's genome.
    spec : Spec
        Gives the seed, window length, ``max_n`` and the split's chromosomes and intervals.
    split : str
        ``train``, ``valid`` or ``test``.
    segments : list of Interval, optional
        The split's segments (default: :func:`split_segments` of the genome).
    """

    def __init__(self, genome: Genome, spec: Spec, split: str, segments: list[Interval] | None = None) -> None:
        if split not in spec.splits:
            raise UserError(f"spec {spec.name!r} has no split {split!r} (it has {', '.join(spec.splits)})")
        self.genome, self.spec, self.split = genome, spec, split
        if segments is None:
            segments = split_segments(spec, genome)[split]
        seq_len = spec.seq_len
        self.segments = [s for s in segments if s.length >= seq_len]
        if not self.segments:
            raise UserError(f"split {split!r}: {_too_short(segments, seq_len)}")
        lengths = np.array([s.length for s in self.segments], dtype=np.float64)
        self.probs = lengths / lengths.sum()

    @property
    def windows(self) -> int:
        """Distinct windows the split can draw (positions whose window lies inside a segment)."""
        return sum(s.length - self.spec.seq_len + 1 for s in self.segments)

    def draw(self, rng: np.random.Generator) -> tuple[str, int]:
        """One candidate window, ``(chrom, 1-based center)``: a segment by its length, then a center."""
        segment = self.segments[int(rng.choice(len(self.segments), p=self.probs))]
        first, last = center_range(segment.length, self.spec.seq_len)  # the window formula, for the segment
        return segment.chrom, int(rng.integers(segment.start + first, segment.start + last + 1))

    def accepts(self, seq: str) -> bool:
        """The window has at most ``max_n`` unknown bases."""
        return int((base_codes(seq) == 4).sum()) <= self.spec.max_n

    def __call__(self, index: int) -> Window:
        """Sample ``index`` of the split (deterministic in ``(seed, split, index)``)."""
        spec, L = self.spec, self.spec.seq_len
        rng = np.random.default_rng([spec.seed, split_code(self.split), int(index)])
        for _ in range(MAX_DRAWS):
            chrom, center = self.draw(rng)
            seq = self.genome.window(chrom, center, L)
            if self.accepts(seq):
                return Window(chrom, center, seq)
        raise UserError(
            f"split {self.split!r}: no window with at most max_n={spec.max_n} unknown bases in "
            f"{MAX_DRAWS} draws for sample {index}; the split's sequence is mostly N"
        )


def _too_short(segments: list[Interval], seq_len: int) -> str:
    if not segments:
        return "the other splits' intervals (and a margin of the window length) leave it no sequence"
    names = ", ".join(str(s) for s in segments[:4]) + (", ..." if len(segments) > 4 else "")
    return f"none of its sequence ({names}) is at least the window length, {seq_len} bp, long"
