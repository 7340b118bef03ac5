"""``catalogue export``: a catalogue's summary tier as one table, a bgzip TSV with a tabix index or Parquet.

One row per catalogued SNV: the three other bases of every non-``N`` position of the catalogue's
regions, in genome order (contigs in the catalogue's order, positions ascending, the alternative
bases in alphabet order ``A, G, C, T``). Columns (:func:`export_columns`): ``chrom``, ``pos``
(1-based), ``ref``, ``alt``, ``max_abs`` and ``top_target`` (the largest ``|effect|`` over all the
model's targets and its target, as the catalogue stores them), then ``top<i>_target`` and
``top<i>_effect`` for ``i = 1..k`` (``--top-k``): the stored targets (``catalogue --targets``) ranked by
``|effect|``, each with its signed effect, and with ``--background`` ``top<i>_q``: that effect's
percentile among the background's effects of that target (what ``lookup --background`` gives it).

- ``.tsv.gz``: BGZF, ``##key=value`` lines (the score's semantics, as ``score-vcf``'s TSV has them,
  and one ``##column_<name>=`` line per column), a ``#chrom pos ...`` header line, then the rows;
  indexed with tabix (``.tbi``, or ``.csi`` past 2^29) on ``chrom`` and ``pos``: every header line
  starts with ``#``, tabix's meta character. Values are written with ``%.6g``, exact for the
  catalogue's float16 values.
- ``.parquet``: the same table, typed (``pos`` int64, values float32 holding the float16 values
  exactly), in row groups that never span two contigs (at most :data:`ROW_GROUP_ROWS` rows, a run of
  positions of one contig: readers skip groups by their ``chrom`` and ``pos`` statistics), the
  semantics in the file's metadata (:data:`~pipeline.apply.variants.writers.PARQUET_META`).

The export streams: a catalogue unit at a time is read (checked against its digests,
:func:`~pipeline.store.catalogue.read_checked_unit`), turned into rows and written, so memory stays at
a unit (and a Parquet row group) whatever the genome. It resumes by contig: each contig becomes one
part in ``OUT.parts`` (written under a temporary name and renamed when complete, so a part is whole or
absent), ``plan.json`` there records what the parts hold (the catalogue's identity and the options; a
rerun with others is refused), and a rerun skips the finished contigs. When every contig is done, the
parts are joined into ``OUT`` in a staging folder and published (the index first, the table last),
then the folder is removed: ``OUT`` exists only complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pysam
from tqdm import tqdm

from pipeline.apply.outputs import TSV_FORMAT, OutputKind, check_output
from pipeline.apply.variants.options import ExportOptions
from pipeline.apply.variants.records import quiet_htslib
from pipeline.apply.variants.semantics import Semantics
from pipeline.apply.variants.values import Percentiles
from pipeline.apply.variants.writers import PARQUET_META, exclusive_output, import_pyarrow, is_parquet_of
from pipeline.core.encoding import ALPHABET
from pipeline.core.files import atomic_path, staging
from pipeline.core.urls import refuse_url
from pipeline.errors import UserError, WriteError
from pipeline.store.catalogue import N_CODE, Catalogue, CatalogueMeta, open_catalogue, read_checked_unit
from pipeline.store.tiles import ALTS

FORMAT = "multiplexer-catalogue-export"
VERSION = 1
KIND = "catalogue-export"
"""What a ``.parquet`` export's metadata says it is."""
SUFFIXES = (".tsv.gz", ".parquet")
"""The outputs ``catalogue export`` writes."""
FIXED = ("chrom", "pos", "ref", "alt", "max_abs", "top_target")
"""The columns of every export; ``top<i>_target``, ``top<i>_effect`` follow (:func:`export_columns`)."""
ROW_GROUP_ROWS = 1 << 19
"""Most rows per row group of a ``.parquet`` export (a row group never spans two contigs)."""
INDEX_SUFFIXES = (".tbi", ".csi")
"""The index a ``.tsv.gz`` export gets: tabix ``.tbi``, or ``.csi`` when a position lies past 2^29."""
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
"""The empty block that ends a BGZF file (dropped from each part when the parts are joined)."""
EXPORT_REASON = (
    "catalogue export keeps its parts beside OUT and resumes them in place; write to a local or shared file "
    "system and copy the result"
)


def export_columns(top_k: int, percentiles: bool = False) -> list[str]:
    """The columns of an export listing ``top_k`` targets per SNV (with their percentiles: ``top<i>_q``)."""
    each = ("target", "effect", "q") if percentiles else ("target", "effect")
    return [*FIXED, *(f"top{i}_{what}" for i in range(1, top_k + 1) for what in each)]


def column_meanings(meta: CatalogueMeta, top_k: int, percentiles: bool = False) -> dict[str, str]:
    """What each column of an export holds (written into its header or metadata)."""
    T, F = len(meta.target_names), len(meta.all_target_names)
    out = {
        "chrom": "contig, as the catalogue names it",
        "pos": "1-based position",
        "ref": "the catalogue's (the genome's) base, upper case",
        "alt": "the alternative base (the three others of each position, in the order A, G, C, T)",
        "max_abs": f"largest |effect| over all {F} targets of the model (the catalogue's max_abs, float16)",
        "top_target": "the target with that largest |effect|",
    }
    for i in range(1, top_k + 1):
        out[f"top{i}_target"] = f"the stored target (of {T}) with the {_ordinal(i)} largest |effect|"
        out[f"top{i}_effect"] = "its effect, signed (float16; ties keep the catalogue's target order)"
        if percentiles:
            out[f"top{i}_q"] = (
                "that effect's percentile: the share of the background's effects of that target at or below it"
            )
    return out


def _ordinal(i: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(i, f"{i}th")


@cache
def _float16_text() -> np.ndarray:
    """The TSV text of every float16 value, indexed by its bits (``""`` for NaN)."""
    values = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    text = np.array([TSV_FORMAT % v for v in values.astype(np.float64).tolist()], dtype=object)
    text[np.isnan(values)] = ""
    return text


@dataclass
class UnitRows:
    """The rows of one catalogue unit, as arrays (``n`` rows: 3 per catalogued non-``N`` position)."""

    pos: np.ndarray
    """int64 [n], 1-based."""
    ref: np.ndarray
    """int64 [n], base codes (:data:`~pipeline.core.encoding.ALPHABET`)."""
    alt: np.ndarray
    """int64 [n], base codes."""
    max_abs: np.ndarray
    """float16 [n]."""
    top_target: np.ndarray
    """int64 [n], index into ``all_target_names`` (-1: none)."""
    top_index: np.ndarray
    """int64 [n, k], indices into the stored ``target_names``, by decreasing ``|effect|``."""
    top_effect: np.ndarray
    """float16 [n, k]."""
    top_q: np.ndarray | None = None
    """float32 [n, k]: each ``top_effect``'s percentile in the background (``None``: no background)."""

    def __len__(self) -> int:
        return len(self.pos)


def unit_rows(data: dict[str, np.ndarray], start: int, top_k: int, percentiles: Percentiles | None = None) -> UnitRows:
    """The rows of a unit's arrays (:func:`~pipeline.store.catalogue.read_checked_unit`) starting at 0-based
    ``start``: every position whose ``ref`` is a base (not ``N``, not outside the regions), three rows each.

    Parameters
    ----------
    data : dict of np.ndarray
        ``ref`` [P] uint8, ``effects`` [P, 3, T] float16, ``max_abs`` [P, 3] float16,
        ``top_target`` [P, 3] int16.
    start : int
        0-based position of the unit's first position.
    top_k : int
        Targets ranked per row (at most ``T``).
    percentiles : Percentiles, optional
        The background (its ``columns``: the background's index of each stored target): adds ``top_q``,
        computed as ``lookup --background`` computes a row's (every stored target, then the top ``k``).

    Returns
    -------
    UnitRows
    """
    ref = np.asarray(data["ref"])
    idx = np.flatnonzero(ref < N_CODE)
    codes = ref[idx].astype(np.int64)
    stored = np.asarray(data["effects"])
    effects = stored[idx].reshape(3 * len(idx), stored.shape[-1])  # [3n, T], alts in ALTS order
    order = np.argsort(-np.abs(effects.astype(np.float32)), axis=1, kind="stable")[:, :top_k]
    top_q = None
    if percentiles is not None:
        shares = percentiles.background.percentile(effects.astype(np.float64), percentiles.columns)  # [3n, T]
        top_q = np.take_along_axis(shares.astype(np.float32), order, axis=1)
    return UnitRows(
        pos=np.repeat(start + idx + 1, 3).astype(np.int64),
        ref=np.repeat(codes, 3),
        alt=ALTS[codes].ravel(),
        max_abs=np.asarray(data["max_abs"])[idx].ravel(),
        top_target=np.asarray(data["top_target"])[idx].ravel().astype(np.int64),
        top_index=order.astype(np.int64),
        top_effect=np.take_along_axis(effects, order, axis=1),
        top_q=top_q,
    )


class _Names:
    """Codes and indices as text: bases, all targets, stored targets (index -1: ``""``)."""

    def __init__(self, meta: CatalogueMeta) -> None:
        self.bases = np.array(list(ALPHABET), dtype=object)
        self.all = np.array([*meta.all_target_names, ""], dtype=object)
        self.stored = np.array([*meta.target_names, ""], dtype=object)


def tsv_text(chrom: str, rows: UnitRows, names: _Names) -> str:
    """The TSV lines of ``rows`` (each ending in a newline; ``""`` when there are none)."""
    if not len(rows):
        return ""
    f16 = _float16_text()
    cols: list[list[str]] = [
        [chrom] * len(rows),
        [str(p) for p in rows.pos.tolist()],
        names.bases[rows.ref].tolist(),
        names.bases[rows.alt].tolist(),
        f16[rows.max_abs.view(np.uint16)].tolist(),
        names.all[rows.top_target].tolist(),
    ]
    for i in range(rows.top_index.shape[1]):
        cols.append(names.stored[rows.top_index[:, i]].tolist())
        cols.append(f16[np.ascontiguousarray(rows.top_effect[:, i]).view(np.uint16)].tolist())
        if rows.top_q is not None:
            cols.append([TSV_FORMAT % q for q in rows.top_q[:, i].astype(np.float64).tolist()])
    return "\n".join(map("\t".join, zip(*cols))) + "\n"


def arrow_table(chrom: str, rows: UnitRows, names: _Names, schema: Any) -> Any:
    """``rows`` as a pyarrow table of ``schema`` (:func:`parquet_schema`)."""
    pa, _ = import_pyarrow()
    arrays = [
        pa.array(np.full(len(rows), chrom, dtype=object), type=pa.string()),
        pa.array(rows.pos, type=pa.int64()),
        pa.array(names.bases[rows.ref], type=pa.string()),
        pa.array(names.bases[rows.alt], type=pa.string()),
        pa.array(rows.max_abs.astype(np.float32), type=pa.float32()),
        pa.array(names.all[rows.top_target], type=pa.string()),
    ]
    for i in range(rows.top_index.shape[1]):
        arrays.append(pa.array(names.stored[rows.top_index[:, i]], type=pa.string()))
        arrays.append(pa.array(rows.top_effect[:, i].astype(np.float32), type=pa.float32()))
        if rows.top_q is not None:
            arrays.append(pa.array(rows.top_q[:, i], type=pa.float32()))
    return pa.Table.from_arrays(arrays, schema=schema)


def parquet_schema(top_k: int, metadata: dict[str, Any], percentiles: bool = False) -> Any:
    """The Arrow schema of a ``.parquet`` export, with ``metadata`` (JSON) under
    :data:`~pipeline.apply.variants.writers.PARQUET_META`."""
    pa, _ = import_pyarrow()
    kinds = {"pos": pa.int64(), "max_abs": pa.float32()}
    fields = [
        pa.field(c, kinds.get(c, pa.float32() if c.endswith(("_effect", "_q")) else pa.string()))
        for c in export_columns(top_k, percentiles)
    ]
    return pa.schema(fields, metadata={PARQUET_META: json.dumps(metadata, sort_keys=True).encode()})


def _recognises(path: Path) -> bool:
    """Whether ``path`` is an export (what ``--overwrite`` may replace)."""
    if path.name.endswith(".parquet"):
        return is_parquet_of(path, KIND)
    try:
        with pysam.BGZFile(str(path), "rb", None) as handle:
            return bool(handle.readline().startswith(f"##{FORMAT}=".encode()))
    except (OSError, ValueError):
        return False


EXPORT_OUTPUT = OutputKind("an export written by catalogue export", _recognises)
"""What ``catalogue export --overwrite`` may replace."""


@dataclass
class ExportSummary:
    """What :func:`export_catalogue` did."""

    out: str
    n_contigs: int = 0
    n_before: int = 0
    """Contigs whose part was finished before this process started (resumed)."""
    n_rows: int = 0
    """Rows (SNVs) this process wrote into parts."""
    n_units: int = 0
    """Catalogue units this process read."""
    index: str | None = None
    seconds: float = 0.0

    def line(self) -> str:
        """One line for the command line."""
        rate = f" ({self.n_rows / self.seconds:,.0f} rows/s)" if self.seconds > 0 and self.n_rows else ""
        before = (
            f"; {self.n_before} of {self.n_contigs} contigs were exported before (resumed)" if self.n_before else ""
        )
        index = f" with its index {self.index}" if self.index else ""
        return (
            f"exported {self.n_rows:,} SNVs from {self.n_units} catalogue units in {self.seconds:.1f}s{rate}{before}; "
            f"{self.out}{index}"
        )


def _output_kind(out: Path) -> str:
    kind = next((s for s in SUFFIXES if out.name.endswith(s) and len(out.name) > len(s)), None)
    if kind is None:
        raise UserError(f"catalogue export writes {' or '.join(SUFFIXES)}: --out must end in one, got {out.name!r}")
    if kind == ".parquet":
        import_pyarrow()
    return kind


def _require_complete(cat: Catalogue) -> None:
    units = cat.meta.work_units()
    missing = [u for u, done in zip(units, cat.complete_work_units()) if not done]
    if missing:
        k, u = missing[0]
        raise UserError(
            f"catalogue {cat.path!r} is not complete ({len(missing)} of {len(units)} units not computed, first: "
            f"{cat.meta.unit_where(k, u)}): finish it with `multiplexer catalogue` (the same options resume it), "
            "then export"
        )


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass
class _Plan:
    """What one export writes: the catalogue, the format, ``top_k``, the background (if any)."""

    cat: Catalogue
    kind: str
    top_k: int
    percentiles: Percentiles | None = None
    schema: Any = None
    """The Arrow schema (``.parquet``)."""

    def __post_init__(self) -> None:
        self.names = _Names(self.cat.meta)
        if self.kind == ".parquet":
            self.schema = parquet_schema(self.top_k, self.metadata(), self.percentiles is not None)

    def semantics(self) -> Semantics:
        """The catalogue's semantics, with the background's when there is one."""
        semantics = Semantics(**self.cat.meta.semantics["fields"])
        if self.percentiles is not None:
            semantics = replace(semantics, background=self.percentiles.background.describe())
        return semantics

    def columns(self) -> dict[str, str]:
        """Each column and what it holds."""
        return column_meanings(self.cat.meta, self.top_k, self.percentiles is not None)

    def identity(self) -> dict[str, Any]:
        """What the parts depend on: the catalogue's attributes (its plan, model, genome), the format,
        ``top_k`` and the background's attributes."""
        background = None if self.percentiles is None else _sha256(self.percentiles.background.attrs)
        return {"format": FORMAT, "format_version": VERSION, "suffix": self.kind, "top_k": self.top_k,
                "catalogue_sha256": _sha256(self.cat.meta.attrs()), "background_sha256": background}  # fmt: skip

    def header(self) -> str:
        """The ``##`` lines and the ``#`` header line of a ``.tsv.gz`` export."""
        lines = [f"##{FORMAT}={VERSION}", *(f"##{key}={value}" for key, value in self.semantics().lines())]
        lines += [f"##catalogue_targets={json.dumps(self.cat.meta.target_names)}", f"##top_k={self.top_k}"]
        lines += [f"##column_{name}={text}" for name, text in self.columns().items()]
        columns = export_columns(self.top_k, self.percentiles is not None)
        return "\n".join([*lines, "#" + "\t".join(columns)]) + "\n"

    def metadata(self) -> dict[str, Any]:
        """The file metadata of a ``.parquet`` export."""
        return {"kind": KIND, "format_version": VERSION, "semantics": self.semantics().as_dict(),
                "top_k": self.top_k, "catalogue_targets": self.cat.meta.target_names,
                "columns": self.columns()}  # fmt: skip


class _Parts:
    """The parts folder ``OUT.parts`` of an export: ``plan.json`` and one file per finished contig."""

    def __init__(self, out: Path, kind: str, identity: dict[str, Any]) -> None:
        self.folder, self.kind, self.identity = out.with_name(out.name + ".parts"), kind, identity

    def prepare(self) -> None:
        """Create the folder with ``plan.json``, or check an existing one's."""
        plan = self.folder / "plan.json"
        if plan.is_file():
            try:
                recorded = json.loads(plan.read_text())
            except ValueError:
                recorded = {}
            changed = sorted(k for k in set(recorded) | set(self.identity) if recorded.get(k) != self.identity.get(k))
            if changed:
                raise UserError(
                    f"{str(self.folder)!r} holds parts of an export with other {', '.join(changed)}; rerun with the "
                    "same catalogue and options, or remove the folder to start again"
                )
            return
        if self.folder.exists():
            raise UserError(f"{str(self.folder)!r} exists and is not the parts folder of an export; remove it")
        self.folder.mkdir()
        with atomic_path(plan) as tmp:
            tmp.write_text(json.dumps(self.identity, indent=1, sort_keys=True) + "\n")

    def path(self, contig: int) -> Path:
        """The part of contig ``contig`` (by its index in the catalogue)."""
        return self.folder / f"contig-{contig:06d}{self.kind}"


def _units(cat: Catalogue, k: int) -> list[int]:
    return cat.meta.contigs[k].units(cat.meta.unit_positions)


def _contig_rows(plan: _Plan, k: int, bar: Any) -> Iterator[UnitRows]:
    """The rows of contig ``k``, a unit at a time (each read once and checked)."""
    cat = plan.cat
    for u in _units(cat, k):
        start, _ = cat.meta.unit_range(k, u)
        yield unit_rows(read_checked_unit(cat, k, u), start, plan.top_k, plan.percentiles)
        bar.update()


def _write_tsv_part(path: Path, plan: _Plan, k: int, bar: Any) -> int:
    n = 0
    chrom = plan.cat.meta.contigs[k].name
    with pysam.BGZFile(str(path), "wb", None) as handle:
        for rows in _contig_rows(plan, k, bar):
            handle.write(tsv_text(chrom, rows, plan.names).encode())
            n += len(rows)
    return n


def _write_parquet_part(path: Path, plan: _Plan, k: int, bar: Any) -> int:
    pa, pq = import_pyarrow()
    chrom, n = plan.cat.meta.contigs[k].name, 0
    held: list[Any] = []
    with pq.ParquetWriter(str(path), plan.schema) as writer:

        def flush() -> None:
            if held:
                table = pa.concat_tables(held)
                writer.write_table(table, row_group_size=max(len(table), 1))
                held.clear()

        for rows in _contig_rows(plan, k, bar):
            if len(rows):
                held.append(arrow_table(chrom, rows, plan.names, plan.schema))
                n += len(rows)
            if sum(len(t) for t in held) >= ROW_GROUP_ROWS:
                flush()
        flush()
    return n


def _join_tsv(parts: list[Path], header: str, staged: Path) -> str:
    """Join the header and the parts into ``staged`` (BGZF) and index it; the index's suffix."""
    head = staged.with_name(staged.name + ".head")
    with pysam.BGZFile(str(head), "wb", None) as handle:
        handle.write(header.encode())
    with open(staged, "wb") as out:
        for part in [head, *parts]:
            with open(part, "rb") as src:
                data = src.read()
            out.write(data[: -len(BGZF_EOF)] if data.endswith(BGZF_EOF) else data)
        out.write(BGZF_EOF)
    head.unlink()
    for csi in (False, True):  # a .tbi cannot hold positions past 2^29: then a .csi
        try:
            with quiet_htslib():
                pysam.tabix_index(str(staged), seq_col=0, start_col=1, end_col=1, meta_char="#", zerobased=False,
                                  force=True, csi=csi)  # fmt: skip
            return ".csi" if csi else ".tbi"
        except (OSError, ValueError):
            for suffix in INDEX_SUFFIXES:
                staged.with_name(staged.name + suffix).unlink(missing_ok=True)
    raise UserError(f"htslib cannot index the export {staged.name!r} with tabix")


def _join_parquet(parts: list[Path], staged: Path, schema: Any) -> None:
    """Copy the parts' row groups, in order, into ``staged`` (one row group in memory at a time)."""
    _, pq = import_pyarrow()
    with pq.ParquetWriter(str(staged), schema) as writer:
        for part in parts:
            source = pq.ParquetFile(str(part))
            for g in range(source.num_row_groups):
                table = source.read_row_group(g)
                writer.write_table(table, row_group_size=max(len(table), 1))


def _publish(out: Path, plan: _Plan, parts: list[Path]) -> str | None:
    """Join the parts into ``out`` through a staging folder (the index published before the table)."""
    index = None
    with staging(out) as stage:
        if plan.kind == ".tsv.gz":
            suffix = _join_tsv(parts, plan.header(), stage.folder / out.name)
            index = str(out) + suffix
            stage.path(Path(index))  # the staged index, named first: published before the table
            stage.path(out)
        else:
            _join_parquet(parts, stage.path(out), plan.schema)
    for suffix in INDEX_SUFFIXES:  # an index of a replaced export that does not go with the new one
        if index is None or not index.endswith(suffix):
            Path(str(out) + suffix).unlink(missing_ok=True)
    return index


def export_catalogue(
    catalogue: str, out: str, options: ExportOptions | None = None, *, progress: bool = True
) -> ExportSummary:
    """Export a complete catalogue's summary tier into ``out`` (``.tsv.gz`` with a tabix index, or ``.parquet``).

    Parameters
    ----------
    catalogue : str
        A complete catalogue (``multiplexer catalogue``).
    out : str
        ``.tsv.gz`` or ``.parquet`` (needs pyarrow); its parts go to ``out.parts`` until it is complete.
    options : ExportOptions, optional
        ``top_k`` (targets listed per SNV, at most the catalogue's stored targets), ``background`` (adds
        each listed effect's percentile) and ``overwrite``.
    progress : bool
        Show a progress bar (catalogue units).

    Returns
    -------
    ExportSummary

    Raises
    ------
    UserError
        Another suffix; a ``.parquet`` output without pyarrow; an incomplete catalogue; ``top_k`` larger
        than the stored targets; a background of another checkpoint, targets or quantity;
        ``out.parts`` from another export; an existing ``out`` (without ``overwrite``).
    DamagedDataError
        A unit of the catalogue does not match its digests.
    """
    t0 = time.perf_counter()
    opts = ExportOptions() if options is None else options
    refuse_url(out, "--out", EXPORT_REASON)
    out_path = Path(out)
    kind = _output_kind(out_path)
    check_output(out_path, EXPORT_OUTPUT, overwrite=opts.overwrite, inputs={"CATALOGUE": catalogue})
    cat = open_catalogue(catalogue)
    T = len(cat.meta.target_names)
    if opts.top_k > T:
        raise UserError(f"--top-k {opts.top_k}: the catalogue stores {T} target{'s' * (T != 1)}; give at most {T}")
    _require_complete(cat)
    summary = ExportSummary(out=str(out_path), n_contigs=len(cat.meta.contigs))
    plan = _Plan(cat, kind, opts.top_k, _percentiles(catalogue, cat, opts.background))
    try:
        with exclusive_output(out_path, opts.overwrite):
            parts = _Parts(out_path, kind, plan.identity())
            parts.prepare()
            _write_parts(plan, parts, summary, progress)
            summary.index = _publish(out_path, plan, [parts.path(k) for k in range(len(cat.meta.contigs))])
            shutil.rmtree(parts.folder, ignore_errors=True)
    except OSError as exc:
        raise WriteError(f"cannot write output {str(out_path)!r}: {exc.strerror or exc}") from None
    summary.seconds = time.perf_counter() - t0
    return summary


def _percentiles(path: str, cat: Catalogue, background: str | None) -> Percentiles | None:
    """The background of ``--background``, checked against the catalogue's checkpoint, targets and
    quantity, as ``lookup --background`` checks it (``None``: not given)."""
    if background is None:
        return None
    meta = cat.meta
    model = (str(meta.model.get("checkpoint_sha256")), meta.all_target_names)
    quantity = str(meta.semantics["fields"]["quantity"])
    return Percentiles.open(background, model, quantity, f"catalogue {path!r}", meta.target_names)


def _write_parts(plan: _Plan, parts: _Parts, summary: ExportSummary, progress: bool) -> None:
    """Write the part of every contig not finished yet."""
    cat = plan.cat
    todo = [k for k in range(len(cat.meta.contigs)) if not parts.path(k).is_file()]
    summary.n_before = len(cat.meta.contigs) - len(todo)
    total = sum(len(_units(cat, k)) for k in todo)
    with tqdm(total=total, desc="export", unit=" units", disable=not progress) as bar:
        for k in todo:
            with atomic_path(parts.path(k)) as tmp:
                if plan.kind == ".tsv.gz":
                    summary.n_rows += _write_tsv_part(tmp, plan, k, bar)
                else:
                    summary.n_rows += _write_parquet_part(tmp, plan, k, bar)
            summary.n_units += len(_units(cat, k))


__all__ = ["EXPORT_OUTPUT", "ExportOptions", "ExportSummary", "export_catalogue", "export_columns", "unit_rows"]
