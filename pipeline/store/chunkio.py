"""A targets array's chunks as stored: found, read, checked and decoded straight into the caller's buffer.

zarr decodes a chunk into a buffer of its own and copies it into the array it returns; a batch read
then concatenates. :class:`TargetChunks` reads the chunk bytes itself (a local file is memory-mapped,
a shard's inner chunks are found through its index; any other store is read through zarr's store
API), checks each chunk's CRC-32C trailer on the compressed bytes (zarr's ``crc32c`` codec, computed by
:func:`crc32c` on the buffer, no copy) and runs the codec chain with numcodecs into the caller's
output (``out=``), so a sample's values are written once, where the consumer wants them. The same
reader hands the checked compressed bytes to a device decoder instead (``train --decode gpu``).

What it reads is exactly what zarr reads (tested against ``array[...]``); codecs other than the ones
stores are written with (:data:`COMPRESSORS`) are refused.

Sample digests (:mod:`pipeline.store.digests`): in format 4 a sample's ``targets`` digest is the
CRC-32C of the 4-byte CRC-32C trailers of the chunks that hold it (:func:`trailer_digest`), so the
check costs nothing beyond the chunks' own checksums; in formats 2 and 3 it is the CRC-32 of the
decoded sample, checked after decoding.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import crc32c as _crc32c
import numcodecs
import numpy as np
import zarr
import zarr.codecs as zc
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.codecs.numcodecs import Shuffle
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore


def crc32c(buffer: Any) -> int:
    """The CRC-32C (Castagnoli) of a contiguous buffer (``bytes``, a memoryview or a numpy array), read
    in place: the value zarr's ``crc32c`` codec (``google_crc32c``) writes, by the ``crc32c`` package's
    kernel, which runs three hardware CRC streams at once (18.5 GB/s against ``google_crc32c``'s 4.8 on
    one core of a 2-core Xeon, 2026-12-07; ``docs/decisions.md``)."""
    return int(_crc32c.crc32c(buffer))


COMPRESSORS = ("blosc", "zstd", "shuffle+zstd", "none")
"""The codec chains of stored targets that :class:`ChunkCodec` decodes (a CRC-32C trailer may follow)."""

GPU_DECODABLE = ("zstd", "shuffle+zstd")
"""Chains a device decoder (nvCOMP) can take: standard zstd frames, with a byte shuffle undone after."""


class ChunkError(Exception):
    """A chunk (or shard) that cannot be read or decoded, or whose checksum does not match: ``chunk``
    its coordinates, ``sample`` the first sample it holds, ``reason`` what is wrong, ``file`` the key of
    the stored object (chunk or shard file) that holds it, from the store's root (``None``: not known)."""

    def __init__(self, chunk: tuple[int, ...], reason: str, sample: int = 0, file: str | None = None) -> None:
        super().__init__(reason)
        self.chunk, self.reason, self.sample, self.file = chunk, reason, sample, file


class DigestError(Exception):
    """A sample that decodes cleanly but does not match its digest (a chunk swapped with another's)."""

    def __init__(self, sample: int) -> None:
        super().__init__(f"sample {sample}")
        self.sample = sample


@dataclass(frozen=True)
class ChunkCodec:
    """The bytes-to-bytes codecs of a chunk, decoded with numcodecs into a given buffer.

    Attributes
    ----------
    compressor : str
        One of :data:`COMPRESSORS`.
    crc32c : bool
        Whether each chunk ends with a CRC-32C of the bytes before it.
    level : int
        The zstd level (for the record; decoding does not need it).
    """

    compressor: str
    crc32c: bool
    level: int = 0

    @classmethod
    def of(cls, codecs: Sequence[Any]) -> ChunkCodec:
        """The chain of an array's (inner) codecs: ``BytesCodec`` (little-endian), then a compressor,
        then optionally ``crc32c`` (a :class:`ValueError` for anything else)."""
        first, *rest = codecs
        if not isinstance(first, zc.BytesCodec) or (first.endian is not None and first.endian.value != "little"):
            raise ValueError(f"targets chunks are not little-endian bytes ({first!r})")
        crc = bool(rest) and isinstance(rest[-1], zc.Crc32cCodec)
        rest = rest[:-1] if crc else rest
        kinds = [type(c) for c in rest]
        if kinds == [zc.BloscCodec]:
            return cls("blosc", crc)
        if kinds == [zc.ZstdCodec]:
            return cls("zstd", crc, int(rest[0].level))
        if kinds == [Shuffle, zc.ZstdCodec] and rest[0].codec_config.get("elementsize") == 2:
            return cls("shuffle+zstd", crc, int(rest[1].level))
        if not kinds:
            return cls("none", crc)
        raise ValueError(f"targets use codecs {[type(c).__name__ for c in rest]}, which this reader does not decode")

    def payload(self, chunk: np.ndarray, coords: tuple[int, ...], sample: int = 0) -> np.ndarray:
        """The compressed bytes of an encoded chunk (``[nbytes]`` uint8), its CRC-32C checked."""
        if not self.crc32c:
            return chunk
        if chunk.size < 4:
            raise ChunkError(coords, f"the chunk is {chunk.size} bytes long (truncated)", sample)
        body = chunk[:-4]
        stored = int(chunk[-4:].view("<u4")[0])
        if crc32c(body) != stored:
            raise ChunkError(coords, "its CRC-32C does not match (a damaged or truncated chunk file)", sample)
        return body

    def decode_into(self, payload: np.ndarray, out: np.ndarray, scratch: Callable[[int], np.ndarray]) -> None:
        """Decode compressed bytes into ``out`` (a contiguous uint8 buffer of exactly the decoded size).

        ``scratch(n)`` gives a reusable uint8 buffer of ``n`` bytes (the zstd output before the byte
        shuffle is undone)."""
        if self.compressor == "blosc":
            numcodecs.blosc.decompress(payload, out)
        elif self.compressor == "zstd":
            _zstd.decode(payload, out=out)
        elif self.compressor == "shuffle+zstd":
            tmp = scratch(out.size)
            _zstd.decode(payload, out=tmp)
            unshuffle(tmp, out)
        elif payload.size != out.size:
            raise ValueError(f"an uncompressed chunk of {payload.size} bytes for {out.size}")
        else:
            np.copyto(out, payload)


_zstd = numcodecs.Zstd()


def unshuffle(shuffled: np.ndarray, out: np.ndarray, itemsize: int = 2) -> None:
    """Undo a byte shuffle (all first bytes, then all second bytes, ...) into ``out``."""
    n = out.size // itemsize
    np.copyto(out.reshape(n, itemsize), shuffled.reshape(itemsize, n).T)


def trailer_digest(trailers: np.ndarray) -> int:
    """A sample's format-4 ``targets`` digest: the CRC-32C of the CRC-32C trailers (``[k]`` uint32, in
    chunk order) of the ``k`` chunks that hold it."""
    return crc32c(np.ascontiguousarray(trailers, dtype="<u4").view(np.uint8))


@dataclass(frozen=True)
class Piece:
    """One inner chunk of a read: where it lies in the array and in the caller's output.

    Attributes
    ----------
    coords : tuple of int
        Its chunk coordinates (sample block, target block, 0, 0).
    samples : tuple of int
        ``(first, stop)`` samples of the array it holds (the last chunk may be short).
    targets : tuple of int
        ``(first, stop)`` targets it holds (the last block may reach past ``F``: padding).
    """

    coords: tuple[int, ...]
    samples: tuple[int, int]
    targets: tuple[int, int]


class TargetChunks:
    """Read a ``targets`` array's samples from its stored chunks (see the module docstring).

    Parameters
    ----------
    array : zarr.Array, shape=(N, F, R, L)
        Chunked along the first two axes only (whole positions and rows in every chunk). Any array of
        samples chunked that way reads the same way (``reference``, ``[N, 4, L]``, a unit per chunk).
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.grid = grid = Grid.of(array)
        self.sharding = grid.sharding
        inner = grid.inner
        if inner[2:] != self.shape[2:]:
            raise ValueError(f"targets chunks {inner} split the rows or positions of shape {self.shape}")
        self.chunk = inner
        self.shard = grid.shard
        self.codec = ChunkCodec.of(grid.codecs)
        self.dtype = np.dtype(array.dtype)
        self.sample_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.row_bytes = int(np.prod(self.shape[2:])) * self.dtype.itemsize
        """Bytes of one target of one sample (``R · L`` values)."""
        self.target_blocks = -(-self.shape[1] // inner[1])
        self._files = _LocalFiles(array, grid) if isinstance(array.store_path.store, LocalStore) else None
        self._scratch: dict[str, np.ndarray] = {}

    # -- geometry ---------------------------------------------------------------------------
    def pieces(self, start: int, stop: int) -> list[Piece]:
        """The inner chunks holding samples ``start .. stop - 1``, sample block by sample block, each
        block's target blocks in order."""
        cs, fb = self.chunk[0], self.chunk[1]
        out = []
        for s in range(start // cs, -(-stop // cs)):
            samples = (s * cs, min((s + 1) * cs, self.shape[0]))
            for f in range(self.target_blocks):
                out.append(Piece((s, f) + (0,) * (len(self.shape) - 2), samples, (f * fb, (f + 1) * fb)))
        return out

    def chunk_nbytes(self, piece: Piece) -> int:
        """Decoded bytes of a whole inner chunk (edge chunks are stored padded to the full shape)."""
        return int(np.prod(self.chunk)) * self.dtype.itemsize

    # -- reading ----------------------------------------------------------------------------
    def encoded(self, pieces: Sequence[Piece]) -> list[np.ndarray]:
        """The stored bytes of each piece (``[nbytes]`` uint8, trailer included; read-only views)."""
        coords: list[tuple[int, ...]] = [p.coords for p in pieces]
        if self._files is not None:
            return self._files.read(coords, self.shard_index)
        return _store_read(self.array, self.grid, coords, self.shard_index)

    def trailers(self, pieces: Sequence[Piece]) -> np.ndarray:
        """The CRC-32C trailer of each piece (``[k]`` uint32), read alone (4 bytes each)."""
        if not self.codec.crc32c:
            raise ValueError("the chunks carry no CRC-32C")
        coords: list[tuple[int, ...]] = [p.coords for p in pieces]
        if self._files is not None:
            raw = self._files.read(coords, self.shard_index, tail=4)
        else:
            raw = _store_read(self.array, self.grid, coords, self.shard_index, tail=4)
        for piece, r in zip(pieces, raw):
            if r.size < 4:
                raise ChunkError(piece.coords, f"the chunk is {r.size} bytes long (truncated)", piece.samples[0],
                                 self.file_of(piece.coords))  # fmt: skip
        return np.array([int(r[-4:].view("<u4")[0]) for r in raw], dtype=np.uint32)

    def shard_index(self, shard: tuple[int, ...], data: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """``[chunks in a shard, 2]`` (offset, nbytes) of a shard's inner chunks, from its index
        (``data(offset_from_end_or_start, nbytes)`` reads the shard's bytes); the index's CRC-32C checked."""
        assert self.sharding is not None and self.shard is not None
        per = [self.shard[k] // self.chunk[k] for k in range(len(self.chunk))]
        n = int(np.prod(per))
        crc = any(isinstance(c, zc.Crc32cCodec) for c in self.sharding.index_codecs)
        size = 16 * n + (4 if crc else 0)
        raw = data(-size if self.sharding.index_location.value == "end" else 0, size)
        first = shard[0] * self.shard[0]
        file = self.grid.file(self.array, shard)
        if raw.size != size:
            raise ChunkError(shard, "its shard index is truncated", first, file)
        if crc and crc32c(raw[:-4]) != int(raw[-4:].view("<u4")[0]):
            raise ChunkError(shard, "its shard index does not match its CRC-32C", first, file)
        index = raw[: 16 * n].view("<u8").reshape(*per, 2)
        return index

    def read_into(
        self,
        runs: Sequence[tuple[int, int]],
        out: np.ndarray,
        expected: np.ndarray | None = None,
        digest: str = "trailers",
    ) -> None:
        """Decode samples into ``out`` and check them.

        Parameters
        ----------
        runs : sequence of (start, stop)
            Sample ranges, laid out one after the other in ``out``.
        out : np.ndarray, shape=(n, F, R, L)
            C-contiguous, the array's dtype; written in place.
        expected : np.ndarray, shape=(n,), optional
            The samples' digests (from their completion markers).
        digest : str
            ``"trailers"`` (format 4: :func:`trailer_digest`) or ``"decoded"`` (formats 2 and 3: the
            CRC-32 of each decoded sample).

        Raises
        ------
        ChunkError
            A chunk is missing, truncated, damaged or does not decode.
        DigestError
            A sample does not match its digest.
        """
        flat = out.reshape(len(out), -1).view(np.uint8)

        def decode(piece: Piece, payload: np.ndarray, run: tuple[int, int], at: int) -> None:
            self._decode_piece(payload, piece, run, flat[at : at + run[1] - run[0]])

        self._visit(runs, expected, digest, decode, out)

    def gather_into(
        self, runs: Sequence[tuple[int, int]], buffer: np.ndarray, expected: np.ndarray | None = None
    ) -> np.ndarray:
        """Copy the checked compressed chunks of samples into ``buffer`` (for a device decoder).

        Parameters
        ----------
        runs : sequence of (start, stop)
            Sample ranges (one sample per chunk: see :meth:`gpu_problem`), batch rows in this order.
        buffer : np.ndarray, shape=(nbytes,), uint8
            Where the compressed bytes go, one chunk after the other, each at a multiple of 16 bytes.
        expected : np.ndarray, shape=(n,), optional
            The samples' format-4 digests.

        Returns
        -------
        table : np.ndarray, shape=(k, 4), int64
            Per chunk, in batch-row then target-block order: offset and size in ``buffer``, batch row,
            target block.

        Raises
        ------
        ChunkError, DigestError
            As :meth:`read_into`; ``ChunkError`` also when ``buffer`` is too small.
        """
        rows: list[tuple[int, int, int, int]] = []
        end = 0

        def copy(piece: Piece, payload: np.ndarray, run: tuple[int, int], at: int) -> None:
            nonlocal end
            start = -(-end // 16) * 16
            if start + payload.size > buffer.size:
                raise ChunkError(piece.coords, f"its {payload.size} compressed bytes overflow the batch buffer",
                                 piece.samples[0])  # fmt: skip
            buffer[start : start + payload.size] = payload
            rows.append((start, payload.size, at + piece.samples[0] - run[0], piece.coords[1]))
            end = start + payload.size

        self._visit(runs, expected, "trailers", copy, None)
        return np.array(rows, dtype=np.int64).reshape(-1, 4)

    def gpu_problem(self) -> str | None:
        """Why a device decoder cannot take these chunks (``None``: it can): their codec, or chunks of
        several samples."""
        if self.codec.compressor not in GPU_DECODABLE:
            return f"its targets are compressed with {self.codec.compressor}, which nvCOMP does not decode"
        if self.chunk[0] != 1:
            return f"its targets chunks hold {self.chunk[0]} samples (one per chunk is needed)"
        return None

    def _visit(
        self,
        runs: Sequence[tuple[int, int]],
        expected: np.ndarray | None,
        digest: str,
        sink: Callable[[Piece, np.ndarray, tuple[int, int], int], None],
        out: np.ndarray | None,
    ) -> None:
        """Read each run's chunks, check their CRC-32C, hand each payload to ``sink(piece, payload, run,
        at)`` (``at``: the run's first batch row), then check the run's samples against ``expected``."""
        at = 0
        for run in runs:
            start, stop = run
            pieces = self.pieces(start, stop)
            trailers: dict[int, list[int]] = {}
            for piece, blob in zip(pieces, self.encoded(pieces)):
                try:
                    sink(piece, self.codec.payload(blob, piece.coords, piece.samples[0]), run, at)
                except ChunkError as exc:
                    exc.file = exc.file or self.file_of(piece.coords)
                    raise
                if self.codec.crc32c:
                    trailers.setdefault(piece.coords[0], []).append(int(blob[-4:].view("<u4")[0]))
            if expected is not None:
                values = None if out is None else out[at : at + stop - start]
                self._check_digests(range(start, stop), values, expected, at, trailers, digest)
            at += stop - start

    def _check_digests(
        self,
        samples: range,
        values: np.ndarray | None,
        expected: np.ndarray,
        at: int,
        trailers: dict[int, list[int]],
        kind: str,
    ) -> None:
        for k, sample in enumerate(samples):
            if kind == "trailers":
                got = trailer_digest(np.array(trailers[sample // self.chunk[0]], dtype=np.uint32))
            else:
                assert values is not None
                got = zlib.crc32(np.ascontiguousarray(values[k]).view(np.uint8).data)
            if got != int(expected[at + k]):
                raise DigestError(sample)

    def _decode_piece(self, payload: np.ndarray, piece: Piece, run: tuple[int, int], flat: np.ndarray) -> None:
        """Decode one chunk into the rows of ``flat`` (``[run samples, sample bytes]`` uint8) it covers:
        straight into place when its decoded bytes are exactly a contiguous part of them, else through a
        scratch buffer (a chunk of several samples read in part, a short last chunk, the padded last
        block of targets)."""
        (c0, c1), (f0, f1) = piece.samples, piece.targets
        cs, F, rb = self.chunk[0], self.shape[1], self.row_bytes
        a, b = max(c0, run[0]), min(c1, run[1])
        rows = flat[a - run[0] : b - run[0]]
        if (a, b) == (c0, c0 + cs) and f1 <= F and (cs == 1 or (f0, f1) == (0, F)):
            self._decode(payload, rows[:, f0 * rb : f1 * rb].reshape(-1), piece)
            return
        tmp = self.scratch("chunk", self.chunk_nbytes(piece))
        self._decode(payload, tmp, piece)
        width = (min(f1, F) - f0) * rb
        rows[:, f0 * rb : f0 * rb + width] = tmp.reshape(cs, -1)[a - c0 : b - c0, :width]

    def _decode(self, payload: np.ndarray, out: np.ndarray, piece: Piece) -> None:
        try:
            self.codec.decode_into(payload, out, lambda n: self.scratch("shuffled", n))
        except ChunkError:
            raise
        except Exception as exc:  # noqa: BLE001 - numcodecs raises several types for an undecodable chunk
            detail = " ".join(str(exc).split())[:80]
            raise ChunkError(
                piece.coords, f"it does not decode ({type(exc).__name__}: {detail})", piece.samples[0]
            ) from None

    def file_of(self, coords: tuple[int, ...]) -> str:
        """The key, from the store's root, of the file holding inner chunk ``coords`` (its shard's,
        when sharded): what a message about a damaged chunk names."""
        outer = tuple(c // p for c, p in zip(coords, self.grid.per_shard()))
        return self.grid.file(self.array, outer)

    def scratch(self, name: str, nbytes: int) -> np.ndarray:
        """A reusable uint8 buffer of ``nbytes`` bytes (one per name, grown when needed)."""
        buf = self._scratch.get(name)
        if buf is None or buf.size < nbytes:
            buf = self._scratch[name] = np.empty(nbytes, dtype=np.uint8)
        return buf[:nbytes]

    def digests(self, start: int, stop: int) -> np.ndarray:
        """The format-4 digests of samples ``start .. stop - 1`` (``[n]`` uint32), from their chunks'
        trailers as stored (what ``distill`` records in the completion marker after writing them)."""
        pieces = self.pieces(start, stop)
        values = self.trailers(pieces)
        by_block: dict[int, list[int]] = {}
        for piece, value in zip(pieces, values.tolist()):
            by_block.setdefault(piece.coords[0], []).append(value)
        return np.array(
            [trailer_digest(np.array(by_block[k // self.chunk[0]], dtype=np.uint32)) for k in range(start, stop)],
            dtype=np.uint32,
        )


class Encoded(NamedTuple):
    """One inner chunk as stored: its coordinates, bytes (trailer included) and CRC-32C trailer."""

    coords: tuple[int, ...]
    data: bytes
    trailer: int


class TargetWriter:
    """Encode a ``targets`` array's chunks exactly as zarr does (byte for byte: numcodecs with zarr's
    settings; a shard's inner chunks, index and index checksum as the sharding codec lays them out) and
    write them through its store, so the writer knows every chunk's CRC-32C trailer without reading
    anything back: a sample's format-4 digest (:func:`trailer_digest`) is of exactly the bytes written.

    Parameters
    ----------
    array : zarr.Array, shape=(N, F, R, L)
        As :class:`TargetChunks` (chunked along the first two axes only).
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array, self.reader = array, TargetChunks(array)
        sharding = self.reader.sharding
        self.steps = [_numcodecs_of(c) for c in self.reader.grid.codecs[1:] if not isinstance(c, zc.Crc32cCodec)]
        self.crc32c = self.reader.codec.crc32c
        if sharding is not None:
            kinds = [type(c) for c in sharding.index_codecs]
            if (
                kinds not in ([zc.BytesCodec, zc.Crc32cCodec], [zc.BytesCodec])
                or sharding.index_location.value != "end"
            ):
                raise ValueError(f"shard index codecs {sharding.index_codecs} are not the ones stores are written with")
        self.index_crc = sharding is not None and any(isinstance(c, zc.Crc32cCodec) for c in sharding.index_codecs)

    def encode_tasks(self, start: int, stop: int, values: np.ndarray) -> list[Callable[[], Encoded]]:
        """One task per inner chunk holding samples ``start .. stop - 1`` (``values`` ``[stop - start,
        F, R, L]``, the array's dtype), each returning the chunk :class:`Encoded` (run them on threads)."""
        r = self.reader
        block = (r.shard or r.chunk)[0]
        if start % block or (stop != r.shape[0] and stop % block):
            raise ValueError(f"samples {start}-{stop - 1} are not whole chunks or shards of {block}")
        return [partial(self._encode, p, start, values) for p in r.pieces(start, stop)]

    def _encode(self, piece: Piece, start: int, values: np.ndarray) -> Encoded:
        r = self.reader
        (c0, c1), (f0, f1) = piece.samples, piece.targets
        F = r.shape[1]
        chunk = values[c0 - start : c1 - start, f0 : min(f1, F)]
        if chunk.shape[:2] != r.chunk[:2]:  # a short last chunk, the padded last block: zarr pads with 0
            full = np.zeros(r.chunk, dtype=r.dtype)
            full[: chunk.shape[0], : chunk.shape[1]] = chunk
            chunk = full
        data: Any = np.ascontiguousarray(chunk, dtype=r.dtype.newbyteorder("<")).view(np.uint8).reshape(-1)
        for step in self.steps:
            data = step.encode(data)
        body = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
        if not self.crc32c:
            return Encoded(piece.coords, body.tobytes(), 0)
        trailer = crc32c(body)
        return Encoded(piece.coords, body.tobytes() + np.uint32(trailer).astype("<u4").tobytes(), trailer)

    def files(self, encoded: Sequence[Encoded]) -> list[tuple[str, bytes]]:
        """The store keys and bytes that hold ``encoded`` chunks: each chunk, or each shard built of its
        inner chunks (an inner chunk past the array's last sample is absent, as zarr leaves it)."""
        r = self.reader
        prefix = f"{self.array.store_path.path}/" if self.array.store_path.path else ""
        if r.shard is None:
            return [(prefix + r.grid.key(e.coords), e.data) for e in encoded]
        per = [r.shard[k] // r.chunk[k] for k in range(len(r.chunk))]
        shards: dict[tuple[int, ...], list[Encoded]] = {}
        for e in encoded:
            shards.setdefault(tuple(e.coords[k] // per[k] for k in range(len(r.chunk))), []).append(e)
        out = []
        for outer, members in shards.items():
            index = np.full((*per, 2), 2**64 - 1, dtype="<u8")
            parts, at = [], 0
            for e in members:
                index[tuple(e.coords[k] % per[k] for k in range(len(r.chunk)))] = (at, len(e.data))
                parts.append(e.data)
                at += len(e.data)
            raw_index = index.tobytes()
            if self.index_crc:
                raw_index += np.uint32(crc32c(np.frombuffer(raw_index, np.uint8))).astype("<u4").tobytes()
            out.append((prefix + r.grid.key(outer), b"".join(parts) + raw_index))
        return out

    def digests(self, start: int, stop: int, encoded: Sequence[Encoded]) -> np.ndarray:
        """The format-4 digests (``[stop - start]`` uint32) of samples ``start .. stop - 1`` from their
        chunks' trailers."""
        by_block: dict[int, list[tuple[int, int]]] = {}
        for e in encoded:
            by_block.setdefault(e.coords[0], []).append((e.coords[1], e.trailer))
        cs = self.reader.chunk[0]
        return np.array(
            [
                trailer_digest(np.array([t for _, t in sorted(by_block[k // cs])], dtype=np.uint32))
                for k in range(start, stop)
            ],
            dtype=np.uint32,
        )

    def put(self, key: str, data: bytes) -> None:
        """Write one chunk or shard file through the array's store."""
        store = self.array.store_path.store
        sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def _numcodecs_of(codec: Any) -> Any:
    """The numcodecs encoder zarr uses for a bytes-to-bytes codec, with zarr's settings."""
    if isinstance(codec, zc.BloscCodec):
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[codec.shuffle.value]
        return numcodecs.Blosc(codec.cname.value, codec.clevel, shuffle, codec.blocksize, codec.typesize)
    if isinstance(codec, zc.ZstdCodec):
        return numcodecs.Zstd(level=codec.level, checksum=codec.checksum)
    if isinstance(codec, Shuffle):
        config: Any = codec.codec_config
        return numcodecs.Shuffle(elementsize=int(config["elementsize"]))
    raise ValueError(f"targets use codec {type(codec).__name__}, which this writer does not encode")


@dataclass(frozen=True)
class Grid:
    """How an array is cut into stored objects.

    Attributes
    ----------
    sharding : zarr.codecs.ShardingCodec or None
    inner : tuple of int
        The shape of a chunk (inside a shard, when sharded).
    shard : tuple of int or None
        The shape of a shard.
    codecs : tuple
        The codecs of a chunk (the shard's inner codecs when sharded).
    metadata : object
        The array's zarr metadata (chunk keys).
    """

    sharding: Any
    inner: tuple[int, ...]
    shard: tuple[int, ...] | None
    codecs: tuple[Any, ...]
    metadata: Any

    @classmethod
    def of(cls, array: zarr.Array) -> Grid:
        """The grid of a Zarr v3 array."""
        metadata: Any = array.metadata
        codecs = tuple(metadata.codecs)
        sharding = codecs[0] if isinstance(codecs[0], zc.ShardingCodec) else None
        if sharding is None:
            return cls(None, tuple(int(c) for c in array.chunks), None, codecs, metadata)
        shard = tuple(int(s) for s in (array.shards or ()))
        return cls(sharding, tuple(int(c) for c in sharding.chunk_shape), shard, tuple(sharding.codecs), metadata)

    @property
    def outer(self) -> tuple[int, ...]:
        """The shape of a stored object (a shard, else a chunk)."""
        return self.shard or self.inner

    def per_shard(self) -> list[int]:
        """Inner chunks per shard along each axis."""
        return [o // i for o, i in zip(self.outer, self.inner)]

    def key(self, coords: tuple[int, ...]) -> str:
        """The store key of chunk (or shard) ``coords``, relative to the array."""
        return str(self.metadata.encode_chunk_key(coords))

    def file(self, array: zarr.Array, coords: tuple[int, ...]) -> str:
        """The store key of chunk (or shard) ``coords`` of ``array``, from the store's root."""
        return f"{array.store_path.path}/{self.key(coords)}" if array.store_path.path else self.key(coords)


class _LocalFiles:
    """Chunk bytes of an array on a local store: each file memory-mapped (read-only, no copy), a
    shard's inner chunks sliced out of the mapping through its index (cached per shard)."""

    def __init__(self, array: zarr.Array, grid: Grid) -> None:
        store: Any = array.store_path.store
        self.root = Path(store.root) / array.store_path.path
        self.array = array
        self.grid = grid
        self.sharded = grid.sharding is not None
        self.shape = grid.outer
        self.inner = grid.inner
        self._shard: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None

    def mapped(self, coords: tuple[int, ...]) -> np.ndarray:
        """The whole stored file of chunk (or shard) ``coords``, memory-mapped."""
        path = self.root / self.grid.key(coords)
        sample = coords[0] * self.shape[0]
        file = self.grid.file(self.array, coords)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ChunkError(coords, "its file is missing", sample, file) from None
        except OSError as exc:
            raise ChunkError(coords, f"its file cannot be read ({exc.strerror or exc})", sample, file) from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise ChunkError(coords, "its file is empty", sample, file)
            return np.frombuffer(mmap.mmap(fd, size, access=mmap.ACCESS_READ), dtype=np.uint8)
        finally:
            os.close(fd)

    def read(
        self,
        coords: list[tuple[int, ...]],
        shard_index: Callable[[tuple[int, ...], Callable[[int, int], np.ndarray]], np.ndarray],
        tail: int | None = None,
    ) -> list[np.ndarray]:
        if not self.sharded:
            out = [self.mapped(c) for c in coords]
            return [o[-tail:] for o in out] if tail else out
        per = [self.shape[k] // self.inner[k] for k in range(len(self.shape))]
        result = []
        for c in coords:
            outer = tuple(c[k] // per[k] for k in range(len(c)))
            if self._shard is None or self._shard[0] != outer:  # reads go shard by shard: keep the latest
                data = self.mapped(outer)
                index = shard_index(outer, partial(_slice, data))
                self._shard = (outer, data, index)
            _, data, index = self._shard
            offset, nbytes = (int(v) for v in index[tuple(c[k] % per[k] for k in range(len(c)))])
            file = self.grid.file(self.array, outer)
            if offset == 2**64 - 1:
                raise ChunkError(c, "it is missing from its shard", c[0] * self.inner[0], file)
            if offset + nbytes > data.size:
                raise ChunkError(c, "its shard is truncated", c[0] * self.inner[0], file)
            chunk = data[offset : offset + nbytes]
            result.append(chunk[-tail:] if tail else chunk)
        return result


def _slice(data: np.ndarray, at: int, n: int) -> np.ndarray:
    """``n`` bytes of ``data`` from ``at`` (from the end when negative)."""
    return data[at : at + n] if at >= 0 else data[at:][:n]


def _store_read(
    array: zarr.Array,
    grid: Grid,
    coords: list[tuple[int, ...]],
    shard_index: Callable[[tuple[int, ...], Callable[[int, int], np.ndarray]], np.ndarray],
    tail: int | None = None,
) -> list[np.ndarray]:
    """Chunk bytes through zarr's store API (object stores, fsspec URLs, memory): concurrent requests."""
    store = array.store_path.store
    prefix = f"{array.store_path.path}/" if array.store_path.path else ""
    proto = default_buffer_prototype()
    sharded = grid.sharding is not None

    async def get(key: str, byte_range: Any = None) -> np.ndarray | None:
        buf = await store.get(key, prototype=proto, byte_range=byte_range)
        return None if buf is None else np.frombuffer(buf.to_bytes(), dtype=np.uint8)

    def key(c: tuple[int, ...]) -> str:
        return prefix + grid.key(c)

    if not sharded:

        async def plain() -> list[np.ndarray | None]:
            return await asyncio.gather(*(get(key(c), SuffixByteRequest(tail) if tail else None) for c in coords))

        blobs = sync(plain())
        for c, b in zip(coords, blobs):
            if b is None:
                raise ChunkError(c, "its chunk is missing", c[0] * grid.inner[0], key(c))
        return [b for b in blobs if b is not None]
    shard, inner, per = grid.outer, grid.inner, grid.per_shard()
    out = []
    for c in coords:
        outer = tuple(c[k] // per[k] for k in range(len(c)))
        k_outer = key(outer)

        def data(at: int, n: int, k_outer: str = k_outer, outer: tuple[int, ...] = outer) -> np.ndarray:
            rng = SuffixByteRequest(-at) if at < 0 else RangeByteRequest(at, at + n)
            got = sync(get(k_outer, rng))
            if got is None:
                raise ChunkError(outer, "its shard is missing", outer[0] * shard[0], k_outer)
            return got[:n]

        index = shard_index(outer, data)
        offset, nbytes = (int(v) for v in index[tuple(c[k] % per[k] for k in range(len(c)))])
        if offset == 2**64 - 1:
            raise ChunkError(c, "it is missing from its shard", c[0] * inner[0], k_outer)
        start = offset + nbytes - tail if tail else offset
        out.append(data(start, offset + nbytes - start))
    return out


def runs_of(indices: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Sorted distinct sample indices as ``(start, stop)`` runs of consecutive samples."""
    it = iter(indices)
    try:
        start = prev = next(it)
    except StopIteration:
        return
    for i in it:
        if i != prev + 1:
            yield start, prev + 1
            start = i
        prev = i
    yield start, prev + 1
