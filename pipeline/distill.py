"""Stage 1, ``distill``: sample windows, run ISM with the base model, write the Zarr store.

Main flow (:func:`distill`): load the spec's genome and base model -> create or reopen the store
(refusing one made from another spec; under ``torchrun`` rank 0 creates it and the others open it
once it exists) -> for each split, for each write unit this process owns (``u % parts == part`` over
``torchrun`` ranks and ``--shard I/N``) that is not complete yet: sample its windows (each from its
own seeded generator) and one-hot encode them on a CPU thread, compute all ``3·L`` variant effects on
the device (:func:`pipeline.ism.run_ism`), and compress/write the unit on writer threads, marking it
complete last. Queues are bounded (two units ahead, two behind) so memory stays flat. A rerun skips
complete units, so an interrupted run resumes where it stopped, and the result does not depend on how
the work was split.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from pipeline.device import exact_float32, resolve_device
from pipeline.encoding import one_hot
from pipeline.errors import UserError
from pipeline.genome import Genome
from pipeline.ism import ENGINES, choose_engine, run_ism
from pipeline.models.registry import base_identity, build_base, probe_outputs, target_names_for
from pipeline.sampling import WindowSampler
from pipeline.spec import Spec
from pipeline.store import Store, create_or_open_store, wait_for_store


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
        rate = self.computed_samples / self.seconds if self.seconds > 0 else 0.0
        who = f"rank {self.rank}/{self.world}: " if self.world > 1 else ""
        return (
            f"{who}distilled {self.computed_samples} samples ({self.computed_units} units) in "
            f"{self.seconds:.1f}s ({rate:.2f} samples/s, {self.engine} ISM); {self.skipped_units} units were already "
            f"complete; store {self.store}"
        )

    def total_line(self) -> str:
        """One line for all ranks together (rank 0 prints it under torchrun)."""
        t = self.total or {}
        return (
            f"all {self.world} ranks: distilled {t.get('computed_samples', 0)} samples "
            f"({t.get('computed_units', 0)} units); {t.get('skipped_units', 0)} units were already complete; "
            f"store {self.store}"
        )


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse ``I/N`` (0-based shard ``I`` of ``N``)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r} must look like I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


@dataclass(frozen=True)
class Launch:
    """This process's place among ``torchrun`` workers (``rank``/``world``) and ``--shard I/N``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    shard: tuple[int, int] = (0, 1)

    @classmethod
    def from_env(cls, shard: tuple[int, int] = (0, 1)) -> Launch:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by ``torchrun``."""
        try:
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            local = int(os.environ.get("LOCAL_RANK", 0))
        except ValueError:
            raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
        if world < 1 or not 0 <= rank < world:
            raise UserError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
        return cls(rank, world, local, shard)

    @property
    def parts(self) -> int:
        return self.shard[1] * self.world

    @property
    def part(self) -> int:
        return self.shard[0] * self.world + self.rank

    def owns(self, unit: int) -> bool:
        """Whether this process writes write unit ``unit``."""
        return unit % self.parts == self.part


def base_kwargs(spec: Spec) -> dict[str, Any]:
    """The spec's base-model arguments, plus ``seq_len`` when the class takes it and it is not given."""
    import inspect

    from pipeline.models.registry import BASE_MODELS, import_object

    kwargs = dict(spec.base.kwargs)
    cls = BASE_MODELS.get(spec.base_model) or import_object(spec.base_model)
    if "seq_len" in inspect.signature(cls).parameters and "seq_len" not in kwargs:
        kwargs["seq_len"] = spec.seq_len
    return kwargs


def load_base(spec: Spec, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], int, list[str]]:
    """Build the spec's base model on ``device``; returns model, identity, ``F`` and target names."""
    weights = spec.weights_path
    kwargs = base_kwargs(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # a model without a weights file is initialised from the spec's seed
        model = build_base(spec.base_model, weights, **kwargs).to(device)
    identity = base_identity(spec.base_model, weights, kwargs, model)
    n_targets = probe_outputs(model, spec.seq_len)
    names = target_names_for(model, n_targets, spec.resolve(spec.base.target_names))
    return model, identity, n_targets, names


def distill(
    spec: Spec,
    *,
    store_path: str | None = None,
    splits: list[str] | None = None,
    device: str | None = None,
    engine: str = "auto",
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
    notify: Callable[[str], None] | None = None,
    overlap: bool = True,
    launch: Launch | None = None,
    create_only: bool = False,
) -> DistillSummary:
    """Write (or resume) the store of ``spec``.

    Parameters
    ----------
    spec : Spec
        The dataset spec.
    store_path : str, optional
        Defaults to :meth:`Spec.store_path`.
    splits : list of str, optional
        Only these splits (default: all of the spec's).
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default). Under ``torchrun``, ``cuda``/``auto``
        means ``cuda:LOCAL_RANK``.
    engine : str
        ``auto`` (default: the fast engine when it supports the base model, else naive, said once),
        ``fast`` (an error for unsupported models) or ``naive``.
    shard : (int, int)
        ``(I, N)``: this process writes the units ``u`` with ``u % N == I`` (combined with
        ``torchrun`` ranks: ``u % (N · world) == I · world + rank``).
    overwrite : bool
        Discard an existing store at the path first (not with ``N > 1`` shards).
    batch_size : int, optional
        Variants per batch (default: the spec's ``ism_batch_size``).
    progress : bool
        Show a progress bar (samples/s and ETA).
    notify : callable, optional
        Receives one-line notices (e.g. falling back to the naive engine); default: stderr.
    overlap : bool
        Prepare windows and write units on background threads while the device computes.
    launch : Launch, optional
        Rank and world size (default: from the ``torchrun`` environment).
    create_only : bool
        Create (or check) the store and stop: run once before starting ``--shard`` jobs on an object
        store, where creation cannot be made atomic.
    """
    if engine not in ENGINES + ("auto",):
        raise UserError(f"unknown ISM engine {engine!r} (available: auto, {', '.join(ENGINES)})")
    launch = launch or Launch.from_env(shard)
    if overwrite and launch.shard[1] > 1:
        raise UserError("--overwrite cannot be combined with --shard: remove the store once, then start the shards")
    notify = notify or (lambda m: print(m, file=sys.stderr))
    dev = _device_for(device, launch)
    exact_float32()
    wanted = list(spec.splits) if not splits else list(splits)
    for split in wanted:
        if split not in spec.splits:
            raise UserError(f"spec {spec.name!r} has no split {split!r} (it has {', '.join(spec.splits)})")
    genome = Genome(spec.genome_path)
    samplers = {split: WindowSampler(genome, spec, split) for split in wanted}
    model, identity, n_targets, names = load_base(spec, dev)
    notes: list[str] = []  # said once the store is open, so a refused store gives just its error
    engine = choose_engine(model, spec.seq_len, engine, dev, notes.append)
    if spec.precision == "bf16" and dev.type != "cuda":
        notes.append(f"note: precision bf16 on {dev.type} runs, but is meant for CUDA (it is slow on a CPU)")
    path = str(store_path) if store_path is not None else str(spec.store_path())
    group = _process_group(launch)
    try:
        store = _open_store_for(path, spec, identity, n_targets, names, overwrite, launch, group)
        if create_only:
            return DistillSummary(store=path, engine=engine, rank=launch.rank, world=launch.world)
        if launch.rank == 0:
            for note in notes:
                notify(note)
        summary = DistillSummary(store=path, engine=engine, rank=launch.rank, world=launch.world)
        start_time = time.perf_counter()
        batch = batch_size or spec.ism_batch_size
        out_dtype = torch.float16 if spec.storage.dtype == "float16" else torch.float32

        def compute(X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return run_ism(
                model,
                torch.from_numpy(X),
                engine=engine,
                target=spec.target,
                batch_size=batch,
                device=dev,
                precision=spec.precision,
                out_dtype=out_dtype,
            )

        for split in wanted:
            complete = store.complete_units(split)
            mine = [(u, a, b) for u, a, b in store.iter_units(split) if launch.owns(u)]
            todo = [(u, a, b) for u, a, b in mine if not complete[u]]
            summary.skipped_units += len(mine) - len(todo)
            _run_units(
                store,
                split,
                todo,
                samplers[split],
                compute,
                overlap=overlap,
                summary=summary,
                progress=progress,
                label=f"distill {split}" + (f" [rank {launch.rank}]" if launch.world > 1 else ""),
            )
            summary.per_split[split] = {"units": len(mine), "computed": len(todo)}
        summary.seconds = time.perf_counter() - start_time
        if group is not None:
            _reduce_summary(summary)
    finally:
        if group is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
    return summary


def _device_for(device: str | None, launch: Launch) -> torch.device:
    if launch.world > 1 and (device in (None, "auto", "cuda")) and torch.cuda.is_available():
        return resolve_device(f"cuda:{launch.local_rank % torch.cuda.device_count()}")
    return resolve_device(device)


def _process_group(launch: Launch) -> object | None:
    """A gloo group for coordination (store creation, the final summary) when run under torchrun."""
    if launch.world == 1:
        return None
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        return dist.group.WORLD
    return None


def _open_store_for(
    path: str,
    spec: Spec,
    identity: dict[str, Any],
    n_targets: int,
    names: list[str],
    overwrite: bool,
    launch: Launch,
    group: object | None,
) -> Store:
    """Rank 0 creates or reopens the store; under torchrun the others open it once rank 0 is done."""
    if group is None:
        return create_or_open_store(
            path, spec, base_identity=identity, n_targets=n_targets, target_names=names, overwrite=overwrite
        )
    import torch.distributed as dist

    message: list[str | None] = [None]
    store = None
    if launch.rank == 0:
        try:
            store = create_or_open_store(
                path, spec, base_identity=identity, n_targets=n_targets, target_names=names, overwrite=overwrite
            )
        except UserError as exc:
            message = [str(exc)]
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise UserError(message[0])
    return store if store is not None else wait_for_store(path, spec)


def _reduce_summary(summary: DistillSummary) -> None:
    import torch.distributed as dist

    counts = torch.tensor([summary.computed_units, summary.computed_samples, summary.skipped_units], dtype=torch.long)
    dist.all_reduce(counts)
    summary.total = {
        "computed_units": int(counts[0]),
        "computed_samples": int(counts[1]),
        "skipped_units": int(counts[2]),
    }
    dist.barrier()


def _prepare(sampler: WindowSampler, start: int, stop: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    windows = [sampler(k) for k in range(start, stop)]
    X = np.stack([one_hot(w.seq) for w in windows])
    return X, [w.chrom for w in windows], np.array([w.center for w in windows], dtype=np.int64)


def _run_units(
    store: Store,
    split: str,
    todo: list[tuple[int, int, int]],
    sampler: WindowSampler,
    compute: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]],
    *,
    overlap: bool,
    summary: DistillSummary,
    progress: bool,
    label: str,
) -> None:
    """Prepare, compute and write ``todo`` units; with ``overlap``, preparation and writing run on
    background threads (bounded: two units prepared ahead, at most two waiting to be written)."""
    from tqdm import tqdm

    n_todo = sum(b - a for _, a, b in todo)
    bar = tqdm(total=n_todo, desc=label, unit="sample", disable=not progress or not n_todo, dynamic_ncols=True)

    def write(
        unit: int, X: np.ndarray, chrom: list[str], center: np.ndarray, y: torch.Tensor, ref: torch.Tensor
    ) -> int:
        try:
            store.write_unit(
                split, unit, reference=X, ref_pred=ref.numpy(), targets=y.numpy(), chrom=chrom, center=center
            )
        except OSError as exc:  # disk full, permission, ...: the unit stays unmarked, a rerun redoes it
            raise UserError(
                f"cannot write unit {unit} of split {split!r} to store {store.path!r}: {exc.strerror or exc}; "
                "the unit stays incomplete and a rerun of distill resumes there"
            ) from None
        return len(chrom)

    def finished(n: int) -> None:
        summary.computed_units += 1
        summary.computed_samples += n
        bar.update(n)

    try:
        if not overlap:
            for unit, start, stop in todo:
                X, chrom, center = _prepare(sampler, start, stop)
                y, ref = compute(X)
                finished(write(unit, X, chrom, center, y, ref))
            return
        with (
            ThreadPoolExecutor(1, thread_name_prefix="prepare") as prep,
            ThreadPoolExecutor(2, thread_name_prefix="write") as writers,
        ):
            ahead: deque[tuple[int, Future]] = deque()
            behind: deque[Future] = deque()
            queue = iter(todo)

            def refill() -> None:
                while len(ahead) < 2:
                    item = next(queue, None)
                    if item is None:
                        return
                    ahead.append((item[0], prep.submit(_prepare, sampler, item[1], item[2])))

            refill()
            while ahead:
                unit, prepared = ahead.popleft()
                X, chrom, center = prepared.result()
                refill()
                y, ref = compute(X)
                while len(behind) >= 2 or (behind and behind[0].done()):
                    finished(behind.popleft().result())
                behind.append(writers.submit(write, unit, X, chrom, center, y, ref))
            while behind:
                finished(behind.popleft().result())
    finally:
        bar.close()
