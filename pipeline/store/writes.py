"""Durable chunk writes, shared by the training store and the catalogue store.

A unit is written one chunk (or shard) per ``array[selection] = value``, all of them waited for
(:func:`write_settled`), then flushed to the disk (:func:`sync_written`) before its completion marker
is set, so a marker never says a chunk is there that a crash or power loss could still take away.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import zarr

from pipeline.core.files import fsync_path
from pipeline.store.chunks import local_files

WRITE_THREADS = 8
"""Chunk writes of one unit that run at the same time."""

Write = tuple[zarr.Array, slice, np.ndarray]
"""One chunk's (or shard's) write: the array, the rows along its first axis, the value."""


def write_settled(writes: list[Write]) -> None:
    """Run each ``array[selection] = value`` (one chunk or shard each) and wait for all of them; then
    raise the first failure. One write per chunk means none is left in flight inside zarr when the
    error reaches the caller."""
    run_settled([partial(array.__setitem__, selection, value) for array, selection, value in writes])


def run_settled(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run each task (a write of one chunk or shard, or an encoding: format 4's targets are encoded by
    the store itself) on threads and wait for all of them; then raise the first failure, else return
    their results in order."""
    with ThreadPoolExecutor(max_workers=max(1, min(WRITE_THREADS, len(tasks))), thread_name_prefix="chunk") as pool:
        futures = [pool.submit(task) for task in tasks]
    for future in futures:  # every task has settled: the with-block waited for all of them
        error = future.exception()
        if error is not None:
            raise error
    return [future.result() for future in futures]


def sync_written(writes: list[Write]) -> None:
    """``fsync`` the chunk files of ``writes`` (one chunk or shard each) on a local store."""
    for array, rows, _ in writes:
        block = int((array.shards or array.chunks)[0])
        files = local_files(array, [(rows.start // block,) + (0,) * (array.ndim - 1)])
        if files is None:
            return
        fsync_path(files[0])
