"""Dataset specs: ``data_specs/*.yaml`` loaded into frozen dataclasses, validated, and hashed.

A spec says everything that determines a store's content (genome, base model, window length,
splits, seed, N rejection, target kind, storage format) plus a few operational settings that do not
(the store path, the ISM batch size, the training defaults of the ``train:`` section). The content
hash covers exactly the first group; see :data:`NON_CONTENT_KEYS`.

Unknown keys and wrong types are :class:`~pipeline.errors.SpecError`s naming the key. Each training
setting is declared once, as a field of :class:`TrainSpec` with its help text and rule; the spec's
validation and the ``train`` command's options are derived from those declarations.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from pipeline.core.deprecation import moved_names
from pipeline.core.intervals import Interval, parse_interval, read_bed
from pipeline.core.options import Rule, flag_of, option, rules_of
from pipeline.core.yamlio import read_yaml
from pipeline.errors import SpecError, UserError

SPLIT_NAMES = ("train", "valid", "test")
TARGET_KINDS = ("logfold", "diff")
STORAGE_DTYPES = ("float16", "float32")
CODECS = ("blosc-lz4", "blosc-zstd", "zstd", "zstd-gpu", "none")
CODEC_LEVELS = {"blosc-lz4": 9, "blosc-zstd": 9, "zstd": 22, "zstd-gpu": 22}
"""Highest compression level of each codec (levels start at 0; ``none`` has none)."""
PRECISIONS = ("float32", "bf16")
"""``float32`` (exact; TF32 off) or ``bf16`` (the base model's trunk under bfloat16 autocast, meant for
CUDA; predictions and log-folds stay float32)."""
SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")
NON_CONTENT_KEYS = ("store", "ism_batch_size", "train")
"""Top-level keys that do not change a store's content and so are left out of the hash."""
ISM_BATCH_SIZE = 1024
"""Variants per base-model pass when neither the spec nor an option says otherwise."""
MAX_SEED = 2**32 - 1
"""Seeds lie in ``0 .. 2**32 - 1`` (what numpy, torch and CUDA generators all take)."""
RANDOM_WEIGHTS = "random"
"""``base.weights: random``: initialise the base model from the spec's seed instead of a weights file
(benchmarks; a built-in model with published weights needs either a file or this word)."""


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def to_plain(obj: Any) -> Any:
    """Dataclasses, mappings and sequences as plain JSON-able dicts and lists (``base_dir`` left out;
    an object with a ``plain()`` method gives its own form)."""
    if hasattr(obj, "plain"):
        return obj.plain()
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "base_dir"}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------


def _check(where: str, key: str, value: Any, kind: type, **rule: Any) -> Any:
    return Rule(kind, **rule).check(where, f"key {key!r}", value)


# ---------------------------------------------------------------------------------------------
# the spec's sections
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModelSpec:
    """The frozen base model: ``model`` is ``"demo"``, ``"beluga"`` or ``pkg.mod:Class`` /
    ``file.py:Class``; ``weights`` a state-dict file, or ``"random"`` (:data:`RANDOM_WEIGHTS`: seeded
    random initialisation); ``kwargs`` constructor arguments; ``target_names`` an optional text file
    with one target name per line."""

    model: str = "demo"
    weights: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=lambda: _frozen({}))
    target_names: str | None = None


@dataclass(frozen=True)
class SplitSpec:
    """A split: where it samples windows from, and how many windows it holds.

    ``chroms`` are taken whole, except for the intervals other splits name on them (widened by the
    window length, so no window of one split overlaps a window of another); ``regions`` are
    intervals (from the spec's ``regions`` strings and ``bed`` file), which a window never crosses.
    """

    chroms: tuple[str, ...] = ()
    samples: int = 1
    regions: tuple[Interval, ...] = ()

    def plain(self) -> dict[str, Any]:
        """The split as written in a spec, BED intervals included as region strings.

        A chromosome-only split is ``{"chroms": [...], "samples": n}``, as before regions existed,
        so its spec keeps its content hash.
        """
        out: dict[str, Any] = {}
        if self.chroms:
            out["chroms"] = list(self.chroms)
        if self.regions:
            out["regions"] = [str(r) for r in self.regions]
        out["samples"] = self.samples
        return out


@dataclass(frozen=True)
class StorageSpec:
    """How targets are stored: dtype, codec (``blosc-lz4 | blosc-zstd | zstd | zstd-gpu | none``), its
    level and Blosc shuffle, samples per chunk and per write unit (a multiple of the chunk), and whether a
    unit's targets form one shard. ``zstd-gpu`` (a byte shuffle, then zstd, in chunks of about 1 MB, a
    unit per shard) is what ``train --decode gpu`` decodes on the device."""

    dtype: str = "float16"
    codec: str = "blosc-zstd"
    level: int = 3
    shuffle: str = "bitshuffle"
    chunk_samples: int = 1
    unit_samples: int = 16
    shards: bool = False
    """Store each write unit's targets as one Zarr shard (one file per unit instead of one per chunk)."""
    checksums: bool = True
    """A CRC-32C on every chunk and a digest of every sample in its unit's completion marker
    (:mod:`pipeline.store.digests`); ``false`` only to measure what they cost."""
    quantize: str = "none"
    """``none`` (lossless) or ``bitround-K``: float16 targets rounded to nearest with ``K`` of their 10
    mantissa bits kept before compression (relative error at most ``2^-(K+1)``; zeros stay exactly 0),
    so the compressor finds more repeats (:func:`pipeline.core.quantize.bitround`)."""

    def plain(self) -> dict[str, Any]:
        """The settings as written in a spec; ``checksums`` only when off and ``quantize`` only when
        lossy, so specs written before they existed keep their content hash."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.checksums:
            del out["checksums"]
        if self.quantize == "none":
            del out["quantize"]
        return out


@dataclass(frozen=True)
class TrainSpec:
    """Training settings: the spec's ``train:`` section, each overridable on the command line.

    Each field is declared once, here, with its default, help text and rule; :data:`TRAIN_RULES` and
    the ``train`` command's options are derived from the declarations. A rule that involves two
    fields lives in :meth:`__post_init__`. ``batch_size`` is the global number of samples per
    optimizer step (over all ranks and ``grad_accum`` micro-steps).
    """

    multiplexer: str = option(
        "conv", "Architecture: conv, beluga_multiplexer, or package.module:Class / file.py:Class."
    )
    kwargs: Mapping[str, Any] = option(
        help="Multiplexer constructor arguments (JSON on the command line).",
        default_factory=lambda: _frozen({}),
        flag="--arch-kwargs",
    )
    steps: int = option(1000, "Total optimizer steps (also with --resume).", minimum=1)
    batch_size: int = option(8, "Global samples per optimizer step (all ranks and micro-steps).", minimum=1)
    grad_accum: int = option(1, "Micro-steps per optimizer step (divides batch_size).", minimum=1)
    lr: float = option(1e-3, "Peak AdamW learning rate.", above=0)
    weight_decay: float = option(0.0, "AdamW weight decay.", minimum=0)
    schedule: str = option(
        "cosine",
        "Learning rate after warm-up: cosine decays from lr to lr * min_lr_ratio at the last step.",
        choices=("cosine", "constant"),
    )
    warmup_steps: int = option(0, "Steps of linear learning-rate warm-up.", minimum=0)
    min_lr_ratio: float = option(
        0.0, "Last learning rate of the cosine schedule, as a fraction of lr.", minimum=0, maximum=1
    )
    clip_grad: float | None = option(None, "Clip the gradient norm to this (default: no clipping).", above=0)
    loss_mask: bool = option(False, "Leave reference-base and N entries (0 by definition) out of the loss.")
    effect_weight: float = option(
        0.0,
        "Weight each squared error by 1 + effect_weight * |target| / (the window's mean |target|), as the weighted "
        "Pearson metric weights by |target| (0: plain MSE; the weights are normalised, so the loss keeps its scale).",
        minimum=0,
    )
    amp: str = option(
        "auto", "Mixed precision (auto: bf16 on CUDA, none on CPU).", choices=("auto", "none", "bf16", "fp16")
    )
    compile: bool = option(False, "torch.compile the model.")
    valid_every: int = option(100, "Validate and checkpoint every N steps.", minimum=1)
    max_samples: int | None = option(
        None,
        "Train on the first N train samples of the store (default: all; a grown store keeps its prefix).",
        minimum=1,
    )
    valid_samples: int | None = option(None, "Validate on the first N valid samples (default: all).", minimum=1)
    log_every: int = option(10, "Write a metrics row every N steps.", minimum=1)
    num_workers: int = option(0, "DataLoader worker processes per rank.", minimum=0)
    prefetch_factor: int = option(2, "Batches each DataLoader worker loads ahead.", minimum=1)
    persistent_workers: bool = option(True, "Keep DataLoader workers alive between epochs.")
    decode: str = option(
        "cpu",
        "Where the targets are decoded: cpu (by the loader workers) or gpu (nvCOMP on the CUDA device; the "
        "workers only read and check the compressed chunks; needs a store written with storage codec zstd-gpu "
        "and the gpu extra).",
        choices=("cpu", "gpu"),
    )
    shuffle_buffer: int = option(8, "Store write units whose samples are shuffled together.", minimum=1)
    seed: int = option(0, "Seed of the initialisation and of the data order.", minimum=0, maximum=MAX_SEED)

    def __post_init__(self) -> None:
        check_train_together("train", vars(self))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict of every setting."""
        result: dict[str, Any] = to_plain(self)
        return result


def check_train_together(where: str, values: Mapping[str, Any]) -> None:
    """The rules between two training settings (each setting's own rule is in :data:`TRAIN_RULES`).

    :meth:`TrainSpec.__post_init__` applies them to every ``TrainSpec``, however it is made.
    """
    if values["batch_size"] % values["grad_accum"]:
        raise SpecError(
            f"{where}: batch_size ({values['batch_size']}) must be a multiple of grad_accum ({values['grad_accum']})"
        )


TRAIN_RULES: dict[str, Rule] = rules_of(TrainSpec)
"""The rule of each :class:`TrainSpec` field (``kwargs`` is a free mapping), from its declaration."""


def option_flag(name: str) -> str:
    """The command-line flag of a :class:`TrainSpec` field: ``batch_size`` -> ``--batch-size``
    (``kwargs`` -> ``--arch-kwargs``)."""
    return flag_of(TrainSpec, name)


# ---------------------------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------------------------


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
    ism_batch_size: int = ISM_BATCH_SIZE
    train: TrainSpec = field(default_factory=TrainSpec)
    base_dir: str = field(default=".", compare=False)
    """Directory that relative paths in the spec are resolved against (the spec file's folder)."""

    # -- paths -----------------------------------------------------------------------------
    def resolve(self, path: str) -> Path:
        """Resolve a path of the spec against :attr:`base_dir` (absolute paths stay as they are)."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.base_dir) / p

    def resolve_optional(self, path: str | None) -> Path | None:
        """:meth:`resolve`, passing ``None`` through."""
        return None if path is None else self.resolve(path)

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
        """The genome FASTA, resolved against the spec's folder."""
        return self.resolve(self.genome)

    @property
    def weights_path(self) -> Path | None:
        """The base model's weights file, resolved against the spec's folder (``None``: none, or
        ``weights: random``)."""
        return None if self.random_weights else self.resolve_optional(self.base.weights)

    @property
    def random_weights(self) -> bool:
        """The spec asks for seeded random base-model weights (``base.weights: random``)."""
        return self.base.weights == RANDOM_WEIGHTS

    def store_path(self) -> Path:
        """The spec's store: its ``store`` key, or ``stores/<name>.zarr`` in the working directory."""
        if self.store is not None:
            return self.resolve(self.store)
        return Path("stores") / f"{self.name}.zarr"

    def train_defaults(self) -> TrainSpec:
        """The ``train:`` section, with a relative ``file.py:Class`` multiplexer resolved."""
        multiplexer = self.resolve_import(self.train.multiplexer)
        return replace(self.train, multiplexer=multiplexer)

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict of every key (the form saved next to outputs)."""
        result: dict[str, Any] = to_plain(self)
        return result

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

    def store_dict(self) -> dict[str, Any]:
        """What every window of every split depends on: :meth:`content_dict` without ``splits`` (each
        split's own content is :meth:`split_content`; sample counts are in neither, so a store grows)."""
        d = self.content_dict()
        d.pop("splits", None)
        return d

    def store_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`store_dict` (a store of format 3 records it)."""
        text = json.dumps(self.store_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def split_content(self, name: str) -> dict[str, Any]:
        """Where split ``name`` samples from: its plain form without ``samples`` (which window ``i`` is
        does not depend on how many are asked for)."""
        plain = dict(self.to_dict()["splits"][name])
        plain.pop("samples", None)
        return plain

    def replace_paths(self, **kwargs: Any) -> Spec:
        """Copy with some keys replaced (e.g. ``genome=...``), re-validated."""
        d = self.to_dict()
        d.update(kwargs)
        return spec_from_dict(d, base_dir=self.base_dir)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _check_keys(where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _section(where: str, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {}) or {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: key {key!r} must be a mapping, got {type(value).__name__}")
    return value


def _mapping_field(where: str, key: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return _frozen({})
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: key {key!r} must be a mapping, got {type(value).__name__}")
    return _frozen(value)


def _base_spec(where: str, data: Mapping[str, Any]) -> BaseModelSpec:
    where = f"{where} base"
    _check_keys(where, data, tuple(f.name for f in fields(BaseModelSpec)))
    d = BaseModelSpec()
    return BaseModelSpec(
        model=_check(where, "model", data.get("model", d.model), str),
        weights=_check(where, "weights", data.get("weights"), str, optional=True),
        kwargs=_mapping_field(where, "kwargs", data.get("kwargs")),
        target_names=_check(where, "target_names", data.get("target_names"), str, optional=True),
    )


def _split_regions(where: str, data: Mapping[str, Any], base_dir: str) -> tuple[Interval, ...]:
    regions = data.get("regions") or []
    if not isinstance(regions, (list, tuple)) or not all(isinstance(r, str) for r in regions):
        raise SpecError(f"{where}: key 'regions' must be a list of 'chr:start-end' strings")
    out = [parse_interval(r, where) for r in regions]
    bed = data.get("bed")
    if bed is not None:
        if not isinstance(bed, str):
            raise SpecError(f"{where}: key 'bed' must be the path of a BED file, got {type(bed).__name__}")
        path = Path(os.path.expanduser(bed))
        out += read_bed(path if path.is_absolute() else Path(base_dir) / path)
    return tuple(out)


def _split_spec(where: str, name: str, data: Any, base_dir: str) -> SplitSpec:
    where = f"{where} splits.{name}"
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: must be a mapping with keys chroms and/or regions/bed, and samples")
    _check_keys(where, data, ("chroms", "regions", "bed", "samples"))
    if "samples" not in data:
        raise SpecError(f"{where}: missing key 'samples'")
    chroms = data.get("chroms") or []
    if not isinstance(chroms, (list, tuple)) or not all(isinstance(c, str) for c in chroms):
        raise SpecError(f"{where}: key 'chroms' must be a list of chromosome names")
    if len(set(chroms)) != len(chroms):
        raise SpecError(f"{where}: key 'chroms' lists a chromosome twice")
    regions = _split_regions(where, data, base_dir)
    if not chroms and not regions:
        raise SpecError(f"{where}: give the chromosomes (chroms) or intervals (regions, bed) it samples from")
    inside = next((r for r in regions if r.chrom in chroms), None)
    if inside is not None:
        raise SpecError(f"{where}: region {inside} lies on {inside.chrom!r}, which the split already takes whole")
    samples = _check(where, "samples", data["samples"], int, minimum=1)
    return SplitSpec(chroms=tuple(chroms), samples=samples, regions=regions)


QUANTIZE = ("none", *(f"bitround-{k}" for k in range(1, 10)))
"""``storage.quantize`` values: lossless, or float16 bit-rounding keeping 1..9 mantissa bits."""


def _storage_spec(where: str, data: Mapping[str, Any]) -> StorageSpec:
    where = f"{where} storage"
    _check_keys(where, data, tuple(f.name for f in fields(StorageSpec)))
    d = StorageSpec()
    s = StorageSpec(
        dtype=_check(where, "dtype", data.get("dtype", d.dtype), str, choices=STORAGE_DTYPES),
        codec=_check(where, "codec", data.get("codec", d.codec), str, choices=CODECS),
        level=_check(where, "level", data.get("level", d.level), int, minimum=0),
        shuffle=_check(where, "shuffle", data.get("shuffle", d.shuffle), str, choices=SHUFFLES),
        chunk_samples=_check(where, "chunk_samples", data.get("chunk_samples", d.chunk_samples), int, minimum=1),
        unit_samples=_check(where, "unit_samples", data.get("unit_samples", d.unit_samples), int, minimum=1),
        shards=_check(where, "shards", data.get("shards", d.shards), bool),
        checksums=_check(where, "checksums", data.get("checksums", d.checksums), bool),
        quantize=_check(where, "quantize", data.get("quantize", d.quantize), str, choices=QUANTIZE),
    )
    if s.quantize != "none" and s.dtype != "float16":
        raise SpecError(f"{where}: quantize {s.quantize} rounds float16 targets; it needs dtype float16, not {s.dtype}")
    top = CODEC_LEVELS.get(s.codec)
    if top is not None and s.level > top:
        raise SpecError(f"{where}: level {s.level} is out of range for codec {s.codec} (0..{top})")
    if s.unit_samples % s.chunk_samples:
        raise SpecError(
            f"{where}: unit_samples ({s.unit_samples}) must be a multiple of chunk_samples ({s.chunk_samples})"
        )
    return s


def _train_spec(where: str, data: Mapping[str, Any]) -> TrainSpec:
    where = f"{where} train"
    _check_keys(where, data, tuple(f.name for f in fields(TrainSpec)))
    d = TrainSpec()
    values = {
        key: rule.check(where, f"key {key!r}", data.get(key, getattr(d, key))) for key, rule in TRAIN_RULES.items()
    }
    check_train_together(where, values)  # first, so the message names this spec
    return TrainSpec(kwargs=_mapping_field(where, "kwargs", data.get("kwargs")), **values)


def _check_disjoint(where: str, splits: Mapping[str, SplitSpec]) -> None:
    """No chromosome is taken whole by two splits, and no two splits' intervals overlap (a split's
    whole chromosomes give way to the other splits' intervals, see :class:`SplitSpec`)."""
    seen: dict[str, str] = {}
    for name, split in splits.items():
        for chrom in split.chroms:
            if chrom in seen:
                raise SpecError(f"{where}: chromosome {chrom!r} is in both split {seen[chrom]!r} and {name!r}")
            seen[chrom] = name
    named = sorted((r, name) for name, split in splits.items() for r in split.regions)
    for i, (a, split_a) in enumerate(named):
        for b, split_b in named[i + 1 :]:
            if b.chrom != a.chrom or b.start >= a.end:
                break
            if split_b != split_a:
                raise SpecError(f"{where}: region {a} of split {split_a!r} overlaps region {b} of split {split_b!r}")


def _splits(where: str, data: Mapping[str, Any], base_dir: str) -> Mapping[str, SplitSpec]:
    splits_raw = data["splits"]
    if not isinstance(splits_raw, Mapping) or not splits_raw:
        raise SpecError(f"{where}: key 'splits' must be a non-empty mapping of split name to split")
    _check_keys(f"{where} splits", splits_raw, SPLIT_NAMES)
    splits = {name: _split_spec(where, name, splits_raw[name], base_dir) for name in SPLIT_NAMES if name in splits_raw}
    _check_disjoint(where, splits)
    return MappingProxyType(splits)


def spec_from_dict(data: Mapping[str, Any], *, base_dir: str | os.PathLike[str] = ".", where: str = "spec") -> Spec:
    """Validate a plain mapping (as read from YAML) into a :class:`Spec`.

    Raises
    ------
    SpecError
        On an unknown key, a missing required key, a wrong type or an out-of-range value; the
        message names the key.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: must be a YAML mapping, got {type(data).__name__}")
    _check_keys(where, data, tuple(f.name for f in fields(Spec) if f.name != "base_dir"))
    for key in ("name", "genome", "seq_len", "splits"):
        if key not in data:
            raise SpecError(f"{where}: missing required key {key!r}")
    splits = _splits(where, data, str(base_dir))
    name = _check(where, "name", data["name"], str)
    if not name or any(c in name for c in "/\\ "):
        raise SpecError(f"{where}: key 'name' must be a non-empty word without '/', '\\\\' or spaces")
    d = Spec(name="", genome="", seq_len=1, splits={})
    return Spec(
        name=name,
        genome=_check(where, "genome", data["genome"], str),
        seq_len=_check(where, "seq_len", data["seq_len"], int, minimum=2),
        splits=splits,
        base=_base_spec(where, _section(where, data, "base")),
        seed=_check(where, "seed", data.get("seed", d.seed), int, minimum=0, maximum=MAX_SEED),
        max_n=_check(where, "max_n", data.get("max_n", d.max_n), int, minimum=0),
        target=_check(where, "target", data.get("target", d.target), str, choices=TARGET_KINDS),
        precision=_check(where, "precision", data.get("precision", d.precision), str, choices=PRECISIONS),
        storage=_storage_spec(where, _section(where, data, "storage")),
        store=_check(where, "store", data.get("store"), str, optional=True),
        ism_batch_size=_check(where, "ism_batch_size", data.get("ism_batch_size", d.ism_batch_size), int, minimum=1),
        train=_train_spec(where, _section(where, data, "train")),
        base_dir=str(base_dir),
    )


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a YAML spec file; relative paths in it resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file {str(path)!r} does not exist")
    data = read_yaml(path, "spec file")
    if data is None:
        raise SpecError(f"spec file {str(path)!r} is empty")
    return spec_from_dict(data, base_dir=path.resolve().parent, where=f"spec {path.name}")


def dump_spec(spec: Spec, path: str | os.PathLike[str]) -> None:
    """Write a spec as YAML (all keys, defaults filled in)."""
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
    """Dotted keys whose values differ between two (nested) spec dicts (operational keys left out)."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k, "<absent>") != fb.get(k, "<absent>"))
    return [k for k in keys if k.split(".")[0] not in NON_CONTENT_KEYS]


__getattr__ = moved_names("pipeline.core.spec", {"bitround": "pipeline.core.quantize"})
