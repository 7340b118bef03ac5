"""Reading YAML documents and JSON options strictly: UTF-8 text, no key given twice, no alias expansion
bomb, no integer that YAML 1.1 reads in another base than it looks.

PyYAML's ``safe_load`` takes the last of two equal keys without a word, decodes UTF-16 and binary
files into nonsense, builds a document whose aliases expand to billions of nodes once anything walks
it, and reads ``seq_len: 0310`` as the octal 200 and ``1:30`` as the base-60 90 (YAML 1.1).
:func:`read_yaml` refuses each of those with a one-line :class:`~pipeline.errors.SpecError`.
:func:`json_object` reads a JSON object given on the command line (``--arch-kwargs``) the same way:
Python's ``json`` also keeps the last of two equal keys silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import SpecError

MAX_NODES = 100_000
"""Most nodes a document may have once its aliases are expanded (a spec has a few hundred)."""


INT_TAG = "tag:yaml.org,2002:int"


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping key given twice (naming both lines) and an integer written
    with a leading zero or in base 60 (naming its key and line)."""

    source = "document"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise SpecError(f"{self.source}: key {key!r} is given twice (lines {seen[key]} and {line})")
            seen[key] = line
            if isinstance(value_node, yaml.ScalarNode) and value_node.tag == INT_TAG:
                self._check_int(value_node, f"key {key!r}")
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        self._check_int(node, "a value")
        return int(super().construct_yaml_int(node))

    def _check_int(self, node: yaml.ScalarNode, what: str) -> None:
        """Refuse ``0310`` (YAML 1.1: octal 200) and ``1:30`` (base 60: 90); ``0x``/``0b`` say their base."""
        text = str(node.value).replace("_", "")
        digits = text.lstrip("+-")
        octal = len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXbB"
        if not (octal or ":" in text):
            return
        value = super().construct_yaml_int(node)
        how = (
            "with a leading zero, which YAML 1.1 reads as octal"
            if octal
            else "with ':', which YAML 1.1 reads in base 60"
        )
        raise SpecError(
            f"{self.source}: {what} on line {node.start_mark.line + 1} is {node.value!r}, an integer written {how} "
            f"({value}); write it in decimal without the leading zero (or quote it if it is text)"
        )


_StrictLoader.add_constructor(INT_TAG, _StrictLoader.construct_yaml_int)


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


def json_object(text: str, where: str) -> dict[str, Any]:
    """A JSON object given as text (``--arch-kwargs '{"width1": 64}'``), read strictly.

    Parameters
    ----------
    text : str
        The JSON text.
    where : str
        How messages name it (``"--arch-kwargs"``).

    Raises
    ------
    SpecError
        When the text is not valid JSON, not an object, or gives a key twice in one object (Python's
        ``json`` would keep the last value without a word); the message names the key.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise SpecError(f"{where}: key {key!r} is given twice")
            out[key] = value
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a JSON object")
    return value
