"""Outputs named by fsspec URLs (``s3://``, ``gs://``, ``memory://``, ``file://``): the one rule for every
path that names an output file or folder.

Every such path either writes through fsspec or is refused with one line, never turned into a local
folder named ``s3:`` (what ``pathlib.Path`` makes of ``s3://bucket/run``):

- **Stores** (``distill --store``) are Zarr groups written in place through fsspec (:mod:`pipeline.store`).
- **A run folder** (``train --run-dir``) is a :class:`Mirror`: files are written to a local working copy
  exactly as in a local run folder, and each finished file (``best.pt``, ``last.pt``, ``config.json``,
  ``metrics.csv``) is uploaded whole, in one PUT.
- **Files and folders written once** (``--out`` of predict, ism, score-vcf, lookup, plot, compare,
  evaluate) go through :func:`url_outputs`: the command writes a local stand-in with all its usual
  checks and staged publication, then the result is uploaded.
- **Outputs resumed in place** (a catalogue, the parts of a sharded score-vcf, the demo's work folder,
  a synthetic genome) are refused: :func:`refuse_url`.

Crash consistency on an object store, which has no rename: a file is uploaded with one PUT (a multipart
upload of a large one is completed in one request), so an object is either the old one or the whole new
one. A folder is not atomic: its files are uploaded one by one, a Zarr folder's top-level ``zarr.json``
last (so a reader that finds the group finds all its chunks), and a Zarr folder that replaces an old one
(``--overwrite``) is removed first, so a run killed during the upload leaves a partial folder that a rerun
with ``--overwrite`` replaces. Two writers to one URL: the later PUT of each object wins.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec

from pipeline.errors import UrlNotAcceptedError, UserError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_MANGLED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)")
"""A URL after ``pathlib.Path`` collapsed its ``//`` (``s3:/bucket/run``); a one-letter scheme (``C:/``) is
a Windows drive, not a URL."""

SKELETON_FILE_BYTES = 1 << 20
"""An existing folder output at a URL is fetched as a skeleton before a command checks it: its top-level
files up to this size whole (larger ones as empty placeholders) and the ``zarr.json`` files one level
down: what the commands' checks of an existing output read, without downloading its data."""


CATALOGUE_REASON = (
    "a catalogue is written unit by unit and resumed in place by any shard; write it to a local or shared file "
    "system and copy it"
)
PARTS_REASON = (
    "a sharded score-vcf keeps its parts beside OUT and resumes them in place; write to a local or shared file "
    "system and copy the result"
)
DEMO_REASON = "the demo's work folder holds the genome, store and run that its later steps read from a file system"
GENOME_REASON = "a genome is read from a local FASTA file and its .fai index"


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an fsspec URL (``scheme://...``; ``memory://``, ``s3://``, ``file://``, ...)."""
    return isinstance(path, str) and _URL.match(path) is not None


def looks_like_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL, or one of a known fsspec protocol that ``pathlib.Path`` mangled
    (``s3:/bucket/x``; a local ``notes:/x`` is no URL)."""
    text = os.fspath(path)
    if is_url(text):
        return True
    mangled = _MANGLED_URL.match(text)
    return mangled is not None and text.split(":", 1)[0].lower() in fsspec.available_protocols()


def refuse_url(path: str | os.PathLike[str] | None, label: str, reason: str) -> None:
    """Refuse an output ``path`` given as a URL (or a URL mangled by ``pathlib``) with one line.

    Parameters
    ----------
    path : str, path or None
        The output (``None``: not given; nothing to check).
    label : str
        The option or argument naming it (``"--out"``, ``"--run-dir"``).
    reason : str
        Why this output is written only to a file system.

    Raises
    ------
    UrlNotAcceptedError
        ``error: --out 's3://b/x' does not accept a URL (<reason>)``.
    """
    if path is not None and looks_like_url(path):
        raise UrlNotAcceptedError(f"{label} {os.fspath(path)!r} does not accept a URL ({reason})")


def url_to_fs(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path inside it (one line on an unknown scheme or a
    missing driver such as ``s3fs``)."""
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open {url!r}: {' '.join(str(exc).split())}") from None


def join(base: str | os.PathLike[str], name: str) -> str:
    """``base/name`` for a local folder or a URL (a URL keeps its ``//``)."""
    if is_url(base):
        return f"{os.fspath(base).rstrip('/')}/{name}"
    return str(Path(base) / name)


def _upload(fs: Any, local: Path, remote: str) -> None:
    """Upload a file in one PUT, or a folder file by file (its top-level ``zarr.json`` last)."""
    if not local.is_dir():
        fs.put_file(str(local), remote)
        return
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p == local / "zarr.json")  # the group's metadata last: it marks the folder present
    for path in files:
        target = f"{remote}/{path.relative_to(local).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), target)


def _fetch_skeleton(fs: Any, remote: str, local: Path) -> None:
    """Fetch an existing output as the commands' checks see it (:data:`SKELETON_FILE_BYTES`)."""
    if not fs.isdir(remote):
        fs.get_file(remote, str(local))
        return
    local.mkdir()
    prefix = remote.rstrip("/") + "/"
    for entry in fs.find(remote, maxdepth=2, detail=True).values():
        rel = str(entry["name"])[len(prefix) :] if str(entry["name"]).startswith(prefix) else ""
        if not rel or entry.get("type") == "directory":
            continue
        target = local / rel
        top, small = "/" not in rel, int(entry.get("size") or 0) <= SKELETON_FILE_BYTES
        if not top and not rel.endswith("/zarr.json"):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if small or not top:
            fs.get_file(entry["name"], str(target))
        else:
            target.touch()


class UrlOutputs:
    """Local stand-ins for a command's outputs given as URLs (made by :func:`url_outputs`).

    ``outputs[label]`` is the path to give the command: the output itself when it is local, else
    ``<temporary folder>/<name>``, where the command writes exactly as it would beside a local output
    (files it writes beside it, such as a ``.tbi`` or TSV files, are uploaded beside the URL too).
    """

    def __init__(self, outputs: Mapping[str, str | None], *, inputs: Mapping[str, object] | None = None) -> None:
        self.urls = {label: path for label, path in outputs.items() if path is not None and is_url(path)}
        self.paths = {label: path for label, path in outputs.items() if path is not None}
        self._check_inputs(inputs or {})
        self.folder = Path(tempfile.mkdtemp(prefix="multiplexer-url-")) if self.urls else None
        self.local: dict[str, Path] = {}
        self.present: dict[str, bool] = {}
        for i, (label, url) in enumerate(self.urls.items()):
            assert self.folder is not None
            name = url.rstrip("/").rsplit("/", 1)[-1]
            if not name or "://" in name:
                raise UserError(f"{label} {url!r} names no file or folder")
            (self.folder / str(i)).mkdir()
            self.local[label] = self.folder / str(i) / name
            fs, root = url_to_fs(url)
            self.present[label] = bool(fs.exists(root))
            if self.present[label]:  # the command's own checks decide (--overwrite, kinds, inputs)
                _fetch_skeleton(fs, root, self.local[label])

    def _check_inputs(self, inputs: Mapping[str, object]) -> None:
        for label, url in self.urls.items():
            out = url.rstrip("/")
            for flag, source in inputs.items():
                if not isinstance(source, str) or not is_url(source):
                    continue
                src = source.rstrip("/")
                if src == out or src.startswith(out + "/") or out.startswith(src + "/"):
                    raise UserError(
                        f"{label} {url!r} is or overlaps this command's {flag} {source!r}; it will not write there"
                    )

    def __getitem__(self, label: str) -> str:
        """Where the command writes the output of ``label`` (its own path when local)."""
        return str(self.local[label]) if label in self.local else str(self.paths.get(label, ""))

    def get(self, label: str) -> str | None:
        """:meth:`__getitem__`, or ``None`` for an output that was not given."""
        return self[label] if label in self.paths else None

    def shown(self, text: str) -> str:
        """``text`` with each stand-in's folder replaced by its URL's (for the command's messages)."""
        for label, local in self.local.items():
            text = text.replace(str(local.parent), self.urls[label].rstrip("/").rsplit("/", 1)[0])
        return text

    def publish(self) -> None:
        """Upload every output written in a stand-in folder beside its URL, the named output last."""
        for label, url in self.urls.items():
            local = self.local[label]
            fs, root = url_to_fs(url.rstrip("/"))
            parent = root.rsplit("/", 1)[0] if "/" in root else root
            fs.makedirs(parent, exist_ok=True)
            for entry in sorted(local.parent.iterdir()):
                if entry != local and not entry.name.startswith("."):
                    _upload(fs, entry, f"{parent}/{entry.name}")
            if not os.path.lexists(local):
                continue
            if local.is_dir() and (local / "zarr.json").is_file() and self.present[label]:
                fs.rm(root, recursive=True)  # a Zarr folder is replaced whole: no stale chunk of the old one
            _upload(fs, local, root)
            fs.invalidate_cache()

    def close(self) -> None:
        """Remove the stand-ins."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def url_outputs(
    outputs: Mapping[str, str | None], *, inputs: Mapping[str, object] | None = None
) -> Iterator[UrlOutputs]:
    """Let a command that writes local files write outputs given as URLs.

    Each URL output gets a local stand-in (an existing object is fetched first, as a skeleton for a
    folder, so the command's checks of an existing output, ``--overwrite`` and output kinds included, see
    what is there); the block runs the command on the stand-ins; when it succeeds every file it wrote is
    uploaded (:meth:`UrlOutputs.publish`; see the module docstring for what an object store guarantees).
    On failure nothing is uploaded. Local outputs pass through unchanged.

    Parameters
    ----------
    outputs : mapping
        The command's outputs by option (``{"--out": "s3://b/x.tsv.gz"}``; ``None``: not given).
    inputs : mapping, optional
        Its inputs by option; an output URL that is, holds or lies in an input URL is refused.

    Examples
    --------
    >>> with url_outputs({"--out": out}) as urls:  # doctest: +SKIP
    ...     line = run(urls["--out"]).line()
    >>> print(urls.shown(line))  # doctest: +SKIP
    """
    stands = UrlOutputs(outputs, inputs=inputs)
    try:
        yield stands
        stands.publish()
    finally:
        stands.close()


class Mirror:
    """A folder at a URL worked on through a local copy: files are written locally, then each is uploaded
    whole (:meth:`push`, one PUT) or downloaded (:meth:`fetch`). ``train --run-dir URL`` uses it.

    Parameters
    ----------
    url : str
        The folder.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = url_to_fs(self.url)
        self.local = Path(tempfile.mkdtemp(prefix="multiplexer-run-"))

    def remote(self, name: str) -> str:
        """The path of ``name`` inside the folder, in its file system."""
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        """Whether the folder holds ``name``."""
        return bool(self.fs.exists(self.remote(name)))

    def fetch(self, name: str) -> bool:
        """Download ``name`` into the local copy (``False``: the folder does not hold it)."""
        if not self.exists(name):
            return False
        self.fs.get_file(self.remote(name), str(self.local / name))
        return True

    def create(self) -> None:
        """Create the folder (a no-op on an object store, which has no folders)."""
        self.fs.makedirs(self.root, exist_ok=True)

    def push(self, name: str) -> None:
        """Upload local ``name`` (a file in one PUT; a folder file by file); nothing if it does not exist."""
        local = self.local / name
        if os.path.lexists(local):
            _upload(self.fs, local, self.remote(name))
            self.fs.invalidate_cache()

    def shown(self, text: str) -> str:
        """``text`` with the local copy's folder replaced by the URL (for messages)."""
        return text.replace(str(self.local), self.url)

    def close(self) -> None:
        """Remove the local copy."""
        shutil.rmtree(self.local, ignore_errors=True)
