"""``score-vcf``: the multiplexer's effect of every SNV of a VCF, one forward pass per window.

Reads a VCF (plain text, or gzip/bgzip; detected from the file's first bytes), header lines starting
with ``#``, 1-based ``POS``. Variants are scored in the order they come: consecutive SNVs on one
chromosome whose positions span at most ``group_span`` bases (default: the model's ``L``) share one
window, centred on them; a window that would not fit in the chromosome is shifted until it fits, and
each variant's effect is read at its own index ``j = pos - window_start`` of that window
(``y[f, ALT, j]``). Windows are batched through the multiplexer, so memory stays flat and the output
streams; a sorted VCF gives the fewest windows.

Output: a TSV (gzipped when its name ends in ``.gz``), one row per VCF record, in VCF order::

    chrom  pos  id  ref  alt  window_center  ref_check  status  <one column per target>

``ref_check`` is ``ok``, ``mismatch: genome has X`` (the variant is still scored, against the
genome's base) or ``n/a`` (no genome base to compare with); ``status`` is ``scored`` or
``skipped: <reason>`` (indel, multi-allelic, absent chromosome, ...), whose effect columns are empty.
"""

from __future__ import annotations

import gzip
import io
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.encoding import ALPHABET, one_hot
from pipeline.errors import UserError
from pipeline.genome import Genome
from pipeline.outputs import TSV_FORMAT, write_tsv

COLUMNS = ["chrom", "pos", "id", "ref", "alt", "window_center", "ref_check", "status"]
"""The fixed columns of the output; one column per target name follows."""

_BASES = set("ACGT")


@dataclass(frozen=True)
class VcfRecord:
    """The first five columns of one VCF data line (``pos`` 1-based, as in the file)."""

    line: int
    chrom: str
    pos: int
    id: str
    ref: str
    alt: str


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_vcf(path: str | os.PathLike) -> Iterator[VcfRecord]:
    """Yield the records of a VCF (plain or gzipped) one by one.

    Raises
    ------
    UserError
        Missing or unreadable file; a data line with fewer than five columns or a non-integer
        ``POS`` (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"VCF file {str(path)!r} does not exist")
    number = 0
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                text = line.rstrip("\r\n")
                if not text.strip() or text.startswith("#"):
                    continue
                cols = text.split("\t")
                if len(cols) < 5:
                    cols = text.split()
                if len(cols) < 5:
                    raise UserError(
                        f"{str(path)}:{number}: expected at least 5 tab-separated columns (CHROM POS ID REF ALT), "
                        f"got {len(cols)}: {text[:60]!r}"
                    )
                try:
                    pos = int(cols[1])
                except ValueError:
                    raise UserError(f"{str(path)}:{number}: POS {cols[1]!r} is not an integer") from None
                yield VcfRecord(number, cols[0], pos, cols[2], cols[3], cols[4])
    except (OSError, EOFError, UnicodeError) as exc:
        raise UserError(f"cannot read VCF {str(path)!r} (after line {number}): {exc}") from None


def skip_reason(record: VcfRecord, genome: Genome, seq_len: int) -> str | None:
    """Why a record cannot be scored (``None`` when it is an SNV inside a long enough chromosome).

    The N check needs the window and happens later (:func:`score_vcf`).
    """
    ref, alt = record.ref.upper(), record.alt.upper()
    if "," in alt:
        return f"multi-allelic (ALT {record.alt}); split it into biallelic records first, e.g. bcftools norm -m -"
    if alt in (".", "*", "") or alt.startswith("<") or "[" in alt or "]" in alt:
        return f"no plain alternate allele (ALT {record.alt})"
    if len(ref) != len(alt):
        return f"indel ({record.ref}>{record.alt})"
    if len(ref) > 1:
        return f"multi-nucleotide variant ({record.ref}>{record.alt})"
    if ref not in _BASES or alt not in _BASES:
        return f"REF or ALT is not A/C/G/T ({record.ref}>{record.alt})"
    if ref == alt:
        return f"REF equals ALT ({record.ref})"
    if record.chrom not in genome:
        hint = ""
        for other in (f"chr{record.chrom}", record.chrom.removeprefix("chr")):
            if other != record.chrom and other in genome:
                hint = f"; the genome has {other!r}"
        return f"chromosome {record.chrom!r} is not in the genome{hint}"
    n = genome.length(record.chrom)
    if n < seq_len:
        return f"chromosome {record.chrom} ({n} bp) is shorter than the model's window ({seq_len} bp)"
    if not 1 <= record.pos <= n:
        return f"position outside {record.chrom} (1..{n})"
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


def _genome_ref(record: VcfRecord, genome: Genome) -> str | None:
    """The genome's bases under REF, when REF lies inside a chromosome of the genome."""
    if record.chrom not in genome or not record.ref or record.ref in (".", "*"):
        return None
    start, end = record.pos - 1, record.pos - 1 + len(record.ref)
    if start < 0 or end > genome.length(record.chrom):
        return None
    return genome.fetch(record.chrom, start, end)


def window_start(first: int, last: int, chrom_len: int, seq_len: int) -> int:
    """1-based start of the window of length ``seq_len`` centred on positions ``first..last``.

    Shifted to fit inside the chromosome when the centred window would not; the result always
    contains ``first`` and ``last`` (which must span at most ``seq_len`` bases).
    """
    span = last - first + 1
    if span > seq_len or chrom_len < seq_len:
        raise ValueError(f"positions {first}..{last} do not fit in one window of {seq_len} in {chrom_len} bp")
    start = first - (seq_len - span) // 2
    return min(max(start, 1), chrom_len - seq_len + 1)


@dataclass
class _Row:
    record: VcfRecord
    status: str = "scored"
    check: str = "n/a"
    center: int | None = None
    values: np.ndarray | None = None
    group: _Group | None = None


@dataclass
class _Group:
    chrom: str
    first: int
    last: int
    rows: list[_Row] = field(default_factory=list)
    done: bool = False


@dataclass
class VcfSummary:
    """What :func:`score_vcf` did."""

    out: str
    n_records: int = 0
    n_scored: int = 0
    n_windows: int = 0
    n_mismatch: int = 0
    skipped: Counter = field(default_factory=Counter)
    """Skipped records by reason (the text before any parenthesis or semicolon)."""

    def line(self) -> str:
        """One line for the command line."""
        n_skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.most_common())
        return (
            f"scored {self.n_scored} of {self.n_records} variants in {self.n_windows} windows; "
            f"{self.n_mismatch} REF mismatches; skipped {n_skipped}"
            + (f" ({reasons})" if reasons else "")
            + f"; wrote {self.out}"
        )


def _reason_key(status: str) -> str:
    reason = status.removeprefix("skipped: ")
    for sep in (" (", ";"):
        reason = reason.split(sep)[0]
    return "chromosome not in the genome" if reason.endswith("is not in the genome") else reason


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
        from pipeline.ism import logfold_to_diff, mask_effects

        if not groups:
            return
        L = self.L
        starts, seqs = [], []
        for g in groups:
            start = window_start(g.first, g.last, self.genome.length(g.chrom), L)
            starts.append(start)
            seqs.append(self.genome.fetch(g.chrom, start - 1, start - 1 + L))
        rows, ks, bs, js = [], [], [], []
        for k, (g, start, seq) in enumerate(zip(groups, starts, seqs)):
            for row in g.rows:
                j = row.record.pos - start
                row.center = start + L // 2 - 1
                row.check = ref_check(row.record, seq[j])
                if seq[j].upper() not in _BASES:
                    row.status = f"skipped: the genome has {seq[j]} at this position (effects are 0 by definition)"
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
        values = values.cpu().numpy()
        for row, v in zip(rows, values):
            row.values = v
        for g in groups:
            g.done = True
        self.n_windows += len(groups)


def _format(row: _Row, n_targets: int) -> list[str]:
    r = row.record
    values = (
        [TSV_FORMAT % v for v in row.values.astype(np.float64).tolist()] if row.values is not None else [""] * n_targets
    )
    center = "" if row.center is None else str(row.center)
    return [r.chrom, str(r.pos), r.id, r.ref, r.alt, center, row.check, row.status, *values]


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
    weights: str | os.PathLike | None = None,
    base: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> VcfSummary:
    """Score every SNV of a VCF with a trained multiplexer and write the TSV described above.

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt``.
    vcf : str
        VCF file, plain or gzipped.
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
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    summary : VcfSummary
    """
    from tqdm import tqdm

    from pipeline.device import exact_float32, resolve_device
    from pipeline.models import load_checkpoint
    from pipeline.predict import load_diff_base
    from pipeline.regions import resolve_genome

    out_path = Path(out)
    if not out_path.name.endswith((".tsv", ".tsv.gz")):
        raise UserError(f"score-vcf output must end in .tsv or .tsv.gz, got {out_path.name!r}")
    if out_path.exists() and not overwrite:
        raise UserError(f"output {str(out_path)!r} exists; remove it or pass --overwrite")
    if not out_path.parent.exists():
        raise UserError(f"output folder {str(out_path.parent)!r} does not exist")
    if not Path(vcf).is_file():
        raise UserError(f"VCF file {str(vcf)!r} does not exist")
    if not diff and (weights is not None or base is not None):
        raise UserError("--weights/--base only matter with --diff (the base model is not run otherwise)")
    dev = resolve_device(device)
    exact_float32()
    model, meta = load_checkpoint(checkpoint, dev)
    L = int(meta["seq_len"])
    span = L if group_span is None else group_span
    if not 1 <= span <= L:
        raise UserError(f"--group-span must lie in 1..{L} (the model's window), got {span}")
    genome_path = resolve_genome(genome, meta.get("genome"), "the checkpoint")
    if genome_path is None:
        raise UserError("no genome: pass --genome FASTA")
    g = Genome(genome_path)
    scorer = _Scorer(model, load_diff_base(meta, dev, weights=weights, base=base) if diff else None, g, L, dev)
    names = list(meta["target_names"])
    summary = VcfSummary(out=str(out_path))

    def rows() -> Iterator[list[str]]:
        pending: list[_Row] = []
        closed: list[_Group] = []
        open_group: _Group | None = None
        bar = tqdm(desc="score-vcf", unit=" variants", disable=not progress)

        def flush() -> Iterator[list[str]]:
            """Yield the finished rows at the front of ``pending`` (VCF order is kept)."""
            nonlocal pending
            done = 0
            for row in pending:
                if row.group is not None and not row.group.done:
                    break
                done += 1
            for row in pending[:done]:
                summary.n_records += 1
                if row.status == "scored":
                    summary.n_scored += 1
                else:
                    summary.skipped[_reason_key(row.status)] += 1
                if row.check.startswith("mismatch"):
                    summary.n_mismatch += 1
                yield _format(row, len(names))
            bar.update(done)
            pending = pending[done:]

        for record in read_vcf(vcf):
            row = _Row(record)
            pending.append(row)
            reason = skip_reason(record, g, L)
            if reason is not None:
                row.status = f"skipped: {reason}"
                row.check = ref_check(record, _genome_ref(record, g))
                continue
            if (
                open_group is not None
                and open_group.chrom == record.chrom
                and max(open_group.last, record.pos) - min(open_group.first, record.pos) + 1 <= span
            ):
                open_group.first = min(open_group.first, record.pos)
                open_group.last = max(open_group.last, record.pos)
            else:
                if open_group is not None:
                    closed.append(open_group)
                open_group = _Group(record.chrom, record.pos, record.pos)
            open_group.rows.append(row)
            row.group = open_group
            if len(closed) >= batch_size:
                scorer.run(closed)
                closed = []
                yield from flush()
        if open_group is not None:
            closed.append(open_group)
        scorer.run(closed)
        yield from flush()
        bar.close()

    write_tsv(out_path, [*COLUMNS, *names], rows())
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
            row["window_center"] = int(row["window_center"]) if row["window_center"] else None
            row["effects"] = {
                name: (float(v) if v != "" else None) for name, v in zip(header[len(COLUMNS) :], cols[len(COLUMNS) :])
            }
            out.append(row)
    return out
