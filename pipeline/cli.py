"""The ``multiplexer`` command line: click options and one library call per command.

Every command has ``--help``; every bad input ends in one ``error: ...`` line on stderr and a
non-zero exit status, without a traceback (set ``MULTIPLEXER_DEBUG=1`` to see one). The work lives in
the library: each command imports its stage inside the function, so ``multiplexer --help`` does not
load torch. The options of ``train``, ``distill``, ``predict``, ``ism``, ``evaluate``, ``score-vcf``,
``catalogue`` and ``lookup`` are derived from the declarations of :class:`~pipeline.core.spec.TrainSpec`
and the options classes of :mod:`pipeline.core.commands` and :mod:`pipeline.apply.variants.options`
(:func:`declared_options`), so each setting is declared once, and a command builds its options object
back with :func:`settings`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from pipeline import __version__
from pipeline.apply.variants.options import (
    BackgroundOptions,
    CatalogueOptions,
    ExportOptions,
    LookupOptions,
    ScoreVcfOptions,
)
from pipeline.core.commands import (
    DiffOptions,
    DistillOptions,
    EvaluateOptions,
    InputOptions,
    IsmOptions,
    IsmSource,
    PlotOptions,
    PredictOptions,
)
from pipeline.core.options import Declared, Rule, declared, pick
from pipeline.core.spec import TrainSpec, option_flag
from pipeline.core.urls import DEMO_REASON, GENOME_REASON, PARTS_REASON, refuse_url, url_outputs
from pipeline.core.yamlio import json_object
from pipeline.errors import UserError

COMMAND_LINE = ParameterSource.COMMANDLINE
EXIT_ERROR = 1
EXIT_USAGE = 2
F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


OUT_OF_MEMORY = "out of memory; use smaller batches (--batch-size)"

TORCH_CPU_OOM = "DefaultCPUAllocator: can't allocate memory"
"""What torch's CPU allocator says when an allocation fails: it raises a plain ``RuntimeError``."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: Python's ``MemoryError``, torch's ``OutOfMemoryError`` (which
    ``torch.cuda.OutOfMemoryError`` is), or the ``RuntimeError`` of torch's CPU allocator. torch is looked
    up only if it was imported (an exception cannot come from it otherwise)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if isinstance(oom, type) and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and TORCH_CPU_OOM in str(exc)


CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
"""Every command's context settings. Each command carries them itself (:meth:`_Cli.add_command`), not
only through a parent context: click builds and keeps a command's help option the first time any
context asks for it, so a command first used on its own (``make_context`` without a parent) would
otherwise keep ``--help`` without ``-h`` for the rest of the process."""


class _Cli(click.Group):
    """Group whose errors are one ``error:`` line (usage errors included) instead of a traceback."""

    group_class = type  # subgroups are _Cli too, so their commands get the same settings

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.context_settings = {**CONTEXT_SETTINGS, **cmd.context_settings}
        super().add_command(cmd, name)

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name or "multiplexer", complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(exc.format_message() + hint, EXIT_USAGE)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code or EXIT_ERROR)
        except click.Abort as exc:  # click turns Ctrl-C (KeyboardInterrupt) into Abort
            if isinstance(exc.__cause__, KeyboardInterrupt):
                _fail("interrupted", 130)
            _fail("aborted", EXIT_ERROR)
        except UserError as exc:
            _fail(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail(OUT_OF_MEMORY, EXIT_ERROR)
        except OSError as exc:
            if os.environ.get("MULTIPLEXER_DEBUG"):
                raise
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)
        except Exception as exc:  # a bug, not a bad input: still one line, with a way to see more
            if os.environ.get("MULTIPLEXER_DEBUG"):
                raise
            if out_of_memory(exc):
                _fail(OUT_OF_MEMORY, EXIT_ERROR)
            _fail(f"internal error: {type(exc).__name__}: {exc} (set MULTIPLEXER_DEBUG=1 for a traceback)", EXIT_ERROR)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return rv


def _progress(ctx: click.Context) -> bool:
    return not ctx.find_root().params.get("quiet", False)


def _json_object(flag: str, text: str | None) -> dict[str, Any] | None:
    """A JSON object given on the command line (``None`` when the option was not given)."""
    if text is None:
        return None
    return json_object(text, flag)


def _options(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Apply click options in the order they are listed (so ``--help`` shows them in that order)."""

    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def declared_option(setting: Declared, *, override: bool = False) -> Callable[[F], F]:
    """The click option of one declared setting (:func:`pipeline.core.options.declared`).

    Normally the option has the setting's default (shown in ``--help``) and click checks its range,
    choices or path kind. With ``override`` it only overrides a value held elsewhere (a spec's
    ``train:`` section): no default of its own (``None`` when not given), ``--x/--no-x`` for a
    ``bool``, and the value is checked by the setting's rule in the library, not by click.
    """
    flag, name, text = setting.flag, setting.name, setting.help
    if setting.repeatable:
        return click.option(flag, name, multiple=True, metavar=setting.metavar, help=text)
    rule = setting.rule
    if rule is None:  # a mapping: a JSON object
        return click.option(flag, name, metavar="JSON", help=text)
    if rule.kind is bool:
        return _bool_option(setting, override)
    kinds: dict[type, click.ParamType] = {int: click.INT, float: click.FLOAT, str: click.STRING}
    kind = kinds[rule.kind]
    if override:
        metavar = setting.metavar or ("[" + "|".join(rule.choices) + "]" if rule.choices else kind.name.upper())
        bounds = rule.describe()
        return click.option(flag, name, type=kind, metavar=metavar, help=f"{text}  [{bounds}]" if bounds else text)
    if setting.path is not None:
        kind = click.Path(dir_okay=setting.path != "file", file_okay=setting.path != "dir")
    elif rule.choices:
        kind = click.Choice(rule.choices)
    elif rule.kind in (int, float) and rule.describe():
        kind = _ranged(rule)
    if setting.required:
        return click.option(flag, name, type=kind, required=True, metavar=setting.metavar, help=text)
    shown = setting.default is not None and setting.default != ""
    return click.option(
        flag, name, type=kind, default=setting.default, show_default=shown, metavar=setting.metavar, help=text
    )


def _ranged(rule: Rule) -> click.ParamType:
    """click's range type for a number rule's bounds (``above`` is an open lower bound)."""
    low, high, open_low = (rule.minimum if rule.above is None else rule.above), rule.maximum, rule.above is not None
    if rule.kind is int:
        return click.IntRange(
            min=None if low is None else int(low), max=None if high is None else int(high), min_open=open_low
        )
    return click.FloatRange(min=low, max=high, min_open=open_low)


def _bool_option(setting: Declared, override: bool) -> Callable[[F], F]:
    """A ``bool`` setting: a flag, an off switch (``--no-x``, default on), or ``--x/--no-x``."""
    flag, name, text = setting.flag, setting.name, setting.help
    if override:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=text)
    if setting.default is True and flag.startswith("--no-"):
        return click.option(flag, name, is_flag=True, flag_value=False, default=True, help=text)
    if setting.default is True:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=True, show_default=True, help=text)
    return click.option(flag, name, is_flag=True, help=text)


def declared_options(*classes: type, override: bool = False) -> Callable[[F], F]:
    """The click options of every command-line setting of ``classes`` (options dataclasses), in order.

    A command that takes them builds each object back with :func:`settings`.
    """
    found: dict[str, Declared] = {}
    for cls in classes:
        for name, setting in declared(cls).items():
            if name in found:
                raise TypeError(f"setting {name!r} of {cls.__name__} is declared twice among {classes}")
            found[name] = setting
    return _options(*(declared_option(s, override=override) for s in found.values() if s.command_line))


def settings(cls: type[S], values: dict[str, Any]) -> S:
    """An options object of ``cls`` from a command's keyword arguments (the ones that are its settings)."""
    return cls(**pick(cls, values))


_train_options = declared_options(TrainSpec, override=True)
_device = declared_option(declared(EvaluateOptions)["device"])
_precision = declared_option(declared(EvaluateOptions)["precision"])
_diff_options = declared_options(DiffOptions)
_effects_out = click.option(
    "--out",
    required=True,
    help="Output: a Zarr folder (any name not ending in .npz), or .npz (built in memory: at most 2 GiB of effects). "
    "A URL (s3://...) is written locally, then uploaded.",
)


# ------------------------------------------------------------------------------------------------
@click.group(cls=_Cli, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="multiplexer")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def cli(quiet: bool) -> None:
    """Distil a sequence model (Beluga, DeepSEA-style CNNs, yours) into a multiplexer that predicts
    the effect of every single-nucleotide variant of a window in one forward pass.

    \b
    Stage 1: multiplexer distill SPEC.yaml      -> Zarr store of ISM targets
    Stage 2: multiplexer train SPEC.yaml --run-dir DIR
    Then:    predict, ism, score-vcf, plot, evaluate; or `multiplexer demo` for all of it on a synthetic genome.
    """


@cli.group()
def genome() -> None:
    """Genome utilities."""


@genome.command("synth")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--divisor",
    default=2000,
    show_default=True,
    help="Chromosome lengths are hg19's divided by this (2000: about 1.5 Mb in all).",
)
def genome_synth(out: str, seed: int, divisor: int) -> None:
    """Write the deterministic synthetic genome OUT.fa (chr1…chr22, chrX; N gaps, soft-masked runs,
    planted motifs) and its .fai index."""
    from pipeline.demo.synthetic import synth_genome

    refuse_url(out, "OUT", GENOME_REASON)
    lengths = synth_genome(out, seed=seed, divisor=divisor)
    click.echo(f"wrote {out} ({len(lengths)} chromosomes, {sum(lengths.values()):,} bp) and {out}.fai")


# ------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@declared_options(DistillOptions)
@click.option(
    "--check",
    is_flag=True,
    help="Only check that every split can be sampled (contigs, usable bases, N rejection per split); "
    "loads no model and writes nothing.",
)
@click.pass_context
def distill(ctx: click.Context, spec: str, check: bool, **options: Any) -> None:
    """Stage 1: write (or resume) the Zarr store of SPEC: sampled windows, the base model's
    reference predictions and the effect of every SNV. Complete write units are skipped on rerun.

    \b
    Scale out with torchrun (each process takes the units u % WORLD_SIZE == RANK):
      torchrun --nproc_per_node 4 -m pipeline.cli distill SPEC.yaml
    or with a scheduler's job array (each job takes u % N == I):
      multiplexer distill SPEC.yaml --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"""
    from pipeline.core.spec import load_spec
    from pipeline.distill import check_spec, format_checks
    from pipeline.distill import distill as run

    loaded = load_spec(spec)
    chosen = settings(DistillOptions, options)
    if check:
        checks = check_spec(loaded, allow_no_valid=chosen.allow_no_valid, progress=_progress(ctx))
        click.echo(format_checks(loaded, checks))
        click.echo("every split can be sampled; nothing was written")
        return
    summary = run(loaded, chosen, progress=_progress(ctx), notify=lambda message: click.echo(message, err=True))
    click.echo(f"store {summary.store} is ready" if chosen.create_only else summary.line())
    if summary.total is not None and summary.rank == 0:
        click.echo(summary.total_line())


# ------------------------------------------------------------------------------------------------
@cli.group()
def store() -> None:
    """Inspect and check stores."""


@store.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def store_info(path: str, as_json: bool) -> None:
    """Summary: spec name and hash, base model, per-split counts and completion, bytes per sample (for a
    catalogue: contigs, positions, units complete, stride, targets, bytes per position)."""
    from pipeline.store import format_info, open_store
    from pipeline.store import store_info as info
    from pipeline.store.catalogue import catalogue_info, format_catalogue_info, is_catalogue

    if is_catalogue(path):
        found = catalogue_info(path)
        click.echo(json.dumps(found, indent=2) if as_json else format_catalogue_info(found))
        return
    summary = info(open_store(path))
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))


@store.command("upgrade")
@click.argument("path")
@click.pass_context
def store_upgrade(ctx: click.Context, path: str) -> None:
    """Upgrade a store to format 4. Format 2 becomes format 3 in place (attributes only, seconds: its
    content hash leaves out the sample counts, so distill can grow it); format 3 becomes format 4, whose
    targets leave out the reference-base rows (a quarter fewer bytes to decode): the units are rewritten,
    checked, into a copy beside the store that then takes its place (a local store; resumable: rerun after
    a kill; needs room for the copy). A store, catalogue or score-vcf Zarr output written before metadata
    digests gets one (run `store verify` first: what is there now is sealed). Format 1 stores are
    read-only. A catalogue of format 1 becomes format 2 (one marker per unit, per-block digests; every
    complete unit is read once, as verify does)."""
    from pipeline.store.catalogue import is_catalogue, upgrade_catalogue
    from pipeline.store.score_output import is_score_output, seal_score_output
    from pipeline.store.upgrade import upgrade_store

    if is_catalogue(path):
        click.echo(upgrade_catalogue(path, progress=_progress(ctx)))
    elif is_score_output(path):
        click.echo(seal_score_output(path))
    else:
        click.echo(upgrade_store(path, progress=_progress(ctx)))


@store.command("verify")
@click.argument("path")
@click.option(
    "--unmark-damaged",
    is_flag=True,
    help="Mark every damaged unit (missing, corrupt or swapped chunk, broken convention) incomplete, so "
    "a rerun of distill recomputes just those.",
)
@click.pass_context
def store_verify(ctx: click.Context, path: str, unmark_damaged: bool) -> None:
    """Full integrity check: every attribute matching its metadata digest (a mismatch named), all units
    complete, no missing chunk, every chunk's CRC-32C and every sample's digest matching, no NaN, targets
    exactly 0 at reference bases and N positions, shapes and attributes consistent. Also checks
    catalogues and score-vcf Zarr outputs."""
    from pipeline.store import open_store, require_sound
    from pipeline.store import unmark_damaged as unmark
    from pipeline.store.catalogue import is_catalogue, require_catalogue_sound
    from pipeline.store.meta_digest import unsealed_note
    from pipeline.store.score_output import is_score_output, verify_score_output

    if is_catalogue(path):
        click.echo(require_catalogue_sound(path, unmark_damaged=unmark_damaged, progress=_progress(ctx)))
        return
    if is_score_output(path):
        click.echo(verify_score_output(path))
        return
    if unmark_damaged:
        found = unmark(open_store(path, mode="r+"), progress=_progress(ctx))
        counts = ", ".join(f"{split}: {len(units)}" for split, units in found.items() if units)
        click.echo(
            f"marked damaged units incomplete ({counts}); rerun distill to recompute them"
            if counts
            else f"store {path}: no damaged unit"
        )
        return
    store = open_store(path, check=False)  # verify names every attribute that does not match its digest
    require_sound(store, progress=_progress(ctx))
    click.echo(f"store {path} is complete and consistent" + unsealed_note(store.group.attrs, path))


# ------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("source")
@click.option(
    "--run-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: a path, or an fsspec URL (s3://bucket/run; each checkpoint uploaded whole when written).",
)
@click.option("--store", "store_path", help="With a SPEC: the store path (default: the spec's).")
@_train_options
@_device
@click.option("--resume", is_flag=True, help="Continue exactly from RUN_DIR/last.pt.")
@click.option(
    "--allow-changes",
    is_flag=True,
    help="With --resume: apply options that differ from those last.pt recorded from the resume step on "
    "(recorded in config.json and the checkpoints); without it they are refused, --steps excepted.",
)
@click.pass_context
def train(
    ctx: click.Context,
    source: str,
    run_dir: str,
    store_path: str | None,
    device: str,
    resume: bool,
    allow_changes: bool,
    **overrides: Any,
) -> None:
    """Stage 2: train a multiplexer on SOURCE (a spec .yaml, whose store must exist, or a store) and
    write best.pt, last.pt, metrics.csv and config.json into RUN_DIR. Defaults come from the spec's
    train: section; each option overrides one of its keys.

    \b
    Several GPUs or nodes (DistributedDataParallel):
      torchrun --nproc_per_node 8 -m pipeline.cli train SPEC.yaml --run-dir runs/x"""
    from pipeline.train import resolve_source, train_config
    from pipeline.train import train as run

    path, defaults = resolve_source(source, store_path)
    kwargs = _json_object(option_flag("kwargs"), overrides.pop("kwargs"))
    config = train_config(defaults, kwargs=kwargs, **overrides)
    result = run(
        path, run_dir, config, resume=resume, allow_changes=allow_changes, device=device, progress=_progress(ctx)
    )
    line = result.line()
    if line:
        click.echo(line)


# ------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt or last.pt.")
@declared_options(InputOptions)
@_effects_out
@declared_options(PredictOptions)
@click.pass_context
def predict(ctx: click.Context, checkpoint: str, out: str, **options: Any) -> None:
    """Multiplexer effects [N, F, 4, L] for regions or sequences (L, F, targets and the default genome
    come from the checkpoint)."""
    from pipeline.apply.predict import predict_regions

    inputs, chosen = settings(InputOptions, options), settings(PredictOptions, options)
    with url_outputs({"--out": out}) as urls:
        line = predict_regions(checkpoint, urls["--out"], inputs, chosen, progress=_progress(ctx)).line()
    click.echo(urls.shown(line))


@cli.command()
@declared_options(IsmSource, InputOptions)
@_effects_out
@declared_options(IsmOptions)
@click.pass_context
def ism(ctx: click.Context, out: str, **options: Any) -> None:
    """Exact in-silico saturation mutagenesis with the base model (same output format as predict)."""
    from pipeline.apply.exact_ism import exact_ism_regions

    source, inputs = settings(IsmSource, options), settings(InputOptions, options)
    with url_outputs({"--out": out}) as urls:
        written = exact_ism_regions(
            urls["--out"], source, inputs, settings(IsmOptions, options), progress=_progress(ctx)
        )
    click.echo(urls.shown(written.line()))


@cli.command("score-vcf")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="best.pt or last.pt (required unless --merge).")
@click.option(
    "--vcf",
    type=click.Path(dir_okay=False),
    help="VCF (plain or bgzipped) or BCF, 1-based POS (required unless --merge); - reads standard input.",
)
@click.option(
    "--out",
    required=True,
    help="Output, by suffix: .tsv / .tsv.gz (one row per ALT allele), .vcf.gz (the input records with the scores "
    "as INFO fields, tabix-indexed), .zarr (variants x targets float16 and the variant table); - writes standard "
    "output (--out-format). A URL (s3://...) is written locally, then uploaded (not with --shard or --merge).",
)
@click.option("--merge", is_flag=True, help="Only merge the finished parts of a sharded run into OUT.")
@click.option(
    "--centered",
    is_flag=True,
    help="Same as --mode centered: one window per position with the variant at 0-based index L//2-1 (999 of "
    "2000, as DeepSEA/ExPecto): the classical centred score, slower than shared windows.",
)
@click.option(
    "--exact",
    is_flag=True,
    help="Same as --mode exact: score with the base model itself, log-fold of base(alternative window) vs "
    "base(reference window), both centred; also scores indels (the alternative window keeps the bases before "
    "the variant, then ALT, then the genome after REF to length L).",
)
@declared_options(ScoreVcfOptions)
@click.pass_context
def score_vcf(
    ctx: click.Context,
    checkpoint: str | None,
    vcf: str | None,
    out: str,
    merge: bool,
    centered: bool,
    exact: bool,
    **options: Any,
) -> None:
    """Per-variant effects of every variant of a VCF/BCF: from the multiplexer (shared windows, or --centered),
    or from the base model (--exact). One result per ALT allele of each record; variants that cannot be
    scored (indels without --exact, absent chromosomes, ...) are kept, marked 'skipped: <reason>'. Every output
    records what the scores mean (quantity, sign, log base, window, strand, model, genome fingerprint)."""
    from pipeline.apply.variants.score_vcf import merge_scores
    from pipeline.apply.variants.score_vcf import score_vcf as run

    given = [
        name
        for name in ("checkpoint", "vcf", "centered", "exact", *options)
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    if merge:
        extra = ["--" + name.replace("_", "-") for name in given if name != "overwrite"]
        if extra:
            raise UserError(f"--merge takes only --out and --overwrite, not {', '.join(extra)}")
        refuse_url(out, "--out", PARTS_REASON)
        click.echo(merge_scores(out, overwrite=options["overwrite"], progress=_progress(ctx)).line())
        return
    if checkpoint is None or vcf is None:
        raise UserError("score-vcf needs --checkpoint and --vcf (or --merge to join the parts of a sharded run)")
    shortcut = "exact" if exact else "centered" if centered else None  # --exact also uses centred windows
    if shortcut is not None and "mode" in given and options["mode"] != shortcut:
        raise UserError(f"--{shortcut} is --mode {shortcut}; it does not go with --mode {options['mode']}")
    opts = settings(ScoreVcfOptions, {**options, "mode": shortcut or options["mode"]})
    if options["shard"] is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        refuse_url(out, "--out", PARTS_REASON)
    with url_outputs({"--out": out}, inputs={"--catalogue": options["catalogue"]}) as urls:
        line = run(checkpoint, vcf, urls["--out"], opts, progress=_progress(ctx)).line()
    click.echo(urls.shown(line), err=out == "-")  # --out -: the rows are on standard output


@cli.group(invoke_without_command=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="best.pt or last.pt (required).")
@click.option(
    "--out",
    help="The catalogue, a Zarr store (.zarr) on a file system (not a URL); an unfinished one is resumed (required).",
)
@declared_options(CatalogueOptions)
@click.pass_context
def catalogue(ctx: click.Context, checkpoint: str | None, out: str | None, **options: Any) -> None:
    """The multiplexer's effect of every SNV (the 3 other bases at every position) of regions, contigs or a
    whole genome, in a Zarr store chunked along position: resumable, sharded like distill, read by lookup
    and score-vcf --catalogue. `catalogue export` writes a finished one as a table."""
    if ctx.invoked_subcommand is not None:
        given = [p.opts[0] for p in ctx.command.params if ctx.get_parameter_source(str(p.name)) == COMMAND_LINE]
        if given:
            raise click.UsageError(f"{', '.join(given)}: an option of `catalogue` itself, not of its subcommands", ctx)
        return
    if checkpoint is None or out is None:
        raise click.UsageError(f"Missing option '{'--checkpoint' if checkpoint is None else '--out'}'.", ctx)
    from pipeline.apply.variants.catalogue import build_catalogue

    click.echo(build_catalogue(checkpoint, out, settings(CatalogueOptions, options), progress=_progress(ctx)).line())


@catalogue.command("export")
@click.argument("catalogue_path", metavar="CATALOGUE", type=click.Path())
@click.option(
    "--out",
    required=True,
    help="S.tsv.gz (bgzip, with a tabix index S.tsv.gz.tbi) or S.parquet (needs pyarrow: the tables extra); "
    "a local path (its parts are kept in S.parts until it is complete).",
)
@declared_options(ExportOptions)
@click.pass_context
def catalogue_export(ctx: click.Context, catalogue_path: str, out: str, **options: Any) -> None:
    """A finished catalogue's summary tier as one table: one row per SNV (chrom, pos, ref, alt, max_abs,
    top_target, then the top-k stored targets and their effects), in genome order. Streams a catalogue
    unit at a time; an interrupted export resumes by contig."""
    from pipeline.apply.variants.export import export_catalogue

    click.echo(export_catalogue(catalogue_path, out, settings(ExportOptions, options), progress=_progress(ctx)).line())


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt or last.pt.")
@click.option("--out", required=True, help="The background, a Zarr store (.zarr) on a file system.")
@declared_options(BackgroundOptions)
@click.pass_context
def background(ctx: click.Context, checkpoint: str, out: str, **options: Any) -> None:
    """Per-target quantiles of the multiplexer's effects over seeded windows (default: the spec's test
    split), so score-vcf, lookup and catalogue export can say how large a score is: --background adds each
    score's percentile (the share of background effects at or below it, per target)."""
    from pipeline.apply.variants.background import build_background

    click.echo(build_background(checkpoint, out, settings(BackgroundOptions, options), progress=_progress(ctx)).line())


@cli.command()
@click.argument("catalogue_path", metavar="CATALOGUE", type=click.Path())
@click.option(
    "--out",
    required=True,
    help="Output, as score-vcf writes: .tsv, .tsv.gz, .zarr (.vcf.gz with --vcf); a path or a URL (s3://...); "
    "- writes standard output (--out-format).",
)
@declared_options(LookupOptions)
@click.pass_context
def lookup(ctx: click.Context, catalogue_path: str, out: str, **options: Any) -> None:
    """Variants answered from a catalogue (only the chunks they need are read), in score-vcf's row format.
    A query the catalogue cannot answer (contig or position not catalogued, N, not an SNV) is a row with
    the reason; REF is checked against the catalogue's base."""
    from pipeline.apply.variants.lookup import lookup as run

    with url_outputs({"--out": out}, inputs={"CATALOGUE": catalogue_path}) as urls:
        line = run(catalogue_path, urls["--out"], settings(LookupOptions, options), progress=_progress(ctx)).line()
    click.echo(urls.shown(line), err=out == "-")  # --out -: the rows are on standard output


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", help="Also write the table to this Markdown file (a path or a URL).")
@click.option("--plot", help="Accuracy against seconds per window, as a PNG (a path or a URL).")
@click.option(
    "--report",
    "reports",
    multiple=True,
    help="RUN=REPORT.json: evaluate's report of a run kept outside its folder (repeatable).",
)
@click.option("--mixed-stores", is_flag=True, help="Allow runs trained on stores of different content.")
@click.option("--sequences", default=2, show_default=True, type=click.IntRange(min=1), help="Windows timed per run.")
@_device
@click.option("--overwrite", is_flag=True, help="Replace a table or plot written before.")
def compare(runs: tuple[str, ...], **options: Any) -> None:
    """Training runs side by side: architecture and parameters, store and samples used, steps, best
    validation and test weighted Pearson, and seconds per window of the multiplexer next to exact fast and
    naive ISM of the base model on the same device. Runs on stores of different content need --mixed-stores."""
    from pipeline.apply.compare import compare as run

    with url_outputs({"--out": options["out"], "--plot": options["plot"]}) as urls:
        text = run(list(runs), **{**options, "out": urls.get("--out"), "plot": urls.get("--plot")})
    click.echo(urls.shown(text), nl=False)


@cli.command()
@click.argument("pred", type=click.Path())
@click.option("--out", required=True, help="Image file: .png, .pdf or .svg (a path or a URL).")
@declared_options(PlotOptions)
def plot(pred: str, out: str, **options: Any) -> None:
    """Heatmap of one target's [4, L] effects, reference letters underneath. PRED is an effects file
    (predict, ism) or a catalogue (with --region)."""
    from pipeline.apply.plot import plot_effects

    with url_outputs({"--out": out}) as urls:
        written = plot_effects(pred, urls["--out"], settings(PlotOptions, options))
    click.echo(f"wrote {urls.shown(str(written))}")


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt or last.pt.")
@click.option("--store", "store_path", required=True, help="Store with the held-out split.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for report.json, report.md and weighted_pearson_hist.png (a path or a URL).",
)
@declared_options(EvaluateOptions)
@click.pass_context
def evaluate(ctx: click.Context, checkpoint: str, store_path: str, out: str, **options: Any) -> None:
    """Accuracy against the base model's ISM (weighted Pearson per target) and speed against naive
    and fast ISM; writes report.json, report.md and a histogram of the per-target correlations."""
    from pipeline.apply.evaluate import evaluate as run
    from pipeline.apply.evaluate import summary_line

    chosen = settings(EvaluateOptions, options)
    with url_outputs({"--out": out}, inputs={"--store": store_path}) as urls:
        line = summary_line(run(checkpoint, store_path, urls["--out"], chosen, progress=_progress(ctx)))
    click.echo(urls.shown(line))


@cli.command()
@click.option(
    "--workdir",
    default="work/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where everything is written (reused on rerun).",
)
@_device
@click.option("--steps", type=click.IntRange(min=1), help="Training steps (default: the demo spec's).")
@click.pass_context
def demo(ctx: click.Context, workdir: str, device: str, steps: int | None) -> None:
    """The embedded default end to end: synthetic genome -> distill -> train -> evaluate -> plot.
    The last line printed is a JSON object with the headline numbers."""
    from pipeline.demo import run_demo

    refuse_url(workdir, "--workdir", DEMO_REASON)
    run_demo(workdir, device=device, steps=steps, progress=_progress(ctx), echo=click.echo)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="multiplexer")


if __name__ == "__main__":
    main()
