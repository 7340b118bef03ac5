"""Genomic intervals: ``chr:start-end`` strings and BED files, merged and cut.

An :class:`Interval` is 0-based and half-open, like BED; written as a region string it is 1-based and
inclusive, like samtools and the UCSC browser (``chr17:1-2000000`` is ``Interval("chr17", 0, 2000000)``).
Splits of a dataset spec name intervals this way (:mod:`pipeline.core.spec`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import SpecError, UserError


@dataclass(frozen=True, order=True)
class Interval:
    """``[start, end)`` on ``chrom``, 0-based and half-open."""

    chrom: str
    start: int
    end: int

    @property
    def length(self) -> int:
        """Bases in the interval."""
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.chrom}:{self.start + 1}-{self.end}"

    def overlaps(self, other: Interval) -> bool:
        """The two intervals share at least one base."""
        return self.chrom == other.chrom and self.start < other.end and other.start < self.end

    def widened(self, margin: int) -> Interval:
        """The interval grown by ``margin`` bases on each side (its start clipped at 0)."""
        return Interval(self.chrom, max(0, self.start - margin), self.end + margin)


MAX_POSITION = 2**62
"""Largest position a region may name: far beyond any genome (the longest known chromosomes are
about 10^10 bases), within htslib's 64-bit positions and numpy's ``int64`` with room for arithmetic.
A larger number is refused with one line instead of overflowing in htslib or numpy."""

VCF_QUERY_MAX = 2**31 - 1
"""Largest position of a region read from an indexed VCF/BCF: pysam's ``VariantFile.fetch`` passes
positions to htslib as 32-bit integers (and overflows beyond)."""


def _position(text: str, value: str, where: str, limit: int = MAX_POSITION) -> int | None:
    """One coordinate of a region (commas allowed; ``None``: not an integer), refused with one line
    beyond ``limit``."""
    try:
        number = int(value.replace(",", ""))
    except ValueError:
        return None
    if number > limit:
        raise SpecError(f"{where}: {text!r}: position {value} is out of range (at most {limit:,})")
    return number


def parse_interval(text: str, where: str = "region") -> Interval:
    """``chr:start-end`` (1-based, inclusive; commas allowed) as an :class:`Interval`.

    The chromosome name may itself hold ``:`` (the last one separates the coordinates).

    Raises
    ------
    SpecError
        When the text is not of that form, ``start < 1``, ``end < start`` or a position is beyond
        :data:`MAX_POSITION`; the message names ``where`` (the option or spec key).
    """
    chrom, sep, span = str(text).strip().rpartition(":")
    first, dash, last = span.partition("-")
    start, end = (_position(text, first, where), _position(text, last, where)) if dash else (None, None)
    if not sep or not chrom or start is None or end is None or start < 1 or end < start:
        raise SpecError(f"{where}: {text!r} is not a region chr:start-end (1-based, inclusive, start <= end)")
    return Interval(chrom, start - 1, end)


def check_region(text: str, where: str = "--region", limit: int = MAX_POSITION) -> str:
    """Check a samtools-style region as htslib reads it (``chr``, ``chr:pos``, ``chr:start-``,
    ``chr:start-end``; 1-based, commas allowed) and return it unchanged.

    Only the coordinates are checked (the chromosome is the file's business): each must be a positive
    integer no larger than ``limit`` (:data:`VCF_QUERY_MAX` for a VCF/BCF query), and ``end >= start``.
    A text whose part after the last ``:`` is not coordinates is taken as a chromosome name (names such
    as ``HLA-A*01:01`` hold ``:``).

    Raises
    ------
    SpecError
        One line naming ``where`` and the offending position.
    """
    chrom, sep, span = str(text).strip().rpartition(":")
    if not sep or not span or not all(c.isdigit() or c in ",-" for c in span):
        return text
    first, _, last = span.partition("-")
    start = _position(text, first, where, limit) if first else 1
    end = _position(text, last, where, limit) if last else start
    if not chrom or start is None or end is None or start < 1 or end < start:
        raise SpecError(f"{where}: {text!r} is not a region chr, chr:pos or chr:start-end (1-based, start <= end)")
    return text


def table_lines(path: Path, what: str, error: type[UserError] = UserError) -> Iterator[tuple[int, str, list[str]]]:
    """The data lines of a whitespace-separated table file (BED, regions): ``(line number, text,
    columns)``, skipping blank lines and lines starting with ``#``, ``track`` or ``browser``.

    Raises
    ------
    UserError
        (``error``) When the file does not exist; ``what`` names it (``"BED file"``).
    """
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith(("#", "track", "browser")):
            yield number, text, text.split()


def read_bed(path: str | os.PathLike[str]) -> list[Interval]:
    """The intervals of a BED file (0-based, half-open; columns after the third are ignored).

    Blank lines and lines starting with ``#``, ``track`` or ``browser`` are skipped.

    Raises
    ------
    SpecError
        When the file is missing, a line is not ``chrom start end ...`` with ``0 <= start < end``,
        or it holds no interval; the message names the file and line.
    """
    path = Path(path)
    out = []
    for number, text, cols in table_lines(path, "BED file", SpecError):
        try:
            start, end = int(cols[1]), int(cols[2])
        except (IndexError, ValueError):
            start = end = -1
        if start < 0 or end <= start:
            raise SpecError(f"{path}:{number}: expected BED 'chrom start end' with 0 <= start < end, got {text[:60]!r}")
        out.append(Interval(cols[0], start, end))
    if not out:
        raise SpecError(f"BED file {str(path)!r} holds no intervals")
    return out


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of ``intervals`` as sorted, non-overlapping intervals (touching ones joined)."""
    out: list[Interval] = []
    for iv in sorted(intervals):
        if out and out[-1].chrom == iv.chrom and iv.start <= out[-1].end:
            last = out[-1]
            out[-1] = Interval(last.chrom, last.start, max(last.end, iv.end))
        else:
            out.append(iv)
    return out


def subtract(interval: Interval, cuts: Iterable[Interval]) -> list[Interval]:
    """The parts of ``interval`` outside every interval of ``cuts``, in order."""
    pieces = []
    pos = interval.start
    for cut in merge(c for c in cuts if c.chrom == interval.chrom):
        if cut.end <= pos or cut.start >= interval.end:
            continue
        if cut.start > pos:
            pieces.append(Interval(interval.chrom, pos, cut.start))
        pos = cut.end
    if pos < interval.end:
        pieces.append(Interval(interval.chrom, pos, interval.end))
    return pieces
