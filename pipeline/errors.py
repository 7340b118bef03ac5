"""Errors that the command line turns into one ``error: ...`` line: :class:`UserError` and its kinds.

Callers branch on the type, never on the message text. Each rule of the input has one home that
raises one of these types; the CLI prints ``error: <message>`` on stderr and exits with status 1.
Every error pickles with its type and attributes, so one raised on ``torchrun`` rank 0 is raised as
itself on the other ranks.
"""

from __future__ import annotations

from collections.abc import Sequence


class UserError(Exception):
    """A problem with the user's input (file, spec, argument) rather than a bug.

    The message must name the offending value (file, key, chromosome, ...).
    """


class SpecError(UserError):
    """A spec key or command-line option has an unknown name, a wrong type or a value out of range."""


class ChoiceError(UserError, ValueError):
    """A name outside a fixed set (ISM engine, target kind, precision).

    Also a :class:`ValueError`, so Python callers of the library API can catch it the usual way.
    """


class StoreNotFoundError(UserError):
    """No store exists at the path.

    Attributes
    ----------
    path : str
        The path or URL that was looked at.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"store {path!r} does not exist")
        self.path = path

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # pickled as its arguments, so it crosses processes (torchrun ranks) with its type and attributes
        return type(self), (self.path,)


class StoreMismatchError(UserError):
    """An existing store was made from another spec or another base-model weights file.

    Attributes
    ----------
    path : str
        The store.
    reason : str
        What differs, without advice (callers that know better advice use it to build their own).
    """

    ADVICE = "Use another --store path, or --overwrite to discard it"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{reason}. {self.ADVICE}")
        self.path, self.reason = path, reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # pickled as its arguments, so it crosses processes (torchrun ranks) with its type and attributes
        return type(self), (self.path, self.reason)


class MetadataError(UserError):
    """A stored group's attributes (its ``zarr.json``) do not match the digest written with them: the
    metadata that gives the data its meaning is damaged (:mod:`pipeline.store.meta_digest`)."""


class DamagedDataError(UserError):
    """Stored data that does not match what was written: a chunk that cannot be decoded, is missing, or
    decodes to other bytes than its digest records; the message names where (store, unit, array)."""


class OutputExistsError(UserError):
    """An output file or folder exists and ``--overwrite`` was not given."""


class WriteError(UserError):
    """Writing an output failed (full disk, permission); the message names what was being written."""


class UrlNotAcceptedError(UserError):
    """A path that names an output was given as a URL where that output is written only to a local (or
    shared) file system; the message says why (:func:`pipeline.core.urls.refuse_url`)."""


class UnsupportedModelError(UserError):
    """The exact fast ISM engine cannot follow this model; the message names the layer and why."""


def check_choice(what: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`ChoiceError` naming both.

    Parameters
    ----------
    what : str
        What the value is, for the message (``"ISM engine"``).
    value : object
        The value given.
    choices : sequence of str
        The allowed names.
    """
    if not isinstance(value, str) or value not in choices:
        raise ChoiceError(f"unknown {what} {value!r} (expected one of {', '.join(choices)})")
    return value
