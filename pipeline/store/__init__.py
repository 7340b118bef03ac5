"""The Zarr store of distilled targets: the only thing the stages ``distill`` and ``train`` share.

:mod:`~pipeline.store.format` (layout, write units, :class:`StoreMeta`), :mod:`~pipeline.store.store`
(open, create, write, completion), :mod:`~pipeline.store.chunks` (lost-chunk detection) and
:mod:`~pipeline.store.verify` (``store info`` / ``store verify``); :mod:`~pipeline.store.writes` (durable chunk
writes, shared with the catalogue store).
"""

from pipeline.store.format import ARRAYS, FORMAT, FORMAT_VERSION, ROOT_ATTRS, StoreMeta, n_units, unit_range
from pipeline.store.store import (
    SplitInfo,
    Store,
    check_same_spec,
    create_or_open_store,
    open_store,
    remove_store,
    wait_for_store,
    writer_lease,
)
from pipeline.store.verify import damaged_units, format_info, require_sound, store_info, unmark_damaged, verify_store

__all__ = [
    "ARRAYS",
    "FORMAT",
    "FORMAT_VERSION",
    "ROOT_ATTRS",
    "SplitInfo",
    "Store",
    "StoreMeta",
    "check_same_spec",
    "damaged_units",
    "create_or_open_store",
    "format_info",
    "n_units",
    "open_store",
    "remove_store",
    "require_sound",
    "store_info",
    "unit_range",
    "unmark_damaged",
    "verify_store",
    "wait_for_store",
    "writer_lease",
]
