"""Stage 1, ``distill``: sample windows, run ISM with the base model, write the Zarr store.

Main flow (:func:`distill`): load the spec's genome and base model -> create or reopen the store
(refusing one made from another spec; under ``torchrun`` rank 0 creates it and the others open it
once it exists) -> for each split, for each write unit this process owns (``u % parts == part`` over
``torchrun`` ranks and ``--shard I/N``, :class:`~pipeline.core.runtime.Launch`) that is not complete
yet: prepare, compute and write it (:mod:`pipeline.distill.units`). A rerun skips complete units, so
an interrupted run resumes where it stopped, and the result does not depend on how the work was split.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from pipeline.core.commands import DistillOptions
from pipeline.core.genome import Genome
from pipeline.core.intervals import Interval
from pipeline.core.progress import per_second, plural
from pipeline.core.runtime import Launch, exact_float32, parse_shard, process_group
from pipeline.core.spec import Spec
from pipeline.distill.check import check_splits, require_valid_split
from pipeline.distill.sampling import WindowSampler, split_samplers, split_segments
from pipeline.distill.units import Compute, Unit, UnitWriter, run_units
from pipeline.errors import UserError, check_choice
from pipeline.ism import ENGINE_CHOICES, choose_engine, run_ism
from pipeline.models import BaseModel, load_base
from pipeline.store import Store, create_or_open_store, open_store, wait_for_store, writer_lease
from pipeline.store.store import store_exists


@dataclass
class DistillSummary:
    """What a distill run did."""

    store: str
    engine: str = "naive"
    rank: int = 0
    world: int = 1
    computed_units: int = 0
    computed_samples: int = 0
    skipped_units: int = 0
    seconds: float = 0.0
    per_split: dict[str, dict[str, int]] = field(default_factory=dict)
    total: dict[str, int] | None = None
    """Counts summed over all torchrun ranks (set on every rank when ``world > 1``)."""

    def line(self) -> str:
        """One line for the command line (this process's counts and rate)."""
        rate = per_second(self.computed_samples, self.seconds, "sample")
        who = f"rank {self.rank}/{self.world}: " if self.world > 1 else ""
        return (
            f"{who}distilled {plural(self.computed_samples, 'sample')} ({plural(self.computed_units, 'unit')}) in "
            f"{self.seconds:.1f}s ({rate}, {self.engine} ISM); {_already(self.skipped_units)}; store {self.store}"
        )

    def total_line(self) -> str:
        """One line for all ranks together (rank 0 prints it under torchrun)."""
        t = self.total or {}
        return (
            f"all {self.world} ranks: distilled {plural(t.get('computed_samples', 0), 'sample')} "
            f"({plural(t.get('computed_units', 0), 'unit')}); {_already(t.get('skipped_units', 0))}; "
            f"store {self.store}"
        )


def _already(units: int) -> str:
    return f"{plural(units, 'unit')} {'was' if units == 1 else 'were'} already complete"


def distill(
    spec: Spec,
    options: DistillOptions | None = None,
    *,
    progress: bool = True,
    notify: Callable[[str], None] | None = None,
    launch: Launch | None = None,
) -> DistillSummary:
    """Write (or resume) the store of ``spec``.

    Parameters
    ----------
    spec : Spec
        The dataset spec.
    options : DistillOptions, optional
        Where the store goes, which splits, device, engine, ``--shard``, batch size, ``--overwrite``,
        overlap, ``--create-only`` and ``--allow-no-valid`` (:class:`~pipeline.core.commands.DistillOptions`;
        default: all defaults). ``shard`` ``I/N``: this process writes the units ``u`` with
        ``u % N == I`` (combined with ``torchrun`` ranks: ``u % (N · world) == I · world + rank``);
        ``overwrite`` discards an existing store first (not with ``N > 1`` shards); ``create_only``
        creates (or checks) the store and stops, to run once before ``--shard`` jobs on an object
        store, where creation cannot be made atomic.
    progress : bool
        Show a progress bar of the windows computed (their rate and the ETA).
    notify : callable, optional
        Receives one-line notices (e.g. falling back to the naive engine); default: stderr.
    launch : Launch, optional
        Rank, world size and shard (default: from the ``torchrun`` environment and ``options.shard``).

    Every split of the spec is checked before anything is written (:func:`~pipeline.distill.check.check_splits`).
    """
    options = options or DistillOptions()
    check_choice("ISM engine", options.engine, ENGINE_CHOICES)
    require_valid_split(spec, options.allow_no_valid)
    shard = parse_shard(options.shard)
    launch = launch or Launch.from_env(shard)
    if options.overwrite and launch.shard[1] > 1:
        raise UserError("--overwrite cannot be combined with --shard: remove the store once, then start the shards")
    wanted = list(options.splits) or list(spec.splits)
    for split in wanted:
        if split not in spec.splits:
            raise UserError(f"spec {spec.name!r} has no split {split!r} (it has {', '.join(spec.splits)})")
    notify = notify or (lambda m: print(m, file=sys.stderr))
    path = options.store_path if options.store_path is not None else str(spec.store_path())
    dev = launch.device(options.device)
    with exact_float32(), process_group(launch, "gloo") as grouped:
        genome = Genome(spec.genome_path)
        segments = split_segments(spec, genome)  # once: the samplers and the added-split check share them
        samplers = split_samplers(spec, genome, segments)  # once: checked, then sampled from
        check_splits(spec, genome, samplers=samplers)
        base = load_base(spec, dev)
        notes: list[str] = []  # said once the store is open, so a refused store gives just its error
        engine = choose_engine(base.module, spec.seq_len, options.engine, dev, notes.append)
        if spec.precision == "bf16" and dev.type != "cuda":
            notes.append(f"note: precision bf16 on {dev.type} runs, but is meant for CUDA (it is slow on a CPU)")
        if not options.overwrite:
            check_added_splits(path, spec, genome, segments)
        store = _open_store_for(path, spec, base, genome, options.overwrite, launch, grouped)
        summary = DistillSummary(store=path, engine=engine, rank=launch.rank, world=launch.world)
        if options.create_only:
            return summary
        if launch.main:
            for note in notes:
                notify(note)
        start_time = time.perf_counter()
        compute = _compute_fn(spec, base, engine, dev, options.batch_size or spec.ism_batch_size)
        with writer_lease(store):
            for split in wanted:
                _distill_split(
                    store, split, samplers[split], compute, launch, summary, overlap=options.overlap, progress=progress
                )
        summary.seconds = time.perf_counter() - start_time
        if grouped:
            _reduce_summary(summary)
    return summary


def _compute_fn(spec: Spec, base: BaseModel, engine: str, dev: torch.device, batch: int) -> Compute:
    """The unit computation: all effects of a unit's windows, cast to the store's dtype on the device."""
    out_dtype = torch.float16 if spec.storage.dtype == "float16" else torch.float32

    def compute(X: np.ndarray, progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return run_ism(
            base.module,
            torch.from_numpy(X),
            engine=engine,
            target=spec.target,
            batch_size=batch,
            device=dev,
            progress=progress,
            precision=spec.precision,
            out_dtype=out_dtype,
        )

    return compute


def _distill_split(
    store: Store,
    split: str,
    sampler: WindowSampler,
    compute: Compute,
    launch: Launch,
    summary: DistillSummary,
    *,
    overlap: bool,
    progress: bool,
) -> None:
    """Compute and write this process's incomplete units of ``split``, counting them in ``summary``.

    The units are chosen with arrays the size of the completion markers and produced one at a time,
    so memory does not grow with the number of units.
    """
    meta = store.split_meta(split)
    mine = launch.owned(meta.n_units)
    todo = np.flatnonzero(mine & ~store.complete_units(split))
    summary.skipped_units += int(mine.sum()) - todo.size
    short = meta.n_units * meta.unit_samples - meta.n_samples  # samples the last unit lacks
    samples = todo.size * meta.unit_samples - (short if todo.size and todo[-1] == meta.n_units - 1 else 0)
    units = (Unit(int(u), *meta.unit_range(int(u))) for u in todo)
    label = f"distill {split}" + (f" [rank {launch.rank}]" if launch.world > 1 else "")
    write = UnitWriter(store, split)
    for n in run_units(units, samples, sampler, compute, write, overlap=overlap, progress=progress, label=label):
        summary.computed_units += 1
        summary.computed_samples += n
    summary.per_split[split] = {"units": int(mine.sum()), "computed": todo.size}


def check_added_splits(
    path: str, spec: Spec, genome: Genome, segments: Mapping[str, list[Interval]] | None = None
) -> None:
    """Refuse adding a split to an existing store when that would move the windows of a split it has:
    a new split's intervals on a chromosome another split takes whole cut into that split's segments.

    ``segments`` are ``spec``'s (:func:`~pipeline.distill.sampling.split_segments`; computed when not given).
    """
    if not store_exists(path):
        return
    try:
        old_spec = open_store(path).spec()
    except UserError:
        return  # not a readable store: create_or_open_store says what is wrong
    if set(spec.splits) <= set(old_spec.splits):
        return
    before = split_segments(old_spec, genome)
    after = segments if segments is not None else split_segments(spec, genome)
    for name in old_spec.splits:
        if name in after and before[name] != after[name]:
            added = ", ".join(sorted(set(spec.splits) - set(old_spec.splits)))
            raise UserError(
                f"adding split {added} to store {path!r} would move the windows of split {name!r} (its intervals "
                f"cut into {name!r}'s chromosomes); distill the new spec into a new store"
            )


def _open_store_for(
    path: str,
    spec: Spec,
    base: BaseModel,
    genome: Genome,
    overwrite: bool,
    launch: Launch,
    grouped: bool,
) -> Store:
    """Rank 0 creates or reopens the store; under torchrun the others open it once rank 0 is done (only
    the process that creates or checks the store reads the genome's full digest)."""

    def create_or_open() -> Store:
        return create_or_open_store(
            path,
            spec,
            base_identity=base.identity,
            genome_fingerprint=genome.fingerprint(),
            n_targets=base.n_targets,
            target_names=base.target_names,
            overwrite=overwrite,
        )

    if not grouped:
        return create_or_open()
    failure: list[UserError | None] = [None]
    store = None
    if launch.main:
        try:
            store = create_or_open()
        except UserError as exc:
            failure = [exc]
    dist.broadcast_object_list(failure, src=0)  # every rank raises rank 0's error, of its own type
    if failure[0] is not None:
        raise failure[0]
    return store if store is not None else wait_for_store(path, spec)


def _reduce_summary(summary: DistillSummary) -> None:
    counts = torch.tensor([summary.computed_units, summary.computed_samples, summary.skipped_units], dtype=torch.long)
    dist.all_reduce(counts)
    summary.total = {
        "computed_units": int(counts[0]),
        "computed_samples": int(counts[1]),
        "skipped_units": int(counts[2]),
    }
    dist.barrier()
