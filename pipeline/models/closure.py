"""The local modules a user's model imports: what its identity hashes besides the model's own file.

A user's model (``file.py:Class`` or ``package.module:Class``) may import helper modules of its own;
editing one between a kill and the rerun changes the model as surely as editing the model's file.
:func:`local_imports` follows the model module's ``import`` statements (anywhere in the file, also
inside functions), and those of every local module they reach, and returns each local module with
its file. A module is *local* when its file lies outside the Python installation (standard library,
``site-packages``) and outside this package: the user's own code, an editable install included.
Installed packages are named by their version elsewhere, not hashed file by file.

Imports are found by reading the source (``ast``), never by importing anything: a module already
imported is found in ``sys.modules``, any other through the import system's finders. Modules
loaded by other means (``importlib.import_module`` of a computed name, ``exec`` of a file) are not
seen; see ``docs/decisions.md``.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import site
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

_THIS_PACKAGE = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def _installed_roots() -> tuple[Path, ...]:
    """Folders whose modules are not the user's code: the standard library, site-packages, this package."""
    roots = {_THIS_PACKAGE}
    for variables in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=variables)
        keys = ("stdlib", "platstdlib", "purelib", "platlib")
        roots.update(Path(paths[key]).resolve() for key in keys if key in paths)
    extra = [*getattr(site, "getsitepackages", lambda: [])(), getattr(site, "getusersitepackages", lambda: "")()]
    roots.update(Path(p).resolve() for p in extra if p)
    return tuple(sorted(roots))


def is_local(path: Path) -> bool:
    """Whether a module file is the user's own code (outside the Python installation and this package)."""
    resolved = path.resolve()
    return not any(resolved.is_relative_to(root) for root in _installed_roots())


def _spec(name: str) -> Any:
    """The import system's spec of module ``name``, found without importing anything (a dotted name's
    parents are looked up the same way, not imported)."""
    parent, _, last = name.rpartition(".")
    if not parent:
        return importlib.util.find_spec(name)
    search = _search_path(parent)
    return None if search is None else importlib.machinery.PathFinder.find_spec(last, search)


def _search_path(package: str) -> list[str] | None:
    module = sys.modules.get(package)
    if module is not None:
        found = getattr(module, "__path__", None)
        return list(found) if found else None
    spec = _spec(package)
    locations = getattr(spec, "submodule_search_locations", None)
    return list(locations) if locations else None


def _module_file(name: str) -> Path | None:
    """The file of module ``name`` (``None``: not a module, built in, or not found)."""
    module = sys.modules.get(name)
    if module is not None:
        file = getattr(module, "__file__", None)
        return Path(file) if file else None
    try:
        spec = _spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not getattr(spec, "has_location", False) or not spec.origin:
        return None
    return Path(spec.origin)


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b", "a.b.c"]`` (importing a module runs its packages' ``__init__``)."""
    parts = name.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


def _imported_names(path: Path, package: str) -> list[str]:
    """Every module name the source at ``path`` may import (absolute; ``from m import n`` gives ``m``
    and ``m.n``, which is kept only if it is a module)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names += _parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            if not base:
                continue
            names += _parents(base)
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return names


def _absolute(node: ast.ImportFrom, package: str) -> str | None:
    """The module a ``from ... import`` statement imports from, relative ones resolved (``None``: a
    relative import outside a package)."""
    if not node.level:
        return node.module
    try:
        return importlib.util.resolve_name("." * node.level + (node.module or ""), package)
    except (ImportError, ValueError):
        return None


def _package_of(name: str, file: Path) -> str:
    """The package relative imports of module ``name`` resolve against."""
    return name if file.name.startswith("__init__.") else name.rpartition(".")[0]


def local_imports(module: ModuleType) -> list[tuple[str, Path]]:
    """The local modules ``module`` imports, directly or through other local modules.

    Parameters
    ----------
    module : ModuleType
        The module that defines a user's model class.

    Returns
    -------
    list of (str, Path)
        ``(module name, file)`` sorted by name; ``module`` itself is not listed.
    """
    own = getattr(module, "__file__", None)
    if not own:
        return []
    found: dict[str, Path] = {}
    todo = [(Path(own), module.__package__ or "")]
    while todo:
        path, package = todo.pop()
        if path.suffix != ".py":
            continue
        for name in _imported_names(path, package):
            if name in found or name == module.__name__:
                continue
            file = _module_file(name)
            if file is None or not file.is_file() or not is_local(file) or file.resolve() == Path(own).resolve():
                continue
            found[name] = file.resolve()
            todo.append((found[name], _package_of(name, file)))
    return sorted(found.items())
