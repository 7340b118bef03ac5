"""The options of ``distill``, ``predict``, ``ism``, ``evaluate`` and ``plot``, each declared once.

Each command's settings are a frozen dataclass whose fields carry their default, ``--help`` text and
rule (:func:`~pipeline.core.options.option`); the library takes one such object instead of a dozen
keywords, and ``pipeline.cli`` derives the command's options from the same declarations. What a
command works on (the spec, the checkpoint, the output path) stays a plain argument; how it works
is the options object. Every value is checked when the object is made (a bad one is a
:class:`~pipeline.errors.SpecError` naming the option), so a library call is checked like a command
line. Nothing here imports torch.

``predict`` and ``ism`` share :class:`InputOptions` (which windows) and :class:`EffectsOptions` (how the
effects file is written); ``predict`` adds :class:`DiffOptions`, and ``ism`` says where its base model
comes from with :class:`IsmSource`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.core.options import Options, option
from pipeline.core.spec import ISM_BATCH_SIZE, PRECISIONS

DEVICE_HELP = "cpu, cuda, cuda:N or auto."
ENGINE_HELP = (
    "ISM engine: fast (exact, incremental), naive (one base-model pass per variant), or auto "
    "(fast when it supports the base model, else naive, said once)."
)
PRECISION_HELP = (
    "The multiplexer's arithmetic: exact float32, or bfloat16 autocast (faster on GPUs with bf16 units; "
    "bench/REPORT.md gives its accuracy effect)."
)


def device_option() -> Any:
    """The ``--device`` setting (every command that runs a model has one)."""
    return option("auto", DEVICE_HELP)


def engine_option() -> Any:
    """The ``--engine`` setting of the commands that run exact ISM (checked by :func:`pipeline.ism.choose_engine`)."""
    return option("auto", ENGINE_HELP, metavar="[auto|fast|naive]")


def precision_option() -> Any:
    """The ``--precision`` setting of the commands that run a multiplexer."""
    return option("float32", PRECISION_HELP, choices=PRECISIONS)


@dataclass(frozen=True, kw_only=True)
class DistillOptions(Options):
    """How ``distill`` writes a spec's store (see :func:`pipeline.distill.distill`)."""

    COMMAND: ClassVar[str] = "distill"

    store_path: str | None = option(
        None, "Store path or URL (default: the spec's `store`, else stores/<name>.zarr).", flag="--store"
    )
    splits: tuple[str, ...] = option((), "Only this split (repeatable; default: all).", flag="--split")
    device: str | None = device_option()
    engine: str = engine_option()
    shard: str | None = option(None, "I/N: write only the units u with u % N == I (e.g. a SLURM array task).")
    batch_size: int | None = option(None, "Variants per base-model pass (default: the spec's).", minimum=1)
    overwrite: bool = option(False, "Discard an existing store at the path first.")
    overlap: bool = option(
        True, "Do not prepare and write units on background threads (for benchmarks).", flag="--no-overlap"
    )
    create_only: bool = option(False, "Create (or check) the store and stop, e.g. before --shard jobs.")
    allow_no_valid: bool = option(False, "Distil a spec without a valid split (train refuses its store).")


@dataclass(frozen=True, kw_only=True)
class InputOptions(Options):
    """Which windows ``predict`` and ``ism`` read: regions of a genome, or the sequences of a FASTA
    (see :func:`pipeline.apply.inputs.load_inputs`)."""

    COMMAND: ClassVar[str] = "inputs"

    region: str | None = option(None, "chr:pos, the 1-based window center.")
    regions_file: str | None = option(
        None, "File of regions: 'chr pos' lines or BED (0-based start, end).", flag="--regions", path="file"
    )
    fasta: str | None = option(None, "FASTA of sequences of the model's length.", path="file")
    genome: str | None = option(
        None, "Genome FASTA for --region/--regions (default: the checkpoint's or spec's).", path="file"
    )


@dataclass(frozen=True, kw_only=True)
class EffectsOptions(Options):
    """How an effects file is written, for ``predict`` and ``ism`` alike."""

    COMMAND: ClassVar[str] = "effects"

    tsv: bool = option(
        False,
        "Also write OUT_STEM.<i>.<chrom>_<center>.tsv.gz per sequence: one row per variant ('chr:pos REF>ALT'), "
        "one column per target.",
    )
    device: str | None = device_option()
    overwrite: bool = option(
        False,
        "Replace an existing effects file (and its TSV files) written by predict or ism; never a store, a "
        "checkpoint, a run folder or an input. The new output is swapped in only when complete.",
    )


@dataclass(frozen=True, kw_only=True)
class DiffOptions(Options):
    """``--diff``: ``alt - ref`` instead of a multiplexer's log-fold effects, with the base model the
    checkpoint records (and where its files moved to)."""

    COMMAND: ClassVar[str] = "diff"

    diff: bool = option(
        False, "Write alt - ref instead of log-fold effects (runs the checkpoint's base model on each window)."
    )
    weights: str | None = option(
        None, "With --diff: the base model's weights file, if it moved (sha256 is checked).", path="file"
    )
    base: str | None = option(None, "With --diff: the base model's import path, if its .py file moved.")


@dataclass(frozen=True, kw_only=True)
class PredictOptions(DiffOptions, EffectsOptions):
    """How ``predict`` runs a multiplexer (see :func:`pipeline.apply.predict.predict_effects`)."""

    COMMAND: ClassVar[str] = "predict"

    batch_size: int = option(8, "Sequences per pass.", minimum=1)
    precision: str = precision_option()


@dataclass(frozen=True, kw_only=True)
class IsmSource(Options):
    """Where ``ism`` takes its base model from: a spec, a multiplexer checkpoint, or a name
    (see :func:`pipeline.apply.exact_ism.ism_setup`)."""

    COMMAND: ClassVar[str] = "ism"

    spec_path: str | None = option(
        None, "Take the base model, window length and genome from this spec.", flag="--spec", path="file"
    )
    checkpoint: str | None = option(
        None,
        "Take the base model, window length, targets and genome recorded in this multiplexer checkpoint.",
        path="file",
    )
    base: str | None = option(
        None,
        "Base model: demo, beluga, or package.module:Class / file.py:Class (with --checkpoint: the recorded "
        "model's new import path).",
    )
    weights: str | None = option(
        None,
        "Base-model state dict (with --checkpoint: its new path); 'random': random weights from seed 0 "
        "(beluga needs one of the two).",
        path="file",
    )
    base_kwargs: str | None = option(None, "Base-model constructor arguments as JSON.")
    seq_len: int | None = option(None, "Window length (default: the spec's or the model's).", minimum=2)


@dataclass(frozen=True, kw_only=True)
class IsmOptions(EffectsOptions):
    """How ``ism`` runs the base model (see :func:`pipeline.apply.exact_ism.ism_effects`)."""

    COMMAND: ClassVar[str] = "ism"

    target: str | None = option(
        None,
        "Effect kind: logfold, diff or alt (default: the spec's or checkpoint's, else logfold).",
        metavar="[logfold|diff|alt]",
    )
    engine: str = engine_option()
    batch_size: int = option(ISM_BATCH_SIZE, "Variants per pass.", minimum=1)


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions(Options):
    """How ``evaluate`` compares a multiplexer with the base model (see :func:`pipeline.apply.evaluate.evaluate`)."""

    COMMAND: ClassVar[str] = "evaluate"

    split: str | None = option(None, "Split (default: test if present, else valid).")
    device: str | None = device_option()
    timing_sequences: int = option(
        4,
        "Sequences timed through naive and fast ISM (0: skip timing; the accuracy report is written before "
        "timing starts either way).",
        minimum=0,
    )
    overwrite: bool = option(
        False,
        "Replace an existing report in --out (only files evaluate wrote); the new files are swapped in "
        "together when all are complete.",
    )
    precision: str = precision_option()
    batch_size: int = option(16, "Sequences per multiplexer pass.", minimum=1, command_line=False)


@dataclass(frozen=True, kw_only=True)
class PlotOptions(Options):
    """What ``plot`` draws and how (see :func:`pipeline.apply.plot.plot_effects`)."""

    COMMAND: ClassVar[str] = "plot"

    index: int = option(0, "Which sequence of PRED (an effects file).")
    target: str | None = option(None, "Target name or index (default: the one with the strongest effect).")
    region: str | None = option(
        None,
        "With a catalogue as PRED: the positions to draw, chr:start-end (1-based, inclusive; at most 10,000).",
    )
    width: int = option(100, "Positions per row.")
    dpi: int = option(120, "Pixels per inch of a PNG.")
    compare: str | None = option(
        None,
        "A second effects file (e.g. `multiplexer ism` output) with the same sequence, drawn underneath "
        "on the same colour scale.",
        path="any",
    )
    overwrite: bool = option(
        False,
        "Replace an existing image (never another kind of file); the new one is swapped in only when complete.",
    )
