"""``score-vcf``: the effect of every variant of a VCF, from a trained multiplexer or its base model.

Reads a VCF or BCF through pysam (:mod:`pipeline.apply.variants.records`: plain, bgzipped or BCF; a region
of an indexed file; one row per ALT allele). Three modes (:data:`~pipeline.apply.variants.rows.MODES`,
windows in :mod:`pipeline.apply.variants.scorers`):

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

Outputs by suffix (:mod:`pipeline.apply.variants.writers`): ``.tsv``/``.tsv.gz``, ``.vcf.gz`` (tabix
indexed) and ``.zarr``; each carries the score's semantics. TSV columns::

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
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.apply.inputs import open_genome, resolve_genome
from pipeline.apply.outputs import Sources, check_output
from pipeline.apply.predict import load_diff_base
from pipeline.apply.variants.lookup import CatalogueReader
from pipeline.apply.variants.parts import UNIT_RECORDS, Parts, parts_folder
from pipeline.apply.variants.records import VcfRecord, VcfSource, read_vcf
from pipeline.apply.variants.rows import MAX_HELD_ROWS, NAMING, REF_MISMATCH, Batcher, Row, Rules, Scorer, VcfSummary
from pipeline.apply.variants.scorers import STRANDS, ExactScorer, MultiplexerScorer
from pipeline.apply.variants.semantics import Semantics, model_identity, select_targets
from pipeline.apply.variants.writers import (
    COLUMNS,
    INDEX_SUFFIXES,
    SCORES_OUTPUT,
    ScoresTable,
    output_suffix,
    read_tsv_scores,
    score_writer,
)
from pipeline.core.files import staging
from pipeline.core.genome import fingerprint_difference
from pipeline.core.runtime import Launch, exact_float32, parse_shard
from pipeline.core.windows import default_core
from pipeline.errors import UserError, WriteError
from pipeline.models import base_from_checkpoint, for_inference, load_checkpoint, read_checkpoint
from pipeline.store.catalogue import open_catalogue

__all__ = [
    "COLUMNS",
    "MAX_HELD_ROWS",
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
    names: list[str]
    selection: np.ndarray
    semantics: Semantics
    identity: dict[str, Any] = field(default_factory=dict)
    n_units: int = 0
    catalogue: _FromCatalogue | None = None

    def run_record(self) -> dict[str, Any]:
        """What ``run.json`` of a parts folder records: the identity plus what the merge needs."""
        return {
            **self.identity,
            "semantics": {k: v for k, v in vars(self.semantics).items()},
            "target_names": self.names,
            "selection": self.selection.tolist(),
            "vcf": str(self.source.path),
            "region": self.source.region,
            "output": self.kind,
        }


class _FromCatalogue:
    """``score-vcf --catalogue``: SNVs the catalogue holds are read from it, mapped onto the targets written."""

    def __init__(
        self, path: str, names: list[str], selection: np.ndarray, sha256: str, fingerprint: dict[str, Any]
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
        self.identity = {"path": str(Path(path).resolve()), "stride": meta.stride}

    def fill(self, row: Row) -> bool:
        """Answer ``row`` from the catalogue (values mapped onto every target name); whether it could."""
        scratch = Row(row.record)
        if not self.reader.answer(scratch) or scratch.values is None:
            return False
        values = np.full(self.n_names, np.nan, dtype=np.float32)
        values[self.into] = scratch.values[self.take]
        row.values, row.center, row.source = values, scratch.center, "catalogue"
        row.check, row.match = scratch.check, scratch.match
        return True


def _check_naming(summary: VcfSummary) -> None:
    """Fail when nothing was scored and records were skipped only for the genome's chromosome naming."""
    n = summary.skipped.get(NAMING, 0)
    if summary.n_scored == 0 and n:
        raise UserError(
            f"no variant scored: {n} records name chromosomes the genome spells otherwise (e.g. {summary.naming}); "
            "drop --no-harmonise, or rename them with bcftools annotate --rename-chrs"
        )


def _mode(centered: bool, exact: bool, group_span: int | None) -> str:
    if group_span is not None and (centered or exact):
        raise UserError("--group-span sets how variants share windows; it does not go with --centered or --exact")
    return "exact" if exact else "centered" if centered else "shared"


def _check_options(ref_mismatch: str, strand: str, diff: bool, moved: bool, exact: bool) -> None:
    if ref_mismatch not in REF_MISMATCH:
        raise UserError(f"--ref-mismatch must be one of {', '.join(REF_MISMATCH)}, got {ref_mismatch!r}")
    if strand not in STRANDS:
        raise UserError(f"--strand must be one of {', '.join(STRANDS)}, got {strand!r}")
    if moved and not (diff or exact):
        raise UserError("--weights/--base only matter with --diff or --exact (the base model is not run otherwise)")


def _check_paths(out_path: Path, vcf: str, overwrite: bool, inputs: Sources) -> None:
    check_output(out_path, SCORES_OUTPUT, overwrite=overwrite, inputs=inputs)
    if not out_path.parent.exists():
        raise UserError(f"output folder {str(out_path.parent)!r} does not exist")
    if not Path(vcf).is_file():
        raise UserError(f"VCF file {str(vcf)!r} does not exist")


def default_group_span(seq_len: int) -> int:
    """The default ``--group-span``: a window's default core, ``L // 4``, so a shared variant is at least
    ``3L/8`` from both ends of its window (:func:`~pipeline.core.windows.default_core`)."""
    return default_core(seq_len)


def _quantity(meta: dict[str, Any], diff: bool) -> str:
    return "diff" if diff else str(meta["target_kind"])


@dataclass(frozen=True)
class _Options:
    """The command's choices that shape the scores (not the paths)."""

    mode: str
    strand: str
    diff: bool
    batch_size: int
    group_span: int | None
    harmonise: bool
    ref_mismatch: str
    weights: str | os.PathLike[str] | None
    base: str | None
    precision: str = "float32"


def _scorer(checkpoint: str, meta: dict[str, Any], opts: _Options, genome: Any, device: torch.device) -> Scorer:
    L = int(meta["seq_len"])
    if opts.mode == "exact":
        model = base_from_checkpoint(meta, weights=opts.weights, model=opts.base).to(device).eval()
        return ExactScorer(
            model, genome, L, device, diff=opts.diff or meta["target_kind"] == "diff", strand=opts.strand
        )
    multiplexer, _ = load_checkpoint(checkpoint, device)
    multiplexer = for_inference(multiplexer, opts.precision)
    base = load_diff_base(meta, device, weights=opts.weights, base=opts.base) if opts.diff else None
    return MultiplexerScorer(multiplexer, base, genome, L, device, centered=opts.mode == "centered", strand=opts.strand)


def _check_catalogue(opts: _Options) -> None:
    if opts.mode == "exact":
        raise UserError("--catalogue holds multiplexer scores; it does not go with --exact")
    if opts.strand != "forward" or opts.diff:
        raise UserError("--catalogue holds forward-strand log-fold scores; drop --strand/--diff, or drop --catalogue")


def _setup(
    checkpoint: str,
    source: VcfSource,
    kind: str,
    genome: str | None,
    targets: str | None,
    opts: _Options,
    device: torch.device,
    catalogue: str | None = None,
) -> _Job:
    meta = read_checkpoint(checkpoint)
    L = int(meta["seq_len"])
    span = 1 if opts.mode != "shared" else default_group_span(L) if opts.group_span is None else opts.group_span
    if not 1 <= span <= L:
        raise UserError(f"--group-span must lie in 1..{L} (the model's window), got {span}")
    names = list(meta["target_names"])
    selection = select_targets(names, targets)
    genome_path = resolve_genome(genome, meta.get("genome"), "the checkpoint")
    if genome_path is None:
        raise UserError("no genome: pass --genome FASTA")
    g = open_genome(genome_path, meta.get("genome_fingerprint"))
    scorer = _scorer(checkpoint, meta, opts, g, device)
    quantity = _quantity(meta, opts.diff or (opts.mode == "exact" and meta["target_kind"] == "diff"))
    converted = "logfold" if opts.diff and meta["target_kind"] == "logfold" and opts.mode != "exact" else None
    fingerprint = g.fingerprint()
    semantics = Semantics(
        quantity,
        opts.mode,
        opts.strand,
        {**model_identity(checkpoint, meta, opts.mode == "exact"), "precision": opts.precision},
        {"path": str(Path(genome_path).resolve()), "fingerprint": fingerprint},
        converted,
    )
    from_catalogue = None
    if catalogue is not None:
        _check_catalogue(opts)
        sha256 = semantics.model["checkpoint_sha256"]
        from_catalogue = _FromCatalogue(catalogue, names, selection, sha256, fingerprint)
        semantics = replace(semantics, catalogue=from_catalogue.identity)
    stat = source.path.stat()
    identity = {
        "vcf_size": stat.st_size,
        "vcf_mtime_ns": stat.st_mtime_ns,
        "checkpoint_sha256": semantics.model["checkpoint_sha256"],
        "genome_fingerprint": fingerprint,
        "options": {k: str(v) if isinstance(v, os.PathLike) else v for k, v in vars(opts).items()},
        "unit_records": UNIT_RECORDS,
        "max_held_rows": MAX_HELD_ROWS,
    }
    if from_catalogue is not None:
        identity["catalogue"] = from_catalogue.identity
    rules = Rules(g, L, harmonise=opts.harmonise, ref_mismatch=opts.ref_mismatch, mode=opts.mode)
    job = _Job(scorer, rules, span, opts.batch_size, source, kind, names, selection, semantics, identity)
    job.catalogue = from_catalogue
    return job


def _units(job: _Job, take: Callable[[int], bool], bar: tqdm) -> Iterator[tuple[int, list[Row]]]:
    """The finished rows of every unit ``take`` accepts, one unit at a time, in VCF order.

    Every unit starts with an empty :class:`~pipeline.apply.variants.rows.Batcher`, so its rows do not
    depend on which other units this process scores. Sets ``job.n_units`` at the end.
    """
    batcher = Batcher(job.scorer, job.span, job.batch_size)
    unit, rows = 0, list[Row]()
    for record in read_vcf(job.source):
        u = (record.number - 1) // UNIT_RECORDS
        if u != unit:
            if take(unit):
                rows.extend(batcher.finish())
                bar.update(len(rows))
                yield unit, rows
            unit, rows = u, []
        if take(u):
            row, scoreable = job.rules.classify(record)
            if scoreable and job.catalogue is not None and job.catalogue.fill(row):
                scoreable = False  # answered: done, no window
            rows.extend(batcher.add(row, scoreable))
    if take(unit):
        rows.extend(batcher.finish())
        bar.update(len(rows))
        yield unit, rows
    job.n_units = unit + 1


def _index_left(out_path: Path, kind: str, indexed: str) -> None:
    """After publishing a ``.vcf.gz``: remove an index of the output it replaced that does not go with
    the new one (``indexed``: the new one's suffix, ``""`` when its records are not sorted), and say
    when there is none."""
    if kind != ".vcf.gz":
        return
    for suffix in INDEX_SUFFIXES:
        if suffix != indexed:
            out_path.with_name(out_path.name + suffix).unlink(missing_ok=True)
    if not indexed:
        print(
            f"warning: {out_path} is not indexed: its records are not sorted (sort the VCF with bcftools sort first)",
            file=sys.stderr,
        )


def _write(job_like: dict[str, Any], out_path: Path, rows: Iterator[Row], summary: VcfSummary) -> None:
    """Write the output of ``rows`` (counted into ``summary``) through a staging folder: published
    only when complete, with its tabix index when there is one."""
    kind = job_like["kind"]
    indexed = ""
    try:
        with staging(out_path) as stage:
            staged = stage.path(out_path)
            with score_writer(
                kind,
                staged,
                source=job_like["source"],
                names=job_like["names"],
                semantics=job_like["semantics"],
                selection=job_like["selection"],
            ) as writer:
                for row in rows:
                    summary.count(row)
                    writer.write(row)
                _check_naming(summary)  # before the output is published
            for suffix in INDEX_SUFFIXES if kind == ".vcf.gz" else ():
                if staged.with_name(staged.name + suffix).is_file():
                    stage.path(out_path.with_name(out_path.name + suffix))
                    indexed = suffix
    except OSError as exc:
        raise WriteError(f"cannot write output {str(out_path)!r}: {exc.strerror or exc}") from None
    _index_left(out_path, kind, indexed)


def _writing(job: _Job) -> dict[str, Any]:
    return {
        "kind": job.kind,
        "source": job.source,
        "names": job.names,
        "semantics": job.semantics,
        "selection": job.selection,
    }


def _score_direct(job: _Job, out_path: Path, progress: bool) -> VcfSummary:
    summary = VcfSummary(out=str(out_path))
    with tqdm(desc="score-vcf", unit=" variants", disable=not progress) as bar:
        rows = (row for _, unit_rows in _units(job, lambda u: True, bar) for row in unit_rows)
        _write(_writing(job), out_path, rows, summary)
    summary.n_windows = job.scorer.n_windows
    return summary


def _score_sharded(job: _Job, out_path: Path, launch: Launch, progress: bool) -> VcfSummary:
    """Score this process's unfinished units into the parts folder; merge when every unit is done."""
    parts = Parts(out_path, job.run_record())
    parts.prepare()
    summary = VcfSummary(out=str(out_path))
    n_targets = len(job.names)
    with tqdm(desc=f"score-vcf part {launch.part + 1}/{launch.parts}", unit=" variants", disable=not progress) as bar:
        for unit, rows in _units(job, lambda u: launch.owns(u) and not parts.done(u), bar):
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
    return _merge(parts, out_path, progress)


def _merge(parts: Parts, out_path: Path, progress: bool) -> VcfSummary:
    """Write the output from every unit of ``parts`` (locked by this process), then remove the parts."""
    run = json.loads((parts.folder / "run.json").read_text())
    writing = {
        "kind": run["output"],
        "source": VcfSource(Path(run["vcf"]), run["region"]),
        "names": run["target_names"],
        "semantics": Semantics(**run["semantics"]),
        "selection": np.array(run["selection"], dtype=np.int64),
    }
    n = parts.total() or 0
    summary = VcfSummary(out=str(out_path))
    try:
        with tqdm(desc="score-vcf merge", unit=" units", total=n, disable=not progress) as bar:

            def rows() -> Iterator[Row]:
                for unit in range(n):
                    yield from parts.read(unit)
                    bar.update(1)

            _write(writing, out_path, rows(), summary)
    except BaseException:
        parts.unlock()
        raise
    parts.remove()
    summary.note = f"merged {n} units; wrote {out_path}"
    return summary


def merge_scores(out: str, *, overwrite: bool = False, progress: bool = True) -> VcfSummary:
    """Merge the parts of a sharded ``score-vcf`` into ``out`` (when the last shard did not).

    Raises
    ------
    UserError
        No parts folder for ``out``; units not finished yet (names how many); another process is
        merging.
    """
    out_path = Path(out)
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
    return _merge(parts, out_path, progress)


@exact_float32()
def score_vcf(
    checkpoint: str,
    vcf: str,
    out: str,
    *,
    genome: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    group_span: int | None = None,
    diff: bool = False,
    weights: str | os.PathLike[str] | None = None,
    base: str | None = None,
    region: str | None = None,
    harmonise: bool = True,
    ref_mismatch: str = "score",
    centered: bool = False,
    exact: bool = False,
    strand: str = "forward",
    targets: str | None = None,
    shard: str | None = None,
    catalogue: str | None = None,
    precision: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
) -> VcfSummary:
    """Score every variant of a VCF and write the output described above.

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt``.
    vcf : str
        VCF (plain or bgzipped) or BCF file.
    out : str
        ``.tsv``, ``.tsv.gz``, ``.vcf.gz`` or ``.zarr``.
    genome : str, optional
        Genome FASTA (default: the one recorded in the checkpoint).
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (under torchrun: ``cuda:LOCAL_RANK``).
    batch_size : int
        Windows per multiplexer pass (groups per base-model pass with ``exact``).
    group_span : int, optional
        Shared windows: largest span (bases, first to last variant) that shares a window; default
        ``L // 4`` (:func:`default_group_span`).
    diff : bool
        Scores as ``alt - ref`` instead of log-fold (the base model is run on each window).
    weights, base : optional
        With ``diff`` or ``exact``: the base model's weights file / import path, if they moved.
    region : str, optional
        Only the records of ``chr:start-end`` (1-based, inclusive) of an indexed file.
    harmonise : bool
        Read ``17`` as ``chr17``, ``MT`` as ``chrM``, ... when the genome has only the other spelling;
        otherwise such records are skipped, and when nothing is scored because of it the command fails.
    ref_mismatch : {"score", "skip"}
        A variant whose REF is not the genome's bases: score it against the genome and flag it
        (``ref_match`` ``no``/``swapped``), or skip it.
    centered : bool
        One multiplexer window per position, the variant at index ``L//2 - 1``.
    exact : bool
        Score with the base model itself, reference and alternative window centred (indels too).
    strand : {"forward", "reverse", "both"}
        ``both``: the mean of the forward and reverse-complement scores in log-fold space.
    targets : str, optional
        The targets to write: comma-separated names or regular expressions, or a file of them.
    shard : str, optional
        ``I/N``: score the units ``u % N == I`` into ``<out>.parts``; the process that finishes the
        last unit merges them into ``out``. A rerun skips finished units.
    precision : {"float32", "bf16"}
        The multiplexer's arithmetic (``bf16``: bfloat16 autocast); recorded in the semantics.
    catalogue : str, optional
        A catalogue made with the same checkpoint and genome: SNVs inside its regions are read from it
        (its tile windows), the others are scored by the model; the summary counts them.
    overwrite : bool
        Replace an existing ``out`` written by ``score-vcf`` (never one of the inputs, a checkpoint,
        ...); the new output is written under a temporary name and renamed over it when complete.

    Returns
    -------
    summary : VcfSummary

    Raises
    ------
    UserError
        Bad options or inputs (one line); nothing scored because the VCF names chromosomes the
        genome spells otherwise (``--no-harmonise``).
    """
    out_path = Path(out)
    mode = _mode(centered, exact, group_span)
    _check_options(ref_mismatch, strand, diff, weights is not None or base is not None, exact)
    kind = output_suffix(out_path)
    _check_paths(out_path, vcf, overwrite, {"--checkpoint": checkpoint, "--vcf": vcf, "--genome": genome})
    launch = Launch.from_env(parse_shard(shard))
    opts = _Options(mode, strand, diff, batch_size, group_span, harmonise, ref_mismatch, weights, base, precision)
    source = VcfSource(Path(vcf).resolve(), region)
    job = _setup(checkpoint, source, kind, genome, targets, opts, launch.device(device), catalogue)
    if shard is None and not launch.active:
        return _score_direct(job, out_path, progress)
    return _score_sharded(job, out_path, launch, progress)


def read_scores(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``score-vcf`` TSV back into dicts (effect columns as floats, ``None`` when empty)."""
    return read_tsv_scores(path).rows
