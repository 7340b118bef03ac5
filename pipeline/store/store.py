"""The Zarr store: the contract between ``distill`` (writer) and ``train``/``evaluate`` (readers).

:func:`create_or_open_store` creates a spec's store (atomically, for local paths) or reopens it to
resume, refusing one made from another spec or base model (:class:`~pipeline.errors.StoreMismatchError`);
:func:`open_store` opens an existing one for reading. A unit's completion marker is set only after
all its arrays are written, so a crash leaves it unmarked and a rerun redoes it. The layout is in
:mod:`pipeline.store.format`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import fsspec
import numpy as np
import torch
import zarr
import zarr.codecs as zc
from zarr.core.array_spec import ArrayConfigParams

from pipeline.core.deprecation import moved_names
from pipeline.core.files import fsync_folder, fsync_path, process_alive
from pipeline.core.genome import fingerprint_difference
from pipeline.core.identity import code_change, identity_hash, without_paths
from pipeline.core.quantize import bitround
from pipeline.core.spec import NON_CONTENT_KEYS, Spec, differing_keys, spec_from_dict
from pipeline.core.urls import is_url
from pipeline.errors import StoreMismatchError, StoreNotFoundError, UserError
from pipeline.store.chunkio import TargetChunks, TargetWriter
from pipeline.store.chunks import BLOCK_UNITS, CHECKED, first_missing_chunk
from pipeline.store.digests import DIGESTED, Where, marker_row, read_checked, read_targets, split_markers
from pipeline.store.format import (
    DIMENSIONS,
    FORMAT,
    FORMAT_VERSION,
    SplitMeta,
    StoreMeta,
    compressors,
    group_array,
    group_node,
    history_entry,
    marker_width,
    n_units,
    numcodecs_quiet,
    root_attrs,
    target_chunks,
    target_codec,
)
from pipeline.store.layout import STORED_ROWS, compact_targets, expand_targets
from pipeline.store.meta_digest import (
    check_meta_digest,
    checked_attrs,
    group_label,
    update_attrs,
    write_meta_digest,
)
from pipeline.store.writes import run_settled, sync_written

Mode = Literal["r", "r+", "a", "w", "w-"]


def open_group(path: str, mode: Mode) -> zarr.Group:
    """``zarr.open_group`` for a local path or an fsspec URL (``file://`` URLs create folders)."""
    options = {"auto_mkdir": True} if path.startswith("file://") else None
    if is_url(path):
        return zarr.open_group(path, mode=mode, storage_options=options)
    return zarr.open_group(path, mode=mode)


@dataclass
class SplitInfo:
    """Counts of one split."""

    name: str
    n_samples: int
    unit_samples: int
    n_units: int
    n_complete: int


BULK_READS = {"async.concurrency": 128, "codec_pipeline.batch_size": 4096}
"""zarr settings while reading many small chunks at once (completion markers, ``verify``): more
requests in flight and larger decode batches than zarr's defaults; about 30 % faster on a store of
4,000 one-sample units (``make bench-scale``)."""


@contextmanager
def bulk_reads() -> Iterator[None]:
    """:data:`BULK_READS` for the block; zarr's settings are restored afterwards."""
    with zarr.config.set(BULK_READS):
        yield


class Store:
    """An open multiplexer store. Use :func:`open_store` or :func:`create_or_open_store`.

    Everything a command needs is read once: the root attributes at opening (:attr:`meta`), each
    split's attributes and array handles when first used, and each split's completion markers when
    first asked for (one read per write unit, never again: the units this object writes are marked
    in the cached copy too; :meth:`refresh` reads them again, for units other processes wrote).

    Attributes
    ----------
    group : zarr.Group
        The root group.
    path : str
        Where the store lives.
    meta : StoreMeta
        The root attributes.
    """

    def __init__(self, group: zarr.Group, path: str, *, check: bool = True) -> None:
        self.group, self.path, self.check = group, path, check
        attrs = checked_attrs(group, "store", path, check=check)
        try:
            self.meta = StoreMeta.from_attrs(attrs, path)
        except UserError:  # unreadable attributes: a damaged one (named by its digest) explains it best
            check_meta_digest(attrs, group_label(group, "store", path))
            raise
        self._lock = threading.Lock()  # distill's writer threads share the caches
        self._groups: dict[str, zarr.Group] = {}
        self._split_meta: dict[str, SplitMeta] = {}
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        self._complete: dict[str, np.ndarray] = {}
        self._digests: dict[str, np.ndarray | None] = {}
        self._damaged: dict[str, set[int]] = {}
        self._chunks: dict[tuple[str, str], TargetChunks] = {}
        self.lease: Path | None = None
        """This process's writer lease (:func:`writer_lease`), renewed by every unit written."""

    # -- attributes ------------------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        """``L``."""
        return self.meta.seq_len

    @property
    def n_targets(self) -> int:
        """``F``."""
        return self.meta.n_targets

    @property
    def target_names(self) -> list[str]:
        """``F`` target names."""
        return list(self.meta.target_names)

    @property
    def target_kind(self) -> str:
        """``logfold`` or ``diff``."""
        return self.meta.target_kind

    @property
    def spec_hash(self) -> str:
        """Content hash of the spec the store was made from."""
        return self.meta.spec_hash

    @property
    def splits(self) -> list[str]:
        """The store's splits (``train``, ``valid``, ``test`` order)."""
        return self.meta.splits

    @property
    def rows(self) -> int:
        """Rows per position of the stored targets: 3 (format 4: the alternatives,
        :mod:`pipeline.store.layout`), or 4 (formats 1-3: every base)."""
        return STORED_ROWS[4 if self.meta.format_version >= 4 else 3]

    def spec(self) -> Spec:
        """The spec the store was made from (relative paths resolve against the spec's folder)."""
        return spec_from_dict(self.meta.spec, base_dir=self.meta.spec_dir)

    # -- splits and units ------------------------------------------------------------------
    def split_group(self, split: str) -> zarr.Group:
        """The group of a split (a :class:`UserError` naming the splits when it is not one)."""
        if split not in self.splits:
            raise UserError(f"store {self.path!r} has no split {split!r} (it has {', '.join(self.splits)})")
        if split not in self._groups:
            group = group_node(self.group, split, zarr.Group, "split group")
            checked_attrs(group, "store", self.path, check=self.check)
            self._groups[split] = group
        return self._groups[split]

    def split_meta(self, split: str) -> SplitMeta:
        """The split's attributes (read once)."""
        if split not in self._split_meta:
            self._split_meta[split] = SplitMeta.from_group(self.split_group(split), split)
        return self._split_meta[split]

    def array(self, split: str, name: str) -> zarr.Array:
        """Array ``name`` of a split (see :mod:`pipeline.store.format`); every chunk written through it
        is stored, even an all-zero one, so a missing chunk always means lost data."""
        key = (split, name)
        if key not in self._arrays:
            self._arrays[key] = group_array(self.split_group(split), name).with_config({"write_empty_chunks": True})
        return self._arrays[key]

    def complete_units(self, split: str) -> np.ndarray:
        """Boolean ``[n_units]``: which write units are complete (a copy of the cached markers)."""
        with self._lock:
            self._load_markers(split)
            return self._complete[split].copy()

    def digests(self, split: str) -> np.ndarray | None:
        """Each sample's digests, ``[n_samples, len(DIGESTED)]`` uint32 (0 for samples of incomplete
        units), read with the completion markers; ``None`` for a store without them (format 1, or
        ``storage.checksums: false``)."""
        with self._lock:
            self._load_markers(split)
            return self._digests[split]

    def damaged_markers(self, split: str) -> list[int]:
        """The units of ``split`` whose completion marker cannot be read (a damaged chunk, or one cut short
        by a kill while it was written): they count as incomplete, and ``distill`` recomputes them."""
        with self._lock:
            self._load_markers(split)
            return sorted(self._damaged[split])

    def _load_markers(self, split: str) -> None:
        if split not in self._complete:
            meta = self.split_meta(split)
            rows, damaged = read_markers(self.array(split, "complete"))
            self._complete[split], self._digests[split] = split_markers(rows, meta.n_samples, meta.unit_samples)
            self._damaged[split] = set(damaged)

    def sample_name(self, split: str) -> Where:
        """How messages name a sample of ``split``: ``"store X: split S unit U sample K"``."""
        unit_samples = self.split_meta(split).unit_samples
        return lambda k: f"store {self.path!r}: split {split!r} unit {k // unit_samples} sample {k}"

    def read(self, split: str, name: str, start: int, stop: int) -> np.ndarray:
        """Samples ``start .. stop - 1`` of an array, checked against their checksums
        (:func:`~pipeline.store.digests.read_checked`); a damaged one is a :class:`UserError`.
        ``targets`` come as ``[n, F, 4, L]`` whatever the format (format 4 stores are expanded,
        :func:`~pipeline.store.layout.expand_targets`; :meth:`read_targets` gives them as stored)."""
        if name == "targets":
            y = self.read_targets(split, start, stop)
            if self.rows == 4:
                return y
            X = self.read(split, "reference", start, stop)
            return expand_targets(torch.from_numpy(y), torch.from_numpy(X)).numpy()
        digests = self.digests(split) if name in DIGESTED else None
        expected = None if digests is None else digests[start:stop, DIGESTED.index(name)]
        return read_checked(self.array(split, name), name, start, stop, expected, self.sample_name(split))

    def target_chunks(self, split: str, name: str = "targets") -> TargetChunks:
        """The reader of a split's stored chunks of ``targets`` (or of ``reference``, also chunked by
        samples only); one per split and array, for reads in this thread."""
        if (split, name) not in self._chunks:
            self._chunks[(split, name)] = TargetChunks(self.array(split, name))
        return self._chunks[(split, name)]

    def read_targets(self, split: str, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples ``start .. stop - 1`` of ``targets`` as stored (``[n, F, rows, L]``, :attr:`rows`),
        decoded into ``out`` when given and checked against their checksums
        (:func:`~pipeline.store.digests.read_targets`)."""
        chunks = self.target_chunks(split)
        if out is None:
            out = np.empty((stop - start, *chunks.shape[1:]), dtype=chunks.dtype)
        digests = self.digests(split)
        expected = None if digests is None else digests[start:stop, DIGESTED.index("targets")]
        read_targets(chunks, [(start, stop)], out, expected, self.meta.format_version, self.sample_name(split))
        return out

    def refresh(self) -> None:
        """Forget the cached completion markers (other processes may have completed units since)."""
        with self._lock:
            self._complete.clear()
            self._digests.clear()
            self._damaged.clear()

    def reload(self) -> None:
        """Read the attributes again and forget every cache (after the store grew)."""
        self.meta = StoreMeta.from_attrs(checked_attrs(self.group, "store", self.path, check=self.check), self.path)
        with self._lock:
            self._groups.clear()
            self._split_meta.clear()
            self._arrays.clear()
            self._chunks.clear()
            self._complete.clear()
            self._digests.clear()
            self._damaged.clear()

    def split_info(self, split: str) -> SplitInfo:
        """Samples, unit size, units and complete units of a split."""
        m = self.split_meta(split)
        return SplitInfo(split, m.n_samples, m.unit_samples, m.n_units, int(self.complete_units(split).sum()))

    def unit_range(self, split: str, unit: int) -> tuple[int, int]:
        """Half-open sample range ``[start, stop)`` of a write unit."""
        return self.split_meta(split).unit_range(unit)

    def iter_units(self, split: str) -> Iterator[tuple[int, int, int]]:
        """``(unit, start, stop)`` for every unit of a split."""
        return self.split_meta(split).units()

    def write_unit(
        self,
        split: str,
        unit: int,
        *,
        reference: np.ndarray,
        ref_pred: np.ndarray,
        targets: np.ndarray,
        chrom: list[str],
        center: np.ndarray,
    ) -> None:
        """Write one whole unit, then mark it complete.

        Every chunk of the unit is written as its own write, and all of them are waited for before a
        failure (a full disk) is raised, so nothing of the unit is still being written when the
        caller hears of it; the marker is written only when all of them succeeded.

        Parameters
        ----------
        reference : np.ndarray, shape=(n, 4, L), uint8
        ref_pred : np.ndarray, shape=(n, F), float32
        targets : np.ndarray, shape=(n, F, 4, L) or (n, F, 3, L)
            Cast to the store's target dtype. All four bases (the reference-base and ``N`` entries, 0 by
            definition, are left out: :func:`~pipeline.store.layout.compact_targets`) or, already
            compact, the three alternatives of each position.
        chrom : list of str, length n
        center : np.ndarray, shape=(n,)
        """
        start, stop = self.unit_range(split, unit)
        n = stop - start
        F, L = self.n_targets, self.seq_len
        if self.rows == 3 and np.shape(targets)[2:3] == (4,):
            targets = compact_targets(
                torch.as_tensor(np.asarray(targets)), torch.as_tensor(np.asarray(reference))
            ).numpy()
        expected = {"reference": (n, 4, L), "ref_pred": (n, F), "targets": (n, F, self.rows, L), "center": (n,)}
        values = {"reference": reference, "ref_pred": ref_pred, "targets": targets, "center": center}
        for name, value in values.items():
            if tuple(np.shape(value)) != expected[name]:
                raise ValueError(
                    f"unit {unit} of {split}: {name} has shape {np.shape(value)}, expected {expected[name]}"
                )
        if len(chrom) != n:
            raise ValueError(f"unit {unit} of {split}: {len(chrom)} chromosome names for {n} samples")
        arrays = {name: self.array(split, name) for name in ("targets", "reference", "ref_pred", "chrom", "center")}
        quantize = str(self.meta.spec.get("storage", {}).get("quantize", "none"))
        data = {
            "targets": bitround(np.asarray(targets).astype(arrays["targets"].dtype, copy=False), quantize),
            "reference": np.asarray(reference, dtype=np.uint8),
            "ref_pred": np.asarray(ref_pred, dtype=np.float32),
            "chrom": np.asarray(chrom, dtype=object),
            "center": np.asarray(center, dtype=np.int64),
        }
        # format 4: the targets are encoded here, as zarr would, so their chunks' trailers are known
        writer = TargetWriter(arrays["targets"]) if self.meta.format_version >= 4 else None
        writes = [
            (arrays[name], slice(a, b), data[name][a - start : b - start])
            for name in arrays
            for a, b in _blocks(arrays[name], start, stop)
        ]
        zarr_writes: list[Callable[[], Any]] = [
            partial(a.__setitem__, rows, v) for a, rows, v in writes if writer is None or a is not arrays["targets"]
        ]
        encode = writer.encode_tasks(start, stop, data["targets"]) if writer is not None else []
        encoded = run_settled(zarr_writes + encode)[len(zarr_writes) :]
        if writer is not None:
            run_settled([partial(writer.put, key, blob) for key, blob in writer.files(encoded)])
        sync_written(writes)  # the data is on disk before the marker says it is there
        markers = self.array(split, "complete")
        if markers.ndim == 1 or markers.shape[1] == 1:  # no digests: storage.checksums off
            markers[unit] = 1
        else:
            row = marker_row(data, self.split_meta(split).unit_samples, skip=("targets",) if writer else ())
            if writer is not None:  # the targets' digests: of their chunks' trailers, as written
                k = 1 + DIGESTED.index("targets")
                row[k : k + n * len(DIGESTED) : len(DIGESTED)] = writer.digests(start, stop, encoded)
            markers[unit] = row
            with self._lock:
                cached = self._digests.get(split)
                if cached is not None:
                    cached[start:stop] = row[1:].reshape(-1, len(DIGESTED))[:n]
        with self._lock:
            if split in self._complete:
                self._complete[split][unit] = True
                self._damaged[split].discard(unit)
        if self.lease is not None:
            with contextlib.suppress(OSError):  # a lease is a courtesy to --overwrite, never a failure
                self.lease.touch()

    def require_complete(self, split: str, *, limit: int | None = None, chunks: bool = True) -> None:
        """Raise a :class:`UserError` unless every unit of ``split`` is complete and, with ``chunks``,
        every chunk of the first ``limit`` samples (default: all) is present.

        A unit marked complete whose chunk file was deleted would read back as zeros (the fill value);
        this finds it by checking that the chunk keys exist, without reading any data.
        """
        info = self.split_info(split)
        if info.n_complete < info.n_units:
            first = int(np.flatnonzero(~self.complete_units(split))[0])
            if first in self.damaged_markers(split):
                key = "/".join([split, "complete", "c", str(first)] + ["0"] * (self.array(split, "complete").ndim - 1))
                raise UserError(
                    f"store {self.path!r}: split {split!r} unit {first}: its completion marker cannot be read "
                    f"({key} is damaged); rerun `multiplexer distill` to recompute the unit (`multiplexer store "
                    "verify` lists every damaged unit)"
                )
            raise UserError(
                f"store {self.path!r}: split {split!r} has {info.n_units - info.n_complete} of "
                f"{info.n_units} write units incomplete (first: unit {first}); rerun `multiplexer distill`"
            )
        if not chunks:
            return
        n = info.n_samples if limit is None else min(info.n_samples, int(limit))
        units = (unit for unit in self.iter_units(split) if unit[1] < n)
        found = first_missing_chunk({name: self.array(split, name) for name in CHECKED}, units)
        if found is not None:
            u, a, b, problem = found
            raise UserError(
                f"store {self.path!r}: split {split!r} unit {u} (samples {a}-{b - 1}) is marked complete but its "
                f"{problem} (lost data); see `multiplexer store verify`, and redistill it "
                "(`multiplexer distill --overwrite`)"
            )


def read_markers(array: zarr.Array, first: int = 0, stop: int | None = None) -> tuple[np.ndarray, list[int]]:
    """The completion markers' rows of units ``first .. stop - 1``, read
    :data:`~pipeline.store.chunks.BLOCK_UNITS` at a time (so the memory zarr needs for a read stays
    bounded whatever the number of units), and the units whose marker cannot be read (a damaged chunk,
    or one cut short by a kill while written): their rows are zeros, so they count as incomplete."""
    stop = array.shape[0] if stop is None else stop
    out = np.zeros((stop - first, *array.shape[1:]), dtype=array.dtype)
    damaged: list[int] = []
    with bulk_reads():
        for start in range(first, stop, BLOCK_UNITS):
            end = min(start + BLOCK_UNITS, stop)
            try:
                out[start - first : end - first] = np.asarray(array[start:end])
            except Exception:  # noqa: BLE001 - a marker damaged: read the block's markers one by one
                for u in range(start, end):
                    try:
                        out[u - first] = np.asarray(array[u])
                    except Exception:  # noqa: BLE001 - zarr raises several types for an undecodable chunk
                        damaged.append(u)
    return out, damaged


def _blocks(array: zarr.Array, start: int, stop: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut at the array's chunk (or shard) boundaries along the sample axis."""
    block = int((array.shards or array.chunks)[0])
    edges = [start, *range((start // block + 1) * block, stop, block), stop]
    return list(zip(edges[:-1], edges[1:]))


# ---------------------------------------------------------------------------------------------
# opening and creating
# ---------------------------------------------------------------------------------------------


def store_exists(path: str) -> bool:
    """Whether something (a store, or anything else) is at ``path``."""
    if is_url(path):
        fs, root = fsspec.core.url_to_fs(path)
        return bool(fs.exists(root))
    return Path(path).exists()


def open_store(path: str | os.PathLike[str], mode: Literal["r", "r+"] = "r", *, check: bool = True) -> Store:
    """Open an existing store (``mode`` ``"r"`` or ``"r+"``), checking it is one of ours and that its
    attributes match their digest (the root's now, a split's when it is first used;
    :func:`~pipeline.store.meta_digest.checked_attrs`). Every reader opens a store through here.

    Parameters
    ----------
    check : bool
        ``False`` only for ``store verify``, which names every attribute that does not match itself.

    Raises
    ------
    StoreNotFoundError
        Nothing exists at a local ``path``.
    MetadataError
        An attribute does not match its digest.
    UserError
        ``path`` is a file, not a Zarr store, or a Zarr group that is not a multiplexer store.
    """
    path = str(path)
    if not is_url(path):
        p = Path(path)
        if not p.exists():
            raise StoreNotFoundError(path)
        if p.is_file():
            raise UserError(f"store path {path!r} is a file, not a Zarr store")
    try:
        group = open_group(path, mode=mode)
    except Exception as exc:  # zarr raises several types for what is not a group
        raise UserError(f"{path!r} is not a readable Zarr store: {type(exc).__name__}: {exc}") from None
    return Store(group, path, check=check)


def check_same_spec(
    store: Store,
    spec: Spec,
    base_identity: Mapping[str, Any] | None = None,
    genome_fingerprint: Mapping[str, Any] | None = None,
    target_names: list[str] | None = None,
) -> None:
    """Refuse a store made from other inputs than ``spec`` gives now, saying what differs: another
    spec, base-model weights file or model code (its file or a local module it imports), another
    genome, or other target names. What is not given is not compared.

    A store of hash version 2 compares the spec's keys without their path text (a genome or weights
    file moved elsewhere is the same input), the contents those paths name, and finally its content
    identity (:func:`~pipeline.core.identity.identity_hash`); one of version 1 (written before) the
    keys as written, paths included, and the genome by whatever its fingerprint holds.

    Raises
    ------
    StoreMismatchError
        With ``reason`` naming the differing spec keys, the two checksums or what differs between
        the genomes (:func:`~pipeline.core.genome.fingerprint_difference`).
    """
    _check_spec_content(store, spec)
    reason = _base_change(store.meta.base, base_identity) if base_identity is not None else None
    recorded = store.meta.genome_fingerprint
    if reason is None and genome_fingerprint is not None and recorded is not None:
        difference = fingerprint_difference(recorded, genome_fingerprint)
        if difference is not None:
            reason = f"another genome than the one now at {str(spec.genome_path)!r} ({difference})"
    if reason is None and target_names is not None:
        reason = _names_change(store.target_names, target_names)
    if reason is not None:
        raise StoreMismatchError(store.path, f"store {store.path!r} was made with {reason}")
    if base_identity is None or genome_fingerprint is None or target_names is None:
        return
    if store.meta.hash_version >= 2 and genome_fingerprint.get("sequence_digest"):
        expected = identity_hash(spec.store_dict(), base_identity, genome_fingerprint, target_names)
        if expected != store.spec_hash:
            raise StoreMismatchError(
                store.path,
                f"store {store.path!r} has content identity {store.spec_hash[:12]}, but the spec's inputs give "
                f"{expected[:12]}",
            )


def _names_change(old: list[str], new: list[str]) -> str | None:
    """How the target names ``new`` differ from the recorded ``old`` (``None``: they do not)."""
    if list(new) == list(old):
        return None
    first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), None)
    if first is None:
        return f"other target names ({len(old)} names, now {len(new)})"
    return f"other target names (target {first} is {old[first]!r}, now {new[first]!r})"


def _spec_keys(spec_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The store keys of a spec's plain form (:meth:`~pipeline.core.spec.Spec.store_dict`)."""
    return {k: v for k, v in spec_dict.items() if k not in (*NON_CONTENT_KEYS, "splits")}


def _check_spec_content(store: Store, spec: Spec) -> None:
    """Refuse a spec whose windows differ from the store's. Format 3: everything but the splits must
    agree, and every split the store has must sample from the same places (the spec may ask for
    more samples, or add splits: the store grows). Formats 1 and 2 hashed the sample counts too.
    Hash version 2 compares the keys without their path text (:func:`~pipeline.core.identity.without_paths`)."""
    legacy = store.meta.format_version < 3
    if store.meta.hash_version >= 2:
        old, new = without_paths(_spec_keys(store.meta.spec)), without_paths(spec.store_dict())
        if old != new:
            raise StoreMismatchError(
                store.path,
                f"store {store.path!r} was made from a different spec; differing keys: "
                f"{', '.join(differing_keys(old, new)) or 'unknown'}",
            )
    else:
        new_hash = spec.content_hash() if legacy else spec.store_hash()
        if store.spec_hash != new_hash:
            keys = [k for k in differing_keys(store.meta.spec, spec.to_dict()) if legacy or not k.startswith("splits.")]
            hint = f"; store format {store.meta.format_version} cannot grow: `multiplexer store upgrade {store.path}`"
            raise StoreMismatchError(
                store.path,
                f"store {store.path!r} was made from a different spec (hash {store.spec_hash[:12]} vs "
                f"{new_hash[:12]}); "
                f"differing keys: {', '.join(keys) or 'unknown'}" + (hint if legacy else ""),
            )
    if legacy:
        return
    stored = store.meta.spec["splits"]
    for name in stored:
        if name not in spec.splits:
            raise StoreMismatchError(
                store.path, f"store {store.path!r} has split {name!r}, which the spec no longer has"
            )
        old = {k: v for k, v in stored[name].items() if k != "samples"}
        if old != spec.split_content(name):
            new = spec.split_content(name)
            keys = [f"{name}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            raise StoreMismatchError(
                store.path,
                f"store {store.path!r}: split {name!r} samples from other places than the spec says; differing "
                f"keys: splits.{', splits.'.join(keys)} (a store grows only by more samples or new splits)",
            )


PREFIX_OPTIONS = {"train": "--max-samples", "valid": "--valid-samples"}
"""The ``train`` option that reads a prefix of a split (the other splits are read whole)."""


def _fewer_hint(name: str, samples: int) -> str:
    """How to use fewer samples of split ``name`` than its store holds, without shrinking the store."""
    option = PREFIX_OPTIONS.get(name)
    if option is not None:
        return f"and train on fewer with `train {option} {samples}`"
    return f"(split {name!r} is read whole), or distill the smaller spec into a new store"


def growth(store: Store, spec: Spec) -> dict[str, tuple[int, int]]:
    """``{split: (stored samples, spec samples)}`` for every split the spec asks to grow or add (stored
    0); a spec asking fewer samples than stored is refused (``train`` reads a prefix of the train split
    with ``--max-samples``, of the valid split with ``--valid-samples``)."""
    out = {}
    for name, split in spec.splits.items():
        have = int(store.split_meta(name).n_samples) if name in store.splits else 0
        if split.samples < have:
            raise UserError(
                f"store {store.path!r} holds {have} samples of split {name!r}, the spec asks {split.samples}; stores "
                f"only grow: keep the spec at {have} {_fewer_hint(name, split.samples)}"
            )
        if split.samples > have:
            out[name] = (have, split.samples)
    return out


def grow_store(store: Store, spec: Spec) -> dict[str, tuple[int, int]]:
    """Grow ``store`` (format 3, checked against ``spec``) to the spec's sample counts and splits.

    Arrays of a grown split are resized along the sample axis; its last unit, if it was partial, is
    marked incomplete (its new samples are computed with it); new splits are created empty. Existing
    windows are kept: window ``i`` does not depend on the sample count. The root ``spec`` becomes the
    new spec and a ``history`` entry is added. Returns what grew (:func:`growth`).

    Crash-consistent: each step can be repeated, and the split groups are finished before the root
    attributes record them. A growth cut short anywhere is finished by the next reopening: a split
    resized but not yet recorded at the root, or a new split group whose arrays or attributes are
    partly written (it is not recorded at the root, so no unit of it was ever written), is completed
    and then recorded (:func:`_recorded_behind`).
    """
    changes = growth(store, spec)
    if not changes and not _recorded_behind(store, spec):
        return changes
    for name, (have, want) in changes.items():
        if have == 0:
            split = spec.splits[name]
            _build_split(store.group.require_group(name), spec, want, split.chroms, store.n_targets)
            continue
        _resize_split(store, name, have, want)
    history: list[Any] = [dict(h) for h in store.meta.history]
    entry = history_entry(spec)
    if not history or history[-1].get("samples") != entry["samples"]:
        history.append(entry)
    update_attrs(store.group, {"spec": spec.to_dict(), "history": history}, "store", store.path)
    store.reload()
    return changes


def _recorded_behind(store: Store, spec: Spec) -> bool:
    """Whether the root attributes record other sample counts or splits than ``spec`` asks while the
    split groups already hold them: a growth cut short after its resizes, before its root update."""
    recorded = {name: int(split.get("samples", -1)) for name, split in store.meta.spec.get("splits", {}).items()}
    return recorded != {name: split.samples for name, split in spec.splits.items()}


def _resize_split(store: Store, name: str, have: int, want: int) -> None:
    group = store.split_group(name)
    meta = store.split_meta(name)
    U = meta.unit_samples
    for array_name in ("reference", "ref_pred", "targets", "chrom", "center"):
        array = store.array(name, array_name)
        array.resize((want, *array.shape[1:]))
    markers = store.array(name, "complete")
    units = n_units(want, U)
    if have % U:  # the last unit was partial: recompute it whole with its new samples
        markers[have // U] = np.zeros(markers.shape[1:], dtype=markers.dtype)
    markers.resize((units, *markers.shape[1:]))
    update_attrs(group, {"n_samples": want, "n_units": units}, "store", store.path)


def _base_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """How the base model ``new`` differs from the recorded ``old`` (weights or source file)."""
    if old.get("weights_sha256") != new.get("weights_sha256"):
        return (
            f"base-model weights sha256 {str(old.get('weights_sha256'))[:12]}, but {new.get('weights')!r} has "
            f"sha256 {str(new.get('weights_sha256'))[:12]}"
        )
    change = code_change(old, new)
    return None if change is None else f"base-{change}"


def create_or_open_store(
    path: str | os.PathLike[str],
    spec: Spec,
    *,
    base_identity: Mapping[str, Any],
    n_targets: int,
    target_names: list[str],
    overwrite: bool = False,
    genome_fingerprint: Mapping[str, Any] | None = None,
) -> Store:
    """Create the store for ``spec``, or reopen it for resuming if it was made from the same spec.

    A local store is built in a temporary sibling folder and renamed into place, so processes that
    start together (``--shard`` jobs) never see a half-created store: the first rename wins and the
    others open the winner's store.

    Parameters
    ----------
    path : path or URL
        Where the store lives.
    spec : Spec
        The dataset spec.
    base_identity : dict
        The base model's identity (recorded, and compared on reopening).
    n_targets : int
        ``F``, the base model's number of outputs.
    target_names : list of str
        ``F`` names.
    overwrite : bool
        Discard an existing store at ``path`` (the only way to do so).
    genome_fingerprint : dict, optional
        The genome's fingerprint (recorded, and compared on reopening). With its full digest the
        store's ``spec_hash`` is its content identity (hash version 2); without (stores of synthetic
        data), the spec's keys as written (version 1).

    Raises
    ------
    UserError
        The path holds a store of another spec, base model or genome, something that is not a store,
        or a file.
    """
    path = str(path)
    if store_exists(path):
        if not overwrite:
            return _reopen(path, spec, base_identity, genome_fingerprint, target_names)
        remove_store(path)
    if len(target_names) != n_targets:
        raise UserError(f"{len(target_names)} target names for a base model with {n_targets} outputs")
    attrs = root_attrs(spec, base_identity, n_targets, target_names, genome_fingerprint)
    if is_url(path):
        build_empty_store(path, spec, n_targets, attrs)
        return open_store(path, mode="r+")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # like the default stores/ folder
    except OSError as exc:
        raise UserError(f"cannot create store {path!r}: {exc.strerror or exc} ({target.parent})") from None
    if not create_atomically(target, lambda tmp: build_empty_store(tmp, spec, n_targets, attrs)):
        return _reopen(path, spec, base_identity, genome_fingerprint, target_names)  # another process created it first
    return open_store(path, mode="r+")


def create_atomically(target: Path, build: Callable[[str], None]) -> bool:
    """Build a Zarr folder in a temporary sibling (``.<name>.creating-<pid>-<random>-<host>``), flush it,
    and rename it to ``target``, so processes that start together never see a half-built one. Returns
    ``False`` when another process's folder got the name first (this one's is removed)."""
    remove_stale_creations(target)
    tmp = target.with_name(f".{target.name}{CREATING}{os.getpid()}-{uuid.uuid4().hex[:8]}-{platform.node()}")
    try:
        build(str(tmp))
        fsync_path(tmp)  # the whole empty folder is on disk before its name says it exists
        try:
            os.rename(tmp, target)
            fsync_folder(target.parent)
        except OSError:
            if not target.exists():
                raise
            return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True


CREATING = ".creating-"
"""Marks the temporary folder a store is built in: ``.<name>.creating-<pid>-<random>-<host>``."""


def remove_stale_creations(target: Path) -> list[Path]:
    """Remove the temporary folders that processes of this host killed while creating ``target`` left
    behind (their pid is gone); a live process's, or another host's, is left alone. Returns them."""
    removed = []
    for folder in target.parent.glob(f".{target.name}{CREATING}*"):
        parts = folder.name.rsplit(CREATING, 1)[1].split("-", 2)  # pid, random, host
        if len(parts) == 3 and parts[2] == platform.node() and parts[0].isdigit() and not process_alive(int(parts[0])):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _reopen(
    path: str,
    spec: Spec,
    base_identity: Mapping[str, Any] | None,
    genome_fingerprint: Mapping[str, Any] | None = None,
    target_names: list[str] | None = None,
) -> Store:
    store = open_store(path, mode="r+")
    version = store.meta.format_version
    if version == 1:
        raise StoreMismatchError(
            path,
            f"store {path!r} has format 1 (no checksums); it can be read, but not extended by this version, which "
            f"writes format {FORMAT_VERSION}",
        )
    if version != FORMAT_VERSION:
        how = "attributes only, seconds" if version == FORMAT_VERSION - 1 == 2 else "its targets are rewritten"
        raise StoreMismatchError(
            path,
            f"store {path!r} has format {version}; it can be read, but to extend it upgrade it first to format "
            f"{FORMAT_VERSION} ({how}; resumable): `multiplexer store upgrade {path}`",
        )
    check_same_spec(store, spec, base_identity, genome_fingerprint, target_names)
    grow_store(store, spec)  # more samples or new splits: resize, keep every window
    return store


def wait_for_store(path: str | os.PathLike[str], spec: Spec, *, timeout: float = 600.0, poll: float = 0.2) -> Store:
    """Open a store that another process is creating, once it exists (used by non-creating ranks)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _reopen(str(path), spec, None)
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(poll)


def build_empty_store(path: str, spec: Spec, n_targets: int, attrs: dict[str, Any]) -> None:
    """Create a store's groups and empty arrays (format 4) at ``path``; the root attributes ``attrs`` go
    last (they mark a finished store)."""
    try:
        root = open_group(path, mode="w-")
    except Exception as exc:  # zarr and fsspec raise several types
        raise UserError(f"cannot create store {path!r}: {type(exc).__name__}: {exc}") from None
    for split, split_spec in spec.splits.items():
        _build_split(root.create_group(split), spec, split_spec.samples, split_spec.chroms, n_targets)
    root.attrs.update(attrs)  # sealed with their digest (root_attrs)


def _build_split(g: zarr.Group, spec: Spec, n: int, chroms: tuple[str, ...], n_targets: int) -> None:
    """Create a split's empty arrays, then its attributes (so a split group with attributes has all its
    arrays). Arrays already there (left by a growth cut short, or made by a process growing the store
    at the same time) are kept, resized to this split's sample count along the sample axis."""
    L, F, st = spec.seq_len, n_targets, spec.storage
    U = st.unit_samples
    units = n_units(n, U)
    with numcodecs_quiet():
        have = {name for name, _ in g.arrays()}
    for name in have:
        array = group_array(g, name)
        if isinstance(array, zarr.Array) and name in DIMENSIONS:
            array.resize((units if name == "complete" else n, *array.shape[1:]))
    # every written chunk exists (see Store.write_unit), so a missing one means lost data
    cfg: ArrayConfigParams = {"write_empty_chunks": True}
    small = compressors(zc.ZstdCodec(level=3), st)
    for name, shape, dtype, fill in (
        ("reference", (n, 4, L), "uint8", 0),
        ("ref_pred", (n, F), "float32", 0.0),
        ("center", (n,), "int64", 0),
    ):
        if name in have:
            continue
        chunks = (U, *shape[1:])
        g.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill,
            compressors=small,
            dimension_names=DIMENSIONS[name],
            config=cfg,
        )
    if "chrom" not in have:
        g.create_array(
            "chrom",
            shape=(n,),
            chunks=(U,),
            dtype=str,
            compressors=small,
            config=cfg,
            dimension_names=DIMENSIONS["chrom"],
        )
    if "targets" not in have:
        _build_targets(g, (n, F, L), st, cfg)
    width = marker_width(st)
    if "complete" not in have:
        g.create_array(
            "complete",
            shape=(units, width),
            chunks=(1, width),
            dtype="uint32",
            fill_value=0,
            compressors=compressors(None, st),
            config=cfg,
            dimension_names=DIMENSIONS["complete"],
        )
    attrs = {"n_samples": n, "unit_samples": U, "chunk_samples": st.chunk_samples, "n_units": units}
    g.attrs.update(write_meta_digest({**attrs, "chroms": list(chroms)}))


def _build_targets(g: zarr.Group, shape: tuple[int, int, int], st: Any, cfg: ArrayConfigParams) -> None:
    """The ``targets`` array of format 4: ``[n, F, 3, L]``, chunked by :func:`~pipeline.store.format.target_chunks`."""
    n, F, L = shape
    rows = STORED_ROWS[FORMAT_VERSION]
    chunks, shards = target_chunks(st, F, L, rows)
    with numcodecs_quiet():
        g.create_array(
            "targets",
            shape=(n, F, rows, L),
            chunks=chunks,
            shards=shards,
            dtype=st.dtype,
            fill_value=0.0,
            compressors=compressors(target_codec(st), st),
            config=cfg,
            dimension_names=DIMENSIONS["targets"],
        )


def _root_attributes(path: str) -> dict[str, Any] | None:
    """The root attributes of the Zarr group at ``path``, a local folder or a URL (``None``: not a
    readable Zarr v3 group)."""
    fs, root = fsspec.core.url_to_fs(path)
    try:
        meta = json.loads(fs.cat_file(f"{root.rstrip('/')}/zarr.json"))
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes", {}) if isinstance(meta, dict) and meta.get("node_type") == "group" else None
    return attrs if isinstance(attrs, dict) else None


def _child_folders(path: str) -> list[str]:
    """The folders (prefixes) directly inside ``path``, a local folder or a URL (full paths)."""
    fs, root = fsspec.core.url_to_fs(path)
    try:
        return [entry["name"] for entry in fs.ls(root, detail=True) if entry.get("type") == "directory"]
    except OSError:
        return []


def is_training_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (a local folder or a URL) holds a multiplexer training store: its root attributes
    say so, or (a store whose creation was cut short before its root attributes, or whose root metadata
    was lost) a split group holds ``targets`` and completion markers. The one rule for what ``distill
    --overwrite`` may replace and what no other command's ``--overwrite`` may."""
    path = str(path)
    attrs = _root_attributes(path)
    if attrs:
        return attrs.get("format") == FORMAT
    fs, _ = fsspec.core.url_to_fs(path)
    return any(
        fs.exists(f"{child}/targets/zarr.json") and fs.exists(f"{child}/complete/zarr.json")
        for child in _child_folders(path)
    )


def _other_kind(path: str) -> str | None:
    """What ``distill --overwrite`` will not replace at ``path`` (``None``: a training store, or an empty
    Zarr group that a creation cut short before anything was in it)."""
    if is_training_store(path):
        return None
    attrs = _root_attributes(path)
    if attrs is None:
        return "is not a Zarr store" if is_url(path) else "is a folder but not a Zarr store"
    if not attrs and not _child_folders(path):
        return None
    said = [f"{key} {attrs[key]!r}" for key in ("format", "kind") if isinstance(attrs.get(key), str)]
    return "holds a Zarr store of another kind" + (f" ({', '.join(said)})" if said else "")


def remove_store(path: str) -> None:
    """Delete the training store at ``path`` (``distill --overwrite``).

    Raises
    ------
    UserError
        ``path`` is a file, a folder that is not a Zarr store, or a Zarr store of another kind (a
        catalogue, a ``score-vcf`` output, someone else's data): ``--overwrite`` replaces only a
        training store (:func:`is_training_store`), like every command replaces only its own kind.
    """
    if not is_url(path) and Path(path).is_file():
        raise UserError(f"store path {path!r} is a file, not a Zarr store")
    other = _other_kind(path)
    if other is not None:
        raise UserError(
            f"store path {path!r} {other}; --overwrite will not replace it (it replaces only a multiplexer "
            "training store)"
        )
    if is_url(path):
        fs, root = fsspec.core.url_to_fs(path)
        fs.rm(root, recursive=True)
        return
    p = Path(path)
    busy = active_writers(p)
    if busy:
        raise UserError(
            f"store {path!r} is being written by {busy[0]}{f' and {len(busy) - 1} more' if len(busy) > 1 else ''}; "
            "stop it before --overwrite discards the store"
        )
    shutil.rmtree(p)


def writers_folder(path: Path) -> Path:
    """Where the processes writing the local store at ``path`` keep their lease files ``<host>-<pid>``:
    the hidden sibling ``.<name>.writers`` (outside the Zarr hierarchy, which would warn about it)."""
    return path.with_name(f".{path.name}.writers")


LEASE_SECONDS = 600
"""A lease of another host counts as active while it was renewed (each unit written) this recently."""


@contextmanager
def writer_lease(store: Store) -> Iterator[None]:
    """Hold a lease on a local store while this process writes it, so ``--overwrite`` elsewhere refuses
    to delete the store under it; renewed by every unit written, removed at the end."""
    if is_url(store.path):
        yield
        return
    lease = writers_folder(Path(store.path)) / f"{platform.node()}-{os.getpid()}"
    try:
        for stale in lease.parent.glob(f"{platform.node()}-*"):  # leases of killed processes of this host
            pid = stale.name.rpartition("-")[2]
            if pid.isdigit() and not process_alive(int(pid)):
                stale.unlink(missing_ok=True)
        lease.parent.mkdir(exist_ok=True)
        lease.touch()
    except OSError:  # a folder beside the store we may not write: write the store without a lease
        yield
        return
    store.lease = lease
    try:
        yield
    finally:
        store.lease = None
        lease.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # others may still hold leases
            lease.parent.rmdir()


def active_writers(path: Path) -> list[str]:
    """The processes holding a live lease on the local store at ``path`` (``"pid N on HOST"``): of
    this host, those still running; of others, those renewed in the last :data:`LEASE_SECONDS`."""
    host, now, out = platform.node(), time.time(), []
    for lease in sorted(writers_folder(path).glob("*")):
        lease_host, _, pid = lease.name.rpartition("-")
        if not pid.isdigit() or int(pid) == os.getpid() and lease_host == host:
            continue
        alive = process_alive(int(pid)) if lease_host == host else now - lease.stat().st_mtime < LEASE_SECONDS
        if alive:
            out.append(f"process {pid} on {lease_host}")
    return out


__getattr__ = moved_names("pipeline.store.store", {"WRITE_THREADS": "pipeline.store.writes"})
