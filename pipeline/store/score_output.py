"""A ``score-vcf`` Zarr output read back and checked: its attributes against their digest, its arrays
against its attributes (``store verify``, ``store upgrade``).

The output (written by ``score-vcf --out X.zarr``) holds ``scores`` ``[variants, targets]`` and one
array per fixed column; its root attributes (``kind: score-vcf``, ``semantics``, ``target_names``,
``columns``) say what the numbers mean and carry a ``meta_digest``
(:mod:`pipeline.store.meta_digest`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.errors import MetadataError, UserError
from pipeline.store.format import group_array
from pipeline.store.meta_digest import DAMAGED_METADATA, checked_attrs, meta_digest_problems, seal, unsealed_note

KIND = "score-vcf"
"""The ``kind`` attribute of a score-vcf Zarr output."""
READ_ROWS = 65536
"""Rows decoded at a time by :func:`verify_score_output`."""


def is_score_output(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Zarr folder written by ``score-vcf`` (its attributes say so)."""
    try:
        attrs = json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(attrs, dict) and attrs.get("kind") == KIND


def open_score_output(path: str | os.PathLike[str], *, check: bool = True) -> tuple[zarr.Group, dict[str, Any]]:
    """The output's root group and its attributes, checked against their digest.

    Raises
    ------
    MetadataError
        An attribute does not match its digest.
    UserError
        ``path`` is not a score-vcf output.
    """
    if not is_score_output(path):
        raise UserError(f"{str(path)!r} is not a Zarr output written by score-vcf")
    group = zarr.open_group(str(path), mode="r")
    return group, checked_attrs(group, "score-vcf output", str(path), check=check)


def verify_score_output(path: str | os.PathLike[str]) -> str:
    """``store verify`` of a score-vcf output: every attribute matches its digest (each mismatch
    named), ``scores`` has one column per target name, every column array one row per variant, and
    every chunk decodes. Returns the one-line verdict.

    Raises
    ------
    MetadataError
        Attributes that do not match their digest, by name.
    UserError
        An array whose shape the attributes do not give, or a chunk that cannot be read.
    """
    group, attrs = open_score_output(path, check=False)
    named = meta_digest_problems(attrs)
    if named:
        raise MetadataError(f"score-vcf output {str(path)!r} (zarr.json): {'; '.join(named)}; {DAMAGED_METADATA}")
    scores = group_array(group, "scores")
    n, T = scores.shape[0], len(attrs.get("target_names") or [])
    if scores.shape[1:] != (T,) and not (T == 0 and scores.shape[1:] == (1,)):
        raise UserError(f"score-vcf output {str(path)!r}: scores has shape {scores.shape}, but it names {T} targets")
    arrays = {"scores": scores, **{c: group_array(group, c) for c in attrs.get("columns") or []}}
    for name, array in arrays.items():
        if array.shape[0] != n:
            raise UserError(f"score-vcf output {str(path)!r}: {name} has {array.shape[0]} rows, scores {n}")
        for start in range(0, n, READ_ROWS):
            try:
                np.asarray(array[start : start + READ_ROWS])
            except Exception as exc:  # noqa: BLE001 - a damaged chunk: name it
                raise UserError(
                    f"score-vcf output {str(path)!r}: {name} rows {start}-{min(n, start + READ_ROWS) - 1} cannot be "
                    f"read ({type(exc).__name__})"
                ) from None
    return f"score-vcf output {path} is consistent ({n:,} rows, {T} targets)" + unsealed_note(attrs, str(path))


def seal_score_output(path: str | os.PathLike[str]) -> str:
    """``store upgrade`` of a score-vcf output written before metadata digests: add one."""
    open_score_output(path)
    if seal(zarr.open_group(str(path), mode="r+")):
        return f"upgraded score-vcf output {path}: added a metadata digest to its attributes"
    return f"score-vcf output {path} already has a metadata digest"
