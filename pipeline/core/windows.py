"""The window convention, in one place: every module that maps between genome and window uses this.

A window is named by chromosome and a 1-based center ``pos``. For length ``L`` it covers the 1-based
positions ``pos - L//2 + 1 … pos + L - L//2``, i.e. the 0-based half-open slice
``[pos - L//2, pos - L//2 + L)``; window index ``j`` is 1-based position ``pos - L//2 + 1 + j``.
For ``L = 2000`` and ``chr8:1000000`` the window is 1-based ``999001 … 1001000``.
"""

from __future__ import annotations

from pipeline.errors import UserError


def window_bounds(pos: int, seq_len: int) -> tuple[int, int]:
    """0-based half-open ``(start, end)`` of the window of length ``seq_len`` centred at 1-based ``pos``."""
    start = int(pos) - seq_len // 2
    return start, start + seq_len


def first_position(pos: int, seq_len: int) -> int:
    """1-based genomic position of window index 0 of the window centred at ``pos``."""
    return int(pos) - seq_len // 2 + 1


def center_of(first: int, seq_len: int) -> int:
    """1-based center of the window whose index 0 is the 1-based position ``first``."""
    return int(first) + seq_len // 2 - 1


def center_index(seq_len: int) -> int:
    """0-based window index of the center position: ``L//2 - 1`` (999 of 2000, as DeepSEA/ExPecto)."""
    return seq_len // 2 - 1


def default_core(seq_len: int) -> int:
    """The default width of a window's *core*, the positions read from one window: ``L // 4``.

    Shared ``score-vcf`` windows take variants spanning at most this many bases (``--group-span``) and
    catalogue tiles are this many bases apart (``--stride``), so every position read keeps at least
    ``3L/8`` of context on both sides (measured on the demo: ``docs/decisions.md``).
    """
    return max(1, seq_len // 4)


def center_range(chrom_len: int, seq_len: int) -> tuple[int, int]:
    """Inclusive range ``(lo, hi)`` of 1-based centers whose window fits in a chromosome."""
    return seq_len // 2, chrom_len - seq_len + seq_len // 2


def bed_center(start: int, end: int) -> int:
    """1-based center of the window for a BED interval ``[start, end)`` (0-based, half-open).

    ``start + (end - start) // 2``, so a BED interval of exactly ``L`` bases is that window.
    """
    return start + (end - start) // 2


def fitted_first(first: int, last: int, chrom_len: int, seq_len: int) -> int:
    """1-based index-0 position of the window of length ``seq_len`` centred on positions ``first..last``.

    Shifted to fit inside the chromosome when the centred window would not; the result always
    contains ``first`` and ``last`` (which must span at most ``seq_len`` bases).
    """
    span = last - first + 1
    if span > seq_len or chrom_len < seq_len:
        raise ValueError(f"positions {first}..{last} do not fit in one window of {seq_len} in {chrom_len} bp")
    start = first - (seq_len - span) // 2
    return min(max(start, 1), chrom_len - seq_len + 1)


def parse_region(text: str) -> tuple[str, int]:
    """Parse ``chr:pos`` (1-based center; commas allowed) into ``(chrom, pos)``."""
    chrom, sep, pos = text.strip().rpartition(":")
    if not sep or not chrom:
        raise UserError(f"region {text!r} is not of the form chr:pos")
    _refuse_range(text, chrom, pos)
    try:
        value = int(pos.replace(",", ""))
    except ValueError:
        raise UserError(f"region {text!r}: position {pos!r} is not an integer") from None
    if value < 1:
        raise UserError(f"region {text!r}: position must be >= 1 (1-based)")
    return chrom, value


def _refuse_range(text: str, chrom: str, pos: str) -> None:
    """``chr:start-end`` where a window centre ``chr:pos`` is expected: say what to give instead."""
    first, dash, last = pos.replace(",", "").partition("-")
    if not dash or not first.isdigit() or not last.isdigit() or int(first) < 1 or int(last) < int(first):
        return
    center = bed_center(int(first) - 1, int(last))
    raise UserError(
        f"region {text!r} is a range, but --region takes one window centre chr:pos: --region {chrom}:{center} "
        f"is the window centred on it, and --regions FILE takes ranges as BED lines ({chrom} {int(first) - 1} "
        f"{last}: 0-based start, end) or 'chr pos' lines"
    )
