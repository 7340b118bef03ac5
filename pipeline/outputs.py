"""The effects file written by ``predict`` and ``ism`` (and read by ``plot``).

Zarr (default; any path not ending in ``.npz``) or ``.npz`` with::

    effects    float32 [N, F, 4, L]   y[i, f, b, j]: effect on target f of setting position j to b
    reference  uint8   [N, 4, L]      one-hot input (A, G, C, T)
    chrom      str     [N]            chromosome (or FASTA record name)
    center     int64   [N]            1-based window center (0 for FASTA input)
    target_names str   [F]
    attributes: kind (logfold | diff | alt), alphabet, seq_len, source (multiplexer | ism), ...

An existing output is never overwritten unless asked to.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.encoding import ALPHABET
from pipeline.errors import UserError


class EffectsWriter:
    """Write effects batch by batch (Zarr) or all at once on :meth:`close` (``.npz``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        n: int,
        n_targets: int,
        seq_len: int,
        target_names: list[str],
        attrs: dict[str, Any],
        overwrite: bool = False,
    ) -> None:
        import zarr

        self.path = Path(path)
        self.npz = self.path.suffix == ".npz"
        if self.path.exists():
            if not overwrite:
                raise UserError(f"output {str(self.path)!r} exists; remove it or pass --overwrite")
            if self.path.is_dir():
                if not (self.path / "zarr.json").exists():
                    raise UserError(f"refusing to replace folder {str(self.path)!r}: it is not a Zarr store")
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        if not self.path.parent.exists():
            raise UserError(f"output folder {str(self.path.parent)!r} does not exist")
        self.attrs = {"alphabet": ALPHABET, "seq_len": seq_len, "n_targets": n_targets, **attrs}
        self.target_names = list(target_names)
        self.n, self.pos = n, 0
        if self.npz:
            self.effects = np.zeros((n, n_targets, 4, seq_len), dtype=np.float32)
            self.reference = np.zeros((n, 4, seq_len), dtype=np.uint8)
        else:
            g = zarr.open_group(str(self.path), mode="w-")
            g.create_array(
                "effects",
                shape=(n, n_targets, 4, seq_len),
                chunks=(1, n_targets, 4, seq_len),
                dtype="float32",
                dimension_names=["sample", "target", "base", "position"],
            )
            g.create_array(
                "reference",
                shape=(n, 4, seq_len),
                chunks=(max(1, min(n, 64)), 4, seq_len),
                dtype="uint8",
                dimension_names=["sample", "base", "position"],
            )
            self.group = g
        self.chrom: list[str] = []
        self.center: list[int] = []

    def write(self, effects: np.ndarray, reference: np.ndarray, chrom: list[str], center: np.ndarray) -> None:
        """Append a batch: ``effects [n, F, 4, L]``, ``reference [n, 4, L]``."""
        k = effects.shape[0]
        sl = slice(self.pos, self.pos + k)
        if self.npz:
            self.effects[sl], self.reference[sl] = effects, reference
        else:
            self.group["effects"][sl] = effects.astype(np.float32)
            self.group["reference"][sl] = reference.astype(np.uint8)
        self.chrom += list(chrom)
        self.center += [int(c) for c in center]
        self.pos += k

    def close(self) -> str:
        if self.pos != self.n:
            raise RuntimeError(f"wrote {self.pos} of {self.n} samples")
        if self.npz:
            np.savez_compressed(
                self.path,
                effects=self.effects,
                reference=self.reference,
                chrom=np.array(self.chrom),
                center=np.array(self.center, dtype=np.int64),
                target_names=np.array(self.target_names),
                attrs=np.array(json.dumps(self.attrs)),
            )
        else:
            g = self.group
            g.create_array("chrom", shape=(self.n,), dtype=str, dimension_names=["sample"])[:] = np.array(
                self.chrom, dtype=object
            )
            g.create_array("center", shape=(self.n,), dtype="int64", dimension_names=["sample"])[:] = np.array(
                self.center
            )
            g.create_array("target_names", shape=(len(self.target_names),), dtype=str, dimension_names=["target"])[
                :
            ] = np.array(self.target_names, dtype=object)
            g.attrs.update(self.attrs)
        return str(self.path)


def read_effects(path: str | Path) -> dict[str, Any]:
    """Read an effects file into numpy arrays plus ``attrs``."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise UserError(f"effects file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in ("effects", "reference", "chrom", "center", "target_names")}
                out["attrs"] = json.loads(str(z["attrs"]))
        else:
            g = zarr.open_group(str(path), mode="r")
            out = {k: np.asarray(g[k][:]) for k in ("effects", "reference", "chrom", "center", "target_names")}
            out["attrs"] = dict(g.attrs)
    except Exception as exc:
        raise UserError(
            f"{str(path)!r} is not an effects file written by predict/ism ({type(exc).__name__}: {exc})"
        ) from None
    out["chrom"] = [str(c) for c in out["chrom"]]
    out["target_names"] = [str(t) for t in out["target_names"]]
    return out
