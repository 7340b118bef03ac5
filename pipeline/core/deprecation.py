"""Old import paths that keep working: a module ``__getattr__`` that warns and names the new path.

A module whose public names moved keeps answering for them (``from old.module import name`` still
works) with a :class:`DeprecationWarning` that says where to import each from now, the way
zarr-python warns on its old paths. The new home is imported only when an old name is used, so an
alias costs nothing to the modules that keep it (``pipeline.core.spec`` does not load numpy for
``bitround``); this is the one import made inside a function outside the command line, and it is
never a way around an import cycle: the new homes are ordinary imports for everyone else.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(old_module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the names that left ``old_module``.

    Parameters
    ----------
    old_module : str
        The module's dotted name (``pipeline.evaluate``).
    moved : mapping of str to str
        For each moved name, the module to import it from now (which holds it under the same name).

    Returns
    -------
    callable
        Assign it to the module's ``__getattr__``: each use of a moved name warns, then returns the
        object from its new home; any other unknown name is an ``AttributeError`` as usual.
    """

    def moved_getattr(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        new_module = moved[name]
        warnings.warn(
            f"{old_module}.{name} has moved: import it from {new_module} ({old_module} will stop providing it)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_module), name)

    return moved_getattr
