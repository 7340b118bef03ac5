"""Checksums of a store's data: every chunk carries a CRC-32C, every sample a digest in its unit's marker.

Two layers, each catching what the other cannot:

- **Per chunk**: every array's codec chain ends with zarr's ``crc32c`` codec, so a flipped or
  truncated byte in a chunk file fails when the chunk is decoded, in any Zarr reader.
- **Per sample**: a unit's completion marker is a row ``[1, d(0, a0), d(0, a1), ..., d(U-1, a4)]``
  (``uint32``): the flag, then a digest of each sample in each of :data:`DIGESTED` (``reference``,
  ``ref_pred``, ``targets``, ``chrom``, ``center``): the CRC-32 of the sample's decoded bytes (a
  string's UTF-8), except for ``targets`` in format 4, where it is the CRC-32C of the CRC-32C
  trailers of the chunks that hold the sample (:func:`~pipeline.store.chunkio.trailer_digest`): checked
  on the compressed bytes the chunk checksums are computed on anyway, it costs a read nothing. A chunk
  file swapped with another sample's decodes cleanly but does not match its digest. The marker is
  written last, after the unit's chunks are on disk.

Readers (:func:`read_checked`) check both: ``train`` and ``evaluate`` per sample as they read,
``store verify`` everything. A mismatch is a :class:`~pipeline.errors.UserError` naming the store,
split, unit and sample.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import zarr

from pipeline.errors import UserError
from pipeline.store.chunkio import ChunkError, DigestError, TargetChunks

DIGESTED = ("reference", "ref_pred", "targets", "chrom", "center")
"""The arrays whose samples are digested, in the order of a marker row's digests."""


def sample_digests(values: np.ndarray | Sequence[Any]) -> np.ndarray:
    """CRC-32 of each sample's bytes (a string's UTF-8), as stored: ``[n]`` uint32.

    Parameters
    ----------
    values : np.ndarray, shape=(n, ...), or sequence of str
        Samples along the first axis, in the store's dtype.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind not in "OUT":
        flat = np.ascontiguousarray(values).reshape(len(values), -1)
        return np.array([zlib.crc32(row.data) for row in flat], dtype=np.uint32)
    return np.array([zlib.crc32(str(v).encode()) for v in values], dtype=np.uint32)


def marker_row(data: dict[str, Any], unit_samples: int, skip: Sequence[str] = ()) -> np.ndarray:
    """The completion marker of a unit: ``[1 + unit_samples * len(DIGESTED)]`` uint32 (a shorter last
    unit leaves its missing samples' digests 0; so do the arrays in ``skip``, whose digests the caller
    fills in: format 4's targets)."""
    digests = np.zeros((unit_samples, len(DIGESTED)), dtype=np.uint32)
    for k, name in enumerate(DIGESTED):
        if name in skip:
            continue
        d = sample_digests(data[name])
        digests[: len(d), k] = d
    return np.concatenate([np.ones(1, dtype=np.uint32), digests.ravel()])


def split_markers(rows: np.ndarray, n_samples: int, unit_samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The flags ``[n_units]`` bool and per-sample digests ``[n_samples, len(DIGESTED)]`` (``None`` for
    markers without digests: stores of format 1 or written with ``storage.checksums: false``)."""
    if rows.ndim == 1:
        return rows != 0, None
    flags = rows[:, 0] != 0
    if rows.shape[1] == 1:
        return flags, None
    digests = rows[:, 1:].reshape(-1, unit_samples, len(DIGESTED)).reshape(-1, len(DIGESTED))
    return flags, np.ascontiguousarray(digests[:n_samples])


Where = Callable[[int], str]
"""``where(sample)``: how a message names a sample (store, split, unit and sample)."""


def read_checked(
    array: zarr.Array, name: str, start: int, stop: int, expected: np.ndarray | None, where: Where
) -> np.ndarray:
    """Samples ``start .. stop - 1`` of ``array``, checked against their chunk checksums and, when
    ``expected`` (their digests, ``[stop - start]``) is given, their sample digests.

    Raises
    ------
    UserError
        When a chunk cannot be decoded (checksum, truncation) or a sample's bytes do not match its
        digest; the message names the store, split, unit and sample.
    """
    try:
        values = np.asarray(array[start:stop])
    except Exception:  # noqa: BLE001 - zarr raises ValueError for a bad checksum, codecs several types
        raise UserError(unreadable(array, name, start, stop, where)) from None
    if expected is not None:
        bad = first_mismatch(values, expected)
        if bad is not None:
            raise UserError(
                f"{where(start + bad)}: {name} does not match its checksum (a damaged chunk file, or one "
                f"swapped with another sample's): {REPAIR}"
            )
    return values


def unreadable(array: zarr.Array, name: str, start: int, stop: int, where: Where) -> str:
    """The message for samples ``start .. stop - 1`` of ``array`` that failed to decode: each chunk of
    the range is read alone to name the first damaged one."""
    block = int((array.shards or array.chunks)[0])
    first = start - start % block
    for a in range(first, stop, block):
        a, b = max(a, start), min(a + block, stop)
        try:
            np.asarray(array[a:b])
        except Exception as exc:  # noqa: BLE001 - the damaged chunk
            detail = " ".join(str(exc).split())[:100]
            samples = f" (the chunk of samples {a}-{b - 1})" if b - a > 1 else ""
            return (
                f"{where(a)}: {name}{samples} cannot be read ({type(exc).__name__}: {detail}); the chunk file is "
                f"damaged: {REPAIR}"
            )
    return f"{where(start)}: {name} cannot be read (samples {start}-{stop - 1}); {REPAIR}"


def first_mismatch(values: np.ndarray | Sequence[Any], expected: np.ndarray) -> int | None:
    """Index of the first sample whose digest differs from ``expected`` (``None``: all match)."""
    bad = np.flatnonzero(sample_digests(values) != expected)
    return int(bad[0]) if bad.size else None


REPAIR = (
    "`multiplexer store verify --unmark-damaged STORE` marks every damaged unit incomplete, and a rerun of "
    "distill recomputes just those"
)


@contextmanager
def chunks_checked(chunk_samples: int, where: Where, name: str = "targets") -> Iterator[None]:
    """Turn what a :class:`~pipeline.store.chunkio.TargetChunks` read of array ``name`` raises into a
    :class:`UserError` naming the store, split, unit and sample (``where``) of a chunk that is missing,
    damaged or does not decode (``chunk_samples``: samples per chunk, to name a chunk's range), or of a
    sample that does not match its digest."""
    try:
        yield
    except ChunkError as exc:
        samples = f" (the chunk of samples {exc.sample}-{exc.sample + chunk_samples - 1})" if chunk_samples > 1 else ""
        file = f" {exc.file}" if exc.file else ""
        raise UserError(
            f"{where(exc.sample)}: {name}{samples} cannot be read ({exc.reason}); the chunk file{file} is damaged: "
            f"{REPAIR}"
        ) from None
    except DigestError as exc:
        raise UserError(
            f"{where(exc.sample)}: {name} does not match its checksum (a damaged chunk file, or one swapped with "
            f"another sample's): {REPAIR}"
        ) from None


def read_targets(
    chunks: TargetChunks,
    runs: Sequence[tuple[int, int]],
    out: np.ndarray,
    expected: np.ndarray | None,
    format_version: int,
    where: Where,
) -> None:
    """Decode the ``targets`` of sample runs into ``out`` (``[n, F, R, L]``, as stored), checked against
    their chunk checksums and, when ``expected`` (``[n]``) is given, their sample digests (format 4: of
    the chunks' trailers; formats 2-3: of the decoded samples).

    Raises
    ------
    UserError
        See :func:`chunks_checked`.
    """
    with chunks_checked(chunks.chunk[0], where):
        chunks.read_into(runs, out, expected, "trailers" if format_version >= 4 else "decoded")
