"""Reading YAML documents strictly: UTF-8 text, no key given twice, no alias expansion bomb.

PyYAML's ``safe_load`` takes the last of two equal keys without a word, decodes UTF-16 and binary
files into nonsense, and builds a document whose aliases expand to billions of nodes once anything
walks it. :func:`read_yaml` refuses each of those with a one-line :class:`~pipeline.errors.SpecError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import SpecError

MAX_NODES = 100_000
"""Most nodes a document may have once its aliases are expanded (a spec has a few hundred)."""


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping key given twice, naming both lines."""

    source = "document"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise SpecError(f"{self.source}: key {key!r} is given twice (lines {seen[key]} and {line})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes under ``node`` with every alias expanded, computed without expanding (memoised by node)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once instead of looping
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size
    return size


def read_yaml(path: str | os.PathLike[str], what: str = "YAML file") -> Any:
    """The document of a YAML file, read strictly (see the module docstring).

    Parameters
    ----------
    path : path
        The file.
    what : str
        How messages name it, e.g. ``"spec file"``.

    Raises
    ------
    SpecError
        When the file is not UTF-8 text, is not valid YAML, gives a key twice in one mapping, or
        expands to more than :data:`MAX_NODES` nodes.
    """
    name = f"{what} {str(path)!r}"
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{name} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if "\x00" in text:
        raise SpecError(f"{name} is not UTF-8 text (it holds NUL bytes); save it as UTF-8")
    loader = _StrictLoader(text)
    loader.source = name
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_NODES:
            raise SpecError(f"{name} expands to {size:,} nodes through its aliases (at most {MAX_NODES:,})")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SpecError(f"{name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()
