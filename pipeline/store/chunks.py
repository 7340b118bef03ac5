"""Which chunk files of a split exist: a unit marked complete whose chunk was deleted would read as zeros.

Only key existence is checked, never data: one ``stat`` per chunk on a local store, batches of
concurrent ``exists`` requests on other (fsspec) stores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import zarr
from zarr.core.sync import sync
from zarr.storage import LocalStore

from pipeline.store.format import group_array


def chunks_exist(array: zarr.Array, coords: list[tuple[int, ...]]) -> list[bool]:
    """Whether each chunk (or shard) ``coords`` of ``array`` is present in its store.

    Local stores are checked with one ``stat`` per key (about 5 µs); other stores with batches of
    concurrent ``exists`` requests. No data is read.
    """
    store_path = array.store_path
    prefix = f"{store_path.path}/" if store_path.path else ""
    keys = [prefix + array.metadata.encode_chunk_key(c) for c in coords]
    store = store_path.store
    if isinstance(store, LocalStore):
        root = Path(store.root)
        return [(root / key).is_file() for key in keys]

    async def check() -> list[bool]:
        out: list[bool] = []
        for i in range(0, len(keys), 1024):
            out += await asyncio.gather(*(store.exists(k) for k in keys[i : i + 1024]))
        return out

    return [bool(x) for x in sync(check())]


def missing_chunks(g: zarr.Group, units: list[tuple[int, int, int]]) -> tuple[int, int, int, str] | None:
    """The first of ``units`` (``(unit, start, stop)`` of split group ``g``) with a missing chunk:
    ``(unit, start, stop, "chunk ... of 'name' is missing")``, or ``None`` when every chunk is there."""
    if not units:
        return None
    first: tuple[int, int, int, int, str] | None = None  # (unit index in units, ...) of the earliest problem
    for name in ("reference", "ref_pred", "chrom", "center"):
        array = group_array(g, name)
        coords = [(u,) + (0,) * (array.ndim - 1) for u, _, _ in units]
        for k, ok in enumerate(chunks_exist(array, coords)):
            if not ok:
                if first is None or k < first[0]:
                    first = (k, *units[k], f"chunk {coords[k]} of {name!r} is missing")
                break
    targets = group_array(g, "targets")
    block = (targets.shards or targets.chunks)[0]  # a shard holds a whole unit
    owners = [(k, c) for k, (_, a, b) in enumerate(units) for c in range(a // block, -(-b // block))]
    kind = "shard" if targets.shards else "chunk"
    for (k, c), ok in zip(owners, chunks_exist(targets, [(c, 0, 0, 0) for _, c in owners])):
        if not ok:
            if first is None or k < first[0]:
                first = (k, *units[k], f"{kind} ({c}, 0, 0, 0) of 'targets' is missing")
            break
    return None if first is None else first[1:]
