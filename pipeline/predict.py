"""``predict`` (multiplexer effects) and ``ism`` (exact base-model effects) for regions or sequences.

Both write the same effects file (:mod:`pipeline.outputs`). ``predict`` needs only the checkpoint:
``L``, ``F``, target names, kind and the default genome come from it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from pipeline.device import exact_float32, resolve_device
from pipeline.errors import UserError
from pipeline.ism import mask_effects
from pipeline.outputs import EffectsWriter
from pipeline.regions import Inputs


def predict_effects(
    checkpoint: str,
    inputs: Inputs,
    out: str,
    *,
    device: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Run a trained multiplexer on encoded inputs and write the effects file.

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt``.
    inputs : Inputs
        ``X [N, 4, L]`` with names and centers (see :func:`pipeline.regions.load_inputs`).
    out : str
        Output path (``.npz`` or Zarr).
    """
    from tqdm import tqdm

    from pipeline.models import load_checkpoint

    dev = resolve_device(device)
    exact_float32()
    model, meta = load_checkpoint(checkpoint, dev)
    L = meta["seq_len"]
    if inputs.X.shape[-1] != L:
        raise UserError(f"inputs have length {inputs.X.shape[-1]}, the checkpoint's model takes {L}")
    writer = EffectsWriter(
        out,
        n=len(inputs.X),
        n_targets=meta["n_targets"],
        seq_len=L,
        target_names=meta["target_names"],
        overwrite=overwrite,
        attrs={"kind": meta["target_kind"], "source": "multiplexer", "checkpoint": str(checkpoint)},
    )
    with torch.no_grad():
        for start in tqdm(range(0, len(inputs.X), batch_size), desc="predict", unit="batch", disable=not progress):
            sl = slice(start, start + batch_size)
            X = torch.from_numpy(inputs.X[sl].astype(np.float32)).to(dev)
            y = mask_effects(model(X).float(), X)
            writer.write(y.cpu().numpy(), inputs.X[sl], inputs.chrom[sl], inputs.center[sl])
    return writer.close()


def ism_effects(
    base: torch.nn.Module,
    inputs: Inputs,
    out: str,
    *,
    target: str = "logfold",
    target_names: list[str],
    engine: str = "auto",
    device: str | None = None,
    batch_size: int = 1024,
    overwrite: bool = False,
    progress: bool = True,
    attrs: dict[str, Any] | None = None,
) -> str:
    """Exact ISM with the base model for encoded inputs; writes the same format as :func:`predict_effects`."""
    from tqdm import tqdm

    from pipeline.ism import choose_engine, run_ism

    dev = resolve_device(device)
    exact_float32()
    base = base.to(dev)
    engine = choose_engine(base, inputs.X.shape[-1], engine, dev, lambda m: tqdm.write(m, file=sys.stderr))
    writer = EffectsWriter(
        out,
        n=len(inputs.X),
        n_targets=len(target_names),
        seq_len=inputs.X.shape[-1],
        target_names=target_names,
        overwrite=overwrite,
        attrs={"kind": target, "source": "ism", **(attrs or {})},
    )
    for i in tqdm(range(len(inputs.X)), desc="ism", unit="seq", disable=not progress):
        y, _ = run_ism(
            base, torch.from_numpy(inputs.X[i : i + 1]), engine=engine, target=target, batch_size=batch_size, device=dev
        )
        writer.write(y.numpy(), inputs.X[i : i + 1], inputs.chrom[i : i + 1], inputs.center[i : i + 1])
    return writer.close()
