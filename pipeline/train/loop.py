"""Stage 2, ``train``: stream a store into a multiplexer; checkpoints, validation, exact resume.

Main flow (:func:`train`): open the store (trusting only its attributes for ``L``, ``F``, target
names and kind) -> build the multiplexer (synchronized BatchNorm and DistributedDataParallel under
``torchrun``; ``torch.compile`` on request), AdamW with warm-up and cosine schedule -> the loop
(:meth:`Trainer.run`): each optimizer step takes ``grad_accum`` global micro-batches of a
block-shuffled per-epoch order (:class:`~pipeline.train.data.RankBatchSampler`; each rank reads its
contiguous part), runs the forward under bf16 autocast on CUDA, MSE (optionally without the
reference-base entries), gradient clipping; every ``valid_every`` steps the validation loss and mean
weighted Pearson over all ranks, and ``last.pt`` (always) and ``best.pt`` (lowest validation loss)
written durably by rank 0. ``--resume`` restores the :class:`~pipeline.train.state.TrainState` and
continues exactly where ``last.pt`` left off; options that differ from the ones it recorded are refused,
or applied and recorded with ``--allow-changes`` (:mod:`~pipeline.train.changes`).

The loss of a step is the mean over its global batch, whatever the number of ranks: each rank's
loss is the sum over its samples scaled by ``world / micro_batch``, and DDP averages gradients.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import torch

from pipeline import __version__
from pipeline.core.progress import progress_bar, rate_text
from pipeline.core.runtime import Launch, all_reduce_sum, broadcast_object, exact_float32, process_group
from pipeline.core.spec import TrainSpec
from pipeline.core.urls import join
from pipeline.errors import UserError
from pipeline.ism import mask_effects
from pipeline.metrics import PearsonAccumulator, nanmean
from pipeline.models import Checkpoint, build_multiplexer, load_weights
from pipeline.store import Store, open_store
from pipeline.train.changes import Change, check_changes, check_same_train_samples, find_changes
from pipeline.train.config import Precision, check_model_size, lr_factor, multiplexer_kwargs, precision_for
from pipeline.train.data import BlockShuffle, RankBatchSampler, StoreDataset
from pipeline.train.feed import Feed, Filled, on_device
from pipeline.train.logging import MetricsWriter, Window
from pipeline.train.state import RunDir, TrainState
from pipeline.train.sync_bn import convert_sync_batchnorm

Batch = tuple[torch.Tensor, torch.Tensor]


LOW_PEARSON = 0.1
"""A final validation weighted Pearson below this is a warning in the summary: the model has learned
next to nothing yet (an untrained multiplexer scores about 0)."""


@dataclass
class TrainResult:
    """Where the outputs are and the final metrics."""

    run_dir: str
    step: int
    best_valid_loss: float
    last_metrics: dict[str, Any] = field(default_factory=dict)
    finished_before: bool = False
    """``--resume`` found the run already at ``--steps``: nothing was done."""

    @property
    def best(self) -> str:
        """Path of ``best.pt``."""
        return join(self.run_dir, "best.pt")

    @property
    def last(self) -> str:
        """Path of ``last.pt``."""
        return join(self.run_dir, "last.pt")

    def line(self) -> str:
        """The summary for the command line (empty when no metrics row was written), with a
        ``warning:`` line under it when the model has not learned yet (:attr:`warning`)."""
        m = self.last_metrics
        if self.finished_before:
            return f"{self.last} is already at step {self.step} (>= --steps): nothing to do"
        if not m:
            return ""
        line = (
            f"trained to step {self.step}: valid loss {m['valid_loss']:.5f}, valid weighted "
            f"Pearson {m['valid_weighted_pearson']:.4f}; best {self.best}, last {self.last}"
        )
        return line + (f"\nwarning: {self.warning}" if self.warning else "")

    @property
    def warning(self) -> str | None:
        """Said once, under the summary: the final validation weighted Pearson is below :data:`LOW_PEARSON`,
        i.e. the model has not learned the base model's effects yet (``None`` otherwise)."""
        wp = self.last_metrics.get("valid_weighted_pearson")
        if wp is None or not math.isfinite(wp) or wp >= LOW_PEARSON:
            return None
        return (
            f"the validation weighted Pearson is {wp:.4f}, below {LOW_PEARSON}: the model has not learned the "
            "base model's effects yet; train longer (--steps, --resume continues this run), or check the "
            "learning rate and the store"
        )


def sample_losses(
    y_hat: torch.Tensor, y: torch.Tensor, X: torch.Tensor, loss_mask: bool, effect_weight: float = 0.0
) -> torch.Tensor:
    """Per-sample mean squared error, optionally weighted by effect size.

    Parameters
    ----------
    y_hat, y : torch.Tensor, shape=(B, F, 4, L)
    X : torch.Tensor, shape=(B, 4, L)
        One-hot inputs (for the mask).
    loss_mask : bool
        Zero the error at reference bases and ``N`` columns (0 by definition); the mean still divides
        by ``F · 4 · L`` so the scale does not depend on the number of ``N`` columns.
    effect_weight : float
        ``a >= 0``: each squared error gets the weight ``w = 1 + a · |y| / mean(|y|)`` (the mean over
        the sample's ``F · 4 · L`` entries) and the sample's loss is ``sum(w · err²) / sum(w)``. ``0``
        (or weights that are all equal, as when every ``|y|`` is the same) gives the plain mean. Large
        ``a`` approaches the weighting of the weighted Pearson metric (``|y|``), with a floor of 1 so that
        entries without an effect still pull their prediction towards 0.

    Returns
    -------
    loss : torch.Tensor, shape=(B,)
    """
    err = y_hat.float() - y
    if loss_mask:
        err = mask_effects(err, X)
    sq = err.pow(2).flatten(1)
    if not effect_weight:
        return sq.mean(dim=1)
    size = y.float().abs().flatten(1)
    scale = size.mean(dim=1, keepdim=True)
    w = 1 + effect_weight * size / torch.where(scale > 0, scale, torch.ones_like(scale))
    return (w * sq).sum(dim=1) / w.sum(dim=1)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The multiplexer inside DistributedDataParallel and ``torch.compile`` wrappers."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    inner: torch.nn.Module = getattr(model, "_orig_mod", model)  # torch.compile
    return inner


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    ds: StoreDataset,
    batch_size: int,
    device: torch.device,
    launch: Launch,
    precision: Precision | None = None,
    effect_weight: float = 0.0,
) -> tuple[float, float]:
    """Validation loss and mean weighted Pearson of ``model`` on ``ds``, over all ranks (each takes a part).

    The loss is the MSE, or with ``effect_weight`` the mean over windows of the effect-weighted loss
    (:func:`sample_losses`, no mask): the objective the run trains, so ``best.pt`` is chosen by it.
    """
    was_training = model.training
    model.eval()
    acc = PearsonAccumulator(ds.n_targets)
    weighted = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of window losses, windows]
    bounds = np.linspace(0, len(ds), launch.world + 1).round().astype(int)
    mine = list(range(bounds[launch.rank], bounds[launch.rank + 1]))
    autocast = precision.autocast(device) if precision is not None else contextlib.nullcontext()
    for i in range(0, len(mine), batch_size):
        X, y = on_device(*ds.__getitems__(mine[i : i + batch_size]), device)
        with autocast:
            y_hat = model(X)
        acc.update(y, y_hat.float())
        if effect_weight:
            losses = sample_losses(y_hat, y, X, False, effect_weight)
            weighted += torch.stack([losses.double().sum(), torch.tensor(float(len(losses)), device=device)])
    acc.all_reduce(launch)
    model.train(was_training)
    if effect_weight:
        all_reduce_sum(weighted, launch)
        return float(weighted[0] / weighted[1]), nanmean(acc.weighted_pearson())
    return float(acc.mse().mean()), nanmean(acc.weighted_pearson())


class Place(NamedTuple):
    """Where a micro-batch lies in the data order: micro-batch ``position`` of ``epoch``, counted from
    sample ``offset``; ``last``: the epoch's last."""

    epoch: int
    offset: int
    position: int
    last: bool


def _micro_batches(feed: Feed, sampler: RankBatchSampler, state: TrainState) -> Iterator[tuple[Place, Filled]]:
    """Endless ``(place, batch)`` stream from the position ``state`` records on (batches as the feed's
    workers filled them; :meth:`~pipeline.train.feed.Feed.ahead` moves them to the device)."""
    epoch, start, offset = state.epoch, state.position, state.offset
    while True:
        sampler.set_epoch(epoch, start, offset)
        per_epoch = sampler.batches_per_epoch()
        for k, batch in enumerate(feed, start=start):
            yield Place(epoch, offset, k, k + 1 >= per_epoch), batch
        epoch, start, offset = epoch + 1, 0, 0


def _validation_line(row: dict[str, Any]) -> str:
    return (
        f"step {row['step']}: train loss {row['train_loss']:.5f}, valid loss {row['valid_loss']:.5f}, "
        f"valid weighted Pearson {row['valid_weighted_pearson']:.4f}"
    )


def train(
    store_path: str,
    run_dir: str,
    config: TrainSpec,
    *,
    resume: bool = False,
    allow_changes: bool = False,
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
    allow_changes : bool
        With ``resume``: apply the options that differ from the ones ``last.pt`` recorded from the
        resume step on, and record them (without it they are refused, ``steps`` and the loader's
        performance settings excepted; see :mod:`pipeline.train.changes`).
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; under torchrun ``cuda`` means ``cuda:LOCAL_RANK``.
    """
    launch = Launch.from_env()
    dev = launch.device(device)
    cuda = dev.type == "cuda"
    with (
        process_group(launch, "nccl" if cuda else "gloo"),
        exact_float32(),
        torch.cuda.device(dev) if cuda else contextlib.nullcontext(),  # the current device, restored after
        torch.random.fork_rng(devices=[dev] if cuda else []),  # seeded for the run; the caller's RNG restored
    ):
        with RunDir(run_dir) as run:  # a run folder at a URL: its local copy is removed at the end
            trainer = Trainer(
                store_path, run, config, launch=launch, device=dev, resume=resume, allow_changes=allow_changes
            )
            return trainer.run(progress=progress)


class Trainer:
    """One training run: its model, data, state and outputs (see the module docstring).

    Parameters
    ----------
    store_path : str
        The store.
    run : RunDir
        The run folder.
    config : TrainSpec
        The settings.
    launch : Launch
        This process's rank and world size.
    device : torch.device
        This rank's device.
    resume : bool
        Continue from ``run.last``.
    allow_changes : bool
        With ``resume``: apply options that differ from ``last.pt``'s (see :func:`train`).

    Attributes
    ----------
    changes : list of dict
        Every option a resume of this run changed, ``{"step", "option", "old", "new"}`` (recorded in
        ``config.json`` and the checkpoints).
    """

    def __init__(
        self,
        store_path: str,
        run: RunDir,
        config: TrainSpec,
        *,
        launch: Launch,
        device: torch.device,
        resume: bool,
        allow_changes: bool = False,
    ) -> None:
        if allow_changes and not resume:
            raise UserError("--allow-changes goes with --resume (it applies changed options to a resumed run)")
        self.store_path, self.run_dir, self.config, self.launch, self.device = store_path, run, config, launch, device
        self.store = self._open_store()
        problem = broadcast_object(run.problem(resume) if launch.main else None, launch)
        if problem:
            raise UserError(str(problem))
        self.micro = config.batch_size // config.grad_accum
        if self.micro < launch.world:
            raise UserError(
                f"batch size {config.batch_size} / grad_accum {config.grad_accum} gives micro-batches of "
                f"{self.micro} samples, fewer than the {launch.world} processes"
            )
        self.precision = precision_for(config, device)
        self.kwargs = multiplexer_kwargs(config.multiplexer, self.store, config.kwargs)
        last = run.read_last(self.store.spec_hash) if resume else None
        self.train_ds = StoreDataset(store_path, "train", limit=config.max_samples, limit_option="--max-samples")
        new_changes = self._check_changes(last, allow_changes)
        check_model_size(config.multiplexer, self.kwargs, device)
        self.valid_ds = StoreDataset(store_path, "valid", limit=config.valid_samples, limit_option="--valid-samples")
        self.core = self._build_model()
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        optimizer = torch.optim.AdamW(self.core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
        self.state = TrainState(optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=self.precision.scaler))
        self.changes: list[dict[str, Any]] = []
        self.resumed_row: dict[str, Any] | None = None
        if last is not None:
            self._resume(last, new_changes)
        elif launch.main:
            run.create()
        if launch.main:
            run.remove_stale_temporaries()

    def _check_changes(self, last: dict[str, Any] | None, allow: bool) -> list[Change]:
        """The options that differ from ``last.pt``'s, each refused or allowed (:mod:`~pipeline.train.changes`)."""
        if last is None:
            return []
        changes = find_changes(last, self.config, self.architecture)
        changes = check_same_train_samples(last, len(self.train_ds), changes, self.run_dir.shown(self.run_dir.last))
        check_changes(changes, allow=allow, last=self.run_dir.shown(self.run_dir.last))
        return changes

    def _resume(self, last: dict[str, Any], changes: list[Change]) -> None:
        """Load ``last.pt``'s weights and state, then apply ``changes`` from its step on."""
        load_weights(self.core, last["model"], source=self.run_dir.shown(self.run_dir.last))
        self.state.load_state_dict(last["training"])
        self.resumed_row = dict(last.get("metrics") or {})
        self.changes = [*last.get("changes", []), *(change.record() for change in changes)]
        if changes:
            recorded = last.get("train") or {}
            old_micro = int(recorded.get("batch_size", self.config.batch_size)) // int(
                recorded.get("grad_accum", self.config.grad_accum)
            )
            self.state.rebatch(old_micro, self.micro)
            self.state.retune(self.config)
        if any(change.field == "valid_samples" for change in changes):
            # losses on another validation set do not compare: the next validation sets the best anew
            self.state.best_valid_loss = math.inf

    @property
    def architecture(self) -> dict[str, Any]:
        """The multiplexer's name and full constructor arguments (recorded in checkpoints)."""
        return {"name": self.config.multiplexer, "kwargs": self.kwargs}

    def _open_store(self) -> Store:
        store = open_store(self.store_path)
        for split in ("train", "valid"):
            if split not in store.splits:
                raise UserError(f"store {self.store_path!r} has no {split!r} split; training needs train and valid")
        return store

    def _build_model(self) -> torch.nn.Module:
        torch.manual_seed(self.config.seed)
        core = build_multiplexer(self.config.multiplexer, **self.kwargs)
        if self.launch.active:
            core = convert_sync_batchnorm(core, self.device.type)
        return core.to(self.device)

    def _wrap(self) -> torch.nn.Module:
        """The model the loop calls: DDP under torchrun (kept as :attr:`ddp`), compiled on request."""
        model: torch.nn.Module = self.core
        if self.launch.active:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.core,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
            model = self.ddp
        if self.config.compile:
            model = cast(torch.nn.Module, torch.compile(model))  # an OptimizedModule, typed as a callable
        return model

    def _loader(self) -> tuple[Feed, RankBatchSampler]:
        config, ds = self.config, self.train_ds
        order = BlockShuffle(len(ds), ds.unit_samples, config.shuffle_buffer, config.seed)
        sampler = RankBatchSampler(order, self.micro, self.launch.rank, self.launch.world)
        feed = Feed(
            ds,
            sampler,
            self.device,
            workers=config.num_workers,
            prefetch_factor=config.prefetch_factor,
            persistent=config.persistent_workers,
            decode=config.decode,
        )
        return feed, sampler

    # -- the loop ------------------------------------------------------------------------------
    def run(self, *, progress: bool = True) -> TrainResult:
        """Train until ``config.steps``; returns where the outputs are and the last metrics."""
        state, config, main = self.state, self.config, self.launch.main
        if state.step >= config.steps:  # resuming a finished run is a no-op (so `make` can rerun it)
            return TrainResult(self.run_dir.name, state.step, state.best_valid_loss, finished_before=True)
        model = self._wrap()
        feed, sampler = self._loader()
        stream = feed.ahead(_micro_batches(feed, sampler, state))  # the next batch goes to the device early
        if main:
            self.run_dir.write_config(self._config_record())
        resume_step = state.step if self.resumed_row is not None else None
        model.train()
        window, row = Window(), {}
        bar = progress_bar(desc="train", unit="step", total=config.steps, initial=state.step, enabled=progress and main)
        with MetricsWriter(self.run_dir.metrics, main, resume_step, self.resumed_row) as writer, bar, feed:
            while state.step < config.steps:
                # forward, backward and update over grad_accum micro-batches
                loss, samples = self.train_step(model, stream)
                window.add(loss, samples)
                bar.update(1)
                validate_now = state.step % config.valid_every == 0 or state.step == config.steps
                if state.step % config.log_every and not validate_now:
                    continue
                # timing and logging; at validation steps, evaluate and write checkpoints
                row = window.row(state.step, state.epoch, state.samples, state.optimizer.param_groups[0]["lr"])
                bar.set_postfix_str(f"loss {row['train_loss']:.4g}, {rate_text(row['samples_per_s'], 'sample')}")
                if validate_now:
                    row.update(self.validate_and_checkpoint(model, row))
                    if main:
                        bar.write(_validation_line(row))
                writer.row(row)
        if main:
            self.run_dir.finish()
        return TrainResult(self.run_dir.name, state.step, state.best_valid_loss, row)

    def train_step(self, model: torch.nn.Module, stream: Iterator[tuple[Place, Batch]]) -> tuple[float, int]:
        """One optimizer step; returns its mean loss over the global batch and its samples (all ranks)."""
        config, launch, state = self.config, self.launch, self.state
        step_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        step_samples = 0
        for a in range(config.grad_accum):
            place, (X, y) = next(stream)  # on the device, float32, y [B, F, 4, L]
            sync = a == config.grad_accum - 1 or not launch.active
            with contextlib.nullcontext() if sync or self.ddp is None else self.ddp.no_sync():
                with self.precision.autocast(self.device):
                    y_hat = model(X)
                per_sample = sample_losses(y_hat, y, X, config.loss_mask, config.effect_weight)
                n_micro = min(self.micro, len(self.train_ds) - place.offset - place.position * self.micro)
                loss = per_sample.sum() * (launch.world / n_micro / config.grad_accum)
                state.scaler.scale(loss).backward()
            step_loss += loss.detach().double() / launch.world
            step_samples += X.shape[0]
        state.advance(place.epoch, place.offset, place.position + 1, place.last)
        if config.clip_grad:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(self.core.parameters(), config.clip_grad)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        state.step += 1
        all_reduce_sum(step_loss, launch)
        samples = int(all_reduce_sum(torch.tensor([step_samples], dtype=torch.long, device=self.device), launch).item())
        state.samples += samples
        return float(step_loss), samples

    def validate_and_checkpoint(self, model: torch.nn.Module, row: dict[str, Any]) -> dict[str, float]:
        """Validation loss and weighted Pearson; ``best.pt`` when the loss improved, ``last.pt`` always."""
        state = self.state
        valid_loss, valid_wp = validate(
            unwrap(model),
            self.valid_ds,
            self.micro,
            self.device,
            self.launch,
            self.precision,
            self.config.effect_weight,
        )
        metrics = {"valid_loss": valid_loss, "valid_weighted_pearson": valid_wp}
        improved = valid_loss < state.best_valid_loss
        state.best_valid_loss = min(state.best_valid_loss, valid_loss)
        if self.launch.main:
            checkpoint = Checkpoint.capture(unwrap(model), **self._meta(), step=state.step, metrics={**row, **metrics})
            self.run_dir.save(checkpoint, state, improved=improved)
        return metrics

    # -- what the outputs record ------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        """Everything ``predict``/``evaluate`` need besides the weights: the fields of a
        :class:`~pipeline.models.Checkpoint` other than the state dicts, step and metrics."""
        meta = self.store.meta
        return {
            "architecture": self.architecture,
            "seq_len": meta.seq_len,
            "n_targets": meta.n_targets,
            "alphabet": meta.alphabet,
            "target_names": list(meta.target_names),
            "target_kind": meta.target_kind,
            "spec": dict(meta.spec),
            "spec_hash": meta.spec_hash,
            "base": dict(meta.base),
            "genome": meta.genome,
            "genome_fingerprint": dict(meta.genome_fingerprint) if meta.genome_fingerprint is not None else None,
            "store": str(self.store_path),
            "train_samples": len(self.train_ds),
            "package_version": __version__,
            "train": self.config.to_dict(),
            "changes": list(self.changes),
        }

    def _config_record(self) -> dict[str, Any]:
        return {
            "store": str(self.store_path),
            "spec_hash": self.store.spec_hash,
            "device": str(self.device),
            "world_size": self.launch.world,
            "package_version": __version__,
            "train": {**self.config.to_dict(), "kwargs": self.kwargs},
            "changes": list(self.changes),
        }
