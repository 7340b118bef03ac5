"""The Zarr store: the contract between ``distill`` (writer) and ``train``/``evaluate`` (readers).

Layout (Zarr format 3), one group per split::

    <store>/                     root attributes: see ROOT_ATTRS
      train/ valid/ test/        group attributes: n_samples, unit_samples, chunk_samples, n_units
        reference  uint8   [N, 4, L]     one-hot windows (A, G, C, T; N columns all 0)
        ref_pred   float32 [N, F]        base-model prediction on each reference window
        targets    float16 [N, F, 4, L]  effects (log-fold or diff), chunk = whole samples
        chrom      string  [N]           chromosome of each window
        center     int64   [N]           1-based window center
        complete   uint8   [n_units]     completion marker per write unit (one chunk each)

Sample ``k`` belongs to write unit ``k // unit_samples``. Every array is chunked so that a write unit
covers whole chunks: two writers never share a chunk. A unit's marker is set only after all its
arrays are written, so a crash leaves it unmarked and a rerun redoes it. Readers trust only the root
attributes.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline import __version__
from pipeline.encoding import ALPHABET
from pipeline.errors import UserError
from pipeline.spec import SPLIT_NAMES, Spec, differing_keys

FORMAT = "multiplexer-store"
FORMAT_VERSION = 1
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


def _is_url(path: str) -> bool:
    return "://" in path


def open_group(path: str, mode: str) -> Any:
    """``zarr.open_group`` for a local path or an fsspec URL (``file://`` URLs create folders)."""
    import zarr

    options = {"auto_mkdir": True} if path.startswith("file://") else None
    if _is_url(path):
        return zarr.open_group(path, mode=mode, storage_options=options)
    return zarr.open_group(path, mode=mode)


def _codec(storage: Any) -> Any:
    import zarr.codecs as zc

    if storage.codec == "none":
        return None
    if storage.codec == "zstd":
        return zc.ZstdCodec(level=storage.level)
    shuffle = {
        "noshuffle": zc.BloscShuffle.noshuffle,
        "shuffle": zc.BloscShuffle.shuffle,
        "bitshuffle": zc.BloscShuffle.bitshuffle,
    }[storage.shuffle]
    cname = storage.codec.split("-", 1)[1]
    return zc.BloscCodec(cname=cname, clevel=storage.level, shuffle=shuffle)


def unit_range(n_samples: int, unit_samples: int, unit: int) -> tuple[int, int]:
    """Half-open sample range ``[start, stop)`` of write unit ``unit``."""
    start = unit * unit_samples
    return start, min(start + unit_samples, n_samples)


def n_units(n_samples: int, unit_samples: int) -> int:
    """Number of write units of a split."""
    return -(-n_samples // unit_samples)


@dataclass
class SplitInfo:
    """Counts of one split."""

    name: str
    n_samples: int
    unit_samples: int
    n_units: int
    n_complete: int


class Store:
    """An open multiplexer store (wraps the root ``zarr.Group``). Use :func:`open_store` or
    :func:`create_or_open_store` rather than the constructor."""

    def __init__(self, group: Any, path: str) -> None:
        self.group, self.path = group, path
        self.attrs: dict[str, Any] = dict(group.attrs)

    # -- attributes ------------------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        return int(self.attrs["seq_len"])

    @property
    def n_targets(self) -> int:
        return int(self.attrs["n_targets"])

    @property
    def target_names(self) -> list[str]:
        return list(self.attrs["target_names"])

    @property
    def target_kind(self) -> str:
        return str(self.attrs["target_kind"])

    @property
    def spec_hash(self) -> str:
        return str(self.attrs["spec_hash"])

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLIT_NAMES if s in self.attrs["spec"]["splits"]]

    def spec(self) -> Spec:
        """The spec the store was made from (relative paths resolve against the store's folder)."""
        from pipeline.spec import spec_from_dict

        return spec_from_dict(self.attrs["spec"], base_dir=self.attrs.get("spec_dir", "."))

    # -- splits and units ------------------------------------------------------------------
    def split_group(self, split: str) -> Any:
        if split not in self.splits:
            raise UserError(f"store {self.path!r} has no split {split!r} (it has {', '.join(self.splits)})")
        return self.group[split]

    def array(self, split: str, name: str) -> Any:
        return self.split_group(split)[name]

    def split_info(self, split: str) -> SplitInfo:
        g = self.split_group(split)
        complete = np.asarray(g["complete"][:]).astype(bool)
        return SplitInfo(
            split, int(g.attrs["n_samples"]), int(g.attrs["unit_samples"]), int(g.attrs["n_units"]), int(complete.sum())
        )

    def complete_units(self, split: str) -> np.ndarray:
        """Boolean ``[n_units]``: which write units are complete."""
        return np.asarray(self.array(split, "complete")[:]).astype(bool)

    def unit_range(self, split: str, unit: int) -> tuple[int, int]:
        info = self.split_info(split)
        return unit_range(info.n_samples, info.unit_samples, unit)

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

        Parameters
        ----------
        reference : np.ndarray, shape=(n, 4, L), uint8
        ref_pred : np.ndarray, shape=(n, F), float32
        targets : np.ndarray, shape=(n, F, 4, L)
            Cast to the store's target dtype.
        chrom : list of str, length n
        center : np.ndarray, shape=(n,)
        """
        import zarr

        with zarr.config.set({"array.write_empty_chunks": True}):
            self._write_unit(split, unit, reference, ref_pred, targets, chrom, center)

    def _write_unit(self, split, unit, reference, ref_pred, targets, chrom, center) -> None:  # noqa: ANN001
        g = self.split_group(split)
        start, stop = self.unit_range(split, unit)
        n = stop - start
        F, L = self.n_targets, self.seq_len
        expected = {"reference": (n, 4, L), "ref_pred": (n, F), "targets": (n, F, 4, L), "center": (n,)}
        for name, value in (("reference", reference), ("ref_pred", ref_pred), ("targets", targets), ("center", center)):
            if tuple(np.shape(value)) != expected[name]:
                raise ValueError(
                    f"unit {unit} of {split}: {name} has shape {np.shape(value)}, expected {expected[name]}"
                )
        if len(chrom) != n:
            raise ValueError(f"unit {unit} of {split}: {len(chrom)} chromosome names for {n} samples")
        g["targets"][start:stop] = np.asarray(targets).astype(g["targets"].dtype, copy=False)
        g["reference"][start:stop] = np.asarray(reference, dtype=np.uint8)
        g["ref_pred"][start:stop] = np.asarray(ref_pred, dtype=np.float32)
        g["chrom"][start:stop] = np.asarray(chrom, dtype=object)
        g["center"][start:stop] = np.asarray(center, dtype=np.int64)
        g["complete"][unit] = 1

    def iter_units(self, split: str) -> Iterator[tuple[int, int, int]]:
        """``(unit, start, stop)`` for every unit of a split."""
        info = self.split_info(split)
        for u in range(info.n_units):
            yield (u, *unit_range(info.n_samples, info.unit_samples, u))

    def require_complete(self, split: str, *, limit: int | None = None, chunks: bool = True) -> None:
        """Raise a :class:`UserError` unless every unit of ``split`` is complete and, with ``chunks``,
        every chunk of the first ``limit`` samples (default: all) is present.

        A unit marked complete whose chunk file was deleted would read back as zeros (the fill value);
        this finds it by checking that the chunk keys exist, without reading any data.
        """
        info = self.split_info(split)
        if info.n_complete < info.n_units:
            first = int(np.flatnonzero(~self.complete_units(split))[0])
            raise UserError(
                f"store {self.path!r}: split {split!r} has {info.n_units - info.n_complete} of "
                f"{info.n_units} write units incomplete (first: unit {first}); rerun `multiplexer distill`"
            )
        if not chunks:
            return
        n = info.n_samples if limit is None else min(info.n_samples, int(limit))
        units = [(u, a, b) for u, a, b in self.iter_units(split) if a < n]
        found = missing_chunks(self.split_group(split), units)
        if found is not None:
            u, a, b, problem = found
            raise UserError(
                f"store {self.path!r}: split {split!r} unit {u} (samples {a}-{b - 1}) is marked complete but its "
                f"{problem} (lost data); see `multiplexer store verify`, and redistill it "
                "(`multiplexer distill --overwrite`)"
            )


# ---------------------------------------------------------------------------------------------
# opening and creating
# ---------------------------------------------------------------------------------------------


def _exists(path: str) -> bool:
    if _is_url(path):
        try:
            open_group(path, mode="r")
            return True
        except Exception:
            return False
    return Path(path).exists()


def open_store(path: str | os.PathLike, mode: str = "r") -> Store:
    """Open an existing store (``mode`` ``"r"`` or ``"r+"``), checking it is one of ours."""

    path = str(path)
    if not _is_url(path):
        p = Path(path)
        if not p.exists():
            raise UserError(f"store {path!r} does not exist")
        if p.is_file():
            raise UserError(f"store path {path!r} is a file, not a Zarr store")
    try:
        group = open_group(path, mode=mode)
    except Exception as exc:
        raise UserError(f"{path!r} is not a readable Zarr store: {type(exc).__name__}: {exc}") from None
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise UserError(
            f"{path!r} is not a multiplexer store (or its creation was interrupted); "
            "remove it or rerun distill with --overwrite"
        )
    if attrs.get("format_version") != FORMAT_VERSION:
        raise UserError(f"store {path!r} has format version {attrs.get('format_version')}, expected {FORMAT_VERSION}")
    missing = [k for k in ROOT_ATTRS if k not in attrs]
    if missing:
        raise UserError(f"store {path!r} lacks root attributes {', '.join(missing)}")
    return Store(group, path)


def check_same_spec(store: Store, spec: Spec, base_identity: dict[str, Any] | None = None) -> None:
    """Refuse a store made from another spec (or another base-model weights file), saying what differs."""
    if store.spec_hash != spec.content_hash():
        keys = differing_keys(store.attrs["spec"], spec.to_dict())
        keys = [k for k in keys if k.split(".")[0] not in ("store", "ism_batch_size", "train")]
        raise UserError(
            f"store {store.path!r} was made from a different spec (hash {store.spec_hash[:12]} vs "
            f"{spec.content_hash()[:12]}); differing keys: {', '.join(keys) or 'unknown'}. "
            "Use another --store path, or --overwrite to discard it"
        )
    if base_identity is not None:
        old = store.attrs["base"].get("weights_sha256")
        new = base_identity.get("weights_sha256")
        if old != new:
            raise UserError(
                f"store {store.path!r} was made with base-model weights sha256 {str(old)[:12]}, but "
                f"{base_identity.get('weights')!r} has sha256 {str(new)[:12]}; use another --store "
                "path, or --overwrite to discard it"
            )


def create_or_open_store(
    path: str | os.PathLike,
    spec: Spec,
    *,
    base_identity: dict[str, Any],
    n_targets: int,
    target_names: list[str],
    overwrite: bool = False,
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

    Raises
    ------
    UserError
        The path holds a store of another spec or base model, something that is not a store, or a
        file.
    """
    path = str(path)
    if _exists(path):
        if overwrite:
            _remove(path)
        else:
            return _reopen(path, spec, base_identity)
    if len(target_names) != n_targets:
        raise UserError(f"{len(target_names)} target names for a base model with {n_targets} outputs")
    attrs = _root_attrs(spec, base_identity, n_targets, target_names)
    if _is_url(path):
        _build(path, spec, n_targets, attrs)
        return open_store(path, mode="r+")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # like the default stores/ folder
    except OSError as exc:
        raise UserError(f"cannot create store {path!r}: {exc.strerror or exc} ({target.parent})") from None
    tmp = target.with_name(f".{target.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _build(str(tmp), spec, n_targets, attrs)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
            # another process created it first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return _reopen(path, spec, base_identity)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return open_store(path, mode="r+")


def _reopen(path: str, spec: Spec, base_identity: dict[str, Any] | None) -> Store:
    store = open_store(path, mode="r+")
    check_same_spec(store, spec, base_identity)
    return store


def wait_for_store(path: str | os.PathLike, spec: Spec, *, timeout: float = 600.0, poll: float = 0.2) -> Store:
    """Open a store that another process is creating, once it exists (used by non-creating ranks)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _reopen(str(path), spec, None)
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(poll)


def _root_attrs(spec: Spec, base_identity: dict[str, Any], n_targets: int, target_names: list[str]) -> dict[str, Any]:
    genome = spec.genome_path
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "spec_hash": spec.content_hash(),
        "spec_dir": str(Path(spec.base_dir).resolve()),
        "base": base_identity,
        "alphabet": ALPHABET,
        "target_kind": spec.target,
        "target_names": list(target_names),
        "n_targets": n_targets,
        "seq_len": spec.seq_len,
        "genome": str(genome.resolve()) if genome is not None else None,
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _build(path: str, spec: Spec, n_targets: int, attrs: dict[str, Any]) -> None:
    """Create the groups and empty arrays; the root attributes go last (they mark a finished store)."""

    try:
        root = open_group(path, mode="w-")
    except Exception as exc:
        raise UserError(f"cannot create store {path!r}: {type(exc).__name__}: {exc}") from None
    L, F, st = spec.seq_len, n_targets, spec.storage
    U = st.unit_samples
    # every written chunk exists (see Store.write_unit), so a missing one means lost data
    cfg = {"write_empty_chunks": True}
    for split, split_spec in spec.splits.items():
        n = split_spec.samples
        g = root.create_group(split)
        g.attrs.update(
            {
                "n_samples": n,
                "unit_samples": U,
                "chunk_samples": st.chunk_samples,
                "n_units": n_units(n, U),
                "chroms": list(split_spec.chroms),
            }
        )
        per_unit = {"config": cfg, "chunks": None}
        for name, shape, dtype, fill, dims in (
            ("reference", (n, 4, L), "uint8", 0, ["sample", "base", "position"]),
            ("ref_pred", (n, F), "float32", 0.0, ["sample", "target"]),
            ("center", (n,), "int64", 0, ["sample"]),
        ):
            per_unit["chunks"] = (U,) + shape[1:]
            g.create_array(name, shape=shape, dtype=dtype, fill_value=fill, dimension_names=dims, **per_unit)
        g.create_array("chrom", shape=(n,), chunks=(U,), dtype=str, config=cfg, dimension_names=["sample"])
        g.create_array(
            "targets",
            shape=(n, F, 4, L),
            chunks=(st.chunk_samples, F, 4, L),
            shards=(U, F, 4, L) if st.shards else None,
            dtype=st.dtype,
            fill_value=0.0,
            compressors=_codec(st),
            config=cfg,
            dimension_names=["sample", "target", "base", "position"],
        )
        g.create_array(
            "complete",
            shape=(n_units(n, U),),
            chunks=(1,),
            dtype="uint8",
            fill_value=0,
            config=cfg,
            dimension_names=["unit"],
        )
    root.attrs.update(attrs)


def _remove(path: str) -> None:
    if _is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path)
        fs.rm(root, recursive=True)
        return
    p = Path(path)
    if p.is_dir():
        if not (p / "zarr.json").exists():
            raise UserError(f"refusing to remove {path!r}: it is a folder but not a Zarr store")
        shutil.rmtree(p)
    else:
        raise UserError(f"store path {path!r} is a file, not a Zarr store")


# ---------------------------------------------------------------------------------------------
# summary and integrity
# ---------------------------------------------------------------------------------------------


def store_info(store: Store) -> dict[str, Any]:
    """Summary: spec, hash, base model, per split counts, completion and bytes per sample."""
    F, L = store.n_targets, store.seq_len
    raw = F * 4 * L * 4
    splits = {}
    for split in store.splits:
        info = store.split_info(split)
        targets = store.array(split, "targets")
        stored = int(targets.nbytes_stored())
        done = int(sum(stop - start for u, start, stop in store.iter_units(split) if store.complete_units(split)[u]))
        splits[split] = {
            "n_samples": info.n_samples,
            "n_units": info.n_units,
            "complete_units": info.n_complete,
            "complete_samples": done,
            "targets_dtype": str(targets.dtype),
            "target_bytes_stored": stored,
            "bytes_per_sample": stored / done if done else None,
            "raw_float32_bytes_per_sample": raw,
            "compression_vs_float32": (raw * done / stored) if done and stored else None,
        }
    return {
        "path": store.path,
        "name": store.attrs["spec"]["name"],
        "spec_hash": store.spec_hash,
        "format_version": store.attrs["format_version"],
        "seq_len": L,
        "n_targets": F,
        "target_kind": store.target_kind,
        "alphabet": store.attrs["alphabet"],
        "base": store.attrs["base"],
        "genome": store.attrs["genome"],
        "package_version": store.attrs["package_version"],
        "created": store.attrs["created"],
        "splits": splits,
    }


def verify_store(store: Store, *, progress: bool = False) -> list[str]:
    """Full integrity check; returns the problems found (empty when the store is sound).

    Checks the attributes against the arrays' shapes, that every unit is complete, that targets and
    reference predictions are finite, that references are one-hot (or all-zero ``N``) columns, and
    that targets are exactly 0 at every reference base and at every ``N`` column. Stops at the first
    offending unit of each split.
    """
    from tqdm import tqdm

    problems: list[str] = []
    F, L = store.n_targets, store.seq_len
    if len(store.target_names) != F:
        problems.append(f"{len(store.target_names)} target names but n_targets = {F}")
    for split in store.splits:
        g = store.split_group(split)
        n = int(g.attrs["n_samples"])
        shapes = {
            "reference": (n, 4, L),
            "ref_pred": (n, F),
            "targets": (n, F, 4, L),
            "chrom": (n,),
            "center": (n,),
            "complete": (int(g.attrs["n_units"]),),
        }
        bad = False
        for name, shape in shapes.items():
            if name not in g:
                problems.append(f"{split}: array {name!r} is missing")
                bad = True
            elif tuple(g[name].shape) != shape:
                problems.append(f"{split}: array {name!r} has shape {tuple(g[name].shape)}, expected {shape}")
                bad = True
        if bad:
            continue
        complete = store.complete_units(split)
        if not complete.all():
            problems.append(
                f"{split}: unit {int(np.flatnonzero(~complete)[0])} is not complete "
                f"({int((~complete).sum())} of {complete.size} incomplete)"
            )
            continue
        units = list(store.iter_units(split))
        for u, start, stop in tqdm(units, desc=f"verify {split}", disable=not progress, unit="unit"):
            problem = _missing_chunk(g, u, start, stop) or _check_unit(g, start, stop)
            if problem:
                problems.append(f"{split}: unit {u} (samples {start}-{stop - 1}): {problem}")
                break
    return problems


def _chunks_exist(array: Any, coords: list[tuple[int, ...]]) -> list[bool]:
    """Whether each chunk (or shard) ``coords`` of ``array`` is present in its store.

    Local stores are checked with one ``stat`` per key (about 5 µs); other stores with batches of
    concurrent ``exists`` requests. No data is read.
    """
    import asyncio

    from zarr.core.sync import sync
    from zarr.storage import LocalStore

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


def missing_chunks(g: Any, units: list[tuple[int, int, int]]) -> tuple[int, int, int, str] | None:
    """The first of ``units`` (``(unit, start, stop)`` of split group ``g``) with a missing chunk:
    ``(unit, start, stop, "chunk ... of 'name' is missing")``, or ``None`` when every chunk is there."""
    if not units:
        return None
    first: tuple[int, int, int, int, str] | None = None  # (unit index in units, ...) of the earliest problem
    for name in ("reference", "ref_pred", "chrom", "center"):
        coords = [(u,) + (0,) * (g[name].ndim - 1) for u, _, _ in units]
        for k, ok in enumerate(_chunks_exist(g[name], coords)):
            if not ok:
                if first is None or k < first[0]:
                    first = (k, *units[k], f"chunk {coords[k]} of {name!r} is missing")
                break
    targets = g["targets"]
    block = (targets.shards or targets.chunks)[0]  # a shard holds a whole unit
    owners = [(k, c) for k, (_, a, b) in enumerate(units) for c in range(a // block, -(-b // block))]
    kind = "shard" if targets.shards else "chunk"
    for (k, c), ok in zip(owners, _chunks_exist(targets, [(c, 0, 0, 0) for _, c in owners])):
        if not ok:
            if first is None or k < first[0]:
                first = (k, *units[k], f"{kind} ({c}, 0, 0, 0) of 'targets' is missing")
            break
    return None if first is None else first[1:]


def _missing_chunk(g: Any, unit: int, start: int, stop: int) -> str | None:
    found = missing_chunks(g, [(unit, start, stop)])
    return None if found is None else found[3]


def _check_unit(g: Any, start: int, stop: int) -> str | None:
    try:
        X = np.asarray(g["reference"][start:stop])
        y = np.asarray(g["targets"][start:stop])
        ref_pred = np.asarray(g["ref_pred"][start:stop])
        center = np.asarray(g["center"][start:stop])
    except Exception as exc:  # a deleted or corrupt chunk
        return f"cannot read: {type(exc).__name__}: {exc}"
    if X.max(initial=0) > 1 or (X.sum(axis=1) > 1).any():
        return "reference is not one-hot"
    if not np.isfinite(y).all():
        return "targets contain NaN or infinity"
    if not (np.isfinite(ref_pred).all() and (ref_pred >= 0).all() and (ref_pred <= 1).all()):
        return "ref_pred is not a probability"
    at_ref = np.broadcast_to(X[:, None].astype(bool), y.shape)
    if (y[at_ref] != 0).any():
        return "targets are not exactly 0 at reference bases"
    n_cols = np.broadcast_to((X.sum(axis=1) == 0)[:, None, None, :], y.shape)
    if (y[n_cols] != 0).any():
        return "targets are not exactly 0 at N positions"
    if (center < 1).any():
        return "center is not a 1-based position (missing data?)"
    return None
