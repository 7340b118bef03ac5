"""Which chunk files of a split exist: a unit marked complete whose chunk was deleted would read as zeros.

Only key existence is checked, never data: one ``stat`` per chunk on a local store; one listing of
each array's keys on a store that can list (an object store answers a listing of 1,000 keys in one
request); batches of concurrent ``exists`` requests on any other store.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import zarr
from zarr.core.sync import sync
from zarr.storage import LocalStore


def _listing(array: zarr.Array) -> set[str] | None:
    """All keys of ``array`` when its store can list and is not local (``None`` otherwise)."""
    store = array.store_path.store
    if isinstance(store, LocalStore) or not store.supports_listing:
        return None
    prefix = f"{array.store_path.path}/" if array.store_path.path else ""

    async def listing() -> set[str]:
        return {key async for key in store.list_prefix(prefix)}

    keys: set[str] = sync(listing())
    return keys


def chunk_keys(array: zarr.Array, coords: list[tuple[int, ...]]) -> list[str]:
    """The store keys of chunks (or shards) ``coords`` of ``array``."""
    prefix = f"{array.store_path.path}/" if array.store_path.path else ""
    return [prefix + array.metadata.encode_chunk_key(c) for c in coords]


def local_files(array: zarr.Array, coords: list[tuple[int, ...]]) -> list[Path] | None:
    """The files of chunks (or shards) ``coords`` of ``array`` on a local store (``None``: not local)."""
    store = array.store_path.store
    if not isinstance(store, LocalStore):
        return None
    return [Path(store.root) / key for key in chunk_keys(array, coords)]


def chunks_exist(array: zarr.Array, coords: list[tuple[int, ...]], listed: set[str] | None = None) -> list[bool]:
    """Whether each chunk (or shard) ``coords`` of ``array`` is present in its store.

    Local stores are checked with one ``stat`` per key (about 5 µs); stores that can list with one
    listing of the array's keys; others with batches of concurrent ``exists`` requests. No data is read.
    """
    keys = chunk_keys(array, coords)
    store = array.store_path.store
    if isinstance(store, LocalStore):
        root = Path(store.root)
        return [(root / key).is_file() for key in keys]
    present = listed if listed is not None else _listing(array)
    if present is not None:
        return [key in present for key in keys]

    async def check() -> list[bool]:
        out: list[bool] = []
        for i in range(0, len(keys), 1024):
            out += await asyncio.gather(*(store.exists(k) for k in keys[i : i + 1024]))
        return out

    return [bool(x) for x in sync(check())]


BLOCK_UNITS = 4096
"""Write units handled at once by the checks that visit every unit (markers, chunk existence, data),
so their memory does not grow with the number of units."""

CHECKED = ("reference", "ref_pred", "chrom", "center", "targets")
"""The arrays whose chunks a complete unit must have (the completion markers are read as values)."""


def missing_chunks(
    arrays: Mapping[str, zarr.Array],
    units: list[tuple[int, int, int]],
    listed: Mapping[str, set[str] | None] | None = None,
) -> tuple[int, int, int, str] | None:
    """The first of ``units`` (``(unit, start, stop)`` of one split, whose :data:`CHECKED` arrays are
    ``arrays``) with a missing chunk: ``(unit, start, stop, "chunk ... of 'name' is missing")``, or
    ``None`` when every chunk is there."""
    if not units:
        return None
    known = listed or {}
    first: tuple[int, int, int, int, str] | None = None  # (unit index in units, ...) of the earliest problem
    for name in ("reference", "ref_pred", "chrom", "center"):
        array = arrays[name]
        coords = [(u,) + (0,) * (array.ndim - 1) for u, _, _ in units]
        for k, ok in enumerate(chunks_exist(array, coords, known.get(name))):
            if not ok:
                if first is None or k < first[0]:
                    first = (k, *units[k], f"chunk {coords[k]} of {name!r} is missing")
                break
    targets = arrays["targets"]
    block = (targets.shards or targets.chunks)[0]  # a shard holds a whole unit
    owners = [(k, c) for k, (_, a, b) in enumerate(units) for c in range(a // block, -(-b // block))]
    kind = "shard" if targets.shards else "chunk"
    for (k, c), ok in zip(owners, chunks_exist(targets, [(c, 0, 0, 0) for _, c in owners], known.get("targets"))):
        if not ok:
            if first is None or k < first[0]:
                first = (k, *units[k], f"{kind} ({c}, 0, 0, 0) of 'targets' is missing")
            break
    return None if first is None else first[1:]


def first_missing_chunk(
    arrays: Mapping[str, zarr.Array], units: Iterable[tuple[int, int, int]]
) -> tuple[int, int, int, str] | None:
    """:func:`missing_chunks` over ``units`` taken :data:`BLOCK_UNITS` at a time (memory stays bounded);
    on a store that can list, each array's keys are listed once for all blocks."""
    listed = {name: _listing(array) for name, array in arrays.items()}
    block: list[tuple[int, int, int]] = []
    for unit in units:
        block.append(unit)
        if len(block) == BLOCK_UNITS:
            found = missing_chunks(arrays, block, listed)
            if found is not None:
                return found
            block = []
    return missing_chunks(arrays, block, listed) if block else None


def stored_bytes(array: zarr.Array) -> int:
    """Bytes the array's chunks (and metadata) take in its store.

    A local store's folder is walked with ``os.scandir`` (memory does not grow with the number of
    chunks); other stores answer through zarr (``nbytes_stored``: a listing and a size per key).
    """
    store = array.store_path.store
    if not isinstance(store, LocalStore):
        return int(array.nbytes_stored())
    total, folders = 0, [Path(store.root) / array.store_path.path]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total
