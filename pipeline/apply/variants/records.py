"""The VCF/BCF reader of ``score-vcf``: records through pysam (htslib), one per ALT allele.

Reads plain ``.vcf``, bgzipped ``.vcf.gz`` and ``.bcf`` (htslib detects the format from the file's
bytes), optionally only the records of a region of an indexed file (``.tbi``/``.csi``). A record
with several ALT alleles is split into one :class:`VcfRecord` per ALT, numbered as bcftools numbers
them (``allele_index`` 1..n). htslib's messages on stderr are silenced during each call into it; what it cannot
parse becomes one :class:`~pipeline.errors.UserError` naming the file (and the line, for text VCFs
read whole).

A text VCF without the ``##fileformat`` line, or with only the first five columns (``CHROM POS ID
REF ALT``; ``score-vcf`` accepted these before it read through htslib), is read through a
normalised temporary copy: the ``##fileformat`` line is added and the header and records are padded
to the eight fixed VCF columns with ``.``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pysam

from pipeline.errors import UserError

_FIXED = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
_INDEX_HINT = "bgzip it and index it with `bcftools index FILE` (or `tabix -p vcf FILE`)"


@dataclass(frozen=True)
class VcfRecord:
    """One ALT allele of one VCF record (``pos`` 1-based, as in the file).

    ``number`` is the record's 1-based number among the records read; ``allele_index`` the ALT's
    1-based index in the record (0 when the record has no ALT, ``.``); ``contig`` the genome's name
    of the chromosome (``chrom`` itself unless the name was harmonised, ``17`` -> ``chr17``).
    """

    number: int
    chrom: str
    pos: int
    id: str
    ref: str
    alt: str
    allele_index: int = 1
    contig: str = ""

    @property
    def genome_chrom(self) -> str:
        """The chromosome's name in the genome (``contig``, else ``chrom``)."""
        return self.contig or self.chrom


@dataclass(frozen=True)
class VcfSource:
    """What to read: a VCF/BCF file, and optionally a ``chr:start-end`` region of it (needs an index)."""

    path: Path
    region: str | None = None


@contextmanager
def quiet_htslib() -> Iterator[None]:
    """Silence htslib's messages on stderr (``pysam.set_verbosity(0)``); restore the level after."""
    previous = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(previous)


def _open_text(path: Path) -> IO[str]:
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _header_lines(path: Path) -> list[str] | None:
    """The ``#`` lines at the head of a text VCF; ``None`` for a BCF or a file that is not text."""
    lines: list[str] = []
    try:
        with _open_text(path) as handle:
            for line in handle:
                if line.startswith("BCF"):
                    return None
                if not line.startswith("#"):
                    break
                lines.append(line.rstrip("\r\n"))
    except (OSError, EOFError, UnicodeError):
        return None
    return lines


def _plain_gzip(path: Path) -> bool:
    """Whether the file is gzip but not bgzip (BGZF blocks carry a ``BC`` extra field)."""
    with open(path, "rb") as handle:
        head = handle.read(14)
    return head[:2] == b"\x1f\x8b" and not (len(head) == 14 and head[3] & 4 and head[12:14] == b"BC")


def needs_normalising(path: Path) -> bool:
    """Whether a VCF must be read through a normalised copy: plain gzip (htslib reads bgzip only, it
    must seek), or text without ``##fileformat`` or the eight fixed columns (the module's notes)."""
    if _plain_gzip(path):
        return True
    lines = _header_lines(path)
    if lines is None:
        return False
    chrom_line = [line for line in lines if line.startswith("#CHROM")]
    has_format = bool(lines) and lines[0].startswith("##fileformat=")
    return not has_format or not chrom_line or len(chrom_line[0].split("\t")) < len(_FIXED)


def _write_normalised(path: Path, out: Path) -> None:
    """Copy a text VCF to ``out`` with ``##fileformat`` and the eight fixed columns (padded with ``.``)."""
    with _open_text(path) as src, open(out, "w", encoding="utf-8") as dst:
        header_done = False
        for number, line in enumerate(src):
            text = line.rstrip("\r\n")
            if number == 0 and not text.startswith("##fileformat="):
                dst.write("##fileformat=VCFv4.2\n")
            if text.startswith("##"):
                if number == 0 or not text.startswith("##fileformat="):
                    dst.write(text + "\n")
                continue
            if not header_done:
                header_done = True
                cols = text.split("\t")
                dst.write(
                    text + "\n" if text.startswith("#") and len(cols) >= len(_FIXED) else "\t".join(_FIXED) + "\n"
                )
                if text.startswith("#"):
                    continue
            if not text.strip():
                continue
            cols = text.split("\t")
            if 5 <= len(cols) < len(_FIXED):
                cols += ["."] * (len(_FIXED) - len(cols))
            dst.write("\t".join(cols) + "\n")


def _locate(path: Path, n_read: int) -> str | None:
    """``FILE:LINE: 'text'`` of the data line after the first ``n_read`` ones of a text VCF (``None``
    when there is none: the file ends there)."""
    try:
        with _open_text(path) as handle:
            seen = 0
            for number, line in enumerate(handle, start=1):
                if line.startswith("#") or not line.strip():
                    continue
                seen += 1
                if seen > n_read:
                    return f"{path}:{number}: {line.rstrip()[:60]!r}"
    except (OSError, EOFError, UnicodeError):
        pass
    return None


def _open(path: Path, shown: Path) -> Any:
    try:
        with quiet_htslib():
            return pysam.VariantFile(str(path))
    except (ValueError, OSError, NotImplementedError):
        raise UserError(
            f"cannot read VCF/BCF {str(shown)!r}: not a valid VCF or BCF file (htslib cannot read its header)"
        ) from None


def _fetch(variants: Any, source: VcfSource) -> Iterator[Any]:
    if source.region is None:
        return iter(variants)
    if variants.index is None:
        raise UserError(f"--region needs an indexed VCF/BCF: {str(source.path)!r} has no index; {_INDEX_HINT}")
    try:
        with quiet_htslib():
            return iter(variants.fetch(region=source.region))
    except (ValueError, KeyError) as exc:
        raise UserError(f"--region {source.region!r} cannot be read from {str(source.path)!r}: {exc}") from None


def _parse_error(source: VcfSource, binary: bool, n_read: int, exc: Exception) -> str:
    """The message for a record htslib cannot parse, after ``n_read`` good ones."""
    line = None if binary or source.region is not None else _locate(source.path, n_read)
    if line is not None:  # htslib calls it "truncated file" whatever the problem: name the line instead
        return f"{line}: malformed VCF record (htslib cannot parse it)"
    where = f"{source.path}" + (f" ({source.region})" if source.region else "")
    return f"{where}: cannot read past record {n_read}: {exc}"


READ_BATCH = 256
"""Records read from htslib per call (its messages are silenced once per batch, not once per record)."""


def raw_records(variants: Any, source: VcfSource) -> Iterator[Any]:
    """The pysam records of an open file, in order (of ``source.region`` when set); a parse error is
    one :class:`UserError`."""
    records = _fetch(variants, source)
    number = 0
    while True:
        batch: list[Any] = []
        failed: Exception | None = None
        previous = pysam.set_verbosity(0)
        try:
            for record in records:
                batch.append(record)
                if len(batch) == READ_BATCH:
                    break
        except (OSError, ValueError) as exc:
            failed = exc
        finally:
            pysam.set_verbosity(previous)
        yield from batch
        number += len(batch)
        if failed is not None:
            raise UserError(_parse_error(source, variants.format == "BCF", number, failed))
        if len(batch) < READ_BATCH:
            return


def _text(record: Any, number: int, source: VcfSource) -> tuple[str, int, str, str, tuple[str, ...] | None]:
    """``(chrom, pos, id, ref, alts)`` of a pysam record; text that is not UTF-8 is a :class:`UserError`."""
    try:
        return record.chrom, record.pos, record.id or ".", record.ref or ".", record.alts
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1].hex() if isinstance(exc.object, bytes) else "?"
        where = f"{source.path}" + (f" ({source.region})" if source.region else "")
        raise UserError(
            f"{where}: record {number} is not UTF-8 text (byte 0x{bad} in CHROM, ID, REF or ALT); "
            "VCF text must be UTF-8: fix or remove the record"
        ) from None


def _records(variants: Any, source: VcfSource) -> Iterator[VcfRecord]:
    """The records of an open file, one per ALT; a parse error is one :class:`UserError`."""
    for number, record in enumerate(raw_records(variants, source), start=1):
        chrom, pos, vid, ref, alts = _text(record, number, source)
        if alts is None:
            yield VcfRecord(number, chrom, pos, vid, ref, ".", 0)
            continue
        for k, alt in enumerate(alts, start=1):
            yield VcfRecord(number, chrom, pos, vid, ref, alt, k)


@contextmanager
def open_vcf(source: VcfSource | str | os.PathLike[str]) -> Iterator[Any]:
    """The VCF/BCF open through pysam (a ``pysam.VariantFile``): the file itself, or the normalised
    temporary copy of a text VCF that htslib cannot read as it is (the module's notes).

    Raises
    ------
    UserError
        Missing file; not a VCF/BCF; ``--region`` on a file that must be normalised.
    """
    if not isinstance(source, VcfSource):
        source = VcfSource(Path(source))
    if not source.path.is_file():
        raise UserError(f"VCF file {str(source.path)!r} does not exist")
    if not needs_normalising(source.path):
        with _open(source.path, source.path) as variants:
            yield variants
        return
    if source.region is not None:
        raise UserError(
            f"--region needs a bgzipped, indexed VCF/BCF with the 8 fixed VCF columns; {str(source.path)!r} is not "
            f"one: {_INDEX_HINT}"
        )
    with tempfile.TemporaryDirectory(prefix="score-vcf-") as folder:
        copy = Path(folder) / "normalised.vcf"
        try:
            _write_normalised(source.path, copy)
        except (OSError, EOFError, UnicodeError) as exc:
            raise UserError(f"cannot read VCF {str(source.path)!r}: {exc}") from None
        with _open(copy, source.path) as variants:
            yield variants


def read_vcf(source: VcfSource | str | os.PathLike[str]) -> Iterator[VcfRecord]:
    """Yield the records of a VCF/BCF (plain, bgzipped or BCF), one per ALT allele, in file order.

    Parameters
    ----------
    source : VcfSource or path
        The file, and optionally the region to read (``chr:start-end``, 1-based inclusive).

    Yields
    ------
    VcfRecord

    Raises
    ------
    UserError
        Missing file; not a VCF/BCF; a record htslib cannot parse (the message names the file, and
        the line for a text VCF read whole); ``--region`` on a file without an index, or a region
        the file cannot be queried for.
    """
    if not isinstance(source, VcfSource):
        source = VcfSource(Path(source))
    with open_vcf(source) as variants:
        yield from _records(variants, source)


def undeclared(source: VcfSource) -> Any:
    """The header of ``source`` as htslib has it after reading every record: with its own ``Dummy``
    declarations of each contig, INFO, FILTER and FORMAT key the records use but the header does not
    declare (a text VCF's header need not declare them; htslib adds one when it meets the key).

    Read for a ``.vcf.gz`` output, whose header must declare every key its records use (htslib
    exits the process when one is missing). A BCF declares every key it uses: its header is returned
    as it is, without reading the records.
    """
    with open_vcf(source) as variants:
        if variants.format != "BCF":
            for _ in raw_records(variants, source):
                pass
        return variants.header.copy()


class HtslibErrors:
    """htslib's error messages during calls into it, caught from file descriptor 2.

    htslib writes its reasons (``[E::vcf_format] Invalid BCF, ...``) to the process's stderr, and
    pysam raises only ``OSError: Can't write record``. Inside :meth:`catching`, htslib's errors (and
    nothing else) go to a temporary file; :meth:`last` reads the newest one back for the one-line
    error. Use it for calls that write; :func:`quiet_htslib` for reads.
    """

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.saved: int | None = None

    @contextmanager
    def catching(self) -> Iterator[None]:
        """Send htslib's error messages to the temporary file during the block."""
        if self.saved is None:
            self.saved = os.dup(2)
        previous = pysam.set_verbosity(1)  # errors only
        os.dup2(self.file.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(self.saved, 2)
            pysam.set_verbosity(previous)

    def last(self) -> str:
        """The newest error message caught (``function: text``; ``""`` when there is none)."""
        self.file.seek(0)
        text = self.file.read().decode("utf-8", "replace")
        self.file.seek(0)
        self.file.truncate()
        found = [line for line in text.splitlines() if line.startswith("[E::")]
        if not found:
            return ""
        head, _, message = found[-1].partition("] ")
        return f"{head[4:]}: {message.strip()}"

    def close(self) -> None:
        """Release the temporary file and the saved descriptor."""
        if self.saved is not None:
            os.close(self.saved)
            self.saved = None
        self.file.close()


def content_digest(path: Path) -> str:
    """The sha256 of every byte of a VCF/BCF: what a sharded run's parts were computed from.

    The whole file, not its size and time nor a sample of it: an edited ALT in the middle of a file
    whose time was kept is a different VCF. Reading it costs about what ``gzip -t`` does, little
    beside scoring it (``docs/decisions.md``).
    """
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


TEXT_BLOCK = 1 << 20
"""Bytes of a text VCF read (and decoded) at once by :func:`text_lines`."""

MAX_TEXT_POS = 999_999_999
"""The largest POS :func:`parse_line` reads from the text (a longer one goes through htslib)."""


def reads_as_text(source: VcfSource) -> bool:
    """Whether ``source``'s records can be read from its text (:func:`text_lines`, :func:`parse_line`)
    with what htslib would give: a whole, sites-only text VCF (plain or bgzipped, the ``#CHROM`` line
    with the 8 fixed columns and no samples: htslib checks sample columns), not one read through a
    normalised copy, not a region of it."""
    if source.region is not None or not source.path.is_file() or needs_normalising(source.path):
        return False
    lines = _header_lines(source.path)
    if not lines or not lines[-1].startswith("#CHROM"):
        return False
    return len(lines[-1].split("\t")) == len(_FIXED)


def text_lines(path: Path) -> Generator[list[str] | None, None, None]:
    """The data lines of a text VCF (plain or bgzipped), in blocks of about :data:`TEXT_BLOCK` bytes,
    without their ``\\n``; ``None`` (then nothing more) where a block is not UTF-8 text: the records
    from there on are read through htslib (which names the record and the byte)."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gz else open(path, "rb") as handle:
        carry, header = b"", True
        while True:
            chunk = handle.read(TEXT_BLOCK)
            if chunk:
                data = carry + chunk
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                body, carry = data[:cut], data[cut + 1 :]
            elif carry:
                body, carry = carry, b""
            else:
                return
            try:
                lines = body.decode("utf-8").split("\n")
            except UnicodeDecodeError:
                yield None
                return
            if header:
                start = next((k for k, line in enumerate(lines) if not line.startswith("#")), len(lines))
                header = start == len(lines)
                lines = lines[start:]
            if lines:
                yield lines


def parse_line(number: int, line: str) -> list[VcfRecord] | None:
    """The records of one data line of a sites-only text VCF (:func:`reads_as_text`), as htslib reads
    them (``.`` or empty ID and REF are ``.``; ALT ``.`` is one record of ``allele_index`` 0); ``None``
    for a line read through htslib instead (not 8 columns, POS not plain digits, an empty ALT)."""
    fields = line.split("\t", 8)
    if len(fields) != len(_FIXED):
        return None
    chrom, pos, vid, ref, alt = fields[0], fields[1], fields[2], fields[3], fields[4]
    if not (pos.isascii() and pos.isdigit() and pos[0] != "0" and len(pos) <= 9) or not chrom or not alt:
        return None
    vid, ref = vid or ".", ref or "."
    if alt == ".":
        return [VcfRecord(number, chrom, int(pos), vid, ref, ".", 0)]
    alts = alt.split(",")
    if "" in alts:
        return None
    return [VcfRecord(number, chrom, int(pos), vid, ref, a, k) for k, a in enumerate(alts, start=1)]
