"""The parts of a sharded ``score-vcf``: one file per unit of :data:`UNIT_RECORDS` VCF records.

``--shard I/N`` and ``torchrun`` ranks take the units ``u % parts == part``
(:class:`~pipeline.core.runtime.Launch`). Each finished unit is one ``unit-<u>.npz`` in the folder
``<out>.parts`` (written atomically: a unit file is complete or absent), so a rerun skips finished
units. ``run.json`` records what the parts were computed with (a rerun with other options is an
error, not a mixed output); ``units.json`` the number of units, written by the first process to
read the VCF to its end. The process that finds every unit done merges them, in VCF order, into the
output (``merge.lock`` makes it one process) and removes the folder.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.apply.variants.records import VcfRecord
from pipeline.apply.variants.rows import Row, Skip
from pipeline.core.files import atomic_path, process_alive
from pipeline.core.urls import PARTS_REASON, refuse_url
from pipeline.errors import UserError

UNIT_RECORDS = 1000
"""VCF records per unit of work. Shared windows never span two units, in every run (sharded or not),
so a sharded run gives the same scores as one process."""

_STRINGS = ("chrom", "id", "ref", "alt", "contig", "check", "match", "skip_kind", "skip_reason", "skip_example")
_INTS = ("number", "pos", "allele_index", "center")


_VALUES = ("ref_values", "alt_values", "q_values")
"""The ``--values`` and ``--background`` arrays of a row kept in a unit file (with ``has_<name>`` flags)."""


def _value_arrays(rows: list[Row], n_targets: int) -> dict[str, np.ndarray]:
    """``ref_values``/``alt_values``/``q_values`` ``[rows, targets]`` and their ``has_`` flags (none when no row
    has them)."""
    out: dict[str, np.ndarray] = {}
    for name in _VALUES:
        if all(getattr(row, name) is None for row in rows):
            continue
        data = np.full((len(rows), n_targets), np.nan, dtype=np.float32)
        has = np.zeros(len(rows), dtype=bool)
        for k, row in enumerate(rows):
            v = getattr(row, name)
            if v is not None:
                data[k], has[k] = v, True
        out[name], out[f"has_{name}"] = data, has
    return out


def parts_folder(out: Path) -> Path:
    """Where the parts of output ``out`` go: ``<out>.parts`` beside it (never at a URL)."""
    refuse_url(out, "--out", PARTS_REASON)
    return out.with_name(out.name + ".parts")


def _columns(row: Row) -> dict[str, Any]:
    r, skip = row.record, row.skip
    return {
        **{
            k: v
            for k, v in asdict(r).items()
            if k in ("number", "chrom", "pos", "id", "ref", "alt", "allele_index", "contig")
        },
        "center": -1 if row.center is None else row.center,
        "check": row.check,
        "match": row.match,
        "skip_kind": "" if skip is None else skip.kind,
        "skip_reason": "" if skip is None else skip.reason,
        "skip_example": "" if skip is None else skip.example,
    }


class Parts:
    """The parts folder of one output.

    Parameters
    ----------
    out : Path
        The final output.
    identity : dict
        What the scores depend on (VCF, model, options); must equal what the folder recorded.
    """

    def __init__(self, out: Path, identity: dict[str, Any]) -> None:
        self.out, self.folder, self.identity = out, parts_folder(out), identity

    def prepare(self) -> None:
        """Create the folder with ``run.json``, or check an existing one's against :attr:`identity`."""
        run = self.folder / "run.json"
        if run.is_file():
            recorded = json.loads(run.read_text())
            changed = sorted(k for k in set(recorded) | set(self.identity) if recorded.get(k) != self.identity.get(k))
            if "vcf_sha256" in changed:
                raise UserError(
                    f"{str(self.folder)!r} holds parts computed from another content of the VCF (its sha256 differs: "
                    "the file changed since); remove the folder to score it again"
                )
            if changed:
                raise UserError(
                    f"{str(self.folder)!r} holds parts computed with other {', '.join(changed)}; rerun with the same "
                    f"options, or remove the folder to start again"
                )
            return
        self.folder.mkdir(exist_ok=True)
        with atomic_path(run) as tmp:
            tmp.write_text(json.dumps(self.identity, indent=1, sort_keys=True) + "\n")

    def unit_path(self, unit: int) -> Path:
        """The file of unit ``unit``."""
        return self.folder / f"unit-{unit:09d}.npz"

    def done(self, unit: int) -> bool:
        """Whether unit ``unit`` is finished."""
        return self.unit_path(unit).is_file()

    def write(self, unit: int, rows: list[Row], n_targets: int) -> None:
        """Write the finished rows of unit ``unit`` (all of them, in VCF order), atomically."""
        cols = [_columns(row) for row in rows]
        arrays: dict[str, np.ndarray] = {k: np.array([c[k] for c in cols], dtype=str) for k in _STRINGS}
        arrays.update({k: np.array([c[k] for c in cols], dtype=np.int64) for k in _INTS})
        values = np.full((len(rows), n_targets), np.nan, dtype=np.float32)
        scored = np.zeros(len(rows), dtype=bool)
        for k, row in enumerate(rows):
            if row.values is not None:
                values[k], scored[k] = row.values, True
        arrays.update(_value_arrays(rows, n_targets))
        with atomic_path(self.unit_path(unit)) as tmp, open(tmp, "wb") as handle:
            save: Callable[..., None] = np.savez  # keyword arrays only (mypy reads ** as allow_pickle too)
            save(handle, values=values, scored=scored, **arrays)

    def read(self, unit: int) -> list[Row]:
        """The rows of unit ``unit``."""
        with open(self.unit_path(unit), "rb") as handle, np.load(handle, allow_pickle=False) as z:  # closed if damaged
            data = {k: z[k] for k in z.files}
        rows = []
        for k in range(len(data["number"])):
            s = {c: str(data[c][k]) for c in _STRINGS}
            record = VcfRecord(
                int(data["number"][k]), s["chrom"], int(data["pos"][k]), s["id"], s["ref"], s["alt"],
                int(data["allele_index"][k]), s["contig"],
            )  # fmt: skip
            skip = Skip(s["skip_kind"], s["skip_reason"], s["skip_example"]) if s["skip_kind"] else None
            center = int(data["center"][k])
            row = Row(record, skip, s["check"], s["match"], None if center < 0 else center)
            row.values = data["values"][k] if data["scored"][k] else None
            for name in _VALUES:
                if name in data and data[f"has_{name}"][k]:
                    setattr(row, name, data[name][k])
            rows.append(row)
        return rows

    def set_total(self, n_units: int) -> None:
        """Record the number of units (every process that reads the VCF to its end finds the same)."""
        path = self.folder / "units.json"
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"n_units": n_units, "unit_records": UNIT_RECORDS}) + "\n")

    def total(self) -> int | None:
        """The number of units, once a process has read the VCF to its end."""
        path = self.folder / "units.json"
        return int(json.loads(path.read_text())["n_units"]) if path.is_file() else None

    def missing(self) -> list[int]:
        """The units not finished yet (all of them while the total is unknown: ``[-1]``)."""
        n = self.total()
        return [-1] if n is None else [u for u in range(n) if not self.done(u)]

    def lock(self) -> bool:
        """Take the right to merge (``merge.lock``, created exclusively); a lock left by a dead process
        of this machine is taken over. ``False``: another process is merging."""
        path = self.folder / "merge.lock"
        mine = f"{platform.node()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                host, _, pid = path.read_text().partition(" ")
                if host != platform.node() or not pid.strip().isdigit() or process_alive(int(pid)):
                    return False
                path.unlink(missing_ok=True)  # its merger died: take over
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(mine)
            return True
        return False

    def unlock(self) -> None:
        """Give the merge back (after a failed merge)."""
        (self.folder / "merge.lock").unlink(missing_ok=True)

    def remove(self) -> None:
        """Remove the folder (after the merged output is published)."""
        shutil.rmtree(self.folder, ignore_errors=True)
