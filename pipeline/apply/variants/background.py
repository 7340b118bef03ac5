"""``multiplexer background``: per-target quantiles of the multiplexer's effects over seeded windows.

The windows are drawn from the checkpoint's ``test`` split (or another split, regions, a BED file or
contigs): a window's centre is uniform over every centre whose window lies inside an interval, so
longer intervals get more windows, and a window with more than :data:`MAX_N_SHARE` of ``N`` is drawn
again. Each window gives the multiplexer's effect of the 3 other bases at every non-``N`` position;
a seeded sample of ``values_per_window`` of those (the same positions for every target) is kept, and
the quantiles of all kept values, signed and absolute, are written (:mod:`pipeline.store.background`).
``score-vcf``, ``lookup`` and ``catalogue export`` read them with ``--background``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.apply.inputs import open_genome, resolve_genome
from pipeline.apply.outputs import OutputKind, check_output
from pipeline.apply.predict import multiplexer_effects
from pipeline.apply.variants.catalogue import plan_contigs
from pipeline.apply.variants.options import BackgroundOptions
from pipeline.apply.variants.semantics import model_identity
from pipeline.core.encoding import one_hot
from pipeline.core.files import atomic_path
from pipeline.core.genome import Genome
from pipeline.core.progress import plural, progress_bar
from pipeline.core.runtime import exact_float32, resolve_device
from pipeline.core.urls import refuse_url
from pipeline.core.windows import center_range
from pipeline.errors import UserError
from pipeline.models import load_checkpoint
from pipeline.store.background import is_background, write_background
from pipeline.store.catalogue import Contig

MAX_N_SHARE = 0.1
"""A drawn window with a larger share of ``N`` is drawn again."""
MAX_TRIES = 50
"""Draws per window before giving up (the intervals are then mostly ``N``)."""

BACKGROUND = OutputKind("a background written by 'multiplexer background'", lambda path: is_background(path))


@dataclass(frozen=True)
class BackgroundSummary:
    """What ``background`` wrote."""

    path: str
    windows: int
    targets: int
    quantiles: int
    values_per_target: int
    seconds: float

    def line(self) -> str:
        """The command's summary line."""
        return (
            f"background: {plural(self.windows, 'window')}, {plural(self.targets, 'target')}, "
            f"{self.values_per_target:,} effects per target, {self.quantiles:,} quantiles in {self.seconds:.1f} s "
            f"-> {self.path}"
        )


def _split_intervals(meta: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    """``(regions, chroms)`` of a split of the checkpoint's spec."""
    splits = (meta.get("spec") or {}).get("splits") or {}
    if name not in splits:
        shown = ", ".join(splits) or "none"
        raise UserError(f"--split {name!r} is not a split of the checkpoint's spec (it has {shown})")
    split = splits[name]
    return list(split.get("regions") or []), list(split.get("chroms") or [])


def _plan(genome: Genome, seq_len: int, meta: dict[str, Any], o: BackgroundOptions) -> list[Contig]:
    """The intervals windows are drawn from (exactly one source; default the spec's test split)."""
    given = [bool(o.split), bool(o.regions or o.bed), bool(o.chroms)]
    if sum(given) > 1:
        raise UserError("give one of --split, --region/--bed and --chroms")
    regions, chroms, bed = list(o.regions), [c for c in (o.chroms or "").split(",") if c], o.bed
    if not any(given):
        regions, chroms = _split_intervals(meta, "test")
    elif o.split:
        regions, chroms = _split_intervals(meta, o.split)
    return plan_contigs(genome, seq_len, regions=regions, bed=bed, chroms=chroms)


def _centres(contigs: list[Contig], seq_len: int) -> list[tuple[str, int, int]]:
    """``(contig, lo, hi)``: the inclusive 1-based centres whose window lies inside each interval."""
    out = []
    for c in contigs:
        fit_lo, fit_hi = center_range(c.length, seq_len)
        for start, end in c.regions:
            lo = max(fit_lo, start + seq_len // 2)  # window [centre - L//2, centre - L//2 + L) inside [start, end)
            hi = min(fit_hi, end - seq_len + seq_len // 2)
            if hi >= lo:
                out.append((c.name, lo, hi))
    if not out:
        raise UserError(f"no window of {seq_len} bp fits inside the intervals to draw from")
    return out


def draw_windows(genome: Genome, contigs: list[Contig], seq_len: int, count: int, seed: int) -> list[tuple[str, int]]:
    """``count`` seeded windows ``(contig, 1-based centre)``, uniform over the centres that fit, each with at
    most :data:`MAX_N_SHARE` of ``N`` (redrawn otherwise)."""
    spans = _centres(contigs, seq_len)
    sizes = np.array([hi - lo + 1 for _, lo, hi in spans], dtype=np.float64)
    rng = np.random.default_rng(seed)
    out: list[tuple[str, int]] = []
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > MAX_TRIES * count:
            raise UserError(
                f"only {len(out)} of {count} windows with at most {MAX_N_SHARE:.0%} N found in the intervals; "
                "draw from other regions"
            )
        k = int(rng.choice(len(spans), p=sizes / sizes.sum()))
        name, lo, hi = spans[k]
        centre = int(rng.integers(lo, hi + 1))
        window = genome.window(name, centre, seq_len)
        if sum(window.upper().count(b) for b in "ACGT") >= (1 - MAX_N_SHARE) * seq_len:
            out.append((name, centre))
    return out


def window_values(y: np.ndarray, X: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """The effects kept from one window: a seeded sample of ``keep`` of its non-reference bases at non-``N``
    positions (all of them when fewer), the same entries for every target.

    Parameters
    ----------
    y : np.ndarray, shape=(F, 4, L)
        The window's effects.
    X : np.ndarray, shape=(4, L)
        Its one-hot sequence.
    keep : int
    rng : np.random.Generator

    Returns
    -------
    values : np.ndarray, shape=(F, min(keep, 3 * non-N positions)), float32
    """
    alternatives = (X == 0) & (X.sum(axis=0, keepdims=True) == 1)
    entries = np.flatnonzero(alternatives)
    if len(entries) > keep:
        entries = np.sort(rng.choice(entries, size=keep, replace=False))
    return y.reshape(y.shape[0], -1)[:, entries].astype(np.float32)


@exact_float32()
def build_background(
    checkpoint: str, out: str, options: BackgroundOptions | None = None, *, progress: bool = True
) -> BackgroundSummary:
    """Draw windows, run the multiplexer on them and write the per-target quantiles of its effects.

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt``.
    out : str
        The background (a Zarr store, ``.zarr``), written under a temporary name and published whole.
    options : BackgroundOptions, optional
        Where to draw windows, how many, the seed, effects kept per window, quantiles, genome, device.
    progress : bool
        Show a progress bar.

    Returns
    -------
    BackgroundSummary
    """
    t0 = time.perf_counter()
    o = options or BackgroundOptions()
    refuse_url(out, "--out", "a background is written on a file system (copy it to object storage afterwards)")
    if not Path(out).name.endswith(".zarr"):
        raise UserError(f"a background is a Zarr store: --out must end in .zarr, got {Path(out).name!r}")
    check_output(
        out,
        BACKGROUND,
        overwrite=o.overwrite,
        inputs={"--checkpoint": checkpoint, "--genome": o.genome, "--bed": o.bed},
    )
    dev = resolve_device(o.device)
    model, meta = load_checkpoint(checkpoint, dev)
    L = int(meta["seq_len"])
    genome_path = resolve_genome(o.genome, meta.get("genome"), "the checkpoint")
    if genome_path is None:
        raise UserError("no genome: pass --genome FASTA")
    genome = open_genome(genome_path, meta.get("genome_fingerprint"))
    contigs = _plan(genome, L, meta, o)
    windows = draw_windows(genome, contigs, L, o.windows, o.seed)
    values = _effects(model, genome, windows, L, o, dev, progress)
    probs = np.linspace(0.0, 1.0, o.quantiles)
    arrays = {
        "probs": probs,
        "signed": np.quantile(values, probs, axis=1).T.astype(np.float32),
        "absolute": np.quantile(np.abs(values), probs, axis=1).T.astype(np.float32),
        "chrom": np.array([c for c, _ in windows]),
        "center": np.array([p for _, p in windows], dtype=np.int64),
    }
    attrs = {
        "target_names": list(meta["target_names"]),
        "seq_len": L,
        "target_kind": meta["target_kind"],
        "model": model_identity(checkpoint, meta),
        "genome": {"path": str(Path(genome_path).resolve()), "fingerprint": genome.fingerprint()},
        "windows": {
            "count": len(windows),
            "seed": o.seed,
            "intervals": [f"{c.name}:{s + 1}-{e}" for c in contigs for s, e in c.regions],
            "values_per_window": o.values_per_window,
            "values_per_target": int(values.shape[1]),
            "max_n_share": MAX_N_SHARE,
        },
        "quantiles": o.quantiles,
    }
    with atomic_path(out) as staged:
        write_background(staged, arrays, attrs)
    return BackgroundSummary(out, len(windows), len(meta["target_names"]), o.quantiles, int(values.shape[1]),
                             time.perf_counter() - t0)  # fmt: skip


@torch.no_grad()
def _effects(
    model: torch.nn.Module,
    genome: Genome,
    windows: list[tuple[str, int]],
    seq_len: int,
    o: BackgroundOptions,
    device: torch.device,
    progress: bool,
) -> np.ndarray:
    """The kept effects of every window, ``[F, values]`` (which entries window ``i`` keeps is seeded by
    ``(seed, i)``, whatever the batch size)."""
    kept: list[np.ndarray] = []
    with progress_bar(desc="background", unit="window", total=len(windows), enabled=progress) as bar:
        for start in range(0, len(windows), o.batch_size):
            batch = windows[start : start + o.batch_size]
            X = np.stack([one_hot(genome.window(c, p, seq_len)) for c, p in batch])
            y = multiplexer_effects(model, torch.from_numpy(X).to(device)).cpu().numpy()
            for k in range(len(batch)):
                rng = np.random.default_rng((o.seed, start + k))
                kept.append(window_values(y[k], X[k], o.values_per_window, rng))
            bar.update(len(batch))
    return np.concatenate(kept, axis=1)
