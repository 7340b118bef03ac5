"""The full sequence digest of a genome: every base, computed once per file and kept in the user's cache.

:func:`sequence_digest` hashes, contig by contig in file order, each contig's name, its length and all
of its bases upper-cased (sha256), so a soft-masked copy, a copy with other line widths and a bgzip
copy of one genome share a digest, and any other change of any base gives another one. Letters other
than case are kept as written (an ``R`` and an ``N`` differ, although both encode as an all-zero
column): the digest names the file's content, which is also what REF checks read.

Reading every base of hg19 takes seconds to a minute, so the digest is kept in the user's cache
(:func:`cache_dir`; ``digests/<name>.<key>.json``), keyed by the FASTA's resolved path, size,
modification time (ns) and inode: a file that is replaced or edited gets another key and is read again
(and the entry of its earlier version is removed).
Nothing is kept beside the FASTA (its folder is often a shared, read-only reference folder, and a file
there would be trusted whoever wrote it). Where the cache cannot be written the digest is computed on
every run, said once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import UserError

DIGEST_VERSION = 1
"""Version of what :func:`sequence_digest` hashes (digests compare only within one version)."""
DIGEST_BLOCK = 8 * 2**20
"""Bases read and hashed at a time."""
PROGRESS_FROM = 200_000_000
"""Genomes of at least this many bases show a progress bar while their digest is computed."""


def cache_dir() -> Path:
    """The user's cache folder of multiplexer (genome digests; indexes of read-only genomes).

    Returns
    -------
    Path
        ``$MULTIPLEXER_CACHE`` if set, else ``$XDG_CACHE_HOME/multiplexer``, else
        ``~/.cache/multiplexer``. It need not exist.
    """
    if os.environ.get("MULTIPLEXER_CACHE"):
        return Path(os.environ["MULTIPLEXER_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "multiplexer"
    return Path.home() / ".cache" / "multiplexer"


@dataclass(frozen=True)
class FileKey:
    """What names one version of a file: resolved path, size, modification time (ns) and inode."""

    path: str
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileKey:
        """The key of the file at ``path`` now."""
        stat = path.stat()
        return cls(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)

    def cache_file(self) -> Path:
        """Where the digest of this version of the file is kept."""
        key = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]
        return cache_dir() / "digests" / f"{Path(self.path).name}.{key}.json"


def sequence_digest(
    contigs: Iterable[tuple[str, int]], read: Callable[[str, int, int], bytes], *, label: str = ""
) -> str:
    """sha256 (hex) of every contig's name, length and bases, upper-cased.

    Parameters
    ----------
    contigs : iterable of (str, int)
        Names and lengths, in file order.
    read : callable
        ``read(name, start, end)``: the bases ``[start, end)`` of a contig as bytes, line breaks removed.
    label : str
        Shown on the progress bar (genomes of at least :data:`PROGRESS_FROM` bases).
    """
    contigs = list(contigs)
    total = sum(length for _, length in contigs)
    digest = hashlib.sha256()
    with tqdm(
        total=total, unit="bp", unit_scale=True, desc=f"digest {label}".strip(), disable=total < PROGRESS_FROM
    ) as bar:
        for name, length in contigs:
            digest.update(f">{name}\t{length}\n".encode())
            for start in range(0, length, DIGEST_BLOCK):
                end = min(length, start + DIGEST_BLOCK)
                bases = read(name, start, end)
                if len(bases) != end - start:
                    raise UserError(
                        f"genome {label!r} returned {len(bases)} bases for {name}:{start}-{end}; "
                        "the FASTA or its index is corrupt"
                    )
                digest.update(bases.upper())
                bar.update(end - start)
    return digest.hexdigest()


def _read_cache(key: FileKey) -> str | None:
    try:
        data = json.loads(key.cache_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("file") != asdict(key) or data.get("version") != DIGEST_VERSION:
        return None
    digest = data.get("sequence_digest")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def _write_cache(key: FileKey, digest: str) -> None:
    """Keep ``digest`` in the cache (written to a temporary file, then renamed: readers never see half)."""
    target = key.cache_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {"file": asdict(key), "version": DIGEST_VERSION, "sequence_digest": digest}
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _remove_stale(key, target)


def _remove_stale(key: FileKey, kept: Path) -> None:
    """Remove the cache entries of earlier versions of the same file (another size, mtime or inode)."""
    for entry in kept.parent.glob(f"{Path(key.path).name}.*.json"):
        if entry == kept:
            continue
        try:
            stale = json.loads(entry.read_text()).get("file", {}).get("path") == key.path
        except (OSError, ValueError, AttributeError):
            continue
        if stale:
            with contextlib.suppress(OSError):
                entry.unlink()


def cached_digest(path: Path, compute: Callable[[], str], notify: Callable[[str], None]) -> str:
    """The digest of the FASTA at ``path``: from the cache when it holds this version of the file, else
    ``compute()``d and kept there.

    Raises
    ------
    UserError
        The file changed while it was read (its size, modification time or inode differ after).
    """
    key = FileKey.of(path)
    found = _read_cache(key)
    if found is not None:
        return found
    digest = compute()
    if FileKey.of(path) != key:
        raise UserError(f"genome FASTA {str(path)!r} changed while its digest was computed; run again once it is final")
    try:
        _write_cache(key, digest)
    except OSError as exc:
        notify(
            f"note: cannot keep the digest of {path} in the cache {cache_dir()} ({exc.strerror or exc}); it is "
            "computed on every run (set MULTIPLEXER_CACHE to a writable folder to keep it)"
        )
    return digest
