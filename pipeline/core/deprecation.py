"""Old import paths that keep working: a module ``__getattr__`` that warns and names the new path.

A module whose public names moved keeps answering for them (``from old.module import name`` still
works) with a :class:`DeprecationWarning` that says where to import each from now, the way
zarr-python warns on its old paths.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(old_module: str, moved: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the names that left ``old_module``.

    Parameters
    ----------
    old_module : str
        The module's dotted name (``pipeline.evaluate``).
    moved : mapping of str to (str, object)
        For each moved name, the module to import it from now and the object itself.

    Returns
    -------
    callable
        Assign it to the module's ``__getattr__``: each use of a moved name warns, then returns it;
        any other unknown name is an ``AttributeError`` as usual.
    """

    def moved_getattr(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        new_module, obj = moved[name]
        warnings.warn(
            f"{old_module}.{name} has moved: import it from {new_module} ({old_module} will stop providing it)",
            DeprecationWarning,
            stacklevel=2,
        )
        return obj

    return moved_getattr
