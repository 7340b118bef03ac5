"""The write-unit executor of ``distill``: prepare -> compute -> write, overlapped on threads.

For each unit: its windows are sampled and one-hot encoded (:func:`prepare`, a CPU thread), all their
variant effects are computed on the device (the ``compute`` callable), and the unit is written to the
store with its completion marker last (writer threads). Queues are bounded — two units prepared
ahead, at most two waiting to be written — so memory stays flat whatever the number of units.

The progress bar counts windows as their effects are computed, in fractions of a unit as the ISM
engine reports finished variants, so it moves within seconds even when one unit takes minutes
(Beluga on a CPU).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.encoding import one_hot
from pipeline.core.progress import Bar, Share, progress_bar
from pipeline.distill.sampling import WindowSampler
from pipeline.errors import WriteError
from pipeline.store import Store

Compute = Callable[[np.ndarray, Callable[[int], None] | None], tuple[torch.Tensor, torch.Tensor]]
"""``(X [n, 4, L] uint8, progress) -> (effects [n, F, 4, L], ref_pred [n, F])`` on the CPU; ``progress``
(optional) is called with the number of variants finished, as the ISM engines do."""


@dataclass(frozen=True)
class Unit:
    """Write unit ``index`` of a split: samples ``start .. stop - 1``."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        """Samples in the unit."""
        return self.stop - self.start


@dataclass
class Prepared:
    """A unit's windows: one-hot ``X [n, 4, L]`` uint8, chromosomes and 1-based centers."""

    unit: Unit
    X: np.ndarray
    chrom: list[str]
    center: np.ndarray


def prepare(sampler: WindowSampler, unit: Unit) -> Prepared:
    """Sample and encode the windows of ``unit`` (each from its own seeded generator)."""
    windows = [sampler(k) for k in range(unit.start, unit.stop)]
    X = np.stack([one_hot(w.seq) for w in windows])
    return Prepared(unit, X, [w.chrom for w in windows], np.array([w.center for w in windows], dtype=np.int64))


class UnitWriter:
    """Writes computed units of one split into the store; a failed write is a :class:`WriteError`."""

    def __init__(self, store: Store, split: str) -> None:
        self.store, self.split = store, split

    def __call__(self, prepared: Prepared, y: torch.Tensor, ref: torch.Tensor) -> int:
        """Write one unit and mark it complete; returns its number of samples."""
        unit = prepared.unit
        try:
            self.store.write_unit(
                self.split,
                unit.index,
                reference=prepared.X,
                ref_pred=ref.numpy(),
                targets=y.numpy(),
                chrom=prepared.chrom,
                center=prepared.center,
            )
        except OSError as exc:  # disk full, permission, ...: the unit stays unmarked, a rerun redoes it
            raise WriteError(
                f"cannot write unit {unit.index} of split {self.split!r} to store {self.store.path!r}: "
                f"{exc.strerror or exc}; the unit stays incomplete and a rerun of distill resumes there"
            ) from None
        return unit.size


def run_units(
    units: Iterable[Unit],
    samples: int,
    sampler: WindowSampler,
    compute: Compute,
    write: UnitWriter,
    *,
    overlap: bool = True,
    progress: bool = True,
    label: str = "distill",
) -> Iterator[int]:
    """Prepare, compute and write ``units``; yields each written unit's number of samples.

    Parameters
    ----------
    units : iterable of Unit
        The units to compute (this process's, not complete yet), taken one at a time.
    samples : int
        Their number of samples, i.e. windows (the progress bar's total).
    sampler : WindowSampler
        Draws the split's windows.
    compute : callable
        Effects and reference predictions of a unit's windows.
    write : UnitWriter
        Writes a unit and its completion marker.
    overlap : bool
        Prepare and write on background threads while the device computes.
    progress : bool
        Show a progress bar of the windows computed (fractions of a unit as its variants finish, the rate
        and the ETA).
    label : str
        The progress bar's description.
    """
    with progress_bar(desc=label, unit="window", total=samples, enabled=progress and samples > 0) as bar:
        run = _overlapped if overlap else _sequential
        yield from run(units, sampler, _counted(compute, bar), write)


def _counted(compute: Compute, bar: Bar) -> Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]:
    """``compute`` advancing ``bar`` by the unit's windows as the engine reports its variants."""

    def run(X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        share = Share(bar, len(X), 3 * int((X.sum(axis=1) > 0).sum()))  # 3 variants per non-N position
        out = compute(X, share)
        share.finish()
        return out

    return run


Counted = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def _sequential(units: Iterable[Unit], sampler: WindowSampler, compute: Counted, write: UnitWriter) -> Iterator[int]:
    for unit in units:
        prepared = prepare(sampler, unit)
        yield write(prepared, *compute(prepared.X))


def _overlapped(units: Iterable[Unit], sampler: WindowSampler, compute: Counted, write: UnitWriter) -> Iterator[int]:
    with (
        ThreadPoolExecutor(1, thread_name_prefix="prepare") as prep,
        ThreadPoolExecutor(2, thread_name_prefix="write") as writers,
    ):
        ahead: deque[Future[Prepared]] = deque()
        behind: deque[Future[int]] = deque()
        queue = iter(units)

        def refill() -> None:
            while len(ahead) < 2:
                unit = next(queue, None)
                if unit is None:
                    return
                ahead.append(prep.submit(prepare, sampler, unit))

        refill()
        while ahead:
            prepared = ahead.popleft().result()
            refill()
            y, ref = compute(prepared.X)
            while len(behind) >= 2 or (behind and behind[0].done()):
                yield behind.popleft().result()
            behind.append(writers.submit(write, prepared, y, ref))
        while behind:
            yield behind.popleft().result()
