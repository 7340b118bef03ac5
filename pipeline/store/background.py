"""A background of effects: per-target quantiles that say how large a variant's score is.

``multiplexer background`` (:mod:`pipeline.apply.variants.background`) draws seeded windows, runs the
multiplexer on them and keeps, per target, ``Q`` quantiles (``Q >= 1,000``, evenly spaced from 0 to 1)
of the effects at every non-reference base of every non-``N`` position: of the signed effects and of
their absolute values. A score's percentile for a target is the share of the background's effects at
or below it (:meth:`Background.percentile`, read off the quantile grid), so it is exact to within one
grid step (``1 / (Q - 1)``) plus the sampling error of the background itself.

Layout (a Zarr v3 group, attributes sealed by :mod:`pipeline.store.meta_digest`)::

    B.zarr/
      zarr.json        kind "multiplexer-background", format_version, target_names, seq_len,
                       target_kind, model (checkpoint path and sha256), genome, windows (how they were
                       drawn: intervals, count, seed, values per window), quantiles, array_digests
      probs            [Q] float64: the quantile levels, 0 .. 1
      signed           [F, Q] float32: quantiles of the signed effects of each target
      absolute         [F, Q] float32: quantiles of their absolute values
      chrom, center    [W]: the windows drawn (1-based centres)

The arrays are small; their sha256 is in ``array_digests`` (covered by the metadata digest), and every
open checks them, so a reader never returns a percentile from a damaged background.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.errors import MetadataError, UserError
from pipeline.store.meta_digest import checked_attrs, write_meta_digest

KIND = "multiplexer-background"
FORMAT_VERSION = 1
ARRAYS = ("probs", "signed", "absolute", "chrom", "center")
MIN_QUANTILES = 1000
"""The fewest quantile points a background may hold (the percentile's grid step is ``1 / (Q - 1)``)."""


def is_background(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a background written by ``multiplexer background`` (finished or not)."""
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # noqa: BLE001 - anything unreadable is not a background
        return False
    return group.attrs.get("kind") == KIND


def _digest(values: np.ndarray) -> str:
    """sha256 of an array's values: its bytes, or for text its items joined by NUL (whatever string dtype
    zarr hands back)."""
    if values.dtype.kind in "fiub":
        return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
    return hashlib.sha256("\0".join(str(v) for v in values.tolist()).encode()).hexdigest()


def write_background(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
    """Write a background (the caller stages ``path`` and publishes it when this returns).

    Parameters
    ----------
    path : path
        A new Zarr group.
    arrays : mapping
        ``probs [Q]``, ``signed [F, Q]``, ``absolute [F, Q]``, ``chrom [W]`` (str), ``center [W]``.
    attrs : mapping
        Everything but ``kind``, ``format_version`` and ``array_digests``, which are added here.
    """
    group = zarr.open_group(str(path), mode="w")
    digests = {}
    for name in ARRAYS:
        values = np.asarray(arrays[name])
        if name == "chrom":
            stored = group.create_array(name, shape=values.shape, dtype=str, chunks=(max(1, len(values)),))
            values = values.astype(str)
        else:
            stored = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape or (1,))
        stored[...] = values
        digests[name] = _digest(values)
    sealed = {**attrs, "kind": KIND, "format_version": FORMAT_VERSION, "array_digests": digests}
    group.attrs.update(write_meta_digest(sealed))


@dataclass(frozen=True)
class Background:
    """An opened, checked background.

    Attributes
    ----------
    path : str
    attrs : dict
        Its attributes (checked against their digest).
    probs : np.ndarray, shape=(Q,)
    signed : np.ndarray, shape=(F, Q)
    absolute : np.ndarray, shape=(F, Q)
    """

    path: str
    attrs: dict[str, Any]
    probs: np.ndarray
    signed: np.ndarray
    absolute: np.ndarray

    @property
    def target_names(self) -> list[str]:
        """The checkpoint's target names, in its order."""
        return list(self.attrs["target_names"])

    @property
    def checkpoint_sha256(self) -> str:
        """The sha256 of the checkpoint whose multiplexer made the background."""
        return str(self.attrs["model"]["checkpoint_sha256"])

    def describe(self) -> dict[str, Any]:
        """What the percentiles mean, for the semantics every output carries."""
        windows = self.attrs["windows"]
        return {
            "path": str(Path(self.path).resolve()) if "://" not in self.path else self.path,
            "percentile": "per target, the share of the background's effects at or below the score (signed), "
            "from 0 to 1, read off its quantile grid",
            "quantiles": int(self.attrs["quantiles"]),
            "windows": int(windows["count"]),
            "seed": int(windows["seed"]),
            "intervals": windows["intervals"],
            "values_per_target": int(windows["values_per_target"]),
        }

    def check_model(self, checkpoint_sha256: str, target_names: list[str], what: str) -> None:
        """Refuse to rank the scores of another model: ``what`` (``"checkpoint 'best.pt'"``, ``"catalogue
        'c.zarr'"``) must come from the checkpoint the background was made with, with its targets."""
        if checkpoint_sha256 != self.checkpoint_sha256:
            raise UserError(
                f"background {self.path!r} was made with another checkpoint than {what} "
                f"(sha256 {self.checkpoint_sha256[:12]}... vs {checkpoint_sha256[:12]}...); "
                "make one with this checkpoint (multiplexer background)"
            )
        if list(target_names) != self.target_names:
            raise UserError(f"background {self.path!r} has other targets than {what}")

    def percentile(self, scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Each score's percentile for its target: the share of background effects at or below it.

        Parameters
        ----------
        scores : np.ndarray, shape=(n, k)
            Signed scores of ``k`` targets (``NaN``: no score).
        targets : np.ndarray, shape=(k,)
            The targets' indices in :attr:`target_names`.

        Returns
        -------
        q : np.ndarray, shape=(n, k), float64
            In ``[0, 1]``; ``NaN`` where the score is ``NaN``.
        """
        scores = np.asarray(scores, dtype=np.float64)
        return _shares(self.signed[np.asarray(targets, dtype=np.int64)].astype(np.float64), self.probs, scores)


def _shares(levels: np.ndarray, probs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`grid_share` of ``x [n, k]`` against ``levels [k, Q]`` (target ``j``'s quantiles), for all
    targets at once: one sorted search over the targets' levels laid end to end (each target's shifted
    past the previous one's), each score clipped into its own target's range first."""
    k, q = levels.shape
    if k == 0:
        return np.zeros(x.shape)
    low, high = levels[:, 0], levels[:, -1]
    width = float(np.max(high - low)) + 1.0
    shift = np.arange(k) * width - low  # target j's levels lie in [j * width, j * width + its range]
    flat = (levels + shift[:, None]).ravel()
    inside = np.clip(x, low, high)
    found = np.searchsorted(flat, np.nan_to_num(inside) + shift, side="right") - np.arange(k) * q
    below = np.clip(found - 1, 0, q - 1)
    above = np.clip(found, 0, q - 1)
    columns = np.arange(k)
    lo, hi = levels[columns, below], levels[columns, above]
    gap = hi - lo
    step = np.divide(inside - lo, gap, out=np.zeros_like(inside), where=gap > 0)
    share = probs[below] + np.clip(step, 0, 1) * (probs[above] - probs[below])
    share = np.where(x < low, 0.0, np.where(x >= high, 1.0, share))
    return np.where(np.isnan(x), np.nan, share)


def grid_share(levels: np.ndarray, probs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The share of a distribution at or below ``x``, from its quantiles ``levels [Q]`` (non-decreasing)
    at ``probs [Q]`` (0 .. 1): the largest level's probability at or below ``x``, interpolated linearly
    to the next level. ``x`` below every level: 0; at or above the last: 1; ``NaN`` stays ``NaN``."""
    x = np.asarray(x, dtype=np.float64)
    k = np.searchsorted(levels, x, side="right")  # levels[:k] <= x
    below = np.clip(k - 1, 0, len(levels) - 1)
    above = np.clip(k, 0, len(levels) - 1)
    gap = levels[above] - levels[below]
    step = np.divide(x - levels[below], gap, out=np.zeros_like(x), where=gap > 0)
    share = probs[below] + np.clip(step, 0, 1) * (probs[above] - probs[below])
    share = np.where(k == 0, 0.0, np.where(k >= len(levels), 1.0, share))
    return np.where(np.isnan(x), np.nan, share)


def open_background(path: str | os.PathLike[str]) -> Background:
    """Open a background and check it: its attributes against their digest, every array against its
    sha256. Not a background, another format, or damaged: a one-line :class:`UserError`."""
    shown = str(path)
    if not is_background(shown):
        raise UserError(f"--background {shown!r} is not a background written by 'multiplexer background'")
    group = zarr.open_group(shown, mode="r")
    attrs = checked_attrs(group, "background", shown)
    if attrs.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"background {shown!r} has format {attrs.get('format_version')}; this version reads {FORMAT_VERSION}"
        )
    arrays: dict[str, np.ndarray] = {}
    for name in ARRAYS:
        try:
            stored = group[name]
            if not isinstance(stored, zarr.Array):
                raise TypeError(f"{name} is not an array")
            values = np.asarray(stored[...])
        except Exception as exc:  # noqa: BLE001 - a missing or undecodable chunk is damage, named below
            raise MetadataError(f"background {shown!r}: array {name!r} cannot be read ({type(exc).__name__})") from None
        if _digest(values) != attrs["array_digests"].get(name):
            raise MetadataError(f"background {shown!r}: array {name!r} does not match its digest; make it again")
        arrays[name] = values
    return Background(shown, attrs, arrays["probs"], arrays["signed"], arrays["absolute"])
