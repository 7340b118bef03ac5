"""Genome access with the project's window convention (:mod:`pipeline.core.windows`).

A window is named by chromosome and a 1-based center ``pos``; for length ``L`` it is the 0-based
half-open slice ``[pos - L//2, pos - L//2 + L)`` (for L = 2000: 1-based ``pos-999 … pos+1000``).
A window that does not fit inside its chromosome is an error, never truncated or padded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyfaidx

from pipeline.core.windows import center_range, window_bounds
from pipeline.errors import UserError


def _index_mismatch(path: Path, index: dict[str, Any]) -> str | None:
    """Check each ``.fai`` record against the FASTA's bytes (a stale or edited index would otherwise
    read the wrong bases silently): the sequence must start right after a header line and end where
    the next header (or the file) begins. Two small reads per record; ``None`` when all agree."""
    size = path.stat().st_size
    last = max(index, key=lambda name: index[name].offset, default=None)
    with open(path, "rb") as handle:
        for name, rec in index.items():
            # just past the last base: full lines of lenb bytes, then the rest of the last line
            last_line, in_line = divmod(rec.rlen - 1, rec.lenc) if rec.lenc and rec.rlen else (0, -1)
            end = rec.offset + last_line * rec.lenb + in_line + 1
            if rec.offset < 1 or end > size:
                return f"record {name!r}: length {rec.rlen} at offset {rec.offset} runs past the end of the file"
            handle.seek(rec.offset - 1)
            if handle.read(1) != b"\n":
                return f"record {name!r}: offset {rec.offset} is not the start of a sequence line"
            handle.seek(end)
            after = handle.read(256).lstrip(b"\r\n")
            if after and not after.startswith(b">"):
                return f"record {name!r}: its sequence does not end after the {rec.rlen} bases the index says"
            if name == last and after:
                return f"the FASTA has records after {name!r}, the last one the index lists"
    return None


class Genome:
    """A FASTA genome read through its ``.fai`` index (built by pyfaidx when absent).

    Parameters
    ----------
    path : str or Path
        FASTA file. Sequences keep their case; :func:`pipeline.encoding.one_hot` treats lower case
        like upper case.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"genome FASTA {str(self.path)!r} does not exist")
        if self.path.stat().st_size == 0:
            raise UserError(f"genome FASTA {str(self.path)!r} is empty")
        with open(self.path, "rb") as handle:
            head = handle.read(65536)
        if head.startswith(b"\x1f\x8b"):
            raise UserError(f"genome FASTA {str(self.path)!r} is gzip-compressed; decompress it first (gunzip)")
        if not head.startswith(b">"):
            raise UserError(f"genome FASTA {str(self.path)!r} does not start with a '>' header line")
        if b"\r" in head:
            raise UserError(
                f"genome FASTA {str(self.path)!r} has Windows (CRLF) line endings; "
                "convert it first, e.g. with `dos2unix`"
            )
        fai = self.path.with_name(self.path.name + ".fai")
        had_index = fai.is_file()
        try:
            self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=False, build_index=True)
        except Exception as exc:  # pyfaidx raises several types for malformed files and indexes
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            if had_index and fai.is_file():
                raise UserError(
                    f"cannot read genome FASTA {str(self.path)!r}: its index {str(fai)!r} is corrupt ({detail}); "
                    "delete the .fai and it is rebuilt"
                ) from None
            raise UserError(f"cannot read genome FASTA {str(self.path)!r}: {detail}") from None
        self.chrom_lengths: dict[str, int] = {name: len(record) for name, record in self._fasta.records.items()}
        if not self.chrom_lengths:  # the file starts with a header, so it has at least one record
            raise UserError(
                f"genome index {str(fai)!r} lists no sequences, but {str(self.path)!r} has some; "
                "delete the .fai and it is rebuilt"
            )
        problem = _index_mismatch(self.path, self._fasta.faidx.index)
        if problem:
            raise UserError(
                f"genome index {str(fai)!r} does not match {str(self.path)!r} ({problem}); "
                "delete the .fai and it is rebuilt"
            )

    def __contains__(self, chrom: str) -> bool:
        return chrom in self.chrom_lengths

    def length(self, chrom: str) -> int:
        """Length of ``chrom``; a missing chromosome is a :class:`UserError`."""
        try:
            return self.chrom_lengths[chrom]
        except KeyError:
            names = ", ".join(list(self.chrom_lengths)[:6])
            raise UserError(f"chromosome {chrom!r} is not in genome {str(self.path)!r} (it has {names}, ...)") from None

    def fetch(self, chrom: str, start: int, end: int) -> str:
        """Sequence of the 0-based half-open interval ``[start, end)``; must lie inside ``chrom``."""
        n = self.length(chrom)
        if start < 0 or end > n or start >= end:
            raise UserError(f"interval {chrom}:{start}-{end} (0-based) is outside chromosome {chrom} of length {n}")
        try:
            seq = str(self._fasta[chrom][start:end])
        except Exception as exc:
            raise UserError(f"cannot read {chrom}:{start}-{end} from {str(self.path)!r}: {exc}") from None
        if len(seq) != end - start:
            raise UserError(
                f"genome {str(self.path)!r} returned {len(seq)} bases for {chrom}:{start}-{end}; "
                "the FASTA or its .fai index is corrupt"
            )
        return seq

    def window(self, chrom: str, pos: int, seq_len: int) -> str:
        """The window of length ``seq_len`` centred at 1-based ``pos`` (see module docstring)."""
        n = self.length(chrom)
        start, end = window_bounds(pos, seq_len)
        if start < 0 or end > n:
            lo, hi = center_range(n, seq_len)
            raise UserError(
                f"window {chrom}:{pos} of length {seq_len} does not fit in {chrom} (length {n}); "
                f"centers must lie in {lo}..{hi}"
            )
        return self.fetch(chrom, start, end)
