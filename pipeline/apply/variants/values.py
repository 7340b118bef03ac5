"""``--values ref,alt``: the base model's reference prediction behind each score, and the implied alternative.

A score is relative to the base model's prediction on the reference window the variant was scored
from: the window centred at the row's ``window_center`` (a shared window, the variant-centred window,
a catalogue tile). :class:`ReferenceValues` runs the base model once on each such window (both
strands and their mean with ``strand="both"``, as :func:`~pipeline.apply.variants.scorers.combine`
averages them) and sets, per target,

- ``ref_values``: that prediction, and
- ``alt_values``: the alternative probability the score implies, :func:`implied_alt` —
  ``log_unfold(ref, score)`` for log-fold scores (:func:`pipeline.ism.log_unfold`, the exact inverse
  of the log-fold), ``ref + score`` for ``diff`` scores.

In exact mode with one strand, ``alt`` is the base model's prediction on the alternative window (up
to float32 rounding). ``score-vcf`` (its rows, its catalogue rows) and ``lookup`` fill their rows here,
one unit or chunk of rows at a time, so the windows of nearby variants run in one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from pipeline.apply.variants.rows import Row
from pipeline.core.encoding import one_hot
from pipeline.core.genome import Genome
from pipeline.core.windows import first_position
from pipeline.errors import UserError
from pipeline.ism import log_unfold
from pipeline.models import base_from_checkpoint
from pipeline.store.background import Background, open_background

QUANTITIES = ("logfold", "diff")
"""The score quantities whose implied alternative is defined."""

FILL_ROWS = 1024
"""Rows :func:`filled` gathers before it runs their windows (a stream of single rows, as ``lookup``'s)."""


def implied_alt(ref: np.ndarray, score: np.ndarray, quantity: str) -> np.ndarray:
    """The alternative probability a score implies, given the reference prediction.

    Parameters
    ----------
    ref : numpy.ndarray, shape=(..., F)
        The base model's reference prediction.
    score : numpy.ndarray, shape=(..., F)
        The scores (log-fold or ``alt - ref``).
    quantity : {"logfold", "diff"}

    Returns
    -------
    alt : numpy.ndarray, shape=(..., F), float32
        ``log_unfold(ref, score)`` (computed in float64) or ``ref + score``.
    """
    if quantity not in QUANTITIES:
        raise UserError(f"--values needs logfold or diff scores; these are {quantity!r}")
    ref64 = torch.from_numpy(np.asarray(ref, dtype=np.float64))
    score64 = torch.from_numpy(np.asarray(score, dtype=np.float64))
    alt = ref64 + score64 if quantity == "diff" else log_unfold(ref64, score64)
    return alt.numpy().astype(np.float32)


class ReferenceValues:
    """Sets ``ref_values``/``alt_values`` of scored rows from the base model on their reference windows.

    Parameters
    ----------
    base : torch.nn.Module
        The base model ``[B, 4, L] -> [B, F]`` (probabilities).
    genome : Genome
    seq_len : int
    device : torch.device
    quantity : {"logfold", "diff"}
        What the rows' ``values`` are.
    strand : str
        ``forward``, ``reverse`` (the reverse-complemented window) or ``both`` (the mean of the two).
    batch_size : int
        Windows per base-model pass.
    """

    def __init__(self, base: torch.nn.Module, genome: Genome, seq_len: int, device: torch.device, *,
                 quantity: str, strand: str = "forward", batch_size: int = 8) -> None:  # fmt: skip
        if quantity not in QUANTITIES:
            raise UserError(f"--values needs logfold or diff scores; these are {quantity!r}")
        self.base, self.genome, self.L, self.device = base, genome, seq_len, device
        self.quantity, self.strand, self.batch_size = quantity, strand, batch_size
        self.n_windows = 0

    @classmethod
    def from_checkpoint(
        cls,
        meta: dict[str, object],
        genome: Genome,
        device: torch.device,
        *,
        quantity: str,
        strand: str = "forward",
        batch_size: int = 8,
        weights: str | None = None,
        base: str | None = None,
    ) -> ReferenceValues:
        """The checkpoint's base model (``weights``/``base``: where its files moved) on ``device``."""
        model = base_from_checkpoint(dict(meta), weights=weights, model=base).to(device).eval()
        return cls(model, genome, int(str(meta["seq_len"])), device, quantity=quantity, strand=strand,
                   batch_size=batch_size)  # fmt: skip

    def _chrom(self, name: str) -> str:
        return name if name in self.genome else (self.genome.suggest(name) or name)

    @torch.no_grad()
    def _predict(self, windows: list[tuple[str, int]]) -> np.ndarray:
        """The base model on the windows ``(chrom, 1-based centre)``: ``[W, F]`` float32 (mean over strands)."""
        out = []
        for lo in range(0, len(windows), self.batch_size):
            seqs = []
            for chrom, center in windows[lo : lo + self.batch_size]:
                first = first_position(center, self.L)
                seqs.append(self.genome.fetch(chrom, first - 1, first - 1 + self.L))
            X = torch.from_numpy(np.stack([one_hot(s) for s in seqs])).to(self.device).float()
            strands = {"forward": [X], "reverse": [X.flip((-2, -1))], "both": [X, X.flip((-2, -1))]}[self.strand]
            preds = torch.stack([self.base(Xs).float() for Xs in strands]).mean(0)
            out.append(preds.cpu().numpy())
            self.n_windows += len(seqs) * len(strands)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def fill(self, rows: Iterable[Row]) -> None:
        """Set ``ref_values`` and ``alt_values`` of every scored row (each distinct window runs once)."""
        scored = [row for row in rows if row.values is not None and row.center is not None]
        index: dict[tuple[str, int], int] = {}
        for row in scored:
            index.setdefault((self._chrom(row.record.genome_chrom), int(row.center or 0)), len(index))
        if not index:
            return
        refs = self._predict(list(index))
        for row in scored:
            ref = refs[index[self._chrom(row.record.genome_chrom), int(row.center or 0)]]
            row.ref_values = ref
            row.alt_values = implied_alt(ref, np.asarray(row.values), self.quantity)

    def filled(self, rows: Iterable[Row], chunk: int = FILL_ROWS) -> Iterator[Row]:
        """``rows`` in order, filled ``chunk`` rows at a time (for a stream of rows)."""
        return filled_in_chunks(self.fill, rows, chunk)


class Percentiles:
    """Sets ``q_values`` of scored rows: each score's percentile in a background (``--background``).

    Parameters
    ----------
    background : Background
        Opened and checked (:func:`~pipeline.store.background.open_background`).
    columns : np.ndarray, shape=(F_rows,)
        The background's target index of each entry of a row's ``values``.
    """

    def __init__(self, background: Background, columns: np.ndarray) -> None:
        self.background, self.columns = background, columns

    @classmethod
    def open(cls, path: str, model: tuple[str, list[str]], quantity: str, what: str,
             row_targets: list[str] | None = None) -> Percentiles:  # fmt: skip
        """Open the background at ``path`` for the scores of ``what``.

        ``model`` is its checkpoint's sha256 and every target name, which must be the background's, as
        must the score ``quantity`` (else a one-line :class:`UserError`); ``row_targets``: the targets of
        a row's ``values`` when they are not all of them (a catalogue that keeps some).
        """
        background = open_background(path)
        sha256, names = model
        background.check_model(sha256, names, what)
        kind = background.attrs["target_kind"]
        if quantity != kind:
            raise UserError(f"background {path!r} holds {kind} effects; these scores are {quantity}")
        wanted = names if row_targets is None else row_targets
        return cls(background, np.array([names.index(n) for n in wanted], dtype=np.int64))

    def fill(self, rows: Iterable[Row]) -> None:
        """Set ``q_values`` of every scored row (all targets at once)."""
        scored = [row for row in rows if row.values is not None]
        if not scored:
            return
        scores = np.stack([np.asarray(row.values, dtype=np.float64) for row in scored])
        shares = self.background.percentile(scores, self.columns).astype(np.float32)
        for row, q in zip(scored, shares, strict=True):
            row.q_values = q

    def filled(self, rows: Iterable[Row], chunk: int = FILL_ROWS) -> Iterator[Row]:
        """``rows`` in order, filled ``chunk`` rows at a time (for a stream of rows)."""
        return filled_in_chunks(self.fill, rows, chunk)


def filled_in_chunks(fill: Callable[[list[Row]], None], rows: Iterable[Row], chunk: int) -> Iterator[Row]:
    """``rows`` in order, each ``chunk`` of them passed to ``fill`` before they go on (a stream of rows,
    as ``lookup``'s, filled in batches)."""
    held: list[Row] = []
    for row in rows:
        held.append(row)
        if len(held) >= chunk:
            fill(held)
            yield from held
            held = []
    fill(held)
    yield from held
