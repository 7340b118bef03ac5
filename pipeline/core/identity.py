"""Identities as content, not names (no torch: ``store info`` stays light).

A base model's identity (:func:`pipeline.models.base.base_identity`) is written into stores and
checkpoints; its ``init`` says how the weights were set. :func:`weights_label` is the one wording of
it, used by ``store info``, evaluation reports and checkpoint readers. :func:`code_digest` and
:func:`code_change` name a user model's code (its file and the local modules it imports), and
:func:`identity_hash` a store's content: the spec with every path replaced by what it names.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

BUILT_IN = "built in"
"""``init`` of a model that sets its own weights (the demo model); also how identities written before
``init`` was recorded name a base model without a weights file."""
WEIGHTS_FILE = "weights file"
"""``init`` of a base model loaded from a weights file (the identity's ``weights`` names it)."""


def weights_label(identity: Mapping[str, Any]) -> str:
    """How ``store info``, checkpoints' readers and reports name a base model's weights: the weights
    file, ``random (seed N)`` or ``built in``. Identities written before ``init`` was recorded name
    their weights file or ``built in``."""
    if identity.get("weights"):
        return str(identity["weights"])
    init = identity.get("init")
    return str(init) if init and init != WEIGHTS_FILE else BUILT_IN


# ------------------------------------------------------------------------------------------------
# a user's model code
# ------------------------------------------------------------------------------------------------


def code_digest(source_sha256: str, imports: Sequence[Sequence[str]]) -> str:
    """One sha256 (hex) of a user model's code: its own file and every local module it imports.

    Parameters
    ----------
    source_sha256 : str
        The sha256 of the file defining the model class.
    imports : sequence of [name, file, sha256]
        The local modules it imports (:func:`pipeline.models.closure.local_imports`); their files'
        paths are not hashed (a moved project keeps its identity).
    """
    lines = [f"<model>\t{source_sha256}"] + sorted(f"{name}\t{sha}" for name, _, sha in imports)
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def code_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """How the code of a user's model changed between a recorded identity and the present one: its
    own file, or a local module it imports (added, gone or edited); ``None`` when it did not, or
    when ``old`` was recorded before that was (no ``source_sha256``, no ``imports``)."""
    if old.get("source_sha256") not in (None, new.get("source_sha256")):
        return (
            f"model source file {old.get('source')!r} of sha256 {str(old['source_sha256'])[:12]}, but "
            f"{new.get('source')!r} now has sha256 {str(new.get('source_sha256'))[:12]}: the model's code changed"
        )
    if old.get("imports") is None:
        return None
    before = {str(name): (str(file), str(sha)) for name, file, sha in old["imports"]}
    after = {str(name): (str(file), str(sha)) for name, file, sha in new.get("imports") or []}
    for name in sorted(set(before) | set(after)):
        if name not in after:
            return f"model that imported local module {name!r} ({before[name][0]}); it no longer does"
        if name not in before:
            return f"model that did not import local module {name!r}; it now does ({after[name][0]})"
        if before[name][1] != after[name][1]:
            return (
                f"model whose local module {name!r} had sha256 {before[name][1][:12]}, but {after[name][0]!r} now "
                f"has sha256 {after[name][1][:12]}: the model's code changed"
            )
    return None


# ------------------------------------------------------------------------------------------------
# a store's identity
# ------------------------------------------------------------------------------------------------

HASH_VERSION = 2
"""How a new store's ``spec_hash`` is computed (:func:`identity_hash`); recorded as ``spec_hash_version``.

1 (stores written before it was recorded): the spec's content keys as written, paths as text
(:meth:`pipeline.core.spec.Spec.store_hash`). 2: the same keys with every path replaced by what it
names: the genome by its full sequence digest, a weights file by its sha256, a user model's file by
its code digest, the target names file by the names (:func:`content_identity`)."""


def _names_sha256(target_names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(target_names).encode()).hexdigest()


def _user_model(model: Any) -> bool:
    return isinstance(model, str) and ":" in model


def without_paths(store_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A spec's store keys (:meth:`~pipeline.core.spec.Spec.store_dict`) with the path text left out:
    no ``genome`` or ``base.target_names``, a weights file as ``"<file>"``, a user model as its class
    name. What two specs must share for one store (the paths' contents are compared separately)."""
    d = copy.deepcopy(dict(store_dict))
    d.pop("genome", None)
    base = dict(d.get("base") or {})
    base.pop("target_names", None)
    if base.get("weights") not in (None, "random"):
        base["weights"] = "<file>"
    if _user_model(base.get("model")):
        base["model"] = "<user>:" + str(base["model"]).rpartition(":")[2]
    d["base"] = base
    return d


def content_identity(
    store_dict: Mapping[str, Any],
    base_identity: Mapping[str, Any],
    genome_fingerprint: Mapping[str, Any],
    target_names: Sequence[str],
) -> dict[str, Any]:
    """What a store's content depends on, without any path text (hash version 2).

    Parameters
    ----------
    store_dict : mapping
        The spec's store keys (:meth:`~pipeline.core.spec.Spec.store_dict`).
    base_identity : mapping
        The base model's identity (:func:`pipeline.models.base.base_identity`).
    genome_fingerprint : mapping
        The genome's fingerprint, with its full ``sequence_digest``.
    target_names : sequence of str

    Returns
    -------
    dict
        :func:`without_paths`, plus ``genome`` (layout and full digest), ``base.weights_sha256``,
        ``base.code_sha256`` (a user model) and ``base.target_names_sha256``.
    """
    if not genome_fingerprint.get("sequence_digest"):
        raise ValueError("a content identity needs the genome's full sequence digest")
    d = without_paths(store_dict)
    d["genome"] = {k: genome_fingerprint[k] for k in ("layout_sha256", "sequence_digest", "digest_version")}
    base = d["base"]
    if base.get("weights") == "<file>":
        base["weights_sha256"] = base_identity.get("weights_sha256")
    if _user_model(store_dict.get("base", {}).get("model")):
        base["code_sha256"] = base_identity.get("code_sha256") or base_identity.get("source_sha256")
    base["target_names_sha256"] = _names_sha256(target_names)
    return d


def identity_hash(
    store_dict: Mapping[str, Any],
    base_identity: Mapping[str, Any],
    genome_fingerprint: Mapping[str, Any],
    target_names: Sequence[str],
) -> str:
    """sha256 (hex) of the canonical JSON of :func:`content_identity`: a store's ``spec_hash`` of hash
    version 2, which checkpoints record and ``train --resume`` and ``compare`` compare."""
    content = content_identity(store_dict, base_identity, genome_fingerprint, target_names)
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
