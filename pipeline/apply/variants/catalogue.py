"""``catalogue``: the multiplexer's effect of every SNV of whole regions, contigs or a genome.

Each contig is tiled with windows every ``stride`` bases (the geometry, with the format, is in
:mod:`pipeline.store.tiles`): each position's effects come from the one tile whose core holds it, so
every non-``N`` position of the requested regions is covered exactly once, at most ``S/2`` from its
window's centre. The tiling is fixed on the contig (not on the regions), so a position's value does
not depend on which regions were asked for.

Work is cut into the catalogue store's units (:mod:`pipeline.store.catalogue`: ``unit_positions``
positions, a multiple of the stride, so no tile spans two units); ``--shard I/N`` and torchrun ranks
take the units ``u % parts == part`` (:class:`~pipeline.core.runtime.Launch`), a rerun skips the
complete ones, and every unit is computed the same way whoever computes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.apply.inputs import open_genome, resolve_genome
from pipeline.apply.variants.options import CATALOGUE_BATCH_SIZE, CatalogueOptions
from pipeline.apply.variants.semantics import Semantics, model_identity, select_targets
from pipeline.core.encoding import base_codes, one_hot
from pipeline.core.genome import Genome
from pipeline.core.intervals import Interval, merge, parse_interval, read_bed
from pipeline.core.progress import Share, progress_bar
from pipeline.core.runtime import Launch, exact_float32, parse_shard
from pipeline.core.urls import CATALOGUE_REASON, refuse_url
from pipeline.errors import SpecError, UserError
from pipeline.ism import mask_effects
from pipeline.models import load_checkpoint
from pipeline.store.catalogue import (
    N_CODE,
    NOT_CATALOGUED,
    Catalogue,
    CatalogueMeta,
    Contig,
    create_or_open_catalogue,
    recorded_batch_size,
)
from pipeline.store.tiles import (
    ALTS,
    block_positions,
    default_stride,
    tile_first,
    unit_positions,
)


def _intervals(
    genome: Genome, regions: Iterable[str], bed: str | None, chroms: Iterable[str], all_contigs: bool
) -> list[Interval]:
    try:
        wanted = [parse_interval(r, "--region") for r in regions]
    except SpecError as exc:
        raise UserError(str(exc)) from None
    if bed is not None:
        wanted += read_bed(bed)
    names = list(genome.chrom_lengths) if all_contigs else list(chroms)
    wanted += [Interval(c, 0, genome.length(c)) if c in genome else Interval(c, 0, 0) for c in names]
    if not wanted:
        raise UserError("say what to catalogue: --region chr:start-end, --bed FILE, --chroms chr8,chr9 or --all")
    return wanted


def plan_contigs(
    genome: Genome, seq_len: int, *, regions: Iterable[str] = (), bed: str | None = None,
    chroms: Iterable[str] = (), all_contigs: bool = False,
) -> list[Contig]:  # fmt: skip
    """The contigs and merged regions to catalogue, in the genome's order.

    Raises
    ------
    UserError
        A contig the genome does not have (the other spelling is suggested), a region past a contig's
        end, or a named contig shorter than the window (``--all`` leaves those out instead).
    """
    by_contig: dict[str, list[Interval]] = {}
    for iv in _intervals(genome, regions, bed, chroms, all_contigs):
        if iv.chrom not in genome:
            other = genome.suggest(iv.chrom)
            hint = f" (it has {other!r})" if other else ""
            raise UserError(f"contig {iv.chrom!r} is not in the genome{hint}")
        n = genome.length(iv.chrom)
        if iv.end > n:
            raise UserError(f"region {iv.chrom}:{iv.start + 1}-{iv.end} runs past the end of {iv.chrom} ({n} bp)")
        if n < seq_len:
            if all_contigs and not (regions or bed or chroms):
                continue
            raise UserError(f"contig {iv.chrom} ({n} bp) is shorter than the model's window ({seq_len} bp)")
        by_contig.setdefault(iv.chrom, []).append(iv)
    return [
        Contig(name, genome.length(name), tuple((m.start, m.end) for m in merge(by_contig[name]) if m.end > m.start))
        for name in genome.chrom_lengths
        if name in by_contig
    ]


@dataclass
class CatalogueSummary:
    """What :func:`build_catalogue` did."""

    out: str
    n_units: int = 0
    n_before: int = 0
    """Units already complete when this process started."""
    n_computed: int = 0
    n_positions: int = 0
    n_at_n: int = 0
    n_windows: int = 0
    seconds: float = 0.0
    remaining: int = 0
    """Units of the plan still not complete when this process finished (other shards)."""
    owners: list[str] = field(default_factory=list)
    """The shards (``I/N``, with the torchrun rank where there are several) that own those units."""

    def line(self) -> str:
        """One line for the command line."""
        rate = f" ({self.n_positions / self.seconds:,.0f} positions/s)" if self.seconds > 0 and self.n_positions else ""
        owned = f", owned by shard{'s' * (len(self.owners) > 1)} {', '.join(self.owners)}" if self.owners else ""
        one = self.remaining == 1
        left = (
            f"; {self.remaining} unit{'' if one else 's'} of {self.n_units} remain{'s' if one else ''}{owned} "
            "(running, or rerun them)"
            if self.remaining
            else "; the catalogue is complete"
        )
        return (
            f"catalogued {self.n_positions:,} positions ({self.n_at_n:,} N) in {self.n_computed} units, "
            f"{self.n_windows} windows, {self.seconds:.1f}s{rate}; {self.n_before} of {self.n_units} units were "
            f"already complete{left}; {self.out}"
        )


class _UnitComputer:
    """Computes one unit's arrays: its tiles' windows through the multiplexer, in batches."""

    def __init__(self, model: torch.nn.Module, genome: Genome, meta: CatalogueMeta, selection: np.ndarray,
                 device: torch.device, batch_size: int) -> None:  # fmt: skip
        self.model, self.genome, self.meta, self.device, self.batch_size = model, genome, meta, device, batch_size
        self.selection = torch.as_tensor(selection, device=device)
        self.n_windows = 0

    def wanted(self, contig: Contig, start: int, stop: int) -> np.ndarray:
        """Which positions of ``[start, stop)`` lie in the contig's regions, ``[stop - start]`` bool."""
        mask = np.zeros(stop - start, dtype=bool)
        for a, b in contig.regions:
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                mask[lo - start : hi - start] = True
        return mask

    @torch.no_grad()
    def __call__(
        self, contig: Contig, start: int, stop: int, done: Callable[[int], None] | None = None
    ) -> dict[str, np.ndarray]:
        """The arrays of positions ``[start, stop)`` of ``contig`` (a whole unit); ``done(n)`` is told of
        every ``n`` positions computed, batch by batch (a progress bar)."""
        n, T, S = stop - start, len(self.selection), self.meta.stride
        codes = base_codes(self.genome.fetch(contig.name, start, stop).upper())
        wanted = self.wanted(contig, start, stop)
        out: dict[str, np.ndarray] = {
            "ref": np.where(wanted, codes, NOT_CATALOGUED).astype(np.uint8),
            "effects": np.full((n, 3, T), np.nan, dtype=np.float16),
            "max_abs": np.full((n, 3), np.nan, dtype=np.float16),
            "top_target": np.full((n, 3), -1, dtype=np.int16),
        }
        scored = wanted & (codes < N_CODE)
        tiles = sorted({(start + int(i)) // S for i in np.flatnonzero(scored)})
        for b in range(0, len(tiles), self.batch_size):
            n = self._batch(contig, tiles[b : b + self.batch_size], start, stop, scored, codes, out)
            if done is not None:
                done(n)
        return out

    def _batch(self, contig: Contig, tiles: list[int], start: int, stop: int, scored: np.ndarray, codes: np.ndarray,
               out: dict[str, np.ndarray]) -> int:  # fmt: skip
        """Compute the positions of ``tiles`` into ``out``; how many positions they were."""
        S, L, name = self.meta.stride, self.meta.seq_len, contig.name
        n_done = 0
        firsts = [tile_first(k * S, contig.length, L, S) for k in tiles]
        X = torch.from_numpy(np.stack([one_hot(self.genome.fetch(name, f - 1, f - 1 + L)) for f in firsts]))
        X = X.to(self.device).float()
        y = mask_effects(self.model(X).float(), X)  # [B, F, 4, L]
        self.n_windows += len(tiles)
        for b, (k, first) in enumerate(zip(tiles, firsts)):
            lo, hi = max(k * S, start), min((k + 1) * S, stop)
            rows = np.flatnonzero(scored[lo - start : hi - start]) + (lo - start)  # unit-relative
            if not len(rows):
                continue
            n_done += len(rows)
            js = torch.as_tensor(rows + start + 1 - first, device=self.device)  # window indices
            alts = torch.as_tensor(ALTS[codes[rows]], device=self.device)  # [n, 3]
            yt = y[b][:, :, js].permute(2, 1, 0)  # [n, 4, F]
            g = torch.gather(yt, 1, alts[:, :, None].expand(-1, -1, yt.shape[-1]))  # [n, 3, F]
            magnitude, top = g.abs().max(dim=-1)
            out["effects"][rows] = g[:, :, self.selection].cpu().numpy().astype(np.float16)
            out["max_abs"][rows] = magnitude.cpu().numpy().astype(np.float16)
            top = torch.where(magnitude > 0, top, -1)  # every effect 0 (or NaN): no top target
            out["top_target"][rows] = top.cpu().numpy().astype(np.int16)
        return n_done


def _meta(checkpoint: str, meta: dict[str, Any], contigs: list[Contig], names: list[str], selection: np.ndarray,
          stride: int, genome_path: str, fingerprint: dict[str, Any]) -> CatalogueMeta:  # fmt: skip
    L = int(meta["seq_len"])
    identity = model_identity(checkpoint, meta)
    semantics = Semantics(str(meta["target_kind"]), "catalogue", "forward", identity,
                          {"path": str(Path(genome_path).resolve()), "fingerprint": fingerprint})  # fmt: skip
    selected = [names[k] for k in selection]
    T = len(selected)
    return CatalogueMeta(
        L, stride, unit_positions(stride, T), block_positions(stride, T), selected, names, contigs,
        {k: v for k, v in identity.items() if k != "checkpoint"}, fingerprint,
        {"fields": vars(semantics), "meaning": semantics.as_dict()},
    )  # fmt: skip


@exact_float32()
def build_catalogue(
    checkpoint: str, out: str, options: CatalogueOptions | None = None, *, progress: bool = True
) -> CatalogueSummary:
    """Catalogue every SNV of the requested regions into the store ``out`` (resumable).

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt``.
    out : str
        The catalogue (``.zarr``); an existing one made with the same plan, model and genome is resumed.
    options : CatalogueOptions, optional
        What to catalogue (``regions``, ``bed``, ``chroms``, ``all_contigs``), the targets, the stride
        (default :func:`~pipeline.store.tiles.default_stride`), the genome, the shard, ...
        (:class:`~pipeline.apply.variants.options.CatalogueOptions`). Its ``batch_size`` (windows per
        pass) is part of the catalogue's identity (a batched pass's float32 sums depend on the batch's
        size): left out, it is the catalogue's own when resuming, else
        :data:`~pipeline.apply.variants.options.CATALOGUE_BATCH_SIZE`, and a resume with another one
        is refused.
    progress : bool
        Show a progress bar.

    Returns
    -------
    CatalogueSummary
    """
    t0 = time.perf_counter()
    refuse_url(out, "--out", CATALOGUE_REASON)
    opts = CatalogueOptions() if options is None else options
    out_path = Path(out)
    if not out_path.name.endswith(".zarr"):
        raise UserError(f"the catalogue is a Zarr store: --out must end in .zarr, got {out_path.name!r}")
    launch = Launch.from_env(parse_shard(opts.shard))
    if opts.overwrite and launch.parts > 1:
        raise UserError("--overwrite with several shards or ranks would race; remove the catalogue first")
    dev = launch.device(opts.device)
    model, meta = load_checkpoint(checkpoint, dev)
    L = int(meta["seq_len"])
    S = default_stride(L) if opts.stride is None else opts.stride
    if not 1 <= S <= L:
        raise UserError(f"--stride must lie in 1..{L} (the model's window), got {S}")
    genome_path = resolve_genome(opts.genome, meta.get("genome"), "the checkpoint")
    if genome_path is None:
        raise UserError("no genome: pass --genome FASTA")
    g = open_genome(genome_path, meta.get("genome_fingerprint"))
    o = opts
    chroms = [c for c in (o.chroms or "").split(",") if c]
    contigs = plan_contigs(g, L, regions=o.regions, bed=o.bed, chroms=chroms, all_contigs=o.all_contigs)
    names = list(meta["target_names"])
    selection = select_targets(names, opts.targets)
    batch_size = opts.batch_size or (None if opts.overwrite else recorded_batch_size(out_path)) or CATALOGUE_BATCH_SIZE
    plan = replace(_meta(checkpoint, meta, contigs, names, selection, S, genome_path, g.fingerprint()),
                   batch_size=batch_size)  # fmt: skip
    cat = create_or_open_catalogue(out_path, plan, overwrite=opts.overwrite)
    return _run(cat, _UnitComputer(model, g, plan, selection, dev, batch_size), launch, progress, t0)


def _run(cat: Catalogue, compute: _UnitComputer, launch: Launch, progress: bool, t0: float) -> CatalogueSummary:
    units = cat.meta.work_units()
    done = cat.complete_work_units()
    summary = CatalogueSummary(out=cat.path, n_units=len(units), n_before=int(done.sum()))
    mine = [(k, u) for i, (k, u) in enumerate(units) if launch.owns(i) and not done[i]]
    wanted = [_wanted(cat.meta.contigs[k], *cat.meta.unit_range(k, u)) for k, u in mine]
    with progress_bar(desc="catalogue", unit="position", total=sum(wanted), enabled=progress) as bar:
        for (k, u), n_wanted in zip(mine, wanted):
            contig = cat.meta.contigs[k]
            start, stop = cat.meta.unit_range(k, u)
            share = Share(bar, n_wanted, n_wanted)  # moves batch by batch; N positions at the unit's end
            data = compute(contig, start, stop, share)
            share.finish()
            cat.write_unit(k, u, data)
            summary.n_computed += 1
            summary.n_positions += int((data["ref"] != NOT_CATALOGUED).sum())
            summary.n_at_n += int((data["ref"] == N_CODE).sum())
    summary.n_windows = compute.n_windows
    summary.seconds = time.perf_counter() - t0
    left = np.flatnonzero(~cat.complete_work_units())  # read again: other shards' units too
    summary.remaining = len(left)
    summary.owners = _owners(left, launch)
    return summary


def _wanted(contig: Contig, start: int, stop: int) -> int:
    """How many positions of ``[start, stop)`` lie in the contig's regions (what the bar counts)."""
    return sum(max(0, min(b, stop) - max(a, start)) for a, b in contig.regions)


def _owners(units: np.ndarray, launch: Launch) -> list[str]:
    """The shards (``I/N``, ``I/N rank R`` under torchrun) that own work units ``units``."""
    parts = sorted({int(i) % launch.parts for i in units})
    rank = [f" rank {p % launch.world}" if launch.world > 1 else "" for p in parts]
    return [f"{p // launch.world}/{launch.shard[1]}{r}" for p, r in zip(parts, rank)]


__all__ = ["CatalogueOptions", "CatalogueSummary", "build_catalogue", "plan_contigs"]
