"""Metadata checked like data: a digest of every attribute of a group, written with it, checked on open.

The attributes of a Zarr group (its ``zarr.json``) give the data its meaning: target names, alphabet,
window length, number of targets, target kind, the spec, the identities of model and genome, a
split's sample count. A flipped byte there relabels or truncates the data without any chunk
checksum noticing. So every group whose attributes matter carries ``meta_digest``::

    {"version": 1, "algorithm": "sha256", "keys": {"<attribute>": "<sha256 of its canonical JSON>", ...}}

written in the same ``zarr.json`` update as the attributes it covers (:func:`write_meta_digest`,
:func:`update_attrs`), and checked when the group is opened (:func:`checked_attrs`, the one checked
read every reader goes through: training stores and their splits, catalogues, score-vcf Zarr
outputs). A digest per attribute lets ``store verify`` name the damaged one. Groups written before
digests existed have none: they open as before, ``store verify`` says so and ``store upgrade`` adds one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import zarr

from pipeline.errors import MetadataError

META_DIGEST = "meta_digest"
"""The attribute that holds the digests."""
VERSION = 1
DAMAGED_METADATA = "the metadata is damaged: restore it from a copy, or make it again"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def attribute_digest(value: Any) -> str:
    """sha256 (hex) of an attribute's canonical JSON (a value read back from ``zarr.json`` has the
    digest of the value written)."""
    return hashlib.sha256(_canonical(json.loads(_canonical(value))).encode()).hexdigest()


def write_meta_digest(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` plus ``meta_digest``: the digest of every attribute (write them in one update).

    Parameters
    ----------
    attrs : mapping
        All attributes the group will have (JSON values).
    """
    keys = {str(k): attribute_digest(v) for k, v in attrs.items() if k != META_DIGEST}
    return {**attrs, META_DIGEST: {"version": VERSION, "algorithm": "sha256", "keys": keys}}


def has_meta_digest(attrs: Mapping[str, Any]) -> bool:
    """Whether the attributes carry a digest (groups written before digests existed do not)."""
    return META_DIGEST in attrs


def meta_digest_problems(attrs: Mapping[str, Any]) -> list[str]:
    """Every attribute that does not match its digest, by name (``[]``: all match, or no digest).

    Returns
    -------
    list of str
        Such as ``"attribute 'target_names' does not match its digest"``, ``"attribute 'seq_len' is
        missing"``, ``"attribute 'seq_lem' is not covered by the digest"``.
    """
    record = attrs.get(META_DIGEST)
    if record is None:
        return []
    keys = record.get("keys") if isinstance(record, Mapping) else None
    if not isinstance(keys, Mapping) or record.get("version") != VERSION:
        return [f"attribute {META_DIGEST!r} is not a digest this version reads"]
    problems = []
    for key, expected in keys.items():
        if key not in attrs:
            problems.append(f"attribute {key!r} is missing")
        elif attribute_digest(attrs[key]) != expected:
            problems.append(f"attribute {key!r} does not match its digest")
    extra = [key for key in attrs if key not in keys and key != META_DIGEST]
    problems += [f"attribute {key!r} is not covered by the digest" for key in extra]
    return problems


def check_meta_digest(attrs: Mapping[str, Any], where: str) -> None:
    """Raise a :class:`~pipeline.errors.MetadataError` naming the first attribute that does not match
    its digest (and how many more); nothing when all match or there is no digest.

    Parameters
    ----------
    attrs : mapping
        A group's attributes.
    where : str
        How the message names the group, e.g. ``"store 'x.zarr' (zarr.json)"``.
    """
    problems = meta_digest_problems(attrs)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MetadataError(f"{where}: {problems[0]}{more}; {DAMAGED_METADATA}")


def group_label(group: zarr.Group, what: str, path: str) -> str:
    """``"<what> '<path>' (<group>/zarr.json)"``: how messages name a group's attributes."""
    inner = f"{group.path}/zarr.json" if group.path else "zarr.json"
    return f"{what} {path!r} ({inner})"


def checked_attrs(group: zarr.Group, what: str, path: str, *, check: bool = True) -> dict[str, Any]:
    """A group's attributes, checked against their digest: the one checked read of every reader.

    Parameters
    ----------
    group : zarr.Group
    what : str
        What the group belongs to, for messages (``"store"``, ``"catalogue"``, ``"score-vcf output"``).
    path : str
        The store's path or URL, as the user gave it.
    check : bool
        ``False`` only for ``store verify``, which reports every mismatch by name itself.

    Raises
    ------
    MetadataError
        An attribute does not match its digest.
    """
    attrs = dict(group.attrs)
    if check:
        check_meta_digest(attrs, group_label(group, what, path))
    return attrs


def update_attrs(group: zarr.Group, changes: Mapping[str, Any], what: str, path: str) -> None:
    """Change some attributes of ``group`` and its digest in one ``zarr.json`` update. The present
    attributes are checked first (a damaged one is never sealed again); a group without a digest stays
    without one (``store upgrade`` adds it)."""
    attrs = checked_attrs(group, what, path)
    new = {**attrs, **changes}
    group.attrs.update(write_meta_digest(new) if has_meta_digest(attrs) else dict(changes))


def seal(group: zarr.Group) -> bool:
    """Add a digest to a group that has none (``store upgrade``); returns whether one was added."""
    attrs = dict(group.attrs)
    if has_meta_digest(attrs):
        return False
    group.attrs.update(write_meta_digest(attrs))
    return True


def unsealed_note(attrs: Mapping[str, Any], path: str) -> str:
    """What ``store verify`` adds to its verdict on a store without a digest (``""`` with one)."""
    if has_meta_digest(attrs):
        return ""
    return (
        f" (its attributes carry no metadata digest: written before digests were recorded; "
        f"`multiplexer store upgrade {path}` adds one)"
    )
