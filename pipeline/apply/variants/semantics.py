"""What variant scores mean, written into every output: :class:`Semantics`, and which targets are written.

:class:`Semantics` says the quantity and its formula, the sign, the log base, the mode and its window,
the strand, the model's identity (:func:`model_identity`) and the genome's fingerprint. ``score-vcf``,
``catalogue`` and ``lookup`` write it into their outputs; :func:`select_targets` is their
``--targets``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.models.weights import file_sha256

LOGFOLD_FORMULA = "log(((alt + eps)(1 - ref + eps)) / ((1 - alt + eps)(ref + eps))), eps = 1e-6"
DIFF_FORMULA = "alt - ref"
SIGN = "ALT relative to REF: positive when the ALT allele raises the predicted probability"

VALUE_MEANINGS = {
    "ref": "<target>_ref: the base model's prediction on the reference window the variant was scored from "
    "(the window centred at window_center; the mean over strands with strand both)",
    "alt": "<target>_alt: the implied alternative probability, log_unfold(ref, score) (the exact inverse of the "
    "log-fold) for logfold scores, ref + score for diff scores; with --exact and one strand, the base model's "
    "prediction on the alternative window",
    "q": "<target>_q: the score's percentile in the background (see background): the share of the background's "
    "effects of that target at or below the score, from 0 to 1",
}
"""What each ``--values`` column means (written into the semantics of an output that has them)."""

WINDOWS: dict[str, str] = {
    "catalogue": "catalogue tiles: windows every `stride` bases; each position scored in the window whose "
    "core (the `stride` positions around its centre) holds it, shifted to fit the contig",
}
"""How each mode places the variant in the window: the catalogue's tiles here; every scoring mode adds
its own when it is registered (:func:`pipeline.apply.variants.scorers.register_scorer`)."""


def model_identity(
    checkpoint: str | os.PathLike[str], meta: Mapping[str, Any], scored_with: str = "multiplexer"
) -> dict[str, Any]:
    """What scored (``scored_with``: the multiplexer of ``checkpoint``, or its base model), with the
    checkpoint's path and sha256 and the base model's identity."""
    return {
        "scored_with": scored_with,
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "multiplexer": meta["architecture"]["name"],
        "multiplexer_target": meta["target_kind"],
        "base_model": meta.get("base", {}),
    }


@dataclass(frozen=True)
class Semantics:
    """What the scores mean: written into every output."""

    quantity: str
    """``logfold`` or ``diff``."""
    mode: str
    strand: str
    model: dict[str, Any]
    genome: dict[str, Any]
    converted_from: str | None = None
    """``logfold`` when ``diff`` scores were converted from a log-fold multiplexer."""
    catalogue: dict[str, Any] | None = None
    """The catalogue SNVs were read from (``score-vcf --catalogue``): path and stride."""
    values: list[str] | None = None
    """What was added per target (``ref``, ``alt`` by ``--values``, ``q`` by ``--background``; ``None``: nothing)."""
    background: dict[str, Any] | None = None
    """The background the percentiles (``q``) are read from (:meth:`~pipeline.store.background.Background.describe`)."""

    def as_dict(self) -> dict[str, Any]:
        """The semantics as a JSON-able dict (the keys every output carries)."""
        logfold = self.quantity == "logfold"
        strand = {
            "forward": "forward strand",
            "reverse": "reverse complement, read back on the forward strand",
            "both": "mean of the forward and reverse-complement scores, averaged in log-fold space",
        }[self.strand]
        out = {
            "quantity": self.quantity,
            "formula": LOGFOLD_FORMULA if logfold else DIFF_FORMULA,
            "sign": SIGN,
            "log_base": "e" if logfold else "none",
            "mode": self.mode,
            "window": WINDOWS[self.mode],
            "strand": f"{self.strand}: {strand}",
            "model": self.model,
            "genome": self.genome,
        }
        if self.converted_from:
            out["converted_from"] = self.converted_from
        if self.catalogue:
            out["catalogue"] = {
                **self.catalogue,
                "window": WINDOWS["catalogue"],
                "rows": "SNVs inside the catalogue's regions are read from it; the others are scored by the mode above",
            }
        if self.values:
            out["values"] = {kind: VALUE_MEANINGS[kind] for kind in self.values}
        if self.background:
            out["background"] = self.background
        return out

    def lines(self) -> list[tuple[str, str]]:
        """``(key, value)`` pairs, values as text (JSON for the nested ones)."""
        return [(k, v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in self.as_dict().items()]


def select_targets(names: list[str], targets: str | None) -> np.ndarray:
    """Indices of the targets ``--targets`` selects (all, in order, when ``None``).

    ``targets`` is a file of one item per line, or comma-separated items; an item is a target name
    or, when no name equals it, a regular expression searched in every name. The selection keeps
    the checkpoint's order.
    """
    if targets is None:
        return np.arange(len(names))
    path = Path(targets)
    items = [line.strip() for line in path.read_text().splitlines()] if path.is_file() else targets.split(",")
    items = [item for item in (i.strip() for i in items) if item]
    if not items:
        raise UserError(f"--targets {targets!r} names no target")
    chosen: set[int] = set()
    for item in items:
        if item in names:
            chosen.add(names.index(item))
            continue
        try:
            pattern = re.compile(item)
        except re.error as exc:
            raise UserError(
                f"--targets item {item!r} is neither a target name nor a regular expression: {exc}"
            ) from None
        hits = [k for k, name in enumerate(names) if pattern.search(name)]
        if not hits:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise UserError(f"--targets item {item!r} matches no target name (the model has {shown})")
        chosen.update(hits)
    return np.array(sorted(chosen), dtype=np.int64)
