"""What survives a restart, and where it lives: :class:`TrainState` and the run folder, :class:`RunDir`.

:class:`TrainState` is everything ``--resume`` needs besides the model weights: the optimizer,
scheduler and gradient-scaler states, the step, the data position (epoch, micro-batch and the sample
the micro-batches are counted from), the best validation loss, the samples seen and the RNG states, as
one ``state_dict()``/``load_state_dict()``; :meth:`TrainState.retune` and :meth:`TrainState.rebatch`
apply options changed on resume (``--allow-changes``). :class:`RunDir` owns the run folder: ``best.pt``
and ``last.pt`` (written durably by rank 0), ``config.json``, the checks that keep a finished run from
being overwritten, and the removal of temporaries left by killed runs. A run folder at a URL
(``s3://bucket/run``) is worked on through a local copy (:class:`~pipeline.core.urls.Mirror`): each
checkpoint is uploaded in one PUT once written, ``metrics.csv`` with each checkpoint and at the end, and
``--resume`` downloads ``last.pt`` and ``metrics.csv`` first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from pipeline.core.files import atomic_path, remove_stale_temporaries
from pipeline.core.spec import TrainSpec
from pipeline.core.urls import Mirror, is_url, refuse_url
from pipeline.errors import UserError
from pipeline.models import Checkpoint, read_checkpoint, save_checkpoint
from pipeline.train.config import lr_factor
from pipeline.train.logging import metrics_problem

RUN_FILES = ("best.pt", "last.pt", "config.json", "metrics.csv")
"""The files a run writes through a temporary (see :meth:`RunDir.remove_stale_temporaries`)."""


def rng_state() -> dict[str, Any]:
    """Torch RNG states (the only randomness after initialisation: the data order has its own seeds)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainState:
    """The resumable state of a run (the model's weights are saved beside it, in the checkpoint).

    Parameters
    ----------
    optimizer, scheduler, scaler
        The run's optimizer, learning-rate scheduler and gradient scaler (their states are saved).

    Attributes
    ----------
    step : int
        Optimizer steps done.
    epoch, position, offset : int
        The next micro-batch of the data order: micro-batch ``position`` of epoch ``epoch``, counted from
        sample ``offset`` of the epoch's order (0 unless the batch size changed mid-epoch on resume).
    best_valid_loss : float
        Lowest validation loss so far (``inf`` before the first validation).
    samples : int
        Training samples seen, over all ranks.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
    ) -> None:
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.step, self.epoch, self.position, self.offset = 0, 0, 0, 0
        self.best_valid_loss = math.inf
        self.samples = 0

    def advance(self, epoch: int, offset: int, position: int, epoch_done: bool) -> None:
        """Record that micro-batch ``position - 1`` (counted from sample ``offset``) of ``epoch`` was the
        last one used; ``epoch_done``: it was the epoch's last."""
        if epoch_done:
            self.epoch, self.offset, self.position = epoch + 1, 0, 0
        else:
            self.epoch, self.offset, self.position = epoch, offset, position

    def rebatch(self, old_micro: int, new_micro: int) -> None:
        """Continue the epoch in progress with micro-batches of ``new_micro`` samples instead of
        ``old_micro``: from the first sample not yet used, so no sample is repeated or skipped."""
        if new_micro != old_micro:
            self.offset, self.position = self.offset + self.position * old_micro, 0

    def retune(self, config: TrainSpec) -> None:
        """Apply ``config``'s learning rate, schedule and weight decay from the next step on (the
        optimizer and scheduler states restored from a checkpoint carry the recorded ones)."""
        groups = self.optimizer.param_groups
        for group in groups:
            group["initial_lr"] = config.lr
            group["lr"] = config.lr * lr_factor(self.step, config)
            group["weight_decay"] = config.weight_decay
        scheduler: Any = self.scheduler  # base_lrs and _last_lr are LRScheduler attributes
        scheduler.base_lrs = [config.lr for _ in groups]
        scheduler._last_lr = [group["lr"] for group in groups]

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue exactly where this state is (plain types and tensors only)."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "position": self.position,
            "offset": self.offset,
            "best_valid_loss": self.best_valid_loss,
            "samples": self.samples,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the RNG states are restored too)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved without a scaler (amp changed on resume: a fresh one)
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        self.offset = int(state["offset"])  # 0 in checkpoints before batch-size changes (Checkpoint.from_dict)
        self.best_valid_loss, self.samples = float(state["best_valid_loss"]), int(state["samples"])
        set_rng_state(state["rng"])


class RunDir:
    """A run folder: ``best.pt``, ``last.pt``, ``config.json``, ``metrics.csv``.

    Parameters
    ----------
    path : path
        The folder (created by :meth:`create`).
    """

    def __init__(self, path: str | Path) -> None:
        self.mirror: Mirror | None = None
        if is_url(path):  # a URL: worked on through a local copy, each finished file uploaded in one PUT
            self.mirror = Mirror(str(path))
        else:
            refuse_url(path, "--run-dir", "a URL must be given as text, scheme://...; pathlib collapses its //")
        self.path = self.mirror.local if self.mirror is not None else Path(path)
        self.name = str(path)
        """The folder as the user named it (a URL stays one), for messages."""
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        self.config, self.metrics = self.path / "config.json", self.path / "metrics.csv"

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the local copy of a run folder at a URL (a local folder stays as it is)."""
        if self.mirror is not None:
            self.mirror.close()

    def shown(self, path: str | Path) -> str:
        """A path of this folder as the user named it (the URL of a file of a run folder at a URL)."""
        return self.mirror.shown(str(path)) if self.mirror is not None else str(path)

    def _fetch(self, path: Path) -> None:
        """Download a file of a run folder at a URL into the local copy (once)."""
        if self.mirror is not None and not path.exists():
            self.mirror.fetch(path.name)

    def _holds(self, path: Path) -> bool:
        return self.mirror.exists(path.name) if self.mirror is not None else path.exists()

    def problem(self, resume: bool) -> str | None:
        """Why this folder cannot be used (``--resume`` without ``last.pt``, or with a damaged
        ``metrics.csv``; checkpoints without it)."""
        if resume:
            self._fetch(self.last)
            self._fetch(self.metrics)
        if resume and not self.last.is_file():
            return f"--resume: {self.shown(self.last)!r} does not exist"
        if resume:
            problem = metrics_problem(self.metrics)
            return None if problem is None else self.shown(problem)
        if not resume and (self._holds(self.last) or self._holds(self.best)):
            return f"run folder {self.name!r} already holds checkpoints; pass --resume or another --run-dir"
        return None

    def create(self) -> None:
        """Create the folder (with its parents)."""
        if self.mirror is not None:
            self.mirror.create()
        self.path.mkdir(parents=True, exist_ok=True)

    def read_last(self, spec_hash: str) -> dict[str, Any]:
        """``last.pt``, checked to hold a training state and to belong to this store (what may differ
        from the requested settings is :mod:`pipeline.train.changes`' business).

        Returns
        -------
        checkpoint : dict
            With ``"training"`` the :meth:`TrainState.state_dict` to resume from.
        """
        self._fetch(self.last)
        self._fetch(self.metrics)
        data = read_checkpoint(self.last)
        if not isinstance(data.get("training"), dict) or "step" not in data:
            raise UserError(
                f"{self.shown(self.last)!r} is a best.pt-style checkpoint without training state (optimizer, "
                "data position, RNG); resume from a real last.pt or start a new run in another --run-dir"
            )
        if data.get("spec_hash") != spec_hash:
            raise UserError(f"{self.shown(self.last)!r} was trained on another store (spec hash differs)")
        return data

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove the temporaries of :data:`RUN_FILES` that killed runs left
        (:func:`~pipeline.core.files.remove_stale_temporaries`: only those whose process no longer
        exists on this machine; a live process's may be a checkpoint being written).

        Returns
        -------
        removed : list of Path
        """
        if not self.path.is_dir():
            return []
        return remove_stale_temporaries(self.path / name for name in RUN_FILES)

    def save(self, checkpoint: Checkpoint, state: TrainState, *, improved: bool) -> None:
        """Write ``best.pt`` (when ``improved``) and ``last.pt`` (always, with the training state)."""
        if improved:
            save_checkpoint(self.best, checkpoint)
            self._push(self.best)
        save_checkpoint(self.last, checkpoint.with_training(state))
        self._push(self.last)
        self._push(self.metrics)  # its rows up to the previous validation; last.pt holds this step's row

    def _push(self, path: Path) -> None:
        """Upload a finished file of a run folder at a URL (one PUT: all of it or nothing)."""
        if self.mirror is not None:
            self.mirror.push(path.name)

    def finish(self) -> None:
        """At the end of a run: upload ``metrics.csv`` and ``tensorboard/`` of a run folder at a URL."""
        self._push(self.metrics)
        if self.mirror is not None:
            self.mirror.push("tensorboard")

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` (the resolved settings, for replaying the run)."""
        with atomic_path(self.config) as tmp:
            tmp.write_text(json.dumps(config, indent=2) + "\n")
        self._push(self.config)
