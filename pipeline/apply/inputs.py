"""Inputs of ``predict`` and ``ism``: genomic regions or FASTA sequences, one-hot encoded.

Region files hold either two columns ``chr pos`` (1-based window center, the original tool's format)
or BED intervals ``chr start end ...`` (0-based, half-open), whose window is centred at
``start + (end - start) // 2`` (so a BED interval of exactly ``L`` bases is that window). Blank lines
and lines starting with ``#``, ``track`` or ``browser`` are skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.core.encoding import one_hot
from pipeline.core.genome import Genome
from pipeline.core.intervals import table_lines
from pipeline.core.windows import bed_center, parse_region
from pipeline.errors import UserError


@dataclass
class Inputs:
    """Encoded inputs: ``X [N, 4, L]`` uint8 with their names (``chrom``) and 1-based ``center``
    (0 for FASTA sequences, which have no genomic position)."""

    X: np.ndarray
    chrom: list[str]
    center: np.ndarray


def read_regions(path: str | Path) -> list[tuple[str, int]]:
    """Read a regions file (``chr pos`` or BED) into ``(chrom, center)`` pairs."""
    path = Path(path)
    regions = []
    for number, text, cols in table_lines(path, "regions file"):
        try:
            if len(cols) == 2:
                chrom, pos = cols[0], int(cols[1].replace(",", ""))
            elif len(cols) >= 3:
                start, end = int(cols[1]), int(cols[2])
                if end <= start or start < 0:
                    raise ValueError
                chrom, pos = cols[0], bed_center(start, end)
            else:
                raise ValueError
        except ValueError:
            raise UserError(
                f"{str(path)}:{number}: expected 'chr pos' or BED 'chr start end', got {text[:60]!r}"
            ) from None
        if pos < 1:
            raise UserError(f"{str(path)}:{number}: position {pos} must be >= 1")
        regions.append((chrom, pos))
    if not regions:
        raise UserError(f"regions file {str(path)!r} holds no regions")
    return regions


def read_fasta_sequences(path: str | Path, seq_len: int) -> Inputs:
    """Read every record of a FASTA file; each must be exactly ``seq_len`` bases."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"FASTA file {str(path)!r} does not exist")
    names: list[str] = []
    seqs: list[str] = []
    current: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith(">"):
            if names:
                seqs.append("".join(current))
            names.append(line[1:].split()[0] if line[1:].split() else f"seq{len(names)}")
            current = []
        elif line:
            if not names:
                raise UserError(f"FASTA file {str(path)!r} does not start with a '>' header")
            current.append(line)
    if names:
        seqs.append("".join(current))
    if not names:
        raise UserError(f"FASTA file {str(path)!r} holds no sequences")
    for name, seq in zip(names, seqs):
        if len(seq) != seq_len:
            raise UserError(f"sequence {name!r} in {str(path)!r} has length {len(seq)}; the model needs {seq_len}")
    return Inputs(np.stack([one_hot(s) for s in seqs]), names, np.zeros(len(names), dtype=np.int64))


def require_bases(inputs: Inputs) -> None:
    """Refuse a window or sequence that is all ``N`` (no base to mutate: every effect would be 0 by
    definition, so it is almost certainly a region in an assembly gap, chosen by mistake)."""
    empty = np.flatnonzero(~inputs.X.reshape(len(inputs.X), -1).any(axis=1))
    if empty.size:
        i = int(empty[0])
        chrom, center = inputs.chrom[i], int(inputs.center[i])
        name = f"window {chrom}:{center}" if center > 0 else f"sequence {chrom!r}"
        more = f" (and {empty.size - 1} more)" if empty.size > 1 else ""
        raise UserError(
            f"{name} of length {inputs.X.shape[-1]} is all N{more}: it has no variants to score; choose another region"
        )


def resolve_genome(explicit: str | Path | None, recorded: str | Path | None, source: str) -> str | None:
    """The genome to read regions from: ``--genome`` when given, else the one ``source`` recorded.

    Parameters
    ----------
    explicit : path, optional
        ``--genome``; it overrides the recorded genome.
    recorded : path, optional
        The genome recorded in the checkpoint (or spec) at distillation time.
    source : str
        What recorded it, for the message when the recorded file is gone (``"the checkpoint"``).
    """
    if explicit is not None:
        return str(explicit)
    if recorded is None:
        return None
    if not Path(recorded).is_file():
        raise UserError(f"the genome recorded in {source}, {str(recorded)!r}, does not exist; pass --genome FASTA")
    return str(recorded)


def _stderr(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def open_genome(
    path: str | Path,
    recorded: Mapping[str, Any] | None = None,
    notify: Callable[[str], None] | None = None,
) -> Genome:
    """Open the genome that regions or variants are read from, warning when it is not the genome the
    model was distilled from.

    Parameters
    ----------
    path : path
        Genome FASTA.
    recorded : mapping, optional
        The checkpoint's ``genome_fingerprint`` (:meth:`Genome.fingerprint` at distillation time);
        ``None`` (no record, or not a checkpoint): nothing to compare.
    notify : callable, optional
        Receives the one-line warning (default: stderr).
    """
    genome = Genome(path, notify=notify)
    if recorded is not None:
        difference = genome.difference(recorded)  # the sample first, then the full digest
        if difference is not None:
            (notify or _stderr)(
                f"warning: genome {str(path)!r} is not the genome the model was distilled from ({difference}); "
                "positions and reference bases may not be what the model learned"
            )
    return genome


def load_inputs(
    *,
    seq_len: int,
    genome: str | Path | None = None,
    region: str | None = None,
    regions_file: str | Path | None = None,
    fasta: str | Path | None = None,
    recorded_fingerprint: Mapping[str, Any] | None = None,
) -> Inputs:
    """Encode exactly one of ``region`` (``chr:pos``), ``regions_file`` or ``fasta``; regions are read
    through :func:`open_genome` (``recorded_fingerprint``: the checkpoint's)."""
    if sum(x is not None for x in (region, regions_file, fasta)) != 1:
        raise UserError("give exactly one of --region, --regions or --fasta")
    if fasta is not None:
        return read_fasta_sequences(fasta, seq_len)
    regions = [parse_region(region)] if region is not None else read_regions(str(regions_file))
    return encode_regions(regions, seq_len=seq_len, genome=genome, recorded_fingerprint=recorded_fingerprint)


def encode_regions(
    regions: Sequence[tuple[str, int]],
    *,
    seq_len: int,
    genome: str | Path | None,
    recorded_fingerprint: Mapping[str, Any] | None = None,
) -> Inputs:
    """The windows of ``regions`` (``(chrom, 1-based centre)``) of ``genome``, one-hot, read through
    :func:`open_genome` (``recorded_fingerprint``: the checkpoint's); a window that does not fit is an error."""
    if genome is None:
        raise UserError("no genome: pass --genome FASTA")
    if not regions:
        raise UserError("no region given")
    g = open_genome(genome, recorded_fingerprint)
    X = np.stack([one_hot(g.window(chrom, pos, seq_len)) for chrom, pos in regions])
    return Inputs(X, [c for c, _ in regions], np.array([p for _, p in regions], dtype=np.int64))
