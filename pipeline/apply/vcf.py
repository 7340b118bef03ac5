"""``score-vcf``: the multiplexer's effect of every SNV of a VCF, one forward pass per window.

Reads a VCF or BCF through pysam (:mod:`pipeline.apply.vcf_input`: plain, bgzipped or BCF; a region
of an indexed file; one row per ALT allele). Variants are scored in the order they come: consecutive
SNVs on one chromosome whose positions span at most ``group_span`` bases (default: the model's
``L``) share one window, centred on them; a window that would not fit in the chromosome is shifted
until it fits, and each variant's effect is read at its own index ``j = pos - first`` of that window
(``y[f, ALT, j]``; ``first`` is the window's 1-based position of index 0,
:func:`pipeline.core.windows.fitted_first`). Windows are batched through the multiplexer, so memory
stays flat and the output streams: rows leave in VCF order as soon as they and every row before them
are finished, and at most :data:`MAX_HELD_ROWS` rows wait for a window (then the windows waiting are
scored at once); a sorted VCF gives the fewest windows. Chromosome names the genome spells otherwise
(``17``/``chr17``, ``MT``/``chrM``) are harmonised unless ``harmonise=False``.

Output: a TSV (gzipped when its name ends in ``.gz``), one row per ALT allele of each VCF record, in
VCF order::

    chrom  pos  id  ref  alt  allele_index  window_center  ref_check  ref_match  status  <one column per target>

``allele_index`` is the ALT's 1-based index in its record (as bcftools numbers them; 0 when there is
no ALT); ``ref_check`` is ``ok``, ``mismatch: genome has X`` (the variant is still scored, against
the genome's base, unless ``ref_mismatch="skip"``) or ``n/a`` (no genome base to compare with);
``ref_match`` is ``yes``, ``no``, ``swapped`` (the genome has the ALT: REF and ALT appear exchanged)
or ``n/a``; ``status`` is ``scored`` or ``skipped: <reason>`` (indel, absent chromosome, ...), whose
effect columns are empty.
"""

from __future__ import annotations

import gzip
import os
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.apply.inputs import open_genome, resolve_genome
from pipeline.apply.outputs import TSV_FORMAT, Sources, check_output, table_kind, write_tsv
from pipeline.apply.predict import load_diff_base
from pipeline.apply.vcf_input import VcfRecord, VcfSource, read_vcf
from pipeline.core.encoding import ALPHABET, one_hot
from pipeline.core.genome import Genome
from pipeline.core.runtime import exact_float32, resolve_device
from pipeline.core.windows import center_of, fitted_first
from pipeline.errors import UserError, WriteError
from pipeline.ism import logfold_to_diff, mask_effects
from pipeline.models import load_checkpoint

COLUMNS = ["chrom", "pos", "id", "ref", "alt", "allele_index", "window_center", "ref_check", "ref_match", "status"]
"""The fixed columns of the output; one column per target name follows."""

SCORES_TSV = table_kind("a score-vcf table", "\t".join(COLUMNS) + "\t")
"""What ``--overwrite`` may replace: a table that ``score-vcf`` wrote."""

MAX_HELD_ROWS = 4096
"""Most rows held back in memory: when this many wait (for a window still open or a batch not yet
full), the windows waiting are scored at once. Rows of a record are small (about 1 kB), so this is a
few MB; it changes which variants share a window only when more than this many records come while
one window is open (thousands of records within ``L`` bases)."""

_BASES = set("ACGT")

REF_MISMATCH = ("score", "skip")
"""What ``--ref-mismatch`` may be: score against the genome's base (and flag), or skip the record."""

NAMING = "chromosome naming differs"
"""The :attr:`Skip.kind` of a record whose chromosome the genome spells otherwise (``--no-harmonise``)."""

__all__ = ["COLUMNS", "VcfRecord", "VcfSource", "VcfSummary", "read_scores", "read_vcf", "score_vcf"]


@dataclass(frozen=True)
class Skip:
    """Why a record is not scored: ``kind`` (what the summary counts) and the row's full ``reason``."""

    kind: str
    reason: str
    example: str = ""
    """For a naming mismatch: ``'17' for 'chr17'``."""


def skip_reason(record: VcfRecord, genome: Genome, seq_len: int) -> Skip | None:
    """Why a record cannot be scored (``None`` when it is an SNV inside a long enough chromosome).

    The ``N`` check needs the window and happens later (when the window is read).
    """
    ref, alt = record.ref.upper(), record.alt.upper()
    if alt in (".", "*", "") or alt.startswith("<") or "[" in alt or "]" in alt:
        return Skip("no plain alternate allele", f"no plain alternate allele (ALT {record.alt})")
    if len(ref) != len(alt):
        return Skip("indel", f"indel ({record.ref}>{record.alt})")
    if len(ref) > 1:
        return Skip("multi-nucleotide variant", f"multi-nucleotide variant ({record.ref}>{record.alt})")
    if ref not in _BASES or alt not in _BASES:
        return Skip("REF or ALT is not A/C/G/T", f"REF or ALT is not A/C/G/T ({record.ref}>{record.alt})")
    if ref == alt:
        return Skip("REF equals ALT", f"REF equals ALT ({record.ref})")
    return _chromosome_problem(record, genome, seq_len)


def _chromosome_problem(record: VcfRecord, genome: Genome, seq_len: int) -> Skip | None:
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
    if not 1 <= record.pos <= n:
        return Skip("position outside the chromosome", f"position outside {chrom} (1..{n})")
    return None


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


def _genome_ref(record: VcfRecord, genome: Genome) -> str | None:
    """The genome's bases under REF, when REF lies inside a chromosome of the genome."""
    chrom = record.genome_chrom
    if chrom not in genome or not record.ref or record.ref in (".", "*"):
        return None
    start, end = record.pos - 1, record.pos - 1 + len(record.ref)
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
class _Row:
    """One VCF record on its way to the output: its status, REF check, window and effects."""

    record: VcfRecord
    skip: Skip | None = None
    check: str = "n/a"
    match: str = "n/a"
    center: int | None = None
    values: np.ndarray | None = None
    group: _Group | None = None

    @property
    def status(self) -> str:
        """``scored`` or ``skipped: <reason>``."""
        return "scored" if self.skip is None else f"skipped: {self.skip.reason}"

    @property
    def done(self) -> bool:
        """Skipped, or its window has been computed."""
        return self.group is None or self.group.done

    def format(self, n_targets: int) -> list[str]:
        """The output row: the fixed :data:`COLUMNS`, then one formatted effect per target."""
        r = self.record
        if self.values is not None:
            values = [TSV_FORMAT % v for v in self.values.astype(np.float64).tolist()]
        else:
            values = [""] * n_targets
        center = "" if self.center is None else str(self.center)
        fixed = [r.chrom, str(r.pos), r.id, r.ref, r.alt, str(r.allele_index), center, self.check, self.match]
        return [*fixed, self.status, *values]


@dataclass
class _Group:
    """Consecutive SNVs of one chromosome that share a window (their span is at most ``group_span``)."""

    chrom: str
    first: int
    last: int
    rows: list[_Row] = field(default_factory=list)
    done: bool = False

    def takes(self, record: VcfRecord, span: int) -> bool:
        """Whether ``record`` can join without the group spanning more than ``span`` bases."""
        span_with = max(self.last, record.pos) - min(self.first, record.pos) + 1
        return self.chrom == record.genome_chrom and span_with <= span

    def add(self, row: _Row) -> None:
        self.first, self.last = min(self.first, row.record.pos), max(self.last, row.record.pos)
        self.rows.append(row)
        row.group = self


@dataclass
class VcfSummary:
    """What :func:`score_vcf` did."""

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

    def count(self, row: _Row) -> None:
        """Count one finished row."""
        self.n_records += 1
        if row.skip is None:
            self.n_scored += 1
        else:
            self.skipped[row.skip.kind] += 1
            self.naming = self.naming or row.skip.example
        if row.check.startswith("mismatch"):
            self.n_mismatch += 1
        if row.record.contig:
            self.n_harmonised += 1

    def line(self) -> str:
        """One line for the command line."""
        n_skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.most_common())
        return (
            f"scored {self.n_scored} of {self.n_records} variants in {self.n_windows} windows; "
            f"{self.n_mismatch} REF mismatches; skipped {n_skipped}"
            + (f" ({reasons})" if reasons else "")
            + (f"; harmonised the chromosome names of {self.n_harmonised}" if self.n_harmonised else "")
            + f"; wrote {self.out}"
        )


class _Scorer:
    """Runs closed groups through the multiplexer, a batch of windows at a time."""

    def __init__(
        self, model: torch.nn.Module, base: torch.nn.Module | None, genome: Genome, seq_len: int, device: torch.device
    ) -> None:
        self.model, self.base, self.genome, self.L, self.device = model, base, genome, seq_len, device
        self.n_windows = 0

    @torch.no_grad()
    def run(self, groups: list[_Group]) -> None:
        """Score every row of ``groups``: one window per group, one batched multiplexer pass.

        Only the ``[F]`` effects of the variants are gathered on the device and copied back, never
        the whole ``[G, F, 4, L]`` output.
        """
        if not groups:
            return
        L = self.L
        firsts = [fitted_first(g.first, g.last, self.genome.length(g.chrom), L) for g in groups]
        seqs = [self.genome.fetch(g.chrom, first - 1, first - 1 + L) for g, first in zip(groups, firsts)]
        rows, ks, bs, js = [], [], [], []
        for k, (g, first, seq) in enumerate(zip(groups, firsts, seqs)):
            for row in g.rows:
                j = row.record.pos - first
                row.center = center_of(first, L)
                row.check = ref_check(row.record, seq[j])
                row.match = ref_match(row.record, seq[j])
                if seq[j].upper() not in _BASES:
                    reason = f"the genome has {seq[j]} at this position (effects are 0 by definition)"
                    row.skip = Skip("the genome has N at this position", reason)
                    continue
                rows.append(row)
                ks.append(k)
                bs.append(ALPHABET.index(row.record.alt.upper()))
                js.append(j)
        X = torch.from_numpy(np.stack([one_hot(s) for s in seqs])).to(self.device).float()
        y = mask_effects(self.model(X).float(), X)  # [G, F, 4, L]
        k_, b_, j_ = (torch.tensor(v, dtype=torch.long, device=self.device) for v in (ks, bs, js))
        values = y[k_, :, b_, j_]  # [R, F]
        if self.base is not None:
            ref = self.base(X).float()[k_]  # [R, F]
            values = logfold_to_diff(values[:, :, None, None], ref)[:, :, 0, 0]
        for row, v in zip(rows, values.cpu().numpy()):
            row.values = v
        for g in groups:
            g.done = True
        self.n_windows += len(groups)


class _Batcher:
    """Groups the scoreable rows into windows as they stream in and scores closed groups in batches.

    Rows leave (:meth:`add`, :meth:`finish`) in VCF order as soon as they and every row before them
    are finished: a skipped row waits only for earlier rows whose window is not scored yet. When
    ``max_rows`` rows wait, the closed groups are scored without waiting for a full batch, and if
    the open group still holds that many back it is closed and scored too, so at most ``max_rows``
    rows are held, however long the VCF.
    """

    def __init__(self, scorer: _Scorer, span: int, batch_size: int, max_rows: int | None = None) -> None:
        self.scorer, self.span, self.batch_size = scorer, span, batch_size
        self.max_rows = MAX_HELD_ROWS if max_rows is None else max_rows
        self.pending: deque[_Row] = deque()  # rows not yet written, in VCF order
        self.closed: list[_Group] = []  # groups waiting for the next batch
        self.open: _Group | None = None  # the group the next variant may join

    def add(self, row: _Row, scoreable: bool) -> Iterator[_Row]:
        """Take the next row (``scoreable``: an SNV to score); yields the rows now finished."""
        self.pending.append(row)
        if scoreable:
            if self.open is None or not self.open.takes(row.record, self.span):
                self._close_open()
            if self.open is None:
                self.open = _Group(row.record.genome_chrom, row.record.pos, row.record.pos)
            self.open.add(row)
            if len(self.closed) >= self.batch_size:
                self._score()
        yield from self._release()
        if len(self.pending) >= self.max_rows:  # too many held: do not wait for a full batch
            self._score()
            yield from self._release()
        if len(self.pending) >= self.max_rows:  # the open group holds them back: close it
            self._close_open()
            self._score()
            yield from self._release()

    def finish(self) -> Iterator[_Row]:
        """Score what is left; yields every remaining row."""
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

    def _release(self) -> Iterator[_Row]:
        """Yield the finished rows at the head of the queue (in VCF order)."""
        while self.pending and self.pending[0].done:
            yield self.pending.popleft()


@dataclass(frozen=True)
class _Rules:
    """How records are classified: the genome, the model's window, and the command's choices."""

    genome: Genome
    seq_len: int
    harmonise: bool = True
    ref_mismatch: str = "score"

    def classify(self, record: VcfRecord) -> tuple[_Row, bool]:
        """The row of a record, and whether it is an SNV to score (else its status says why not).

        With ``harmonise``, a chromosome the genome spells otherwise is renamed first; with
        ``ref_mismatch="skip"``, an SNV whose REF is not the genome's base is skipped.
        """
        if self.harmonise:
            record = harmonise(record, self.genome) or record
        row = _Row(record, skip=skip_reason(record, self.genome, self.seq_len))
        if row.skip is None and self.ref_mismatch == "score":
            return row, True
        genome_ref = _genome_ref(record, self.genome)
        row.check, row.match = ref_check(record, genome_ref), ref_match(record, genome_ref)
        if row.skip is None and row.match != "yes":
            what = "REF and ALT swapped" if row.match == "swapped" else "REF is not the genome's base"
            row.skip = Skip(what, f"{what}: the genome has {genome_ref} (--ref-mismatch skip)")
        return row, row.skip is None


def _check_naming(summary: VcfSummary) -> None:
    """Fail when nothing was scored and records were skipped only for the genome's chromosome naming."""
    n = summary.skipped.get(NAMING, 0)
    if summary.n_scored == 0 and n:
        raise UserError(
            f"no variant scored: {n} records name chromosomes the genome spells otherwise (e.g. {summary.naming}); "
            "drop --no-harmonise, or rename them with bcftools annotate --rename-chrs"
        )


def _check_paths(out_path: Path, vcf: str, overwrite: bool, inputs: Sources) -> None:
    if not out_path.name.endswith((".tsv", ".tsv.gz")):
        raise UserError(f"score-vcf output must end in .tsv or .tsv.gz, got {out_path.name!r}")
    check_output(out_path, SCORES_TSV, overwrite=overwrite, inputs=inputs)
    if not out_path.parent.exists():
        raise UserError(f"output folder {str(out_path.parent)!r} does not exist")
    if not Path(vcf).is_file():
        raise UserError(f"VCF file {str(vcf)!r} does not exist")


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
    overwrite: bool = False,
    progress: bool = True,
) -> VcfSummary:
    """Score every SNV of a VCF with a trained multiplexer and write the TSV described above.

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt``.
    vcf : str
        VCF (plain or bgzipped) or BCF file.
    out : str
        ``.tsv`` or ``.tsv.gz``.
    genome : str, optional
        Genome FASTA (default: the one recorded in the checkpoint).
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    batch_size : int
        Windows per multiplexer pass.
    group_span : int, optional
        Largest span (bases, first to last variant) that shares a window; default the model's ``L``.
        ``1`` gives every position its own centred window.
    diff : bool
        Effects as ``alt - ref`` (the checkpoint's base model is run on each window) instead of
        log-fold.
    weights, base : optional
        With ``diff``: the base model's weights file / import path, if they moved.
    region : str, optional
        Only the records of ``chr:start-end`` (1-based, inclusive) of an indexed (``.tbi``/``.csi``)
        file.
    harmonise : bool
        Read ``17`` as ``chr17``, ``MT`` as ``chrM``, ... when the genome has only the other
        spelling (:meth:`~pipeline.core.genome.Genome.suggest`); otherwise such records are skipped,
        and when nothing is scored because of it the command fails.
    ref_mismatch : {"score", "skip"}
        What to do with an SNV whose REF is not the genome's base: score it against the genome's
        base and flag it (``ref_match`` ``no``/``swapped``), or skip it.
    overwrite : bool
        Replace an existing ``out`` written by ``score-vcf`` (never one of the inputs, a checkpoint,
        ...: :func:`pipeline.apply.outputs.check_output`); the new table is written under a
        temporary name and renamed over it when complete.

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
    if ref_mismatch not in REF_MISMATCH:
        raise UserError(f"--ref-mismatch must be one of {', '.join(REF_MISMATCH)}, got {ref_mismatch!r}")
    _check_paths(out_path, vcf, overwrite, {"--checkpoint": checkpoint, "--vcf": vcf, "--genome": genome})
    if not diff and (weights is not None or base is not None):
        raise UserError("--weights/--base only matter with --diff (the base model is not run otherwise)")
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    L = int(meta["seq_len"])
    span = L if group_span is None else group_span
    if not 1 <= span <= L:
        raise UserError(f"--group-span must lie in 1..{L} (the model's window), got {span}")
    genome_path = resolve_genome(genome, meta.get("genome"), "the checkpoint")
    if genome_path is None:
        raise UserError("no genome: pass --genome FASTA")
    g = open_genome(genome_path, meta.get("genome_fingerprint"))
    scorer = _Scorer(model, load_diff_base(meta, dev, weights=weights, base=base) if diff else None, g, L, dev)
    names = list(meta["target_names"])
    summary = VcfSummary(out=str(out_path))
    rules = _Rules(g, L, harmonise=harmonise, ref_mismatch=ref_mismatch)
    source = VcfSource(Path(vcf), region)

    def rows() -> Iterator[list[str]]:
        batcher = _Batcher(scorer, span, batch_size)
        added = chain.from_iterable(batcher.add(*rules.classify(record)) for record in read_vcf(source))
        with tqdm(desc="score-vcf", unit=" variants", disable=not progress) as bar:
            for row in chain(added, batcher.finish()):
                summary.count(row)
                bar.update(1)
                yield row.format(len(names))
        _check_naming(summary)  # before the table is published

    try:
        write_tsv(out_path, [*COLUMNS, *names], rows())
    except OSError as exc:
        raise WriteError(f"cannot write output {str(out_path)!r}: {exc.strerror or exc}") from None
    summary.n_windows = scorer.n_windows
    return summary


def read_scores(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``score-vcf`` TSV back into dicts (effect columns as floats, ``None`` when empty)."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        out = []
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            row: dict[str, Any] = dict(zip(header[: len(COLUMNS)], cols[: len(COLUMNS)]))
            row["pos"] = int(row["pos"])
            row["allele_index"] = int(row["allele_index"])
            row["window_center"] = int(row["window_center"]) if row["window_center"] else None
            row["effects"] = {
                name: (float(v) if v != "" else None) for name, v in zip(header[len(COLUMNS) :], cols[len(COLUMNS) :])
            }
            out.append(row)
    return out
