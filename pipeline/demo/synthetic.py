"""The deterministic synthetic genome of the demo and the tests: hg19's chromosomes, scaled down.

Each chromosome is background sequence with the demo motifs (:data:`pipeline.models.motifs.DEMO_MOTIFS`)
planted, exact and with one mismatch, soft-masked (lower-case) runs, isolated ``N`` and IUPAC codes,
telomere-like ``N`` runs at both ends and a centromere-like gap. The same seed and divisor give a
byte-identical file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyfaidx

from pipeline.core.files import staging
from pipeline.errors import UserError, WriteError
from pipeline.models.motifs import DEMO_MOTIFS

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
    path: str | os.PathLike[str], *, seed: int = 0, divisor: int = 2000, line_width: int = 60
) -> dict[str, int]:
    """Write the deterministic synthetic genome (chr1…chr22, chrX) and its ``.fai`` index.

    Parameters
    ----------
    path : str or Path
        Output FASTA; refused if it exists. Written with its index under a temporary name beside it
        (temporaries of killed runs are removed first) and renamed when complete.
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
    path = Path(path)
    if divisor < 1:
        raise UserError(f"divisor must be >= 1, got {divisor}")
    if os.path.lexists(path):
        raise UserError(f"{str(path)!r} already exists; remove it or choose another path")
    lengths = {name: n // divisor for name, n in HG19_LENGTHS.items()}
    too_short = [name for name, n in lengths.items() if n < 1000]
    if too_short:
        raise UserError(f"divisor {divisor} leaves {too_short[0]} shorter than 1000 bp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with staging(path) as stage:  # the FASTA, then its index, published once both are complete
            fasta = stage.path(path)
            stage.path(path.with_name(path.name + ".fai"))
            _write_fasta(fasta, lengths, seed, line_width)
            pyfaidx.Faidx(str(fasta)).close()  # writes <staged FASTA>.fai
    except OSError as exc:
        raise WriteError(f"cannot write genome {str(path)!r}: {exc.strerror or exc}") from None
    return lengths


def _write_fasta(path: Path, lengths: dict[str, int], seed: int, line_width: int) -> None:
    with open(path, "wb") as out:
        for index, (name, n) in enumerate(lengths.items()):
            rng = np.random.default_rng([seed, index])
            seq = _synth_chrom(rng, n)
            out.write(b">" + name.encode() + b"\n")
            for i in range(0, n, line_width):
                out.write(seq[i : i + line_width] + b"\n")
