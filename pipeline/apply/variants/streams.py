"""Pipes for ``score-vcf`` and ``lookup``: ``--vcf -`` reads standard input, ``--out -`` writes standard output.

**Input.** ``--vcf -`` (or a path that is a pipe, not a file: ``/dev/stdin``, ``<(bcftools view …)``) is
copied as it arrives into a private temporary file (:func:`spooled`; bytes as they come: a bgzipped
or BCF stream stays compressed), which is then read as any VCF: htslib detects plain, bgzipped and BCF
input from its bytes, and the ``.vcf.gz`` output reads its input twice (once to complete the header,
once in step with the rows), which a stream cannot. The copy is removed when the command ends. A
stream has no name to find again and no sha256 before it ends, so what needs to reread or resume
the VCF (``--shard``, ``torchrun``, ``--merge``) and ``--region`` (needs an index) are refused with it
(:func:`refuse_with_stream`).

**Output.** ``--out -`` writes TSV (``--out-format tsv``, the default) or an uncompressed VCF
(``--out-format vcf``: the records with the scores as INFO fields, as a ``.vcf.gz`` output, unindexed)
to standard output; the progress bar and the summary go to standard error. Standard output is not
staged: a run that fails midway has written the rows before the failure.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import UserError

STDIO = "-"
"""``--vcf -`` is standard input, ``--out -`` standard output."""

OUT_FORMATS = {"tsv": ".tsv", "vcf": ".vcf.gz"}
"""``--out-format`` with ``--out -``: the writer (by its suffix) that writes to standard output."""

SPOOL_BYTES = 1024**2
"""Bytes copied from the stream per read."""


def is_stream(vcf: str) -> bool:
    """Whether ``vcf`` names a stream to read once: ``-``, or an existing path that is neither a file nor
    a folder (a named pipe, ``/dev/stdin`` on a pipe, a process substitution)."""
    if vcf == STDIO:
        return True
    try:
        mode = os.stat(vcf).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def refuse_with_stream(vcf: str, *, shard: bool, region: bool) -> None:
    """Refuse what a VCF read from a stream cannot give (the module's notes), in one line.

    Raises
    ------
    UserError
        ``shard`` (``--shard`` or torchrun: units resumed or merged later need the file and its sha256)
        or ``region`` (needs an index).
    """
    if shard:
        raise UserError(
            f"--vcf {vcf} is a stream, read once with no sha256 to resume or merge parts by: --shard and torchrun "
            "need a VCF file (write the stream to a file first)"
        )
    if region:
        raise UserError(
            f"--region needs an indexed VCF file; --vcf {vcf} is a stream (select the region upstream: "
            "bcftools view -r chr:start-end)"
        )


def output_kind(out: str, out_format: str | None, command: str) -> str | None:
    """The writer's suffix (:data:`OUT_FORMATS`) for ``--out -``; ``None`` for a file (its suffix says).

    Raises
    ------
    UserError
        ``--out-format`` with a file.
    """
    if out == STDIO:
        return OUT_FORMATS[out_format or "tsv"]
    if out_format is not None:
        raise UserError(f"--out-format is for {command} --out - (standard output); a file's suffix gives its format")
    return None


@contextmanager
def spooled(vcf: str) -> Iterator[Path]:
    """``vcf`` itself when it is a file, else the stream (``-``: standard input) copied into a temporary
    file, removed after the block.

    An error about the copy raised in the block names the stream instead (``standard input:3: …``).

    Raises
    ------
    UserError
        Standard input is a terminal, the stream is empty, or it cannot be copied (no room).
    """
    if not is_stream(vcf):
        yield Path(vcf)
        return
    if vcf == STDIO and sys.stdin.isatty():
        raise UserError("--vcf - reads a VCF from standard input, which is a terminal: pipe one in (… | --vcf -)")
    folder = Path(tempfile.mkdtemp(prefix="multiplexer-stdin-"))
    path = folder / "stdin.vcf"
    label = "standard input" if vcf == STDIO else vcf
    try:
        try:
            with open(path, "wb") as out:
                if vcf == STDIO:
                    shutil.copyfileobj(sys.stdin.buffer, out, SPOOL_BYTES)
                else:
                    with open(vcf, "rb") as source:
                        shutil.copyfileobj(source, out, SPOOL_BYTES)
        except OSError as exc:
            raise UserError(
                f"cannot copy the VCF from {label} into {str(folder)!r} ({exc.strerror or exc}); set TMPDIR to a "
                "folder with room for it"
            ) from None
        if path.stat().st_size == 0:
            raise UserError(f"--vcf {vcf}: the stream was empty (no VCF header)")
        try:
            yield path
        except UserError as exc:  # name the stream, not its temporary copy
            named = str(exc).replace(str(path.resolve()), label).replace(str(path), label)
            if named == str(exc):
                raise
            raise UserError(named) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["OUT_FORMATS", "STDIO", "is_stream", "output_kind", "refuse_with_stream", "spooled"]
