"""Why a ``score-vcf`` run scored nothing: the likely cause, in one line, for its error.

A run that read records but scored none exits non-zero (its output is not published) with the cause
its skipped rows point to (:func:`nothing_scored`):

- **contig names**: the VCF names chromosomes the genome does not have; the closest genome contig is
  suggested (:func:`closest_contig`: an accession inside a ``gi|…|NC_001416.1|`` header, the name
  without its version, or the most similar name);
- **assembly**: most REFs differ from the genome's bases (``--ref-mismatch skip``), or positions lie
  past the ends of the genome's chromosomes.

Only these causes fail a run: records the mode does not score (indels without ``--exact``, symbolic
ALTs, ...) are rows with their reason and a count in the summary, as is a VCF without records (a
filter upstream may leave none). Nothing here reads files.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from pipeline.apply.variants.rows import NAMING, VcfSummary

NOT_IN_GENOME = "chromosome not in the genome"
OUTSIDE = "position outside the chromosome"
MISMATCH_KINDS = ("REF is not the genome's base", "REF and ALT swapped")
"""The skip kinds of ``--ref-mismatch skip``."""

_FIELDS = re.compile(r"[|\s]+")
_VERSION = re.compile(r"\.\d+$")


def closest_contig(name: str, contigs: list[str]) -> str | None:
    """The contig of ``contigs`` that ``name`` most likely means, or ``None``.

    In order: a contig with ``name`` as one of its ``|``- or space-separated fields
    (``gi|9626243|ref|NC_001416.1|`` for ``NC_001416.1``); one whose fields hold ``name`` without its
    version (``NC_001416`` for ``NC_001416.1``, and the other way round); ``name`` itself being such a
    header with a field that is a contig; else the most similar name (:func:`difflib.get_close_matches`).
    """
    bare = _VERSION.sub("", name)
    for want in (name, bare):
        for contig in contigs:
            fields = [f for f in _FIELDS.split(contig) if f]
            if want in fields or want in (_VERSION.sub("", f) for f in fields):
                return contig
    for field in (f for f in _FIELDS.split(name) if f):
        if field in contigs and field != name:
            return field
    close = difflib.get_close_matches(name, contigs, n=1, cutoff=0.6)
    return close[0] if close else None


def _contigs_message(summary: VcfSummary, contigs: Mapping[str, int], kind: str = NOT_IN_GENOME,
                     what: str = "the genome") -> str:  # fmt: skip
    record = summary.examples[kind].record
    n = summary.skipped[kind]
    names = list(contigs)
    closest = closest_contig(record.chrom, names)
    if closest is not None:
        hint = (
            f"the closest contig of {what} is {closest!r}: rename the VCF's chromosomes "
            f"(bcftools annotate --rename-chrs, a line '{record.chrom} {closest}') or the FASTA's headers"
        )
    else:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        hint = f"{what} has {shown}"
    return f"no variant scored: {n} records name chromosomes {what} lacks (e.g. {record.chrom!r}); {hint}"


def nothing_answered(summary: VcfSummary, contigs: Mapping[str, int], kind: str) -> str | None:
    """``lookup``'s error when no query was answered and most name contigs the catalogue lacks
    (``kind``: that skip's kind), suggesting the closest catalogued contig; ``None`` otherwise."""
    if summary.n_scored or not summary.n_records or summary.skipped.most_common(1)[0][0] != kind:
        return None
    return _contigs_message(summary, contigs, kind, "the catalogue")


def _positions_message(summary: VcfSummary, contigs: Mapping[str, int]) -> str:
    record = summary.examples[OUTSIDE].record
    n = summary.skipped[OUTSIDE]
    length = contigs.get(record.genome_chrom)
    has = f" ({record.genome_chrom} has {length:,} bp)" if length else ""
    return (
        f"no variant scored: {n} records lie outside the genome's chromosomes (e.g. {record.chrom}:{record.pos}"
        f"{has}): is the VCF on another assembly than the genome?"
    )


def _assembly_message(summary: VcfSummary) -> str:
    example = summary.mismatch_example
    shown = f" (e.g. {example})" if example else ""
    return (
        f"no variant scored: the REF of {summary.n_mismatch} of {summary.n_checked} records checked is not the "
        f"genome's{shown}: is the VCF on another assembly than the genome?"
    )


def nothing_scored(summary: VcfSummary, contigs: Mapping[str, int]) -> str | None:
    """The error of a run that read records but scored none because of its contig names, assembly or
    positions (the most common reason for skipping one); ``None`` otherwise (something was scored,
    nothing was read, or what was read is of kinds the mode does not score).

    Parameters
    ----------
    summary : VcfSummary
        The run's counts (every row counted).
    contigs : mapping
        The genome's contig lengths, by name.
    """
    if summary.n_scored or not summary.n_records:
        return None
    kinds = summary.skipped
    if kinds.get(NAMING):
        return (
            f"no variant scored: {kinds[NAMING]} records name chromosomes the genome spells otherwise "
            f"(e.g. {summary.naming}); drop --no-harmonise, or rename them with bcftools annotate --rename-chrs"
        )
    top = kinds.most_common(1)[0][0]
    if top == NOT_IN_GENOME:
        return _contigs_message(summary, contigs)
    if top in MISMATCH_KINDS:
        return _assembly_message(summary)
    if top == OUTSIDE:
        return _positions_message(summary, contigs)
    return None


__all__ = ["closest_contig", "nothing_answered", "nothing_scored"]
