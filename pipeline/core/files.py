"""Writing outputs safely: atomic files, refusing to overwrite, removing only what is ours.

Every command that writes a file goes through these, so an interrupted or failed write never leaves
a half-written file under the final name, an existing output is replaced only with ``--overwrite``,
and ``--overwrite`` never deletes a folder that is not a Zarr store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import OutputExistsError, UserError

OVERWRITE_HINT = "remove it or pass --overwrite"


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed to ``path`` when the block succeeds.

    The temporary file is removed if the block fails, so ``path`` is either the previous file or a
    complete new one.

    Parameters
    ----------
    path : path
        The final file.
    suffix : str
        Appended to the temporary name (writers such as ``np.savez`` add ``.npz`` to names without it).
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def refuse_existing(paths: Iterable[str | os.PathLike[str]], overwrite: bool, what: str = "output") -> None:
    """Raise :class:`OutputExistsError` when one of ``paths`` exists and ``overwrite`` is false.

    Parameters
    ----------
    paths : iterable of paths
        The outputs a command is about to write.
    overwrite : bool
        ``--overwrite`` was given.
    what : str
        How the message names them.
    """
    if overwrite:
        return
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"{what} {str(existing[0])!r}{more} exists; {OVERWRITE_HINT}")


def is_zarr_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a Zarr group or array (a ``zarr.json`` at its top)."""
    return path.is_dir() and (path / "zarr.json").exists()


def remove_output(path: str | os.PathLike[str], what: str = "output") -> None:
    """Remove an existing output file, or a Zarr folder; refuse any other folder.

    Raises
    ------
    UserError
        ``path`` is a folder but not a Zarr store (it may hold the user's other data).
    """
    target = Path(path)
    if target.is_dir():
        if not is_zarr_folder(target):
            raise UserError(f"refusing to replace {what} {str(target)!r}: it is a folder but not a Zarr store")
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
