"""Training metrics: a running window of losses and throughput, and ``metrics.csv`` (+ TensorBoard).

Rank 0 writes one row every ``log_every`` steps and at every validation, flushed as it is written;
TensorBoard scalars are written too when it is installed. A new run starts ``metrics.csv`` afresh; a
resumed one first cuts it back to the checkpoint's step (a run killed after its last checkpoint wrote
rows that the resumed run writes again), so the file always has one header and strictly increasing
steps.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.core.files import atomic_path
from pipeline.errors import UserError

METRIC_FIELDS = (
    "step",
    "epoch",
    "samples",
    "train_loss",
    "valid_loss",
    "valid_weighted_pearson",
    "lr",
    "elapsed_s",
    "samples_per_s",
)
"""Columns of ``metrics.csv`` (``valid_*`` are empty on rows without validation)."""


class Window:
    """Training loss and throughput since the last logged row."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new window now."""
        self.start, self.loss, self.steps, self.samples = time.perf_counter(), 0.0, 0, 0

    def add(self, loss: float, samples: int) -> None:
        """Count one optimizer step of mean loss ``loss`` over ``samples`` samples (all ranks)."""
        self.loss += loss
        self.steps += 1
        self.samples += samples

    def row(self, step: int, epoch: int, samples: int, lr: float) -> dict[str, Any]:
        """A :data:`METRIC_FIELDS` row (validation columns empty), then start a new window."""
        elapsed = time.perf_counter() - self.start
        row = {
            "step": step,
            "epoch": epoch,
            "samples": samples,
            "train_loss": self.loss / max(self.steps, 1),
            "valid_loss": "",
            "valid_weighted_pearson": "",
            "lr": lr,
            "elapsed_s": round(elapsed, 3),
            "samples_per_s": round(self.samples / max(elapsed, 1e-9), 3),
        }
        self.reset()
        return row


def _step_of(fields: list[str]) -> int | None:
    """The step of a complete ``metrics.csv`` row (``None``: a header, a half-written or foreign line)."""
    if len(fields) != len(METRIC_FIELDS):
        return None
    try:
        return int(fields[0])
    except ValueError:
        return None


def _decode(path: Path) -> tuple[str | None, str | None]:
    """The text of an existing ``metrics.csv`` and why it is damaged (``None``: it is not): not text
    (undecodable UTF-8 or NUL bytes), or none of its lines is the header or a metrics row."""
    if not path.is_file():
        return None, None
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    if "\x00" in text:
        return None, f"not text: a NUL byte at offset {text.index(chr(0))}"
    rows = csv.reader(io.StringIO(text, newline=""))
    if text.strip() and not any(tuple(r) == METRIC_FIELDS or _step_of(r) is not None for r in rows):
        return None, "no line of it is the header or a metrics row"
    return text, None


def metrics_problem(path: Path) -> str | None:
    """Why a resumed run cannot keep the rows of its ``metrics.csv`` (``None``: it can, or there is none):
    the file was damaged, and dropping its rows silently would lose the run's history."""
    _, damage = _decode(path)
    if damage is None:
        return None
    return (
        f"{str(path)!r} is damaged ({damage}); restore it from a copy, or move it aside to resume without the "
        "rows before the checkpoint (the resumed run starts a new file with the checkpoint's own row)"
    )


def _read_rows(path: Path) -> list[list[str]]:
    """The CSV rows of an existing ``metrics.csv`` (``[]`` when there is none).

    Raises
    ------
    UserError
        The file is damaged (:func:`metrics_problem`).
    """
    text, damage = _decode(path)
    if damage is not None:
        raise UserError(str(metrics_problem(path)))
    return list(csv.reader(io.StringIO(text or "", newline="")))


def rows_until(path: Path, step: int, saved: Mapping[str, Any] | None = None) -> list[list[str]]:
    """The rows of ``path`` up to ``step``, as a resumed run from ``step`` keeps them.

    Headers, half-written lines and rows after ``step`` are dropped; of two rows of one step (left by an
    earlier resume that appended) the later one is kept; the rows come out in step order. The row of
    ``step`` itself is ``saved`` (the row the checkpoint recorded, exactly as it was written) when given,
    so a run killed between writing the checkpoint and its row gets that row back. A damaged file (not
    text, or no line of it a metrics row) is refused, naming it (:func:`_read_rows`).
    """
    rows: dict[int, list[str]] = {}
    for fields in _read_rows(path):
        at = _step_of(fields)
        if at is not None and at <= step:
            rows[at] = fields
    if saved is not None and all(key in saved for key in METRIC_FIELDS):
        rows[step] = [str(saved[key]) for key in METRIC_FIELDS]
    return [rows[at] for at in sorted(rows)]


class MetricsWriter:
    """``metrics.csv`` and TensorBoard scalars (when installed); rank 0 only.

    Parameters
    ----------
    path : Path
        ``metrics.csv``; TensorBoard events go to ``tensorboard/`` beside it.
    enabled : bool
        False on ranks other than 0 (every method is then a no-op).
    resume_step : int, optional
        The step a resumed run continues from: the file keeps its rows up to it (:func:`rows_until`).
        ``None``: a new run, the file starts with its header only (rows of a run that never reached a
        checkpoint would repeat steps).
    saved_row : mapping, optional
        The row ``last.pt`` recorded at ``resume_step``.
    """

    def __init__(
        self, path: Path, enabled: bool, resume_step: int | None = None, saved_row: Mapping[str, Any] | None = None
    ) -> None:
        self.enabled = enabled
        self.tb: Any = None
        if not enabled:
            return
        kept = [] if resume_step is None else rows_until(path, resume_step, saved_row)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(METRIC_FIELDS)
            writer.writerows(kept)
        self.file = open(path, "a", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=METRIC_FIELDS)
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency
        except ImportError:
            return
        self.tb = SummaryWriter(str(path.parent / "tensorboard"))

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def row(self, row: dict[str, Any]) -> None:
        """Append a row (and its scalars to TensorBoard)."""
        if not self.enabled:
            return
        self.csv.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for key in ("train_loss", "valid_loss", "valid_weighted_pearson", "lr", "samples_per_s"):
                if row.get(key) != "":
                    self.tb.add_scalar(key, float(row[key]), row["step"])

    def close(self) -> None:
        """Close ``metrics.csv`` and the TensorBoard writer."""
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
