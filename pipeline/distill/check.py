"""Validation before compute: every split of a spec can be sampled, checked before anything is written.

:func:`check_splits` runs at the start of every ``distill`` (and alone with ``distill --check``). For
each split it finds the sequence the split samples from (:func:`~pipeline.distill.sampling.split_segments`),
draws its first windows exactly as ``distill`` will, estimates the fraction of windows rejected for
unknown bases from random probe windows, and refuses a split that cannot deliver its sample count:
fewer distinct windows than samples, or so many ``N`` that a sample is expected to run out of draws.
:func:`require_valid_split` refuses a spec that ``train`` could not use (no ``valid`` split).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pipeline.core.genome import Genome
from pipeline.core.spec import Spec
from pipeline.distill.sampling import MAX_DRAWS, WindowSampler, split_code, split_samplers
from pipeline.errors import UserError

PROBES = 256
"""Random windows per split drawn to estimate the fraction rejected for unknown bases."""
FIRST_WINDOWS = 4
"""Windows of each split drawn exactly as ``distill`` draws them, before anything is written."""
_BLOCK = 1 << 22
_ACGT = np.zeros(256, dtype=bool)
_ACGT[list(b"ACGTacgt")] = True


@dataclass
class SplitCheck:
    """What :func:`check_splits` found about one split.

    Attributes
    ----------
    split : str
    samples : int
        Windows the spec asks for.
    contigs : list of str
        Contigs the split samples from, in order.
    segments : int
        Stretches of sequence at least ``L`` long that windows are drawn from.
    bases : int
        Bases in those stretches.
    windows : int
        Distinct windows that fit in them.
    probes, rejected : int
        Random probe windows drawn, and how many had more than ``max_n`` unknown bases.
    usable : int or None
        A, C, G or T bases in the stretches (counted only when asked: it reads the sequence).
    """

    split: str
    samples: int
    contigs: list[str]
    segments: int
    bases: int
    windows: int
    probes: int
    rejected: int
    usable: int | None = None

    @property
    def rejection(self) -> float:
        """Estimated fraction of drawn windows rejected for unknown bases."""
        return self.rejected / self.probes if self.probes else 0.0


def require_valid_split(spec: Spec, allow_no_valid: bool = False) -> None:
    """Refuse a spec without a ``valid`` split (``train`` needs one), unless ``allow_no_valid``."""
    if "valid" in spec.splits or allow_no_valid:
        return
    raise UserError(
        f"spec {spec.name!r} has no valid split, and train refuses a store without one; add e.g. "
        '`valid: {regions: ["chr1:1-2000000"], samples: 256}` (part of a chromosome works, for a genome of '
        "one contig), or pass --allow-no-valid to distil it anyway"
    )


def check_spec(spec: Spec, *, allow_no_valid: bool = False, progress: bool = False) -> dict[str, SplitCheck]:
    """``distill --check``: :func:`require_valid_split`, then :func:`check_splits` with usable bases
    counted, on the spec's genome. Loads no model and writes nothing."""
    require_valid_split(spec, allow_no_valid)
    return check_splits(spec, Genome(spec.genome_path), count_bases=True, progress=progress)


def check_splits(
    spec: Spec,
    genome: Genome,
    *,
    samplers: Mapping[str, WindowSampler] | None = None,
    count_bases: bool = False,
    progress: bool = False,
) -> dict[str, SplitCheck]:
    """Check that every split of ``spec`` can be sampled from ``genome``; nothing is written.

    Parameters
    ----------
    spec : Spec
    genome : Genome
        The spec's genome.
    samplers : mapping of str to WindowSampler, optional
        Every split's sampler (:func:`~pipeline.distill.sampling.split_samplers`, built when not
        given); ``distill`` passes the ones it then samples with, so each is built once.
    count_bases : bool
        Also count the usable (A, C, G, T) bases of each split; this reads all of the split's
        sequence (seconds per gigabase), so ``distill`` leaves it to ``distill --check``.
    progress : bool
        A progress bar while counting bases.

    Returns
    -------
    dict of str to SplitCheck
        By split, in the spec's order.

    Raises
    ------
    UserError
        When a split names a chromosome or interval the genome lacks, has no stretch of sequence as
        long as the window, cannot draw its first windows, has fewer distinct windows than samples,
        or is expected to run out of draws for a sample.
    """
    samplers = samplers if samplers is not None else split_samplers(spec, genome)
    checks = {}
    for name, split in spec.splits.items():
        sampler = samplers[name]
        for k in range(min(split.samples, FIRST_WINDOWS)):
            sampler(k)
        checks[name] = _probe(sampler, split.samples)
        _require_feasible(spec, checks[name])
    if count_bases:
        total = sum(c.bases for c in checks.values())
        with tqdm(total=total, desc="count bases", unit="bp", unit_scale=True, disable=not progress) as bar:
            for name, check in checks.items():
                check.usable = _usable_bases(samplers[name], bar)
    return checks


def _probe(sampler: WindowSampler, samples: int) -> SplitCheck:
    spec = sampler.spec
    rng = np.random.default_rng([spec.seed, 1000 + split_code(sampler.split)])
    rejected = 0
    for _ in range(PROBES):
        chrom, center = sampler.draw(rng)
        rejected += not sampler.accepts(sampler.genome.window(chrom, center, spec.seq_len))
    contigs = list(dict.fromkeys(s.chrom for s in sampler.segments))
    return SplitCheck(
        split=sampler.split,
        samples=samples,
        contigs=contigs,
        segments=len(sampler.segments),
        bases=sum(s.length for s in sampler.segments),
        windows=sampler.windows,
        probes=PROBES,
        rejected=rejected,
    )


def _require_feasible(spec: Spec, check: SplitCheck) -> None:
    where = f"split {check.split!r}"
    if check.windows < check.samples:
        raise UserError(
            f"{where} asks for {check.samples:,} windows, but its sequence holds only {check.windows:,} distinct "
            f"windows of {spec.seq_len} bp; lower its samples or give it more sequence"
        )
    accepted = (check.probes - check.rejected) / check.probes
    # expected number of samples that find no acceptable window in MAX_DRAWS draws
    failing = check.samples * math.exp(MAX_DRAWS * math.log1p(-accepted)) if accepted < 1 else 0.0
    if accepted == 0 or failing >= 1:
        raise UserError(
            f"{where}: {check.rejected} of {check.probes} random windows have more than max_n={spec.max_n} unknown "
            f"bases, so its {check.samples:,} samples would run out of draws; raise max_n or give it other sequence"
        )


def _usable_bases(sampler: WindowSampler, bar: tqdm) -> int:
    usable = 0
    for segment in sampler.segments:
        for start in range(segment.start, segment.end, _BLOCK):
            end = min(start + _BLOCK, segment.end)
            seq = sampler.genome.fetch(segment.chrom, start, end)
            usable += int(_ACGT[np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)].sum())
            bar.update(end - start)
    return usable


def format_checks(spec: Spec, checks: dict[str, SplitCheck]) -> str:
    """The table ``distill --check`` prints: one row per split."""
    header = ("split", "samples", "contigs", "stretches", "bases", "usable bases", "windows", "N rejection")
    rows = [header]
    for c in checks.values():
        names = ", ".join(c.contigs[:3]) + (", ..." if len(c.contigs) > 3 else "")
        rows.append(
            (
                c.split,
                f"{c.samples:,}",
                f"{len(c.contigs)} ({names})",
                f"{c.segments:,}",
                f"{c.bases:,}",
                "-" if c.usable is None else f"{c.usable:,}",
                f"{c.windows:,}",
                f"{100 * c.rejection:.1f}%",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    title = f"spec {spec.name} (L = {spec.seq_len}, max_n = {spec.max_n}), genome {spec.genome_path}"
    return "\n".join([title, *lines])
