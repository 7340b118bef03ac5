"""The Python API: a trained multiplexer from a notebook, with the command line's semantics.

Four calls, each the library function behind a command (never a second implementation):

- :func:`load` — a checkpoint, ready to run (:class:`Model`);
- :func:`predict` / :func:`predict_regions` — effects ``[N, F, 4, L]`` of sequences (strings or one-hot
  arrays) or of genome regions, as ``numpy`` or ``torch`` (``multiplexer predict``:
  :func:`pipeline.apply.predict.multiplexer_effects`);
- :func:`score_variants` — a VCF or a list of variants into a ``pandas.DataFrame``
  (``multiplexer score-vcf``: :func:`pipeline.apply.variants.score_vcf.score_vcf`);
- :func:`lookup` — variants answered from a catalogue into a DataFrame (``multiplexer lookup``:
  :func:`pipeline.apply.variants.lookup.lookup`).

A DataFrame is the TSV the command writes, read back (:func:`read_scores_frame`): the same columns
(``chrom … status``, one per target, ``<target>_ref``/``<target>_alt`` with ``values="ref,alt"``),
the same numbers (6 significant digits), and the semantics in ``DataFrame.attrs["semantics"]``.
pandas comes with the ``tables`` extra (``pip install 'multiplexer[tables]'``); without it the
DataFrame calls raise a one-line :class:`~pipeline.errors.UserError`. This module is an entry point
like ``pipeline.cli`` and imports no click (``docs/python-api.md``).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pipeline.apply.inputs import Inputs, encode_regions, require_bases, resolve_genome
from pipeline.apply.predict import load_diff_base, multiplexer_effects
from pipeline.apply.variants.lookup import lookup as lookup_catalogue
from pipeline.apply.variants.lookup import parse_variant
from pipeline.apply.variants.options import LookupOptions, ScoreVcfOptions
from pipeline.apply.variants.score_vcf import score_vcf
from pipeline.core.encoding import one_hot
from pipeline.core.runtime import exact_float32, resolve_device
from pipeline.core.windows import parse_region
from pipeline.errors import UserError
from pipeline.models import for_inference, load_checkpoint

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Model",
    "load",
    "lookup",
    "predict",
    "predict_regions",
    "read_scores_frame",
    "score_variants",
]

TABLES_EXTRA = "tables"
"""The extra that brings pandas (and pyarrow): ``pip install 'multiplexer[tables]'``."""

Output = Literal["numpy", "torch"]


def _pandas() -> Any:
    """pandas, or a one-line error naming the extra that installs it."""
    try:
        import pandas
    except ImportError:
        raise UserError(f"the Python API's DataFrames need pandas: pip install 'multiplexer[{TABLES_EXTRA}]'") from None
    return pandas


@dataclass
class Model:
    """A loaded checkpoint: the multiplexer on its device, and what the checkpoint records.

    Attributes
    ----------
    checkpoint : str
        The ``best.pt``/``last.pt`` path (what :func:`score_variants` scores with).
    module : torch.nn.Module
        The multiplexer ``[B, 4, L] -> [B, F, 4, L]`` (eval mode; wrapped for ``bf16``).
    meta : dict
        The checkpoint's record (``seq_len``, ``target_names``, ``target_kind``, ``base``, ``genome``, ...).
    device : torch.device
    precision : str
        ``float32`` or ``bf16``.
    """

    checkpoint: str
    module: nn.Module
    meta: dict[str, Any]
    device: torch.device
    precision: str = "float32"

    @property
    def seq_len(self) -> int:
        """The window length ``L``."""
        return int(self.meta["seq_len"])

    @property
    def target_names(self) -> list[str]:
        """The ``F`` target names, in output order."""
        return list(self.meta["target_names"])

    @property
    def target_kind(self) -> str:
        """``logfold`` or ``diff``: what the multiplexer predicts."""
        return str(self.meta["target_kind"])


def load(checkpoint: str | os.PathLike[str], *, device: str = "auto", precision: str = "float32") -> Model:
    """Load a trained multiplexer (``multiplexer predict --checkpoint``).

    Parameters
    ----------
    checkpoint : path
        ``best.pt`` or ``last.pt`` of a training run.
    device : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``, ...
    precision : {"float32", "bf16"}

    Returns
    -------
    Model

    Examples
    --------
    >>> model = load("runs/demo/best.pt", device="cpu")
    >>> model.seq_len, model.target_names[:2]
    """
    dev = resolve_device(device)
    module, meta = load_checkpoint(checkpoint, dev)
    return Model(str(checkpoint), for_inference(module, precision), meta, dev, precision)


def _one_hot(sequences: str | Sequence[str] | np.ndarray | torch.Tensor, seq_len: int) -> np.ndarray:
    """``[N, 4, L]`` uint8/float one-hot inputs from strings or arrays (a lone sequence becomes ``N = 1``)."""
    if isinstance(sequences, str):
        sequences = [sequences]
    if isinstance(sequences, torch.Tensor):
        sequences = sequences.detach().cpu().numpy()
    if isinstance(sequences, np.ndarray):
        X = sequences[None] if sequences.ndim == 2 else sequences
        if X.ndim != 3 or X.shape[1] != 4:
            raise UserError(f"one-hot inputs must have shape [N, 4, L] or [4, L], got {list(sequences.shape)}")
    else:
        seqs = list(sequences)
        if not seqs or not all(isinstance(s, str) for s in seqs):
            raise UserError("sequences must be strings, or one-hot arrays [N, 4, L]")
        lengths = sorted({len(s) for s in seqs})
        if lengths != [seq_len]:
            raise UserError(f"sequences must have the model's length {seq_len}, got lengths {lengths[:5]}")
        X = np.stack([one_hot(s) for s in seqs])
    if X.shape[-1] != seq_len:
        raise UserError(f"inputs have length {X.shape[-1]}, the checkpoint's model takes {seq_len}")
    return X


@exact_float32()
def _run(model: Model, inputs: Inputs, *, diff: bool, batch_size: int, output: Output) -> np.ndarray | torch.Tensor:
    """The effects of encoded inputs, batch by batch, as ``multiplexer predict`` computes them."""
    if output not in ("numpy", "torch"):
        raise UserError(f"output must be numpy or torch, got {output!r}")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    require_bases(inputs)
    base = load_diff_base(model.meta, model.device) if diff else None
    parts = []
    for start in range(0, len(inputs.X), batch_size):
        X = torch.as_tensor(inputs.X[start : start + batch_size]).to(model.device)
        parts.append(multiplexer_effects(model.module, X, base=base).cpu())
    y = torch.cat(parts)
    return y if output == "torch" else y.numpy()


def predict(
    model: Model,
    sequences: str | Sequence[str] | np.ndarray | torch.Tensor,
    *,
    diff: bool = False,
    batch_size: int = 8,
    output: Output = "numpy",
) -> np.ndarray | torch.Tensor:
    """Effects of every SNV of each sequence (``multiplexer predict --fasta``).

    Parameters
    ----------
    model : Model
        From :func:`load`.
    sequences : str, list of str, numpy.ndarray or torch.Tensor
        DNA strings of length ``L`` (``N`` and other letters encode as all-zero columns), or one-hot
        arrays, shape ``(N, 4, L)`` or ``(4, L)``, alphabet ``A, G, C, T``.
    diff : bool
        ``alt - ref`` instead of log-fold (runs the checkpoint's base model on each sequence).
    batch_size : int
        Sequences per forward pass.
    output : {"numpy", "torch"}

    Returns
    -------
    y : numpy.ndarray or torch.Tensor, shape=(N, F, 4, L), float32
        ``y[n, f, b, j]``: the effect on target ``f`` of base ``b`` at position ``j`` of sequence
        ``n``; exactly 0 at the reference base and at ``N`` columns.

    Examples
    --------
    >>> y = predict(model, "ACGT" * 500)          # one window of L = 2000
    >>> y.shape                                  # (1, F, 4, 2000)
    """
    X = _one_hot(sequences, model.seq_len)
    names = [f"sequence {k}" for k in range(len(X))]
    inputs = Inputs(X, names, np.zeros(len(X), dtype=np.int64))
    return _run(model, inputs, diff=diff, batch_size=batch_size, output=output)


def predict_regions(
    model: Model,
    regions: str | Sequence[str] | Sequence[tuple[str, int]],
    *,
    genome: str | os.PathLike[str] | None = None,
    diff: bool = False,
    batch_size: int = 8,
    output: Output = "numpy",
) -> np.ndarray | torch.Tensor:
    """Effects of every SNV of genome windows (``multiplexer predict --region/--regions``).

    Parameters
    ----------
    model : Model
    regions : str or list
        ``chr:pos`` (the 1-based window centre), a list of them, or ``(chrom, pos)`` pairs. A window
        covers ``pos - L//2 + 1 … pos + L - L//2`` and must fit in its chromosome.
    genome : path, optional
        The genome FASTA (default: the one the checkpoint records).
    diff, batch_size, output
        As in :func:`predict`.

    Returns
    -------
    y : numpy.ndarray or torch.Tensor, shape=(len(regions), F, 4, L), float32

    Examples
    --------
    >>> y = predict_regions(model, ["chr8:1000000", "chr9:2500000"])
    >>> y[0, model.target_names.index("CTCF|K562"), :, 999]   # the four bases at the centre
    """
    items = [regions] if isinstance(regions, str) else list(regions)
    pairs = [parse_region(r) if isinstance(r, str) else (str(r[0]), int(r[1])) for r in items]
    given = None if genome is None else str(genome)
    path = resolve_genome(given, model.meta.get("genome"), f"checkpoint {model.checkpoint!r}")
    inputs = encode_regions(
        pairs, seq_len=model.seq_len, genome=path, recorded_fingerprint=model.meta.get("genome_fingerprint")
    )
    return _run(model, inputs, diff=diff, batch_size=batch_size, output=output)


def read_scores_frame(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A ``score-vcf``/``lookup`` TSV (``.tsv`` or ``.tsv.gz``) as a DataFrame.

    The ``##key=value`` lines go to ``attrs["semantics"]``; text columns stay text (``.`` is not a
    missing value), an empty cell (a skipped variant's scores) is ``NaN``, ``window_center`` is a
    nullable integer.
    """
    pandas = _pandas()
    opener = gzip.open if str(path).endswith(".gz") else open
    semantics: dict[str, str] = {}
    with opener(path, "rt") as handle:
        n = 0
        for line in handle:
            if not line.startswith("##"):
                break
            key, _, value = line[2:].rstrip("\n").partition("=")
            semantics[key] = value
            n += 1
    text = ("chrom", "id", "ref", "alt", "ref_check", "ref_match", "status")
    frame = pandas.read_csv(
        path, sep="\t", skiprows=n, dtype={**dict.fromkeys(text, str), "window_center": "Int64"},
        keep_default_na=False, na_values=[""],
    )  # fmt: skip
    frame.attrs["semantics"] = semantics
    return frame


def _variants_vcf(variants: Sequence[str], folder: Path) -> str:
    """A VCF of ``chr:pos:REF>ALT`` strings (checked as ``lookup --variant`` checks them), in the order given."""
    records = [parse_variant(v, k) for k, v in enumerate(variants, start=1)]
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"{r.chrom}\t{r.pos}\t{v.strip()}\t{r.ref}\t{r.alt}\t.\t.\t." for r, v in zip(records, variants)]
    path = folder / "variants.vcf"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def score_variants(
    model: Model | str | os.PathLike[str],
    variants: str | os.PathLike[str] | Sequence[str],
    options: ScoreVcfOptions | None = None,
    *,
    progress: bool = False,
    **settings: Any,
) -> pd.DataFrame:
    """Score variants into a DataFrame (``multiplexer score-vcf``, in one process).

    Parameters
    ----------
    model : Model or path
        A :func:`load`-ed model (its checkpoint and, unless ``device`` is given, its device and precision)
        or a checkpoint path.
    variants : path or list of str
        A VCF/BCF file, or ``chr:pos:REF>ALT`` strings (1-based; rows keep their order, ``id`` is the string).
    options : ScoreVcfOptions, optional
        The command's options; or give them as keywords (``mode="exact"``, ``values="ref,alt"``,
        ``strand="both"``, ``targets="CTCF"``, ``genome=...``), each one of
        :class:`~pipeline.apply.variants.options.ScoreVcfOptions`.
    progress : bool

    Returns
    -------
    pandas.DataFrame
        One row per ALT allele, the columns of the TSV output (:func:`read_scores_frame`).

    Examples
    --------
    >>> df = score_variants(model, ["chr8:1000000:A>G", "chr8:1000050:C>T"], values="ref,alt")
    >>> df[["chrom", "pos", "status", "CTCF|K562", "CTCF|K562_alt"]]
    """
    _pandas()
    if options is not None and settings:
        raise UserError("give the options as a ScoreVcfOptions or as keywords, not both")
    if isinstance(model, Model) and options is None:
        settings = {"device": str(model.device), "precision": model.precision, **settings}
    opts = options if options is not None else ScoreVcfOptions(**settings)
    if opts.shard is not None:
        raise UserError("score_variants scores in one process; shard a large VCF with multiplexer score-vcf --shard")
    checkpoint = model.checkpoint if isinstance(model, Model) else str(model)
    with tempfile.TemporaryDirectory(prefix="multiplexer-api-") as tmp:
        if isinstance(variants, (str, os.PathLike)):
            vcf = str(variants)
        else:
            vcf = _variants_vcf(variants, Path(tmp))
        out = Path(tmp) / "scores.tsv"
        score_vcf(checkpoint, vcf, str(out), opts, progress=progress)
        return read_scores_frame(out)


def lookup(
    catalogue: str | os.PathLike[str],
    variants: Sequence[str] | None = None,
    *,
    region: str | None = None,
    vcf: str | os.PathLike[str] | None = None,
    values: str | None = None,
    progress: bool = False,
    **settings: Any,
) -> pd.DataFrame:
    """Answer variants from a catalogue into a DataFrame (``multiplexer lookup``).

    Parameters
    ----------
    catalogue : path
        A catalogue made by ``multiplexer catalogue``.
    variants : list of str, optional
        ``chr:pos:REF>ALT`` queries; or give ``region`` (``chr:start-end``: the three SNVs of every
        position) or ``vcf`` (a VCF/BCF) — exactly one of the three.
    values : str, optional
        ``ref,alt``: add the base model's reference prediction and the implied alternative (runs the
        catalogue's checkpoint; ``checkpoint=``, ``genome=``, ``device=`` if they moved).
    progress : bool
    **settings
        Other :class:`~pipeline.apply.variants.options.LookupOptions` (``checkpoint``, ``genome``, ``device``).

    Returns
    -------
    pandas.DataFrame
        The TSV of ``lookup`` (:func:`read_scores_frame`).

    Examples
    --------
    >>> df = lookup("catalogue.zarr", region="chr9:1000-1010")
    >>> df.pivot(index="pos", columns="alt", values="CTCF|K562")
    """
    _pandas()
    opts = LookupOptions(
        variants=tuple(variants or ()), region=region, vcf=None if vcf is None else str(vcf), values=values, **settings
    )
    with tempfile.TemporaryDirectory(prefix="multiplexer-api-") as tmp:
        out = Path(tmp) / "lookup.tsv"
        lookup_catalogue(str(catalogue), str(out), opts, progress=progress)
        return read_scores_frame(out)
