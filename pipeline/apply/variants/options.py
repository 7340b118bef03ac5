"""The options of ``score-vcf``, ``catalogue`` and ``lookup``, each declared once with its help and rule.

Each command's options (everything but its inputs and output) are a frozen dataclass:
:class:`ScoreVcfOptions`, :class:`CatalogueOptions`, :class:`LookupOptions`. A field carries its
default, ``--help`` text and rule (:func:`~pipeline.core.options.option`); the command's click
options are derived from the fields (``cli.py``), and a filled-in object is checked when it is made
(:class:`~pipeline.core.options.Options`), so a library call and the command line accept the same
values. ``--device`` and ``--precision`` are the settings of :mod:`pipeline.core.commands`. This module
imports neither torch nor click (the command line reads it to build ``--help``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.core.commands import device_option, precision_option
from pipeline.core.intervals import VCF_QUERY_MAX, check_region
from pipeline.core.options import Options, option
from pipeline.errors import SpecError

STRANDS = ("forward", "reverse", "both")
"""``--strand``: the forward window, its reverse complement, or the mean of the two in log-fold space."""

REF_MISMATCH = ("score", "skip")
"""What ``--ref-mismatch`` may be: score against the genome's base (and flag), or skip the record."""

CATALOGUE_BATCH_SIZE = 8
"""The default ``catalogue --batch-size`` of a new catalogue (a resumed one keeps its own)."""

VALUES = ("ref", "alt", "q")
"""What may be added per target, in column order: the base model's reference prediction (``ref``) and the
implied alternative probability (``alt``), which ``--values`` asks for, and the score's percentile in a
background (``q``), which ``--background`` adds."""

VALUE_OPTIONS = ("ref", "alt")
"""What ``--values`` may ask for."""

BACKGROUND_HELP = (
    "A background made by 'multiplexer background' with this checkpoint: adds per target the score's "
    "percentile (<target>_q, the share of the background's effects at or below the score, 0-1)."
)

VALUES_HELP = (
    "Also write, per target, the base model's prediction on the reference window the variant was scored "
    "from (ref: <target>_ref) and the implied alternative probability (alt: <target>_alt, the exact inverse "
    "of the log-fold, log_unfold(ref, effect); ref + effect for diff scores); comma-separated, e.g. ref,alt. "
    "Runs the base model once per window."
)


def values_option() -> Any:
    """The ``--values`` setting of ``score-vcf`` and ``lookup`` (checked by :func:`parse_values`)."""
    return option(None, VALUES_HELP, metavar="ref,alt")


def parse_values(text: str | None, where: str) -> tuple[str, ...]:
    """The kinds ``--values`` asks for, in the order of :data:`VALUES` (``()`` for ``None``).

    Raises
    ------
    SpecError
        An item that is not in :data:`VALUES`, or no item at all.
    """
    if text is None:
        return ()
    items = [item.strip() for item in text.split(",")]
    bad = [item for item in items if item not in VALUE_OPTIONS]
    if bad or not items:
        raise SpecError(
            f"{where}: option --values must be a comma-separated list of {', '.join(VALUE_OPTIONS)}, got {text!r}"
        )
    return tuple(v for v in VALUE_OPTIONS if v in items)


OUT_FORMAT_CHOICES = ("tsv", "vcf")
"""``--out-format``: what ``--out -`` writes to standard output (a file's suffix gives its format)."""

OUT_FORMAT_HELP = (
    "With --out - (standard output): tsv (default) or vcf (the records with the scores as INFO fields, "
    "uncompressed); progress and the summary go to standard error."
)

TARGETS_HELP = "comma-separated names or regular expressions, or a file of one per line (default: all)"


@dataclass(frozen=True, kw_only=True)
class ScoreVcfOptions(Options):
    """The options of ``score-vcf`` (:func:`~pipeline.apply.variants.score_vcf.score_vcf`).

    Rules that involve the scoring mode (``group_span`` only for a mode whose windows are shared,
    ``weights``/``base`` only when the base model runs, no ``catalogue`` with a base-model mode) are
    checked when the mode is known, by ``score_vcf``.
    """

    COMMAND: ClassVar[str] = "score-vcf"

    mode: str = option(
        "shared",
        "How variants are scored: shared (nearby variants share a window; the fastest), centered (--centered) or "
        "exact (--exact); a scoring mode that other code registers is taken by its name too.",
        metavar="MODE",
    )
    genome: str | None = option(None, "Genome FASTA (default: the one recorded in the checkpoint).", path="file")
    region: str | None = option(
        None, "Only the records of chr:start-end (1-based, inclusive); the VCF/BCF needs a .tbi or .csi index."
    )
    strand: str = option(
        "forward",
        "Score the forward window, its reverse complement, or the mean of both (in log-fold space).",
        choices=STRANDS,
    )
    targets: str | None = option(None, f"Targets to write: {TARGETS_HELP}.")
    harmonise: bool = option(True, "Read 17 as chr17, MT as chrM, ... when the genome has only the other spelling.")
    ref_mismatch: str = option(
        "score",
        "A variant whose REF is not the genome's bases: score it against the genome (flagged in ref_match), "
        "or skip it.",
        choices=REF_MISMATCH,
    )
    diff: bool = option(
        False, "Write alt - ref instead of log-fold effects (runs the checkpoint's base model on each window)."
    )
    weights: str | None = option(
        None,
        "With --diff or --exact: the base model's weights file, if it moved (sha256 is checked).",
        path="file",
    )
    base: str | None = option(None, "With --diff or --exact: the base model's import path, if its .py file moved.")
    group_span: int | None = option(
        None,
        "Shared windows: variants whose positions span at most this many bases share one window (default: L//4 "
        "of the model's window, so each variant keeps at least 3L/8 of context on both sides; up to L is faster).",
        minimum=1,
    )
    batch_size: int = option(8, "Windows per pass.", minimum=1)
    shard: str | None = option(
        None,
        "I/N: score every N-th unit of 1,000 records into OUT.parts (a scheduler array task; torchrun ranks split "
        "further); the process finishing the last unit merges them into OUT. A rerun skips finished units.",
    )
    precision: str = precision_option()
    catalogue: str | None = option(
        None,
        "Answer SNVs from this catalogue (made with the same checkpoint) and score the rest with the model.",
        path="any",
    )
    values: str | None = values_option()
    background: str | None = option(None, BACKGROUND_HELP, metavar="B.zarr")
    device: str = device_option()
    overwrite: bool = option(
        False,
        "Replace an existing output of score-vcf (never the VCF or another kind of file); the new one is "
        "swapped in only when complete.",
    )
    out_format: str | None = option(None, OUT_FORMAT_HELP, choices=OUT_FORMAT_CHOICES)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.region is not None:
            check_region(self.region, "--region", VCF_QUERY_MAX)  # pysam overflows past 32 bits
        parse_values(self.values, self.COMMAND)

    @property
    def value_kinds(self) -> tuple[str, ...]:
        """What ``values`` asks for, in the order of :data:`VALUES`."""
        return parse_values(self.values, self.COMMAND)


@dataclass(frozen=True, kw_only=True)
class CatalogueOptions(Options):
    """The options of ``catalogue`` (:func:`~pipeline.apply.variants.catalogue.build_catalogue`)."""

    COMMAND: ClassVar[str] = "catalogue"

    regions: tuple[str, ...] = option((), "chr:start-end (1-based, inclusive); repeatable.", flag="--region")
    bed: str | None = option(None, "BED file of regions (0-based, half-open).", path="file")
    chroms: str | None = option(None, "Whole contigs, comma-separated (chr8,chr9).")
    all_contigs: bool = option(False, "Every contig at least one window long.", flag="--all")
    targets: str | None = option(
        None,
        f"Targets whose effects are stored: {TARGETS_HELP}. max_abs and top_target always cover every target.",
    )
    stride: int | None = option(
        None,
        "Bases between tile windows (default: L//4); each position is read from the tile whose centre is "
        "nearest, at most stride/2 away.",
        minimum=1,
    )
    genome: str | None = option(None, "Genome FASTA (default: the one recorded in the checkpoint).", path="file")
    batch_size: int | None = option(
        None,
        f"Windows per pass (default {CATALOGUE_BATCH_SIZE}; a resumed catalogue keeps its own: values depend on the "
        "batch size in the last float16 bit, so another one is refused).",
        minimum=1,
    )
    shard: str | None = option(
        None,
        "I/N: compute every N-th unit (a scheduler array task; torchrun ranks split further). Any process "
        "resumes what is not complete.",
    )
    device: str = device_option()
    overwrite: bool = option(False, "Replace a catalogue made with other options (one process only).")


@dataclass(frozen=True, kw_only=True)
class LookupOptions(Options):
    """The options of ``lookup`` (:func:`~pipeline.apply.variants.lookup.lookup`): exactly one of
    ``variants``, ``region`` and ``vcf`` says what to look up."""

    COMMAND: ClassVar[str] = "lookup"

    variants: tuple[str, ...] = option((), "chr:pos:REF>ALT (1-based pos); repeatable.", flag="--variant")
    region: str | None = option(None, "chr:start-end: the three SNVs of every position.")
    vcf: str | None = option(
        None, "VCF/BCF: one row per ALT allele; - reads standard input (plain, bgzipped or BCF).", path="file"
    )
    values: str | None = values_option()
    background: str | None = option(None, BACKGROUND_HELP, metavar="B.zarr")
    checkpoint: str | None = option(
        None,
        "With --values: the catalogue's checkpoint, if it moved (default: the path the catalogue records; its "
        "sha256 is checked).",
        path="file",
    )
    genome: str | None = option(
        None, "With --values: the genome FASTA, if it moved (default: the one the catalogue records).", path="file"
    )
    device: str = device_option()
    overwrite: bool = option(False, "Replace an existing output of score-vcf or lookup.")
    out_format: str | None = option(None, OUT_FORMAT_HELP, choices=OUT_FORMAT_CHOICES)

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_values(self.values, self.COMMAND)

    @property
    def value_kinds(self) -> tuple[str, ...]:
        """What ``values`` asks for, in the order of :data:`VALUES`."""
        return parse_values(self.values, self.COMMAND)


BACKGROUND_QUANTILES = 1001
"""The default number of quantile points of a background (a grid step of 0.001)."""


@dataclass(frozen=True, kw_only=True)
class BackgroundOptions(Options):
    """The options of ``background`` (:func:`~pipeline.apply.variants.background.build_background`):
    where the windows are drawn (exactly one of ``split``, ``regions``/``bed``, ``chroms``; default the
    checkpoint's ``test`` split), how many, and how many quantiles are kept."""

    COMMAND: ClassVar[str] = "background"

    split: str | None = option(None, "Draw windows from this split of the checkpoint's spec (default: test).")
    regions: tuple[str, ...] = option((), "Draw from chr:start-end (1-based, inclusive); repeatable.", flag="--region")
    bed: str | None = option(None, "Draw from the regions of a BED file (0-based, half-open).", path="file")
    chroms: str | None = option(None, "Draw from whole contigs, comma-separated (chr8,chr9).")
    windows: int = option(256, "Windows to draw.", minimum=1)
    seed: int = option(0, "Seed of the draw (windows and the values kept from each).", minimum=0)
    values_per_window: int = option(
        1000,
        "Effects kept per target from each window (a seeded sample of its 3 alternatives at every non-N position; "
        "all of them when fewer). Memory: targets x windows x this x 4 bytes.",
        minimum=1,
    )
    quantiles: int = option(
        BACKGROUND_QUANTILES,
        "Quantile points kept per target (at least 1,000), evenly spaced from 0 to 1.",
        minimum=1000,
    )
    genome: str | None = option(None, "Genome FASTA (default: the one recorded in the checkpoint).", path="file")
    batch_size: int = option(32, "Windows per pass.", minimum=1)
    device: str = device_option()
    overwrite: bool = option(False, "Replace an existing background.")


@dataclass(frozen=True, kw_only=True)
class ExportOptions(Options):
    """The options of ``catalogue export`` (:func:`~pipeline.apply.variants.export.export_catalogue`)."""

    COMMAND: ClassVar[str] = "catalogue export"

    top_k: int = option(
        3,
        "Targets listed per SNV (top1_target, top1_effect, ...): the stored targets with the largest |effect|.",
        minimum=0,
    )
    background: str | None = option(
        None,
        "A background made by 'multiplexer background' with the catalogue's checkpoint: adds top<i>_q, the "
        "percentile of top<i>_effect among that target's background effects (0-1).",
        metavar="B.zarr",
    )
    overwrite: bool = option(
        False, "Replace an existing export (never another kind of file); the new one is swapped in when complete."
    )
