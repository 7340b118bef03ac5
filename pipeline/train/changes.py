"""What ``--resume`` may change: the requested settings compared with those ``last.pt`` recorded.

Each :class:`~pipeline.core.spec.TrainSpec` option that differs (whether it came from a flag or from
the spec's ``train:`` section) is a :class:`Change`, of one of three kinds:

- **free** (:data:`FREE`): ``steps`` (``--steps`` is the total, so extending a run is the usual
  resume) and the loader's performance settings, which cannot change a single number; applied and
  recorded without asking;
- **fixed** (:data:`FIXED`): the architecture (the weights belong to it) and what fixes the data
  order (changing it mid-run would repeat or skip samples of the epoch in progress); refused even
  with ``--allow-changes``;
- every other option: refused unless ``--allow-changes``, which applies it from the resume step on.

Applied changes are recorded as ``{"step", "option", "old", "new"}`` (``step``: the steps done when
the change took effect) in ``config.json`` and in every later checkpoint, after those of earlier
resumes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.spec import TrainSpec
from pipeline.errors import UserError

FREE = frozenset({"steps", "num_workers", "prefetch_factor", "persistent_workers", "decode"})
"""Options a resume may change without ``--allow-changes`` (they are still recorded)."""

_ARCHITECTURE = "the weights in last.pt belong to the recorded architecture"
_ORDER = "it fixes the data order of every epoch; another would repeat or skip samples of the epoch in progress"
FIXED: dict[str, str] = {
    "multiplexer": _ARCHITECTURE,
    "kwargs": _ARCHITECTURE,
    "seed": _ORDER,
    "shuffle_buffer": _ORDER,
}
"""Options that cannot change within a run, and why (refused even with ``--allow-changes``)."""

_ABSENT = object()


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


@dataclass(frozen=True)
class Change:
    """One option that differs from what ``last.pt`` recorded.

    Attributes
    ----------
    step : int
        Optimizer steps done when it takes effect (the checkpoint's step).
    option : str
        The :class:`TrainSpec` field (``kwargs.NAME`` for one multiplexer argument).
    old, new
        The recorded and the requested value.
    """

    step: int
    option: str
    old: Any
    new: Any

    @property
    def field(self) -> str:
        """The :class:`TrainSpec` field (``kwargs`` for ``kwargs.NAME``)."""
        return self.option.split(".")[0]

    def record(self) -> dict[str, Any]:
        """``{"step", "option", "old", "new"}``, as ``config.json`` and checkpoints hold it."""
        return {"step": self.step, "option": self.option, "old": self.old, "new": self.new}

    def __str__(self) -> str:
        return f"{self.option}: {_show(self.old)} -> {_show(self.new)}"


def find_changes(last: Mapping[str, Any], config: TrainSpec, architecture: Mapping[str, Any]) -> list[Change]:
    """The options of ``config`` (and its full ``architecture``) that differ from ``last.pt``'s.

    Parameters
    ----------
    last : mapping
        The checkpoint (``step``, ``architecture`` and, since it was recorded, ``train``).
    config : TrainSpec
        The requested settings.
    architecture : mapping
        ``{"name", "kwargs"}`` with the full constructor arguments (``seq_len``/``n_targets`` included).
    """
    step = int(last["step"])
    changes = []
    old_arch = last["architecture"]
    if old_arch.get("name") != architecture["name"]:
        changes.append(Change(step, "multiplexer", old_arch.get("name"), architecture["name"]))
    old_kwargs, new_kwargs = dict(old_arch.get("kwargs") or {}), dict(architecture["kwargs"])
    for key in sorted(old_kwargs.keys() | new_kwargs.keys()):
        old, new = old_kwargs.get(key, _ABSENT), new_kwargs.get(key, _ABSENT)
        if old != new:
            changes.append(
                Change(step, f"kwargs.{key}", None if old is _ABSENT else old, None if new is _ABSENT else new)
            )
    recorded = last.get("train") or {}  # checkpoints before it was recorded: nothing to compare
    for key, new in config.to_dict().items():
        if key in ("multiplexer", "kwargs") or key not in recorded or recorded[key] == new:
            continue
        changes.append(Change(step, key, recorded[key], new))
    return changes


def check_changes(changes: Sequence[Change], *, allow: bool, last: str) -> None:
    """Refuse what cannot change within a run, and, without ``allow``, every change not :data:`FREE`.

    Raises
    ------
    UserError
        One line listing each refused change as ``option: old -> new`` (with the reason for a fixed
        one) and what to do.
    """
    fixed = [c for c in changes if c.field in FIXED]
    if fixed:
        listed = "; ".join(f"{c} ({FIXED[c.field]})" for c in fixed)
        raise UserError(
            f"--resume from {last!r}: cannot change within a run, even with --allow-changes: {listed}; "
            "resume with the recorded values or start a new run in another --run-dir"
        )
    asked = [c for c in changes if c.field not in FREE]
    if asked and not allow:
        raise UserError(
            f"--resume from {last!r}: options differ from the ones it recorded: {', '.join(map(str, asked))}; "
            f"pass --allow-changes to apply them from step {asked[0].step} on (recorded in config.json and "
            "the checkpoints), or resume with the recorded values"
        )


def check_same_train_samples(last: Mapping[str, Any], n: int, changes: list[Change], where: str) -> list[Change]:
    """Refuse resuming on another number of train samples than the run started with (the store grew
    since, or ``--max-samples`` changed): the epoch in progress would change. A ``max_samples`` change
    that keeps the same number (``--max-samples`` set to the old count of a grown store) changes no
    data: it is dropped from ``changes`` (returned)."""
    recorded = last.get("train_samples")
    if recorded is not None and int(recorded) != n:
        raise UserError(
            f"{where} trained on {recorded} train samples; this resume would use {n} (the store grew, or "
            f"--max-samples changed); resume with --max-samples {recorded} to keep the same data, or start a new run"
        )
    same = recorded is not None and int(recorded) == n
    return [c for c in changes if not (same and c.field == "max_samples")]
