"""Stage 2, ``train``: stream a store into a multiplexer and keep the best and last checkpoints.

Main flow (:func:`train`): open the store (trusting only its attributes for ``L``, ``F``, target
names and kind) -> build the multiplexer -> Adam + MSE over batches of a seeded per-epoch order
(:class:`pipeline.data.EpochBatchSampler`) -> every ``valid_every`` steps: validation loss and mean
weighted Pearson on the ``valid`` split, ``last.pt`` (always) and ``best.pt`` (lowest validation
loss), one row of ``metrics.csv`` -> ``--resume`` restores model, optimizer, step, epoch position
and RNG state from ``last.pt`` and continues exactly where it stopped.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from pipeline import __version__
from pipeline.data import EpochBatchSampler, StoreDataset
from pipeline.device import exact_float32, resolve_device
from pipeline.errors import UserError
from pipeline.evaluate import PearsonAccumulator, nanmean
from pipeline.models import build_multiplexer, read_checkpoint, save_checkpoint
from pipeline.models.registry import MULTIPLEXERS, import_object, load_weights
from pipeline.spec import TrainSpec
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


@dataclass(frozen=True)
class TrainConfig:
    """Resolved training settings (spec ``train:`` defaults, then command-line overrides)."""

    multiplexer: str = "conv"
    kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    valid_every: int = 100
    valid_samples: int | None = None
    num_workers: int = 0
    seed: int = 0

    @classmethod
    def from_spec(cls, t: TrainSpec, **overrides: Any) -> TrainConfig:
        base = cls(
            multiplexer=t.multiplexer,
            kwargs=dict(t.kwargs),
            steps=t.steps,
            batch_size=t.batch_size,
            lr=t.lr,
            valid_every=t.valid_every,
            valid_samples=t.valid_samples,
            num_workers=t.num_workers,
            seed=t.seed,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class TrainResult:
    """Where the outputs are and the final metrics."""

    run_dir: str
    step: int
    best_valid_loss: float
    last_metrics: dict[str, Any]

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


def _loader(ds: StoreDataset, sampler: EpochBatchSampler, workers: int) -> DataLoader:
    return DataLoader(
        ds, batch_sampler=sampler, num_workers=workers, persistent_workers=False, pin_memory=torch.cuda.is_available()
    )


@torch.no_grad()
def validate(
    model: torch.nn.Module, ds: StoreDataset, batch_size: int, device: torch.device, workers: int = 0
) -> tuple[float, float]:
    """Mean MSE and mean weighted Pearson of ``model`` on ``ds``."""
    was_training = model.training
    model.eval()
    acc = PearsonAccumulator(ds.n_targets)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    for X, y in loader:
        X, y = X.to(device), y.to(device).float()
        acc.update(y, model(X).float())
    model.train(was_training)
    return float(acc.mse().mean()), nanmean(acc.weighted_pearson())


def train(
    store_path: str,
    run_dir: str,
    config: TrainConfig,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a multiplexer on a store.

    Parameters
    ----------
    store_path : str
        A complete store (``train`` and ``valid`` splits).
    run_dir : str
        Gets ``config.json``, ``metrics.csv``, ``best.pt`` and ``last.pt``. A folder that already
        holds a checkpoint is refused unless ``resume``.
    config : TrainConfig
        Settings; ``steps`` is the total number of optimizer steps (also when resuming).
    resume : bool
        Continue from ``run_dir/last.pt``.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    """
    from tqdm import tqdm

    dev = resolve_device(device)
    exact_float32()
    store = open_store(store_path)
    for split in ("train", "valid"):
        if split not in store.splits:
            raise UserError(f"store {store_path!r} has no {split!r} split; training needs train and valid")
    run = Path(run_dir)
    last_path, best_path = run / "last.pt", run / "best.pt"
    if resume and not last_path.is_file():
        raise UserError(f"--resume: {str(last_path)!r} does not exist")
    if not resume and (last_path.exists() or best_path.exists()):
        raise UserError(f"run folder {str(run)!r} already holds checkpoints; pass --resume or another --run-dir")
    train_ds = StoreDataset(store_path, "train")
    valid_ds = StoreDataset(store_path, "valid", limit=config.valid_samples)

    kwargs = multiplexer_kwargs(config.multiplexer, store, config.kwargs)
    torch.manual_seed(config.seed)
    model = build_multiplexer(config.multiplexer, **kwargs).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, epoch, position, best_loss, samples = 0, 0, 0, math.inf, 0
    if resume:
        state = read_checkpoint(last_path)
        if state.get("spec_hash") != store.spec_hash:
            raise UserError(f"{str(last_path)!r} was trained on another store (spec hash differs)")
        if state["architecture"] != {"name": config.multiplexer, "kwargs": kwargs}:
            raise UserError(f"{str(last_path)!r} has architecture {state['architecture']}, not the requested one")
        load_weights(model, state["model"], source=str(last_path))
        t = state["training"]
        optimizer.load_state_dict(t["optimizer"])
        step, epoch, position = int(state["step"]), int(t["epoch"]), int(t["position"])
        best_loss, samples = float(t["best_valid_loss"]), int(t["samples"])
        torch.set_rng_state(t["rng_cpu"])
    else:
        run.mkdir(parents=True, exist_ok=True)
    if step >= config.steps:
        raise UserError(f"{str(last_path)!r} is already at step {step} >= --steps {config.steps}")

    (run / "config.json").write_text(
        json.dumps(
            {
                "store": str(store_path),
                "spec_hash": store.spec_hash,
                "device": str(dev),
                "package_version": __version__,
                "train": {**asdict(config), "kwargs": kwargs},
            },
            indent=2,
        )
        + "\n"
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
    }
    metrics_path = run / "metrics.csv"
    new_metrics = not metrics_path.exists()
    metrics_file = open(metrics_path, "a", newline="")
    writer = csv.DictWriter(metrics_file, fieldnames=METRIC_FIELDS)
    if new_metrics:
        writer.writeheader()

    model.train()
    bar = tqdm(total=config.steps, initial=step, desc="train", unit="step", disable=not progress)
    start_time, window_loss, window_n, window_samples = time.perf_counter(), 0.0, 0, 0
    last_row: dict[str, Any] = {}
    try:
        while step < config.steps:
            sampler = EpochBatchSampler(len(train_ds), config.batch_size, config.seed, epoch, position)
            for X, y in _loader(train_ds, sampler, config.num_workers):
                X, y = X.to(dev, non_blocking=True), y.to(dev, non_blocking=True).float()
                loss = torch.nn.functional.mse_loss(model(X), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step, position = step + 1, position + 1
                samples += X.shape[0]
                window_loss, window_n, window_samples = (
                    window_loss + loss.item(),
                    window_n + 1,
                    window_samples + X.shape[0],
                )
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4g}")
                if step % config.valid_every == 0 or step == config.steps:
                    elapsed = time.perf_counter() - start_time
                    valid_loss, valid_wp = validate(model, valid_ds, config.batch_size, dev)
                    last_row = {
                        "step": step,
                        "epoch": epoch,
                        "samples": samples,
                        "train_loss": window_loss / max(window_n, 1),
                        "valid_loss": valid_loss,
                        "valid_weighted_pearson": valid_wp,
                        "lr": optimizer.param_groups[0]["lr"],
                        "elapsed_s": round(elapsed, 3),
                        "samples_per_s": round(window_samples / max(elapsed, 1e-9), 3),
                    }
                    writer.writerow(last_row)
                    metrics_file.flush()
                    bar.write(
                        f"step {step}: train loss {last_row['train_loss']:.5f}, valid loss "
                        f"{valid_loss:.5f}, valid weighted Pearson {valid_wp:.4f}"
                    )
                    payload = {**meta, "model": model.state_dict(), "step": step, "metrics": last_row}
                    if valid_loss < best_loss:
                        best_loss = valid_loss
                        save_checkpoint(best_path, payload)
                    epoch_next, pos_next = (
                        (epoch + 1, 0) if position * config.batch_size >= len(train_ds) else (epoch, position)
                    )
                    save_checkpoint(
                        last_path,
                        {
                            **payload,
                            "training": {
                                "optimizer": optimizer.state_dict(),
                                "epoch": epoch_next,
                                "position": pos_next,
                                "best_valid_loss": best_loss,
                                "samples": samples,
                                "rng_cpu": torch.get_rng_state(),
                            },
                        },
                    )
                    start_time, window_loss, window_n, window_samples = time.perf_counter(), 0.0, 0, 0
                if step >= config.steps:
                    break
            else:
                epoch, position = epoch + 1, 0
    finally:
        bar.close()
        metrics_file.close()
    return TrainResult(run_dir=str(run), step=step, best_valid_loss=best_loss, last_metrics=last_row)
