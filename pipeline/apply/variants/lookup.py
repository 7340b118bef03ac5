"""``lookup``: variants answered from a catalogue, in the row format of ``score-vcf``.

:class:`CatalogueReader` reads only the blocks (inner chunks) a query touches, each checked before it
is used (:class:`~pipeline.store.catalogue.CheckedReader`: a damaged or missing chunk is a one-line
error naming the unit), keeping the last ones in memory, so a sorted VCF reads each block once. A
query the catalogue cannot answer is a row with a reason (contig or position not catalogued, unit
not computed yet, ``N``, not an SNV); the REF is checked against the catalogue's bases under it
(``ref_check``, ``ref_match``: the rule and comparison of ``score-vcf``,
:func:`~pipeline.apply.variants.rows.compare_ref`) and the variant is scored against the catalogue's
base, as ``score-vcf`` does against the genome. ``score-vcf --catalogue`` uses the same reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.apply.inputs import open_genome, resolve_genome
from pipeline.apply.outputs import check_output
from pipeline.apply.variants.diagnose import nothing_answered
from pipeline.apply.variants.options import LookupOptions
from pipeline.apply.variants.records import VcfRecord, VcfSource, read_vcf
from pipeline.apply.variants.rows import AT_N, Row, Skip, VcfSummary, ref_span, skip_allele
from pipeline.apply.variants.semantics import Semantics
from pipeline.apply.variants.streams import output_kind, spooled
from pipeline.apply.variants.values import Percentiles, ReferenceValues
from pipeline.apply.variants.writers import (
    SCORES_OUTPUT,
    WRITERS,
    OutputPlan,
    is_stdout,
    output_suffix,
    write_scores,
)
from pipeline.core.encoding import ALPHABET
from pipeline.core.genome import fingerprint_difference, other_spelling
from pipeline.core.intervals import parse_interval
from pipeline.core.progress import progress_bar
from pipeline.core.runtime import resolve_device
from pipeline.errors import SpecError, UserError
from pipeline.models import read_checkpoint
from pipeline.models.weights import file_sha256
from pipeline.store.catalogue import N_CODE, NOT_CATALOGUED, Catalogue, CatalogueMeta, CheckedReader, open_catalogue
from pipeline.store.tiles import ALTS, tile_center

NOT_CATALOGUED_CONTIG = "contig not in the catalogue"
"""The :attr:`~pipeline.apply.variants.rows.Skip.kind` of a query on a contig the catalogue lacks."""

_VARIANT = re.compile(r"^(?P<chrom>.+):(?P<pos>[0-9,]+):(?P<ref>[A-Za-z]+)>(?P<alt>[A-Za-z]+)$")


class CatalogueReader:
    """Answers variants from a catalogue, reading (and checking) a block when a query first needs it."""

    def __init__(self, cat: Catalogue) -> None:
        self.cat, self.meta = cat, cat.meta
        self.checked = CheckedReader(cat)
        self.names = [c.name for c in cat.meta.contigs]

    def _at(self, where: tuple[int, int, int], name: str) -> np.ndarray:
        """Array ``name`` at a located position (its block read and checked, or taken from the cache)."""
        k, u, i = where
        return self.checked.value(k, u * self.meta.unit_positions + i, name)

    def locate(self, chrom: str, pos: int) -> tuple[int, int, int] | Skip:
        """``(contig, unit, index in unit)`` of 1-based ``pos``, or why the catalogue has nothing there.

        A contig the catalogue spells otherwise (``17`` for ``chr17``, ``MT`` for ``chrM``) is read under
        the catalogue's name.
        """
        k = self.meta.contig_index(chrom)
        if k is None:
            other = other_spelling(chrom, self.names)
            k = None if other is None else self.meta.contig_index(other)
        if k is None:
            return Skip(NOT_CATALOGUED_CONTIG, f"contig {chrom!r} is not in the catalogue")
        contig = self.meta.contigs[k]
        if not 1 <= pos <= contig.length:
            return Skip("position outside the contig", f"position outside {chrom} (1..{contig.length})")
        if not any(a < pos <= b for a, b in contig.regions):
            return Skip("not in the catalogue's regions", f"{chrom}:{pos} is outside the catalogued regions")
        u = (pos - 1) // self.meta.unit_positions
        if not self.checked.complete(k, u):
            return Skip("not computed yet", f"{chrom} unit {u} of the catalogue is not computed yet (rerun catalogue)")
        return k, u, pos - 1 - u * self.meta.unit_positions

    def _code(self, where: tuple[int, int, int], chrom: str, pos: int) -> int | Skip:
        code = int(self._at(where, "ref"))
        if code == NOT_CATALOGUED:
            return Skip("not in the catalogue's regions", f"{chrom}:{pos} is outside the catalogued regions")
        return code

    def base(self, chrom: str, pos: int) -> int | Skip:
        """The catalogue's base code at 1-based ``pos`` (0..3, :data:`N_CODE`), or why there is none."""
        where = self.locate(chrom, pos)
        return where if isinstance(where, Skip) else self._code(where, chrom, pos)

    def reference(self, record: VcfRecord) -> str | None:
        """The catalogue's bases under ``record``'s REF (every base of an MNV's or a deletion's REF:
        :func:`~pipeline.apply.variants.rows.ref_span`, the rule ``score-vcf`` reads the genome by),
        ``N`` where the genome has one; ``None`` when REF names no bases or one of them is not
        catalogued (nothing to compare)."""
        span = ref_span(record)
        if span is None:
            return None
        bases = []
        for pos in range(span[0] + 1, span[1] + 1):
            code = self.base(record.genome_chrom, pos)
            if isinstance(code, Skip):
                return None
            bases.append("N" if code == N_CODE else ALPHABET[code])
        return "".join(bases)

    def answer(self, row: Row) -> bool:
        """Fill ``row`` (values, REF check, tile centre) from the catalogue, or set why not; whether
        it was scored."""
        r = row.record
        where = self.locate(r.genome_chrom, r.pos)
        code = where if isinstance(where, Skip) else self._code(where, r.genome_chrom, r.pos)
        if isinstance(code, Skip) or isinstance(where, Skip):
            row.skip = code if isinstance(code, Skip) else None
            return False
        row.set_reference(self.reference(r))
        if code == N_CODE:
            row.skip = Skip(AT_N, "the genome has N at this position (effects are 0 by definition)")
            return False
        row.skip = skip_allele(r)
        if row.skip is not None:
            return False
        k = where[0]
        alt = ALPHABET.index(r.alt.upper())
        effects = self._at(where, "effects")  # [3, T]
        if alt == code:  # ALT is the catalogue's base (REF and ALT swapped): 0 by definition
            row.values = np.zeros(effects.shape[1], np.float32)
        else:
            row.values = effects[list(ALTS[code]).index(alt)].astype(np.float32)
        contig = self.meta.contigs[k]
        row.center = tile_center(r.pos - 1, contig.length, self.meta.seq_len, self.meta.stride)
        row.source = "catalogue"
        return True


MAX_POSITION = 2**31 - 1
"""The largest position a VCF (and so a query) can hold: htslib's positions are 32-bit in text VCFs."""


def parse_variant(text: str, number: int) -> VcfRecord:
    """``chr:pos:REF>ALT`` (1-based ``pos``, ``,`` allowed between digits) as a record.

    Raises
    ------
    UserError
        Not of that form; ``pos`` not a number in 1..:data:`MAX_POSITION`.
    """
    m = _VARIANT.match(text.strip())
    digits = "" if m is None else m["pos"].replace(",", "")
    if m is None or not digits.isdigit() or not 1 <= int(digits) <= MAX_POSITION:
        raise UserError(
            f"--variant {text!r} is not of the form chr:pos:REF>ALT (1-based pos up to {MAX_POSITION}), "
            "e.g. --variant 'chr8:1000000:A>G' (quoted: the shell reads an unquoted > as a redirection)"
        )
    return VcfRecord(number, m["chrom"], int(digits), ".", m["ref"].upper(), m["alt"].upper())


def _region_bounds(reader: CatalogueReader, region: str) -> tuple[str, int, int]:
    """``(contig, first, last)`` (1-based, inclusive) of ``--region``, which must lie in a contig of
    the catalogue (spelt either way): any region is bounded by its contig, as ``catalogue`` bounds it."""
    try:
        iv = parse_interval(region, "--region")
    except SpecError as exc:
        raise UserError(str(exc)) from None
    k = reader.meta.contig_index(iv.chrom)
    other = other_spelling(iv.chrom, reader.names) if k is None else None
    if k is None and other is not None:
        k = reader.meta.contig_index(other)
    if k is None:
        listed = ", ".join(reader.names[:6]) + (", ..." if len(reader.names) > 6 else "")
        raise UserError(f"--region {region!r}: contig {iv.chrom!r} is not in the catalogue (it has {listed})")
    n = reader.meta.contigs[k].length
    if iv.end > n:
        raise UserError(
            f"--region {region!r}: region {iv.chrom}:{iv.start + 1}-{iv.end} runs past the end of {iv.chrom} ({n} bp)"
        )
    return iv.chrom, iv.start + 1, iv.end


def _region_records(reader: CatalogueReader, chrom: str, first: int, last: int) -> Iterator[VcfRecord]:
    """The three SNVs of every position ``first..last`` of ``chrom`` (one record ``N>.`` / ``?>.`` where
    there are none)."""
    number = 0
    for p in range(first, last + 1):
        number += 1
        code = reader.base(chrom, p)
        if isinstance(code, Skip) or code == N_CODE:
            yield VcfRecord(number, chrom, p, ".", "N" if code == N_CODE else ".", ".", 0)
            continue
        for a, alt in enumerate(ALTS[code], start=1):
            yield VcfRecord(number, chrom, p, ".", ALPHABET[code], ALPHABET[alt], a)


def _records(reader: CatalogueReader, variants: list[str], region: str | None, vcf: str | None) -> Iterator[VcfRecord]:
    """The queries; ``--variant`` and ``--region`` are checked here, before any output is started."""
    if sum([bool(variants), region is not None, vcf is not None]) != 1:
        raise UserError("give one of --variant (repeatable), --region or --vcf")
    if variants:
        return iter([parse_variant(v, k) for k, v in enumerate(variants, start=1)])
    if region is not None:
        return _region_records(reader, *_region_bounds(reader, region))
    return read_vcf(VcfSource(Path(str(vcf))))


def reference_values(meta: CatalogueMeta, opts: LookupOptions, quantity: str) -> ReferenceValues:
    """``lookup --values``: the base model of the catalogue's checkpoint, on the catalogue's genome.

    The checkpoint is the one the catalogue records (or ``opts.checkpoint``, if it moved; its sha256
    must be the recorded one), the genome the one the catalogue records (or ``opts.genome``; its
    fingerprint must be the catalogue's): a row's reference window is its tile window.
    """
    fields = meta.semantics.get("fields") or {}
    recorded = (fields.get("model") or {}).get("checkpoint")  # the path, in the semantics (the identity is content)
    checkpoint = opts.checkpoint if opts.checkpoint is not None else recorded
    if checkpoint is None or not Path(checkpoint).is_file():
        raise UserError(
            f"--values runs the catalogue's base model, but its checkpoint {recorded!r} is not there; pass --checkpoint"
        )
    if file_sha256(checkpoint) != meta.model.get("checkpoint_sha256"):
        raise UserError(
            f"--checkpoint {checkpoint!r} is not the checkpoint the catalogue was made with (sha256 differs)"
        )
    genome_path = resolve_genome(opts.genome, (fields.get("genome") or {}).get("path"), "the catalogue")
    if genome_path is None:
        raise UserError("--values needs the catalogue's genome: pass --genome FASTA")
    genome = open_genome(genome_path)
    changed = fingerprint_difference(meta.genome_fingerprint, genome.fingerprint())
    if changed:
        raise UserError(f"--genome {genome_path!r} is not the genome of the catalogue: {changed}")
    device = resolve_device(opts.device)
    return ReferenceValues.from_checkpoint(read_checkpoint(checkpoint), genome, device, quantity=quantity)


def lookup(catalogue: str, out: str, options: LookupOptions | None = None, *, progress: bool = True) -> VcfSummary:
    """Answer variants from a catalogue into ``out`` (``.tsv``, ``.tsv.gz``, ``.zarr``; ``.vcf.gz`` for ``vcf``).

    Parameters
    ----------
    catalogue : str
        A store written by ``catalogue``.
    out : str
        The output, in ``score-vcf``'s formats (:data:`~pipeline.apply.variants.writers.WRITERS`).
    options : LookupOptions
        What to look up, exactly one of: ``variants`` (``chr:pos:REF>ALT`` queries), ``region``
        (``chr:start-end``: all three SNVs of every position) or ``vcf`` (a VCF/BCF: one row per ALT
        allele); ``values`` (``ref,alt``: the base model's prediction on each row's tile window and the
        implied alternative, :func:`reference_values`; ``checkpoint``, ``genome`` and ``device`` for it);
        and ``overwrite`` (replace an existing output of ``score-vcf``/``lookup``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    VcfSummary
    """
    opts = LookupOptions() if options is None else options
    out_path = Path(out)
    kind = output_kind(out, opts.out_format, "lookup") or output_suffix(out_path, "lookup")
    if WRITERS[kind].annotates_records and opts.vcf is None:
        others = "/".join(suffix for suffix, writer in WRITERS.items() if not writer.annotates_records)
        what = "--out-format vcf" if is_stdout(out_path) else f"a {kind} output"
        raise UserError(f"{what} annotates the records of a VCF: give --vcf, or write {others}")
    if not is_stdout(out_path):
        check_output(
            out_path, SCORES_OUTPUT, overwrite=opts.overwrite, inputs={"CATALOGUE": catalogue, "--vcf": opts.vcf}
        )
    if not opts.value_kinds and (opts.checkpoint is not None or opts.genome is not None):
        raise UserError("--checkpoint/--genome only matter with --values (lookup reads the catalogue otherwise)")
    reader = CatalogueReader(open_catalogue(catalogue))
    with spooled(opts.vcf) if opts.vcf is not None else nullcontext(None) as vcf:
        return _lookup(catalogue, reader, out_path, kind, opts, vcf, progress)


def _lookup(catalogue: str, reader: CatalogueReader, out_path: Path, kind: str, opts: LookupOptions,
            vcf: Path | None, progress: bool) -> VcfSummary:  # fmt: skip
    """:func:`lookup` once the VCF (if any) is a file (``vcf``: standard input spooled)."""
    records = _records(reader, list(opts.variants), opts.region, None if vcf is None else str(vcf))
    meta = reader.meta
    semantics = Semantics(**meta.semantics["fields"])
    values = None
    if opts.value_kinds:
        values = reference_values(meta, opts, semantics.quantity)
        semantics = replace(semantics, values=list(opts.value_kinds))
    percentiles = None
    if opts.background is not None:
        sha256 = str(meta.model.get("checkpoint_sha256"))
        what = f"catalogue {catalogue!r}"
        model = (sha256, meta.all_target_names)
        percentiles = Percentiles.open(opts.background, model, semantics.quantity, what, meta.target_names)
        values_columns = [*(semantics.values or []), "q"]
        semantics = replace(semantics, values=values_columns, background=percentiles.background.describe())
    summary = VcfSummary(out=str(out_path))
    source = VcfSource(vcf) if vcf is not None else None

    def rows() -> Iterator[Row]:
        with progress_bar(desc="lookup", unit="variant", enabled=progress) as bar:
            for record in records:
                row = Row(record)
                reader.answer(row)
                summary.count(row)
                bar.update(1)
                yield row

    contigs = {c.name: c.length for c in meta.contigs}
    plan = OutputPlan(meta.target_names, np.arange(len(meta.target_names)), semantics, source, contigs)
    stream = rows() if values is None else values.filled(rows())
    stream = stream if percentiles is None else percentiles.filled(stream)

    def check() -> None:
        problem = nothing_answered(summary, contigs, NOT_CATALOGUED_CONTIG)
        if problem is not None:
            raise UserError(problem)

    write_scores(out_path, kind, plan, stream, check, overwrite=opts.overwrite)
    return summary


__all__ = ["CatalogueReader", "LookupOptions", "lookup", "parse_variant", "reference_values"]
