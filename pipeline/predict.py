"""``predict`` (multiplexer effects) and ``ism`` (exact base-model effects) for regions or sequences.

Both write the same effects file (:mod:`pipeline.outputs`), and optionally one TSV per sequence.
``predict`` needs only the checkpoint: ``L``, ``F``, target names, kind, the default genome and the
base model's identity (for ``--diff``) come from it.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from pipeline.device import exact_float32, resolve_device
from pipeline.errors import UserError
from pipeline.ism import logfold_to_diff, mask_effects
from pipeline.outputs import EffectsWriter, check_free, tsv_paths, write_variant_tsv
from pipeline.regions import Inputs, require_bases


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
        (:func:`pipeline.ism.logfold_to_diff`).

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
    meta: dict[str, Any], device: torch.device, *, weights: str | os.PathLike | None = None, base: str | None = None
) -> nn.Module | None:
    """The base model needed to convert a checkpoint's log-fold effects to ``alt - ref``.

    ``None`` when the checkpoint already predicts ``diff``.
    """
    from pipeline.models import base_from_checkpoint

    if meta["target_kind"] == "diff":
        return None
    if meta["target_kind"] != "logfold":
        raise UserError(f"--diff converts log-fold effects; this checkpoint predicts {meta['target_kind']!r}")
    return base_from_checkpoint(meta, weights=weights, model=base).to(device)


def predict_effects(
    checkpoint: str,
    inputs: Inputs,
    out: str,
    *,
    device: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    diff: bool = False,
    weights: str | os.PathLike | None = None,
    base: str | None = None,
    tsv: bool = False,
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
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    batch_size : int
        Sequences per multiplexer pass.
    overwrite : bool
        Replace existing outputs.
    diff : bool
        Write ``alt - ref`` instead of log-fold effects: the checkpoint's recorded base model is
        rebuilt and run on each reference sequence (see :func:`multiplexer_effects`).
    weights : path, optional
        With ``diff``: the base model's weights file, if it moved since distillation.
    base : str, optional
        With ``diff``: the base model's import path, if its file moved.
    tsv : bool
        Also write one ``.tsv.gz`` per sequence (:func:`pipeline.outputs.tsv_paths`).

    Returns
    -------
    path : str
        The effects file.
    """
    from tqdm import tqdm

    from pipeline.models import load_checkpoint

    if not diff and (weights is not None or base is not None):
        raise UserError("--weights/--base only matter with --diff (the base model is not run otherwise)")
    dev = resolve_device(device)
    exact_float32()
    model, meta = load_checkpoint(checkpoint, dev)
    L = meta["seq_len"]
    if inputs.X.shape[-1] != L:
        raise UserError(f"inputs have length {inputs.X.shape[-1]}, the checkpoint's model takes {L}")
    require_bases(inputs)
    base_model = load_diff_base(meta, dev, weights=weights, base=base) if diff else None
    kind = "diff" if diff else meta["target_kind"]
    tsv_files = tsv_paths(out, inputs.chrom, inputs.center) if tsv else []
    check_free(tsv_files, overwrite)
    attrs = {"kind": kind, "source": "multiplexer", "checkpoint": str(checkpoint)}
    if base_model is not None:
        attrs["converted_from"] = "logfold"
    writer = EffectsWriter(
        out,
        n=len(inputs.X),
        n_targets=meta["n_targets"],
        seq_len=L,
        target_names=meta["target_names"],
        overwrite=overwrite,
        attrs=attrs,
    )
    with _cleanup_on_failure(writer) as written:
        for start in tqdm(range(0, len(inputs.X), batch_size), desc="predict", unit="batch", disable=not progress):
            sl = slice(start, start + batch_size)
            y = multiplexer_effects(model, torch.from_numpy(inputs.X[sl]).to(dev), base=base_model).cpu().numpy()
            writer.write(y, inputs.X[sl], inputs.chrom[sl], inputs.center[sl])
            for k, i in enumerate(range(start, start + len(y)) if tsv else []):
                write_variant_tsv(
                    tsv_files[i], y[k], inputs.X[i], inputs.chrom[i], inputs.center[i], meta["target_names"]
                )
                written.append(tsv_files[i])
        return writer.close()


@contextmanager
def _cleanup_on_failure(writer: EffectsWriter) -> Iterator[list[Path]]:
    """On any failure (disk full, an error, Ctrl-C) remove the partial effects file and the TSV files
    this run wrote (the caller appends them to the list it gets), so no half-written output is
    mistaken for a finished one; a write error (``OSError``) becomes one :class:`UserError` line
    naming the file."""
    written: list[Path] = []
    try:
        yield written
    except BaseException as exc:
        writer.abort()
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            where = exc.filename or writer.path
            raise UserError(f"cannot write output {str(where)!r}: {exc.strerror or exc}") from None
        raise


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
    tsv: bool = False,
) -> str:
    """Exact ISM with the base model for encoded inputs; writes the same format as :func:`predict_effects`.

    Parameters
    ----------
    base : nn.Module
        Base model ``[B, 4, L] -> [B, F]``.
    inputs : Inputs
        ``X [N, 4, L]`` with names and centers.
    out : str
        Output path (``.npz`` or Zarr).
    target : str
        ``logfold``, ``diff`` or ``alt``.
    target_names : list of str, length F
    engine : str
        ``auto``, ``fast`` or ``naive`` (:func:`pipeline.ism.choose_engine`).
    tsv : bool
        Also write one ``.tsv.gz`` per sequence.
    """
    from tqdm import tqdm

    from pipeline.ism import choose_engine, run_ism

    require_bases(inputs)
    dev = resolve_device(device)
    exact_float32()
    base = base.to(dev)
    tsv_files = tsv_paths(out, inputs.chrom, inputs.center) if tsv else []
    check_free(tsv_files, overwrite)
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
    with _cleanup_on_failure(writer) as written:
        for i in tqdm(range(len(inputs.X)), desc="ism", unit="seq", disable=not progress):
            y, _ = run_ism(
                base,
                torch.from_numpy(inputs.X[i : i + 1]),
                engine=engine,
                target=target,
                batch_size=batch_size,
                device=dev,
            )
            y = y.numpy()
            writer.write(y, inputs.X[i : i + 1], inputs.chrom[i : i + 1], inputs.center[i : i + 1])
            if tsv:
                write_variant_tsv(tsv_files[i], y[0], inputs.X[i], inputs.chrom[i], inputs.center[i], target_names)
                written.append(tsv_files[i])
        return writer.close()


def ism_setup(
    *,
    spec_path: str | None = None,
    checkpoint: str | None = None,
    base: str | None = None,
    weights: str | None = None,
    base_kwargs: str | None = None,
    seq_len: int | None = None,
    kind: str | None = None,
    genome: str | None = None,
    need_genome: bool = True,
) -> tuple[nn.Module, int, str, list[str], str | None]:
    """Resolve what ``ism`` runs from ``--spec``, ``--checkpoint`` or ``--base``.

    ``--spec``: the spec's base model, window length, kind, target names and genome.
    ``--checkpoint``: the base model recorded in a multiplexer checkpoint (``--weights``/``--base``
    point at a moved weights file / model file), with its ``L``, kind, target names and genome.
    ``--base``: a model by name or import path with ``--weights``/``--base-kwargs``.
    ``--genome`` always overrides the recorded genome; with ``need_genome=False`` (FASTA input) the
    recorded genome is not looked at.

    Returns
    -------
    model, seq_len, kind, target_names, genome
    """
    import json

    from pipeline.models import base_from_checkpoint, read_checkpoint
    from pipeline.models.registry import build_base, probe_outputs, target_names_for
    from pipeline.regions import resolve_genome

    if spec_path is not None and checkpoint is not None:
        raise UserError("give one of --spec or --checkpoint, not both")
    if spec_path is not None:
        from pipeline.distill import load_base
        from pipeline.spec import load_spec

        if base or weights or base_kwargs:
            raise UserError("--spec already names the base model; drop --base/--weights/--base-kwargs")
        spec = load_spec(spec_path)
        model, _, _, names = load_base(spec, torch.device("cpu"))
        genome = resolve_genome(genome, spec.genome_path if need_genome else None, f"spec {spec_path!r}")
        return model, seq_len or spec.seq_len, kind or spec.target, names, genome
    if checkpoint is not None:
        if base_kwargs:
            raise UserError("--checkpoint records the base model's arguments; drop --base-kwargs")
        meta = read_checkpoint(checkpoint)
        L = int(meta["seq_len"])
        if seq_len is not None and seq_len != L:
            raise UserError(f"--seq-len {seq_len} differs from the checkpoint's window length {L}")
        model = base_from_checkpoint(meta, weights=weights, model=base)
        n_targets = probe_outputs(model, L)
        if n_targets != meta["n_targets"]:
            raise UserError(
                f"the rebuilt base model has {n_targets} outputs but checkpoint {checkpoint!r} "
                f"records {meta['n_targets']}"
            )
        genome = resolve_genome(genome, meta.get("genome") if need_genome else None, f"checkpoint {checkpoint!r}")
        return model, L, kind or meta["target_kind"], list(meta["target_names"]), genome
    if base is None:
        raise UserError("give --spec, --checkpoint, or --base (with --weights for trained models)")
    try:
        kwargs = json.loads(base_kwargs) if base_kwargs else {}
    except json.JSONDecodeError as exc:
        raise UserError(f"--base-kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise UserError("--base-kwargs must be a JSON object")
    model = build_base(base, weights, **kwargs)
    L = seq_len or getattr(model, "seq_len", None)
    if L is None:
        raise UserError(f"{base} does not say its window length; pass --seq-len")
    n_targets = probe_outputs(model, L)
    return model, int(L), kind or "logfold", target_names_for(model, n_targets), genome
