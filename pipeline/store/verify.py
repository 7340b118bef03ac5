"""Summaries and integrity checks of a store: ``multiplexer store info`` and ``store verify``."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.store.chunks import missing_chunks
from pipeline.store.format import group_array, int_attr
from pipeline.store.store import Store


def store_info(store: Store) -> dict[str, Any]:
    """Summary: spec, hash, base model, per split counts, completion and bytes per sample."""
    F, L = store.n_targets, store.seq_len
    raw = F * 4 * L * 4
    splits = {}
    for split in store.splits:
        info = store.split_info(split)
        targets = store.array(split, "targets")
        stored = int(targets.nbytes_stored())
        complete = store.complete_units(split)
        done = int(sum(stop - start for u, start, stop in store.iter_units(split) if complete[u]))
        splits[split] = {
            "n_samples": info.n_samples,
            "n_units": info.n_units,
            "complete_units": info.n_complete,
            "complete_samples": done,
            "targets_dtype": str(targets.dtype),
            "target_bytes_stored": stored,
            "bytes_per_sample": stored / done if done else None,
            "raw_float32_bytes_per_sample": raw,
            "compression_vs_float32": (raw * done / stored) if done and stored else None,
        }
    meta = store.meta
    return {
        "path": store.path,
        "name": meta.name,
        "spec_hash": meta.spec_hash,
        "format_version": meta.format_version,
        "seq_len": L,
        "n_targets": F,
        "target_kind": meta.target_kind,
        "alphabet": meta.alphabet,
        "base": dict(meta.base),
        "genome": meta.genome,
        "package_version": meta.package_version,
        "created": meta.created,
        "splits": splits,
    }


def format_info(info: dict[str, Any]) -> str:
    """:func:`store_info` as the lines ``multiplexer store info`` prints."""
    base = info["base"]
    lines = [
        f"store      {info['path']}",
        f"spec       {info['name']} (hash {info['spec_hash'][:16]})",
        f"window     L = {info['seq_len']}, F = {info['n_targets']} targets, {info['target_kind']}, "
        f"alphabet {info['alphabet']}",
        f"base       {base['model']} ({base['class']}), weights {base['weights'] or 'built in'}",
        f"genome     {info['genome']}",
        f"version    format {info['format_version']}, package {info['package_version']}, created {info['created']}",
    ]
    for name, sp in info["splits"].items():
        bps = sp["bytes_per_sample"]
        size = (
            f"{bps / 1e6:.3f} MB/sample vs {sp['raw_float32_bytes_per_sample'] / 1e6:.3f} MB raw float32 "
            f"({sp['compression_vs_float32']:.1f}x)"
            if bps
            else "no complete samples yet"
        )
        lines.append(
            f"{name:<10} {sp['complete_samples']}/{sp['n_samples']} samples, units {sp['complete_units']}/"
            f"{sp['n_units']} complete, {sp['targets_dtype']}: {size}"
        )
    return "\n".join(lines)


def verify_store(store: Store, *, progress: bool = False) -> list[str]:
    """Full integrity check; returns the problems found (empty when the store is sound).

    Checks the attributes against the arrays' shapes, that every unit is complete, that targets and
    reference predictions are finite, that references are one-hot (or all-zero ``N``) columns, and
    that targets are exactly 0 at every reference base and at every ``N`` column. Stops at the first
    offending unit of each split.
    """
    problems: list[str] = []
    F = store.n_targets
    if len(store.target_names) != F:
        problems.append(f"{len(store.target_names)} target names but n_targets = {F}")
    for split in store.splits:
        problem = _check_shapes(store, split) or _check_complete(store, split) or _check_units(store, split, progress)
        if problem:
            problems.append(f"{split}: {problem}")
    return problems


def _check_shapes(store: Store, split: str) -> str | None:
    """The first array of ``split`` that is missing or has a shape its attributes do not say."""
    g = store.split_group(split)
    n, F, L = int_attr(g, "n_samples"), store.n_targets, store.seq_len
    shapes = {
        "reference": (n, 4, L),
        "ref_pred": (n, F),
        "targets": (n, F, 4, L),
        "chrom": (n,),
        "center": (n,),
        "complete": (int_attr(g, "n_units"),),
    }
    for name, shape in shapes.items():
        node = g.get(name)
        if not isinstance(node, zarr.Array):
            return f"array {name!r} is missing"
        if tuple(node.shape) != shape:
            return f"array {name!r} has shape {tuple(node.shape)}, expected {shape}"
    return None


def _check_complete(store: Store, split: str) -> str | None:
    complete = store.complete_units(split)
    if complete.all():
        return None
    first, missing = int(np.flatnonzero(~complete)[0]), int((~complete).sum())
    return f"unit {first} is not complete ({missing} of {complete.size} incomplete)"


def _check_units(store: Store, split: str, progress: bool) -> str | None:
    """The first unit with a missing chunk or data that breaks a convention."""
    g = store.split_group(split)
    units = list(store.iter_units(split))
    for u, start, stop in tqdm(units, desc=f"verify {split}", disable=not progress, unit="unit"):
        problem = _missing_chunk(g, u, start, stop) or _check_unit(g, start, stop)
        if problem:
            return f"unit {u} (samples {start}-{stop - 1}): {problem}"
    return None


def _missing_chunk(g: zarr.Group, unit: int, start: int, stop: int) -> str | None:
    found = missing_chunks(g, [(unit, start, stop)])
    return None if found is None else found[3]


def _check_unit(g: zarr.Group, start: int, stop: int) -> str | None:
    try:
        X = np.asarray(group_array(g, "reference")[start:stop])
        y = np.asarray(group_array(g, "targets")[start:stop])
        ref_pred = np.asarray(group_array(g, "ref_pred")[start:stop])
        center = np.asarray(group_array(g, "center")[start:stop])
    except Exception as exc:  # a deleted or corrupt chunk
        return f"cannot read: {type(exc).__name__}: {exc}"
    if X.max(initial=0) > 1 or (X.sum(axis=1) > 1).any():
        return "reference is not one-hot"
    if not np.isfinite(y).all():
        return "targets contain NaN or infinity"
    if not (np.isfinite(ref_pred).all() and (ref_pred >= 0).all() and (ref_pred <= 1).all()):
        return "ref_pred is not a probability"
    at_ref = np.broadcast_to(X[:, None].astype(bool), y.shape)
    if (y[at_ref] != 0).any():
        return "targets are not exactly 0 at reference bases"
    n_cols = np.broadcast_to((X.sum(axis=1) == 0)[:, None, None, :], y.shape)
    if (y[n_cols] != 0).any():
        return "targets are not exactly 0 at N positions"
    if (center < 1).any():
        return "center is not a 1-based position (missing data?)"
    return None


def require_sound(store: Store, *, progress: bool = False) -> None:
    """Raise a :class:`UserError` naming the first problem :func:`verify_store` finds (and how many)."""
    problems = verify_store(store, progress=progress)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"store {store.path!r} failed verification: {problems[0]}{more}")
