"""The store's layout: format constants, write units, codecs, and :class:`StoreMeta` (root attributes).

Layout (Zarr format 3), one group per split::

    <store>/                     root attributes: see ROOT_ATTRS (read once into StoreMeta)
      train/ valid/ test/        group attributes: n_samples, unit_samples, chunk_samples, n_units, chroms
        reference  uint8   [N, 4, L]     one-hot windows (A, G, C, T; N columns all 0)
        ref_pred   float32 [N, F]        base-model prediction on each reference window
        targets    float16 [N, F, 3, L]  effects (log-fold or diff) of the three non-reference bases of
                                         each position (pipeline.store.layout; formats 1-3: [N, F, 4, L]
                                         with the reference row), chunk = whole samples
        chrom      string  [N]           chromosome of each window
        center     int64   [N]           1-based window center
        complete   uint32  [n_units, 1 + unit_samples * 5]
                                         completion marker per write unit (one chunk each): a flag,
                                         then each sample's digests (pipeline.store.digests)

Sample ``k`` belongs to write unit ``k // unit_samples``. Every array is chunked so that a write unit
covers whole chunks: two writers never share a chunk. Every chunk ends with a CRC-32C (zarr's
``crc32c`` codec). Readers trust only the root attributes. Formats 1 (markers ``uint8 [n_units]``, no
checksums), 2 and 3 (targets ``[N, F, 4, L]``) are still read, never written; ``store upgrade`` turns
2 and 3 into 4.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import zarr
import zarr.codecs as zc
from zarr.codecs.numcodecs import Shuffle

from pipeline import __version__
from pipeline.core.encoding import ALPHABET
from pipeline.core.identity import HASH_VERSION, identity_hash
from pipeline.core.spec import SPLIT_NAMES, Spec, StorageSpec
from pipeline.errors import UserError
from pipeline.store.digests import DIGESTED
from pipeline.store.meta_digest import has_meta_digest, write_meta_digest

FORMAT = "multiplexer-store"
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
"""Format versions this package reads (it writes only :data:`FORMAT_VERSION`)."""
ROOT_ATTRS = (
    "format",
    "format_version",
    "spec",
    "spec_hash",
    "base",
    "alphabet",
    "target_kind",
    "target_names",
    "n_targets",
    "seq_len",
    "genome",
    "package_version",
    "created",
)
ARRAYS = ("reference", "ref_pred", "targets", "chrom", "center", "complete")
DIMENSIONS = {
    "reference": ["sample", "base", "position"],
    "ref_pred": ["sample", "target"],
    "targets": ["sample", "target", "alt", "position"],
    "chrom": ["sample"],
    "center": ["sample"],
    "complete": ["unit", "marker"],
}
"""``dimension_names`` of each array (so xarray can open a split); in formats 1-3 the targets' third
dimension was ``base`` (all four bases), in format 4 it is ``alt`` (:data:`~pipeline.store.layout.ALTS`)."""


DAMAGED = "the store is damaged: restore it from a copy, or distil it again (--overwrite)"


def group_node(group: zarr.Group, name: str, kind: type, what: str) -> Any:
    """The member ``name`` of a group, of ``kind`` (``zarr.Array`` or ``zarr.Group``); a missing or
    unreadable one is a :class:`UserError` naming its metadata file and ``what`` it is."""
    where = f"{group.path}/{name}" if group.path else name
    try:
        with numcodecs_quiet():
            node = group.get(name)
    except Exception as exc:  # noqa: BLE001 - zarr raises JSON, key and value errors for damaged metadata
        detail = " ".join(str(exc).split())[:80]
        raise UserError(
            f"store {str(group.store_path.store)!r}: the metadata of {what} {where!r} ({where}/zarr.json) cannot be "
            f"read ({type(exc).__name__}: {detail}); {DAMAGED}"
        ) from None
    if node is None:
        raise UserError(
            f"store {str(group.store_path.store)!r}: {what} {where!r} is missing (no {where}/zarr.json); {DAMAGED}"
        )
    if not isinstance(node, kind):
        raise UserError(f"store {str(group.store_path.store)!r}: {where!r} is not an {what} of this store")
    return node


def group_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a group (a :class:`UserError` if it is missing, damaged or a group)."""
    node: zarr.Array = group_node(group, name, zarr.Array, "array")
    return node


def int_attr(group: zarr.Group, key: str) -> int:
    """An integer attribute of a group (a :class:`UserError` if it is missing or not an integer)."""
    value = group.attrs.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"{group.store_path}: attribute {key!r} is {value!r}, not an integer")
    return value


@dataclass(frozen=True)
class SplitMeta:
    """A split's group attributes, read once: samples, write units and their size, chromosomes."""

    name: str
    n_samples: int
    unit_samples: int
    chunk_samples: int
    n_units: int
    chroms: tuple[str, ...]

    @classmethod
    def from_group(cls, group: zarr.Group, name: str) -> SplitMeta:
        """Read the attributes of split group ``group``."""
        chroms = group.attrs.get("chroms", [])
        return cls(
            name=name,
            n_samples=int_attr(group, "n_samples"),
            unit_samples=int_attr(group, "unit_samples"),
            chunk_samples=int_attr(group, "chunk_samples"),
            n_units=int_attr(group, "n_units"),
            chroms=tuple(str(c) for c in chroms) if isinstance(chroms, list) else (),
        )

    def unit_range(self, unit: int) -> tuple[int, int]:
        """Half-open sample range ``[start, stop)`` of write unit ``unit``."""
        return unit_range(self.n_samples, self.unit_samples, unit)

    def units(self) -> Iterator[tuple[int, int, int]]:
        """``(unit, start, stop)`` of every write unit."""
        for u in range(self.n_units):
            yield (u, *self.unit_range(u))


def unit_range(n_samples: int, unit_samples: int, unit: int) -> tuple[int, int]:
    """Half-open sample range ``[start, stop)`` of write unit ``unit``."""
    start = unit * unit_samples
    return start, min(start + unit_samples, n_samples)


def n_units(n_samples: int, unit_samples: int) -> int:
    """Number of write units of a split."""
    return -(-n_samples // unit_samples)


_BLOSC_CODECS: dict[str, Literal["lz4", "zstd"]] = {"blosc-lz4": "lz4", "blosc-zstd": "zstd"}

GPU_CHUNK_BYTES = 1 << 20
"""About this many decoded bytes per inner chunk of a ``zstd-gpu`` store's targets: a device decoder
(nvCOMP) decodes the chunks of a batch in parallel, one thread block each."""


def compressors(codec: Any, storage: StorageSpec) -> list[Any]:
    """The bytes-to-bytes codecs of an array: its compressor (one codec or a list), then a CRC-32C of
    each chunk unless ``storage.checksums`` is off."""
    chain = list(codec) if isinstance(codec, list) else [codec] if codec is not None else []
    return chain + ([zc.Crc32cCodec()] if storage.checksums else [])


def marker_width(storage: StorageSpec) -> int:
    """Columns of a completion marker: the flag, and each sample's digests when checksums are on."""
    return 1 + (storage.unit_samples * len(DIGESTED) if storage.checksums else 0)


def target_codec(storage: StorageSpec) -> zc.BloscCodec | zc.ZstdCodec | list[Any] | None:
    """The compressor of the ``targets`` array for a spec's storage settings (``None``: raw;
    ``zstd-gpu``: a byte shuffle, then zstd, two codecs a device decoder can undo)."""
    if storage.codec == "none":
        return None
    if storage.codec == "zstd":
        return zc.ZstdCodec(level=storage.level)
    if storage.codec == "zstd-gpu":
        return [byte_shuffle(), zc.ZstdCodec(level=storage.level)]
    shuffle = {
        "noshuffle": zc.BloscShuffle.noshuffle,
        "shuffle": zc.BloscShuffle.shuffle,
        "bitshuffle": zc.BloscShuffle.bitshuffle,
    }[storage.shuffle]
    cname = _BLOSC_CODECS[storage.codec]
    return zc.BloscCodec(cname=cname, clevel=storage.level, shuffle=shuffle)


@contextmanager
def numcodecs_quiet() -> Iterator[None]:
    """Leave out zarr's warning that numcodecs codecs are not in the Zarr v3 specification, given each
    time a ``zstd-gpu`` store's targets are created or opened: its byte shuffle (``numcodecs.shuffle``)
    is documented in ``docs/store-format.md``. Other warnings pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Numcodecs codecs are not in the Zarr version 3", category=UserWarning
        )
        yield


def byte_shuffle() -> Any:
    """numcodecs' byte shuffle of 2-byte values as a zarr codec."""
    with numcodecs_quiet():
        return Shuffle(elementsize=2)


def target_chunks(
    storage: StorageSpec, n_targets: int, seq_len: int, rows: int = 3
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int] | None]:
    """The ``targets`` array's chunk shape and shard shape (``None``: not sharded).

    Whole samples (``chunk_samples`` of them) per chunk, a write unit per shard with
    ``storage.shards``; ``zstd-gpu`` always shards a unit and cuts each sample into blocks of targets
    of about :data:`GPU_CHUNK_BYTES` (the last block padded when the blocks do not divide ``F``).
    """
    F, L = n_targets, seq_len
    if storage.codec == "zstd-gpu":
        itemsize = 2 if storage.dtype == "float16" else 4
        blocks = max(1, -(-(F * rows * L * itemsize) // GPU_CHUNK_BYTES))
        width = -(-F // blocks)
        padded = width * -(-F // width)
        return (storage.chunk_samples, width, rows, L), (storage.unit_samples, padded, rows, L)
    chunks = (storage.chunk_samples, F, rows, L)
    return chunks, ((storage.unit_samples, F, rows, L) if storage.shards else None)


@dataclass(frozen=True)
class StoreMeta:
    """A store's root attributes, read and checked once when the store is opened.

    Attributes
    ----------
    spec : dict
        The fully resolved spec the store was made from; ``spec_hash`` its content hash.
    spec_dir : str
        The spec's folder, against which its relative paths resolve.
    base : dict
        The base model's identity (name, class, kwargs, weights path and sha256).
    seq_len, n_targets : int
        ``L`` and ``F``.
    target_kind : str
        ``logfold`` or ``diff``.
    target_names : tuple of str
    genome : str or None
        Absolute path of the genome at distillation time.
    genome_fingerprint : dict or None
        :meth:`~pipeline.core.genome.Genome.fingerprint` of that genome (``None`` in stores written
        before fingerprints were recorded).
    """

    format_version: int
    spec: Mapping[str, Any]
    spec_hash: str
    spec_dir: str
    base: Mapping[str, Any]
    alphabet: str
    target_kind: str
    target_names: tuple[str, ...]
    n_targets: int
    seq_len: int
    genome: str | None
    package_version: str
    created: str
    genome_fingerprint: Mapping[str, Any] | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    """When the store was created and grown, with the samples per split each time (format 3)."""
    hash_version: int = 1
    """How ``spec_hash`` was computed (:data:`~pipeline.core.identity.HASH_VERSION`): 1, the spec's keys
    with paths as text (stores written before it was recorded); 2, with every path replaced by the
    content it names (:func:`~pipeline.core.identity.identity_hash`)."""
    sealed: bool = False
    """Whether the root attributes carry a digest (:mod:`pipeline.store.meta_digest`)."""

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], path: str) -> StoreMeta:
        """Check and read the root attributes of the store at ``path``."""
        if attrs.get("format") != FORMAT:
            said = [f"{key} {attrs[key]!r}" for key in ("format", "kind") if isinstance(attrs.get(key), str)]
            if said:  # a catalogue, a score-vcf output, ...: never advise removing it
                raise UserError(
                    f"{path!r} is not a multiplexer training store (it holds a Zarr store of another kind: "
                    f"{', '.join(said)}); choose another store path"
                )
            raise UserError(
                f"{path!r} is not a multiplexer store (or its creation was interrupted); "
                "remove it or rerun distill with --overwrite"
            )
        if attrs.get("format_version") not in READABLE_VERSIONS:
            raise UserError(
                f"store {path!r} has format version {attrs.get('format_version')}; this version of multiplexer "
                f"reads {', '.join(map(str, READABLE_VERSIONS))}"
            )
        missing = [k for k in ROOT_ATTRS if k not in attrs]
        if missing:
            raise UserError(f"store {path!r} lacks root attributes {', '.join(missing)}")
        return cls(
            format_version=int(attrs["format_version"]),
            spec=attrs["spec"],
            spec_hash=str(attrs["spec_hash"]),
            spec_dir=str(attrs.get("spec_dir", ".")),
            base=attrs["base"],
            alphabet=str(attrs["alphabet"]),
            target_kind=str(attrs["target_kind"]),
            target_names=tuple(str(t) for t in attrs["target_names"]),
            n_targets=int(attrs["n_targets"]),
            seq_len=int(attrs["seq_len"]),
            genome=attrs["genome"],
            package_version=str(attrs["package_version"]),
            created=str(attrs["created"]),
            genome_fingerprint=attrs.get("genome_fingerprint"),
            history=tuple(attrs.get("history") or ()),
            hash_version=int(attrs.get("spec_hash_version", 1)),
            sealed=has_meta_digest(attrs),
        )

    @property
    def name(self) -> str:
        """The spec's name."""
        return str(self.spec["name"])

    @property
    def splits(self) -> list[str]:
        """The store's splits, in ``train, valid, test`` order."""
        return [s for s in SPLIT_NAMES if s in self.spec["splits"]]

    @property
    def seed(self) -> int | None:
        """The spec's seed (a base model without weights is initialised from it)."""
        seed = self.spec.get("seed")
        return None if seed is None else int(seed)

    @property
    def ism_batch_size(self) -> int | None:
        """The spec's ISM batch size, if it records one."""
        value = self.spec.get("ism_batch_size")
        return None if value is None else int(value)


def spec_identity(
    spec: Spec,
    base_identity: Mapping[str, Any],
    target_names: list[str],
    genome_fingerprint: Mapping[str, Any] | None,
) -> tuple[str, int]:
    """A new store's ``spec_hash`` and its version: the content identity (version 2,
    :func:`~pipeline.core.identity.identity_hash`) when the genome's full digest is known, else the
    spec's keys as written (version 1: stores of synthetic data written without a genome)."""
    if genome_fingerprint is not None and genome_fingerprint.get("sequence_digest"):
        return identity_hash(spec.store_dict(), base_identity, genome_fingerprint, target_names), HASH_VERSION
    return spec.store_hash(), 1


def root_attrs(
    spec: Spec,
    base_identity: Mapping[str, Any],
    n_targets: int,
    target_names: list[str],
    genome_fingerprint: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The root attributes a new store gets (see :data:`ROOT_ATTRS`, plus ``spec_hash_version``,
    ``spec_dir``, ``genome_fingerprint``, ``history`` and the ``meta_digest`` of them all)."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    spec_hash, hash_version = spec_identity(spec, base_identity, target_names, genome_fingerprint)
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "spec_hash": spec_hash,
        "spec_hash_version": hash_version,
        "spec_dir": str(Path(spec.base_dir).resolve()),
        "base": dict(base_identity),
        "alphabet": ALPHABET,
        "target_kind": spec.target,
        "target_names": list(target_names),
        "n_targets": n_targets,
        "seq_len": spec.seq_len,
        "genome": str(spec.genome_path.resolve()),
        "genome_fingerprint": dict(genome_fingerprint) if genome_fingerprint is not None else None,
        "package_version": __version__,
        "created": now,
        "history": [history_entry(spec, now)],
    }
    return write_meta_digest(attrs)


def history_entry(spec: Spec, when: str | None = None) -> dict[str, Any]:
    """One line of a store's ``history``: when it was created or grown, to how many samples per split."""
    return {
        "when": when or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "samples": {name: split.samples for name, split in spec.splits.items()},
        "package_version": __version__,
    }
