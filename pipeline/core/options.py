"""Settings declared once: one dataclass field per setting, carrying its default, help text and rule.

A settings class (:class:`~pipeline.core.spec.TrainSpec`, or a command's options such as
:class:`~pipeline.core.commands.DistillOptions`) declares each field with :func:`option`. From those
declarations come the checks of the library (:func:`rules_of`, :meth:`Options.__post_init__`) and
the command line's options (``pipeline.cli`` turns each :class:`Declared` into a click option), so a
setting's name, flag, default, help and range are written in one place.

The type comes from the field's annotation: ``int``, ``float``, ``bool`` and ``str`` (optionally
``| None``) get a :class:`Rule`; a ``tuple[str, ...]`` is an option given several times; a mapping
is a free JSON object. Nothing here imports torch or click.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

from pipeline.errors import SpecError

PATH_KINDS = ("file", "dir", "any")
"""What a path option names: a file, a folder, or either."""
SCALARS = (int, float, bool, str)
"""The annotations a :class:`Rule` checks (other fields are free: mappings, repeated options)."""


class Rule:
    """How one setting is checked: its type, and optionally a range or a set of names.

    Parameters
    ----------
    kind : type
        ``int``, ``float``, ``bool`` or ``str`` (an ``int`` is accepted for a ``float``; a ``bool``
        is never a number).
    optional : bool
        ``None`` is allowed.
    minimum, above, maximum : float, optional
        ``value >= minimum``, ``value > above``, ``value <= maximum``.
    choices : tuple of str, optional
        The allowed names.
    """

    def __init__(
        self,
        kind: type,
        *,
        optional: bool = False,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
        choices: tuple[str, ...] | None = None,
    ) -> None:
        self.kind, self.optional, self.choices = kind, optional, choices
        self.minimum, self.above, self.maximum = minimum, above, maximum

    def check(self, where: str, label: str, value: Any) -> Any:
        """``value`` (an ``int`` made ``float`` where a float is expected), else a :class:`SpecError`.

        The message reads ``"<where>: <label> must be ..., got <value>"``.
        """
        if value is None and self.optional:
            return None
        if self.choices is not None:
            if not isinstance(value, str) or value not in self.choices:
                raise SpecError(f"{where}: {label} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        ok = isinstance(value, self.kind) and not (isinstance(value, bool) and self.kind is not bool)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise SpecError(f"{where}: {label} must be {self.kind.__name__}, got {type(value).__name__} {value!r}")
        for bound, broken, word in (
            (self.minimum, self.minimum is not None and value < self.minimum, ">="),
            (self.above, self.above is not None and value <= self.above, ">"),
            (self.maximum, self.maximum is not None and value > self.maximum, "<="),
        ):
            if broken:
                raise SpecError(f"{where}: {label} must be {word} {_number(bound)}, got {value!r}")
        return value

    def describe(self) -> str:
        """The range for ``--help``, in click's notation (``"x>=1"``, ``"x>=0, x<=1"``; empty without one)."""
        bounds = [(self.minimum, ">="), (self.above, ">"), (self.maximum, "<=")]
        return ", ".join(f"x{word}{_number(bound)}" for bound, word in bounds if bound is not None)


def _number(bound: float | None) -> str:
    """A bound as written: whole numbers in full (``4294967295``), others with ``:g``."""
    return str(int(bound)) if bound is not None and float(bound).is_integer() else f"{bound:g}"


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    default_factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    path: str | None = None,
    command_line: bool = True,
    **rule: Any,
) -> Any:
    """Declare one setting: a dataclass field with its default, ``--help`` text and rule.

    Parameters
    ----------
    default : object, optional
        The default (none: the setting is required, or comes from ``default_factory``).
    help : str
        The ``--help`` text (required).
    default_factory : callable, optional
        Makes the default (for mutable defaults such as mappings).
    flag : str, optional
        The command-line flag (default ``--`` and the name with ``-`` for ``_``). For a ``bool``
        whose default is ``True``, a flag ``--no-NAME`` is an off switch; without one the command
        line gets ``--NAME/--no-NAME``.
    metavar : str, optional
        What ``--help`` shows for the value (default: from the type or the choices).
    path : {"file", "dir", "any"}, optional
        The value is a path (``os.PathLike`` accepted and kept as ``str``) to a file, a folder or either.
    command_line : bool
        ``False`` for a library-only setting (no command-line option).
    **rule
        ``minimum``, ``above``, ``maximum`` and ``choices`` (see :class:`Rule`); the type comes from
        the field's annotation.
    """
    if not help:
        raise TypeError("option() needs its help text")
    if path is not None and path not in PATH_KINDS:
        raise TypeError(f"option(path=...) must be one of {', '.join(PATH_KINDS)}, got {path!r}")
    metadata = {
        "help": help,
        "rule": rule,
        "flag": flag,
        "metavar": metavar,
        "path": path,
        "command_line": command_line,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Declared:
    """One declared setting, as the library's checks and the command line see it.

    Attributes
    ----------
    name : str
        The field's name (the Python keyword).
    flag : str
        The command-line flag (``--batch-size``).
    help : str
    kind : type or None
        ``int``, ``float``, ``bool`` or ``str``; ``None`` for a free value (a mapping: JSON on the
        command line; a tuple: an option given several times).
    rule : Rule or None
        How the value is checked (``None`` for a free value).
    default : object
        The default (a factory's value), or ``dataclasses.MISSING`` for a required setting.
    repeatable : bool
        A ``tuple`` of values: the option may be given several times.
    path : str or None
        ``"file"``, ``"dir"`` or ``"any"`` for a path.
    metavar : str or None
    command_line : bool
        Has a command-line option.
    """

    name: str
    flag: str
    help: str
    kind: type | None
    rule: Rule | None
    default: Any
    repeatable: bool = False
    path: str | None = None
    metavar: str | None = None
    command_line: bool = True

    @property
    def required(self) -> bool:
        """The setting has no default."""
        return self.default is MISSING


def _declare(f: Any, hint: Any) -> Declared:
    meta = f.metadata
    args = get_args(hint)
    optional = type(None) in args
    kind = next((k for k in args if k is not type(None)), hint) if optional else hint
    origin = get_origin(kind) or kind
    scalar = kind if kind in SCALARS else None
    rule = Rule(scalar, optional=optional, **meta.get("rule", {})) if scalar is not None else None
    if f.default is not MISSING:
        default = f.default
    elif f.default_factory is not MISSING:
        default = f.default_factory()
    else:
        default = MISSING
    return Declared(
        name=f.name,
        flag=meta.get("flag") or "--" + f.name.replace("_", "-"),
        help=meta["help"],
        kind=scalar,
        rule=rule,
        default=default,
        repeatable=origin is tuple,
        path=meta.get("path"),
        metavar=meta.get("metavar"),
        command_line=meta.get("command_line", True),
    )


def declared(cls: type) -> dict[str, Declared]:
    """Every setting a class declares with :func:`option`, by name, in field order.

    Fields declared without :func:`option` (no help text) are not settings and are left out.
    """
    return dict(_declared(cls))


@cache
def _declared(cls: type) -> tuple[tuple[str, Declared], ...]:
    hints = get_type_hints(cls)
    return tuple((f.name, _declare(f, hints[f.name])) for f in fields(cls) if "help" in f.metadata)


def rules_of(cls: type) -> dict[str, Rule]:
    """The rule of each checked setting of ``cls`` (free values, such as mappings, have none)."""
    return {name: d.rule for name, d in declared(cls).items() if d.rule is not None}


def flag_of(cls: type, name: str) -> str:
    """The command-line flag of setting ``name`` of ``cls`` (``batch_size`` -> ``--batch-size``)."""
    return declared(cls)[name].flag


def check_settings(obj: Any, where: str) -> None:
    """Check every setting of the dataclass instance ``obj`` against its rule, in place.

    An ``os.PathLike`` given for a path or text setting is kept as ``str``; an ``int`` given for a
    ``float`` becomes a ``float``. A bad value is a :class:`~pipeline.errors.SpecError` naming ``where`` and the flag.
    """
    for name, d in declared(type(obj)).items():
        value = getattr(obj, name)
        if isinstance(value, os.PathLike) and (d.path is not None or d.kind is str):
            value = os.fspath(value)
        if d.rule is not None:
            value = d.rule.check(where, f"option {d.flag}", value)
        elif d.repeatable:
            value = _repeated(where, d, value)
        if value is not getattr(obj, name):
            object.__setattr__(obj, name, value)  # frozen dataclasses too: this is their construction


def _repeated(where: str, d: Declared, value: Any) -> tuple[Any, ...]:
    """A repeatable setting as a tuple (a list is accepted; a lone string is not a list of one)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SpecError(f"{where}: option {d.flag} must be a list of values, got {type(value).__name__} {value!r}")
    return tuple(value)


class Options:
    """Base of a command's options dataclass: each field's rule is checked when an instance is made.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)`` with every field declared by
    :func:`option`, and set :attr:`COMMAND` (the name errors start with).
    """

    COMMAND: ClassVar[str] = "options"

    def __post_init__(self) -> None:
        check_settings(self, self.COMMAND)


def pick(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are settings of ``cls`` (to build it from a command's keywords)."""
    names = set(declared(cls))
    return {k: v for k, v in values.items() if k in names}
