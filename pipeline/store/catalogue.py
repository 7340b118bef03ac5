"""The catalogue store: every SNV's effect along a genome, written in position units with markers.

Layout (Zarr v3; one group per contig, named by its index, ``c0``, ``c1``, ...; the contig's name is
in the root attributes)::

    CAT.zarr/
      zarr.json                   attributes: format, the plan (contigs, regions, stride, units), targets,
                                  model identity, genome fingerprint, score semantics
      c<k>/ref          uint8    [n]           0..3 the base (A, G, C, T), 4 = N, 255 = not catalogued
      c<k>/effects      float16  [n, 3, T]     the selected targets' effects of the 3 other bases, in
                                               alphabet order (NaN where not catalogued or N)
      c<k>/max_abs      float16  [n, 3]        largest |effect| over all the model's targets
      c<k>/top_target   int16    [n, 3]        its index among ``all_target_names`` (-1: none)
      c<k>/complete     uint32   [units, 5]    per unit: 1, then the CRC-32 of each array's unit bytes

A contig is cut into units of ``unit_positions`` positions (one shard of every array, made of inner
chunks of ``block_positions`` positions, so a random lookup decodes one small chunk, not the unit);
only the units that overlap the requested regions are computed. A unit's marker is written after its chunks
are on disk, so a killed run leaves it unmarked and a rerun redoes it; the digests let
:func:`verify_catalogue` find a chunk that decodes but is not the one written.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from pipeline.core.genome import fingerprint_difference
from pipeline.errors import MetadataError, StoreMismatchError, UserError
from pipeline.store.chunks import stored_bytes
from pipeline.store.format import group_node
from pipeline.store.meta_digest import (
    DAMAGED_METADATA,
    checked_attrs,
    meta_digest_problems,
    seal,
    unsealed_note,
    write_meta_digest,
)
from pipeline.store.store import create_atomically
from pipeline.store.writes import sync_written, write_settled

FORMAT = "multiplexer-catalogue"
VERSION = 1
NOT_CATALOGUED = 255
"""``ref`` of a position outside the requested regions."""
N_CODE = 4
"""``ref`` of an ``N`` (any non-ACGT) position: no effects (NaN)."""
ARRAYS = ("ref", "effects", "max_abs", "top_target")
"""The arrays of a contig group whose unit bytes are digested in the marker, in marker order."""
IDENTITY_KEYS = (
    "seq_len",
    "stride",
    "unit_positions",
    "block_positions",
    "target_names",
    "contigs",
    "model",
    "genome_fingerprint",
)
"""What a rerun must agree on to extend an existing catalogue."""


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
        )

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


def _key(contig: int) -> str:
    return f"c{contig}"


def unit_digests(data: Mapping[str, np.ndarray]) -> np.ndarray:
    """The marker row of a unit: ``[1, crc32(ref), crc32(effects), crc32(max_abs), crc32(top_target)]``."""
    crcs = [zlib.crc32(np.ascontiguousarray(data[name]).data) for name in ARRAYS]
    return np.array([1, *crcs], dtype=np.uint32)


class Catalogue:
    """An open catalogue store."""

    def __init__(self, group: zarr.Group, path: str, *, check: bool = True) -> None:
        self.group, self.path = group, path
        self.meta = CatalogueMeta.from_attrs(checked_attrs(group, "catalogue", path, check=check))
        self._arrays: dict[tuple[int, str], zarr.Array] = {}

    def array(self, contig: int, name: str) -> zarr.Array:
        """Array ``name`` of contig ``contig`` (opened once: its metadata is read on first use)."""
        key = (contig, name)
        if key not in self._arrays:
            group = group_node(self.group, _key(contig), zarr.Group, "contig group")
            self._arrays[key] = group_node(group, name, zarr.Array, "array")
        return self._arrays[key]

    def markers(self, contig: int) -> np.ndarray:
        """The marker rows of a contig, ``[units, 5]`` (an unreadable marker reads as not complete)."""
        array = self.array(contig, "complete")
        try:
            return np.asarray(array[:])
        except Exception:  # noqa: BLE001 - a marker damaged by a kill while written: treat as incomplete
            return np.zeros(array.shape, dtype=np.uint32)

    def complete(self, contig: int) -> np.ndarray:
        """Which units of a contig are complete, ``[units]`` bool."""
        return self.markers(contig)[:, 0] == 1

    def write_unit(self, contig: int, unit: int, data: Mapping[str, np.ndarray]) -> None:
        """Write the arrays of one unit (all positions of it), wait for every chunk, flush, then mark it."""
        start, stop = self.meta.unit_range(contig, unit)
        dtypes = {"ref": np.uint8, "effects": np.float16, "max_abs": np.float16, "top_target": np.int16}
        values = {
            name: np.ascontiguousarray(np.asarray(data[name]).astype(dtypes[name], copy=False)) for name in ARRAYS
        }
        for name, value in values.items():
            if len(value) != stop - start:
                raise ValueError(
                    f"unit {unit} of contig {contig}: {name} has {len(value)} positions, not {stop - start}"
                )
        writes = [(self.array(contig, name), slice(start, stop), values[name]) for name in ARRAYS]
        write_settled(writes)
        sync_written(writes)
        self.array(contig, "complete")[unit] = unit_digests(values)

    def read_block(self, contig: int, block: int, name: str) -> np.ndarray:
        """Array ``name`` over one inner chunk (``block_positions`` positions): all a lookup decodes."""
        start = block * self.meta.block_positions
        stop = min(start + self.meta.block_positions, self.meta.contigs[contig].length)
        return np.asarray(self.array(contig, name)[start:stop])

    def read_unit(self, contig: int, unit: int) -> dict[str, np.ndarray]:
        """The arrays of one unit as stored (not checked; :func:`verify_catalogue` checks)."""
        start, stop = self.meta.unit_range(contig, unit)
        return {name: np.asarray(self.array(contig, name)[start:stop]) for name in ARRAYS}


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
            g.create_array(name, shape=shape, chunks=(C, *tail), shards=(P, *tail), dtype=dtype, fill_value=fill)
        n_units = contig.n_units(P)
        g.create_array(
            "complete",
            shape=(n_units, 1 + len(ARRAYS)),
            chunks=(min(max(n_units, 1), 65536), 1 + len(ARRAYS)),
            dtype="uint32",
            fill_value=0,
        )
    root.attrs.update(write_meta_digest(meta.attrs()))  # last: the attributes mark a finished (empty) catalogue


def _differences(old: CatalogueMeta, new: CatalogueMeta) -> list[str]:
    """The :data:`IDENTITY_KEYS` that differ (genome fingerprints compared by
    :func:`~pipeline.core.genome.fingerprint_difference`: one recorded before full digests still
    matches the same genome)."""
    a, b = old.attrs(), new.attrs()
    out = [k for k in IDENTITY_KEYS if k != "genome_fingerprint" and a.get(k) != b.get(k)]
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


def seal_catalogue(path: str | os.PathLike[str]) -> str:
    """``store upgrade`` of a catalogue written before metadata digests: add one to its attributes."""
    cat = open_catalogue(path, mode="r+")
    if seal(cat.group):
        return f"upgraded catalogue {path}: added a metadata digest to its attributes"
    return f"catalogue {path} already has a metadata digest"


def create_or_open_catalogue(
    path: str | os.PathLike[str], meta: CatalogueMeta, *, overwrite: bool = False
) -> Catalogue:
    """Create the catalogue (in a temporary sibling, renamed into place: concurrent shards never see a
    half-created one), or reopen it to resume when it was made with the same plan, model and genome.

    Raises
    ------
    UserError
        ``path`` holds something else, or a catalogue of another plan/model/genome (the differing
        keys are named; ``overwrite`` replaces it).
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
    changed = _differences(cat.meta, meta)
    if changed:
        raise StoreMismatchError(
            str(target),
            f"catalogue {str(target)!r} was made with other {', '.join(changed)}; rerun with the same options to "
            "resume it, or pass --overwrite to replace it",
        )
    return cat


def verify_catalogue(cat: Catalogue) -> list[str]:
    """Problems of a catalogue: units not complete, chunks that cannot be read, or whose bytes do not
    match their marker's digests (``[]``: complete and consistent)."""
    problems = []
    markers = {k: cat.markers(k) for k in range(len(cat.meta.contigs))}
    missing = [(k, u) for k, u in cat.meta.work_units() if markers[k][u, 0] != 1]
    if missing:
        k, u = missing[0]
        name = cat.meta.contigs[k].name
        problems.append(f"{len(missing)} units not complete (first: {name} unit {u}); rerun catalogue to finish")
    for k, u in cat.meta.work_units():
        if markers[k][u, 0] != 1:
            continue
        where = f"{cat.meta.contigs[k].name} unit {u}"
        try:
            data = cat.read_unit(k, u)
        except Exception as exc:  # noqa: BLE001 - a damaged chunk: name it
            problems.append(f"{where}: cannot be read ({type(exc).__name__}: {exc})")
            continue
        if not np.array_equal(unit_digests(data), markers[k][u]):
            problems.append(f"{where}: its data does not match the checksums written with it")
    return problems


def require_catalogue_sound(path: str | os.PathLike[str], *, unmark_damaged: bool = False) -> str:
    """``store verify`` of a catalogue: a one-line verdict, or a :class:`UserError` naming the first
    problems. With ``unmark_damaged``, damaged units are marked incomplete so a rerun recomputes them."""
    cat = open_catalogue(path, mode="r+" if unmark_damaged else "r", check=False)
    named = meta_digest_problems(dict(cat.group.attrs))
    if named:
        listed = "; ".join(named)
        raise MetadataError(f"catalogue {str(path)!r} (zarr.json): {listed}; {DAMAGED_METADATA}")
    problems = verify_catalogue(cat)
    damaged = [p for p in problems if " unit " in p and "not complete" not in p]
    if unmark_damaged and damaged:
        for k, contig in enumerate(cat.meta.contigs):
            markers = cat.markers(k)
            for u in contig.units(cat.meta.unit_positions):
                if markers[u, 0] == 1 and f"{contig.name} unit {u}:" in " ".join(damaged):
                    cat.array(k, "complete")[u] = np.zeros(markers.shape[1], dtype=np.uint32)
        return f"marked {len(damaged)} damaged units incomplete; rerun catalogue to recompute them"
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(f"catalogue {str(path)!r}: " + "; ".join(problems[:3]) + more)
    return f"catalogue {path} is complete and consistent" + unsealed_note(cat.group.attrs, str(path))


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
        f"positions  {info['positions']:,} in {len(info['contigs'])} contigs; units complete "
        f"{info['units_complete']} / {info['units']}",
        f"bytes      {info['bytes']:,}" + (f" ({per:.1f} per position)" if per else ""),
    ]
    lines += [
        f"  {c['name']}: {c['positions']:,} positions, {c['complete']}/{c['units']} units" for c in info["contigs"]
    ]
    return "\n".join(lines)
