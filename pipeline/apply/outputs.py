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

An existing output is never overwritten unless asked to.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.core.encoding import ALPHABET
from pipeline.core.files import atomic_path, refuse_existing, remove_output
from pipeline.core.windows import first_position
from pipeline.errors import UserError, WriteError


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
            plural = "s" if len(self.tsv) > 1 else ""
            note = f" and {len(self.tsv)} TSV file{plural} ({self.tsv[0]}{', ...' if len(self.tsv) > 1 else ''})"
        return f"wrote {self.what} of {self.n_sequences} sequences to {self.path}{note}"


class EffectsWriter:
    """Write effects batch by batch (Zarr) or all at once on :meth:`close` (``.npz``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        n: int,
        n_targets: int,
        seq_len: int,
        target_names: list[str],
        attrs: dict[str, Any],
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.npz = self.path.suffix == ".npz"
        refuse_existing([self.path], overwrite)
        remove_output(self.path)
        if not self.path.parent.exists():
            raise UserError(f"output folder {str(self.path.parent)!r} does not exist")
        self.attrs = {"alphabet": ALPHABET, "seq_len": seq_len, "n_targets": n_targets, **attrs}
        self.target_names = list(target_names)
        self.n, self.pos = n, 0
        self._created = False  # whether self.path is ours to remove if writing fails
        # where batches go: numpy buffers saved on close (.npz), or the Zarr arrays themselves
        self._sinks: dict[str, np.ndarray | zarr.Array]
        if self.npz:
            self._sinks = {
                "effects": np.zeros((n, n_targets, 4, seq_len), dtype=np.float32),
                "reference": np.zeros((n, 4, seq_len), dtype=np.uint8),
            }
        else:
            with self._writing():
                self._created = True
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

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write that fails (disk full, permission) removes the partial output and is one UserError."""
        try:
            yield
        except OSError as exc:
            self.abort()
            raise WriteError(f"cannot write output {str(self.path)!r}: {exc.strerror or exc}") from None

    def abort(self) -> None:
        """Remove what this writer created (after a failure): no half-written output is left behind."""
        if self._created and self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
        self._created = False

    def write(self, effects: np.ndarray, reference: np.ndarray, chrom: list[str], center: np.ndarray) -> None:
        """Append a batch: ``effects [n, F, 4, L]``, ``reference [n, 4, L]``."""
        k = effects.shape[0]
        sl = slice(self.pos, self.pos + k)
        with self._writing():
            self._sinks["effects"][sl] = effects.astype(np.float32)
            self._sinks["reference"][sl] = reference.astype(np.uint8)
        self.chrom += list(chrom)
        self.center += [int(c) for c in center]
        self.pos += k

    def close(self) -> str:
        """Finish the file (names, centers, targets, then the attributes that mark it complete); returns its path."""
        if self.pos != self.n:
            raise RuntimeError(f"wrote {self.pos} of {self.n} samples")
        with self._writing():
            if self.npz:  # written to a temporary file and renamed, so a failure leaves no partial file
                with atomic_path(self.path, suffix=".npz") as tmp:
                    np.savez_compressed(
                        tmp,
                        effects=np.asarray(self._sinks["effects"]),
                        reference=np.asarray(self._sinks["reference"]),
                        chrom=np.array(self.chrom),
                        center=np.array(self.center, dtype=np.int64),
                        target_names=np.array(self.target_names),
                        attrs=np.array(json.dumps(self.attrs)),
                    )
            else:
                g = self.group
                g.create_array("chrom", shape=(self.n,), dtype=str, dimension_names=["sample"])[:] = np.array(
                    self.chrom, dtype=object
                )
                g.create_array("center", shape=(self.n,), dtype="int64", dimension_names=["sample"])[:] = np.array(
                    self.center
                )
                g.create_array("target_names", shape=(len(self.target_names),), dtype=str, dimension_names=["target"])[
                    :
                ] = np.array(self.target_names, dtype=object)
                g.attrs.update(self.attrs)  # the attributes go last: they mark a finished file
        self._created = False
        return str(self.path)


@contextmanager
def cleanup_on_failure(writer: EffectsWriter) -> Iterator[list[Path]]:
    """On any failure (disk full, an error, Ctrl-C) remove the partial effects file and the TSV files
    this run wrote (the caller appends them to the list it gets), so no half-written output is
    mistaken for a finished one; a write error (``OSError``) becomes one :class:`UserError` line
    naming the file."""
    written: list[Path] = []
    try:
        yield written
    except BaseException as exc:
        writer.abort()
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            where = exc.filename or writer.path
            raise WriteError(f"cannot write output {str(where)!r}: {exc.strerror or exc}") from None
        raise


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
            with np.load(path, allow_pickle=False) as z:
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


def write_tsv(path: str | Path, header: list[str], rows: Iterable[list[str]]) -> None:
    """Write a tab-separated table atomically; gzipped when ``path`` ends in ``.gz``.

    ``rows`` yields lists of already formatted strings.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        handle = (
            gzip.open(tmp, "wt", compresslevel=TSV_GZIP_LEVEL, newline="")
            if path.suffix == ".gz"
            else open(tmp, "w", newline="")
        )
        with handle:
            handle.write("\t".join(header) + "\n")
            for row in rows:
                handle.write("\t".join(row) + "\n")


def write_variant_tsv(
    path: str | Path, effects: np.ndarray, reference: np.ndarray, chrom: str, center: int, target_names: list[str]
) -> None:
    """Write :func:`variant_table` of one window as a TSV: column ``variant`` then one per target.

    Parameters
    ----------
    effects : np.ndarray, shape=(F, 4, L)
    reference : np.ndarray, shape=(4, L)
    """
    labels, values = variant_table(effects, reference, chrom, center)
    fmt = "\t".join([TSV_FORMAT] * values.shape[1])
    rows = ([label, fmt % tuple(row)] for label, row in zip(labels, values.astype(np.float64).tolist()))
    write_tsv(path, ["variant", *target_names], rows)
