"""Where a process runs: its device, its place in a ``torchrun`` job and ``--shard I/N``, numerics.

One sharding scheme for everything resumable: work is cut into units, and the process with
``part = shard_index · world + rank`` of ``parts = shard_count · world`` takes the units
``u % parts == part`` (:meth:`Launch.owns`). The torchrun environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``) is read here only. :func:`exact_float32` turns TF32 off for a block and restores the
caller's settings afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from pipeline.errors import UserError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU; an unavailable device is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA devices exist")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device {device!r} is not supported (use cpu, cuda, cuda:N or auto)")
    return dev


@contextmanager
def exact_float32() -> Iterator[None]:
    """Disable TF32 inside the block, so float32 products and convolutions are exact float32 on CUDA.

    The caller's settings are restored on exit (a library call never changes them for the process).
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse ``I/N`` (0-based shard ``I`` of ``N``); ``None`` is ``(0, 1)``."""
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
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by ``torchrun`` (absent: one process)."""
        try:
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            local = int(os.environ.get("LOCAL_RANK", 0))
        except ValueError:
            raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
        if world < 1 or not 0 <= rank < world:
            raise UserError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
        return cls(rank, world, local, shard)

    @property
    def main(self) -> bool:
        """Rank 0, which writes shared outputs (checkpoints, logs)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world > 1

    @property
    def parts(self) -> int:
        """Processes over all shards and ranks."""
        return self.shard[1] * self.world

    @property
    def part(self) -> int:
        """This process's index among :attr:`parts`."""
        return self.shard[0] * self.world + self.rank

    def owns(self, unit: int) -> bool:
        """Whether this process takes work unit ``unit``."""
        return unit % self.parts == self.part

    def owned(self, n_units: int) -> np.ndarray:
        """Boolean ``[n_units]``: which of ``n_units`` work units this process takes (:meth:`owns`)."""
        return np.arange(n_units) % self.parts == self.part

    def device(self, device: str | torch.device | None) -> torch.device:
        """The device of this rank: under torchrun, ``cuda``/``auto`` mean ``cuda:LOCAL_RANK``."""
        dev = resolve_device(device)
        if self.active and dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return dev


@contextmanager
def process_group(launch: Launch, backend: str) -> Iterator[bool]:
    """Join the torchrun job for the block (a no-op for one process); yields whether a group is active.

    The group is destroyed on exit if this call created it.
    """
    created = False
    if launch.active and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend=backend)
        created = True
    try:
        yield launch.active and dist.is_available() and dist.is_initialized()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, launch: Launch) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op for one process)."""
    if launch.active:
        dist.all_reduce(t)
    return t


def broadcast_object(obj: object, launch: Launch) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not launch.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
