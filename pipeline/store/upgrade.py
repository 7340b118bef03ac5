"""``multiplexer store upgrade``: bring a store of an older format to the current one (format 4).

- Format 2 -> 3: attributes only (the content hash leaves out the sample counts, so the store can
  grow; it gets a ``history``), in place, in seconds.
- Format 3 -> 4: the targets are rewritten without their reference-base rows
  (:mod:`pipeline.store.layout`). The converted store is built beside the old one, in the hidden sibling
  ``.NAME.upgrading``, unit by unit through the ordinary writer (:meth:`~pipeline.store.Store.write_unit`:
  chunk checksums, sample digests, completion markers), reading every unit of the old store through its
  checks; a unit whose targets are not 0 at a reference base or ``N`` column is refused (nothing would be
  kept of it). A rerun after a kill continues with the units not converted yet. When every unit is
  converted, the old store is renamed ``.NAME.format3`` and the new one takes its name (a rerun
  finishes a swap cut short between the two renames), then the old one is removed. The root attributes
  are the old ones with ``format_version`` 4 and a ``history`` entry, sealed with their digest
  (:mod:`pipeline.store.meta_digest`); the content hash is unchanged, so checkpoints trained on the
  store still resume on it. Needs a local store and room for the converted copy (about 0.8 of the old).
- A store written before metadata digests gets one (run ``store verify`` first: what is there now is
  sealed).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline import __version__
from pipeline.core.files import fsync_folder
from pipeline.errors import UserError
from pipeline.store.format import FORMAT_VERSION
from pipeline.store.layout import dropped_nonzero
from pipeline.store.meta_digest import seal, update_attrs, write_meta_digest
from pipeline.store.store import (
    Store,
    active_writers,
    build_empty_store,
    create_atomically,
    is_url,
    open_store,
)

UPGRADING = ".upgrading"
"""Suffix of the hidden sibling a format-3 store is converted into: ``.NAME.upgrading``."""
SET_ASIDE = ".format3"
"""Suffix of the hidden sibling the old store is renamed to while the converted one takes its name."""


def upgrade_store(path: str | os.PathLike[str], *, progress: bool = False) -> str:
    """Upgrade the store at ``path`` to format 4 (see the module docstring); returns what was done.

    Raises
    ------
    UserError
        Format 1 (no checksums: distill it again); a format-3 store behind a URL, or one being written;
        a unit that cannot be read or whose targets are not 0 where format 4 stores nothing.
    """
    path = str(path)
    finished = "" if is_url(path) else _finish_swap(Path(path))
    store = open_store(path, mode="r+")
    version = store.meta.format_version
    if version < 2:
        raise UserError(
            f"store {path!r} has format {version} (no checksums): it can be read, not upgraded; distill it again"
        )
    done = [finished] if finished else []
    if version == 2:
        spec = store.spec()
        history: list[Any] = [{"when": store.meta.created, "samples": {n: s.samples for n, s in spec.splits.items()},
                               "package_version": store.meta.package_version, "note": "format 2"}]  # fmt: skip
        changes = {"format_version": 3, "spec_hash": spec.store_hash(), "history": history}
        update_attrs(store.group, changes, "store", store.path)
        done.append("from format 2 to 3: it can grow (more samples, new splits)")
        store = open_store(path, mode="r+")
    groups = [store.group, *(store.split_group(split) for split in store.splits)]
    sealed = sum(seal(group) for group in groups)
    if sealed:
        done.append(f"added a metadata digest to {sealed} groups' attributes")
    if store.meta.format_version == 3:
        done.append(_convert(store, progress))
    if not done:
        return f"store {path} is already format {FORMAT_VERSION} with a metadata digest"
    return f"upgraded store {path}: " + "; ".join(done)


def _siblings(path: Path) -> tuple[Path, Path]:
    """The converted store being built, and where the old store is set aside during the swap."""
    return path.with_name(f".{path.name}{UPGRADING}"), path.with_name(f".{path.name}{SET_ASIDE}")


def _finish_swap(path: Path) -> str:
    """Finish a conversion whose swap was cut short: the converted store takes the store's name (when
    the old one was already set aside), and a set-aside old store is removed. Returns what was done."""
    new, old = _siblings(path)
    if not path.exists() and new.is_dir() and old.is_dir():
        os.rename(new, path)
        fsync_folder(path.parent)
    if path.exists() and old.is_dir() and not new.exists():
        shutil.rmtree(old)
        return "finished a conversion cut short"
    return ""


def _convert(store: Store, progress: bool) -> str:
    """Convert a format-3 store to format 4 beside it, then swap them (see the module docstring)."""
    path = Path(store.path)
    if is_url(store.path):
        raise UserError(
            f"store {store.path!r} has format 3: upgrading rewrites its targets and needs a local store; copy it to "
            "a local disk, upgrade it there and copy it back (format 3 stores are read as they are)"
        )
    busy = active_writers(path)
    if busy:
        raise UserError(f"store {store.path!r} is being written by {busy[0]}; upgrade it when that has finished")
    new_path, old_path = _siblings(path)
    new = _open_converted(store, new_path)
    units = 0
    for split in store.splits:
        units += _convert_split(store, new, split, progress)
    os.rename(path, old_path)
    os.rename(new_path, path)
    fsync_folder(path.parent)
    shutil.rmtree(old_path)
    return f"from format 3 to {FORMAT_VERSION}: {units} units rewritten without the reference-base rows"


def _open_converted(store: Store, new_path: Path) -> Store:
    """The format-4 copy being built (created with the old root attributes, format 4 and a history
    entry; a copy left by a killed run is reopened when it is this store's)."""
    if new_path.exists():
        new = open_store(str(new_path), mode="r+")
        if new.spec_hash != store.spec_hash or new.meta.format_version != FORMAT_VERSION:
            raise UserError(
                f"{str(new_path)!r} is not a conversion of store {store.path!r}; remove it, then upgrade again"
            )
        return new
    attrs = {k: v for k, v in store.group.attrs.items() if k != "meta_digest"}
    history: list[Any] = [dict(h) for h in store.meta.history]
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    samples = {split: store.split_meta(split).n_samples for split in store.splits}
    history.append({"when": now, "samples": samples, "package_version": __version__, "note": "upgraded from format 3"})
    attrs.update({"format_version": FORMAT_VERSION, "history": history})
    spec = store.spec()
    create_atomically(new_path, lambda tmp: build_empty_store(tmp, spec, store.n_targets, write_meta_digest(attrs)))
    return open_store(str(new_path), mode="r+")


def _convert_split(store: Store, new: Store, split: str, progress: bool) -> int:
    """Copy every complete unit of ``split`` not converted yet, checked, into ``new``; returns how many."""
    complete = store.complete_units(split)
    done = new.complete_units(split)
    todo = [u for u in np.flatnonzero(complete & ~done).tolist()]
    where = store.sample_name(split)
    for u in tqdm(todo, desc=f"upgrade {split}", unit="unit", disable=not progress):
        a, b = store.unit_range(split, u)
        X = store.read(split, "reference", a, b)
        y = store.read_targets(split, a, b)
        bad = dropped_nonzero(y, X)
        if bad is not None:
            raise UserError(
                f"{where(a + bad)}: targets are not 0 at a reference base or N column, where format 4 stores "
                f"nothing; the store is damaged (`multiplexer store verify {store.path}`)"
            )
        new.write_unit(
            split,
            u,
            reference=X,
            ref_pred=store.read(split, "ref_pred", a, b),
            targets=y,
            chrom=[str(c) for c in store.read(split, "chrom", a, b)],
            center=store.read(split, "center", a, b),
        )
    return len(todo)
