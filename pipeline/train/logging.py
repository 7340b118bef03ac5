"""Training metrics: a running window of losses and throughput, and ``metrics.csv`` (+ TensorBoard).

Rank 0 writes one row every ``log_every`` steps and at every validation; TensorBoard scalars are
written too when it is installed.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from types import TracebackType
from typing import Any

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


class MetricsWriter:
    """``metrics.csv`` (appended to on resume) and TensorBoard scalars (when installed); rank 0 only.

    Parameters
    ----------
    path : Path
        ``metrics.csv``; TensorBoard events go to ``tensorboard/`` beside it.
    enabled : bool
        False on ranks other than 0 (every method is then a no-op).
    """

    def __init__(self, path: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.tb: Any = None
        if not enabled:
            return
        new = not path.exists()
        self.file = open(path, "a", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=METRIC_FIELDS)
        if new:
            self.csv.writeheader()
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
