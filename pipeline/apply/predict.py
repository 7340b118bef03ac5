"""``predict``: a trained multiplexer's effects for regions or sequences, one forward pass per window.

Writes the same effects file as ``ism`` (:mod:`pipeline.apply.outputs`), and optionally one TSV per
sequence. ``predict`` needs only the checkpoint: ``L``, ``F``, target names, kind, the default genome
and the base model's identity (for ``--diff``) come from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pipeline.apply.inputs import Inputs, load_inputs, require_bases, resolve_genome
from pipeline.apply.outputs import WrittenEffects, check_effects_output, effects_output, tsv_paths
from pipeline.core.commands import InputOptions, PredictOptions
from pipeline.core.progress import progress_bar
from pipeline.core.runtime import exact_float32, resolve_device
from pipeline.errors import UserError
from pipeline.ism import logfold_to_diff, mask_effects
from pipeline.models import base_from_checkpoint, for_inference, load_checkpoint, read_checkpoint


@torch.no_grad()
def multiplexer_effects(model: nn.Module, X: torch.Tensor, *, base: nn.Module | None = None) -> torch.Tensor:
    """One multiplexer pass, with exact zeros at reference bases and ``N`` columns.

    Parameters
    ----------
    model : nn.Module
        Multiplexer predicting log-fold (or diff) effects.
    X : torch.Tensor, shape=(B, 4, L)
        One-hot sequences on the model's device.
    base : nn.Module, optional
        The base model the multiplexer was distilled from; when given, the log-fold effects are
        turned into ``alt - ref`` with its prediction on ``X`` as ``ref``
        (:func:`pipeline.ism.effects.logfold_to_diff`).

    Returns
    -------
    y : torch.Tensor, shape=(B, F, 4, L), float32, on ``X``'s device
    """
    X = X.float()
    y = mask_effects(model(X).float(), X)
    if base is not None:
        y = logfold_to_diff(y, base(X).float())
    return y


def load_diff_base(
    meta: dict[str, Any],
    device: torch.device,
    *,
    weights: str | os.PathLike[str] | None = None,
    base: str | None = None,
) -> nn.Module | None:
    """The base model needed to convert a checkpoint's log-fold effects to ``alt - ref``.

    ``None`` when the checkpoint already predicts ``diff``.
    """
    if meta["target_kind"] == "diff":
        return None
    if meta["target_kind"] != "logfold":
        raise UserError(f"--diff converts log-fold effects; this checkpoint predicts {meta['target_kind']!r}")
    return base_from_checkpoint(meta, weights=weights, model=base).to(device)


@exact_float32()
def predict_effects(
    checkpoint: str,
    inputs: Inputs,
    out: str,
    options: PredictOptions | None = None,
    *,
    sources: Mapping[str, str | os.PathLike[str] | None] | None = None,
    progress: bool = True,
) -> str:
    """Run a trained multiplexer on encoded inputs and write the effects file.

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt``.
    inputs : Inputs
        ``X [N, 4, L]`` with names and centers (see :func:`pipeline.apply.inputs.load_inputs`).
    out : str
        Output path (``.npz`` or Zarr).
    options : PredictOptions, optional
        Device, sequences per pass, ``--overwrite`` (replace existing outputs of the same kind,
        :func:`pipeline.apply.outputs.check_output`; the new ones are written under temporary names
        and swapped in when complete), ``--tsv`` (one ``.tsv.gz`` per sequence,
        :func:`pipeline.apply.outputs.tsv_paths`), ``--diff`` (``alt - ref`` instead of log-fold: the
        checkpoint's recorded base model is rebuilt and run on each reference sequence, see
        :func:`multiplexer_effects`; ``weights``/``base``: where its files moved) and the precision
        (:class:`~pipeline.core.commands.PredictOptions`; default: all defaults).
    sources : mapping, optional
        The command's other input files by option (``--regions``, ``--fasta``, ``--genome``), which
        ``out`` must not replace (``checkpoint`` and ``weights`` are always checked).
    progress : bool
        Show a progress bar.

    Returns
    -------
    path : str
        The effects file.
    """
    o = options or PredictOptions()
    if not o.diff and (o.weights is not None or o.base is not None):
        raise UserError("--weights/--base only matter with --diff (the base model is not run otherwise)")
    tsv_files = tsv_paths(out, inputs.chrom, inputs.center) if o.tsv else []
    named = {"--checkpoint": checkpoint, "--weights": o.weights, **(sources or {})}
    check_effects_output(out, tsv_files, overwrite=o.overwrite, inputs=named)  # before any work
    dev = resolve_device(o.device)
    model, meta = load_checkpoint(checkpoint, dev)
    model = for_inference(model, o.precision)
    L = meta["seq_len"]
    if inputs.X.shape[-1] != L:
        raise UserError(f"inputs have length {inputs.X.shape[-1]}, the checkpoint's model takes {L}")
    require_bases(inputs)
    base_model = load_diff_base(meta, dev, weights=o.weights, base=o.base) if o.diff else None
    kind = "diff" if o.diff else meta["target_kind"]
    attrs = {"kind": kind, "source": "multiplexer", "checkpoint": str(checkpoint)}
    if base_model is not None:
        attrs["converted_from"] = "logfold"
    with effects_output(
        out,
        n=len(inputs.X),
        seq_len=L,
        target_names=meta["target_names"],
        attrs=attrs,
        tsv_files=tsv_files,
        overwrite=o.overwrite,
        inputs=named,
    ) as output:
        batch = o.batch_size
        with progress_bar(desc="predict", unit="window", total=len(inputs.X), enabled=progress) as bar:
            for start in range(0, len(inputs.X), batch):
                sl = slice(start, start + batch)
                y = multiplexer_effects(model, torch.from_numpy(inputs.X[sl]).to(dev), base=base_model).cpu().numpy()
                output.write(y, inputs.X[sl], inputs.chrom[sl], inputs.center[sl])
                for k, i in enumerate(range(start, start + len(y)) if o.tsv else []):
                    output.write_tsv(i, y[k], inputs.X[i], inputs.chrom[i], inputs.center[i])
                bar.update(len(y))
    return str(out)


def predict_regions(
    checkpoint: str,
    out: str,
    inputs: InputOptions,
    options: PredictOptions | None = None,
    *,
    progress: bool = True,
) -> WrittenEffects:
    """``multiplexer predict``: encode the inputs with the checkpoint's ``L`` (regions from
    ``inputs.genome``, default the checkpoint's) and run :func:`predict_effects`."""
    options = options or PredictOptions()
    genome, fasta = inputs.genome, inputs.fasta
    sources = {"--checkpoint": checkpoint, "--regions": inputs.regions_file, "--fasta": fasta, "--genome": genome}
    check_effects_output(out, [], overwrite=options.overwrite, inputs=sources)  # before any work
    meta = read_checkpoint(checkpoint)
    recorded = resolve_genome(genome, meta.get("genome"), f"checkpoint {checkpoint!r}") if fasta is None else None
    encoded = load_inputs(
        seq_len=meta["seq_len"],
        genome=recorded,
        region=inputs.region,
        regions_file=inputs.regions_file,
        fasta=fasta,
        recorded_fingerprint=meta.get("genome_fingerprint"),
    )
    sources["--genome"] = recorded
    path = predict_effects(checkpoint, encoded, out, options, sources=sources, progress=progress)
    kind = "alt - ref" if options.diff else meta["target_kind"]
    files = tsv_paths(out, encoded.chrom, encoded.center) if options.tsv else []
    return WrittenEffects(path, len(encoded.X), f"{kind} effects", files)
