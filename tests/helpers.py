"""Plain helpers shared by the test modules (fixtures live in ``conftest.py``).

- :func:`invoke` / :func:`ok` run the CLI in-process through click's ``CliRunner``;
  :func:`assert_one_line_error` is the error contract of every command (one ``error: ...`` line);
- :func:`run_cli` / :func:`start_cli` run the ``multiplexer`` console script as a subprocess and
  :func:`torchrun` runs it under ``torchrun`` (tests using them are marked ``processes``);
- :data:`DEMO_KWARGS` are the tiny spec's demo base model arguments, :data:`TOY_MODELS` the file of
  the toy models; :func:`rewrite_checkpoint` writes a changed copy of a checkpoint;
- :func:`snapshot` hashes every file under some folders;
- :func:`make_read_only` makes a folder refuse writes (really, or as root through public seams).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli

SEQ_LEN = 80
"""Window length of the tiny spec (the demo base model needs at least 64)."""

N_TARGETS = 4
"""Number of targets of the tiny spec's base model."""

DEMO_KWARGS: dict[str, Any] = {"seq_len": SEQ_LEN, "n_targets": N_TARGETS, "channels": 12, "hidden": 8}
"""The tiny spec's demo base model (``conftest.TINY_SPEC``), also inside :class:`toy_models.ExactMultiplexer`."""

DEMO_KWARGS_JSON = json.dumps(DEMO_KWARGS)
""":data:`DEMO_KWARGS` as ``ism --base demo --base-kwargs`` takes them."""

TOY_MODELS = Path(__file__).with_name("toy_models.py")
"""The toy models' file, for ``path.py:Class`` model names."""

BIN = Path(sys.executable).parent
"""Where the virtual environment's console scripts (``multiplexer``, ``torchrun``) are."""

PROCESS_TIMEOUT = 600
"""Seconds a subprocess may run unless the caller gives ``timeout``."""


# ------------------------------------------------------------------------------------------------
# the CLI in-process
# ------------------------------------------------------------------------------------------------


def invoke(*args: Any) -> Result:
    """Run ``multiplexer -q ARGS``; unexpected exceptions propagate (click turns exits into codes)."""
    return CliRunner().invoke(cli, ["-q", *map(str, args)], catch_exceptions=False)


def ok(*args: Any) -> Result:
    """:func:`invoke` that must succeed (exit 0, no traceback)."""
    result = invoke(*args)
    assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    return result


def assert_one_line_error(result: Result | subprocess.CompletedProcess, *fragments: str) -> str:
    """The error contract: a non-zero exit, exactly one ``error: ...`` line on stderr naming every one
    of ``fragments``, no traceback and no ``internal error``. For a click ``Result`` the exit is also a
    ``SystemExit`` (not an exception escaping the command). Returns the line."""
    if isinstance(result, subprocess.CompletedProcess):
        code, output = result.returncode, result.stdout + result.stderr
    else:
        code, output = result.exit_code, result.output
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert code != 0, output
    assert "Traceback" not in output and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and line.strip() != "error:", line
    assert "internal error" not in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# ------------------------------------------------------------------------------------------------
# the console script and torchrun as subprocesses
# ------------------------------------------------------------------------------------------------


def process_env() -> dict[str, str]:
    """The environment of a subprocess: this one's, one OpenMP thread, no bytecode written."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def cli_command(*args: Any) -> list[str]:
    """Command line of ``multiplexer -q ARGS`` (the console script of this environment)."""
    return [str(BIN / "multiplexer"), "-q", *map(str, args)]


def run_cli(*args: Any, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``multiplexer -q ARGS`` as a subprocess (text output captured); with ``check`` it must exit 0."""
    kwargs.setdefault("timeout", PROCESS_TIMEOUT)
    result = subprocess.run(cli_command(*args), env=process_env(), capture_output=True, text=True, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def start_cli(*args: Any) -> subprocess.Popen:
    """Start ``multiplexer -q ARGS`` without waiting (stdout and stderr piped, as text)."""
    return subprocess.Popen(
        cli_command(*args), env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def torchrun(nproc: int, *args: Any, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node NPROC -m pipeline.cli -q ARGS``; with ``check`` it must exit 0."""
    kwargs.setdefault("timeout", PROCESS_TIMEOUT)
    command = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(nproc), "-m", "pipeline.cli", "-q"]
    result = subprocess.run([*command, *map(str, args)], env=process_env(), capture_output=True, text=True, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------


def rewrite_checkpoint(source: Path, path: Path, **changes: Any) -> Path:
    """Write checkpoint ``source`` to ``path`` with top-level entries replaced by ``changes``."""
    from pipeline.models import read_checkpoint, save_checkpoint

    data = read_checkpoint(source)
    payload = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    save_checkpoint(path, {**payload, **changes})
    return Path(path)


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (a root may be a file), by path: compare two to see that
    nothing was changed, removed or added."""
    out = {}
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------------
# read-only folders
# ------------------------------------------------------------------------------------------------


def make_read_only(mp: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` refuse writes: ``chmod 0o555``, which the operating system enforces, or, as
    root (which ignores permission bits), :func:`deny_writes_inside`. The caller restores the mode
    (``folder.chmod(0o755)``) when the test ends; ``mp`` undoes the rest."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return
    probe.unlink()
    deny_writes_inside(mp, folder)


def deny_writes_inside(mp: pytest.MonkeyPatch, folder: Path) -> None:
    """Refuse (EACCES) creating or writing anything inside ``folder``, as a read-only folder would:
    ``os.mkdir``, ``os.open`` and ``open`` raise ``PermissionError`` for paths below it."""
    folder = folder.resolve()

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return False
        return folder in Path(os.fsdecode(path)).resolve().parents

    def denied(path: Any) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    real_mkdir, real_open, real_os_open = os.mkdir, builtins.open, os.open

    def mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        if inside(path):
            raise denied(path)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not isinstance(file, int) and any(m in mode for m in "wax+") and inside(file):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise denied(path)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    mp.setattr(os, "mkdir", mkdir)
    mp.setattr(os, "open", os_open)
    mp.setattr(builtins, "open", open_)
    mp.setattr(io, "open", open_)


# ------------------------------------------------------------------------------------------------
# identities
# ------------------------------------------------------------------------------------------------


def content_hash(spec: Any, store: Any) -> str:
    """The content identity (hash version 2) ``spec`` has with the base model, genome and target names
    recorded in ``store``: what the store's ``spec_hash`` is when it was made from ``spec``."""
    from pipeline.core.identity import identity_hash

    meta = store.meta
    return identity_hash(spec.store_dict(), meta.base, meta.genome_fingerprint, list(meta.target_names))


def make_legacy(store_path: Any, spec: Any) -> None:
    """Rewrite a store's attributes as a store written before content identities and metadata digests
    (hash version 1: ``spec_hash`` of the spec's keys as written; a sampled genome fingerprint only; a
    base identity without imports; no ``meta_digest`` on the root or the splits)."""
    import zarr

    root = zarr.open_group(str(store_path), mode="r+")
    attrs = dict(root.attrs)
    for key in ("meta_digest", "spec_hash_version"):
        attrs.pop(key, None)
    attrs["spec_hash"] = spec.store_hash()
    if attrs.get("genome_fingerprint"):
        attrs["genome_fingerprint"] = {
            k: v for k, v in attrs["genome_fingerprint"].items() if k not in ("sequence_digest", "digest_version")
        }
    attrs["base"] = {k: v for k, v in attrs["base"].items() if k not in ("imports", "code_sha256")}
    root.attrs.put(attrs)
    for _, group in root.groups():
        inner = dict(group.attrs)
        if inner.pop("meta_digest", None) is not None:
            group.attrs.put(inner)


def as_format3(store_path: Any) -> None:
    """Rewrite a format-4 store as the format-3 writer wrote it: ``targets`` ``[N, F, 4, L]`` with their
    reference-base rows (dimension ``base``), each sample's targets digest the CRC-32 of its decoded
    bytes, ``format_version`` 3 (its attributes resealed when they had a digest)."""
    import numpy as np

    from pipeline.store import open_store
    from pipeline.store.digests import DIGESTED, sample_digests
    from pipeline.store.format import compressors, target_codec
    from pipeline.store.meta_digest import update_attrs

    store = open_store(store_path, mode="r+")
    storage = store.spec().storage
    F, L = store.n_targets, store.seq_len
    for split in store.splits:
        meta = store.split_meta(split)
        n = meta.n_samples
        y = store.read(split, "targets", 0, n)  # expanded: [n, F, 4, L]
        group = store.split_group(split)
        del group["targets"]
        new = group.create_array(
            "targets",
            shape=(n, F, 4, L),
            chunks=(storage.chunk_samples, F, 4, L),
            shards=(storage.unit_samples, F, 4, L) if storage.shards else None,
            dtype=storage.dtype,
            fill_value=0.0,
            compressors=compressors(target_codec(storage), storage),
            dimension_names=["sample", "target", "base", "position"],
            config={"write_empty_chunks": True},
        )
        new[:] = y
        markers = store.array(split, "complete")
        rows = np.asarray(markers[:])
        if rows.ndim == 2 and rows.shape[1] > 1:
            digests = np.zeros((rows.shape[0] * meta.unit_samples, len(DIGESTED)), dtype=np.uint32)
            digests[:] = rows[:, 1:].reshape(-1, len(DIGESTED))
            digests[:n, DIGESTED.index("targets")] = sample_digests(y)
            rows[:, 1:] = digests.reshape(rows.shape[0], -1)
            markers[:] = rows
    update_attrs(store.group, {"format_version": 3}, "store", str(store_path))


# ------------------------------------------------------------------------------------------------
# catalogues
# ------------------------------------------------------------------------------------------------


def flip_byte(path: Path, offset: int) -> None:
    """Invert every bit of byte ``offset`` of a file (negative: from the end)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def make_format1(path: Path, *, meta_digest: bool = True) -> None:
    """Rewrite a catalogue as format 1 wrote it (before issue 29): zarr's default codecs (no CRC-32C of
    the inner chunks), all-fill shards not stored, a contig's markers ``[units, 5]`` in one chunk with
    one digest per unit and array, no ``batch_size`` attribute; its attributes with a metadata digest
    (``meta_digest=False``: as written before digests). The values are unchanged."""
    import numpy as np
    import zarr

    from pipeline.store.catalogue import ARRAYS, CatalogueMeta, unit_digests
    from pipeline.store.meta_digest import write_meta_digest

    root = zarr.open_group(str(path), mode="r+")
    meta = CatalogueMeta.from_attrs(root.attrs)
    for k, contig in enumerate(meta.contigs):
        group = root[f"c{k}"]
        rows = np.zeros((contig.n_units(meta.unit_positions), 1 + len(ARRAYS)), dtype=np.uint32)
        data = {name: group[name][:] for name in ARRAYS}
        for u in np.flatnonzero(group["complete"][:, 0] == 1):
            start, stop = meta.unit_range(k, int(u))
            rows[u] = unit_digests({name: data[name][start:stop] for name in ARRAYS})
        for name in ARRAYS:
            old = group[name]
            shape, chunks, shards, dtype, fill = old.shape, old.chunks, old.shards, old.dtype, old.fill_value
            del group[name]
            group.create_array(name, shape=shape, chunks=chunks, shards=shards, dtype=dtype, fill_value=fill)[:] = data[
                name
            ]
        del group["complete"]
        group.create_array("complete", shape=rows.shape, chunks=rows.shape, dtype="uint32", fill_value=0)[:] = rows
    attrs = {k: v for k, v in root.attrs.items() if k not in ("batch_size", "meta_digest")}
    attrs["format_version"] = 1
    root.attrs.put(write_meta_digest(attrs) if meta_digest else attrs)
