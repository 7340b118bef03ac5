"""Dataset specs: ``data_specs/*.yaml`` loaded into frozen dataclasses, validated, and hashed.

A spec says everything that determines a store's content (genome, base model, window length,
splits, seed, N rejection, target kind, storage format) plus a few operational settings that do not
(the store path, the ISM batch size, the training defaults of the ``train:`` section). The content
hash covers exactly the first group; see :data:`NON_CONTENT_KEYS`.

Unknown keys and wrong types are :class:`~pipeline.errors.UserError`s naming the key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from pipeline.errors import UserError

SPLIT_NAMES = ("train", "valid", "test")
TARGET_KINDS = ("logfold", "diff")
STORAGE_DTYPES = ("float16", "float32")
CODECS = ("blosc-lz4", "blosc-zstd", "zstd", "none")
PRECISIONS = ("float32", "bf16")
SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")
NON_CONTENT_KEYS = ("store", "ism_batch_size", "train")
"""Top-level keys that do not change a store's content and so are left out of the hash."""


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class BaseModelSpec:
    """The frozen base model: ``model`` is ``"demo"``, ``"beluga"`` or ``pkg.mod:Class`` /
    ``file.py:Class``; ``weights`` a state-dict file; ``kwargs`` constructor arguments;
    ``target_names`` an optional text file with one target name per line."""

    model: str = "demo"
    weights: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=lambda: _frozen({}))
    target_names: str | None = None


@dataclass(frozen=True)
class SplitSpec:
    """A split: the chromosomes it samples from and how many windows it holds."""

    chroms: tuple[str, ...]
    samples: int


@dataclass(frozen=True)
class StorageSpec:
    """How targets are stored: dtype, codec (``blosc-lz4 | blosc-zstd | zstd | none``), its level
    and Blosc shuffle, samples per chunk and per write unit (a multiple of the chunk), and whether a
    unit's targets form one shard."""

    dtype: str = "float16"
    codec: str = "blosc-zstd"
    level: int = 3
    shuffle: str = "bitshuffle"
    chunk_samples: int = 1
    unit_samples: int = 16
    shards: bool = False
    """Store each write unit's targets as one Zarr shard (one file per unit instead of one per chunk)."""


@dataclass(frozen=True)
class TrainSpec:
    """Training settings: the spec's ``train:`` section, each overridable on the command line.

    ``batch_size`` is the global number of samples per optimizer step (over all ranks and
    ``grad_accum`` micro-steps). ``amp`` ``auto`` means bf16 autocast on CUDA and none on CPU.
    ``loss_mask`` leaves the reference-base and ``N`` entries (0 by definition) out of the loss.
    ``schedule`` ``cosine`` decays the learning rate from ``lr`` (after ``warmup_steps`` of linear
    warm-up) to ``lr · min_lr_ratio`` at ``steps``. ``shuffle_buffer`` is the number of store chunks
    whose samples are shuffled together (the order of chunks is shuffled too).
    """

    multiplexer: str = "conv"
    kwargs: Mapping[str, Any] = field(default_factory=lambda: _frozen({}))
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    clip_grad: float | None = None
    loss_mask: bool = False
    amp: str = "auto"
    compile: bool = False
    valid_every: int = 100
    valid_samples: int | None = None
    log_every: int = 10
    num_workers: int = 0
    prefetch_factor: int = 2
    persistent_workers: bool = True
    shuffle_buffer: int = 8
    seed: int = 0


TRAIN_RULES: dict[str, tuple[Any, ...]] = {
    # key: (type, minimum, choices, optional)
    "multiplexer": (str, None, None, False),
    "steps": (int, 1, None, False),
    "batch_size": (int, 1, None, False),
    "grad_accum": (int, 1, None, False),
    "lr": (float, 0, None, False),
    "weight_decay": (float, 0, None, False),
    "schedule": (str, None, ("cosine", "constant"), False),
    "warmup_steps": (int, 0, None, False),
    "min_lr_ratio": (float, 0, None, False),
    "clip_grad": (float, 0, None, True),
    "loss_mask": (bool, None, None, False),
    "amp": (str, None, ("auto", "none", "bf16", "fp16"), False),
    "compile": (bool, None, None, False),
    "valid_every": (int, 1, None, False),
    "valid_samples": (int, 1, None, True),
    "log_every": (int, 1, None, False),
    "num_workers": (int, 0, None, False),
    "prefetch_factor": (int, 1, None, False),
    "persistent_workers": (bool, None, None, False),
    "shuffle_buffer": (int, 1, None, False),
    "seed": (int, None, None, False),
}
"""Validation of each :class:`TrainSpec` key (``kwargs`` is a free mapping)."""


@dataclass(frozen=True)
class Spec:
    """A resolved dataset spec (all defaults filled in)."""

    name: str
    genome: str
    seq_len: int
    splits: Mapping[str, SplitSpec]
    base: BaseModelSpec = field(default_factory=BaseModelSpec)
    seed: int = 0
    max_n: int = 10
    target: str = "logfold"
    precision: str = "float32"
    storage: StorageSpec = field(default_factory=StorageSpec)
    store: str | None = None
    ism_batch_size: int = 1024
    train: TrainSpec = field(default_factory=TrainSpec)
    base_dir: str = field(default=".", compare=False)
    """Directory that relative paths in the spec are resolved against (the spec file's folder)."""

    # -- paths -----------------------------------------------------------------------------
    def resolve(self, path: str | None) -> Path | None:
        """Resolve a path of the spec against :attr:`base_dir` (absolute paths stay as they are)."""
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.base_dir) / p

    def resolve_import(self, name: str) -> str:
        """Make a ``file.py:Class`` import path relative to the spec's folder absolute (other names
        and ``package.module:Class`` paths are returned unchanged)."""
        module, sep, attr = name.rpartition(":")
        if sep and module.endswith(".py") and not Path(os.path.expanduser(module)).is_absolute():
            return f"{self.resolve(module)}:{attr}"
        return name

    @property
    def base_model(self) -> str:
        """The base model's name or import path, with a relative ``file.py`` resolved."""
        return self.resolve_import(self.base.model)

    @property
    def genome_path(self) -> Path:
        return self.resolve(self.genome)

    @property
    def weights_path(self) -> Path | None:
        return self.resolve(self.base.weights)

    def store_path(self) -> Path:
        """The spec's store: its ``store`` key, or ``stores/<name>.zarr`` in the working directory."""
        if self.store is not None:
            return self.resolve(self.store)
        return Path("stores") / f"{self.name}.zarr"

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict of every key (the form saved next to outputs)."""
        return _to_plain(self)

    def content_dict(self) -> dict[str, Any]:
        """The keys that determine a store's content (what :meth:`content_hash` hashes)."""
        d = self.to_dict()
        for key in NON_CONTENT_KEYS:
            d.pop(key, None)
        return d

    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`content_dict`."""
        text = json.dumps(self.content_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def replace_paths(self, **kwargs: Any) -> Spec:
        """Copy with some keys replaced (e.g. ``genome=...``), re-validated."""
        d = self.to_dict()
        d.update(kwargs)
        return spec_from_dict(d, base_dir=self.base_dir)


def _to_plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "base_dir"}
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _check_keys(where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _typed(where: str, key: str, value: Any, kind: type | tuple[type, ...], *, minimum: float | None = None) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise UserError(f"{where}: key {key!r} must be {names}, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{where}: key {key!r} must be >= {minimum:g}, got {value!r}")
    return value


def _choice(where: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    _typed(where, key, value, str)
    if value not in choices:
        raise UserError(f"{where}: key {key!r} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _section(where: str, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {}) or {}
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: key {key!r} must be a mapping, got {type(value).__name__}")
    return value


def _mapping_field(where: str, key: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return _frozen({})
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: key {key!r} must be a mapping, got {type(value).__name__}")
    return _frozen(value)


def _optional_str(where: str, key: str, value: Any) -> str | None:
    return None if value is None else _typed(where, key, value, str)


def _base_spec(where: str, data: Mapping[str, Any]) -> BaseModelSpec:
    where = f"{where} base"
    _check_keys(where, data, tuple(f.name for f in fields(BaseModelSpec)))
    d = BaseModelSpec()
    return BaseModelSpec(
        model=_typed(where, "model", data.get("model", d.model), str),
        weights=_optional_str(where, "weights", data.get("weights")),
        kwargs=_mapping_field(where, "kwargs", data.get("kwargs")),
        target_names=_optional_str(where, "target_names", data.get("target_names")),
    )


def _split_spec(where: str, name: str, data: Any) -> SplitSpec:
    where = f"{where} splits.{name}"
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: must be a mapping with keys chroms and samples")
    _check_keys(where, data, ("chroms", "samples"))
    for key in ("chroms", "samples"):
        if key not in data:
            raise UserError(f"{where}: missing key {key!r}")
    chroms = data["chroms"]
    if not isinstance(chroms, (list, tuple)) or not chroms or not all(isinstance(c, str) for c in chroms):
        raise UserError(f"{where}: key 'chroms' must be a non-empty list of chromosome names")
    if len(set(chroms)) != len(chroms):
        raise UserError(f"{where}: key 'chroms' lists a chromosome twice")
    return SplitSpec(chroms=tuple(chroms), samples=_typed(where, "samples", data["samples"], int, minimum=1))


def _storage_spec(where: str, data: Mapping[str, Any]) -> StorageSpec:
    where = f"{where} storage"
    _check_keys(where, data, tuple(f.name for f in fields(StorageSpec)))
    d = StorageSpec()
    s = StorageSpec(
        dtype=_choice(where, "dtype", data.get("dtype", d.dtype), STORAGE_DTYPES),
        codec=_choice(where, "codec", data.get("codec", d.codec), CODECS),
        level=_typed(where, "level", data.get("level", d.level), int, minimum=0),
        shuffle=_choice(where, "shuffle", data.get("shuffle", d.shuffle), SHUFFLES),
        chunk_samples=_typed(where, "chunk_samples", data.get("chunk_samples", d.chunk_samples), int, minimum=1),
        unit_samples=_typed(where, "unit_samples", data.get("unit_samples", d.unit_samples), int, minimum=1),
        shards=_typed(where, "shards", data.get("shards", d.shards), bool),
    )
    if s.unit_samples % s.chunk_samples:
        raise UserError(
            f"{where}: unit_samples ({s.unit_samples}) must be a multiple of chunk_samples ({s.chunk_samples})"
        )
    return s


def check_train_value(where: str, key: str, value: Any) -> Any:
    """Validate one ``train:`` value by :data:`TRAIN_RULES` (also used for command-line overrides)."""
    kind, minimum, choices, optional = TRAIN_RULES[key]
    if value is None and optional:
        return None
    if choices is not None:
        return _choice(where, key, value, choices)
    return _typed(where, key, value, kind, minimum=minimum)


def _train_spec(where: str, data: Mapping[str, Any]) -> TrainSpec:
    where = f"{where} train"
    _check_keys(where, data, tuple(f.name for f in fields(TrainSpec)))
    d = TrainSpec()
    values = {key: check_train_value(where, key, data.get(key, getattr(d, key))) for key in TRAIN_RULES}
    spec = TrainSpec(kwargs=_mapping_field(where, "kwargs", data.get("kwargs")), **values)
    if spec.batch_size % spec.grad_accum:
        raise UserError(f"{where}: batch_size ({spec.batch_size}) must be a multiple of grad_accum ({spec.grad_accum})")
    if spec.min_lr_ratio > 1:
        raise UserError(f"{where}: key 'min_lr_ratio' must be <= 1, got {spec.min_lr_ratio}")
    return spec


def spec_from_dict(data: Mapping[str, Any], *, base_dir: str | os.PathLike = ".", where: str = "spec") -> Spec:
    """Validate a plain mapping (as read from YAML) into a :class:`Spec`.

    Raises
    ------
    UserError
        On an unknown key, a missing required key, a wrong type or an out-of-range value; the
        message names the key.
    """
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: must be a YAML mapping, got {type(data).__name__}")
    _check_keys(where, data, tuple(f.name for f in fields(Spec) if f.name != "base_dir"))
    for key in ("name", "genome", "seq_len", "splits"):
        if key not in data:
            raise UserError(f"{where}: missing required key {key!r}")
    splits_raw = data["splits"]
    if not isinstance(splits_raw, Mapping) or not splits_raw:
        raise UserError(f"{where}: key 'splits' must be a non-empty mapping of split name to split")
    _check_keys(f"{where} splits", splits_raw, SPLIT_NAMES)
    splits = {name: _split_spec(where, name, splits_raw[name]) for name in SPLIT_NAMES if name in splits_raw}
    seen: dict[str, str] = {}
    for name, split in splits.items():
        for chrom in split.chroms:
            if chrom in seen:
                raise UserError(f"{where}: chromosome {chrom!r} is in both split {seen[chrom]!r} and {name!r}")
            seen[chrom] = name
    name = _typed(where, "name", data["name"], str)
    if not name or any(c in name for c in "/\\ "):
        raise UserError(f"{where}: key 'name' must be a non-empty word without '/', '\\\\' or spaces")
    d = Spec(name="", genome="", seq_len=1, splits={})
    return Spec(
        name=name,
        genome=_typed(where, "genome", data["genome"], str),
        seq_len=_typed(where, "seq_len", data["seq_len"], int, minimum=2),
        splits=MappingProxyType(splits),
        base=_base_spec(where, _section(where, data, "base")),
        seed=_typed(where, "seed", data.get("seed", d.seed), int),
        max_n=_typed(where, "max_n", data.get("max_n", d.max_n), int, minimum=0),
        target=_choice(where, "target", data.get("target", d.target), TARGET_KINDS),
        precision=_choice(where, "precision", data.get("precision", d.precision), PRECISIONS),
        storage=_storage_spec(where, _section(where, data, "storage")),
        store=_optional_str(where, "store", data.get("store")),
        ism_batch_size=_typed(where, "ism_batch_size", data.get("ism_batch_size", d.ism_batch_size), int, minimum=1),
        train=_train_spec(where, _section(where, data, "train")),
        base_dir=str(base_dir),
    )


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a YAML spec file; relative paths in it resolve against its folder."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"spec file {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        raise UserError(f"spec file {str(path)!r} is empty")
    return spec_from_dict(data, base_dir=path.resolve().parent, where=f"spec {path.name}")


def dump_spec(spec: Spec, path: str | os.PathLike) -> None:
    """Write a spec as YAML (all keys, defaults filled in)."""
    import yaml

    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two (nested) spec dicts."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, "<absent>") != fb.get(k, "<absent>"))
