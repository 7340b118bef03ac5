"""The effects file written by ``predict`` and ``ism`` (and read by ``plot``).

Zarr (default; any path not ending in ``.npz``) or ``.npz`` with::

    effects    float32 [N, F, 4, L]   y[i, f, b, j]: effect on target f of setting position j to b
    reference  uint8   [N, 4, L]      one-hot input (A, G, C, T)
    chrom      str     [N]            chromosome (or FASTA record name)
    center     int64   [N]            1-based window center (0 for FASTA input)
    target_names str   [F]
    attributes: kind (logfold | diff | alt), alphabet, seq_len, source (multiplexer | ism), ...

With ``--tsv``, each sequence also gets a gzipped TSV next to the main output (:func:`tsv_paths`),
one row per variant in genomic order (:func:`variant_table`)::

    variant            <target 1>  <target 2>  ...
    chr7:2961 A>G      0.0132      -0.201      ...

Writing is safe under faults: every output is checked before any work (:func:`check_output`: an
existing one is replaced only with ``--overwrite``, and only when it is of the kind the command
writes: never a training store, a checkpoint, a run folder or one of the command's inputs), written
under a temporary name and published when complete (:func:`effects_output`,
:func:`pipeline.core.files.staging`), so an interrupted run leaves the previous output as it was.
``.npz`` outputs are built in memory and limited to :data:`NPZ_MAX_BYTES` of effects.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.core.encoding import ALPHABET
from pipeline.core.files import (
    Staging,
    atomic_path,
    is_inside,
    refuse_existing,
    remove_stale_temporaries,
    same_path,
    staging,
)
from pipeline.core.progress import plural
from pipeline.core.windows import first_position
from pipeline.errors import UserError, WriteError
from pipeline.models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from pipeline.models.weights import torch_load_safely
from pipeline.store.store import is_training_store


@dataclass
class WrittenEffects:
    """What ``predict`` or ``ism`` wrote: the effects file and the TSV files beside it."""

    path: str
    n_sequences: int
    what: str
    """How the effects are described (``"logfold effects"``, ``"exact ISM diff effects"``)."""
    tsv: list[Path] = field(default_factory=list)

    def line(self) -> str:
        """One line for the command line."""
        note = ""
        if self.tsv:
            note = f" and {plural(len(self.tsv), 'TSV file')} ({self.tsv[0]}{', ...' if len(self.tsv) > 1 else ''})"
        return f"wrote {self.what} of {plural(self.n_sequences, 'sequence')} to {self.path}{note}"


# ------------------------------------------------------------------------------------------------
# what --overwrite may replace
# ------------------------------------------------------------------------------------------------

Sources = Mapping[str, "str | os.PathLike[str] | None"]
"""A command's inputs by option name (``{"--checkpoint": path, "--vcf": path, ...}``; ``None``: not given)."""

RUN_FOLDER_FILES = ("best.pt", "last.pt", "metrics.csv")
"""Files that make a folder a training run folder (``--overwrite`` never replaces one)."""

EFFECTS_SOURCES = ("multiplexer", "ism")


@dataclass(frozen=True)
class OutputKind:
    """What a command writes at a path, and how to recognise an existing one of the same kind: the only
    thing ``--overwrite`` replaces.

    Attributes
    ----------
    name : str
        For messages (``"an effects file written by predict or ism"``).
    matches : callable
        ``matches(path)``: whether the existing ``path`` is of this kind.
    """

    name: str
    matches: Callable[[Path], bool]


def _head(path: Path, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a file, decompressed when it is gzipped (``b""`` if unreadable)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(size)
        if data[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                data = handle.read(size)
    except (OSError, EOFError, zlib.error):
        return b""
    return data


def _zarr_attributes(folder: Path) -> dict[str, Any] | None:
    """The attributes in a Zarr folder's ``zarr.json`` (``None``: not a Zarr v3 node, or unreadable)."""
    try:
        meta = json.loads((folder / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def _is_effects_zarr(path: Path) -> bool:
    if not path.is_dir():
        return False
    attrs = _zarr_attributes(path)
    if attrs is None:
        return False
    # finished files carry their attributes; one interrupted by earlier versions has at least its effects
    return attrs.get("source") in EFFECTS_SOURCES or (path / "effects" / "zarr.json").is_file()


def _is_effects_npz(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return {"effects.npy", "reference.npy", "attrs.npy"} <= names


def table_kind(name: str, header: str) -> OutputKind:
    """A table (plain or gzipped) whose first line starts with ``header``."""
    start = header.encode()
    return OutputKind(name, lambda path: path.is_file() and _head(path).startswith(start))


def _is_image(path: Path) -> bool:
    head = _head(path) if path.is_file() else b""
    return head.startswith((b"\x89PNG\r\n\x1a\n", b"%PDF-")) or b"<svg" in head


EFFECTS_ZARR = OutputKind("an effects file written by predict or ism", _is_effects_zarr)
EFFECTS_NPZ = OutputKind("an effects .npz written by predict or ism", _is_effects_npz)
VARIANT_TSV = table_kind("a variant TSV written by predict or ism", "variant\t")
IMAGE = OutputKind("an image (.png, .pdf or .svg)", _is_image)


def _torch_file(path: Path) -> str | None:
    """``"checkpoint"``, ``"torch"`` (another PyTorch file: weights) or ``None`` (not a PyTorch file)."""
    if not _head(path, 4).startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or a legacy pickle
        return None
    try:
        data = torch_load_safely(path, f"{str(path)!r}")
    except UserError:
        return None
    return "checkpoint" if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT else "torch"


def _protected(path: Path) -> str | None:
    """What ``path`` holds if it is something no command output may replace (else ``None``)."""
    if path.is_dir():
        if is_training_store(path):
            return "holds a multiplexer training store"
        found = [name for name in RUN_FOLDER_FILES if (path / name).exists()]
        return f"is a training run folder (it holds {found[0]})" if found else None
    held = _torch_file(path) if path.is_file() else None
    if held == "checkpoint":
        return "holds a multiplexer checkpoint"
    return "holds a PyTorch file (model weights?)" if held else None


def _describe(path: Path) -> str:
    """What an existing path of another kind is, in a few words."""
    if path.is_dir():
        zarr_like = _zarr_attributes(path) is not None or (path / ".zgroup").exists() or (path / ".zarray").exists()
        return "holds a Zarr store of another kind" if zarr_like else "is a folder but not a Zarr store"
    head = _head(path)
    if head.startswith(b"##fileformat=VCF") or head.startswith(b"#CHROM"):
        return "holds a VCF file"
    if head.startswith(b">"):
        return "holds a FASTA file"
    return "is a file of another kind"


def check_inputs(path: str | os.PathLike[str], inputs: Sources | None, label: str = "--out") -> None:
    """Refuse an output that is, holds or lies inside one of the command's inputs (resolved paths).

    Raises
    ------
    UserError
        One line naming the output and the input's option.
    """
    path = Path(path)
    for flag, source in (inputs or {}).items():
        if source is None or not os.fspath(source):
            continue
        where = f"{label} {str(path)!r}"
        if same_path(path, source):
            raise UserError(f"{where} is this command's {flag}; --overwrite will not replace an input")
        if path.is_dir() and is_inside(source, path):
            raise UserError(f"{where} holds this command's {flag} {str(source)!r}; --overwrite will not replace it")
        if Path(source).is_dir() and is_inside(path, source):
            raise UserError(f"{where} lies inside this command's {flag} {str(source)!r}; it will not write into it")


def check_output(
    path: str | os.PathLike[str],
    kind: OutputKind,
    *,
    overwrite: bool,
    inputs: Sources | None = None,
    label: str = "--out",
    what: str = "output",
    clean: bool = True,
) -> None:
    """Check, before any work, that a command may write its output ``path``.

    Refused: ``path`` is (or holds, or lies inside) one of the command's ``inputs``; ``path`` exists
    but is not of the ``kind`` the command writes (a training store, a checkpoint, a run folder, a
    folder or file of another kind): even ``--overwrite`` does not replace those; ``path`` exists and
    ``overwrite`` is false. Temporaries of ``path`` left by dead processes are removed first (with
    ``clean``), which may put back an output a killed run had set aside.

    Parameters
    ----------
    path : path
        The output.
    kind : OutputKind
        What the command writes there.
    overwrite : bool
        ``--overwrite`` was given.
    inputs : mapping, optional
        The command's input paths by option name.
    label, what : str
        How messages name the output (``"--out"``, ``"TSV file"``; ``"output"``, ``"report file"``).
    clean : bool
        Remove stale temporaries of ``path`` first.

    Raises
    ------
    UserError
        One line saying what the path holds and that ``--overwrite`` will not replace it, or
        :class:`~pipeline.errors.OutputExistsError` (without ``overwrite``).
    """
    path = Path(path)
    check_inputs(path, inputs, label)
    if clean:
        remove_stale_temporaries([path])
    if not os.path.lexists(path):
        return
    if not kind.matches(path):
        held = _protected(path) or _describe(path)
        raise UserError(f"{label} {str(path)!r} {held}; --overwrite will not replace it (it replaces only {kind.name})")
    refuse_existing([path], overwrite, what=what)


# ------------------------------------------------------------------------------------------------
# the effects file
# ------------------------------------------------------------------------------------------------

NPZ_MAX_BYTES = 2 * 1024**3
"""Largest effects array an ``.npz`` output may hold (2 GiB): ``.npz`` files are built in memory (and
read back whole), so larger outputs must be Zarr, which is written and read a sequence at a time."""


def _human(n_bytes: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} TB"  # pragma: no cover


def check_npz_size(out: str | os.PathLike[str], *, n: int, n_targets: int, seq_len: int) -> None:
    """Refuse an ``.npz`` output whose effects exceed :data:`NPZ_MAX_BYTES` (a Zarr output has no limit)."""
    out = Path(out)
    size = n * n_targets * 4 * seq_len * 4
    if out.suffix != ".npz" or size <= NPZ_MAX_BYTES:
        return
    raise UserError(
        f"--out {str(out)!r}: {n} sequences x {n_targets} targets x 4 x {seq_len} positions are {_human(size)} "
        f"of float32 effects, more than an .npz output may hold ({_human(NPZ_MAX_BYTES)}; it is built in "
        f"memory); use a Zarr output instead (any name not ending in .npz, e.g. {out.stem}.zarr)"
    )


def check_effects_output(
    out: str | os.PathLike[str], tsv_files: Iterable[Path], *, overwrite: bool, inputs: Sources | None = None
) -> None:
    """:func:`check_output` for an effects file (``.npz`` or Zarr) and the TSV files beside it; its
    folder must exist."""
    out = Path(out)
    tsv_files = list(tsv_files)
    remove_stale_temporaries([out, *tsv_files])
    kind = EFFECTS_NPZ if out.suffix == ".npz" else EFFECTS_ZARR
    check_output(out, kind, overwrite=overwrite, inputs=inputs, clean=False)
    for path in tsv_files:
        check_output(path, VARIANT_TSV, overwrite=True, inputs=inputs, label="TSV file", clean=False)
    refuse_existing(tsv_files, overwrite)
    if not out.parent.is_dir():
        raise UserError(f"output folder {str(out.parent)!r} does not exist")


class EffectsWriter:
    """Write an effects file at ``path``: batch by batch into a Zarr folder, or all at once on
    :meth:`close` as an ``.npz`` (held in memory until then: :func:`check_npz_size` bounds it).

    It writes exactly ``path``; commands give it a staged path (:func:`effects_output`), so it never
    replaces an existing output itself.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n: int,
        n_targets: int,
        seq_len: int,
        target_names: list[str],
        attrs: dict[str, Any],
    ) -> None:
        self.path = Path(path)
        self.npz = self.path.suffix == ".npz"
        self.attrs = {"alphabet": ALPHABET, "seq_len": seq_len, "n_targets": n_targets, **attrs}
        self.target_names = list(target_names)
        self.n, self.pos = n, 0
        # where batches go: numpy buffers saved on close (.npz), or the Zarr arrays themselves
        self._sinks: dict[str, np.ndarray | zarr.Array]
        if self.npz:
            self._sinks = {
                "effects": np.zeros((n, n_targets, 4, seq_len), dtype=np.float32),
                "reference": np.zeros((n, 4, seq_len), dtype=np.uint8),
            }
        else:
            self.group = zarr.open_group(str(self.path), mode="w-")
            self._sinks = {
                "effects": self.group.create_array(
                    "effects",
                    shape=(n, n_targets, 4, seq_len),
                    chunks=(1, n_targets, 4, seq_len),
                    dtype="float32",
                    dimension_names=["sample", "target", "base", "position"],
                ),
                "reference": self.group.create_array(
                    "reference",
                    shape=(n, 4, seq_len),
                    chunks=(max(1, min(n, 64)), 4, seq_len),
                    dtype="uint8",
                    dimension_names=["sample", "base", "position"],
                ),
            }
        self.chrom: list[str] = []
        self.center: list[int] = []

    def write(self, effects: np.ndarray, reference: np.ndarray, chrom: list[str], center: np.ndarray) -> None:
        """Append a batch: ``effects [n, F, 4, L]``, ``reference [n, 4, L]``."""
        k = effects.shape[0]
        sl = slice(self.pos, self.pos + k)
        self._sinks["effects"][sl] = effects.astype(np.float32)
        self._sinks["reference"][sl] = reference.astype(np.uint8)
        self.chrom += list(chrom)
        self.center += [int(c) for c in center]
        self.pos += k

    def close(self) -> str:
        """Finish the file (names, centers, targets, then the attributes that mark it complete); returns its path."""
        if self.pos != self.n:
            raise RuntimeError(f"wrote {self.pos} of {self.n} samples")
        if self.npz:
            np.savez_compressed(
                self.path,
                effects=np.asarray(self._sinks["effects"]),
                reference=np.asarray(self._sinks["reference"]),
                chrom=np.array(self.chrom),
                center=np.array(self.center, dtype=np.int64),
                target_names=np.array(self.target_names),
                attrs=np.array(json.dumps(self.attrs)),
            )
            return str(self.path)
        g = self.group
        g.create_array("chrom", shape=(self.n,), dtype=str, dimension_names=["sample"])[:] = np.array(
            self.chrom, dtype=object
        )
        g.create_array("center", shape=(self.n,), dtype="int64", dimension_names=["sample"])[:] = np.array(self.center)
        g.create_array("target_names", shape=(len(self.target_names),), dtype=str, dimension_names=["target"])[:] = (
            np.array(self.target_names, dtype=object)
        )
        g.attrs.update(self.attrs)  # the attributes go last: they mark a finished file
        return str(self.path)


@dataclass
class EffectsOutput:
    """The effects file and TSV files of one ``predict``/``ism`` run while they are being written
    (at staged paths; :func:`effects_output` publishes them)."""

    writer: EffectsWriter
    tsv: list[Path]
    """Where each sequence's TSV file is written (staged)."""
    target_names: list[str]

    def write(self, effects: np.ndarray, reference: np.ndarray, chrom: list[str], center: np.ndarray) -> None:
        """Append a batch of sequences (:meth:`EffectsWriter.write`)."""
        self.writer.write(effects, reference, chrom, center)

    def write_tsv(self, index: int, effects: np.ndarray, reference: np.ndarray, chrom: str, center: int) -> None:
        """Write the TSV file of sequence ``index`` (``effects [F, 4, L]``, ``reference [4, L]``)."""
        write_variant_tsv(self.tsv[index], effects, reference, chrom, center, self.target_names, atomic=False)


@contextmanager
def effects_output(
    out: str | os.PathLike[str],
    *,
    n: int,
    seq_len: int,
    target_names: list[str],
    attrs: dict[str, Any],
    tsv_files: Iterable[Path] = (),
    overwrite: bool = False,
    inputs: Sources | None = None,
) -> Iterator[EffectsOutput]:
    """Write an effects file (and TSV files) safely; the block writes every sequence through the
    :class:`EffectsOutput` it gets: ``n`` sequences of ``len(target_names)`` targets, 4 bases and
    ``seq_len`` positions.

    The outputs are checked first (:func:`check_effects_output`, :func:`check_npz_size`), written in
    a hidden staging folder beside ``out`` and published when the block succeeds (the TSV files, then
    the effects file; :func:`pipeline.core.files.staging`). On any failure, ``KeyboardInterrupt``
    included, the staged files are removed and existing outputs are untouched; a write error
    (``OSError``: full disk, permission) is one :class:`~pipeline.errors.WriteError` naming the file.
    """
    out = Path(out)
    tsv_files = [Path(p) for p in tsv_files]
    check_effects_output(out, tsv_files, overwrite=overwrite, inputs=inputs)
    n_targets = len(target_names)
    check_npz_size(out, n=n, n_targets=n_targets, seq_len=seq_len)
    stage: Staging | None = None
    try:
        with staging(out) as stage:
            tsv = [stage.path(p) for p in tsv_files]  # published first: the effects file comes last
            writer = EffectsWriter(
                stage.path(out), n=n, n_targets=n_targets, seq_len=seq_len, target_names=target_names, attrs=attrs
            )
            yield EffectsOutput(writer, tsv, list(target_names))
            writer.close()
            check_effects_output(out, tsv_files, overwrite=overwrite, inputs=inputs)  # nothing new appeared
    except OSError as exc:
        where = stage.final_name(exc.filename) if stage is not None and exc.filename else str(out)
        raise WriteError(f"cannot write output {where!r}: {exc.strerror or exc}") from None


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise TypeError(f"{name!r} is a group, not an array")
    return node


def read_effects(path: str | Path) -> dict[str, Any]:
    """Read an effects file into numpy arrays plus ``attrs``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"effects file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npz":
            # our own handle: numpy leaves the file open when the archive is damaged (a truncated .npz)
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as z:
                out = {k: z[k] for k in ("effects", "reference", "chrom", "center", "target_names")}
                out["attrs"] = json.loads(str(z["attrs"]))
        else:
            g = zarr.open_group(str(path), mode="r")
            out = {k: np.asarray(_array(g, k)[:]) for k in ("effects", "reference", "chrom", "center", "target_names")}
            out["attrs"] = dict(g.attrs)
    except Exception as exc:
        raise UserError(
            f"{str(path)!r} is not an effects file written by predict/ism ({type(exc).__name__}: {exc})"
        ) from None
    out["chrom"] = [str(c) for c in out["chrom"]]
    out["target_names"] = [str(t) for t in out["target_names"]]
    return out


TSV_FORMAT = "%.6g"
"""How effect values are written in TSV files (6 significant digits; exact zeros stay ``0``)."""
TSV_GZIP_LEVEL = 1
"""gzip level of ``.tsv.gz`` files: level 6 makes files ~15 % smaller but is ~6x slower to write."""


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "seq"


def tsv_paths(out: str | Path, chrom: list[str], center: np.ndarray | list[int]) -> list[Path]:
    """Paths of the per-sequence TSV files that go with the effects file ``out``.

    ``<stem>.<index>.<chrom>_<center>.tsv.gz`` for genomic regions and ``<stem>.<index>.<name>.tsv.gz``
    for FASTA records (``center == 0``), in the folder of ``out``; ``<stem>`` is the output's name
    without ``.npz``/``.zarr`` and ``<index>`` the sequence's 0-based index in the effects file
    (zero-padded so the files sort in order).
    """
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix in (".npz", ".zarr") else out.name
    digits = len(str(max(len(chrom) - 1, 0)))
    names = []
    for i, (c, p) in enumerate(zip(chrom, center)):
        where = f"{_safe_name(c)}_{int(p)}" if int(p) > 0 else _safe_name(c)
        names.append(out.parent / f"{stem}.{i:0{digits}d}.{where}.tsv.gz")
    return names


def variant_table(effects: np.ndarray, reference: np.ndarray, chrom: str, center: int) -> tuple[list[str], np.ndarray]:
    """One row per single-nucleotide variant of a window: labels and per-target effects.

    Rows run over window positions in genomic order and, at each position, over the alternative
    bases in alphabet order (``A, G, C, T``). The reference base's row (``REF>REF``, 0 by definition)
    is left out; an ``N`` position (any non-ACGT base) gets four rows ``N>A`` ... ``N>T`` with
    effects 0.

    Parameters
    ----------
    effects : np.ndarray, shape=(F, 4, L)
    reference : np.ndarray, shape=(4, L)
        One-hot reference.
    chrom : str
        Chromosome, or FASTA record name.
    center : int
        1-based window center; ``0`` for FASTA sequences (positions are then 1-based indices in
        the sequence).

    Returns
    -------
    labels : list of str, length V
        ``chr:pos REF>ALT`` with ``pos`` the 1-based genomic position of the base
        (window index ``j`` is ``center - L//2 + 1 + j``), or ``name:index REF>ALT``.
    values : np.ndarray, shape=(V, F)
    """
    F, _, L = effects.shape
    if reference.shape != (4, L):
        raise ValueError(f"reference has shape {list(reference.shape)}, expected [4, {L}]")
    present = reference.sum(axis=0) > 0
    ref_code = np.where(present, reference.argmax(axis=0), 4)  # [L], 4 = N
    keep = np.arange(4)[None, :] != ref_code[:, None]  # [L, 4]
    js, bs = np.nonzero(keep)  # row-major: position, then base
    first = first_position(center, L) if int(center) > 0 else 1
    letters = ALPHABET + "N"
    labels = [f"{chrom}:{first + j} {letters[ref_code[j]]}>{ALPHABET[b]}" for j, b in zip(js.tolist(), bs.tolist())]
    values = np.ascontiguousarray(effects[:, bs, js].T)
    return labels, values


def write_table(path: str | Path, header: list[str], rows: Iterable[list[str]]) -> None:
    """Write a tab-separated table at exactly ``path`` (a staged path); gzipped when ``path`` ends in ``.gz``.

    ``rows`` yields lists of already formatted strings.
    """
    path = Path(path)
    handle = (
        gzip.open(path, "wt", compresslevel=TSV_GZIP_LEVEL, newline="")
        if path.suffix == ".gz"
        else open(path, "w", newline="")
    )
    with handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(row) + "\n")


def write_tsv(path: str | Path, header: list[str], rows: Iterable[list[str]]) -> None:
    """Write a tab-separated table atomically (:func:`write_table` at a temporary path, published when
    complete); gzipped when ``path`` ends in ``.gz``."""
    with atomic_path(path) as tmp:
        write_table(tmp, header, rows)


def write_variant_tsv(
    path: str | Path,
    effects: np.ndarray,
    reference: np.ndarray,
    chrom: str,
    center: int,
    target_names: list[str],
    *,
    atomic: bool = True,
) -> None:
    """Write :func:`variant_table` of one window as a TSV: column ``variant`` then one per target.

    Parameters
    ----------
    effects : np.ndarray, shape=(F, 4, L)
    reference : np.ndarray, shape=(4, L)
    atomic : bool
        Write through a temporary file (:func:`write_tsv`); ``False``: ``path`` is already a staged path.
    """
    labels, values = variant_table(effects, reference, chrom, center)
    fmt = "\t".join([TSV_FORMAT] * values.shape[1])
    rows = ([label, fmt % tuple(row)] for label, row in zip(labels, values.astype(np.float64).tolist()))
    (write_tsv if atomic else write_table)(path, ["variant", *target_names], rows)
