"""Summaries and integrity checks of a store: ``multiplexer store info`` and ``store verify``."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.core.identity import weights_label
from pipeline.core.progress import Bar, plural, progress_bar
from pipeline.errors import MetadataError, UserError
from pipeline.store.chunks import BLOCK_UNITS, CHECKED, first_missing_chunk, stored_bytes
from pipeline.store.digests import DIGESTED, first_mismatch, read_targets, split_markers, unreadable
from pipeline.store.format import SplitMeta, group_array, group_node, int_attr
from pipeline.store.meta_digest import DAMAGED_METADATA, meta_digest_problems
from pipeline.store.store import Store, active_writers, bulk_reads, is_url, open_store, read_markers

VERIFY_BATCH_BYTES = 64_000_000
"""Target bytes (raw) read at once by ``verify``: whole units, as many as fit, so a store of many small
units is read in few large requests and memory stays bounded for large units."""


DAMAGED_MARKER = "its completion marker cannot be read (a damaged chunk)"
"""How ``verify`` names a unit whose marker is damaged; ``--unmark-damaged`` clears such a marker."""

VERIFY_WORKERS = 8
"""Most processes ``verify`` reads a local store's data with (zarr spends ~0.2 ms of one core per chunk)."""


def store_info(store: Store) -> dict[str, Any]:
    """Summary: spec, hash, base model, per split counts, completion and bytes per sample."""
    F, L = store.n_targets, store.seq_len
    raw = F * 4 * L * 4
    rows = store.rows
    splits = {}
    for split in store.splits:
        info = store.split_info(split)
        targets = store.array(split, "targets")
        stored = stored_bytes(targets)
        complete = store.complete_units(split)
        done = int(sum(stop - start for u, start, stop in store.iter_units(split) if complete[u]))
        splits[split] = {
            "n_samples": info.n_samples,
            "n_units": info.n_units,
            "complete_units": info.n_complete,
            "complete_samples": done,
            "targets_dtype": str(targets.dtype),
            "stored_rows": rows,
            "decoded_bytes_per_sample": F * rows * L * targets.dtype.itemsize,
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
        "genome_fingerprint": dict(meta.genome_fingerprint) if meta.genome_fingerprint is not None else None,
        "package_version": meta.package_version,
        "created": meta.created,
        "splits": splits,
    }


def _genome_summary(fingerprint: dict[str, Any] | None) -> str:
    if fingerprint is None:
        return " (no fingerprint: made before they were recorded)"
    return (
        f" ({plural(fingerprint['n_contigs'], 'contig')}, {fingerprint['total_length']:,} bp, "
        f"layout {fingerprint['layout_sha256'][:12]}, sequence sample {fingerprint['sequence_sha256'][:12]})"
    )


def format_info(info: dict[str, Any]) -> str:
    """:func:`store_info` as the lines ``multiplexer store info`` prints."""
    base = info["base"]
    lines = [
        f"store      {info['path']}",
        f"spec       {info['name']} (hash {info['spec_hash'][:16]})",
        f"window     L = {info['seq_len']}, F = {info['n_targets']} targets, {info['target_kind']}, "
        f"alphabet {info['alphabet']}",
        f"base       {base['model']} ({base['class']}), weights {weights_label(base)}",
        f"genome     {info['genome']}{_genome_summary(info.get('genome_fingerprint'))}",
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
        if bps and sp.get("stored_rows") == 3:
            size += f", {sp['decoded_bytes_per_sample'] / 1e6:.3f} MB decoded (reference-base rows not stored)"
        lines.append(
            f"{name:<10} {sp['complete_samples']}/{sp['n_samples']} samples, units {sp['complete_units']}/"
            f"{sp['n_units']} complete, {sp['targets_dtype']}: {size}"
        )
    return "\n".join(lines)


def metadata_problems(store: Store) -> list[str]:
    """Every attribute of the root and the split groups that does not match its digest, by name
    (``"test/zarr.json: attribute 'n_samples' does not match its digest"``; ``[]`` for a store without
    digests: see :func:`~pipeline.store.meta_digest.unsealed_note`)."""
    out = [f"zarr.json: {p}" for p in meta_digest_problems(dict(store.group.attrs))]
    for split in store.splits:
        if split in store.group:
            group = group_node(store.group, split, zarr.Group, "split group")
            out += [f"{split}/zarr.json: {p}" for p in meta_digest_problems(dict(group.attrs))]
    return out


def verify_store(store: Store, *, progress: bool = False, workers: int | None = None) -> list[str]:
    """Full integrity check; returns the problems found (empty when the store is sound).

    Checks first that every attribute matches its digest (:func:`metadata_problems`; open the store
    with ``check=False`` to get them by name rather than as the opening's error), then the attributes
    against the arrays' shapes, that every unit is complete, that no chunk of a
    unit is missing, that every chunk's checksum and every sample's digest match
    (:mod:`pipeline.store.digests`), that targets and reference predictions are finite, that references are one-hot
    (or all-zero ``N``) columns, and that targets are exactly 0 at every reference base and at every
    ``N`` column. Stops at the first offending unit of each split.

    Parameters
    ----------
    store : Store
        The store.
    progress : bool
        Show a progress bar per split.
    workers : int, optional
        Processes that read and check the data of a local store, each a part of the units (default:
        the CPU count, at most :data:`VERIFY_WORKERS`; ``1``: this process only). Stores behind URLs
        are read by this process.
    """
    problems = metadata_problems(store)
    if problems:  # the attributes say what the data are: check nothing against damaged ones
        return problems
    F = store.n_targets
    if len(store.target_names) != F:
        problems.append(f"{len(store.target_names)} target names but n_targets = {F}")
    n_workers = workers if workers is not None else min(os.cpu_count() or 1, VERIFY_WORKERS)
    with _Readers(store, n_workers) as readers:
        for split in store.splits:
            problem = _check_shapes(store, split)
            if problem is None:
                problem, digests = _check_complete(store, split, readers)
            if problem is None:
                problem = _check_units(store, split, progress, readers, digests)
            if problem:
                problems.append(f"{split}: {problem}")
    return problems


class _Readers:
    """Where ``verify`` reads: worker processes for a local store (forked, so they inherit the opened
    modules; zarr resets its event loop in a child), else this process."""

    def __init__(self, store: Store, workers: int) -> None:
        self.store, self.workers = store, workers
        self.parallel = workers > 1 and not is_url(store.path) and "fork" in multiprocessing.get_all_start_methods()
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Readers:
        if self.parallel:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)  # after a problem, the batches not started are dropped

    def ranges(self, n_units: int, per_batch: int) -> list[tuple[int, int]]:
        """Unit ranges of at most ``per_batch`` units; with workers, a few per worker (so the work is
        shared out evenly and progress moves)."""
        if self.pool is not None:
            per_batch = max(1, min(per_batch, -(-n_units // (4 * self.workers))))
        return [(u, min(u + per_batch, n_units)) for u in range(0, n_units, per_batch)]


def _check_shapes(store: Store, split: str) -> str | None:
    """The first array of ``split`` that is missing or has a shape its attributes do not say."""
    g = store.split_group(split)
    n, F, L = int_attr(g, "n_samples"), store.n_targets, store.seq_len
    shapes = {
        "reference": (n, 4, L),
        "ref_pred": (n, F),
        "targets": (n, F, store.rows, L),
        "chrom": (n,),
        "center": (n,),
        "complete": (int_attr(g, "n_units"),),
    }
    if store.meta.format_version > 1:
        shapes["complete"] = (int_attr(g, "n_units"), int(store.array(split, "complete").shape[1]))
    for name, shape in shapes.items():
        node = group_array(g, name)  # missing or damaged metadata: a UserError naming the file
        if tuple(node.shape) != shape:
            return f"array {name!r} has shape {tuple(node.shape)}, expected {shape}"
    return None


def _check_complete(store: Store, split: str, readers: _Readers) -> tuple[str | None, np.ndarray | None]:
    """The first unit whose completion marker cannot be read, else the first incomplete unit (the
    markers read by the workers when there are several ranges), and the samples' digests read with the
    markers."""
    meta = store.split_meta(split)
    ranges = readers.ranges(meta.n_units, BLOCK_UNITS)
    if readers.pool is not None and len(ranges) > 1:
        parts = list(readers.pool.map(_read_markers_range, [(store.path, split, r) for r in ranges]))
        rows = np.concatenate([part for part, _ in parts])
        damaged = [u for _, units in parts for u in units]
        complete, digests = split_markers(rows, meta.n_samples, meta.unit_samples)
    else:
        complete, digests = store.complete_units(split), store.digests(split)
        damaged = store.damaged_markers(split)
    if damaged:
        more = f" ({len(damaged)} damaged markers)" if len(damaged) > 1 else ""
        return f"unit {damaged[0]}: {DAMAGED_MARKER}{more}", digests
    if complete.all():
        return None, digests
    first, missing = int(np.flatnonzero(~complete)[0]), int((~complete).sum())
    return f"unit {first} is not complete ({missing} of {complete.size} incomplete)", digests


def _check_units(store: Store, split: str, progress: bool, readers: _Readers, digests: np.ndarray | None) -> str | None:
    """The first unit with a missing chunk (one existence pass for all units), then the first whose
    data break a convention (ranges of units, read by this process or by the workers)."""
    meta = store.split_meta(split)
    found = first_missing_chunk({name: store.array(split, name) for name in CHECKED}, meta.units())
    if found is not None:
        u, start, stop, missing = found
        return f"unit {u} (samples {start}-{stop - 1}): {missing}"
    unit_bytes = meta.unit_samples * store.target_chunks(split).sample_bytes
    batches = readers.ranges(meta.n_units, max(1, min(BLOCK_UNITS, VERIFY_BATCH_BYTES // max(unit_bytes, 1))))
    sizes = [meta.unit_range(stop - 1)[1] - meta.unit_range(first)[0] for first, stop in batches]  # samples
    with progress_bar(desc=f"verify {split}", unit="sample", total=meta.n_samples, enabled=progress) as bar:
        jobs = [(store.path, split, batch, _batch_digests(digests, meta, batch)) for batch in batches]
        if readers.pool is not None and len(batches) > 1:
            return _first_problem(readers.pool.map(_check_path_batch, jobs), sizes, bar)
        return _first_problem((_check_batch(store, split, job[2], job[3]) for job in jobs), sizes, bar)


def _batch_digests(digests: np.ndarray | None, meta: SplitMeta, batch: tuple[int, int]) -> np.ndarray | None:
    """The digests of the samples of units ``batch[0] .. batch[1] - 1``."""
    if digests is None:
        return None
    return digests[meta.unit_range(batch[0])[0] : meta.unit_range(batch[1] - 1)[1]]


def _first_problem(results: Iterable[str | None], sizes: list[int], bar: Bar) -> str | None:
    """The first problem of the batches' results, in unit order (advancing the progress bar by each
    batch's samples)."""
    for size, problem in zip(sizes, results):
        if problem:
            return problem
        bar.update(size)
    return None


def _read_markers_range(job: tuple[str, str, tuple[int, int]]) -> tuple[np.ndarray, list[int]]:
    """The completion markers' rows of units ``job[2][0] .. job[2][1] - 1``, and those of them whose
    marker cannot be read, in a worker process."""
    path, split, (first, stop) = job
    return read_markers(open_store(path).array(split, "complete"), first, stop)


def _check_path_batch(job: tuple[str, str, tuple[int, int], np.ndarray | None]) -> str | None:
    """:func:`_check_batch` in a worker process: the store opened from its path."""
    path, split, batch, digests = job
    return _check_batch(open_store(path), split, batch, digests)


def _check_batch(store: Store, split: str, batch: tuple[int, int], digests: np.ndarray | None) -> str | None:
    """Read the samples of the units ``batch[0] .. batch[1] - 1`` at once and check each unit's part
    (and each sample against its digests, when the store has them). The targets are read as stored,
    from their chunks, checked against their checksums as they are decoded."""
    meta = store.split_meta(split)
    units = [(u, *meta.unit_range(u)) for u in range(*batch)]
    first, last = units[0][1], units[-1][2]

    def where(k: int) -> str:
        return f"unit {k // meta.unit_samples} sample {k}"

    data = {}
    for name in DIGESTED:
        if name == "targets":
            continue
        array = store.array(split, name)
        try:
            with bulk_reads():
                data[name] = np.asarray(array[first:last])
        except Exception:  # noqa: BLE001 - a damaged chunk: name the first one
            return unreadable(array, name, first, last, where)
    chunks = store.target_chunks(split)
    data["targets"] = np.empty((last - first, *chunks.shape[1:]), dtype=chunks.dtype)
    expected_targets = None if digests is None else digests[:, DIGESTED.index("targets")]
    try:
        read_targets(chunks, [(first, last)], data["targets"], expected_targets, store.meta.format_version, where)
    except UserError as exc:  # names the unit and sample (``where``)
        return str(exc)
    for u, start, stop in units:
        part = {name: values[start - first : stop - first] for name, values in data.items()}
        expected = None if digests is None else digests[start - first : stop - first]
        problem = _digest_problem(part, expected, start) or _check_unit(
            part["reference"], part["targets"], part["ref_pred"], part["center"]
        )
        if problem:
            return f"unit {u} (samples {start}-{stop - 1}): {problem}"
    return None


def _digest_problem(part: dict[str, np.ndarray], expected: np.ndarray | None, start: int) -> str | None:
    """The first array and sample of a unit whose bytes do not match their digest (the targets are
    checked as they are read, :func:`~pipeline.store.digests.read_targets`)."""
    if expected is None:
        return None
    for k, name in enumerate(DIGESTED):
        if name == "targets":
            continue
        bad = first_mismatch(part[name], expected[:, k])
        if bad is not None:
            return (
                f"sample {start + bad}: {name} does not match its checksum (a damaged chunk file, or one "
                "swapped with another sample's)"
            )
    return None


def _check_unit(X: np.ndarray, y: np.ndarray, ref_pred: np.ndarray, center: np.ndarray) -> str | None:
    """The first convention one unit's data break (``None`` when they keep all of them). ``y`` as
    stored: ``[n, F, 4, L]`` (formats 1-3), or ``[n, F, 3, L]`` (format 4, whose reference-base entries
    are not stored)."""
    if X.max(initial=0) > 1 or (X.sum(axis=1) > 1).any():
        return "reference is not one-hot"
    if not np.isfinite(y).all():
        return "targets contain NaN or infinity"
    if not (np.isfinite(ref_pred).all() and (ref_pred >= 0).all() and (ref_pred <= 1).all()):
        return "ref_pred is not a probability"
    if y.shape[2] == 4:
        at_ref = np.broadcast_to(X[:, None].astype(bool), y.shape)
        if (y[at_ref] != 0).any():
            return "targets are not exactly 0 at reference bases"
    n_cols = np.broadcast_to((X.sum(axis=1) == 0)[:, None, None, :], y.shape)
    if (y[n_cols] != 0).any():
        return "targets are not exactly 0 at N positions"
    if (center < 1).any():
        return "center is not a 1-based position (missing data?)"
    return None


def damaged_units(store: Store, split: str, *, progress: bool = False) -> list[tuple[int, str]]:
    """Every unit of ``split`` whose completion marker cannot be read, and every complete unit with a
    missing, unreadable or mismatching chunk, or data that break a convention: ``(unit, problem)``
    pairs (one unit at a time, in this process)."""
    meta = store.split_meta(split)
    complete, digests = store.complete_units(split), store.digests(split)
    checked = {name: store.array(split, name) for name in CHECKED}
    out = [(u, DAMAGED_MARKER) for u in store.damaged_markers(split)]
    units = np.flatnonzero(complete).tolist()
    total = sum(b - a for a, b in map(meta.unit_range, units))
    with progress_bar(desc=f"check {split}", unit="sample", total=total, enabled=progress) as bar:
        for u in units:
            start, stop = meta.unit_range(u)
            missing = first_missing_chunk(checked, [(u, start, stop)])
            problem = (
                missing[3]
                if missing is not None
                else _check_batch(store, split, (u, u + 1), _batch_digests(digests, meta, (u, u + 1)))
            )
            if problem:
                out.append((u, problem))
            bar.update(stop - start)
    return out


def unmark_damaged(store: Store, *, progress: bool = False) -> dict[str, list[int]]:
    """``store verify --unmark-damaged``: clear the completion markers of every damaged unit
    (:func:`damaged_units`), so a rerun of ``distill`` recomputes exactly those; returns them by split.

    Raises
    ------
    UserError
        When another process is writing the store (its lease is live).
    """
    busy = active_writers(Path(store.path)) if not is_url(store.path) else []
    if busy:
        raise UserError(f"store {store.path!r} is being written by {busy[0]}; stop it before repairing the store")
    out = {}
    for split in store.splits:
        units = sorted(u for u, _ in damaged_units(store, split, progress=progress))
        markers = store.array(split, "complete")
        for u in units:
            markers[u] = np.zeros(markers.shape[1:], dtype=markers.dtype)
        out[split] = units
    store.refresh()
    return out


def require_sound(store: Store, *, progress: bool = False) -> None:
    """Raise a :class:`UserError` naming the first problem :func:`verify_store` finds (and how many);
    a :class:`~pipeline.errors.MetadataError` naming every attribute that does not match its digest."""
    named = metadata_problems(store)
    if named:
        raise MetadataError(f"store {store.path!r} failed verification: {'; '.join(named)}; {DAMAGED_METADATA}")
    problems = verify_store(store, progress=progress)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"store {store.path!r} failed verification: {problems[0]}{more}")
