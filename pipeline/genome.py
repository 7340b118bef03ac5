"""Genome access with the project's window convention, and the deterministic synthetic genome.

A window is named by chromosome and a 1-based center ``pos``; for length ``L`` it is the 0-based
half-open slice ``[pos - L//2, pos - L//2 + L)`` (for L = 2000: 1-based ``pos-999 … pos+1000``).
A window that does not fit inside its chromosome is an error, never truncated or padded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.motifs import DEMO_MOTIFS

HG19_LENGTHS: dict[str, int] = {
    "chr1": 249_250_621,
    "chr2": 243_199_373,
    "chr3": 198_022_430,
    "chr4": 191_154_276,
    "chr5": 180_915_260,
    "chr6": 171_115_067,
    "chr7": 159_138_663,
    "chr8": 146_364_022,
    "chr9": 141_213_431,
    "chr10": 135_534_747,
    "chr11": 135_006_516,
    "chr12": 133_851_895,
    "chr13": 115_169_878,
    "chr14": 107_349_540,
    "chr15": 102_531_392,
    "chr16": 90_354_753,
    "chr17": 81_195_210,
    "chr18": 78_077_248,
    "chr19": 59_128_983,
    "chr20": 63_025_520,
    "chr21": 48_129_895,
    "chr22": 51_304_566,
    "chrX": 155_270_560,
}
"""hg19 chromosome lengths; the synthetic genome uses them divided by ``divisor``."""


def window_bounds(pos: int, seq_len: int) -> tuple[int, int]:
    """0-based half-open ``(start, end)`` of the window of length ``seq_len`` centred at 1-based ``pos``."""
    start = int(pos) - seq_len // 2
    return start, start + seq_len


def center_range(chrom_len: int, seq_len: int) -> tuple[int, int]:
    """Inclusive range ``(lo, hi)`` of 1-based centers whose window fits in a chromosome."""
    return seq_len // 2, chrom_len - seq_len + seq_len // 2


def parse_region(text: str) -> tuple[str, int]:
    """Parse ``chr:pos`` (1-based center; commas allowed) into ``(chrom, pos)``."""
    chrom, sep, pos = text.strip().rpartition(":")
    if not sep or not chrom:
        raise UserError(f"region {text!r} is not of the form chr:pos")
    try:
        value = int(pos.replace(",", ""))
    except ValueError:
        raise UserError(f"region {text!r}: position {pos!r} is not an integer") from None
    if value < 1:
        raise UserError(f"region {text!r}: position must be >= 1 (1-based)")
    return chrom, value


def _index_mismatch(path: Path, index: dict) -> str | None:
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

    def __init__(self, path: str | os.PathLike) -> None:
        import pyfaidx

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


# ---------------------------------------------------------------------------------------------
# synthetic genome
# ---------------------------------------------------------------------------------------------

_BACKGROUND = np.array([0.29, 0.21, 0.21, 0.29])  # A, G, C, T
_LETTERS = np.frombuffer(b"AGCT", dtype=np.uint8)


def _synth_chrom(rng: np.random.Generator, n: int) -> bytes:
    """One synthetic chromosome: background, planted motifs, soft-masked runs, N gaps."""
    seq = _LETTERS[rng.choice(4, size=n, p=_BACKGROUND)].copy()
    # planted motifs: about one site per 40 bp, a third of them with one mismatch
    n_sites = n // 40
    for _ in range(n_sites):
        _, motif = DEMO_MOTIFS[rng.integers(len(DEMO_MOTIFS))]
        site = np.frombuffer(motif.encode(), dtype=np.uint8).copy()
        if rng.random() < 0.33:
            k = rng.integers(len(site))
            site[k] = _LETTERS[(_LETTERS.tobytes().index(site[k]) + rng.integers(1, 4)) % 4]
        at = rng.integers(0, n - len(site))
        seq[at : at + len(site)] = site
    # soft-masked (lower-case) runs covering roughly 15 %
    for _ in range(max(1, n // 2000)):
        at, width = rng.integers(0, n), rng.integers(50, 300)
        seq[at : at + width] |= 0x20  # ASCII lower case
    # isolated unknown bases and IUPAC codes
    for _ in range(max(2, n // 5000)):
        seq[rng.integers(0, n)] = ord(b"N")
    for code in b"RY":
        seq[rng.integers(0, n)] = code
    # telomere-like N runs at both ends and one centromere-like gap
    edge = max(100, n // 100)
    seq[:edge] = ord(b"N")
    seq[-edge:] = ord(b"N")
    gap_width = max(50, n // 50)
    gap_at = int(rng.integers(n // 3, 2 * n // 3))
    seq[gap_at : gap_at + gap_width] = ord(b"N")
    return seq.tobytes()


def synth_genome(
    path: str | os.PathLike, *, seed: int = 0, divisor: int = 2000, line_width: int = 60
) -> dict[str, int]:
    """Write the deterministic synthetic genome (chr1…chr22, chrX) and its ``.fai`` index.

    Parameters
    ----------
    path : str or Path
        Output FASTA; refused if it exists.
    seed : int
        Same seed and divisor give a byte-identical file.
    divisor : int
        Each chromosome is as long as hg19's divided by this (2000: about 1.55 Mb in total).
    line_width : int
        Bases per FASTA line.

    Returns
    -------
    lengths : dict
        Chromosome name to length.
    """
    import pyfaidx

    path = Path(path)
    if divisor < 1:
        raise UserError(f"divisor must be >= 1, got {divisor}")
    if path.exists():
        raise UserError(f"{str(path)!r} already exists; remove it or choose another path")
    lengths = {name: n // divisor for name, n in HG19_LENGTHS.items()}
    too_short = [name for name, n in lengths.items() if n < 1000]
    if too_short:
        raise UserError(f"divisor {divisor} leaves {too_short[0]} shorter than 1000 bp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        for index, (name, n) in enumerate(lengths.items()):
            rng = np.random.default_rng([seed, index])
            seq = _synth_chrom(rng, n)
            out.write(b">" + name.encode() + b"\n")
            for i in range(0, n, line_width):
                out.write(seq[i : i + line_width] + b"\n")
    os.replace(tmp, path)
    pyfaidx.Faidx(str(path)).close()
    return lengths
