"""``score-vcf``: the effect of every variant of a VCF, from a trained multiplexer or its base model.

Reads a VCF or BCF through pysam (:mod:`~pipeline.apply.variants.records`: plain, bgzipped or BCF; a
region of an indexed file; one row per ALT allele) and scores it in a mode of the registry
:data:`~pipeline.apply.variants.scorers.SCORERS` (:class:`~pipeline.apply.variants.options.ScoreVcfOptions`
``mode``):

- **shared** (default): consecutive SNVs on one chromosome whose positions span at most
  ``group_span`` bases (default: ``L // 4``, :func:`default_group_span`) share one multiplexer
  window, centred on them and shifted to fit the chromosome; each variant's effect is read at its
  own index ``j = pos - first`` (``y[f, ALT, j]``). Fastest; not the same number as the centred score.
- **centered**: one multiplexer window per position, the variant at index ``L//2 - 1``.
- **exact**: the base model on the centred reference and alternative windows (SNVs and indels).

``strand="both"`` averages the forward and reverse-complement scores in log-fold space. Windows are
batched, so memory stays flat and the output streams: rows leave in VCF order as soon as they and
every row before them are finished, at most :data:`~pipeline.apply.variants.rows.MAX_HELD_ROWS` rows
wait. Records are taken in units of :data:`~pipeline.apply.variants.parts.UNIT_RECORDS` and no window
spans two units, so ``--shard I/N`` and ``torchrun`` (each process takes its units and writes them
as parts; the last to finish merges them, :mod:`pipeline.apply.variants.parts`) give the output of one
process.

Outputs by suffix, one writer each (:data:`~pipeline.apply.variants.writers.WRITERS`): ``.tsv``/``.tsv.gz``,
``.vcf.gz`` (tabix indexed) and ``.zarr``; each carries the score's semantics. TSV columns::

    chrom  pos  id  ref  alt  allele_index  window_center  ref_check  ref_match  status  <one column per target>

``allele_index`` is the ALT's 1-based index in its record (as bcftools numbers them; 0 when there is
no ALT); ``ref_check`` is ``ok``, ``mismatch: genome has X`` (the variant is still scored, against
the genome's bases, unless ``ref_mismatch="skip"``) or ``n/a``; ``ref_match`` is ``yes``, ``no``,
``swapped`` (the genome has the ALT) or ``n/a``; ``status`` is ``scored`` or ``skipped: <reason>``,
whose effect columns are empty.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.apply.inputs import open_genome, resolve_genome
from pipeline.apply.outputs import Sources, check_output
from pipeline.apply.variants.diagnose import nothing_scored
from pipeline.apply.variants.lookup import CatalogueReader
from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.parts import UNIT_RECORDS, Parts, parts_folder
from pipeline.apply.variants.records import (
    VcfRecord,
    VcfSource,
    content_digest,
    parse_line,
    read_vcf,
    reads_as_text,
    text_lines,
)
from pipeline.apply.variants.rows import (
    MAX_HELD_ROWS,
    Batcher,
    Row,
    Rules,
    Scorer,
    SkippedRow,
    SkippedRows,
    VcfSummary,
    expand,
    n_rows,
)
from pipeline.apply.variants.scorers import ScoringContext, ScoringMode, scoring_mode
from pipeline.apply.variants.semantics import Semantics, model_identity, select_targets
from pipeline.apply.variants.streams import is_stream, output_kind, refuse_with_stream, spooled
from pipeline.apply.variants.values import Percentiles, ReferenceValues
from pipeline.apply.variants.writers import (
    COLUMNS,
    SCORES_OUTPUT,
    OutputPlan,
    ScoresTable,
    is_stdout,
    output_suffix,
    read_tsv_scores,
    write_scores,
)
from pipeline.core.genome import fingerprint_difference
from pipeline.core.progress import Bar, progress_bar
from pipeline.core.runtime import Launch, exact_float32, parse_shard
from pipeline.core.windows import default_core
from pipeline.errors import UserError
from pipeline.models import read_checkpoint
from pipeline.store.catalogue import open_catalogue

__all__ = [
    "COLUMNS",
    "MAX_HELD_ROWS",
    "ScoreVcfOptions",
    "ScoresTable",
    "VcfRecord",
    "VcfSource",
    "VcfSummary",
    "merge_scores",
    "read_scores",
    "read_tsv_scores",
    "read_vcf",
    "score_vcf",
]


@dataclass
class _Job:
    """Everything a run needs: the scorer and rules, the targets written, the output's semantics."""

    scorer: Scorer
    rules: Rules
    span: int
    batch_size: int
    source: VcfSource
    kind: str
    plan: OutputPlan
    identity: dict[str, Any] = field(default_factory=dict)
    n_units: int = 0
    catalogue: _FromCatalogue | None = None
    values: ReferenceValues | None = None
    """``--values``: sets each finished row's reference prediction and implied alternative."""
    percentiles: Percentiles | None = None
    """``--background``: sets each finished row's percentiles."""

    def run_record(self) -> dict[str, Any]:
        """What ``run.json`` of a parts folder records: the identity plus what the merge needs."""
        return {
            **self.identity,
            "semantics": {k: v for k, v in vars(self.plan.semantics).items()},
            "target_names": self.plan.names,
            "selection": self.plan.selection.tolist(),
            "vcf": str(self.source.path),
            "region": self.source.region,
            "output": self.kind,
            "contigs": dict(self.plan.contigs),
        }


class _FromCatalogue:
    """``score-vcf --catalogue``: SNVs the catalogue holds are read from it, mapped onto the targets written."""

    def __init__(
        self,
        path: str,
        names: list[str],
        selection: np.ndarray,
        sha256: str,
        fingerprint: dict[str, Any],
        centred: bool = False,
    ) -> None:
        cat = open_catalogue(path)
        meta = cat.meta
        if meta.model.get("checkpoint_sha256") != sha256:
            raise UserError(
                f"catalogue {path!r} was made with another checkpoint (sha256 differs); use that checkpoint"
            )
        changed = fingerprint_difference(meta.genome_fingerprint, fingerprint)
        if changed:
            raise UserError(f"catalogue {path!r} was made on another genome: {changed}")
        missing = [names[k] for k in selection if names[k] not in meta.target_names]
        if missing:
            raise UserError(
                f"catalogue {path!r} does not hold target {missing[0]!r} ({len(missing)} missing); "
                "select targets it holds with --targets"
            )
        self.reader = CatalogueReader(cat)
        self.n_names = len(names)
        self.into = np.asarray(selection, dtype=np.int64)
        self.take = np.array([meta.target_names.index(names[k]) for k in selection], dtype=np.int64)
        self.identity: dict[str, Any] = {"path": str(Path(path).resolve()), "stride": meta.stride}
        self.centred = centred
        if centred:  # said in the output's header: no row of a centred run holds a tile's value
            self.identity["answers"] = "only where a tile's window is the centred window (else the model)"

    def fill(self, row: Row) -> bool:
        """Answer ``row`` from the catalogue (values mapped onto every target name); whether it could.

        For a centred mode, only where the tile's window is the variant's centred window (its centre is
        the variant's position): elsewhere the model scores the row, so every value is a centred score.
        """
        scratch = Row(row.record)
        if not self.reader.answer(scratch) or scratch.values is None:
            return False
        if self.centred and scratch.center != row.record.pos:
            return False
        values = np.full(self.n_names, np.nan, dtype=np.float32)
        values[self.into] = scratch.values[self.take]
        row.values, row.center, row.source = values, scratch.center, "catalogue"
        row.check, row.match = scratch.check, scratch.match
        return True


def _check_scored(summary: VcfSummary, contigs: Mapping[str, int]) -> None:
    """Fail, naming the likely cause, when records were read but none was scored
    (:func:`~pipeline.apply.variants.diagnose.nothing_scored`: contig names, assembly, positions)."""
    problem = nothing_scored(summary, contigs)
    if problem is not None:
        raise UserError(problem)


def _mode(opts: ScoreVcfOptions) -> type[ScoringMode]:
    """The scoring mode of ``opts``, checked against the options that depend on it."""
    mode = scoring_mode(opts.mode)
    if opts.group_span is not None and not mode.shares_windows:
        raise UserError(f"--group-span sets how variants share windows; it does not go with --mode {mode.name}")
    if (opts.weights is not None or opts.base is not None) and not (opts.diff or mode.base_model or opts.values):
        raise UserError(
            "--weights/--base only matter with --diff, --exact or --values (the base model is not run otherwise)"
        )
    if opts.catalogue is not None and mode.base_model:
        raise UserError(f"--catalogue holds multiplexer scores; it does not go with --mode {mode.name}")
    if opts.catalogue is not None and (opts.strand != "forward" or opts.diff):
        raise UserError("--catalogue holds forward-strand log-fold scores; drop --strand/--diff, or drop --catalogue")
    return mode


def _check_paths(out_path: Path, vcf: str, overwrite: bool, inputs: Sources) -> None:
    if not is_stdout(out_path):
        check_output(out_path, SCORES_OUTPUT, overwrite=overwrite, inputs=inputs)
        if not out_path.parent.exists():
            raise UserError(f"output folder {str(out_path.parent)!r} does not exist")
    if not is_stream(vcf) and not Path(vcf).is_file():
        raise UserError(f"VCF file {str(vcf)!r} does not exist")


def default_group_span(seq_len: int) -> int:
    """The default ``--group-span``: a window's default core, ``L // 4``, so a shared variant is at least
    ``3L/8`` from both ends of its window (:func:`~pipeline.core.windows.default_core`)."""
    return default_core(seq_len)


SHAPING = ("mode", "strand", "diff", "batch_size", "group_span", "harmonise", "ref_mismatch", "weights", "base",
           "precision", "values", "background")  # fmt: skip
"""The options that shape the scores (not the paths): a parts folder records them, and a rerun with other
values is refused."""


def _semantics(checkpoint: str, meta: dict[str, Any], opts: ScoreVcfOptions, mode: type[ScoringMode],
               genome: dict[str, Any]) -> Semantics:  # fmt: skip
    """What the scores of a run mean (``genome``: its path and fingerprint)."""
    quantity = "diff" if opts.diff else str(meta["target_kind"])
    converted = "logfold" if opts.diff and meta["target_kind"] == "logfold" and not mode.base_model else None
    model = {**model_identity(checkpoint, meta, mode.scored_with), "precision": opts.precision}
    values = list(opts.value_kinds) or None
    return Semantics(quantity, mode.name, opts.strand, model, genome, converted, values=values)


def _with_background(semantics: Semantics, percentiles: Percentiles) -> Semantics:
    """``semantics`` with the percentile column (``q``, after any ``--values``) and the background named."""
    values = [*(semantics.values or []), "q"]
    return replace(semantics, values=values, background=percentiles.background.describe())


def _setup(checkpoint: str, source: VcfSource, kind: str, opts: ScoreVcfOptions, mode: type[ScoringMode],
           device: torch.device) -> _Job:  # fmt: skip
    meta = read_checkpoint(checkpoint)
    L = int(meta["seq_len"])
    span = 1 if not mode.shares_windows else default_group_span(L) if opts.group_span is None else opts.group_span
    if not 1 <= span <= L:
        raise UserError(f"--group-span must lie in 1..{L} (the model's window), got {span}")
    names = list(meta["target_names"])
    selection = select_targets(names, opts.targets)
    genome_path = resolve_genome(opts.genome, meta.get("genome"), "the checkpoint")
    if genome_path is None:
        raise UserError("no genome: pass --genome FASTA")
    g = open_genome(genome_path, meta.get("genome_fingerprint"))
    scorer = mode.create(ScoringContext(checkpoint, meta, g, device, opts))
    fingerprint = g.fingerprint()
    semantics = _semantics(
        checkpoint, meta, opts, mode, {"path": str(Path(genome_path).resolve()), "fingerprint": fingerprint}
    )
    from_catalogue = None
    if opts.catalogue is not None:
        sha256 = semantics.model["checkpoint_sha256"]
        from_catalogue = _FromCatalogue(opts.catalogue, names, selection, sha256, fingerprint, mode.centred)
        semantics = replace(semantics, catalogue=from_catalogue.identity)
    identity = {
        "vcf_sha256": content_digest(source.path),
        "checkpoint_sha256": semantics.model["checkpoint_sha256"],
        "genome_fingerprint": fingerprint,
        "options": {k: getattr(opts, k) for k in SHAPING},
        "unit_records": UNIT_RECORDS,
        "max_held_rows": MAX_HELD_ROWS,
    }
    if from_catalogue is not None:
        identity["catalogue"] = from_catalogue.identity
    rules = Rules(g, L, opts.harmonise, opts.ref_mismatch, centred=mode.centred, indels=mode.indels)
    plan = OutputPlan(names, selection, semantics, source, dict(g.chrom_lengths))
    job = _Job(scorer, rules, span, opts.batch_size, source, kind, plan, identity)
    job.catalogue = from_catalogue
    if opts.background is not None:
        model = (semantics.model["checkpoint_sha256"], names)
        job.percentiles = Percentiles.open(opts.background, model, semantics.quantity, f"checkpoint {checkpoint!r}")
        job.plan = replace(plan, semantics=_with_background(semantics, job.percentiles))
        identity["background"] = job.percentiles.background.attrs["array_digests"]
    if opts.value_kinds:
        job.values = ReferenceValues.from_checkpoint(
            meta, g, device, quantity=semantics.quantity, strand=opts.strand, batch_size=opts.batch_size,
            weights=opts.weights, base=opts.base,
        )  # fmt: skip
    return job


Items = list[Row | SkippedRows]
"""The finished rows of a unit, in VCF order: rows, and blocks of skipped rows (:class:`SkippedRows`)."""


class _UnitLoop:
    """The rows of the units ``take`` accepts, one unit at a time, as records come (:func:`_units`)."""

    def __init__(self, job: _Job, take: Callable[[int], bool], bar: Bar) -> None:
        self.job, self.take, self.bar = job, take, bar
        self.batcher = Batcher(job.scorer, job.span, job.batch_size)
        self.unit, self.rows, self.taking, self.first_of_next = 0, Items(), take(0), UNIT_RECORDS + 1

    def next_unit(self, number: int) -> tuple[int, Items] | None:
        """Start the unit of record ``number`` (the first beyond the current one); the unit finished, if taken."""
        done = self.finish()
        self.unit, self.rows = (number - 1) // UNIT_RECORDS, []
        self.taking, self.first_of_next = self.take(self.unit), (self.unit + 1) * UNIT_RECORDS + 1
        return done

    def finish(self) -> tuple[int, Items] | None:
        """The current unit's rows once every window is scored (``None``: not taken)."""
        if not self.taking:
            return None
        self._finished(list(self.batcher.finish()))
        return self.unit, self.rows

    def _finished(self, rows: Items) -> None:
        if rows:  # the bar moves as rows finish, not once per unit of records
            self.rows.extend(rows)
            self.bar.update(n_rows(rows))

    def record(self, record: VcfRecord) -> None:
        """Take one record (one ALT) of the current unit."""
        row, scoreable = self.job.rules.classify(record)
        catalogue = self.job.catalogue
        if scoreable and catalogue is not None and catalogue.fill(row):
            scoreable = False  # answered: done, no window
        self._finished(self.batcher.add(row, scoreable))

    def skipped(self, block: list[SkippedRow]) -> None:
        """Take consecutive skipped rows of the current unit."""
        self._finished(self.batcher.add_skipped(SkippedRows(block)))


def _units(job: _Job, take: Callable[[int], bool], bar: Bar) -> Iterator[tuple[int, Items]]:
    """The finished rows of every unit ``take`` accepts, one unit at a time, in VCF order.

    Every unit starts with an empty :class:`~pipeline.apply.variants.rows.Batcher`, so its rows do not
    depend on which other units this process scores. A sites-only text VCF is read from its text
    (:func:`_text_units`), records that are skipped for their alleles, chromosome or position as
    blocks of plain tuples; any other VCF, and a text VCF from the first line htslib must read, through
    pysam. Sets ``job.n_units`` at the end.
    """
    loop = _UnitLoop(job, take, bar)
    first = 1
    if reads_as_text(job.source):
        first = yield from _text_units(loop)
    if first:
        for record in read_vcf(job.source):
            if record.number < first:
                continue
            if record.number >= loop.first_of_next:
                done = loop.next_unit(record.number)
                if done is not None:
                    yield done
            if loop.taking:
                loop.record(record)
    done = loop.finish()
    if done is not None:
        yield done
    job.n_units = loop.unit + 1


def _text_units(loop: _UnitLoop) -> Generator[tuple[int, Items], None, int]:
    """:func:`_units` from the text of a sites-only VCF (:func:`~pipeline.apply.variants.records.reads_as_text`):
    a record skipped for its alleles, chromosome or position (:meth:`Rules.skipped`) is a tuple of its
    columns in a block; every other record is a :class:`VcfRecord` read from its line
    (:func:`~pipeline.apply.variants.records.parse_line`). Returns 0 when every record was read, else
    the number of the first record htslib must read (a line that is not plain, text that is not UTF-8).
    """
    skipped, number, block = loop.job.rules.skipped, 0, list[SkippedRow]()
    first_of_next, taking = loop.first_of_next, loop.taking
    with closing(text_lines(loop.job.source.path)) as blocks:
        for lines in blocks:
            if lines is None:  # not UTF-8 text
                return _htslib_from(loop, block, number + 1)
            for line in lines:
                number += 1
                if number >= first_of_next:
                    if block:
                        loop.skipped(block)
                        block = []
                    done = loop.next_unit(number)
                    first_of_next, taking = loop.first_of_next, loop.taking
                    if done is not None:
                        yield done
                fields = line.split("\t", 8)
                if len(fields) != 8:
                    return _htslib_from(loop, block, number)
                chrom, pos, vid, ref, alt = fields[0], fields[1], fields[2], fields[3], fields[4]
                if not (pos.isascii() and pos.isdigit() and pos[0] != "0" and len(pos) <= 9) or not chrom or not alt:
                    return _htslib_from(loop, block, number)
                if not taking:
                    continue
                if "," not in alt:
                    row = skipped(number, chrom, pos, vid, ref, alt)
                    if row is not None:
                        block.append(row)
                        continue
                if block:
                    loop.skipped(block)
                    block = []
                records = parse_line(number, line)
                if records is None:
                    return _htslib_from(loop, block, number)
                for record in records:
                    loop.record(record)
    return _htslib_from(loop, block, 0)


def _htslib_from(loop: _UnitLoop, block: list[SkippedRow], number: int) -> int:
    """Hand the skipped rows taken so far to ``loop``; ``number``: the record htslib reads on from (0: none)."""
    if block:
        loop.skipped(block)
    return number


def _valued(job: _Job, units: Iterator[tuple[int, Items]]) -> Iterator[tuple[int, Items]]:
    """``units`` with ``--values`` and ``--background`` filled in, one unit's rows (their windows batched)
    at a time (a block of skipped rows has neither)."""
    for unit, rows in units:
        scored = [row for row in rows if isinstance(row, Row)]
        if job.values is not None:
            job.values.fill(scored)
        if job.percentiles is not None:
            job.percentiles.fill(scored)
        yield unit, rows


def _counted(rows: Iterable[Row | SkippedRows], summary: VcfSummary) -> Iterator[Row | SkippedRows]:
    """``rows``, each counted into ``summary`` as it passes."""
    for row in rows:
        if isinstance(row, SkippedRows):
            summary.count_skipped(row)
        else:
            summary.count(row)
        yield row


def _score_direct(job: _Job, out_path: Path, progress: bool, overwrite: bool) -> VcfSummary:
    summary = VcfSummary(out=str(out_path))
    with progress_bar(desc="score-vcf", unit="variant", enabled=progress) as bar:
        rows = (row for _, unit_rows in _valued(job, _units(job, lambda u: True, bar)) for row in unit_rows)
        write_scores(
            out_path,
            job.kind,
            job.plan,
            _counted(rows, summary),
            lambda: _check_scored(summary, job.plan.contigs),
            overwrite=overwrite,
        )
    summary.n_windows = job.scorer.n_windows
    return summary


def _score_sharded(job: _Job, out_path: Path, launch: Launch, progress: bool, overwrite: bool) -> VcfSummary:
    """Score this process's unfinished units into the parts folder; merge when every unit is done."""
    parts = Parts(out_path, job.run_record())
    parts.prepare()
    summary = VcfSummary(out=str(out_path))
    n_targets = len(job.plan.names)
    with progress_bar(desc=f"score-vcf part {launch.part + 1}/{launch.parts}", unit="variant", enabled=progress) as bar:
        for unit, items in _valued(job, _units(job, lambda u: launch.owns(u) and not parts.done(u), bar)):
            rows = list(expand(items))
            for row in rows:
                summary.count(row)
            parts.write(unit, rows, n_targets)
    summary.n_windows = job.scorer.n_windows
    parts.set_total(job.n_units)
    missing = parts.missing()
    if missing:
        summary.note = f"this process's units are done; {len(missing)} of {job.n_units} units wait for other shards"
        return summary
    if not parts.lock():
        summary.note = "every unit is done; another process is merging them"
        return summary
    return _merge(parts, out_path, progress, overwrite)


def _merge(parts: Parts, out_path: Path, progress: bool, overwrite: bool) -> VcfSummary:
    """Write the output from every unit of ``parts`` (locked by this process), then remove the parts."""
    run = json.loads((parts.folder / "run.json").read_text())
    source = VcfSource(Path(run["vcf"]), run["region"])
    try:
        _check_vcf_unchanged(parts, run)
    except BaseException:
        parts.unlock()
        raise
    selection = np.array(run["selection"], dtype=np.int64)
    plan = OutputPlan(run["target_names"], selection, Semantics(**run["semantics"]), source, run.get("contigs", {}))
    n = parts.total() or 0
    summary = VcfSummary(out=str(out_path))
    try:
        with progress_bar(desc="score-vcf merge", unit="unit", total=n, enabled=progress) as bar:

            def rows() -> Iterator[Row]:
                for unit in range(n):
                    yield from parts.read(unit)
                    bar.update(1)

            write_scores(
                out_path, run["output"], plan, _counted(rows(), summary), lambda: _check_scored(summary, plan.contigs),
                overwrite=overwrite,
            )  # fmt: skip
    except BaseException:
        parts.unlock()
        raise
    parts.remove()
    summary.note = f"merged {n} units; wrote {out_path}"
    return summary


def _check_vcf_unchanged(parts: Parts, run: dict[str, Any]) -> None:
    """Refuse to merge parts computed from a VCF whose content has changed since (or is gone)."""
    vcf = Path(run["vcf"])
    try:
        digest = content_digest(vcf)
    except OSError as exc:
        raise UserError(
            f"cannot merge {str(parts.folder)!r}: its VCF {str(vcf)!r} cannot be read ({exc.strerror})"
        ) from None
    if digest != run.get("vcf_sha256"):
        raise UserError(
            f"cannot merge {str(parts.folder)!r}: its VCF {str(vcf)!r} changed after the parts were computed "
            "(sha256 differs); remove the parts folder and score the VCF again"
        )


def merge_scores(out: str, *, overwrite: bool = False, progress: bool = True) -> VcfSummary:
    """Merge the parts of a sharded ``score-vcf`` into ``out`` (when the last shard did not).

    Raises
    ------
    UserError
        No parts folder for ``out``; units not finished yet (names how many); another process is
        merging.
    """
    out_path = Path(out)
    if is_stdout(out_path):
        raise UserError("--merge writes an output file, not standard output (--out -)")
    folder = parts_folder(out_path)
    if not (folder / "run.json").is_file():
        raise UserError(f"nothing to merge: no parts of a sharded score-vcf at {str(folder)!r}")
    check_output(out_path, SCORES_OUTPUT, overwrite=overwrite)
    parts = Parts(out_path, json.loads((folder / "run.json").read_text()))
    missing = parts.missing()
    if missing == [-1]:
        raise UserError(f"cannot merge {str(folder)!r} yet: no shard has read the VCF to its end; rerun the shards")
    if missing:
        raise UserError(
            f"cannot merge {str(folder)!r} yet: {len(missing)} units are not done (first: {missing[0]}); "
            "rerun the shards"
        )
    if not parts.lock():
        raise UserError(f"another process is merging {str(folder)!r} (merge.lock)")
    return _merge(parts, out_path, progress, overwrite)


@exact_float32()
def score_vcf(
    checkpoint: str, vcf: str, out: str, options: ScoreVcfOptions | None = None, *, progress: bool = True
) -> VcfSummary:
    """Score every variant of a VCF and write the output described above.

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt``.
    vcf : str
        VCF (plain or bgzipped) or BCF file.
    out : str
        An output suffix of :data:`~pipeline.apply.variants.writers.WRITERS`: ``.tsv``, ``.tsv.gz``,
        ``.vcf.gz`` or ``.zarr``.
    options : ScoreVcfOptions, optional
        Everything else (:class:`~pipeline.apply.variants.options.ScoreVcfOptions`: the mode, strand,
        genome, targets, shard, ...); the defaults when not given.
    progress : bool
        Show a progress bar.

    Returns
    -------
    summary : VcfSummary

    Raises
    ------
    UserError
        Bad options or inputs (one line); nothing scored because the VCF names chromosomes the
        genome spells otherwise (``harmonise=False``).
    """
    opts = ScoreVcfOptions() if options is None else options
    out_path = Path(out)
    mode = _mode(opts)
    kind = output_kind(out, opts.out_format, "score-vcf") or output_suffix(out_path)
    _check_paths(out_path, vcf, opts.overwrite, {"--checkpoint": checkpoint, "--vcf": vcf, "--genome": opts.genome})
    launch = Launch.from_env(parse_shard(opts.shard))
    sharded = opts.shard is not None or launch.active
    if is_stdout(out_path) and sharded:
        raise UserError("--out - (standard output) is written by one process: --shard and torchrun need an output file")
    if is_stream(vcf):
        refuse_with_stream(vcf, shard=sharded, region=opts.region is not None)
    with spooled(vcf) as path:
        source = VcfSource(path.resolve(), opts.region)
        job = _setup(checkpoint, source, kind, opts, mode, launch.device(opts.device))
        if not sharded:
            return _score_direct(job, out_path, progress, opts.overwrite)
        return _score_sharded(job, out_path, launch, progress, opts.overwrite)


def read_scores(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``score-vcf`` TSV back into dicts (effect columns as floats, ``None`` when empty)."""
    return read_tsv_scores(path).rows
