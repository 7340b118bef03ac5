"""Stage 1, ``distill``: sample windows, run ISM with the base model, write the Zarr store.

Main flow (:func:`distill`): load the spec's genome and base model -> create or reopen the store
(refusing one made from another spec) -> for each split, for each write unit this process owns and
that is not complete yet: sample its windows (each from its own seeded generator), one-hot encode
them, compute all ``3·L`` variant effects with :func:`pipeline.ism.naive_ism`, write the unit and
mark it complete. A rerun skips complete units, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
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
from pipeline.store import Store, create_or_open_store


@dataclass
class DistillSummary:
    """What a distill run did."""

    store: str
    engine: str = "naive"
    computed_units: int = 0
    computed_samples: int = 0
    skipped_units: int = 0
    seconds: float = 0.0
    per_split: dict[str, dict[str, int]] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.computed_samples / self.seconds if self.seconds > 0 else 0.0
        return (
            f"distilled {self.computed_samples} samples ({self.computed_units} units) in "
            f"{self.seconds:.1f}s ({rate:.2f} samples/s, {self.engine} ISM); {self.skipped_units} units were already "
            f"complete; store {self.store}"
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
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default).
    engine : str
        ``auto`` (default: the fast engine when it supports the base model, else naive, said once),
        ``fast`` (an error for unsupported models) or ``naive``.
    shard : (int, int)
        ``(I, N)``: this process writes the units ``u`` with ``u % N == I``.
    overwrite : bool
        Discard an existing store at the path first.
    batch_size : int, optional
        Variants per base-model pass (default: the spec's ``ism_batch_size``).
    progress : bool
        Show a progress bar.
    notify : callable, optional
        Receives one-line notices (e.g. falling back to the naive engine); default: stderr.
    """
    from tqdm import tqdm

    if engine not in ENGINES + ("auto",):
        raise UserError(f"unknown ISM engine {engine!r} (available: auto, {', '.join(ENGINES)})")
    dev = resolve_device(device)
    exact_float32()
    wanted = list(spec.splits) if not splits else list(splits)
    for split in wanted:
        if split not in spec.splits:
            raise UserError(f"spec {spec.name!r} has no split {split!r} (it has {', '.join(spec.splits)})")
    genome = Genome(spec.genome_path)
    samplers = {split: WindowSampler(genome, spec, split) for split in wanted}
    model, identity, n_targets, names = load_base(spec, dev)
    engine = choose_engine(model, spec.seq_len, engine, dev, notify or (lambda m: print(m, file=sys.stderr)))
    path = str(store_path) if store_path is not None else str(spec.store_path())
    store = create_or_open_store(
        path, spec, base_identity=identity, n_targets=n_targets, target_names=names, overwrite=overwrite
    )
    shard_i, shard_n = shard
    summary = DistillSummary(store=path, engine=engine)
    start_time = time.perf_counter()
    batch = batch_size or spec.ism_batch_size
    for split in wanted:
        complete = store.complete_units(split)
        mine = [(u, a, b) for u, a, b in store.iter_units(split) if u % shard_n == shard_i]
        todo = [(u, a, b) for u, a, b in mine if not complete[u]]
        summary.skipped_units += len(mine) - len(todo)
        n_todo = sum(b - a for _, a, b in todo)
        bar = tqdm(total=n_todo, desc=f"distill {split}", unit="sample", disable=not progress or not n_todo)
        for unit, start, stop in todo:
            _distill_unit(store, split, unit, start, stop, samplers[split], model, spec.target, batch, dev, engine)
            summary.computed_units += 1
            summary.computed_samples += stop - start
            bar.update(stop - start)
        bar.close()
        summary.per_split[split] = {"units": len(mine), "computed": len(todo)}
    summary.seconds = time.perf_counter() - start_time
    return summary


def _distill_unit(
    store: Store,
    split: str,
    unit: int,
    start: int,
    stop: int,
    sampler: WindowSampler,
    model: torch.nn.Module,
    target: str,
    batch: int,
    device: torch.device,
    engine: str,
) -> None:
    windows = [sampler(k) for k in range(start, stop)]
    X = np.stack([one_hot(w.seq) for w in windows])
    y, ref_pred = run_ism(model, torch.from_numpy(X), engine=engine, target=target, batch_size=batch, device=device)
    store.write_unit(
        split,
        unit,
        reference=X,
        ref_pred=ref_pred.numpy(),
        targets=y.numpy(),
        chrom=[w.chrom for w in windows],
        center=np.array([w.center for w in windows]),
    )
