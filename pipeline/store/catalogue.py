"""The catalogue store: every SNV's effect along a genome, written in position units with markers.

Layout (Zarr v3; one group per contig, named by its index, ``c0``, ``c1``, ...; the contig's name is
in the root attributes)::

    CAT.zarr/
      zarr.json                   attributes: format, the plan (contigs, regions, stride, units), targets,
                                  model identity, genome fingerprint, batch size, score semantics
      c<k>/ref          uint8    [n]           0..3 the base (A, G, C, T), 4 = N, 255 = not catalogued
      c<k>/effects      float16  [n, 3, T]     the selected targets' effects of the 3 other bases, in
                                               alphabet order (NaN where not catalogued or N)
      c<k>/max_abs      float16  [n, 3]        largest |effect| over all the model's targets
      c<k>/top_target   int16    [n, 3]        its index among ``all_target_names`` (-1: none)
      c<k>/complete     uint32   [units, 1 + 4 B]
                                               per unit (one chunk each): 1, then the CRC-32 of each
                                               block's bytes of each array (B blocks per unit)

A contig is cut into units of ``unit_positions`` positions (one shard of every array, made of inner
chunks, *blocks*, of ``block_positions`` positions, so a random lookup decodes one small chunk, not the
unit); only the units that overlap the requested regions are computed. Every chunk of a unit is
written, even one that equals the fill value (a unit wholly in ``N``), so a missing shard file always
means lost data. A unit's marker, its own chunk (no two processes ever write the same marker chunk),
is written after its shards are on disk, so a killed run leaves it unmarked and a rerun redoes it.

Reads are checked (:class:`CheckedReader`): a block is used only when its shard exists, decodes (every
inner chunk ends with a CRC-32C; the shard index has one too) and matches its digest in the marker, so
``lookup`` and ``score-vcf --catalogue`` never serve a damaged, missing or swapped chunk.

Format 1 (markers ``[units, 5]`` in one chunk per contig, one digest per unit and array, no chunk
CRC-32C, all-fill shards not written) is still read and verified; ``store upgrade`` turns it into
format 2 (:func:`upgrade_catalogue`).
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.codecs as zc
from tqdm import tqdm
from zarr.core.array_spec import ArrayConfigParams

from pipeline.core.files import fsync_path
from pipeline.core.genome import fingerprint_difference
from pipeline.core.progress import plural
from pipeline.errors import DamagedDataError, MetadataError, StoreMismatchError, UserError
from pipeline.store.chunks import chunk_keys, chunks_exist, stored_bytes
from pipeline.store.format import group_node
from pipeline.store.meta_digest import (
    DAMAGED_METADATA,
    checked_attrs,
    has_meta_digest,
    meta_digest_problems,
    seal,
    unsealed_note,
    write_meta_digest,
)
from pipeline.store.store import bulk_reads, create_atomically
from pipeline.store.writes import sync_written, write_settled

FORMAT = "multiplexer-catalogue"
VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Format versions this package reads (it writes only :data:`VERSION`)."""
NOT_CATALOGUED = 255
"""``ref`` of a position outside the requested regions."""
N_CODE = 4
"""``ref`` of an ``N`` (any non-ACGT) position: no effects (NaN)."""
ARRAYS = ("ref", "effects", "max_abs", "top_target")
"""The arrays of a contig group whose bytes are digested in the marker, in marker order."""
DTYPES: dict[str, type[np.generic]] = {
    "ref": np.uint8,
    "effects": np.float16,
    "max_abs": np.float16,
    "top_target": np.int16,
}
IDENTITY_KEYS = (
    "seq_len",
    "stride",
    "unit_positions",
    "block_positions",
    "target_names",
    "contigs",
    "model",
    "genome_fingerprint",
    "batch_size",
)
"""What a rerun must agree on to extend an existing catalogue (``batch_size``: the float32 sums of a
batched forward pass depend on the batch's size; ``None`` in catalogues upgraded from format 1, which
did not record it, is not compared)."""
CACHE_BYTES = 64 * 1024**2
"""Decoded data a :class:`CheckedReader` keeps in memory (about 1,000 blocks: queries in genome order
read each block once)."""
CACHED_MARKERS = 4096
"""Marker rows (one per unit) a :class:`CheckedReader` keeps in memory."""
REPAIR = (
    "`multiplexer store verify --unmark-damaged {path}` marks every damaged unit incomplete, and a rerun of "
    "catalogue recomputes just those"
)
WRITE_EMPTY: ArrayConfigParams = {"write_empty_chunks": True}
"""Every chunk written is stored, even one equal to the fill value: a missing shard is lost data."""


@dataclass(frozen=True)
class Contig:
    """A contig of the catalogue: its name, length and the merged 0-based half-open regions catalogued."""

    name: str
    length: int
    regions: tuple[tuple[int, int], ...]

    def units(self, unit_positions: int) -> list[int]:
        """The units (0-based, of ``unit_positions`` positions) that overlap the regions."""
        out: set[int] = set()
        for start, end in self.regions:
            out.update(range(start // unit_positions, (end - 1) // unit_positions + 1))
        return sorted(out)

    def n_units(self, unit_positions: int) -> int:
        """Units of the whole contig (the marker array's length)."""
        return -(-self.length // unit_positions)


@dataclass(frozen=True)
class CatalogueMeta:
    """What a catalogue holds and how it was made (the root attributes)."""

    seq_len: int
    stride: int
    unit_positions: int
    block_positions: int
    """Positions per inner chunk of a unit's shard: what a random lookup decodes."""
    target_names: list[str]
    all_target_names: list[str]
    contigs: list[Contig]
    model: dict[str, Any]
    genome_fingerprint: dict[str, Any]
    semantics: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    """Windows per forward pass (``None``: not recorded, a catalogue upgraded from format 1)."""

    def attrs(self) -> dict[str, Any]:
        """The root attributes (JSON)."""
        out = asdict(self)
        out["contigs"] = [
            {"name": c.name, "length": c.length, "regions": [list(r) for r in c.regions]} for c in self.contigs
        ]
        return {"format": FORMAT, "format_version": VERSION, **out}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> CatalogueMeta:
        """Read the root attributes back."""
        contigs = [
            Contig(c["name"], int(c["length"]), tuple((int(a), int(b)) for a, b in c["regions"]))
            for c in attrs["contigs"]
        ]
        return cls(
            int(attrs["seq_len"]),
            int(attrs["stride"]),
            int(attrs["unit_positions"]),
            int(attrs["block_positions"]),
            list(attrs["target_names"]),
            list(attrs["all_target_names"]),
            contigs,
            dict(attrs["model"]),
            dict(attrs["genome_fingerprint"]),
            dict(attrs.get("semantics", {})),
            None if attrs.get("batch_size") is None else int(attrs["batch_size"]),
        )

    @property
    def blocks_per_unit(self) -> int:
        """Inner chunks (blocks) of a unit's shard: ``unit_positions / block_positions``."""
        return -(-self.unit_positions // self.block_positions)

    def work_units(self) -> list[tuple[int, int]]:
        """Every unit to compute, ``(contig index, unit)``, in genome order (what shards split)."""
        return [(k, u) for k, c in enumerate(self.contigs) for u in c.units(self.unit_positions)]

    def unit_range(self, contig: int, unit: int) -> tuple[int, int]:
        """0-based half-open positions of a unit."""
        start = unit * self.unit_positions
        return start, min(start + self.unit_positions, self.contigs[contig].length)

    def contig_index(self, name: str) -> int | None:
        """The index of contig ``name`` (``None``: not in the catalogue)."""
        return next((k for k, c in enumerate(self.contigs) if c.name == name), None)

    def unit_where(self, contig: int, unit: int) -> str:
        """How messages name a unit: ``chrA unit 3 (positions 181-240)``."""
        start, stop = self.unit_range(contig, unit)
        return f"{self.contigs[contig].name} unit {unit} (positions {start + 1}-{stop})"


def _key(contig: int) -> str:
    return f"c{contig}"


def unit_digests(data: Mapping[str, np.ndarray]) -> np.ndarray:
    """Format 1's marker row of a unit: ``[1, crc32(ref), crc32(effects), crc32(max_abs), crc32(top_target)]``."""
    crcs = [zlib.crc32(np.ascontiguousarray(data[name]).data) for name in ARRAYS]
    return np.array([1, *crcs], dtype=np.uint32)


def block_digests(data: Mapping[str, np.ndarray], block_positions: int, blocks: int) -> np.ndarray:
    """The CRC-32 of each block's bytes in each array of a unit, as stored.

    Parameters
    ----------
    data : dict of np.ndarray, each shape=(n, ...)
        The unit's arrays (:data:`ARRAYS`, in their stored dtypes).
    block_positions, blocks : int
        Positions per block, blocks per unit.

    Returns
    -------
    np.ndarray, shape=(blocks, len(ARRAYS)), uint32
        0 for the blocks a short last unit does not have.
    """
    out = np.zeros((blocks, len(ARRAYS)), dtype=np.uint32)
    for j, name in enumerate(ARRAYS):
        values = np.ascontiguousarray(data[name])
        for b in range(-(-len(values) // block_positions)):
            out[b, j] = zlib.crc32(values[b * block_positions : (b + 1) * block_positions].data)
    return out


def marker_row(data: Mapping[str, np.ndarray], meta: CatalogueMeta) -> np.ndarray:
    """The completion marker of a unit (format 2): ``[1, d(0, ref), d(0, effects), d(0, max_abs),
    d(0, top_target), d(1, ref), ...]`` (uint32), ``d(b, a)`` the CRC-32 of block ``b`` of array ``a``."""
    digests = block_digests(data, meta.block_positions, meta.blocks_per_unit)
    return np.concatenate([np.ones(1, dtype=np.uint32), digests.ravel()])


def marker_width(meta: CatalogueMeta) -> int:
    """Columns of a format-2 marker row."""
    return 1 + len(ARRAYS) * meta.blocks_per_unit


class Catalogue:
    """An open catalogue store (use :func:`open_catalogue` or :func:`create_or_open_catalogue`)."""

    def __init__(self, group: zarr.Group, path: str, *, check: bool = True) -> None:
        self.group, self.path = group, path
        attrs = checked_attrs(group, "catalogue", path, check=check)
        self.version = int(str(attrs.get("format_version", 1)))
        if self.version not in READABLE_VERSIONS:
            raise UserError(
                f"catalogue {path!r} has format version {self.version}; this version of multiplexer reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        self.meta = CatalogueMeta.from_attrs(attrs)
        self._arrays: dict[tuple[int, str], zarr.Array] = {}

    def array(self, contig: int, name: str) -> zarr.Array:
        """Array ``name`` of contig ``contig`` (opened once: its metadata is read on first use); every
        chunk written through it is stored, even one equal to the fill value."""
        key = (contig, name)
        if key not in self._arrays:
            group = group_node(self.group, _key(contig), zarr.Group, "contig group")
            array: zarr.Array = group_node(group, name, zarr.Array, "array")
            self._arrays[key] = array.with_config(WRITE_EMPTY)
        return self._arrays[key]

    def forget_arrays(self) -> None:
        """Forget the opened array handles (after arrays were replaced on disk)."""
        self._arrays.clear()

    def markers(self, contig: int) -> np.ndarray:
        """The marker rows of a contig, ``[units, width]`` (an unreadable marker reads as not complete)."""
        return _read_markers(self.array(contig, "complete"))

    def marker(self, contig: int, unit: int) -> np.ndarray:
        """The marker row of one unit (format 2: one small read; zeros when unreadable)."""
        return _marker_or_zero(self.array(contig, "complete"), unit)

    def complete(self, contig: int) -> np.ndarray:
        """Which units of a contig are complete, ``[units]`` bool."""
        return self.markers(contig)[:, 0] == 1

    def complete_work_units(self) -> np.ndarray:
        """Which of :meth:`CatalogueMeta.work_units` are complete, ``[len(work_units)]`` bool (every
        contig's markers read once)."""
        done = {k: self.complete(k) for k in range(len(self.meta.contigs))}
        return np.array([bool(done[k][u]) for k, u in self.meta.work_units()], dtype=bool)

    def write_unit(self, contig: int, unit: int, data: Mapping[str, np.ndarray]) -> None:
        """Write the arrays of one unit (all positions of it), wait for every shard, flush, then mark it.

        Every shard is written, even one equal to the fill value (a unit wholly in ``N``); the marker
        is the unit's own chunk, so shards of other units writing at once never touch it.
        """
        if self.version != VERSION:
            raise UserError(
                f"catalogue {self.path!r} has format {self.version}; upgrade it first: "
                f"`multiplexer store upgrade {self.path}`"
            )
        start, stop = self.meta.unit_range(contig, unit)
        values = {
            name: np.ascontiguousarray(np.asarray(data[name]).astype(DTYPES[name], copy=False)) for name in ARRAYS
        }
        for name, value in values.items():
            if len(value) != stop - start:
                raise ValueError(
                    f"unit {unit} of contig {contig}: {name} has {len(value)} positions, not {stop - start}"
                )
        writes = [(self.array(contig, name), slice(start, stop), values[name]) for name in ARRAYS]
        write_settled(writes)
        sync_written(writes)
        self.array(contig, "complete")[unit] = marker_row(values, self.meta)

    def unmark(self, contig: int, unit: int) -> None:
        """Mark a unit incomplete (a rerun of catalogue recomputes it)."""
        array = self.array(contig, "complete")
        array[unit] = np.zeros(array.shape[1], dtype=np.uint32)

    def read_block(self, contig: int, block: int, name: str) -> np.ndarray:
        """Array ``name`` over one block (``block_positions`` positions) as stored, **not checked**
        (:class:`CheckedReader` checks)."""
        start = block * self.meta.block_positions
        stop = min(start + self.meta.block_positions, self.meta.contigs[contig].length)
        return np.asarray(self.array(contig, name)[start:stop])

    def read_unit(self, contig: int, unit: int) -> dict[str, np.ndarray]:
        """The arrays of one unit as stored, **not checked** (:func:`unit_problem` checks)."""
        start, stop = self.meta.unit_range(contig, unit)
        return {name: np.asarray(self.array(contig, name)[start:stop]) for name in ARRAYS}

    def shard_key(self, contig: int, unit: int, name: str) -> str:
        """The store key of a unit's shard of array ``name`` (``c0/effects/c/3/0/0``)."""
        array = self.array(contig, name)
        return chunk_keys(array, [(unit,) + (0,) * (array.ndim - 1)])[0]

    def missing_shards(self, contig: int, units: Sequence[int]) -> dict[int, str]:
        """``{unit: array name}`` for each of ``units`` with a missing shard file (the first missing
        array); one existence check per shard, no data read."""
        out: dict[int, str] = {}
        for name in ARRAYS:
            array = self.array(contig, name)
            coords = [(u,) + (0,) * (array.ndim - 1) for u in units]
            for u, present in zip(units, chunks_exist(array, coords)):
                if not present:
                    out.setdefault(u, name)
        return out


def _read_markers(array: zarr.Array) -> np.ndarray:
    """Every marker row of a contig (a damaged row reads as zeros: that unit is not complete)."""
    with bulk_reads():
        try:
            return np.asarray(array[:])
        except Exception:  # noqa: BLE001 - a marker damaged (a kill while writing it): read row by row
            return np.stack([_marker_or_zero(array, u) for u in range(array.shape[0])])


def _marker_or_zero(array: zarr.Array, unit: int) -> np.ndarray:
    try:
        return np.asarray(array[unit])
    except Exception:  # noqa: BLE001 - unreadable: not complete, so a rerun redoes the unit
        return np.zeros(array.shape[1:], dtype=array.dtype)


# ---------------------------------------------------------------------------------------------
# checked reads
# ---------------------------------------------------------------------------------------------


def _damage(cat: Catalogue, contig: int, unit: int, problem: str) -> DamagedDataError:
    where = f"catalogue {cat.path!r}: {cat.meta.unit_where(contig, unit)}"
    return DamagedDataError(f"{where}: {problem}; {REPAIR.format(path=cat.path)}")


def _decode(cat: Catalogue, contig: int, unit: int, name: str, start: int, stop: int) -> np.ndarray:
    """Positions ``[start, stop)`` of array ``name``; a chunk that fails to decode (CRC-32C, zstd, the
    shard index) is a :class:`DamagedDataError` naming the unit."""
    try:
        return np.asarray(cat.array(contig, name)[start:stop])
    except Exception as exc:  # noqa: BLE001 - zarr and the codecs raise ValueError, RuntimeError, ...
        detail = " ".join(str(exc).split())[:100]
        raise _damage(
            cat,
            contig,
            unit,
            f"{name} of positions {start + 1}-{stop} cannot be read ({type(exc).__name__}: "
            f"{detail}): its shard file {cat.shard_key(contig, unit, name)} is damaged",
        ) from None


def _missing_shard(cat: Catalogue, contig: int, unit: int, name: str) -> str:
    return f"the shard file of {name} ({cat.shard_key(contig, unit, name)}) is missing"


def _mismatch(name: str, start: int, stop: int) -> str:
    return (
        f"{name} of positions {start + 1}-{stop} does not match the checksum written with it (a damaged shard file, "
        "or one swapped with another unit's)"
    )


class CheckedReader:
    """Reads a catalogue's values for queries, checking everything it returns.

    A value comes from its block (one inner chunk, ``block_positions`` positions), read when first
    needed and used only once it has passed every check: its unit is marked complete, the unit's shard
    file exists (a missing one would read as fill values: ``NaN``, not catalogued), every chunk decodes
    (CRC-32C of the inner chunk and of the shard index, zstd) and the decoded block's CRC-32 equals the
    digest the unit's marker recorded when it was written. A format-1 catalogue, whose markers hold one
    digest per unit and array, is checked a whole unit's array at a time. Any failure is a
    :class:`~pipeline.errors.DamagedDataError` naming the contig and unit; nothing unchecked is returned.

    Checked data (:data:`CACHE_BYTES`) and marker rows (:data:`CACHED_MARKERS`) are kept in memory,
    least recently used first out, so queries in genome order read each block and marker once.
    """

    def __init__(self, cat: Catalogue) -> None:
        self.cat, self.meta = cat, cat.meta
        self._data: OrderedDict[tuple[int, int, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._markers: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._contig_markers: dict[int, np.ndarray] = {}
        self._present: OrderedDict[tuple[int, int], set[str]] = OrderedDict()

    def marker(self, contig: int, unit: int) -> np.ndarray:
        """The marker row of a unit (format 2: read when first needed; format 1: the contig's at once)."""
        if self.cat.version == 1:
            if contig not in self._contig_markers:
                self._contig_markers[contig] = self.cat.markers(contig)
            return self._contig_markers[contig][unit]
        key = (contig, unit)
        row = self._markers.get(key)
        if row is None:
            row = self._markers[key] = self.cat.marker(contig, unit)
            if len(self._markers) > CACHED_MARKERS:
                self._markers.popitem(last=False)
        self._markers.move_to_end(key)
        return row

    def complete(self, contig: int, unit: int) -> bool:
        """Whether a unit is marked complete."""
        return bool(self.marker(contig, unit)[0] == 1)

    def value(self, contig: int, position: int, name: str) -> np.ndarray:
        """Array ``name`` at 0-based ``position`` of a contig (in a complete unit), checked."""
        P, C = self.meta.unit_positions, self.meta.block_positions
        if self.cat.version == 1:
            unit = position // P
            return self._cached((contig, unit, name), lambda: self._load_unit(contig, unit, name))[position % P]
        block = position // C
        return self._cached((contig, block, name), lambda: self.block(contig, block, name))[position % C]

    def block(self, contig: int, block: int, name: str) -> np.ndarray:
        """Array ``name`` over one block of a complete unit (format 2), read and checked.

        Raises
        ------
        DamagedDataError
            The unit is not marked complete, its shard is missing, a chunk does not decode, or the
            block's bytes differ from its digest.
        """
        P, C = self.meta.unit_positions, self.meta.block_positions
        unit, offset = divmod(block * C, P)
        row = self._checked_unit(contig, unit, name)
        start = block * C
        stop = min(start + C, self.meta.contigs[contig].length)
        values = _decode(self.cat, contig, unit, name, start, stop)
        digest = row[1 + (offset // C) * len(ARRAYS) + ARRAYS.index(name)]
        if zlib.crc32(np.ascontiguousarray(values).data) != digest:
            raise _damage(self.cat, contig, unit, _mismatch(name, start, stop))
        return values

    def _load_unit(self, contig: int, unit: int, name: str) -> np.ndarray:
        """A format-1 unit's array ``name``, checked against the unit's digest."""
        row = self._checked_unit(contig, unit, name)
        start, stop = self.meta.unit_range(contig, unit)
        values = _decode(self.cat, contig, unit, name, start, stop)
        if zlib.crc32(np.ascontiguousarray(values).data) != row[1 + ARRAYS.index(name)]:
            raise _damage(self.cat, contig, unit, _mismatch(name, start, stop))
        return values

    def _checked_unit(self, contig: int, unit: int, name: str) -> np.ndarray:
        """The marker row of a complete unit whose shard of ``name`` exists."""
        row = self.marker(contig, unit)
        if row[0] != 1:
            raise UserError(f"catalogue {self.cat.path!r}: {self.meta.unit_where(contig, unit)} is not complete")
        present = self._present.setdefault((contig, unit), set())
        self._present.move_to_end((contig, unit))
        if len(self._present) > CACHED_MARKERS:
            self._present.popitem(last=False)
        if name not in present:
            array = self.cat.array(contig, name)
            if not chunks_exist(array, [(unit,) + (0,) * (array.ndim - 1)])[0]:
                raise _damage(self.cat, contig, unit, _missing_shard(self.cat, contig, unit, name))
            present.add(name)
        return row

    def _cached(self, key: tuple[int, int, str], load: Callable[[], np.ndarray]) -> np.ndarray:
        data = self._data.get(key)
        if data is None:
            data = self._data[key] = load()
            self._bytes += data.nbytes
            while self._bytes > CACHE_BYTES and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes
        self._data.move_to_end(key)
        return data


# ---------------------------------------------------------------------------------------------
# creating and opening
# ---------------------------------------------------------------------------------------------


def _data_codecs() -> list[Any]:
    """Each inner chunk: zstd (zarr's default level), then a CRC-32C, so any Zarr reader finds a flip."""
    return [zc.ZstdCodec(level=0), zc.Crc32cCodec()]


def _create_markers(group: zarr.Group, name: str, n_units: int, width: int) -> zarr.Array:
    """A marker array of format 2: one chunk (file) per unit, with a CRC-32C."""
    return group.create_array(
        name, shape=(n_units, width), chunks=(1, width), dtype="uint32", fill_value=0,
        compressors=[zc.Crc32cCodec()], config=WRITE_EMPTY,
    )  # fmt: skip


def _build(path: str, meta: CatalogueMeta) -> None:
    root = zarr.open_group(path, mode="w-")
    P, C, T = meta.unit_positions, meta.block_positions, len(meta.target_names)
    for k, contig in enumerate(meta.contigs):
        g = root.create_group(_key(k))
        g.attrs["name"] = contig.name
        n = contig.length
        for name, tail, dtype, fill in (
            ("ref", (), "uint8", NOT_CATALOGUED),
            ("effects", (3, max(T, 1)), "float16", np.nan),
            ("max_abs", (3,), "float16", np.nan),
            ("top_target", (3,), "int16", -1),
        ):
            shape = (n, *tail[:1], T) if name == "effects" else (n, *tail)
            g.create_array(name, shape=shape, chunks=(C, *tail), shards=(P, *tail), dtype=dtype, fill_value=fill,
                           compressors=_data_codecs(), config=WRITE_EMPTY)  # fmt: skip
        _create_markers(g, "complete", contig.n_units(P), marker_width(meta))
    root.attrs.update(write_meta_digest(meta.attrs()))  # last: the attributes mark a finished (empty) catalogue


def _differences(old: CatalogueMeta, new: CatalogueMeta) -> list[str]:
    """The :data:`IDENTITY_KEYS` that differ (genome fingerprints compared by
    :func:`~pipeline.core.genome.fingerprint_difference`: one recorded before full digests still
    matches the same genome; a catalogue that did not record its batch size matches any)."""
    a, b = old.attrs(), new.attrs()
    skip = {"genome_fingerprint"} | ({"batch_size"} if a.get("batch_size") is None else set())
    out = [k for k in IDENTITY_KEYS if k not in skip and a.get(k) != b.get(k)]
    if fingerprint_difference(old.genome_fingerprint, new.genome_fingerprint) is not None:
        out.append("genome_fingerprint")
    return out


def is_catalogue(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a catalogue store (its root attributes say so)."""
    try:
        return zarr.open_group(str(path), mode="r").attrs.get("format") == FORMAT
    except Exception:  # noqa: BLE001 - anything unreadable is not a catalogue
        return False


def open_catalogue(path: str | os.PathLike[str], mode: Literal["r", "r+"] = "r", *, check: bool = True) -> Catalogue:
    """Open an existing catalogue (``r`` or ``r+``), its attributes checked against their digest
    (:func:`~pipeline.store.meta_digest.checked_attrs`; ``check=False`` only for ``store verify``)."""
    if not Path(path).exists():
        raise UserError(f"catalogue {str(path)!r} does not exist")
    if not is_catalogue(path):
        raise UserError(f"{str(path)!r} is not a catalogue written by `multiplexer catalogue`")
    return Catalogue(zarr.open_group(str(path), mode=mode), str(path), check=check)


def recorded_batch_size(path: str | os.PathLike[str]) -> int | None:
    """The batch size an existing catalogue at ``path`` was computed with (``None``: no catalogue
    there, or one that did not record it)."""
    if not Path(path).exists() or not is_catalogue(path):
        return None
    return open_catalogue(path).meta.batch_size


def create_or_open_catalogue(
    path: str | os.PathLike[str], meta: CatalogueMeta, *, overwrite: bool = False
) -> Catalogue:
    """Create the catalogue (in a temporary sibling, renamed into place: concurrent shards never see a
    half-created one), or reopen it to resume when it was made with the same plan, model, genome and
    batch size.

    Raises
    ------
    UserError
        ``path`` holds something else, or a catalogue of another plan/model/genome/batch size (the
        differing keys are named; ``overwrite`` replaces it), or a format-1 catalogue (upgrade it first).
    """
    target = Path(path)
    if target.exists():
        if not is_catalogue(target):
            raise UserError(f"{str(target)!r} exists and is not a catalogue; choose another --out")
        if overwrite:
            shutil.rmtree(target)
        else:
            return _reopen(target, meta)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not create_atomically(target, lambda tmp: _build(tmp, meta)):
        return _reopen(target, meta)  # another process created it first
    return open_catalogue(target, mode="r+")


def _reopen(target: Path, meta: CatalogueMeta) -> Catalogue:
    cat = open_catalogue(target, mode="r+")
    if cat.version != VERSION:
        raise StoreMismatchError(
            str(target),
            f"catalogue {str(target)!r} has format {cat.version} (one marker chunk per contig, which shards writing "
            f"at once can lose); it can be read, but to extend it upgrade it first: "
            f"`multiplexer store upgrade {target}`",
        )
    changed = _differences(cat.meta, meta)
    if changed:
        values = "".join(
            f" ({k} {getattr(cat.meta, k)}: pass --batch-size {cat.meta.batch_size}, or leave it out)"
            for k in changed
            if k == "batch_size"
        )
        raise StoreMismatchError(
            str(target),
            f"catalogue {str(target)!r} was made with other {', '.join(changed)}{values}; rerun with the same options "
            "to resume it, or pass --overwrite to replace it",
        )
    return cat


# ---------------------------------------------------------------------------------------------
# verify and upgrade
# ---------------------------------------------------------------------------------------------


def unit_problem(cat: Catalogue, contig: int, unit: int, row: np.ndarray) -> str | None:
    """What is wrong with the data of a complete unit (``None``: it decodes and matches its marker's
    digests). Its shard files are assumed present (:meth:`Catalogue.missing_shards`)."""
    try:
        data = cat.read_unit(contig, unit)
    except Exception as exc:  # noqa: BLE001 - a damaged chunk: name it
        return f"cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})"
    return _data_problem(cat, contig, unit, data, row)


def read_checked_unit(cat: Catalogue, contig: int, unit: int) -> dict[str, np.ndarray]:
    """The arrays of one unit (:data:`ARRAYS`, all its positions), read once and checked as
    :class:`CheckedReader` checks a block: the unit is marked complete, its shards exist, every chunk
    decodes and the data matches the marker's digests. What a whole-catalogue reader (``catalogue
    export``) uses: one unit in memory at a time.

    Raises
    ------
    UserError
        The unit is not complete.
    DamagedDataError
        A shard is missing, a chunk does not decode, or the data does not match its digests.
    """
    row = cat.marker(contig, unit)
    if row[0] != 1:
        raise UserError(f"catalogue {cat.path!r}: {cat.meta.unit_where(contig, unit)} is not complete")
    missing = cat.missing_shards(contig, [unit])
    problem: str | None = _missing_shard(cat, contig, unit, missing[unit]) if unit in missing else None
    if problem is None:
        try:
            data = cat.read_unit(contig, unit)
        except Exception as exc:  # noqa: BLE001 - a damaged chunk: name it
            problem = f"cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})"
        else:
            problem = _data_problem(cat, contig, unit, data, row)
    if problem is not None:
        raise _damage(cat, contig, unit, problem)
    return data


def _data_problem(
    cat: Catalogue, contig: int, unit: int, data: Mapping[str, np.ndarray], row: np.ndarray
) -> str | None:
    """What is wrong with a unit's data read back (``None``: it matches its marker row ``row``)."""
    start, _ = cat.meta.unit_range(contig, unit)
    if cat.version == 1:
        wrong = np.flatnonzero(unit_digests(data) != row)
        return None if not wrong.size else _mismatch(ARRAYS[int(wrong[0]) - 1], *cat.meta.unit_range(contig, unit))
    meta = cat.meta
    digests = block_digests(data, meta.block_positions, meta.blocks_per_unit)
    bad = np.argwhere(digests != row[1:].reshape(digests.shape))
    if not bad.size:
        return None
    b, j = (int(x) for x in bad[0])
    a = start + b * meta.block_positions
    return _mismatch(ARRAYS[j], a, min(a + meta.block_positions, meta.contigs[contig].length))


def damaged_units(cat: Catalogue, *, progress: bool = False) -> list[tuple[int, int, str]]:
    """The complete units whose data is missing, unreadable or does not match its marker:
    ``(contig, unit, problem)`` in genome order."""
    out = []
    with tqdm(total=len(cat.meta.work_units()), desc="verify", unit=" units", disable=not progress) as bar:
        for k, contig in enumerate(cat.meta.contigs):
            rows = cat.markers(k)
            units = [u for u in contig.units(cat.meta.unit_positions) if rows[u, 0] == 1]
            missing = cat.missing_shards(k, units)
            for u in units:
                problem = _missing_shard(cat, k, u, missing[u]) if u in missing else unit_problem(cat, k, u, rows[u])
                if problem is not None:
                    out.append((k, u, problem))
                bar.update()
    return out


def verify_catalogue(cat: Catalogue, *, progress: bool = False) -> list[str]:
    """Problems of a catalogue: units not complete, shard files missing, chunks that cannot be read,
    or data that does not match its marker's digests (``[]``: complete and consistent)."""
    problems = []
    units = cat.meta.work_units()
    missing = [unit for unit, done in zip(units, cat.complete_work_units()) if not done]
    if missing:
        k, u = missing[0]
        problems.append(
            f"{len(missing)} units not complete (first: {cat.meta.unit_where(k, u)}); rerun catalogue to finish"
        )
    problems += [f"{cat.meta.unit_where(k, u)}: {p}" for k, u, p in damaged_units(cat, progress=progress)]
    return problems


def require_catalogue_sound(
    path: str | os.PathLike[str], *, unmark_damaged: bool = False, progress: bool = False
) -> str:
    """``store verify`` of a catalogue: a one-line verdict, or a :class:`DamagedDataError` naming the
    first problems (a :class:`MetadataError` naming every attribute that does not match its digest).
    With ``unmark_damaged``, damaged units are marked incomplete so a rerun recomputes them."""
    cat = open_catalogue(path, mode="r+" if unmark_damaged else "r", check=False)
    named = meta_digest_problems(dict(cat.group.attrs))
    if named:
        listed = "; ".join(named)
        raise MetadataError(f"catalogue {str(path)!r} (zarr.json): {listed}; {DAMAGED_METADATA}")
    if unmark_damaged:
        damaged = damaged_units(cat, progress=progress)
        for k, u, _ in damaged:
            cat.unmark(k, u)
        if damaged:
            return f"marked {len(damaged)} damaged units incomplete; rerun catalogue to recompute them"
    problems = verify_catalogue(cat, progress=progress)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DamagedDataError(f"catalogue {str(path)!r}: " + "; ".join(problems[:3]) + more)
    return f"catalogue {path} is complete and consistent" + unsealed_note(cat.group.attrs, str(path))


UPGRADING = "complete-upgrade"
"""The format-2 marker array of a contig while ``store upgrade`` writes it."""
REPLACED = "complete-format1"
"""The format-1 marker array of a contig while ``store upgrade`` swaps the new one in."""


def _finish_swap(folder: Path) -> None:
    """Complete (or undo) an interrupted marker swap of one contig's folder."""
    if not (folder / "complete").exists() and (folder / UPGRADING).exists():
        os.rename(folder / UPGRADING, folder / "complete")  # killed between the two renames
    for leftover in (UPGRADING, REPLACED):
        if (folder / leftover).exists():
            shutil.rmtree(folder / leftover)


def _upgraded_markers(cat: Catalogue, contig: int, bar: Any) -> tuple[np.ndarray, int]:
    """A contig's format-2 marker rows, computed from its data (units that fail their format-1 digests
    stay unmarked); and how many failed."""
    meta, rows = cat.meta, cat.markers(contig)
    out = np.zeros((len(rows), marker_width(meta)), dtype=np.uint32)
    damaged = 0
    units = [u for u in range(len(rows)) if rows[u, 0] == 1]
    missing = cat.missing_shards(contig, units)
    for u in units:
        if u in missing or unit_problem(cat, contig, u, rows[u]) is not None:
            damaged += 1
        else:
            out[u] = marker_row(cat.read_unit(contig, u), meta)
        bar.update()
    return out, damaged


def upgrade_catalogue(path: str | os.PathLike[str], *, progress: bool = False) -> str:
    """Upgrade a format-1 catalogue to format 2 in place: each contig's markers become one chunk per
    unit holding per-block digests, computed from the data after it is checked against the format-1
    digests (a unit that fails them is left incomplete, for a rerun to recompute). Reads every complete
    unit once (as ``store verify`` does); safe to interrupt and rerun. A catalogue written before
    metadata digests gets one (its attributes as they are now: run ``store verify`` first).

    Raises
    ------
    UserError
        ``path`` is not a catalogue.
    MetadataError
        Its attributes do not match their digest.
    """
    cat = open_catalogue(path, mode="r+")
    if cat.version == VERSION:
        if seal(cat.group):
            return f"upgraded catalogue {path}: added a metadata digest to its attributes"
        return f"catalogue {path} is already format {VERSION} with a metadata digest"
    width, damaged = marker_width(cat.meta), 0
    with tqdm(total=len(cat.meta.work_units()), desc="upgrade", unit=" units", disable=not progress) as bar:
        for k in range(len(cat.meta.contigs)):
            folder = Path(path) / _key(k)
            _finish_swap(folder)
            cat.forget_arrays()
            if cat.array(k, "complete").chunks == (1, width):
                continue  # upgraded before an interruption
            rows, bad = _upgraded_markers(cat, k, bar)
            damaged += bad
            _create_markers(group_node(cat.group, _key(k), zarr.Group, "contig group"), UPGRADING, len(rows),
                            width)[:] = rows  # fmt: skip
            fsync_path(folder / UPGRADING)
            os.rename(folder / "complete", folder / REPLACED)
            os.rename(folder / UPGRADING, folder / "complete")
            shutil.rmtree(folder / REPLACED)
    attrs = checked_attrs(cat.group, "catalogue", str(path))
    sealed = "" if has_meta_digest(attrs) else "; added a metadata digest to its attributes"
    # last: the catalogue is format 2 only when all is; its attributes sealed in the same update
    cat.group.attrs.update(write_meta_digest({**attrs, "format_version": VERSION}))
    note = f"; {damaged} damaged units were left incomplete (rerun catalogue)" if damaged else ""
    return (
        f"upgraded catalogue {path} from format 1 to {VERSION}: one marker per unit (shards may run at once) with "
        f"per-block digests (lookup checks each block it reads){note}{sealed}"
    )


def catalogue_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``store info`` of a catalogue: its plan, targets, units complete and stored bytes per position."""
    cat = open_catalogue(path)
    meta = cat.meta
    contigs = []
    total_bytes = positions = done = units = 0
    for k, contig in enumerate(meta.contigs):
        complete = cat.complete(k)
        planned = contig.units(meta.unit_positions)
        n = sum(b - a for a, b in contig.regions)
        finished = int(sum(bool(complete[u]) for u in planned))
        contigs.append({"name": contig.name, "length": contig.length, "positions": n,
                        "units": len(planned), "complete": finished})  # fmt: skip
        positions += n
        units += len(planned)
        done += finished
        total_bytes += sum(stored_bytes(cat.array(k, name)) for name in (*ARRAYS, "complete"))
    return {
        "path": str(path),
        "format_version": cat.version,
        "seq_len": meta.seq_len,
        "stride": meta.stride,
        "unit_positions": meta.unit_positions,
        "targets": len(meta.target_names),
        "all_targets": len(meta.all_target_names),
        "checkpoint_sha256": meta.model.get("checkpoint_sha256"),
        "positions": positions,
        "units": units,
        "units_complete": done,
        "bytes": total_bytes,
        "bytes_per_position": total_bytes / positions if positions else None,
        "contigs": contigs,
    }


def format_catalogue_info(info: Mapping[str, Any]) -> str:
    """:func:`catalogue_info` as text."""
    per = info["bytes_per_position"]
    lines = [
        f"catalogue  {info['path']}",
        f"model      L = {info['seq_len']}, checkpoint sha256 {str(info['checkpoint_sha256'])[:12]}; "
        f"{info['targets']} of {info['all_targets']} targets stored",
        f"tiling     stride {info['stride']}, units of {info['unit_positions']:,} positions",
        f"positions  {info['positions']:,} in {plural(len(info['contigs']), 'contig')}; units complete "
        f"{info['units_complete']} / {info['units']}",
        f"bytes      {info['bytes']:,}" + (f" ({per:.1f} per position)" if per else ""),
    ]
    lines += [
        f"  {c['name']}: {c['positions']:,} positions, {c['complete']}/{c['units']} units" for c in info["contigs"]
    ]
    return "\n".join(lines)
