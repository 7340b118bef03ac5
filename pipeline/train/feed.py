"""The training feed: batches decoded once, into memory the device copies from, a batch ahead of training.

A :class:`Feed` runs a DataLoader whose workers write each batch into one of a ring of reusable
**slots** (:class:`Slots`): shared memory allocated once (on CUDA also page-locked with
``cudaHostRegister``), so a batch is decoded straight into the buffer the device copies from, with no
copy in between (no per-batch shared-memory allocation, no collate, no pin-memory copy). The main
process (:class:`DeviceStage`) copies a batch's slot to the device without blocking, on a side stream,
and then turns it into what a training step takes there: ``X`` float32 ``[B, 4, L]`` and ``y`` float32
``[B, F, 4, L]`` (format 4's three stored rows expanded, :func:`~pipeline.store.layout.expand_targets`).
:func:`ahead` keeps the next batch in flight while the current one trains. On the CPU the same code
runs, the copy being a conversion in place.

With ``decode="gpu"`` the workers only read and check the compressed chunks (their CRC-32C and the
samples' digests, on the compressed bytes) and gather them into the slot; the device decodes them
(:class:`NvcompDecoder`, nVIDIA's nvCOMP) and :func:`assemble` undoes the byte shuffle and puts the
chunks in place. Everything but the nvCOMP call is shared with :class:`CpuChunkDecoder`, which decodes
the same chunks with numcodecs (the tests run the GPU path on the CPU with it).

A slot is taken when the DataLoader asks its sampler for the next batch (:class:`SlotSampler`) and
given back once the device has its copy; the ring holds ``workers · prefetch_factor + 3`` slots, more
than can ever be in use at once.
"""

from __future__ import annotations

import warnings
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, cast

import numcodecs
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.errors import UserError
from pipeline.store.layout import expand_targets
from pipeline.train.data import RankBatchSampler, StoreDataset, collate_batch

ALIGN = 64
"""Byte alignment of the targets within a slot."""

T = TypeVar("T")


class Slots:
    """A ring of reusable batch buffers in shared memory (page-locked on CUDA).

    Parameters
    ----------
    count : int
        Buffers in the ring.
    nbytes : int
        Bytes of each.
    pin : bool
        Page-lock them for the CUDA device (``cudaHostRegister``), so copies to it do not block.
    """

    def __init__(self, count: int, nbytes: int, pin: bool = False) -> None:
        self.count, self.nbytes = count, nbytes
        self.buffer = torch.empty((count, nbytes), dtype=torch.uint8).share_memory_()
        self.pinned = _register(self.buffer) if pin else False
        self._free: deque[int] = deque(range(count))
        self._pending: dict[int, Any] = {}  # slot -> CUDA event after which it is free

    def view(self, slot: int) -> np.ndarray:
        """Slot ``slot`` as a uint8 numpy array (shared: what a worker writes, the main process reads)."""
        return self.buffer[slot].numpy()

    def acquire(self) -> int:
        """A free slot (waiting for the oldest pending copy to the device when none is free).

        Raises
        ------
        RuntimeError
            When every slot is in use and none is waiting for a copy: more batches in flight than the
            ring was sized for (a bug).
        """
        self._reap()
        if not self._free and self._pending:
            slot, event = next(iter(self._pending.items()))
            event.synchronize()
            self._reap()
        if not self._free:
            raise RuntimeError(f"all {self.count} batch slots are in use (more batches in flight than expected)")
        return self._free.popleft()

    def release(self, slot: int, event: Any = None) -> None:
        """Give a slot back: now, or once ``event`` (a CUDA event after its copy) has completed."""
        if event is None:
            self._free.append(slot)
        else:
            self._pending[slot] = event

    def reclaim(self) -> None:
        """Every slot free again (before a new pass of the DataLoader: the previous one's batches are all
        delivered, or its workers gone); pending copies are waited for."""
        for event in self._pending.values():
            event.synchronize()
        self._pending.clear()
        self._free = deque(range(self.count))

    def _reap(self) -> None:
        for slot, event in list(self._pending.items()):
            if event.query():
                del self._pending[slot]
                self._free.append(slot)


def _register(buffer: torch.Tensor) -> bool:
    """Page-lock ``buffer`` for CUDA (unregistered when it is freed); a failure is a warning: copies to
    the device then block (correct, slower)."""
    cudart = torch.cuda.cudart()
    ptr, size = buffer.data_ptr(), buffer.numel()
    code = int(cudart.cudaHostRegister(ptr, size, 0))
    if code != 0:
        warnings.warn(f"could not page-lock the loader's {size / 1e9:.2f} GB of batch buffers (CUDA error {code}); "
                      "copies to the GPU will block", stacklevel=3)  # fmt: skip
        return False
    weakref.finalize(buffer, cudart.cudaHostUnregister, ptr)
    return True


class Job(NamedTuple):
    """What a worker is asked: read samples ``indices`` (sorted, distinct) into slot ``slot``."""

    slot: int
    indices: list[int]


class Filled(NamedTuple):
    """What a worker answers: slot ``slot`` holds ``n`` samples (``table``: the compressed chunks, for a
    device decoder; ``None``: decoded targets), or ``error``: why it could not be filled (a damaged
    chunk: one line, raised by the main process as a :class:`UserError`, not as a worker's traceback)."""

    slot: int
    n: int
    table: np.ndarray | None
    error: str | None = None


class SlotSampler(Sampler[Job]):
    """The batches of ``batches``, each with a slot of ``slots`` to be read into."""

    def __init__(self, batches: Sampler[list[int]], slots: Slots) -> None:
        self.batches, self.slots = batches, slots

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Job]:
        for indices in self.batches:
            yield Job(self.slots.acquire(), list(indices))


class Layout(NamedTuple):
    """Where a batch lies in a slot: ``X`` ``[n, 4, L]`` uint8 first, the targets from ``y_at`` on."""

    max_batch: int
    x_bytes: int
    y_at: int
    slot_bytes: int

    @classmethod
    def of(cls, ds: StoreDataset, max_batch: int, gpu: bool, chunk_bound: int = 0) -> Layout:
        """The layout for batches of at most ``max_batch`` samples of ``ds`` (``gpu``: room for the
        compressed chunks, ``chunk_bound`` bytes each at most, instead of the decoded targets)."""
        x_bytes = max_batch * 4 * ds.seq_len
        y_at = -(-x_bytes // ALIGN) * ALIGN
        y_bytes = chunk_bound if gpu else max_batch * ds.sample_bytes
        return cls(max_batch, x_bytes, y_at, y_at + y_bytes)


class SlotFiller(Dataset[Filled]):
    """The dataset the feed's workers run: a :class:`Job` in, its slot filled, a :class:`Filled` out."""

    def __init__(self, ds: StoreDataset, slots: Slots, layout: Layout, gpu: bool) -> None:
        self.ds, self.slots, self.layout, self.gpu = ds, slots, layout, gpu

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> Filled:
        raise TypeError("SlotFiller reads whole batches (__getitems__ with a Job)")

    def __getitems__(self, job: Job) -> Filled:
        n, L = len(job.indices), self.ds.seq_len
        view = self.slots.view(job.slot)
        X = view[: n * 4 * L].reshape(n, 4, L)
        try:
            if self.gpu:
                return Filled(job.slot, n, self.ds.gather_into(job.indices, X, view[self.layout.y_at :]))
            y = view[self.layout.y_at : self.layout.y_at + n * self.ds.sample_bytes]
            shape = (n, self.ds.n_targets, self.ds.rows, L)
            self.ds.read_into(job.indices, X, y.view(self.ds.target_dtype).reshape(shape))
        except UserError as exc:
            return Filled(job.slot, n, None, str(exc))
        return Filled(job.slot, n, None)


class ChunkDecoder(Protocol):
    """Decodes compressed chunks on a device (the zstd step; the byte shuffle is undone by :func:`assemble`)."""

    def decode(self, chunks: Sequence[torch.Tensor], nbytes: int) -> list[torch.Tensor]:
        """Each chunk's ``nbytes`` decoded bytes (``[nbytes]`` uint8 tensors on the chunks' device)."""
        ...


class CpuChunkDecoder:
    """A :class:`ChunkDecoder` on the CPU (numcodecs' zstd), for tests and CPU runs of the GPU path."""

    def __init__(self) -> None:
        self.zstd = numcodecs.Zstd()

    def decode(self, chunks: Sequence[torch.Tensor], nbytes: int) -> list[torch.Tensor]:
        """Each chunk's decoded bytes."""
        out = []
        for chunk in chunks:
            buf = torch.empty(nbytes, dtype=torch.uint8)
            self.zstd.decode(chunk.numpy(), out=buf.numpy())
            out.append(buf)
        return out


class NvcompDecoder:
    """A :class:`ChunkDecoder` on a CUDA device: nvCOMP's batched zstd (raw standard frames), on the
    stream it is created on (``nvidia-nvcomp-cu12``, the ``gpu`` extra)."""

    def __init__(self, device: torch.device, stream: Any) -> None:
        nvcomp = nvcomp_module()
        self.nvcomp, self.device = nvcomp, device
        self.codec = nvcomp.Codec(
            algorithm="Zstd",
            bitstream_kind=nvcomp.BitstreamKind.RAW,
            device_id=device.index or 0,
            cuda_stream=stream.cuda_stream,
        )

    def decode(self, chunks: Sequence[torch.Tensor], nbytes: int) -> list[torch.Tensor]:
        """Each chunk's decoded bytes (the whole batch in one nvCOMP call)."""
        decoded = self.codec.decode([self.nvcomp.as_array(c) for c in chunks])
        return [torch.as_tensor(d, device=self.device).view(torch.uint8).reshape(-1) for d in decoded]


def nvcomp_module() -> Any:
    """``nvidia.nvcomp`` (the optional ``gpu`` extra); a :class:`UserError` saying how to install it."""
    try:
        from nvidia import nvcomp  # an optional extra: only --decode gpu needs it
    except ImportError:
        raise UserError(
            "--decode gpu needs nvCOMP's Python package: pip install 'multiplexer[gpu]' (nvidia-nvcomp-cu12)"
        ) from None
    return nvcomp


class Geometry(NamedTuple):
    """How a batch's compressed chunks assemble into targets: ``blocks`` chunks per sample, each
    ``chunk_bytes`` decoded bytes of ``width`` targets (the last block padded past ``F``)."""

    blocks: int
    width: int
    chunk_bytes: int
    shuffled: bool
    n_targets: int
    rows: int
    seq_len: int
    dtype: torch.dtype


def assemble(
    payload: torch.Tensor, table: np.ndarray, n: int, geometry: Geometry, decoder: ChunkDecoder
) -> torch.Tensor:
    """The targets ``[n, F, rows, L]`` of a batch from its compressed chunks, on ``payload``'s device.

    Parameters
    ----------
    payload : torch.Tensor, shape=(nbytes,), uint8
        The chunks as gathered by the worker (:meth:`~pipeline.store.chunkio.TargetChunks.gather_into`).
    table : np.ndarray, shape=(k, 4), int64
        Offset, size, batch row and target block of each chunk (batch-row, then block order).
    n : int
        Samples in the batch.
    geometry : Geometry
    decoder : ChunkDecoder
    """
    g = geometry
    expected = np.arange(n * g.blocks)
    if table.shape[0] != n * g.blocks or not np.array_equal(table[:, 2] * g.blocks + table[:, 3], expected):
        raise RuntimeError(f"a batch of {n} samples came with {table.shape[0]} chunks out of order")
    chunks = [payload[int(o) : int(o) + int(s)] for o, s, _, _ in table]
    decoded = decoder.decode(chunks, g.chunk_bytes)
    stacked = torch.stack(decoded)  # [n * blocks, chunk_bytes]
    itemsize = torch.empty((), dtype=g.dtype).element_size()
    if g.shuffled:  # byte planes back to values
        stacked = stacked.view(n * g.blocks, itemsize, -1).transpose(1, 2).contiguous()
    values = stacked.reshape(n, -1).view(g.dtype).view(n, g.blocks * g.width, g.rows, g.seq_len)
    return values[:, : g.n_targets]


def on_device(X: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as a training step takes it: ``X`` float32 ``[B, 4, L]`` and ``y`` float32 ``[B, F, 4, L]``
    on ``device`` (stored format-4 rows expanded there).

    Parameters
    ----------
    X : torch.Tensor, shape=(B, 4, L), uint8
    y : torch.Tensor, shape=(B, F, rows, L)
        As stored (``rows`` 3 or 4).
    device : torch.device
    """
    X = X.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    return X.float(), expand_targets(y, X, torch.float32) if y.shape[2] == 3 else y.float()


class Pending:
    """A batch on its way to the device: :meth:`result` waits for it (on the device, not the host)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, event: Any = None) -> None:
        self.X, self.y, self.event = X, y, event

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, y)``, usable on the current stream."""
        if self.event is not None:
            stream = torch.cuda.current_stream(self.X.device)
            stream.wait_event(self.event)
            self.X.record_stream(stream)
            self.y.record_stream(stream)
        return self.X, self.y


class DeviceStage:
    """Moves filled slots to the device and turns them into training batches (see the module docstring).

    Parameters
    ----------
    ds : StoreDataset
    slots : Slots
    layout : Layout
    device : torch.device
    """

    def __init__(self, ds: StoreDataset, slots: Slots, layout: Layout, device: torch.device) -> None:
        self.ds, self.slots, self.layout, self.device = ds, slots, layout, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.decoder: ChunkDecoder | None = None
        self.geometry: Geometry | None = None

    def use_decoder(self, decoder: ChunkDecoder) -> None:
        """Decode gathered compressed chunks with ``decoder`` (``decode="gpu"``; without one the slots
        hold decoded targets)."""
        self.decoder, self.geometry = decoder, geometry_of(self.ds)

    def start(self, filled: Filled) -> Pending:
        """Begin moving a filled slot to the device; the slot is given back once the copy is done.

        Raises
        ------
        UserError
            The slot could not be filled (:attr:`Filled.error`).
        """
        if filled.error is not None:
            self.slots.release(filled.slot)
            raise UserError(filled.error)
        n, L = filled.n, self.ds.seq_len
        used = self._used(filled)
        host = self.slots.buffer[filled.slot, :used]
        if self.stream is None:
            out = self._finish(host, filled)
            self.slots.release(filled.slot)
            return Pending(*out)
        with torch.cuda.stream(self.stream):
            raw = host.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.stream)
            self.slots.release(filled.slot, copied)
            X, y = self._finish(raw, filled)
            done = torch.cuda.Event()
            done.record(self.stream)
        assert X.shape == (n, 4, L)
        return Pending(X, y, done)

    def _used(self, filled: Filled) -> int:
        if filled.table is None:
            return self.layout.y_at + filled.n * self.ds.sample_bytes
        return self.layout.y_at + int((filled.table[:, 0] + filled.table[:, 1]).max(initial=0))

    def _finish(self, raw: torch.Tensor, filled: Filled) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, y)`` float32 on the device from a slot's bytes there."""
        n, L = filled.n, self.ds.seq_len
        X = raw[: n * 4 * L].view(n, 4, L)
        if filled.table is not None:
            assert self.decoder is not None and self.geometry is not None
            y = assemble(raw[self.layout.y_at :], filled.table, n, self.geometry, self.decoder)
        else:
            shape = (n, self.ds.n_targets, self.ds.rows, L)
            y = raw[self.layout.y_at :].view(_torch_dtype(self.ds.target_dtype)).view(shape)
        return X.float(), expand_targets(y, X, torch.float32) if y.shape[2] == 3 else y.float()


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def geometry_of(ds: StoreDataset) -> Geometry:
    """The chunk geometry of a dataset's targets, for :func:`assemble`."""
    chunks = ds.target_chunks()
    return Geometry(
        blocks=chunks.target_blocks,
        width=chunks.chunk[1],
        chunk_bytes=int(np.prod(chunks.chunk)) * chunks.dtype.itemsize,
        shuffled=chunks.codec.compressor == "shuffle+zstd",
        n_targets=ds.n_targets,
        rows=ds.rows,
        seq_len=ds.seq_len,
        dtype=_torch_dtype(chunks.dtype),
    )


class Feed:
    """A DataLoader over a store whose batches arrive on the device (see the module docstring).

    Iterating it runs one pass of ``batches`` (an epoch: set its epoch first) and yields
    :class:`Filled` slots; :meth:`ahead` turns a stream of them into device batches, one in flight.
    Every slot received must go back to the ring: through :meth:`DeviceStage.start` (which
    :meth:`ahead` calls), or ``slots.release(filled.slot)`` by a consumer that only counts batches.

    Parameters
    ----------
    ds : StoreDataset
    batches : RankBatchSampler
        Sorted, distinct sample indices per batch.
    device : torch.device
    workers, prefetch_factor : int
        DataLoader worker processes (0: read in this process) and batches each loads ahead.
    persistent : bool
        Keep the workers between passes.
    decode : str
        ``cpu`` (the workers decode) or ``gpu`` (the device decodes: ``decoder``, default nvCOMP).
    decoder : ChunkDecoder, optional
        The device decoder for ``decode="gpu"`` (:class:`CpuChunkDecoder` runs the path on the CPU).
    """

    def __init__(
        self,
        ds: StoreDataset,
        batches: RankBatchSampler,
        device: torch.device,
        *,
        workers: int = 0,
        prefetch_factor: int = 2,
        persistent: bool = True,
        decode: str = "cpu",
        decoder: ChunkDecoder | None = None,
    ) -> None:
        gpu = decode == "gpu"
        if gpu:
            check_gpu_decode(ds, device, decoder)
        max_batch = batches.max_rank_batch()
        bound = 0
        if gpu:
            geometry = geometry_of(ds)
            bound = max_batch * geometry.blocks * (geometry.chunk_bytes + geometry.chunk_bytes // 128 + 1024)
        self.layout = Layout.of(ds, max_batch, gpu, bound)
        count = max(1, workers) * prefetch_factor + 3
        self.slots = Slots(count, self.layout.slot_bytes, pin=device.type == "cuda")
        self.stage = DeviceStage(ds, self.slots, self.layout, device)
        if gpu:
            self.stage.use_decoder(decoder or NvcompDecoder(device, self.stage.stream))
        self._live: Iterator[Filled] | None = None
        self.loader: DataLoader[Filled] = DataLoader(
            SlotFiller(ds, self.slots, self.layout, gpu),
            # the DataLoader hands each Job to SlotFiller.__getitems__ as it is
            batch_sampler=cast(Sampler[list[Any]], SlotSampler(batches, self.slots)),
            collate_fn=collate_batch,
            num_workers=workers,
            persistent_workers=workers > 0 and persistent,
            prefetch_factor=prefetch_factor if workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Filled]:
        self.slots.reclaim()
        self._live = iter(self.loader)
        yield from self._live

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes now, not whenever the feed is freed (after an error, a traceback
        can keep a pass alive until the interpreter exits)."""
        live, self._live = self._live, None
        stop = getattr(live, "_shutdown_workers", None)  # torch's DataLoader iterator; a no-op without workers
        if stop is not None:
            stop()

    def ahead(self, items: Iterator[tuple[T, Filled]]) -> Iterator[tuple[T, tuple[torch.Tensor, torch.Tensor]]]:
        """``(tag, (X, y))`` device batches from ``(tag, filled)`` items, the next one's copy started
        before the current one is handed over."""
        pending: tuple[T, Pending] | None = None
        for tag, filled in items:
            started = (tag, self.stage.start(filled))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = started
        if pending is not None:
            yield pending[0], pending[1].result()


def check_gpu_decode(ds: StoreDataset, device: torch.device, decoder: ChunkDecoder | None) -> None:
    """Refuse ``decode="gpu"`` in one line: without a CUDA device (unless a decoder is given, as the
    tests give the CPU one), without nvCOMP, or on a store whose chunks a device decoder cannot take."""
    if ds.gpu_problem is not None:
        raise UserError(
            f"--decode gpu: store {ds.path!r} cannot be decoded on the GPU: {ds.gpu_problem}; distil it with "
            "storage codec zstd-gpu, or use --decode cpu"
        )
    if decoder is None:
        if device.type != "cuda":
            raise UserError(f"--decode gpu needs a CUDA device (this run is on {device.type}); use --decode cpu")
        nvcomp_module()
