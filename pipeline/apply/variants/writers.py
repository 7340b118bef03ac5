"""What ``score-vcf`` and ``lookup`` write: one writer class per output suffix, in a registry.

A writer is a :class:`ScoreWriter` subclass registered for its suffixes with :func:`register_writer`
(:data:`WRITERS`): it writes the rows of an :class:`OutputPlan` at a (staged) path, and recognises an
output it wrote (what ``--overwrite`` may replace). The output's suffix picks the writer
(:func:`output_suffix`); :func:`write_scores` writes and publishes it. Adding an output format is one
writer class. Every output carries the score's semantics
(:class:`~pipeline.apply.variants.semantics.Semantics`: quantity and formula, sign, log base, mode and
window, strand, the model's identity and the genome's fingerprint): ``##key=value`` lines at the head
of a TSV, ``##multiplexer_<key>=`` header lines of a VCF, the ``semantics`` attribute of a Zarr store.

- ``.tsv`` / ``.tsv.gz`` (:class:`TsvScores`): one row per ALT allele, :data:`COLUMNS` then one
  column per selected target.
- ``.vcf.gz`` (:class:`VcfScores`): the input records, each with ``Number=A`` INFO fields (one value
  per ALT allele, ``.`` for one not scored): one per selected target (``MPX_<name>``), ``MAX_ABS``
  and ``TOP_TARGET`` (the largest absolute score over the selected targets, and its target),
  ``MPX_STATUS`` and ``REF_MATCH``; bgzipped, and indexed with tabix (``.tbi``) when the records are
  sorted.
- ``.zarr`` (:class:`ZarrScores`): ``scores`` ``[variants, targets]`` float16 (``NaN`` where not
  scored) and the variant table, one array per column of :data:`COLUMNS`.
- ``.parquet`` (:class:`ParquetScores`): the TSV's table (the same columns, one row per ALT allele,
  one float32 column per selected target, null where not scored), the semantics in the file's
  metadata; needs pyarrow (the ``tables`` extra: :func:`import_pyarrow`).
"""

from __future__ import annotations

import gzip
import importlib
import json
import math
import os
import platform
import re
import sys
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pysam
import zarr

from pipeline.apply.outputs import TSV_FORMAT, TSV_GZIP_LEVEL, OutputKind
from pipeline.apply.variants.options import VALUES
from pipeline.apply.variants.records import HtslibErrors, VcfSource, open_vcf, quiet_htslib, raw_records, undeclared
from pipeline.apply.variants.rows import Row, SkippedRows
from pipeline.apply.variants.semantics import Semantics
from pipeline.core.files import process_alive, refuse_existing, staging
from pipeline.core.genome import other_spelling
from pipeline.errors import UserError, WriteError
from pipeline.store.meta_digest import write_meta_digest

COLUMNS = ["chrom", "pos", "id", "ref", "alt", "allele_index", "window_center", "ref_check", "ref_match", "status"]
"""The fixed columns of the TSV and Zarr outputs; one column per target follows (TSV)."""

INDEX_SUFFIXES = (".tbi", ".csi")
"""The index a ``.vcf.gz`` output gets: tabix ``.tbi``, or ``.csi`` when a position lies past 2^29."""

VCF_META = "multiplexer_"
"""Prefix of the VCF header lines that carry the semantics."""

FIXED_INFO = {
    "MAX_ABS": ("Float", "largest absolute score over the selected targets"),
    "TOP_TARGET": ("String", "the selected target with the largest absolute score"),
    "MPX_STATUS": ("String", "scored, or why not (the kind of skip, spaces as _)"),
    "REF_MATCH": ("String", "yes: REF is the genome's base; swapped: the genome has ALT; no; n/a"),
}
"""The INFO fields a ``.vcf.gz`` output adds besides one per selected target (all ``Number=A``)."""


@dataclass(frozen=True)
class OutputPlan:
    """What an output holds: every target name, the ones written (``selection``), the semantics, and
    the VCF whose records a VCF output annotates."""

    names: list[str]
    selection: np.ndarray
    """Indices into ``names`` of the targets written, in order."""
    semantics: Semantics
    source: VcfSource | None = None
    contigs: Mapping[str, int] = field(default_factory=dict)
    """The genome's contig lengths: a ``.vcf.gz`` output declares the contigs its records name with them."""

    @property
    def values(self) -> tuple[str, ...]:
        """What ``--values`` adds per selected target (``ref``, ``alt``; the semantics say which)."""
        return tuple(self.semantics.values or ())


def value_columns(plan: OutputPlan) -> list[str]:
    """The added columns: ``<target>_ref`` for every selected target, then ``<target>_alt``, then ``<target>_q``
    (those the output has, :data:`~pipeline.apply.variants.options.VALUES`)."""
    return [f"{plan.names[k]}_{kind}" for kind in plan.values for k in plan.selection]


def row_values(row: Row, kind: str) -> np.ndarray | None:
    """A row's ``--values`` of ``kind`` (``ref``/``alt``) over every target (``None``: not scored)."""
    values: np.ndarray | None = getattr(row, f"{kind}_values")
    return values


class ScoreWriter(ABC):
    """An output of ``score-vcf``/``lookup`` being written at a (staged) path; one subclass per format.

    Register a subclass with :func:`register_writer` for its :attr:`suffixes`. Rows come to
    :meth:`write` in VCF order; :meth:`close` finishes the output, :meth:`discard` releases what the
    writer holds after a failure (the caller removes the staged output).
    """

    suffixes: ClassVar[tuple[str, ...]]
    """The ends of output names this writer writes (``.tsv``)."""
    annotates_records: ClassVar[bool] = False
    """Writes the input VCF's records themselves (needs :attr:`OutputPlan.source`)."""
    side_suffixes: ClassVar[tuple[str, ...]] = ()
    """Files the writer may put beside its output (``OUT.tbi``); published with it."""

    def __init__(self, path: Path, plan: OutputPlan) -> None:
        self.path, self.plan = path, plan

    @abstractmethod
    def write(self, row: Row) -> None:
        """Write one finished row (rows come in VCF order)."""

    def write_skipped(self, block: SkippedRows) -> None:
        """Write consecutive skipped rows (they come in VCF order, between the rows of :meth:`write`).
        This writes each as a :class:`Row`; a writer may write them straight from the block's tuples."""
        for row in block.rows():
            self.write(row)

    @abstractmethod
    def close(self) -> None:
        """Finish the output (flush, index)."""

    @abstractmethod
    def discard(self) -> None:
        """Release what the writer holds after a failure (the staged output is removed by the caller)."""

    @classmethod
    @abstractmethod
    def recognises(cls, path: Path) -> bool:
        """Whether the existing ``path`` is an output this writer wrote (``--overwrite`` may replace it)."""

    @classmethod
    def hint(cls, name: str) -> str:
        """Advice for an output name no writer takes (``""``: none from this writer)."""
        return ""

    needs: ClassVar[tuple[str, ...]] = ()
    """Modules of an optional extra the writer imports (pyarrow): :meth:`require` checks them."""

    @classmethod
    def require(cls) -> None:
        """Check, before any work, that the modules this writer :attr:`needs` are installed (a one-line
        :class:`UserError` naming what is missing); :func:`output_suffix` calls it for the writer it picks."""
        for module in cls.needs:
            try:
                importlib.import_module(module)
            except ImportError:
                raise UserError(missing_extra(f"a {cls.suffixes[0]} output", module)) from None

    @classmethod
    def published(cls, out: Path, sides: tuple[str, ...]) -> None:
        """After ``out`` is published with the side files ``sides``: remove the side files of an output it
        replaced that the new one did not get."""
        for suffix in cls.side_suffixes:
            if suffix not in sides:
                out.with_name(out.name + suffix).unlink(missing_ok=True)


WRITERS: dict[str, type[ScoreWriter]] = {}
"""The writers by output suffix, in the order registered."""

W = TypeVar("W", bound=type[ScoreWriter])


def register_writer(cls: W) -> W:
    """Register the writer ``cls`` for each of its suffixes.

    Raises
    ------
    ValueError
        Another writer already has one of them.
    """
    for suffix in cls.suffixes:
        if WRITERS.get(suffix, cls) is not cls:
            raise ValueError(f"a writer for {suffix!r} outputs is already registered")
    for suffix in cls.suffixes:
        WRITERS[suffix] = cls
    return cls


STDOUT = Path("-")
"""The output path that is standard output (``--out -``): written directly, neither staged nor locked."""


def is_stdout(path: Path) -> bool:
    """Whether ``path`` is standard output (:data:`STDOUT`)."""
    return str(path) == "-"


def output_suffix(out: Path, command: str = "score-vcf") -> str:
    """The registered suffix (:data:`WRITERS`) that ``out`` ends in (the longest); a :class:`UserError`
    naming ``command`` (``score-vcf``, ``lookup``) otherwise, or when its writer cannot run here
    (:meth:`ScoreWriter.require`: pyarrow missing)."""
    taken = [suffix for suffix in WRITERS if out.name.endswith(suffix) and len(out.name) > len(suffix)]
    if taken:
        kind = max(taken, key=len)
        WRITERS[kind].require()
        return kind
    hint = "".join(f" ({h})" for h in dict.fromkeys(w.hint(out.name) for w in WRITERS.values()) if h)
    raise UserError(f"{command} output must end in {', '.join(WRITERS)}, got {out.name!r}{hint}")


def _fixed(row: Row) -> list[str]:
    r = row.record
    center = "" if row.center is None else str(row.center)
    return [r.chrom, str(r.pos), r.id, r.ref, r.alt, str(r.allele_index), center, row.check, row.match, row.status]


@register_writer
class TsvScores(ScoreWriter):
    """The TSV output: ``##key=value`` semantics lines, the header, one row per ALT allele."""

    suffixes = (".tsv", ".tsv.gz")

    def __init__(self, path: Path, plan: OutputPlan) -> None:
        super().__init__(path, plan)
        names, semantics, selection = plan.names, plan.semantics, plan.selection
        self.selection = selection
        self.n = len(selection)
        gz = path.name.endswith(".gz")
        self.handle = (
            sys.stdout
            if is_stdout(path)
            else gzip.open(path, "wt", compresslevel=TSV_GZIP_LEVEL, newline="")
            if gz
            else open(path, "w", newline="")
        )
        for key, value in semantics.lines():
            self.handle.write(f"##{key}={value}\n")
        self.values = plan.values
        self.handle.write("\t".join([*COLUMNS, *(names[k] for k in selection), *value_columns(plan)]) + "\n")

    def write(self, row: Row) -> None:
        """Write one row: the fixed columns, then the selected targets' scores (empty when skipped)."""
        if row.values is not None:
            values = [TSV_FORMAT % v for v in row.values[self.selection].astype(np.float64).tolist()]
        else:
            values = [""] * self.n
        for kind in self.values:
            extra = row_values(row, kind)
            if extra is None:
                values += [""] * self.n
            else:
                values += [TSV_FORMAT % v for v in extra[self.selection].astype(np.float64).tolist()]
        self.handle.write("\t".join([*_fixed(row), *values]) + "\n")

    def write_skipped(self, block: SkippedRows) -> None:
        """Write skipped rows straight from their tuples: the line :meth:`write` writes for each."""
        tail = "\t" * (self.n * (1 + len(self.values))) + "\n"  # the empty score (and --values) columns
        self.handle.write(
            "".join(
                f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t{index}\t\t{check}\t{match}\tskipped: {skip.reason}{tail}"
                for _, chrom, pos, vid, ref, alt, index, _, check, match, skip in block.tuples
            )
        )

    def close(self) -> None:
        """Close the file (flush standard output, which stays open)."""
        if is_stdout(self.path):
            self.handle.flush()
        else:
            self.handle.close()

    def discard(self) -> None:
        """Close the file (after a failure)."""
        self.close()

    @classmethod
    def recognises(cls, path: Path) -> bool:
        """A (gzipped) file whose first line after the ``##`` lines is the header of :data:`COLUMNS`."""
        return path.is_file() and _tsv_header(path).startswith("\t".join(COLUMNS) + "\t")


def info_ids(names: list[str], taken: set[str]) -> list[str]:
    """INFO IDs for target names: ``MPX_`` and the name with every character VCF does not allow in an
    ID as ``_``; a repeat (or one in ``taken``) gets ``_2``, ``_3``, ..."""
    ids, used = [], set(taken) | set(FIXED_INFO)
    for name in names:
        base = "MPX_" + re.sub(r"[^0-9A-Za-z_.]", "_", name)
        key, k = base, 1
        while key in used:
            k += 1
            key = f"{base}_{k}"
        used.add(key)
        ids.append(key)
    return ids


def _describe(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")


@register_writer
class VcfScores(ScoreWriter):
    """The ``.vcf.gz`` output: the input records with the scores as ``Number=A`` INFO fields.

    The input is read again in step with the rows (they come in VCF order), so no record is held
    longer than its own rows; records are written through pysam (bgzip), and the file is indexed
    with tabix when it is closed.
    """

    suffixes = (".vcf.gz",)
    annotates_records = True
    side_suffixes = INDEX_SUFFIXES

    def __init__(self, path: Path, plan: OutputPlan) -> None:
        super().__init__(path, plan)
        if plan.source is None:
            raise UserError("a .vcf.gz output annotates the records of a VCF; none was given")
        source, names, semantics, selection = plan.source, plan.names, plan.semantics, plan.selection
        self.selection = selection
        self.selected = [names[k] for k in selection]
        declared = undeclared(source)
        self.errors = HtslibErrors()
        self._opened = open_vcf(source)
        variants = self._opened.__enter__()
        try:
            _declare_missing(variants.header, declared, plan.contigs)  # before a record is read: none is flagged
            self.header = self._header(variants.header, semantics)
            self.contigs = set(self.header.contigs)
            self.records = raw_records(variants, source)
            with self.errors.catching():
                sys.stdout.flush()  # standard output: pysam writes to its descriptor, after what Python holds
                self.out = pysam.VariantFile(str(path), "w" if is_stdout(path) else "wz", header=self.header)
        except BaseException:
            self._opened.__exit__(None, None, None)
            self.errors.close()
            raise
        self.number = 0
        self.rows: list[Row] = []
        self.sorted, self.last, self.seen = True, ("", 0), set[str]()

    def _header(self, header: Any, semantics: Semantics) -> Any:
        clash = sorted(set(header.info) & set(FIXED_INFO))
        if clash:
            raise UserError(
                f"the VCF already has INFO field {clash[0]} (scored before?); drop it with "
                f"bcftools annotate -x INFO/{clash[0]}"
            )
        out = header.copy()
        if "END" not in out.info:  # pysam writes INFO/END for a record with a symbolic ALT (<DEL>)
            out.info.add("END", 1, "Integer", END_INFO)
        for key, value in semantics.lines():
            out.add_meta(VCF_META + key, value)
        quantity = semantics.quantity
        self.ids = info_ids(self.selected, set(header.info))
        for key, name in zip(self.ids, self.selected):
            what = f"{quantity} score of target '{name}' ({semantics.mode}; see ##{VCF_META}formula)"
            out.info.add(key, "A", "Float", _describe(what))
        self.value_ids: dict[str, list[str]] = {}
        taken = set(header.info) | set(self.ids)
        for kind in self.plan.values:
            ids = self.value_ids[kind] = info_ids([f"{name}_{kind}" for name in self.selected], taken)
            taken |= set(ids)
            for key, name in zip(ids, self.selected):
                what = (
                    f"percentile of target '{name}' in the background (see ##{VCF_META}background)"
                    if kind == "q"
                    else f"--values {kind} of target '{name}' (see ##{VCF_META}values)"
                )
                out.info.add(key, "A", "Float", _describe(what))
        for key, (kind, what) in FIXED_INFO.items():
            out.info.add(key, "A", kind, _describe(what))
        return out

    def write(self, row: Row) -> None:
        """Take one row; a record is written when the rows of the next one begin."""
        if self.rows and row.record.number != self.rows[0].record.number:
            self._flush()
        self.rows.append(row)

    def _next_record(self, number: int) -> Any:
        """The input record ``number`` (1-based; numbers only grow)."""
        record = None
        while self.number < number:
            record = next(self.records, None)
            if record is None:
                raise UserError(
                    f"the VCF {str(self.plan.source.path) if self.plan.source else ''!r} ends at record {self.number}, "
                    f"but record {number} was scored: it changed while it was read; score it again"
                )
            self.number += 1
        return record

    def _flush(self) -> None:
        rows, self.rows = self.rows, []
        record = self._next_record(rows[0].record.number)
        if record.chrom != self.last[0]:
            self.sorted = self.sorted and record.chrom not in self.seen  # a chromosome comes back
            self.seen.add(record.chrom)
        elif record.pos < self.last[1]:
            self.sorted = False
        self.last = (record.chrom, record.pos)
        if record.chrom not in self.contigs:  # htslib would exit the process in translate
            raise UserError(
                f"record {self.number} names contig {record.chrom!r}, which the VCF did not use when its "
                "header was completed: it changed while it was read; score it again"
            )
        record.translate(self.header)
        if record.alts:  # Number=A fields need an ALT
            self._annotate(record, rows)
        try:
            with self.errors.catching():
                self.out.write(record)
        except (OSError, ValueError) as exc:
            reason = self.errors.last() or str(exc)
            raise UserError(
                f"htslib cannot write record {self.number} ({record.chrom}:{record.pos}) of the .vcf.gz output: "
                f"{reason}"
            ) from None

    def _annotate(self, record: Any, rows: list[Row]) -> None:
        scores = [None if r.values is None else r.values[self.selection] for r in rows]
        for k, key in enumerate(self.ids):
            record.info[key] = tuple(None if s is None else _float(s[k]) for s in scores)
        best = [None if s is None or not len(s) else int(np.argmax(np.abs(s))) for s in scores]
        record.info["MAX_ABS"] = tuple(
            None if s is None or b is None else _float(abs(s[b])) for s, b in zip(scores, best)
        )
        record.info["TOP_TARGET"] = tuple(
            "." if s is None or b is None or not abs(s[b]) > 0 else _token(self.selected[b])  # all 0: no top target
            for s, b in zip(scores, best)
        )
        for kind, ids in self.value_ids.items():
            extra = [row_values(r, kind) for r in rows]
            for k, key in enumerate(ids):
                record.info[key] = tuple(None if e is None else _float(e[self.selection[k]]) for e in extra)
        record.info["MPX_STATUS"] = tuple("scored" if r.skip is None else _token(r.skip.kind) for r in rows)
        record.info["REF_MATCH"] = tuple(r.match for r in rows)

    def close(self) -> None:
        """Write the last record, close the file, and index it with tabix (when sorted)."""
        try:
            if self.rows:
                self._flush()
            if next(self.records, None) is not None:
                raise UserError(
                    f"the VCF has more records than the {self.number} scored: it changed while it was read; "
                    "score it again"
                )
            try:
                with self.errors.catching():
                    self.out.close()
            except (OSError, ValueError) as exc:
                raise UserError(f"htslib cannot finish the .vcf.gz output: {self.errors.last() or exc}") from None
        finally:
            self._opened.__exit__(None, None, None)
            self.errors.close()
        if self.sorted and not is_stdout(self.path):
            for csi in (False, True):  # a .tbi cannot hold positions past 2^29: then a .csi
                try:
                    with quiet_htslib():
                        pysam.tabix_index(str(self.path), preset="vcf", force=True, csi=csi)
                    return
                except (OSError, ValueError):
                    for index in INDEX_SUFFIXES:
                        self.path.with_name(self.path.name + index).unlink(missing_ok=True)

    def discard(self) -> None:
        """Close the output and the input (after a failure)."""
        try:
            with quiet_htslib():
                self.out.close()
        except (OSError, ValueError):
            pass  # the output is removed with its staging folder
        finally:
            self._opened.__exit__(None, None, None)
            self.errors.close()

    @classmethod
    def recognises(cls, path: Path) -> bool:
        """A ``.vcf.gz`` file whose header has the ``##multiplexer_quantity`` line."""
        if not path.is_file() or not path.name.endswith(".vcf.gz"):
            return False
        try:
            with gzip.open(path, "rt", errors="replace") as handle:
                for line in handle:
                    if not line.startswith("##"):
                        return False
                    if line.startswith(f"##{VCF_META}quantity="):
                        return True
        except (OSError, EOFError, zlib.error):
            return False
        return False

    @classmethod
    def hint(cls, name: str) -> str:
        """A plain ``.vcf`` (or ``.bcf``) output cannot be indexed."""
        return "plain .vcf cannot be indexed: use .vcf.gz" if name.endswith((".vcf", ".bcf")) else ""

    @classmethod
    def published(cls, out: Path, sides: tuple[str, ...]) -> None:
        """Remove an index of a replaced output that does not go with the new one; say when there is none."""
        super().published(out, sides)
        if not sides:
            print(
                f"warning: {out} is not indexed: its records are not sorted (sort the VCF with bcftools sort first)",
                file=sys.stderr,
            )


END_INFO = "End position of the variant described in this record"
"""The description of ``INFO/END`` when an output declares it (pysam writes ``END`` for a symbolic ALT)."""


def _declare_missing(header: Any, declared: Any, lengths: Mapping[str, int]) -> None:
    """Declare in the header of the VCF being read what its records use but it does not: each contig
    (with its length when the genome, ``lengths``, has it or spells it otherwise), and each INFO,
    FILTER and FORMAT key (as htslib declared it while reading the file once, ``declared``).

    Done before the first record is read: htslib flags a record that uses an undeclared key, and
    exits the process when such a record is translated to the output's header."""
    have = {"INFO": header.info, "FILTER": header.filters, "FORMAT": header.formats}
    for record in declared.records:
        known = have.get(record.type)
        if known is not None and record.get("ID") not in known:
            header.add_record(record)
    for name in declared.contigs:
        if name in header.contigs:
            continue
        length = lengths.get(name) or lengths.get(other_spelling(name, list(lengths)) or "")
        if length:
            header.contigs.add(name, length=length)
        else:
            header.contigs.add(name)


def _float(value: Any) -> float | None:
    v = float(value)
    return None if math.isnan(v) else v


def _token(text: str) -> str:
    """Text as a VCF INFO value: no whitespace, ``,``, ``;`` or ``=``."""
    return re.sub(r"[\s,;=]+", "_", text) or "."


ZARR_CHUNK_BYTES = 8 * 1024**2
"""About this many bytes of scores per Zarr chunk (rows per chunk = this / (2 · targets))."""


@register_writer
class ZarrScores(ScoreWriter):
    """The ``.zarr`` output: ``scores`` float16 ``[variants, targets]`` and the variant table.

    Rows are buffered one chunk at a time and appended, so memory stays at one chunk whatever the
    number of variants. The attributes (semantics, target names) are written last: they mark a
    finished store.
    """

    suffixes = (".zarr",)
    INTS = ("pos", "allele_index", "window_center")

    def __init__(self, path: Path, plan: OutputPlan) -> None:
        super().__init__(path, plan)
        names, semantics, selection = plan.names, plan.semantics, plan.selection
        self.selection = selection
        n = len(selection)
        self.chunk = max(1, min(65536, ZARR_CHUNK_BYTES // (2 * max(n, 1))))
        self.group = zarr.open_group(str(path), mode="w-")
        self.attrs: dict[str, Any] = {
            "kind": "score-vcf",
            "semantics": semantics.as_dict(),
            "target_names": [names[k] for k in selection],
            "columns": COLUMNS,
        }
        self.scores = self.group.create_array(
            "scores", shape=(0, n), chunks=(self.chunk, max(n, 1)), dtype="float16", fill_value=np.nan
        )
        self.values = {  # --values: float32, probabilities near 0 and 1 need more than float16's 11 bits
            kind: self.group.create_array(
                f"{kind}_values", shape=(0, n), chunks=(self.chunk, max(n, 1)), dtype="float32", fill_value=np.nan
            )
            for kind in plan.values
        }
        if plan.values:
            self.attrs["values"] = list(plan.values)
        self.columns = {
            c: self.group.create_array(
                c,
                shape=(0,),
                chunks=(self.chunk,),
                dtype="int64" if c in self.INTS else str,
                fill_value=0 if c in self.INTS else "",
            )
            for c in COLUMNS
        }
        self.buffer: list[list[str]] = []  # the fixed columns of each row buffered
        self.scored: dict[int, np.ndarray] = {}  # the scores of the scored rows buffered, by index
        self.extra: dict[str, dict[int, np.ndarray]] = {kind: {} for kind in self.values}  # --values, likewise
        self.n = 0

    def write(self, row: Row) -> None:
        """Buffer one row; a full chunk is appended."""
        k = len(self.buffer)
        if row.values is not None:
            self.scored[k] = row.values[self.selection]
        for kind, buffered in self.extra.items():
            extra = row_values(row, kind)
            if extra is not None:
                buffered[k] = extra[self.selection]
        self.buffer.append(_fixed(row))
        if len(self.buffer) >= self.chunk:
            self._append()

    def write_skipped(self, block: SkippedRows) -> None:
        """Buffer skipped rows straight from their tuples (full chunks appended as :meth:`write` does)."""
        rows = [
            [chrom, pos, vid, ref, alt, str(index), "", check, match, f"skipped: {skip.reason}"]
            for _, chrom, pos, vid, ref, alt, index, _, check, match, skip in block.tuples
        ]
        while rows:
            take = self.chunk - len(self.buffer)
            self.buffer += rows[:take]
            rows = rows[take:]
            if len(self.buffer) >= self.chunk:
                self._append()

    def _append(self) -> None:
        rows, scored, extra = self.buffer, self.scored, self.extra
        self.buffer, self.scored, self.extra = [], {}, {kind: {} for kind in self.values}
        if not rows:
            return
        lo, hi = self.n, self.n + len(rows)
        for array, buffered, dtype in [(self.scores, scored, np.float16)] + [
            (self.values[kind], extra[kind], np.float32) for kind in self.values
        ]:
            data = np.full((len(rows), len(self.selection)), np.nan, dtype=np.float32)
            for k, v in buffered.items():
                data[k] = v
            array.resize((hi, len(self.selection)))
            array[lo:hi] = data.astype(dtype)
        fixed = list(zip(*rows))
        for c, values in zip(COLUMNS, fixed):
            array = self.columns[c]
            array.resize((hi,))
            if c in self.INTS:
                array[lo:hi] = np.array([int(v) if v else -1 for v in values], dtype=np.int64)
            else:
                array[lo:hi] = np.array(values, dtype=object)
        self.n = hi

    def close(self) -> None:
        """Append the last rows, then write the attributes."""
        self._append()
        self.group.attrs.update(write_meta_digest(self.attrs))  # sealed: checked on every open

    def discard(self) -> None:
        """Nothing to release (every chunk is written when appended)."""
        self.buffer, self.scored, self.extra = [], {}, {}

    @classmethod
    def recognises(cls, path: Path) -> bool:
        """A folder whose ``zarr.json`` attributes say ``kind: score-vcf``."""
        if not path.is_dir():
            return False
        try:
            return json.loads((path / "zarr.json").read_text()).get("attributes", {}).get("kind") == "score-vcf"
        except (OSError, ValueError, AttributeError):
            return False


TABLES_EXTRA = "pip install 'multiplexer[tables]'"
"""How to get what ``.parquet`` outputs need (pandas and pyarrow: the ``tables`` extra)."""

PARQUET_META = b"multiplexer"
"""The key of a ``.parquet`` output's file metadata holding what it is (JSON: ``kind``, semantics, ...)."""

PARQUET_ROWS = 65536
"""Rows per row group of a ``score-vcf`` ``.parquet`` output (what :class:`ParquetScores` holds in memory)."""


def missing_extra(what: str, module: str) -> str:
    """The one line saying that ``what`` needs ``module`` (of the ``tables`` extra), which is missing."""
    return f"{what} needs {module.split('.')[0]}, which is not installed: {TABLES_EXTRA} (or write .tsv.gz)"


def import_pyarrow(what: str = "a .parquet output") -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, imported; a one-line :class:`UserError` when pyarrow is missing.

    Raises
    ------
    UserError
        pyarrow cannot be imported (it is in the ``tables`` extra, :data:`TABLES_EXTRA`).
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(missing_extra(what, "pyarrow")) from None
    return pa, pq


def is_parquet_of(path: Path, kind: str) -> bool:
    """Whether ``path`` is a Parquet file whose :data:`PARQUET_META` says ``kind`` (``False`` when it
    cannot be read, or pyarrow is missing)."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"PAR1":
                return False
        _, pq = import_pyarrow()
        meta = pq.read_schema(path).metadata or {}
        return bool(json.loads(meta.get(PARQUET_META, b"{}")).get("kind") == kind)
    except Exception:  # noqa: BLE001 - unreadable (pyarrow's ArrowInvalid, OSError, bad JSON), or no pyarrow
        return False


@register_writer
class ParquetScores(ScoreWriter):
    """The ``.parquet`` output: the TSV's table, typed (``pos``, ``allele_index``, ``window_center``
    int64; one float32 column per selected target, then the ``--values`` columns, null where not
    scored), in row groups of :data:`PARQUET_ROWS` rows, with the semantics in the file's metadata
    (:data:`PARQUET_META`).

    Rows are buffered one row group at a time, so memory stays at one row group whatever the number
    of variants.
    """

    suffixes = (".parquet",)
    needs = ("pyarrow", "pyarrow.parquet")
    KIND = "score-vcf"
    INTS = ("pos", "allele_index", "window_center")

    def __init__(self, path: Path, plan: OutputPlan) -> None:
        super().__init__(path, plan)
        self.pa, pq = import_pyarrow()
        self.selection = plan.selection
        self.targets = [plan.names[k] for k in plan.selection]
        pa = self.pa
        fields = [pa.field(c, pa.int64() if c in self.INTS else pa.string()) for c in COLUMNS]
        fields += [pa.field(name, pa.float32()) for name in [*self.targets, *value_columns(plan)]]
        meta = {"kind": self.KIND, "semantics": plan.semantics.as_dict(), "target_names": self.targets}
        self.schema = pa.schema(fields, metadata={PARQUET_META: json.dumps(meta, sort_keys=True).encode()})
        self.out = pq.ParquetWriter(str(path), self.schema)
        self.buffer: list[Row] = []

    def write(self, row: Row) -> None:
        """Buffer one row; a full row group is written."""
        self.buffer.append(row)
        if len(self.buffer) >= PARQUET_ROWS:
            self._flush()

    def _flush(self) -> None:
        rows, self.buffer = self.buffer, []
        if not rows:
            return
        pa = self.pa
        fixed = list(zip(*(_fixed(row) for row in rows)))
        arrays = []
        for c, values in zip(COLUMNS, fixed):
            if c in self.INTS:
                arrays.append(pa.array([int(v) if v else None for v in values], type=pa.int64()))
            else:
                arrays.append(pa.array(list(values), type=pa.string()))
        getters: list[Callable[[Row], np.ndarray | None]] = [lambda row: row.values]
        getters += [partial(row_values, kind=kind) for kind in self.plan.values]  # --values: <target>_ref, _alt
        for get in getters:
            arrays += self._floats([get(row) for row in rows])
        self.out.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def _floats(self, per_row: list[np.ndarray | None]) -> list[Any]:
        """One float32 column per selected target from each row's values over every target (``None``:
        not scored, null)."""
        table = np.full((len(per_row), len(self.selection)), np.nan, dtype=np.float32)
        have = np.array([v is not None for v in per_row], dtype=bool)
        for k, values in enumerate(per_row):
            if values is not None:
                table[k] = values[self.selection]
        return [self.pa.array(table[:, j], type=self.pa.float32(), mask=~have) for j in range(len(self.selection))]

    def close(self) -> None:
        """Write the last row group and the footer."""
        self._flush()
        self.out.close()

    def discard(self) -> None:
        """Close the file (after a failure; the caller removes it)."""
        self.buffer = []
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - the staged file is removed anyway
            pass

    @classmethod
    def recognises(cls, path: Path) -> bool:
        """A Parquet file whose metadata says ``kind: score-vcf``."""
        return is_parquet_of(path, cls.KIND)


@contextmanager
def score_writer(kind: str, path: Path, plan: OutputPlan) -> Iterator[ScoreWriter]:
    """The writer of output ``kind`` (a suffix of :data:`WRITERS`) at the (staged) ``path``; closed when
    the block succeeds, discarded when it fails."""
    writer = WRITERS[kind](path, plan)
    try:
        yield writer
    except BaseException:
        writer.discard()
        raise
    writer.close()


def lock_path(out: Path) -> Path:
    """The lock of output ``out`` while a process writes it: ``.<name>.lock`` beside it."""
    return out.with_name(f".{out.name}.lock")


@contextmanager
def exclusive_output(out: Path, overwrite: bool) -> Iterator[None]:
    """Hold the right to write ``out`` during the block: its lock file (:func:`lock_path`, created
    exclusively, holding ``host pid``), so a second process writing the same output is refused
    instead of silently replacing the first one's output. A lock left by a dead process of this
    machine is taken over. Once the lock is held, an output that another process published meanwhile
    is refused too, unless ``overwrite``.

    Raises
    ------
    UserError
        Another process holds the lock; ``out`` appeared (without ``overwrite``).
    """
    path = lock_path(out)
    mine = f"{platform.node()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, _, pid = path.read_text().partition(" ")
            except OSError:
                host, pid = "", ""
            if host == platform.node() and pid.strip().isdigit() and not process_alive(int(pid)):
                path.unlink(missing_ok=True)  # its writer died: take over
                continue
            raise UserError(
                f"another process ({host or 'unknown host'}, pid {pid.strip() or '?'}) is writing {str(out)!r}; "
                f"wait for it to finish, or remove {str(path)!r} if it is gone"
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(mine)
        break
    else:
        raise UserError(f"cannot take the lock {str(path)!r} of output {str(out)!r}")
    try:
        refuse_existing([out], overwrite)
        yield
    finally:
        path.unlink(missing_ok=True)


def _write_rows(writer: ScoreWriter, rows: Iterable[Row | SkippedRows]) -> None:
    """Hand ``rows`` to ``writer``: a row to :meth:`~ScoreWriter.write`, a block of skipped rows to
    :meth:`~ScoreWriter.write_skipped`."""
    for row in rows:
        if isinstance(row, SkippedRows):
            writer.write_skipped(row)
        else:
            writer.write(row)


def write_scores(
    out: Path,
    kind: str,
    plan: OutputPlan,
    rows: Iterable[Row | SkippedRows],
    check: Callable[[], None] | None = None,
    *,
    overwrite: bool = False,
) -> None:
    """Write ``rows`` (and blocks of skipped rows, :class:`~pipeline.apply.variants.rows.SkippedRows`) into
    the output ``out`` of ``kind`` through a staging folder: published only when complete, with the side
    files its writer made (a tabix index). One process at a time writes an output
    (:func:`exclusive_output`); without ``overwrite`` an existing ``out`` is refused.

    ``check`` runs after the last row, before anything is published (it may raise to refuse the output).
    """
    writer = WRITERS[kind]
    sides: list[str] = []
    if is_stdout(out):  # nothing to stage or lock: rows go out as they come
        try:
            with score_writer(kind, out, plan) as w:
                _write_rows(w, rows)
                if check is not None:
                    check()
        except BrokenPipeError:
            raise WriteError(
                "standard output was closed by its reader (e.g. head) before every row was written"
            ) from None
        except OSError as exc:
            raise WriteError(f"cannot write to standard output: {exc.strerror or exc}") from None
        return
    try:
        with exclusive_output(out, overwrite), staging(out) as stage:
            staged = stage.path(out)
            with score_writer(kind, staged, plan) as w:
                _write_rows(w, rows)
                if check is not None:
                    check()
            for suffix in writer.side_suffixes:
                if staged.with_name(staged.name + suffix).is_file():
                    stage.path(out.with_name(out.name + suffix))
                    sides.append(suffix)
    except OSError as exc:
        raise WriteError(f"cannot write output {str(out)!r}: {exc.strerror or exc}") from None
    writer.published(out, tuple(sides))


def _tsv_header(path: Path) -> str:
    """The first line of a (gzipped) text file that is not a ``##`` line (``""`` if unreadable)."""
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rt", errors="replace") if gz else open(path, errors="replace") as handle:
            for k, line in enumerate(handle):
                if not line.startswith("##") or k > 1000:
                    return line
    except (OSError, EOFError, zlib.error, UnicodeError):
        pass
    return ""


def _is_scores(path: Path) -> bool:
    """Whether one of the registered writers recognises ``path`` as its output."""
    return any(writer.recognises(path) for writer in dict.fromkeys(WRITERS.values()))


SCORES_OUTPUT = OutputKind("an output of score-vcf", _is_scores)
"""What ``--overwrite`` may replace: a table, VCF or Zarr store that ``score-vcf`` wrote."""


@dataclass
class ScoresTable:
    """A ``score-vcf`` output read back: the semantics, the target names and the rows (each with
    ``effects`` by target, and with ``--values`` a ``values`` dict of ``ref``/``alt`` by target)."""

    semantics: dict[str, Any]
    target_names: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def read_tsv_scores(path: str | os.PathLike[str]) -> ScoresTable:
    """Read a ``score-vcf`` TSV back: semantics from the ``##`` lines, effect columns as floats
    (``None`` when empty)."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    semantics: dict[str, Any] = {}
    with opener(path, "rt") as handle:
        line = handle.readline()
        while line.startswith("##"):
            key, _, value = line[2:].rstrip("\n").partition("=")
            semantics[key] = json.loads(value) if value[:1] in "{[" else value
            line = handle.readline()
        header = line.rstrip("\n").split("\t")
        kinds = [kind for kind in VALUES if kind in (semantics.get("values") or {})]  # columns in VALUES order
        n = (len(header) - len(COLUMNS)) // (1 + len(kinds))
        names = header[len(COLUMNS) : len(COLUMNS) + n]
        table = ScoresTable(semantics, names)
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            row: dict[str, Any] = dict(zip(header[: len(COLUMNS)], cols[: len(COLUMNS)]))
            row["pos"] = int(row["pos"])
            row["allele_index"] = int(row["allele_index"])
            row["window_center"] = int(row["window_center"]) if row["window_center"] else None
            groups = [cols[len(COLUMNS) + g * n : len(COLUMNS) + (g + 1) * n] for g in range(1 + len(kinds))]
            row["effects"] = _floats(names, groups[0])
            if kinds:
                row["values"] = {kind: _floats(names, group) for kind, group in zip(kinds, groups[1:])}
            table.rows.append(row)
    return table


def _floats(names: list[str], cols: list[str]) -> dict[str, float | None]:
    return {name: (float(v) if v != "" else None) for name, v in zip(names, cols)}
