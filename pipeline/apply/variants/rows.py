"""The rows of ``score-vcf``: which records can be scored, REF checks, and how rows share windows.

Every ALT allele of every VCF record becomes one :class:`Row`, in VCF order. :class:`Rules` decides
whether a row can be scored in the chosen mode (what the mode needs: a centred window, SNVs only)
and, if not, why (a :class:`Skip`, never an exception); :class:`Batcher` groups the scoreable rows
into windows as they stream in, hands closed groups to a scorer in batches, and releases rows in VCF
order with at most :data:`MAX_HELD_ROWS` held back. :class:`VcfSummary` counts what happened.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from operator import attrgetter, itemgetter
from typing import Any, Protocol

import numpy as np

from pipeline.apply.variants.records import VcfRecord
from pipeline.core.genome import Genome
from pipeline.core.windows import center_index, first_position, window_bounds

MAX_HELD_ROWS = 4096
"""Most rows held back in memory: when this many wait (for a window still open or a batch not yet
full), the windows waiting are scored at once. Rows of a record are small (about 1 kB), so this is a
few MB; it changes which variants share a window only when more than this many records come while
one window is open (thousands of records within ``L`` bases)."""

BASES = frozenset("ACGT")

REF_BLOCK = 65536
"""Bases of the genome read at once for the REF checks of records (:class:`Rules`)."""

REF_BLOCKS_KEPT = 4
"""Blocks of :data:`REF_BLOCK` bases :class:`Rules` keeps (the newest; a few, for an unsorted VCF)."""

MAX_KNOWN_CHROMOSOMES = 100_000
"""Most chromosome names :class:`Rules` remembers (a VCF names few; this bounds a hostile one)."""

MAX_KNOWN_ALLELES = 65_536
"""Most (REF, ALT) pairs :meth:`Rules.skipped` remembers the problem and REF check of (then it starts anew)."""

MAX_CHECKS_KEPT = 64
"""Most REF checks :meth:`Rules.skipped` keeps per (chromosome, REF, ALT), by the genome's bases."""

_Plan = tuple[str, "Skip | None", int, "tuple[str, str] | None", "dict[str | None, tuple[str, str]]"]
"""What :meth:`Rules.skipped` learns of a (chromosome, REF, ALT): its contig, the skip of its alleles or
its chromosome (``None``: the position decides), the chromosome's length, its REF check when that needs
no genome bases, and the REF checks met, by the genome's bases."""

NAMING = "chromosome naming differs"
"""The :attr:`Skip.kind` of a record whose chromosome the genome spells otherwise (``--no-harmonise``)."""

ASSEMBLY_SHARE = 0.5
"""More than this share of the REFs checked differing from the genome points to another assembly
(:meth:`VcfSummary.assembly_doubt`)."""

AT_N = "the genome has N at this position"
"""The :attr:`Skip.kind` of a variant at an ``N`` (its effects are 0 by definition)."""


@dataclass(frozen=True)
class Skip:
    """Why a record is not scored: ``kind`` (what the summary counts) and the row's full ``reason``."""

    kind: str
    reason: str
    example: str = ""
    """For a naming mismatch: ``'17' for 'chr17'``."""


def _allele_problem(ref: str, alt: str, record: VcfRecord, exact: bool) -> Skip | None:
    """Why the alleles cannot be scored: symbolic or missing ALT, non-ACGT letters, indels (but with
    ``exact``), REF equal to ALT."""
    if alt in (".", "*", "") or alt.startswith("<") or "[" in alt or "]" in alt:
        return Skip("no plain alternate allele", f"no plain alternate allele (ALT {record.alt})")
    if not exact and len(ref) != len(alt):
        return Skip("indel", f"indel ({record.ref}>{record.alt}; --exact scores indels)")
    if not exact and len(ref) > 1:
        return Skip(
            "multi-nucleotide variant", f"multi-nucleotide variant ({record.ref}>{record.alt}; --exact scores them)"
        )
    if not set(ref) <= BASES or not set(alt) <= BASES:
        return Skip("REF or ALT is not A/C/G/T", f"REF or ALT is not A/C/G/T ({record.ref}>{record.alt})")
    if ref == alt:
        return Skip("REF equals ALT", f"REF equals ALT ({record.ref})")
    return None


def skip_allele(record: VcfRecord) -> Skip | None:
    """Why a record is not a plain SNV (``None`` when it is one)."""
    return _allele_problem(record.ref.upper(), record.alt.upper(), record, exact=False)


def centred_problem(record: VcfRecord, chrom_len: int, seq_len: int, exact: bool) -> Skip | None:
    """Why the variant-centred window(s) do not fit in the chromosome (``None`` when they do).

    The centred window covers 1-based ``pos - L//2 + 1 … pos + L - L//2`` (the variant at index
    ``L//2 - 1``). With ``exact``, the alternative window (:func:`pipeline.apply.variants.scorers.alt_window`)
    keeps the ``L//2 - 1`` bases before the variant, then ALT, then the genome after REF up to
    length ``L``: ALT must fit in the window and the genome must reach that far.
    """
    L, pos = seq_len, record.pos
    before = center_index(L)  # bases of the window before the variant
    after_ref = L - before - len(record.alt) if exact else L - before - 1  # genome bases after REF
    end = pos - 1 + (len(record.ref) if exact else 1) + max(after_ref, 0)
    if exact and after_ref < 0:
        return Skip(
            "insertion longer than the window's right half",
            f"ALT of {len(record.alt)} bases does not fit after index {before} of a {L}-base window",
        )
    _, last = window_bounds(pos, L)  # the centred window's 0-based end: its last 1-based position
    if first_position(pos, L) < 1 or max(end, last) > chrom_len:
        return Skip(
            "too close to the chromosome end for a centred window",
            f"too close to an end of {record.genome_chrom} ({chrom_len} bp) for a window centred on it",
        )
    return None


def skip_reason(
    record: VcfRecord, genome: Genome, seq_len: int, *, centred: bool = False, indels: bool = False
) -> Skip | None:
    """Why a record cannot be scored by a mode (``None`` when it can).

    A mode scores SNVs, and with ``indels`` also indels and multi-nucleotide variants (``exact``);
    with ``centred`` it needs the variant-centred window inside the chromosome (``centered``,
    ``exact``). The ``N`` check needs the window and happens when the window is read.
    """
    problem = _allele_problem(record.ref.upper(), record.alt.upper(), record, exact=indels)
    if problem is None:
        problem = _chromosome_problem(record, genome, seq_len)
    if problem is None and centred:
        problem = centred_problem(record, genome.length(record.genome_chrom), seq_len, exact=indels)
    return problem


def _whole_chromosome_problem(record: VcfRecord, genome: Genome, seq_len: int) -> Skip | None:
    """Why no record of this chromosome can be scored (not in the genome, shorter than the window)."""
    chrom = record.genome_chrom
    if chrom not in genome:
        other = genome.suggest(chrom)
        if other:
            reason = f"chromosome {chrom!r} is not in the genome, which has {other!r} (--no-harmonise is on)"
            return Skip(NAMING, reason, f"{chrom!r} for {other!r}")
        return Skip("chromosome not in the genome", f"chromosome {chrom!r} is not in the genome")
    n = genome.length(chrom)
    if n < seq_len:
        return Skip(
            "chromosome shorter than the window",
            f"chromosome {record.chrom} ({n} bp) is shorter than the model's window ({seq_len} bp)",
        )
    return None


def _chromosome_problem(record: VcfRecord, genome: Genome, seq_len: int) -> Skip | None:
    problem = _whole_chromosome_problem(record, genome, seq_len)
    if problem is None:
        problem = _position_problem(record, genome.length(record.genome_chrom))
    return problem


def _position_problem(record: VcfRecord, n: int) -> Skip | None:
    if not 1 <= record.pos <= n - len(record.ref) + 1:
        return Skip("position outside the chromosome", f"position outside {record.genome_chrom} (1..{n})")
    return None


def ref_span(record: VcfRecord) -> tuple[int, int] | None:
    """0-based half-open span of the genome under REF (every base of REF: an MNV's, a deletion's), or
    ``None`` when REF names no bases (``.``, ``*``, empty).

    The one rule of which bases a REF is checked against, for ``score-vcf`` (the genome) and ``lookup``
    (the catalogue's bases); :func:`compare_ref` then compares them.
    """
    if not record.ref or record.ref in (".", "*"):
        return None
    return record.pos - 1, record.pos - 1 + len(record.ref)


def compare_ref(record: VcfRecord, bases: str | None) -> tuple[str, str]:
    """``(ref_check, ref_match)`` of ``record`` against ``bases``, the reference's bases under its REF
    (:func:`ref_span`; ``None``: nothing to compare): the one comparison of ``score-vcf`` and ``lookup``.

    ``TG>AA`` over ``TG`` is ``ok``/``yes``; the deletion ``TTCT>T`` over ``TTCT`` is ``ok``/``yes``
    (never ``swapped``: the genome's bases under REF are compared with REF, and with ALT only when
    they are as long as it); over ``GTCT`` it is ``mismatch: genome has GTCT``/``no``.
    """
    return ref_check(record, bases), ref_match(record, bases)


def ref_check(record: VcfRecord, genome_ref: str | None) -> str:
    """``ok``, ``mismatch: genome has X`` or ``n/a`` (``genome_ref`` is None: nothing to compare)."""
    if genome_ref is None:
        return "n/a"
    genome_ref = genome_ref.upper()
    if genome_ref == record.ref.upper():
        return "ok"
    note = " (the ALT allele: REF and ALT may be swapped)" if genome_ref == record.alt.upper() else ""
    return f"mismatch: genome has {genome_ref}{note}"


def ref_match(record: VcfRecord, genome_ref: str | None) -> str:
    """``yes`` (REF is the genome's base), ``swapped`` (the genome has the ALT instead), ``no``, or
    ``n/a`` (``genome_ref`` is None: nothing to compare)."""
    if genome_ref is None:
        return "n/a"
    genome_ref = genome_ref.upper()
    if genome_ref == record.ref.upper():
        return "yes"
    return "swapped" if genome_ref == record.alt.upper() else "no"


def genome_ref(record: VcfRecord, genome: Genome) -> str | None:
    """The genome's bases under REF, when REF lies inside a chromosome of the genome."""
    chrom, span = record.genome_chrom, ref_span(record)
    if chrom not in genome or span is None:
        return None
    start, end = span
    if start < 0 or end > genome.length(chrom):
        return None
    return genome.fetch(chrom, start, end)


def harmonise(record: VcfRecord, genome: Genome) -> VcfRecord | None:
    """``record`` on the genome's name of its chromosome (``17`` -> ``chr17``, ``MT`` -> ``chrM``, ...:
    :meth:`~pipeline.core.genome.Genome.suggest`), or ``None`` when no renaming applies."""
    if record.chrom in genome:
        return None
    other = genome.suggest(record.chrom)
    return None if other is None else replace(record, contig=other)


@dataclass
class Row:
    """One ALT allele of one VCF record on its way to the output: status, REF check, window, effects."""

    record: VcfRecord
    skip: Skip | None = None
    check: str = "n/a"
    match: str = "n/a"
    center: int | None = None
    """1-based centre of the window the variant was scored in (``None``: not scored)."""
    values: np.ndarray | None = None
    """Shape ``[F]`` float32: the scores, one per target (``None``: skipped)."""
    ref_values: np.ndarray | None = None
    """Shape ``[F]`` float32: ``--values ref``, the base model on the reference window (``None``: not asked
    for, or skipped)."""
    alt_values: np.ndarray | None = None
    """Shape ``[F]`` float32: ``--values alt``, the implied alternative probability (``None``: as above)."""
    q_values: np.ndarray | None = None
    """Shape ``[F]`` float32: ``--background``, each score's percentile in the background (``None``: as above)."""
    group: Group | None = None
    source: str = "model"
    """``model``, or ``catalogue`` when the values were read from a catalogue."""

    @property
    def status(self) -> str:
        """``scored`` or ``skipped: <reason>``."""
        return "scored" if self.skip is None else f"skipped: {self.skip.reason}"

    @property
    def done(self) -> bool:
        """Skipped, or its window has been computed."""
        return self.group is None or self.group.done

    def set_reference(self, bases: str | None) -> None:
        """Record the REF check against the genome's ``bases`` under REF (``None``: nothing to compare;
        :func:`compare_ref`)."""
        self.check, self.match = compare_ref(self.record, bases)


SkippedRow = tuple[int, str, str, str, str, str, int, str, str, str, Skip]
"""A skipped row without objects of its own: ``(number, chrom, pos as written, id, ref, alt, allele_index,
contig, ref_check, ref_match, skip)`` (the fields of :class:`~pipeline.apply.variants.records.VcfRecord`
and :class:`Row`)."""


class SkippedRows:
    """Consecutive skipped rows kept as plain tuples (:data:`SkippedRow`), not :class:`Row` objects: the
    records a model never sees cost no objects of their own on their way to the output.

    Writers take them whole (:meth:`~pipeline.apply.variants.writers.ScoreWriter.write_skipped`);
    :meth:`rows` gives the same rows as :class:`Row` objects, for code that needs them.
    """

    done = True
    """A skipped row is always finished (what :class:`Batcher` asks of what it holds)."""

    def __init__(self, rows: list[SkippedRow]) -> None:
        self.tuples = rows

    def __len__(self) -> int:
        return len(self.tuples)

    def rows(self) -> Iterator[Row]:
        """The rows as :class:`Row` objects (what the per-record path gives for the same records)."""
        for number, chrom, pos, vid, ref, alt, index, contig, check, match, skip in self.tuples:
            yield Row(VcfRecord(number, chrom, int(pos), vid, ref, alt, index, contig), skip, check, match)


def expand(items: Iterable[Row | SkippedRows]) -> Iterator[Row]:
    """Every row of ``items``, blocks of skipped rows as :class:`Row` objects."""
    for item in items:
        if isinstance(item, SkippedRows):
            yield from item.rows()
        else:
            yield item


def n_rows(items: Iterable[Row | SkippedRows]) -> int:
    """How many rows ``items`` hold (a block counts its rows)."""
    return sum(len(item) if isinstance(item, SkippedRows) else 1 for item in items)


@dataclass
class Group:
    """Consecutive variants of one chromosome that share a window (their span is at most ``span``)."""

    chrom: str
    first: int
    last: int
    rows: list[Row] = field(default_factory=list)
    done: bool = False

    def takes(self, record: VcfRecord, span: int) -> bool:
        """Whether ``record`` can join without the group spanning more than ``span`` bases."""
        span_with = max(self.last, record.pos) - min(self.first, record.pos) + 1
        return self.chrom == record.genome_chrom and span_with <= span

    def add(self, row: Row) -> None:
        """Add ``row`` (its position widens the group)."""
        self.first, self.last = min(self.first, row.record.pos), max(self.last, row.record.pos)
        self.rows.append(row)
        row.group = self


class Scorer(Protocol):
    """What :class:`Batcher` hands closed groups to."""

    n_windows: int

    def run(self, groups: list[Group]) -> None:
        """Score every row of ``groups`` (set ``values``, ``center`` and the REF check, or a skip) and
        mark the groups done."""


@dataclass
class VcfSummary:
    """What :func:`pipeline.apply.variants.score_vcf.score_vcf` did."""

    out: str
    n_records: int = 0
    n_scored: int = 0
    n_windows: int = 0
    n_mismatch: int = 0
    n_harmonised: int = 0
    """Records read on the genome's name of their chromosome (``17`` -> ``chr17``)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Skipped records by kind of reason (:attr:`Skip.kind`)."""
    naming: str = ""
    """The first chromosome naming mismatch (``'17' for 'chr17'``), for the error when nothing is scored."""
    note: str = ""
    """What happened beyond the counts (``this shard's part is done; 3 of 8 remain``)."""
    n_catalogue: int = 0
    """Rows answered from a catalogue."""
    n_checked: int = 0
    """Rows whose REF was compared with the genome (``ref_check`` not ``n/a``)."""
    examples: dict[str, Row] = field(default_factory=dict)
    """The first skipped row of each kind (for the error when nothing is scored)."""
    mismatch_example: str = ""
    """The first REF mismatch (``chr1:100 REF A, the genome has G``)."""

    def count(self, row: Row) -> None:
        """Count one finished row."""
        self.n_records += 1
        if row.skip is None:
            self.n_scored += 1
        else:
            self.skipped[row.skip.kind] += 1
            self.naming = self.naming or row.skip.example
            self.examples.setdefault(row.skip.kind, row)
        if row.check != "n/a":
            self.n_checked += 1
        if row.check.startswith("mismatch"):
            self.n_mismatch += 1
            if not self.mismatch_example:
                r = row.record
                self.mismatch_example = f"{r.chrom}:{r.pos} REF {r.ref}, {row.check.replace('mismatch: ', 'the ')}"
        if row.record.contig:
            self.n_harmonised += 1
        if row.source == "catalogue":
            self.n_catalogue += 1

    def count_skipped(self, block: SkippedRows) -> None:
        """Count a block of skipped rows (as :meth:`count` counts each)."""
        rows = block.tuples
        self.n_records += len(rows)
        skips = list(map(itemgetter(10), rows))
        kinds = list(map(attrgetter("kind"), skips))
        self.skipped.update(kinds)  # counted in C
        if not self.naming and self.skipped.get(NAMING):  # only a naming skip has an example
            self.naming = next((skip.example for skip in skips if skip.example), "")
        if not set(kinds) <= self.examples.keys():  # a kind met the first time: its first row (rare)
            for row in block.rows():
                if row.skip is not None:
                    self.examples.setdefault(row.skip.kind, row)
        checks = Counter(map(itemgetter(8), rows))
        self.n_checked += len(rows) - checks["n/a"]
        mismatches = sum(n for check, n in checks.items() if check.startswith("mismatch"))
        self.n_mismatch += mismatches
        if mismatches and not self.mismatch_example:
            first = next(row for row in rows if row[8].startswith("mismatch"))
            self.mismatch_example = f"{first[1]}:{first[2]} REF {first[4]}, {first[8].replace('mismatch: ', 'the ')}"
        self.n_harmonised += len(rows) - Counter(map(itemgetter(7), rows))[""]

    def assembly_doubt(self) -> bool:
        """Whether more than :data:`ASSEMBLY_SHARE` of the REFs checked differ from the genome (and at
        least 2): the VCF is likely on another assembly."""
        return self.n_mismatch >= 2 and self.n_mismatch > ASSEMBLY_SHARE * self.n_checked

    def line(self) -> str:
        """One line for the command line."""
        n_skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.most_common())
        windows = f" in {self.n_windows} windows" if self.n_windows else ""
        if self.n_catalogue:
            windows += f" ({self.n_catalogue} from the catalogue)"
        return (
            f"scored {self.n_scored} of {self.n_records} variants{windows}; "
            f"{self.n_mismatch} REF mismatches; skipped {n_skipped}"
            + (f" ({reasons})" if reasons else "")
            + (f"; harmonised the chromosome names of {self.n_harmonised}" if self.n_harmonised else "")
            + (
                f"; warning: {self.n_mismatch} of {self.n_checked} REFs differ from the genome "
                f"(e.g. {self.mismatch_example}): is the VCF on another assembly?"
                if self.n_scored and self.assembly_doubt()
                else ""
            )
            + (f"; {self.note}" if self.note else f"; wrote {'standard output' if self.out == '-' else self.out}")
        )


class Batcher:
    """Groups the scoreable rows into windows as they stream in and scores closed groups in batches.

    Rows leave (:meth:`add`, :meth:`finish`) in VCF order as soon as they and every row before them
    are finished: a skipped row waits only for earlier rows whose window is not scored yet. When
    ``max_rows`` rows wait, the closed groups are scored without waiting for a full batch, and if
    the open group still holds that many back it is closed and scored too, so at most ``max_rows``
    rows are held, however long the VCF.
    """

    def __init__(self, scorer: Scorer, span: int, batch_size: int, max_rows: int | None = None) -> None:
        self.scorer, self.span, self.batch_size = scorer, span, batch_size
        self.max_rows = MAX_HELD_ROWS if max_rows is None else max_rows
        self.pending: deque[Row | SkippedRows] = deque()  # rows not yet written, in VCF order
        self.held = 0  # rows in pending (a block counts its rows)
        self.closed: list[Group] = []  # groups waiting for the next batch
        self.open: Group | None = None  # the group the next variant may join

    def add_skipped(self, block: SkippedRows) -> list[Row | SkippedRows]:
        """Take the next skipped rows, as one block; the rows now finished, in VCF order. The same as
        :meth:`add` of each of them (``scoreable`` false): no row is scored in between, so the groups and
        batches are the same; at most one block more than ``max_rows`` is held."""
        if not self.pending:
            return [block]  # nothing waits before them: they leave at once
        return self._held(block, len(block))

    def add(self, row: Row, scoreable: bool) -> list[Row | SkippedRows]:
        """Take the next row (``scoreable``: a variant to score); the rows now finished, in VCF order."""
        if not scoreable and not self.pending:
            return [row]  # nothing waits before it: a skipped row leaves at once
        if not scoreable:
            return self._held(row, 1)
        if self.open is None or not self.open.takes(row.record, self.span):
            self._close_open()
        if self.open is None:
            self.open = Group(row.record.genome_chrom, row.record.pos, row.record.pos)
        self.open.add(row)
        if len(self.closed) >= self.batch_size:
            self._score()
        return self._held(row, 1)

    def _held(self, item: Row | SkippedRows, n: int) -> list[Row | SkippedRows]:
        self.pending.append(item)
        self.held += n
        return self._bounded()

    def _bounded(self) -> list[Row | SkippedRows]:
        """The rows finished now; scores what waits when :attr:`max_rows` rows are held."""
        finished = list(self._release())
        if self.held >= self.max_rows:  # too many held: do not wait for a full batch
            self._score()
            finished += self._release()
        if self.held >= self.max_rows:  # the open group holds them back: close it
            self._close_open()
            self._score()
            finished += self._release()
        return finished

    def finish(self) -> Iterator[Row | SkippedRows]:
        """Score what is left; yields every remaining row (the batcher can be used again after)."""
        self._close_open()
        self._score()
        yield from self._release()

    def _close_open(self) -> None:
        if self.open is not None:
            self.closed.append(self.open)
            self.open = None

    def _score(self) -> None:
        self.scorer.run(self.closed)
        self.closed = []

    def _release(self) -> Iterator[Row | SkippedRows]:
        """Yield the finished rows at the head of the queue (in VCF order)."""
        while self.pending and self.pending[0].done:
            row = self.pending.popleft()
            if isinstance(row, SkippedRows):
                self.held -= len(row)
            else:
                self.held -= 1
                row.group = None  # break the row <-> group cycle: freed by reference counting, not the cyclic GC
            yield row


@dataclass(frozen=True)
class Rules:
    """How records are classified: the genome, the model's window, and the command's choices."""

    genome: Genome
    seq_len: int
    harmonise: bool = True
    ref_mismatch: str = "score"
    centred: bool = False
    """The mode needs the variant-centred window inside the chromosome."""
    indels: bool = False
    """The mode scores indels and multi-nucleotide variants too."""

    chromosomes: dict[str, tuple[str, Skip | None, int]] = field(default_factory=dict, compare=False, repr=False)
    """What :meth:`classify` learnt of each chromosome name: ``(genome's name if renamed, the problem of the
    whole chromosome, its length)``, so a record costs no name lookups (a VCF of many skipped records)."""

    def _chromosome(self, chrom: str) -> tuple[str, Skip | None, int]:
        known = self.chromosomes.get(chrom)
        if known is None:
            contig = (self.genome.suggest(chrom) or "") if self.harmonise and chrom not in self.genome else ""
            probe = VcfRecord(0, chrom, 1, ".", "N", "N", contig=contig)
            problem = _whole_chromosome_problem(probe, self.genome, self.seq_len)
            name = probe.genome_chrom
            known = (contig, problem, self.genome.length(name) if name in self.genome else 0)
            if len(self.chromosomes) < MAX_KNOWN_CHROMOSOMES:
                self.chromosomes[chrom] = known
        return known

    blocks: dict[tuple[str, int], str] = field(default_factory=dict, compare=False, repr=False)
    """The last :data:`REF_BLOCKS_KEPT` blocks of :data:`REF_BLOCK` bases read for REF checks."""

    def _reference(self, record: VcfRecord, n: int) -> str | None:
        """:func:`genome_ref` of ``record`` (``n``: its chromosome's length, 0 if not in the genome), read
        from a block of the genome kept in memory: a sorted VCF reads each block once."""
        if not record.ref or record.ref in (".", "*"):
            return None
        start = record.pos - 1
        return self._bases(record.genome_chrom, start, start + len(record.ref), n)

    def _bases(self, chrom: str, start: int, end: int, n: int) -> str | None:
        """The bases ``start:end`` (0-based) of ``chrom`` (the genome's name, length ``n``; ``None`` outside)."""
        if not n or start < 0 or end > n:
            return None
        b = start // REF_BLOCK
        if (end - 1) // REF_BLOCK != b:
            return self.genome.fetch(chrom, start, end)
        block = self.blocks.get((chrom, b))
        if block is None:
            if len(self.blocks) >= REF_BLOCKS_KEPT:
                del self.blocks[next(iter(self.blocks))]
            block = self.blocks[chrom, b] = self.genome.fetch(chrom, b * REF_BLOCK, min(n, (b + 1) * REF_BLOCK))
        return block[start - b * REF_BLOCK : end - b * REF_BLOCK]

    plans: dict[tuple[str, str, str], _Plan] = field(default_factory=dict, compare=False, repr=False)
    """What :meth:`skipped` learnt of each (chromosome, REF, ALT), at most :data:`MAX_KNOWN_ALLELES`."""

    last_block: list[Any] = field(default_factory=lambda: ["", -1, ""], compare=False, repr=False)
    """``[chromosome, block number, bases]``: the block of :attr:`blocks` :meth:`skipped` read last."""

    def _plan(self, chrom: str, ref: str, alt: str) -> _Plan:
        contig, skip, n = self._chromosome(chrom)
        probe = VcfRecord(0, chrom, 1, ".", ref, alt, contig=contig)
        allele = _allele_problem(ref.upper(), alt.upper(), probe, exact=self.indels)
        fixed = None if n and ref not in (".", "*") else compare_ref(probe, None)
        plan: _Plan = (contig, allele or skip, n, fixed, {})
        if len(self.plans) >= MAX_KNOWN_ALLELES:
            self.plans.clear()
        self.plans[chrom, ref, alt] = plan
        return plan

    def _block_bases(self, chrom: str, start: int, end: int, n: int) -> str | None:
        """The genome's bases ``start:end`` (0-based) of ``chrom`` (length ``n``), from the block kept last."""
        b = start // REF_BLOCK
        last = self.last_block
        if last[1] == b and last[0] == chrom and (end - 1) // REF_BLOCK == b:
            bases: str = last[2][start - b * REF_BLOCK : end - b * REF_BLOCK]
            return bases
        found = self._bases(chrom, start, end, n)
        block = self.blocks.get((chrom, b))
        if block is not None:
            last[:] = [chrom, b, block]
        return found

    def skipped(self, number: int, chrom: str, pos: str, vid: str, ref: str, alt: str) -> SkippedRow | None:
        """The row :meth:`classify` gives a record with one ALT (``pos`` as written: digits) when it is
        skipped for its alleles, its chromosome or its position, as a :data:`SkippedRow` (no :class:`Row`
        or :class:`~pipeline.apply.variants.records.VcfRecord`); ``None`` for every other record (to
        :meth:`classify`: the mode's own rules, the REF rule, scoring). ``vid`` and ``ref`` empty are
        ``.``, as htslib reads them."""
        ref, at = ref or ".", int(pos)
        contig, skip, n, fixed, checks = self.plans.get((chrom, ref, alt)) or self._plan(chrom, ref, alt)
        index = 0 if alt == "." else 1
        inside = 1 <= at <= n - len(ref) + 1
        if skip is None:
            if inside:
                return None  # scored, or skipped by the mode's rules
            probe = VcfRecord(number, chrom, at, ".", ref, alt, index, contig)
            skip = _position_problem(probe, n)
            if skip is None:
                return None
        if fixed is None:
            bases = self._block_bases(contig or chrom, at - 1, at - 1 + len(ref), n) if inside else None
            fixed = checks.get(bases)
            if fixed is None:
                if len(checks) >= MAX_CHECKS_KEPT:
                    checks.clear()
                probe = VcfRecord(number, chrom, at, ".", ref, alt, index, contig)
                fixed = checks[bases] = compare_ref(probe, bases)
        return (number, chrom, pos, vid or ".", ref, alt, index, contig, fixed[0], fixed[1], skip)

    def classify(self, record: VcfRecord) -> tuple[Row, bool]:
        """The row of a record, and whether it is a variant to score (else its status says why not).

        With ``harmonise``, a chromosome the genome spells otherwise is renamed first; with
        ``ref_mismatch="skip"``, a variant whose REF is not the genome's bases is skipped. Gives what
        :func:`skip_reason` gives (on the harmonised record), with one name lookup per chromosome.
        """
        contig, skip, n = self._chromosome(record.chrom)
        if contig:
            record = replace(record, contig=contig)
        allele = _allele_problem(record.ref.upper(), record.alt.upper(), record, exact=self.indels)
        if allele is not None:
            skip = allele
        if skip is None:
            skip = _position_problem(record, n)
        if skip is None and self.centred:
            skip = centred_problem(record, n, self.seq_len, exact=self.indels)
        row = Row(record, skip=skip)
        if row.skip is None and self.ref_mismatch == "score":
            return row, True
        bases = self._reference(record, n)
        row.set_reference(bases)
        if row.skip is None and row.match != "yes":
            what = "REF and ALT swapped" if row.match == "swapped" else "REF is not the genome's base"
            row.skip = Skip(what, f"{what}: the genome has {bases} (--ref-mismatch skip)")
        return row, row.skip is None
