"""The catalogue's geometry: tiles, units and inner chunks along a contig, and the codes of its arrays.

What a reader of a catalogue (:mod:`pipeline.store.catalogue`) needs besides the layout, in one place:

- **Tiles.** Each contig is tiled with windows every ``stride`` bases (:func:`default_stride`): tile
  ``k`` owns the *core* positions ``[k·S, (k+1)·S)`` (0-based) and its window is centred on that core,
  shifted to fit the contig (:func:`tile_first`, the rule ``score-vcf`` uses for a group of
  variants). Each position's effects come from the one tile whose core holds it, at most ``S/2`` from
  its window's centre (:func:`tile_center`). The tiling is fixed on the contig, not on the regions.
- **Units and inner chunks.** A unit (one shard of every array, the unit of work and of completion)
  holds :func:`unit_positions` positions, a multiple of :func:`block_positions` (an inner chunk: what
  a random lookup decodes), itself a multiple of the stride, so no tile spans two units.
- **Codes.** ``ref`` holds :func:`~pipeline.core.encoding.base_codes` (``A, G, C, T`` as 0..3,
  anything else as :data:`~pipeline.store.catalogue.N_CODE`); ``effects[:, i]`` is the effect of base
  ``ALTS[ref][i]`` (:data:`ALTS`).
"""

from __future__ import annotations

import numpy as np

from pipeline.core.windows import center_of, default_core, fitted_first

CHUNK_BYTES = 8 * 1024**2
"""About this many bytes of effects per unit (chunk): ``unit_positions ≈ CHUNK_BYTES / (6 · targets)``."""

BLOCK_BYTES = 64 * 1024
"""About this many bytes of effects per inner chunk (what one random lookup decodes)."""

ALTS = np.array([[b for b in range(4) if b != r] for r in range(4)] + [[0, 1, 2]], dtype=np.int64)
"""``ALTS[ref]``: the three other bases of ``ref`` in alphabet order (row 4, for ``N``, is unused)."""


def default_stride(seq_len: int) -> int:
    """The default ``--stride``: a window's default core, ``L // 4`` (:func:`~pipeline.core.windows.default_core`)."""
    return default_core(seq_len)


def block_positions(stride: int, n_targets: int) -> int:
    """Positions per inner chunk: a multiple of ``stride`` holding about :data:`BLOCK_BYTES` of effects."""
    return stride * max(1, round(BLOCK_BYTES / (stride * 3 * max(n_targets, 1) * 2)))


def unit_positions(stride: int, n_targets: int) -> int:
    """Positions per unit (shard): a multiple of :func:`block_positions` holding about
    :data:`CHUNK_BYTES` of effects."""
    block = block_positions(stride, n_targets)
    return block * max(1, round(CHUNK_BYTES / (block * 3 * max(n_targets, 1) * 2)))


def tile_first(position: int, contig_len: int, seq_len: int, stride: int) -> int:
    """1-based genome position of index 0 of the tile window holding 0-based ``position``."""
    k = position // stride
    return fitted_first(k * stride + 1, min((k + 1) * stride, contig_len), contig_len, seq_len)


def tile_center(position: int, contig_len: int, seq_len: int, stride: int) -> int:
    """1-based centre of the tile window holding 0-based ``position`` (as ``window_center`` reports it)."""
    return center_of(tile_first(position, contig_len, seq_len, stride), seq_len)
