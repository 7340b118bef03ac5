"""Bit-rounding of float16 targets (``storage.quantize: bitround-K``), applied as a store unit is written.

Kept apart from :mod:`pipeline.core.spec` (which names the allowed values, :data:`~pipeline.core.spec.QUANTIZE`)
because it needs numpy, which the command line does not load for ``--help``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def bitround(values: Any, quantize: str) -> Any:
    """Round float16 ``values`` to nearest keeping ``K`` mantissa bits (``quantize`` = ``bitround-K``;
    ``none`` returns them unchanged). Relative error at most ``2^-(K+1)``; 0 stays exactly 0.

    Parameters
    ----------
    values : np.ndarray, float16
    quantize : str
        One of :data:`~pipeline.core.spec.QUANTIZE`.
    """
    if quantize == "none":
        return values
    drop = 10 - int(quantize.split("-")[1])
    bits = np.ascontiguousarray(values, dtype=np.float16).view(np.uint16).astype(np.uint32)
    half = np.uint32(1 << (drop - 1))
    mask = np.uint32((0xFFFF >> drop) << drop)
    finite = (bits & 0x7C00) != 0x7C00  # leave inf and NaN alone
    rounded = np.where(finite, (bits + half) & mask, bits)
    return rounded.astype(np.uint16).view(np.float16)
