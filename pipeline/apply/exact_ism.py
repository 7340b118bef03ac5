"""``ism``: exact in-silico mutagenesis with the base model, in the same output format as ``predict``.

The base model comes from a spec (``--spec``), from the identity recorded in a multiplexer checkpoint
(``--checkpoint``, so exact ISM of the same windows is one flag away from ``predict``), or from a
name or import path (``--base`` with ``--weights``/``--base-kwargs``/``--seq-len``); :func:`ism_setup`
resolves which, and :func:`ism_effects` runs the engine (:mod:`pipeline.ism`) and writes the effects
file. A model named with ``--base`` and without a weights file is initialised from seed
:data:`ISM_SEED`; Beluga (published weights) needs ``--weights FILE`` or ``--weights random``.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from pipeline.apply.inputs import Inputs, load_inputs, require_bases, resolve_genome
from pipeline.apply.outputs import WrittenEffects, check_effects_output, effects_output, tsv_paths
from pipeline.core.commands import InputOptions, IsmOptions, IsmSource
from pipeline.core.progress import Share, progress_bar
from pipeline.core.runtime import exact_float32, resolve_device
from pipeline.core.spec import RANDOM_WEIGHTS, load_spec
from pipeline.core.yamlio import json_object
from pipeline.errors import SpecError, UserError, check_choice
from pipeline.ism import TARGETS, choose_engine, run_ism
from pipeline.models import (
    BASE_MODELS,
    BaseModel,
    base_from_checkpoint,
    base_identity,
    build_seeded_base,
    check_weights_choice,
    load_base,
    model_class,
    probe_outputs,
    read_checkpoint,
    target_names_for,
)

ISM_SEED = 0
"""Seed of a ``--base`` model's initialisation when it has no weights file (``--weights random``, or a
user class without weights)."""


@exact_float32()
def ism_effects(
    base: torch.nn.Module,
    inputs: Inputs,
    out: str,
    options: IsmOptions | None = None,
    *,
    target_names: list[str],
    attrs: dict[str, Any] | None = None,
    sources: Mapping[str, str | os.PathLike[str] | None] | None = None,
    progress: bool = True,
) -> str:
    """Exact ISM with the base model for encoded inputs; writes the same format as ``predict``.

    Parameters
    ----------
    base : nn.Module
        Base model ``[B, 4, L] -> [B, F]``.
    inputs : Inputs
        ``X [N, 4, L]`` with names and centers.
    out : str
        Output path (``.npz`` or Zarr).
    options : IsmOptions, optional
        The effect kind (``target``: ``logfold``, the default, ``diff`` or ``alt``), the engine
        (``auto``, ``fast`` or ``naive``, :func:`pipeline.ism.choose_engine`), variants per pass,
        device, ``--overwrite`` (replace existing outputs of the same kind,
        :func:`pipeline.apply.outputs.check_output`; the new ones are written under temporary names
        and swapped in when complete) and ``--tsv`` (one ``.tsv.gz`` per sequence)
        (:class:`~pipeline.core.commands.IsmOptions`; default: all defaults).
    target_names : list of str, length F
    attrs : dict, optional
        More attributes to record in the effects file.
    sources : mapping, optional
        The command's input files by option (``--spec``, ``--checkpoint``, ``--genome``, ...), which
        ``out`` must not replace.
    progress : bool
        Show a progress bar.

    Returns
    -------
    path : str
        The effects file.
    """
    o = options or IsmOptions()
    target = check_choice("target kind", o.target or "logfold", TARGETS)
    require_bases(inputs)
    tsv_files = tsv_paths(out, inputs.chrom, inputs.center) if o.tsv else []
    check_effects_output(out, tsv_files, overwrite=o.overwrite, inputs=sources)  # before any work
    dev = resolve_device(o.device)
    base = base.to(dev)
    engine = choose_engine(base, inputs.X.shape[-1], o.engine, dev, lambda m: print(m, file=sys.stderr))
    with effects_output(
        out,
        n=len(inputs.X),
        seq_len=inputs.X.shape[-1],
        target_names=target_names,
        attrs={"kind": target, "source": "ism", **(attrs or {})},
        tsv_files=tsv_files,
        overwrite=o.overwrite,
        inputs=sources,
    ) as output:
        with progress_bar(desc="ism", unit="window", total=len(inputs.X), enabled=progress) as bar:
            for i in range(len(inputs.X)):
                share = Share(bar, 1, 3 * int((inputs.X[i].sum(axis=0) > 0).sum()))  # the engine reports variants
                effects, _ = run_ism(
                    base,
                    torch.from_numpy(inputs.X[i : i + 1]),
                    engine=engine,
                    target=target,
                    batch_size=o.batch_size,
                    device=dev,
                    progress=share,
                )
                share.finish()
                y = effects.numpy()
                output.write(y, inputs.X[i : i + 1], inputs.chrom[i : i + 1], inputs.center[i : i + 1])
                if o.tsv:
                    output.write_tsv(i, y[0], inputs.X[i], inputs.chrom[i], inputs.center[i])
    return str(out)


@dataclass
class IsmSetup:
    """What ``ism`` runs: the base model, the effect kind it comes with (the spec's or checkpoint's;
    ``logfold`` for a model named by ``--base``), and the genome to read regions from (with the
    fingerprint a checkpoint recorded of its genome, if any)."""

    base: BaseModel
    kind: str
    genome: str | None
    recorded_fingerprint: Mapping[str, Any] | None = None


def ism_setup(source: IsmSource, *, genome: str | None = None, need_genome: bool = True) -> IsmSetup:
    """Resolve what ``ism`` runs from ``--spec``, ``--checkpoint`` or ``--base`` (``source``).

    ``--spec``: the spec's base model, window length, kind, target names and genome.
    ``--checkpoint``: the base model recorded in a multiplexer checkpoint (``--weights``/``--base``
    point at a moved weights file / model file), with its ``L``, kind, target names and genome.
    ``--base``: a model by name or import path with ``--weights`` (a file, or ``random``: initialised
    from seed :data:`ISM_SEED`), ``--base-kwargs`` and ``--seq-len`` (passed to the constructor as
    ``seq_len`` when the class takes it); its kind is ``logfold``.
    ``genome`` (``--genome``) always overrides the recorded genome; with ``need_genome=False`` (FASTA
    input) the recorded genome is not looked at.
    """
    spec_path, checkpoint, base, weights = source.spec_path, source.checkpoint, source.base, source.weights
    if spec_path is not None and checkpoint is not None:
        raise UserError("give one of --spec or --checkpoint, not both")
    if spec_path is not None:
        if base or weights or source.base_kwargs:
            raise UserError("--spec already names the base model; drop --base/--weights/--base-kwargs")
        return _from_spec(spec_path, source.seq_len, genome, need_genome)
    if checkpoint is not None:
        if source.base_kwargs:
            raise UserError("--checkpoint records the base model's arguments; drop --base-kwargs")
        if weights == RANDOM_WEIGHTS:
            raise UserError("--checkpoint records the base model's weights; drop --weights random")
        return _from_checkpoint(checkpoint, weights, base, source.seq_len, genome, need_genome)
    if base is None:
        raise UserError("give --spec, --checkpoint, or --base (with --weights for trained models)")
    return _from_name(base, weights, source.base_kwargs, source.seq_len, genome)


def _from_spec(spec_path: str, seq_len: int | None, genome: str | None, need_genome: bool) -> IsmSetup:
    spec = load_spec(spec_path)
    loaded = load_base(spec)
    if seq_len is not None and seq_len != spec.seq_len:
        raise UserError(f"--seq-len {seq_len} differs from the spec's window length {spec.seq_len}")
    genome = resolve_genome(genome, spec.genome_path if need_genome else None, f"spec {spec_path!r}")
    return IsmSetup(loaded, spec.target, genome)


def _from_checkpoint(
    checkpoint: str,
    weights: str | None,
    base: str | None,
    seq_len: int | None,
    genome: str | None,
    need_genome: bool,
) -> IsmSetup:
    meta = read_checkpoint(checkpoint)
    L = int(meta["seq_len"])
    if seq_len is not None and seq_len != L:
        raise UserError(f"--seq-len {seq_len} differs from the checkpoint's window length {L}")
    module = base_from_checkpoint(meta, weights=weights, model=base)
    n_targets = probe_outputs(module, L)
    if n_targets != meta["n_targets"]:
        raise UserError(
            f"the rebuilt base model has {n_targets} outputs but checkpoint {checkpoint!r} records {meta['n_targets']}"
        )
    loaded = BaseModel(module, dict(meta["base"]), L, n_targets, list(meta["target_names"]))
    genome = resolve_genome(genome, meta.get("genome") if need_genome else None, f"checkpoint {checkpoint!r}")
    return IsmSetup(loaded, meta["target_kind"], genome, meta.get("genome_fingerprint"))


def _from_name(
    name: str, weights: str | None, base_kwargs: str | None, seq_len: int | None, genome: str | None
) -> IsmSetup:
    random = weights == RANDOM_WEIGHTS
    path = None if random else weights
    check_weights_choice(
        name,
        has_file=path is not None,
        random=random,
        file_fix="pass --weights with its state-dict file",
        random_form="--weights random",
    )
    kwargs = _constructor_kwargs(name, base_kwargs, seq_len)
    module = build_seeded_base(name, path, ISM_SEED, kwargs)
    own = getattr(module, "seq_len", None)
    if seq_len is not None and own is not None and int(own) != seq_len:
        raise SpecError(
            f"--seq-len {seq_len} does not fit base model {name}, whose window is {int(own)} bases "
            f"(its constructor takes no seq_len); drop --seq-len"
        )
    L = seq_len or own
    if L is None:
        raise UserError(f"{name} does not say its window length; pass --seq-len")
    n_targets = probe_outputs(module, int(L))
    identity = base_identity(name, path, kwargs, module, seed=ISM_SEED)
    return IsmSetup(
        BaseModel(module, identity, int(L), n_targets, target_names_for(module, n_targets)), "logfold", genome
    )


def _constructor_kwargs(name: str, base_kwargs: str | None, seq_len: int | None) -> dict[str, Any]:
    """``--base-kwargs`` as a dict, plus ``seq_len`` from ``--seq-len`` when the class takes it (the
    two must agree when both give it)."""
    kwargs = json_object(base_kwargs, "--base-kwargs") if base_kwargs else {}
    if seq_len is None or "seq_len" not in inspect.signature(model_class(name, BASE_MODELS)).parameters:
        return kwargs
    if "seq_len" in kwargs and kwargs["seq_len"] != seq_len:
        raise SpecError(f"--seq-len {seq_len} and --base-kwargs seq_len {kwargs['seq_len']} disagree; give one")
    return {**kwargs, "seq_len": seq_len}


def exact_ism_regions(
    out: str,
    source: IsmSource,
    inputs: InputOptions,
    options: IsmOptions | None = None,
    *,
    progress: bool = True,
) -> WrittenEffects:
    """``multiplexer ism``: resolve the base model (:func:`ism_setup`), encode the inputs and run
    :func:`ism_effects` (the effect kind: ``options.target``, else the spec's or checkpoint's)."""
    options = options or IsmOptions()
    sources: dict[str, str | None] = {
        "--spec": source.spec_path,
        "--checkpoint": source.checkpoint,
        "--weights": None if source.weights == RANDOM_WEIGHTS else source.weights,
        "--regions": inputs.regions_file,
        "--fasta": inputs.fasta,
        "--genome": inputs.genome,
    }
    check_effects_output(out, [], overwrite=options.overwrite, inputs=sources)  # before any work
    setup = ism_setup(source, genome=inputs.genome, need_genome=inputs.fasta is None)
    kind = options.target or setup.kind
    encoded = load_inputs(
        seq_len=setup.base.seq_len,
        genome=setup.genome,
        region=inputs.region,
        regions_file=inputs.regions_file,
        fasta=inputs.fasta,
        recorded_fingerprint=setup.recorded_fingerprint,
    )
    sources["--genome"] = setup.genome
    path = ism_effects(
        setup.base.module,
        encoded,
        out,
        replace(options, target=kind),
        target_names=setup.base.target_names,
        sources=sources,
        progress=progress,
    )
    files = tsv_paths(out, encoded.chrom, encoded.center) if options.tsv else []
    return WrittenEffects(path, len(encoded.X), f"exact ISM {kind} effects", files)
