"""One-hot encoding of DNA in the project's fixed alphabet order ``A, G, C, T``.

Reads strings, returns ``uint8``/``float32`` arrays of shape ``[4, L]``. ``N`` and every other
character (IUPAC codes, ``-``) encode as an all-zero column; lower case (soft-masked) bases encode
like upper case.
"""

from __future__ import annotations

import numpy as np

ALPHABET = "AGCT"
"""Index ``b`` of a one-hot column is base ``ALPHABET[b]`` (Beluga's training order)."""

_LOOKUP = np.full(256, 4, dtype=np.uint8)
for _i, _base in enumerate(ALPHABET):
    _LOOKUP[ord(_base)] = _i
    _LOOKUP[ord(_base.lower())] = _i
_EYE = np.concatenate([np.eye(4, dtype=np.uint8), np.zeros((1, 4), dtype=np.uint8)])


def base_codes(seq: str) -> np.ndarray:
    """Map a sequence to base codes.

    Parameters
    ----------
    seq : str
        DNA, any case; anything outside ``ACGTacgt`` counts as unknown.

    Returns
    -------
    codes : np.ndarray, shape=(L,), dtype=uint8
        ``0..3`` for ``A, G, C, T`` and ``4`` for ``N``/other.
    """
    raw = np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)
    return _LOOKUP[raw]


def one_hot(seq: str) -> np.ndarray:
    """One-hot encode a sequence.

    Parameters
    ----------
    seq : str
        DNA of length ``L``.

    Returns
    -------
    X : np.ndarray, shape=(4, L), dtype=uint8
        ``X[b, j] == 1`` where position ``j`` is base ``ALPHABET[b]``; N/other columns are all 0.
    """
    return np.ascontiguousarray(_EYE[base_codes(seq)].T)


def codes_to_one_hot(codes: np.ndarray) -> np.ndarray:
    """Turn base codes ``[..., L]`` (``4`` = unknown) into one-hot ``[..., 4, L]`` uint8."""
    return np.ascontiguousarray(np.moveaxis(_EYE[codes], -1, -2))


def decode(X: np.ndarray) -> str:
    """Inverse of :func:`one_hot`: ``[4, L]`` one-hot back to a string (``N`` for zero columns)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] != 4:
        raise ValueError(f"expected a one-hot array of shape [4, L], got {list(X.shape)}")
    letters = np.frombuffer((ALPHABET + "N").encode(), dtype=np.uint8)
    present = X.sum(axis=0) > 0
    idx = np.where(present, X.argmax(axis=0), 4)
    return letters[idx].tobytes().decode()
