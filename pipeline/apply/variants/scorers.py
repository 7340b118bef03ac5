"""How ``score-vcf`` turns groups of variants into scores: one class per scoring mode, in a registry.

A scoring mode is a :class:`ScoringMode` subclass registered under its name with
:func:`register_scorer` (:data:`SCORERS`): what it needs of a record, whether variants share its
windows, whether it runs the base model, how the semantics describe its window, how it is built from
the checkpoint (:meth:`ScoringMode.create`) and how it scores groups (:meth:`ScoringMode.run`).
``score-vcf --mode NAME`` (and the library's ``mode``) pick one; adding a mode is one class here (or
anywhere that registers it). The modes (windows as in ``docs/conventions.md``):

- **shared** (:class:`SharedScorer`): one multiplexer window per group of nearby variants, centred
  on the group and shifted to fit the chromosome; each variant is read at its own index
  ``j = pos - first``.
- **centered** (:class:`CenteredScorer`): the multiplexer window centred on the variant's position,
  which sits at 0-based index ``L//2 - 1`` (999 of 2000, as DeepSEA/ExPecto).
- **exact** (:class:`ExactScorer`): the base model on the centred reference window and on the
  alternative window :func:`alt_window` — the bases before the variant kept, REF replaced by ALT,
  the rest filled from the genome after REF to length ``L`` — which also scores indels.

Strands: ``forward``, ``reverse`` (the reverse-complemented window, read back on the forward strand:
window position ``j`` is ``L-1-j`` and base ``b`` its complement, :func:`reverse_complement`) or
``both``, averaged in log-fold space (:func:`combine`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from pipeline.apply.predict import load_diff_base
from pipeline.apply.variants.options import ScoreVcfOptions
from pipeline.apply.variants.rows import AT_N, BASES, Group, Row, Skip, genome_ref
from pipeline.apply.variants.semantics import WINDOWS
from pipeline.core.encoding import ALPHABET, one_hot
from pipeline.core.genome import Genome
from pipeline.core.windows import center_index, center_of, first_position, fitted_first, window_bounds
from pipeline.errors import UserError
from pipeline.ism import log_fold, logfold_to_diff, mask_effects
from pipeline.models import base_from_checkpoint, for_inference, load_checkpoint


def reverse_complement(X: torch.Tensor) -> torch.Tensor:
    """The reverse complement of one-hot windows (or of effects, read back on the forward strand).

    With the alphabet ``A, G, C, T`` a base's complement is the channel ``3 - b``, so reversing the
    channel axis complements and reversing the position axis reverses: window position ``j`` maps to
    ``L-1-j`` and base ``b`` to ``3-b``. The same flip maps the effects ``[..., 4, L]`` of a
    reverse-complemented window back to the forward window's positions and bases.

    Parameters
    ----------
    X : torch.Tensor, shape=(..., 4, L)

    Returns
    -------
    torch.Tensor, shape=(..., 4, L)
    """
    return X.flip((-2, -1))


def combine(logfolds: Sequence[torch.Tensor], refs: Sequence[torch.Tensor] | None, diff: bool) -> torch.Tensor:
    """Average the strands' scores in log-fold space, and turn them into ``alt - ref`` when asked.

    Parameters
    ----------
    logfolds : list of torch.Tensor, shape=(R, F)
        Log-fold scores (or ``diff`` scores of a checkpoint that predicts diff), one per strand.
    refs : list of torch.Tensor, shape=(R, F), optional
        The base model's prediction on each strand's reference window (needed for ``diff`` of
        log-fold scores): the mean log-fold is converted with the mean reference prediction.
    diff : bool
        Return ``alt - ref``.

    Returns
    -------
    torch.Tensor, shape=(R, F)
    """
    mean = torch.stack(list(logfolds)).mean(0)
    if not diff or refs is None:
        return mean
    ref = torch.stack(list(refs)).mean(0)
    return logfold_to_diff(mean[:, :, None, None], ref)[:, :, 0, 0]


def alt_window(genome: Genome, chrom: str, pos: int, ref: str, alt: str, seq_len: int) -> str:
    """The alternative window of a variant (SNV or indel), its first base at index ``L//2 - 1``.

    The ``L//2 - 1`` genome bases before ``pos``, then ``alt``, then the genome from the base after
    REF on, up to length ``L``: a deletion pulls more of the genome in on the right, an insertion
    pushes it out. For an SNV this is the centred reference window with ``alt`` at index ``L//2 - 1``.
    """
    start, _ = window_bounds(pos, seq_len)  # the centred window's 0-based start
    after = pos - 1 + len(ref)
    fill = seq_len - center_index(seq_len) - len(alt)
    return genome.fetch(chrom, start, pos - 1) + alt + genome.fetch(chrom, after, after + fill)


@dataclass(frozen=True)
class ScoringContext:
    """What a scoring mode is built from: the checkpoint and its record, the genome, the device, and the
    command's options (strand, ``diff``, precision, where the base model's files moved)."""

    checkpoint: str
    meta: dict[str, Any]
    genome: Genome
    device: torch.device
    options: ScoreVcfOptions = field(default_factory=ScoreVcfOptions)

    @property
    def seq_len(self) -> int:
        """The model's window length ``L``."""
        return int(self.meta["seq_len"])


class ScoringMode(ABC):
    """One way of scoring variants; a subclass registered with :func:`register_scorer` is a mode.

    The class attributes say what the rest of ``score-vcf`` needs to know of the mode.
    """

    name: ClassVar[str]
    """The mode's name (``--mode``, the semantics' ``mode``)."""
    window: ClassVar[str]
    """How the mode places the variant in the window (the semantics' ``window``)."""
    shares_windows: ClassVar[bool] = False
    """Nearby variants share one window (``--group-span`` applies)."""
    centred: ClassVar[bool] = True
    """The variant-centred window must lie inside the chromosome (else the record is skipped)."""
    indels: ClassVar[bool] = False
    """Indels and multi-nucleotide variants are scored too."""
    base_model: ClassVar[bool] = False
    """Scores with the base model, not the multiplexer (``--weights``/``--base`` matter; no
    ``--catalogue``; ``diff`` is computed, not converted)."""
    scored_with: ClassVar[str] = "multiplexer"
    """What the semantics' model identity says scored."""

    n_windows: int
    """Windows run so far (each strand counts)."""

    @classmethod
    @abstractmethod
    def create(cls, context: ScoringContext) -> ScoringMode:
        """The mode's scorer for a run (loads the model it needs onto ``context.device``)."""

    @abstractmethod
    def run(self, groups: list[Group]) -> None:
        """Score every row of ``groups`` (set ``values``, ``center`` and the REF check, or a skip) and
        mark the groups done."""


SCORERS: dict[str, type[ScoringMode]] = {}
"""The scoring modes by name, in the order registered."""

M = TypeVar("M", bound=type[ScoringMode])


def register_scorer(cls: M) -> M:
    """Register the scoring mode ``cls`` under ``cls.name`` (and its window text for the semantics).

    Raises
    ------
    ValueError
        Another class already has that name (or the name is a window kind of the semantics).
    """
    taken = SCORERS.get(cls.name)
    clash = taken is not cls if taken is not None else cls.name in WINDOWS  # the same class again is no clash
    if clash:
        raise ValueError(f"a scoring mode named {cls.name!r} is already registered")
    SCORERS[cls.name] = cls
    WINDOWS[cls.name] = cls.window
    return cls


def scoring_mode(name: str) -> type[ScoringMode]:
    """The registered mode ``name``; a :class:`UserError` naming the registered ones otherwise."""
    if name not in SCORERS:
        raise UserError(f"--mode must be one of {', '.join(SCORERS)}, got {name!r}")
    return SCORERS[name]


def _encode(seqs: list[str], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack([one_hot(s) for s in seqs])).to(device).float()


@dataclass
class _Wanted:
    """The rows of a batch to read from the multiplexer's output: window ``k``, base ``b``, index ``j``."""

    rows: list[Row]
    k: list[int]
    b: list[int]
    j: list[int]


class MultiplexerScorer(ScoringMode):
    """Scores groups with the multiplexer, one window per group; a subclass places the window (:meth:`first`).

    Parameters
    ----------
    model : torch.nn.Module
        The multiplexer ``[B, 4, L] -> [B, F, 4, L]``.
    base : torch.nn.Module, optional
        The base model, to turn log-fold scores into ``alt - ref``.
    genome : Genome
    seq_len : int
    device : torch.device
    strand : str
        One of :data:`~pipeline.apply.variants.options.STRANDS`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        base: torch.nn.Module | None,
        genome: Genome,
        seq_len: int,
        device: torch.device,
        *,
        strand: str = "forward",
    ) -> None:
        self.model, self.base, self.genome, self.L, self.device = model, base, genome, seq_len, device
        self.strand = strand
        self.n_windows = 0

    @classmethod
    def create(cls, context: ScoringContext) -> MultiplexerScorer:
        """The checkpoint's multiplexer (at ``context.precision``), and the base model when ``diff``
        converts log-fold scores."""
        c, o = context, context.options
        multiplexer, _ = load_checkpoint(c.checkpoint, c.device)
        multiplexer = for_inference(multiplexer, o.precision)
        base = load_diff_base(c.meta, c.device, weights=o.weights, base=o.base) if o.diff else None
        return cls(multiplexer, base, c.genome, c.seq_len, c.device, strand=o.strand)

    @abstractmethod
    def first(self, group: Group) -> int:
        """1-based genome position of index 0 of the group's window."""

    def _wanted(self, groups: list[Group], firsts: list[int], seqs: list[str]) -> _Wanted:
        """Set every row's window and REF check; the rows to read (a variant at ``N`` is skipped)."""
        wanted = _Wanted([], [], [], [])
        for k, (g, first, seq) in enumerate(zip(groups, firsts, seqs)):
            for row in g.rows:
                j = row.record.pos - first
                row.center = center_of(first, self.L)
                row.set_reference(seq[j])
                if seq[j].upper() not in BASES:
                    row.skip = Skip(AT_N, f"the genome has {seq[j]} at this position (effects are 0 by definition)")
                    continue
                wanted.rows.append(row)
                wanted.k.append(k)
                wanted.b.append(ALPHABET.index(row.record.alt.upper()))
                wanted.j.append(j)
        return wanted

    def _strands(self, X: torch.Tensor) -> list[torch.Tensor]:
        """The windows each strand runs: ``X``, its reverse complement, or both."""
        if self.strand == "forward":
            return [X]
        rc = reverse_complement(X)
        return [rc] if self.strand == "reverse" else [X, rc]

    @torch.no_grad()
    def run(self, groups: list[Group]) -> None:
        """Score every row of ``groups``: one window per group, one batched multiplexer pass per strand.

        Only the ``[F]`` scores of the variants are gathered on the device and copied back, never
        the whole ``[G, F, 4, L]`` output.
        """
        if not groups:
            return
        L = self.L
        firsts = [self.first(g) for g in groups]
        seqs = [self.genome.fetch(g.chrom, first - 1, first - 1 + L) for g, first in zip(groups, firsts)]
        wanted = self._wanted(groups, firsts, seqs)
        X = _encode(seqs, self.device)
        k_, b_, j_ = (torch.tensor(v, dtype=torch.long, device=self.device) for v in (wanted.k, wanted.b, wanted.j))
        logfolds, refs = [], []
        for Xs in self._strands(X):
            y = mask_effects(self.model(Xs).float(), Xs)  # [G, F, 4, L] on this strand's window
            if Xs is not X:
                y = reverse_complement(y)  # back on the forward strand's positions and bases
            logfolds.append(y[k_, :, b_, j_])  # [R, F]
            if self.base is not None:
                refs.append(self.base(Xs).float()[k_])
        values = combine(logfolds, refs if self.base is not None else None, diff=self.base is not None)
        for row, v in zip(wanted.rows, values.cpu().numpy()):
            row.values = v
        for g in groups:
            g.done = True
        self.n_windows += len(groups) * len(logfolds)


@register_scorer
class SharedScorer(MultiplexerScorer):
    """``shared``: one multiplexer window per group of nearby variants, centred on the group and
    shifted to fit the chromosome; each variant read at its own index (fastest; not the centred score)."""

    name = "shared"
    window = (
        "shared windows: nearby variants share one window, centred on them and shifted to fit the "
        "chromosome; each variant is read at its own index (fast; not the centred score)"
    )
    shares_windows = True
    centred = False

    def first(self, group: Group) -> int:
        """The window centred on the group's positions, shifted to fit the chromosome."""
        return fitted_first(group.first, group.last, self.genome.length(group.chrom), self.L)


@register_scorer
class CenteredScorer(MultiplexerScorer):
    """``centered``: one multiplexer window per position, the variant at index ``L//2 - 1``."""

    name = "centered"
    window = "the window centred on the variant, which sits at 0-based index L//2 - 1"

    def first(self, group: Group) -> int:
        """The window centred on the group's position (its variants share one position)."""
        return first_position(group.first, self.L)


@register_scorer
class ExactScorer(ScoringMode):
    """Scores variants with the base model itself: ``log_fold(base(alt window), base(ref window))``.

    The reference window is centred on the variant (``L//2 - 1``); the alternative window is
    :func:`alt_window`. With ``diff`` the score is ``base(alt) - base(ref)`` (averaged over strands
    in log-fold space with ``strand="both"``, :func:`combine`).

    Parameters
    ----------
    base : torch.nn.Module
        ``[B, 4, L] -> [B, F]`` probabilities.
    genome : Genome
    seq_len : int
    device : torch.device
    diff : bool
    strand : str
        One of :data:`~pipeline.apply.variants.options.STRANDS`.
    """

    name = "exact"
    window = (
        "the base model on the centred reference window (variant at 0-based index L//2 - 1) and the "
        "alternative window: the L//2 - 1 bases before the variant, ALT, then the genome after REF to length L"
    )
    indels = True
    base_model = True
    scored_with = "base model (exact)"

    def __init__(
        self,
        base: torch.nn.Module,
        genome: Genome,
        seq_len: int,
        device: torch.device,
        *,
        diff: bool = False,
        strand: str = "forward",
    ) -> None:
        self.base, self.genome, self.L, self.device = base, genome, seq_len, device
        self.diff, self.strand = diff, strand
        self.n_windows = 0

    @classmethod
    def create(cls, context: ScoringContext) -> ExactScorer:
        """The checkpoint's base model (``diff`` also when the checkpoint predicts ``diff``)."""
        c, o = context, context.options
        model = base_from_checkpoint(c.meta, weights=o.weights, model=o.base).to(c.device).eval()
        diff = o.diff or c.meta["target_kind"] == "diff"
        return cls(model, c.genome, c.seq_len, c.device, diff=diff, strand=o.strand)

    def _pairs(self, groups: list[Group]) -> tuple[list[Row], list[str], list[str]]:
        """The rows to score with their reference and alternative windows (a variant at ``N`` is skipped)."""
        rows, refs, alts = [], [], []
        for g in groups:
            first = first_position(g.first, self.L)
            ref_seq = self.genome.fetch(g.chrom, first - 1, first - 1 + self.L)
            for row in g.rows:
                r = row.record
                bases = genome_ref(r, self.genome)
                row.center = r.pos  # the centre of the variant-centred window
                row.set_reference(bases)
                if bases is None or not set(bases.upper()) <= BASES:
                    row.skip = Skip(AT_N, f"the genome has {bases} at this position (effects are 0 by definition)")
                    continue
                rows.append(row)
                refs.append(ref_seq)
                alts.append(alt_window(self.genome, g.chrom, r.pos, bases, r.alt.upper(), self.L))
        return rows, refs, alts

    @torch.no_grad()
    def run(self, groups: list[Group]) -> None:
        """Score every row of ``groups``: one base-model pass over their reference and alternative windows."""
        if not groups:
            return
        rows, refs, alts = self._pairs(groups)
        if rows:
            X = _encode(refs + alts, self.device)
            strands = {"forward": [X], "reverse": [reverse_complement(X)], "both": [X, reverse_complement(X)]}
            logfolds, ref_preds, diffs = [], [], []
            for Xs in strands[self.strand]:
                p = self.base(Xs).float()  # [2R, F]
                ref, alt = p[: len(rows)], p[len(rows) :]
                logfolds.append(log_fold(alt, ref))
                ref_preds.append(ref)
                diffs.append(alt - ref)
            if self.diff and len(diffs) == 1:
                values = diffs[0]  # exactly base(alt) - base(ref)
            else:
                values = combine(logfolds, ref_preds, diff=self.diff)
            for row, v in zip(rows, values.cpu().numpy()):
                row.values = v
            self.n_windows += X.shape[0] * len(logfolds)
        for g in groups:
            g.done = True
