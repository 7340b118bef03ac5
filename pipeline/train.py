"""Stage 2, ``train``: stream a store into a multiplexer; checkpoints, validation, exact resume.

Main flow (:func:`train`): open the store (trusting only its attributes for ``L``, ``F``, target
names and kind) -> build the multiplexer (synchronized BatchNorm and DistributedDataParallel under
``torchrun``; ``torch.compile`` on request) -> AdamW with warm-up + cosine schedule -> each optimizer
step takes ``grad_accum`` global micro-batches of a block-shuffled per-epoch order
(:class:`pipeline.data.RankBatchSampler`; each rank reads its contiguous part), runs the forward
under bf16 autocast on CUDA, MSE (optionally without the reference-base entries), gradient clipping
-> every ``valid_every`` steps: validation loss and mean weighted Pearson over all ranks, ``last.pt``
(always) and ``best.pt`` (lowest validation loss), written atomically by rank 0 -> ``--resume``
restores model, optimizer, scheduler, scaler, step, data position and RNG states and continues
exactly where ``last.pt`` left off.

The loss of a step is the mean over its global batch, whatever the number of ranks: each rank's
loss is the sum over its samples scaled by ``world / micro_batch``, and DDP averages gradients.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline import __version__
from pipeline.data import BlockShuffle, RankBatchSampler, StoreDataset, collate_batch
from pipeline.device import exact_float32, resolve_device
from pipeline.distributed import Dist, all_reduce_sum, broadcast_object, convert_sync_batchnorm, init, shutdown
from pipeline.errors import UserError
from pipeline.evaluate import PearsonAccumulator, nanmean
from pipeline.ism import mask_effects
from pipeline.models import build_multiplexer, read_checkpoint, save_checkpoint
from pipeline.models.registry import MULTIPLEXERS, import_object, load_weights
from pipeline.spec import TrainSpec, _to_plain, check_train_value
from pipeline.store import Store, open_store

METRIC_FIELDS = (
    "step",
    "epoch",
    "samples",
    "train_loss",
    "valid_loss",
    "valid_weighted_pearson",
    "lr",
    "elapsed_s",
    "samples_per_s",
)


def train_config(defaults: TrainSpec, **overrides: Any) -> TrainSpec:
    """``defaults`` with the non-``None`` overrides applied (each validated like the spec's keys)."""
    changes = {}
    for key, value in overrides.items():
        if value is None:
            continue
        changes[key] = dict(value) if key == "kwargs" else check_train_value("option", key, value)
    config = replace(defaults, **changes)
    if config.batch_size % config.grad_accum:
        raise UserError(f"batch size {config.batch_size} must be a multiple of grad_accum {config.grad_accum}")
    return config


@dataclass
class TrainResult:
    """Where the outputs are and the final metrics."""

    run_dir: str
    step: int
    best_valid_loss: float
    last_metrics: dict[str, Any]
    finished_before: bool = False
    """``--resume`` found the run already at ``--steps``: nothing was done."""

    @property
    def best(self) -> str:
        return str(Path(self.run_dir) / "best.pt")

    @property
    def last(self) -> str:
        return str(Path(self.run_dir) / "last.pt")


def multiplexer_kwargs(name: str, store: Store, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments: the user's, plus ``seq_len``/``n_targets`` from the store when the
    class takes them."""
    cls = MULTIPLEXERS.get(name) or import_object(name)
    params = inspect.signature(cls).parameters
    full = dict(kwargs)
    for key, value in (("seq_len", store.seq_len), ("n_targets", store.n_targets)):
        if key in params and key not in full:
            full[key] = value
        elif key in full and full[key] != value:
            raise UserError(f"multiplexer argument {key}={full[key]} does not match the store's {key}={value}")
    return full


def sample_losses(y_hat: torch.Tensor, y: torch.Tensor, X: torch.Tensor, loss_mask: bool) -> torch.Tensor:
    """Per-sample mean squared error.

    Parameters
    ----------
    y_hat, y : torch.Tensor, shape=(B, F, 4, L)
    X : torch.Tensor, shape=(B, 4, L)
        One-hot inputs (for the mask).
    loss_mask : bool
        Zero the error at reference bases and ``N`` columns (0 by definition); the mean still divides
        by ``F · 4 · L`` so the scale does not depend on the number of ``N`` columns.

    Returns
    -------
    loss : torch.Tensor, shape=(B,)
    """
    err = y_hat.float() - y
    if loss_mask:
        err = mask_effects(err, X)
    return err.pow(2).flatten(1).mean(dim=1)


def lr_factor(step: int, config: TrainSpec) -> float:
    """Learning-rate multiplier after ``step`` optimizer steps: linear warm-up, then cosine or constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _amp(config: TrainSpec, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """Autocast dtype (None: off) and whether a gradient scaler is needed."""
    mode = config.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "none"
    if mode == "fp16" and device.type != "cuda":
        raise UserError("amp fp16 needs CUDA; use bf16 or none on a CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode], mode == "fp16"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def _rng_state() -> dict[str, Any]:
    """Torch RNG states (the only randomness after initialisation: the data order has its own seeds)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    ds: StoreDataset,
    batch_size: int,
    device: torch.device,
    d: Dist,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """Mean MSE and mean weighted Pearson of ``model`` on ``ds``, over all ranks (each takes a part)."""
    was_training = model.training
    model.eval()
    acc = PearsonAccumulator(ds.n_targets)
    bounds = np.linspace(0, len(ds), d.world + 1).round().astype(int)
    mine = list(range(bounds[d.rank], bounds[d.rank + 1]))
    for i in range(0, len(mine), batch_size):
        X, y = ds.__getitems__(mine[i : i + batch_size])
        X, y = X.to(device).float(), y.to(device).float()
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            y_hat = model(X)
        acc.update(y, y_hat.float())
    for t in (acc.w, acc.sq_err):
        all_reduce_sum(t, d)
    count = all_reduce_sum(torch.tensor([acc.count], dtype=torch.float64), d)
    acc.count = int(count.item())
    model.train(was_training)
    return float(acc.mse().mean()), nanmean(acc.weighted_pearson())


def _micro_batches(
    loader: DataLoader, sampler: RankBatchSampler, epoch: int, start: int
) -> Iterator[tuple[int, int, tuple[torch.Tensor, torch.Tensor]]]:
    """Endless ``(epoch, index_in_epoch, batch)`` stream from ``(epoch, start)`` on."""
    while True:
        sampler.set_epoch(epoch, start)
        for k, batch in enumerate(loader, start=start):
            yield epoch, k, batch
        epoch, start = epoch + 1, 0


def train(
    store_path: str,
    run_dir: str,
    config: TrainSpec,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a multiplexer on a store (one process, or every rank of a ``torchrun`` job).

    Parameters
    ----------
    store_path : str
        A complete store (``train`` and ``valid`` splits).
    run_dir : str
        Gets ``config.json``, ``metrics.csv``, ``best.pt``, ``last.pt`` (and ``tensorboard/`` when
        TensorBoard is installed). A folder that already holds a checkpoint is refused unless
        ``resume``.
    config : TrainSpec
        Settings; ``steps`` is the total number of optimizer steps (also when resuming).
    resume : bool
        Continue from ``run_dir/last.pt``.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; under torchrun ``cuda`` means ``cuda:LOCAL_RANK``.
    """
    dev = resolve_device(device)
    d = init(dev.type)
    try:
        if d.active and dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", d.local_rank % torch.cuda.device_count())
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return _train(store_path, run_dir, config, resume=resume, dev=dev, d=d, progress=progress)
    finally:
        shutdown(d)


def _train(
    store_path: str, run_dir: str, config: TrainSpec, *, resume: bool, dev: torch.device, d: Dist, progress: bool
) -> TrainResult:
    from tqdm import tqdm

    exact_float32()
    store = open_store(store_path)
    for split in ("train", "valid"):
        if split not in store.splits:
            raise UserError(f"store {store_path!r} has no {split!r} split; training needs train and valid")
    run = Path(run_dir)
    last_path, best_path = run / "last.pt", run / "best.pt"
    problem = None
    if d.main:
        if resume and not last_path.is_file():
            problem = f"--resume: {str(last_path)!r} does not exist"
        elif not resume and (last_path.exists() or best_path.exists()):
            problem = f"run folder {str(run)!r} already holds checkpoints; pass --resume or another --run-dir"
    problem = broadcast_object(problem, d)
    if problem:
        raise UserError(problem)
    micro = config.batch_size // config.grad_accum
    if micro < d.world:
        raise UserError(
            f"batch size {config.batch_size} / grad_accum {config.grad_accum} gives micro-batches of "
            f"{micro} samples, fewer than the {d.world} processes"
        )
    autocast_dtype, use_scaler = _amp(config, dev)
    train_ds = StoreDataset(store_path, "train")
    valid_ds = StoreDataset(store_path, "valid", limit=config.valid_samples)

    kwargs = multiplexer_kwargs(config.multiplexer, store, dict(config.kwargs))
    torch.manual_seed(config.seed)
    core = build_multiplexer(config.multiplexer, **kwargs)
    if d.active:
        core = convert_sync_batchnorm(core, dev.type)
    core = core.to(dev)
    optimizer = torch.optim.AdamW(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    scaler = torch.amp.GradScaler(dev.type, enabled=use_scaler)
    step, epoch, position, best_loss, samples = 0, 0, 0, math.inf, 0
    if resume:
        state = read_checkpoint(last_path)
        if state.get("spec_hash") != store.spec_hash:
            raise UserError(f"{str(last_path)!r} was trained on another store (spec hash differs)")
        if state["architecture"] != {"name": config.multiplexer, "kwargs": kwargs}:
            raise UserError(f"{str(last_path)!r} has architecture {state['architecture']}, not the requested one")
        load_weights(core, state["model"], source=str(last_path))
        t = state["training"]
        optimizer.load_state_dict(t["optimizer"])
        scheduler.load_state_dict(t["scheduler"])
        scaler.load_state_dict(t["scaler"])
        step, epoch, position = int(state["step"]), int(t["epoch"]), int(t["position"])
        best_loss, samples = float(t["best_valid_loss"]), int(t["samples"])
        _set_rng_state(t["rng"])
    elif d.main:
        run.mkdir(parents=True, exist_ok=True)
    if step >= config.steps:  # resuming a finished run is a no-op (so `make` can rerun it safely)
        return TrainResult(
            run_dir=str(run), step=step, best_valid_loss=best_loss, last_metrics={}, finished_before=True
        )
    model: torch.nn.Module = core
    if d.active:
        model = torch.nn.parallel.DistributedDataParallel(
            core, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False
        )
    if config.compile:
        model = torch.compile(model)

    sampler = RankBatchSampler(
        BlockShuffle(len(train_ds), train_ds.unit_samples, config.shuffle_buffer, config.seed), micro, d.rank, d.world
    )
    workers = config.num_workers
    loader = DataLoader(
        train_ds,
        batch_sampler=sampler,
        collate_fn=collate_batch,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=workers > 0 and config.persistent_workers,
        prefetch_factor=config.prefetch_factor if workers > 0 else None,
    )
    meta = {
        "architecture": {"name": config.multiplexer, "kwargs": kwargs},
        "seq_len": store.seq_len,
        "n_targets": store.n_targets,
        "alphabet": store.attrs["alphabet"],
        "target_names": store.target_names,
        "target_kind": store.target_kind,
        "spec": store.attrs["spec"],
        "spec_hash": store.spec_hash,
        "base": store.attrs["base"],
        "genome": store.attrs["genome"],
        "store": str(store_path),
        "package_version": __version__,
        "train": _to_plain(config),
    }
    writer = _MetricsWriter(run, enabled=d.main)
    if d.main:
        (run / "config.json").write_text(
            json.dumps(
                {
                    "store": str(store_path),
                    "spec_hash": store.spec_hash,
                    "device": str(dev),
                    "world_size": d.world,
                    "package_version": __version__,
                    "train": {**_to_plain(config), "kwargs": kwargs},
                },
                indent=2,
            )
            + "\n"
        )

    model.train()
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not (progress and d.main),
        dynamic_ncols=True,
    )
    stream = _micro_batches(loader, sampler, epoch, position)
    window_start, window_loss, window_steps, window_samples = time.perf_counter(), 0.0, 0, 0
    last_row: dict[str, Any] = {}
    try:
        while step < config.steps:
            step_loss = torch.zeros((), dtype=torch.float64, device=dev)
            step_samples = 0
            for a in range(config.grad_accum):
                epoch, k, (X, y) = next(stream)
                sync = a == config.grad_accum - 1 or not d.active
                X = X.to(dev, non_blocking=True).float()
                y = y.to(dev, non_blocking=True).float()
                with contextlib.nullcontext() if sync else model.no_sync():
                    with torch.autocast(
                        dev.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
                    ):
                        y_hat = model(X)
                    per_sample = sample_losses(y_hat, y, X, config.loss_mask)
                    n_micro = min(micro, len(train_ds) - k * micro)
                    loss = per_sample.sum() * (d.world / n_micro / config.grad_accum)
                    scaler.scale(loss).backward()
                step_loss += loss.detach().double() / d.world
                step_samples += X.shape[0]
            position = k + 1
            if position >= sampler.batches_per_epoch():
                epoch, position = epoch + 1, 0
            if config.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(core.parameters(), config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            all_reduce_sum(step_loss, d)
            counts = all_reduce_sum(torch.tensor([step_samples], dtype=torch.long, device=dev), d)
            samples += int(counts.item())
            window_loss, window_steps, window_samples = (
                window_loss + float(step_loss),
                window_steps + 1,
                window_samples + int(counts.item()),
            )
            bar.update(1)
            validate_now = step % config.valid_every == 0 or step == config.steps
            if step % config.log_every == 0 or validate_now:
                elapsed = time.perf_counter() - window_start
                last_row = {
                    "step": step,
                    "epoch": epoch,
                    "samples": samples,
                    "train_loss": window_loss / max(window_steps, 1),
                    "valid_loss": "",
                    "valid_weighted_pearson": "",
                    "lr": optimizer.param_groups[0]["lr"],
                    "elapsed_s": round(elapsed, 3),
                    "samples_per_s": round(window_samples / max(elapsed, 1e-9), 3),
                }
                bar.set_postfix(loss=f"{last_row['train_loss']:.4g}", samples_s=f"{last_row['samples_per_s']:.1f}")
                if validate_now:
                    valid_loss, valid_wp = validate(_unwrap(model), valid_ds, micro, dev, d, autocast_dtype)
                    last_row.update(valid_loss=valid_loss, valid_weighted_pearson=valid_wp)
                    if d.main:
                        bar.write(
                            f"step {step}: train loss {last_row['train_loss']:.5f}, valid loss {valid_loss:.5f}, "
                            f"valid weighted Pearson {valid_wp:.4f}"
                        )
                    payload = {**meta, "model": _unwrap(model).state_dict(), "step": step, "metrics": last_row}
                    improved = valid_loss < best_loss
                    best_loss = min(best_loss, valid_loss)
                    if d.main:
                        if improved:
                            save_checkpoint(best_path, payload)
                        save_checkpoint(
                            last_path,
                            {
                                **payload,
                                "training": {
                                    "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(),
                                    "scaler": scaler.state_dict(),
                                    "epoch": epoch,
                                    "position": position,
                                    "best_valid_loss": best_loss,
                                    "samples": samples,
                                    "rng": _rng_state(),
                                },
                            },
                        )
                writer.row(last_row)
                window_start, window_loss, window_steps, window_samples = time.perf_counter(), 0.0, 0, 0
    finally:
        bar.close()
        writer.close()
    return TrainResult(run_dir=str(run), step=step, best_valid_loss=best_loss, last_metrics=last_row)


class _MetricsWriter:
    """``metrics.csv`` (always) and TensorBoard scalars (when installed); rank 0 only."""

    def __init__(self, run: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        path = run / "metrics.csv"
        new = not path.exists()
        self.file = open(path, "a", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=METRIC_FIELDS)
        if new:
            self.csv.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tensorboard"))
        except ImportError:  # TensorBoard is optional
            self.tb = None

    def row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.csv.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for key in ("train_loss", "valid_loss", "valid_weighted_pearson", "lr", "samples_per_s"):
                if row.get(key) != "":
                    self.tb.add_scalar(key, float(row[key]), row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()
