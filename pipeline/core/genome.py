"""Genome access with the project's window convention (:mod:`pipeline.core.windows`).

A window is named by chromosome and a 1-based center ``pos``; for length ``L`` it is the 0-based
half-open slice ``[pos - L//2, pos - L//2 + L)`` (for L = 2000: 1-based ``pos-999 … pos+1000``).
A window that does not fit inside its chromosome is an error, never truncated or padded.

A genome is a plain FASTA or a bgzip-compressed one (``.fa.gz``/``.fa.bgz``, with samtools' ``.fai``
and ``.gzi`` next to it or without them). A missing index is built next to the FASTA; where that
folder is read-only it is kept in the user's cache (:func:`cache_dir`), named by the FASTA's path,
size and modification time. :meth:`Genome.fingerprint` names a genome by a digest of every base
(computed once per file and cached, :mod:`pipeline.core.sequence_digest`), :meth:`Genome.quick_fingerprint`
by a sample (the quick pre-check), and :func:`fingerprint_difference` says how two fingerprints differ.
"""

from __future__ import annotations

import bisect
import errno
import gzip
import hashlib
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyfaidx
from Bio import bgzf

from pipeline.core.progress import plural
from pipeline.core.sequence_digest import DIGEST_VERSION, cache_dir, cached_digest, sequence_digest
from pipeline.core.windows import center_range, window_bounds
from pipeline.errors import UserError

__all__ = ["FINGERPRINT_VERSION", "Genome", "cache_dir", "fingerprint_difference", "other_spelling"]

FINGERPRINT_VERSION = 1
"""Version of :meth:`Genome.fingerprint`'s sampling scheme (sequence samples compare only within one)."""

_SLICE_BP = 64
_SLICES_PER_CONTIG = 16
_SAMPLE_BUDGET = 65536  # slices over the whole genome: assemblies of many scaffolds get fewer per contig
_LISTED_CONTIGS = 25
_HEADER_SPAN = 65536  # longest header line the index check reads back
_MITOCHONDRION = ("chrM", "MT", "M", "chrMT")


def other_spelling(chrom: str, names: Collection[str], folded: Mapping[str, str] | None = None) -> str | None:
    """The name among ``names`` that spells ``chrom`` under the other naming convention, if one does:
    ``17`` and ``chr17`` name each other, as do ``chrM``, ``MT``, ``M`` and ``chrMT``; case is ignored
    when nothing matches exactly. ``None`` when ``chrom`` itself is in ``names`` or nothing matches.

    Parameters
    ----------
    chrom : str
    names : collection of str
        The names to choose from (a genome's contigs, a catalogue's).
    folded : mapping, optional
        ``casefold(name) -> name`` for ``names`` (computed when not given).
    """
    if chrom in names:
        return None
    if folded is None:
        folded = {name.casefold(): name for name in reversed(list(names))}
    candidates = [chrom[3:] if chrom.startswith("chr") else f"chr{chrom}"]
    if chrom.casefold() in {m.casefold() for m in _MITOCHONDRION}:
        candidates += _MITOCHONDRION
    for name in candidates:
        if name and name != chrom and name in names:
            return name
    for name in (chrom, *candidates):
        found = folded.get(name.casefold())
        if found is not None and found != chrom:
            return found
    return None


_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_BGZF_SUFFIXES = (".gz", ".bgz")  # pyfaidx reads a FASTA as bgzip by its name
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
_READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, zlib.error, struct.error)


def _print_note(line: str) -> None:
    print(line, file=sys.stderr)


def _detail(exc: BaseException) -> str:
    """An exception as a short one-line text."""
    return " ".join(str(exc).split())[:160] or type(exc).__name__


# ------------------------------------------------------------------------------------------------
# compression and the first bytes
# ------------------------------------------------------------------------------------------------


def _is_bgzf(head: bytes) -> bool:
    """Whether gzip-compressed ``head`` starts with a BGZF block (FEXTRA with a ``BC`` subfield)."""
    return len(head) >= 18 and bool(head[3] & 4) and head[12:14] == b"BC"


def _read_head(path: Path) -> tuple[bytes, bool]:
    """The first (up to 64 KiB) uncompressed bytes of the FASTA, and whether it is bgzip-compressed."""
    name, shown = path.name.lower(), str(path)
    with open(path, "rb") as handle:
        head = handle.read(65536)
        if not head.startswith(b"\x1f\x8b"):
            if name.endswith(_BGZF_SUFFIXES):
                raise UserError(
                    f"genome FASTA {shown!r} is not compressed, but its name ends in {Path(name).suffix}; "
                    "rename it without that ending"
                )
            return head, False
        if not _is_bgzf(head):
            raise UserError(
                f"genome FASTA {shown!r} is gzip- but not bgzip-compressed; "
                "decompress it (gunzip) or recompress it with bgzip"
            )
        if not name.endswith(_BGZF_SUFFIXES):
            raise UserError(
                f"genome FASTA {shown!r} is bgzip-compressed, but its name does not end in .gz or .bgz; "
                f"rename it (e.g. to {path.name + '.gz'!r})"
            )
        handle.seek(max(0, path.stat().st_size - len(_BGZF_EOF)))
        if handle.read() != _BGZF_EOF:
            raise UserError(
                f"genome FASTA {shown!r} lacks bgzip's end-of-file block: it is truncated; "
                "download or compress it again"
            )
    try:
        reader = bgzf.BgzfReader(str(path), "rb")
        try:
            return reader.read(65536), True
        finally:
            reader.close()
    except _READ_ERRORS as exc:
        raise UserError(f"genome FASTA {shown!r} is not a readable bgzip file ({_detail(exc)})") from None


def _check_head(path: Path, head: bytes) -> None:
    shown = str(path)
    if not head:
        raise UserError(f"genome FASTA {shown!r} is empty")
    if not head.startswith(b">"):
        raise UserError(f"genome FASTA {shown!r} does not start with a '>' header line")
    if b"\r" in head:
        raise UserError(
            f"genome FASTA {shown!r} has Windows (CRLF) line endings; convert it first, e.g. with `dos2unix`"
        )


# ------------------------------------------------------------------------------------------------
# where the index lives, and building it
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Index:
    """The index files of one FASTA: ``.fai`` and, for bgzip, ``.gzi``."""

    fai: Path
    gzi: Path | None
    existed: bool = True
    temporary: Path | None = None
    """A folder to delete once the index is read (an index built for this process only)."""

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.fai,) if self.gzi is None else (self.fai, self.gzi)

    def fresh(self, fasta: Path) -> bool:
        """All files exist and none is older than the FASTA (pyfaidx would rebuild an older one)."""
        try:
            mtime = fasta.stat().st_mtime
            return all(f.is_file() and f.stat().st_mtime >= mtime for f in self.files)
        except OSError:
            return False

    def built(self) -> _Index:
        return _Index(self.fai, self.gzi, existed=False, temporary=self.temporary)

    def shown(self) -> str:
        return str(self.fai) if self.gzi is None else f"{self.fai} and {self.gzi}"


def _filesystem_error(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc`` (pyfaidx wraps write errors into its own IOError)."""
    for e in (exc, exc.__context__):
        if isinstance(e, OSError) and e.errno is not None:
            return e
    return None


def _build_index(fasta: Path, index: _Index, folder: Path) -> None:
    """Build ``index`` in a private folder inside ``folder``, then move its files into place (each
    rename is atomic, so a reader never sees a half-written file).

    An :class:`OSError` means the index could not be written there; a problem of the FASTA itself is
    a :class:`UserError`.
    """
    work = Path(tempfile.mkdtemp(dir=folder, prefix=f".{fasta.name}.index-"))
    try:
        built = [work / f.name for f in index.files]
        try:
            pyfaidx.Faidx(
                str(fasta),
                indexname=str(built[0]),
                gzi_indexname=str(built[1]) if index.gzi else None,
                build_index=True,
                rebuild=False,
            ).close()
        except Exception as exc:  # pyfaidx raises several types for malformed files
            cause = _filesystem_error(exc)
            if cause is not None:
                raise cause from None
            raise UserError(f"cannot read genome FASTA {str(fasta)!r}: {_detail(exc)}") from None
        stamp = max(time.time_ns(), fasta.stat().st_mtime_ns)  # never older than the FASTA
        for src, dst in zip(built, index.files):
            os.utime(src, ns=(stamp, stamp))
            os.replace(src, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cached_index(fasta: Path, bgzip: bool) -> _Index:
    """The index's place in the cache: named by the FASTA's resolved path, size and mtime."""
    stat = fasta.stat()
    key = hashlib.sha256(f"{fasta.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    folder = cache_dir() / "fai"
    stem = f"{fasta.name}.{key}"
    return _Index(folder / f"{stem}.fai", folder / f"{stem}.gzi" if bgzip else None)


def _locate_index(fasta: Path, bgzip: bool, notify: Callable[[str], None]) -> _Index:
    """The index to read: next to the FASTA, else in the cache, else built (in that order of places)."""
    beside = _Index(fasta.with_name(fasta.name + ".fai"), fasta.with_name(fasta.name + ".gzi") if bgzip else None)
    if beside.fresh(fasta):
        return beside
    cached = _cached_index(fasta, bgzip)
    if cached.fresh(fasta):
        return cached
    try:
        _build_index(fasta, beside, fasta.parent)
        return beside.built()
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            why = f"{fasta}'s folder is read-only"
        else:
            why = f"cannot write {fasta}'s index next to it ({exc.strerror or _detail(exc)})"
    try:
        cached.fai.parent.mkdir(parents=True, exist_ok=True)
        _build_index(fasta, cached, cached.fai.parent)
    except OSError:
        pass
    else:
        notify(f"note: {why}; its index is kept in {cached.shown()}")
        return cached.built()
    return _temporary_index(fasta, bgzip, why, notify)


def _temporary_index(fasta: Path, bgzip: bool, why: str, notify: Callable[[str], None]) -> _Index:
    """An index built in a temporary folder, read once and deleted (neither folder could keep it)."""
    cache = cache_dir()
    try:
        work = Path(tempfile.mkdtemp(prefix="multiplexer-index-"))
    except OSError as exc:
        raise UserError(
            f"cannot build an index for genome FASTA {str(fasta)!r}: {why}, and neither the cache {str(cache)!r} "
            f"nor the temporary folder can be written ({exc.strerror}); set MULTIPLEXER_CACHE to a writable folder"
        ) from None
    index = _Index(work / "index.fai", work / "index.gzi" if bgzip else None, existed=False, temporary=work)
    try:
        _build_index(fasta, index, work)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise UserError(
            f"cannot build an index for genome FASTA {str(fasta)!r}: {why}, the cache {str(cache)!r} is not "
            f"writable and the temporary folder failed ({exc.strerror}); set MULTIPLEXER_CACHE to a writable folder"
        ) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    notify(
        f"note: {why}, and the cache {cache} is not writable either; its index is built for this run only "
        "(set MULTIPLEXER_CACHE to a writable folder to keep it)"
    )
    return index


# ------------------------------------------------------------------------------------------------
# reading bytes: the index check and bgzip access
# ------------------------------------------------------------------------------------------------


class _BgzfBytes:
    """Random access to the uncompressed bytes of a bgzip file through its ``.gzi`` block list.

    pyfaidx's own bgzip reads fail at a block boundary for 64 KiB blocks (Biopython's writer makes
    them), so sequences are read here: the block holding an offset is the last one starting at or
    before it, which keeps the offset within the block below 2**16.
    """

    def __init__(self, path: Path, blocks: Sequence[Any]) -> None:
        self._cstarts = [int(b.cstart) for b in blocks]
        self._ustarts = [int(b.ustart) for b in blocks]
        self._reader: bgzf.BgzfReader | None = bgzf.BgzfReader(str(path), "rb")
        self._lock = threading.Lock()

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` uncompressed bytes from ``offset`` (fewer at the end of the file)."""
        i = bisect.bisect_right(self._ustarts, offset) - 1
        if i < 0:
            raise ValueError(f"offset {offset} lies before the first block")
        virtual = bgzf.make_virtual_offset(self._cstarts[i], offset - self._ustarts[i])
        with self._lock:
            if self._reader is None:
                raise ValueError("the bgzip file is closed")
            self._reader.seek(virtual)
            data: bytes = self._reader.read(size)
        return data

    def close(self) -> None:
        """Close the file (also when garbage-collected, as pyfaidx does)."""
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            reader.close()

    def __del__(self) -> None:
        self.close()


def _index_mismatch(read_at: Callable[[int, int], bytes], index: Mapping[str, Any]) -> str | None:
    """Check each ``.fai`` record against the FASTA's (uncompressed) bytes: a stale or edited index
    would otherwise read the wrong bases silently. The sequence must start right after a header line
    and end where the next header (or the file) begins. Two small reads per record; ``None`` when all
    agree. ``read_at(offset, size)`` returns fewer bytes at the end of the file."""
    last = max(index, key=lambda name: index[name].offset, default=None)
    for name, rec in index.items():
        # just past the last base: full lines of lenb bytes, then the rest of the last line
        last_line, in_line = divmod(rec.rlen - 1, rec.lenc) if rec.lenc and rec.rlen else (0, -1)
        end = rec.offset + last_line * rec.lenb + in_line + 1
        if rec.offset < 1:
            return f"record {name!r}: offset {rec.offset} is not the start of a sequence line"
        try:
            before, tail = read_at(rec.offset - 1, 1), read_at(end - 1, 257)
        except _READ_ERRORS as exc:
            return f"record {name!r}: its bytes cannot be read ({_detail(exc)})"
        if not tail:
            return f"record {name!r}: length {rec.rlen} at offset {rec.offset} runs past the end of the file"
        if before != b"\n":
            return f"record {name!r}: offset {rec.offset} is not the start of a sequence line"
        header = _header_before(read_at, rec.offset - 1)
        if header is None or header[1:].split(maxsplit=1)[:1] != [name.encode()]:
            found = "no header line" if header is None else repr(header[:60].decode("utf-8", "replace"))
            return f"record {name!r}: the header line before its offset {rec.offset} is {found}"
        after = tail[1:].lstrip(b"\r\n")
        if after and not after.startswith(b">"):
            return f"record {name!r}: its sequence does not end after the {rec.rlen} bases the index says"
        if name == last and after:
            return f"the FASTA has records after {name!r}, the last one the index lists"
    return None


def _header_before(read_at: Callable[[int, int], bytes], newline: int) -> bytes | None:
    """The line that ends at byte ``newline`` (a header line starts with ``>``), ``None`` if there is
    none within 64 KiB."""
    span = min(newline, _HEADER_SPAN)
    head = read_at(newline - span, span)
    cut = head.rfind(b"\n")
    if cut < 0 and span < newline:
        return None
    line = head[cut + 1 :].rstrip(b"\r")
    return line if line.startswith(b">") else None


def _plain_mismatch(path: Path, index: Mapping[str, Any]) -> str | None:
    with open(path, "rb") as handle:

        def read_at(offset: int, size: int) -> bytes:
            handle.seek(offset)
            return handle.read(size)

        return _index_mismatch(read_at, index)


# ------------------------------------------------------------------------------------------------
# fingerprints
# ------------------------------------------------------------------------------------------------


def _sample_slices(length: int, per_contig: int) -> list[tuple[int, int]]:
    """Evenly spaced ``[start, end)`` slices of ``_SLICE_BP`` bases (the whole contig when short)."""
    if length <= _SLICE_BP * per_contig:
        return [(0, length)] if length else []
    if per_contig == 1:
        start = (length - _SLICE_BP) // 2
        return [(start, start + _SLICE_BP)]
    starts = [i * (length - _SLICE_BP) // (per_contig - 1) for i in range(per_contig)]
    return [(s, s + _SLICE_BP) for s in starts]


def _pairs(fingerprint: Mapping[str, Any]) -> list[tuple[str, int]]:
    return [(str(name), int(length)) for name, length in fingerprint.get("first_contigs", [])]


def _full_digests(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether both fingerprints carry a full sequence digest of the same version."""
    return (
        bool(old.get("sequence_digest"))
        and bool(new.get("sequence_digest"))
        and (old.get("digest_version") == new.get("digest_version"))
    )


def fingerprint_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """What differs between two :meth:`Genome.fingerprint` results, most specific first.

    Parameters
    ----------
    old, new : Mapping
        Fingerprints (as returned, or after a JSON round trip).

    Returns
    -------
    str or None
        ``None`` when they name the same genome; otherwise a short phrase such as
        ``"contig 'chr1' is 249250621 bp in one and 248956422 bp in the other"``,
        ``"24 contigs vs 25"``, ``"contig names differ ('chr1' vs '1')"``,
        ``"the contig names and lengths differ"`` or
        ``"same contig names and lengths but different sequence"``. Sequence samples are compared
        only between fingerprints of the same ``version``; full digests (``sequence_digest``) where
        both have one of the same ``digest_version`` (a fingerprint recorded before full digests
        existed is compared by its sample only).
    """
    if old["layout_sha256"] == new["layout_sha256"]:
        sampled_alike = old.get("version") != new.get("version") or old["sequence_sha256"] == new["sequence_sha256"]
        if not sampled_alike:
            return "same contig names and lengths but different sequence"
        if _full_digests(old, new) and old["sequence_digest"] != new["sequence_digest"]:
            return "same contig names and lengths but different sequence (the full digests differ)"
        return None
    a, b = _pairs(old), _pairs(new)
    lengths_b = dict(b)
    for name, length in a:
        if lengths_b.get(name, length) != length:
            return f"contig {name!r} is {length} bp in one and {lengths_b[name]} bp in the other"
    n_a, n_b = int(old["n_contigs"]), int(new["n_contigs"])
    if n_a != n_b:
        only = sorted({n for n, _ in a} ^ {n for n, _ in b})
        complete = len(a) == n_a and len(b) == n_b
        named = f" (only one has {', '.join(map(repr, only[:3]))})" if complete and 0 < len(only) <= 3 else ""
        return f"{plural(n_a, 'contig')} vs {n_b}{named}"
    for i, ((x, _), (y, _)) in enumerate(zip(a, b)):
        if x != y:
            if {n for n, _ in a} == {n for n, _ in b}:
                return f"the contigs are in another order ({x!r} vs {y!r} at position {i + 1})"
            return f"contig names differ ({x!r} vs {y!r})"
    return "the contig names and lengths differ"


# ------------------------------------------------------------------------------------------------
# the genome
# ------------------------------------------------------------------------------------------------


class Genome:
    """A FASTA genome read through its ``.fai`` index (built when absent).

    Parameters
    ----------
    path : str or Path
        FASTA file, plain or bgzip-compressed (``.gz``/``.bgz``; a plain-gzip file is refused).
        Sequences keep their case; :func:`pipeline.encoding.one_hot` treats lower case like upper case.
    notify : callable, optional
        Receives one line when the index cannot be kept next to the FASTA (a read-only folder) and is
        kept in the cache (:func:`cache_dir`) or built for this process only, or when the sequence
        digest cannot be kept in the cache. Default: print it on stderr.

    Attributes
    ----------
    path : Path
        The FASTA.
    bgzip : bool
        Whether the FASTA is bgzip-compressed.
    chrom_lengths : dict of str to int
        Sequence lengths in file order.
    index_path : Path or None
        The ``.fai`` in use (next to the FASTA or in the cache); ``None`` when it was built for this
        process only.
    """

    def __init__(self, path: str | os.PathLike[str], *, notify: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"genome FASTA {str(self.path)!r} does not exist")
        if self.path.stat().st_size == 0:
            raise UserError(f"genome FASTA {str(self.path)!r} is empty")
        head, self.bgzip = _read_head(self.path)
        _check_head(self.path, head)
        index = _locate_index(self.path, self.bgzip, notify or _print_note)
        try:
            self._fasta = self._open(index)
        finally:
            if index.temporary is not None:  # pyfaidx holds the index in memory once read
                shutil.rmtree(index.temporary, ignore_errors=True)
        self.index_path = None if index.temporary else index.fai
        self.chrom_lengths: dict[str, int] = {name: len(record) for name, record in self._fasta.records.items()}
        self._folded = {name.casefold(): name for name in reversed(self.chrom_lengths)}
        self._fingerprint: dict[str, Any] | None = None
        self._digest: str | None = None
        self._notify = notify or _print_note
        if not self.chrom_lengths:  # the file starts with a header, so it has at least one record
            raise UserError(
                f"genome index {str(index.fai)!r} lists no sequences, but {str(self.path)!r} has some; "
                f"{self._advice(index)}"
            )
        records = self._fasta.faidx.index
        self._bytes = _BgzfBytes(self.path, self._fasta.faidx.gzi_index) if self.bgzip else None
        problem = _index_mismatch(self._bytes.read, records) if self._bytes else _plain_mismatch(self.path, records)
        if problem:
            raise UserError(
                f"genome index {str(index.fai)!r} does not match {str(self.path)!r} ({problem}); {self._advice(index)}"
            )

    @staticmethod
    def _advice(index: _Index) -> str:
        if index.gzi is None:
            return "delete the .fai and it is rebuilt"
        return "delete the .fai and .gzi and they are rebuilt"

    def _open(self, index: _Index) -> Any:
        try:
            return pyfaidx.Fasta(
                str(self.path),
                indexname=str(index.fai),
                gzi_indexname=str(index.gzi) if index.gzi else None,
                as_raw=True,
                sequence_always_upper=False,
                build_index=False,
                rebuild=False,
            )
        except Exception as exc:  # pyfaidx raises several types for malformed files and indexes
            if index.existed:
                raise UserError(
                    f"cannot read genome FASTA {str(self.path)!r}: its index {str(index.fai)!r}"
                    f"{'' if index.gzi is None else ' or its .gzi'} is corrupt ({_detail(exc)}); {self._advice(index)}"
                ) from None
            raise UserError(f"cannot read genome FASTA {str(self.path)!r}: {_detail(exc)}") from None

    def __contains__(self, chrom: str) -> bool:
        return chrom in self.chrom_lengths

    def suggest(self, chrom: str) -> str | None:
        """The genome's name for ``chrom`` under the other naming convention, if it has one.

        ``17`` and ``chr17`` name each other, as do ``chrM``, ``MT``, ``M`` and ``chrMT``; case is
        ignored when nothing matches exactly (``chrx`` -> ``chrX``).

        Parameters
        ----------
        chrom : str
            A chromosome name that is not in the genome.

        Returns
        -------
        str or None
            A chromosome of the genome, or ``None`` (also when ``chrom`` itself is in the genome).
        """
        return other_spelling(chrom, self.chrom_lengths, self._folded)

    def length(self, chrom: str) -> int:
        """Length of ``chrom``.

        Parameters
        ----------
        chrom : str
            Chromosome name.

        Returns
        -------
        int
            Its length in bases.

        Raises
        ------
        UserError
            ``chrom`` is not in the genome (the message suggests the other naming when it exists).
        """
        try:
            return self.chrom_lengths[chrom]
        except KeyError:
            names = list(self.chrom_lengths)
            listed = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            other = self.suggest(chrom)
            hint = f"; did you mean {other!r}?" if other else ""
            raise UserError(
                f"chromosome {chrom!r} is not in genome {str(self.path)!r} (it has {listed}){hint}"
            ) from None

    def _read(self, chrom: str, start: int, end: int) -> str:
        """Bases ``[start, end)`` of ``chrom`` as stored (no bounds check)."""
        if self._bytes is None:
            return str(self._fasta[chrom][start:end])
        return self._raw(chrom, start, end, self._bytes.read).decode("latin-1")

    def _raw(self, chrom: str, start: int, end: int, read_at: Callable[[int, int], bytes]) -> bytes:
        """Bases ``[start, end)`` of ``chrom`` as bytes, through ``read_at(offset, size)`` of the
        (uncompressed) file; line breaks removed, no bounds check."""
        rec = self._fasta.faidx.index[chrom]
        first = rec.offset + (start // rec.lenc) * rec.lenb + start % rec.lenc
        last = rec.offset + ((end - 1) // rec.lenc) * rec.lenb + (end - 1) % rec.lenc
        return read_at(first, last + 1 - first).replace(b"\n", b"").replace(b"\r", b"")

    def fetch(self, chrom: str, start: int, end: int) -> str:
        """Sequence of the 0-based half-open interval ``[start, end)``; must lie inside ``chrom``.

        Parameters
        ----------
        chrom : str
            Chromosome name.
        start, end : int
            0-based half-open interval, ``0 <= start < end <= length(chrom)``.

        Returns
        -------
        str
            The bases as stored (soft-masked lower case kept).
        """
        n = self.length(chrom)
        if start < 0 or end > n or start >= end:
            raise UserError(f"interval {chrom}:{start}-{end} (0-based) is outside chromosome {chrom} of length {n}")
        try:
            seq = self._read(chrom, start, end)
        except Exception as exc:
            raise UserError(f"cannot read {chrom}:{start}-{end} from {str(self.path)!r}: {_detail(exc)}") from None
        if len(seq) != end - start:
            raise UserError(
                f"genome {str(self.path)!r} returned {len(seq)} bases for {chrom}:{start}-{end}; "
                "the FASTA or its index is corrupt"
            )
        return seq

    def window(self, chrom: str, pos: int, seq_len: int) -> str:
        """The window of length ``seq_len`` centred at 1-based ``pos`` (see module docstring).

        Parameters
        ----------
        chrom : str
            Chromosome name.
        pos : int
            1-based center.
        seq_len : int
            Window length ``L``.

        Returns
        -------
        str
            The bases of ``[pos - L//2, pos - L//2 + L)``.

        Raises
        ------
        UserError
            The chromosome is missing or shorter than the window, or the window does not fit.
        """
        n = self.length(chrom)
        if n < seq_len:
            raise UserError(f"chromosome {chrom!r} ({n} bp) is shorter than the window ({seq_len} bp)")
        start, end = window_bounds(pos, seq_len)
        if start < 0 or end > n:
            lo, hi = center_range(n, seq_len)
            raise UserError(
                f"window {chrom}:{pos} of length {seq_len} does not fit in {chrom} (length {n}); "
                f"centers must lie in {lo}..{hi}"
            )
        return self.fetch(chrom, start, end)

    def quick_fingerprint(self) -> dict[str, Any]:
        """A cheap, JSON-able identity of the genome (reads a sample, never the whole sequence): the
        quick pre-check before :meth:`fingerprint`'s full digest.

        The sample is, per contig, up to 16 evenly spaced slices of 64 bases (fewer per contig in
        assemblies of more than 4,096 contigs), upper-cased, so a soft-masked and an unmasked copy
        agree; a bgzip copy agrees with the plain FASTA. A changed base is seen only where sampled.

        Returns
        -------
        dict
            ``version``; ``n_contigs``; ``total_length``; ``layout_sha256`` (contig names and lengths
            in file order); ``sequence_sha256`` (the sample); ``first_contigs`` (up to 25
            ``[name, length]`` pairs). Compare two with :func:`fingerprint_difference`.
        """
        if self._fingerprint is None:
            layout, sample = hashlib.sha256(), hashlib.sha256()
            per_contig = max(1, min(_SLICES_PER_CONTIG, _SAMPLE_BUDGET // max(1, len(self.chrom_lengths))))
            for name, length in self.chrom_lengths.items():
                layout.update(f"{name}\t{length}\n".encode())
                for start, end in _sample_slices(length, per_contig):
                    sample.update(f">{name}:{start}\n".encode())
                    sample.update(self.fetch(name, start, end).upper().encode())
            self._fingerprint = {
                "version": FINGERPRINT_VERSION,
                "n_contigs": len(self.chrom_lengths),
                "total_length": sum(self.chrom_lengths.values()),
                "layout_sha256": layout.hexdigest(),
                "sequence_sha256": sample.hexdigest(),
                "first_contigs": [[n, k] for n, k in list(self.chrom_lengths.items())[:_LISTED_CONTIGS]],
            }
        fp = self._fingerprint
        return {**fp, "first_contigs": [list(pair) for pair in fp["first_contigs"]]}

    def sequence_digest(self) -> str:
        """sha256 (hex) of every base (:func:`pipeline.core.sequence_digest.sequence_digest`: each
        contig's name, length and bases, upper-cased), computed once per version of the file and kept
        in the user's cache (:func:`cache_dir`), keyed by the FASTA's path, size, mtime and inode."""
        if self._digest is None:
            self._digest = cached_digest(self.path, self._compute_digest, self._notify)
        return self._digest

    def _compute_digest(self) -> str:
        # a bgzip file is a series of gzip members: gzip reads it straight through at zlib's speed (the
        # contigs come in file order, so every seek is forward); the block index is for random access
        with gzip.open(self.path, "rb") if self.bgzip else open(self.path, "rb") as handle:

            def read_at(offset: int, size: int) -> bytes:
                handle.seek(offset)
                return handle.read(size)

            return sequence_digest(
                self.chrom_lengths.items(), lambda c, s, e: self._raw(c, s, e, read_at), label=self.path.name
            )

    def fingerprint(self) -> dict[str, Any]:
        """The genome's identity, as stores, checkpoints, catalogues and outputs record it: the
        :meth:`quick_fingerprint` plus the full digest of every base (:meth:`sequence_digest`).

        Returns
        -------
        dict
            The keys of :meth:`quick_fingerprint`, plus ``sequence_digest`` and ``digest_version``.
        """
        return {**self.quick_fingerprint(), "sequence_digest": self.sequence_digest(), "digest_version": DIGEST_VERSION}

    def difference(self, recorded: Mapping[str, Any]) -> str | None:
        """How this genome differs from a recorded fingerprint (:func:`fingerprint_difference`), the
        sample compared first: the full digest is read (or computed) only when the sample agrees and
        ``recorded`` has one.

        Returns
        -------
        str or None
            ``None`` when they name the same genome.
        """
        quick = fingerprint_difference(recorded, self.quick_fingerprint())
        if quick is not None or not recorded.get("sequence_digest"):
            return quick
        return fingerprint_difference(recorded, self.fingerprint())
