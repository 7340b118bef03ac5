"""Old import paths of moved modules: ``pipeline.apply.vcf`` and the rest still import, and warn.

The variant-effect commands (``score-vcf``, ``catalogue``, ``lookup``) moved into
:mod:`pipeline.apply.variants`. Each old module is made on import by :class:`MovedFinder`: a module
whose attributes are looked up in the new modules of :data:`MOVED`, in order, with a
``DeprecationWarning`` that names where the attribute lives now, worded as
:func:`pipeline.core.deprecation.moved_names` words it. That helper serves a module that stays and
loses some names; here whole modules moved, each name may live in one of several new modules, and no
file is kept at an old path, so version control follows each file to its new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

_WING = "pipeline.apply.variants"
_LEGACY = f"{_WING}._legacy"
_ALL = ("score_vcf", "options", "writers", "semantics", "records", "rows", "scorers", "parts")
MOVED: dict[str, tuple[str, ...]] = {
    "pipeline.apply.vcf": (_LEGACY, *(f"{_WING}.{m}" for m in _ALL)),
    "pipeline.apply.vcf_input": (f"{_WING}.records",),
    "pipeline.apply.vcf_rows": (f"{_WING}.rows", f"{_WING}.options", _LEGACY),
    "pipeline.apply.vcf_scoring": (f"{_WING}.scorers", f"{_WING}.options"),
    "pipeline.apply.vcf_output": (f"{_WING}.writers", f"{_WING}.semantics", _LEGACY),
    "pipeline.apply.vcf_parts": (f"{_WING}.parts",),
    "pipeline.apply.catalogue": (
        _LEGACY,
        f"{_WING}.catalogue",
        "pipeline.store.tiles",
        f"{_WING}.semantics",
        "pipeline.core.encoding",
    ),  # fmt: skip
    "pipeline.apply.lookup": (_LEGACY, f"{_WING}.lookup", "pipeline.store.tiles"),
}
"""Each old module and the modules its names now live in, searched in order (:mod:`~pipeline.apply.variants._legacy`
holds the keyword forms of ``score_vcf``, ``build_catalogue`` and ``lookup`` and the old ``SUFFIXES`` and
``MODES``)."""


def _forward(old: str, new: tuple[str, ...], name: str) -> Any:
    """Attribute ``name`` of the old module ``old``: found in ``new``, with a warning naming where."""
    if name.startswith("__"):
        raise AttributeError(name)
    for target in new:
        module = importlib.import_module(target)
        if target == _LEGACY:
            if name not in module.MOVED_TO:
                continue
            advice = module.MOVED_TO[name]
        elif hasattr(module, name):
            home = getattr(getattr(module, name), "__module__", None)  # where a class or function is defined
            advice = f"import it from {home if isinstance(home, str) and home.startswith('pipeline.') else target}"
        else:
            continue
        # the wording of pipeline.core.deprecation.moved_names, the helper for names that leave a module
        warnings.warn(
            f"{old}.{name} has moved: {advice} ({old} will stop providing it)", DeprecationWarning, stacklevel=3
        )
        return getattr(module, name)
    raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {', '.join(new)})")


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes the modules of :data:`MOVED` on import (installed by :func:`install`)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """A spec for an old module path, ``None`` for every other name."""
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        """The default module object."""
        return None

    def exec_module(self, module: ModuleType) -> None:
        """Give the old module a docstring and a module-level ``__getattr__`` that forwards."""
        old, new = module.__name__, MOVED[module.__name__]
        module.__doc__ = f"Deprecated: {old} moved to {', '.join(new)}."

        def getattr_(name: str) -> Any:
            return _forward(old, new, name)

        module.__getattr__ = getattr_  # type: ignore[method-assign]


def install() -> None:
    """Put :class:`MovedFinder` on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
