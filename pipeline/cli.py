"""The ``multiplexer`` command line: parses arguments and dispatches; the work lives in the modules.

Every command has ``--help``; every bad input ends in one ``error: ...`` line on stderr and a
non-zero exit status, without a traceback (set ``MULTIPLEXER_DEBUG=1`` to see one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import click

from pipeline import __version__
from pipeline.errors import UserError

EXIT_ERROR = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


class _Cli(click.Group):
    """Group whose errors are one ``error:`` line (usage errors included) instead of a traceback."""

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
        except click.Abort:
            _fail("aborted", EXIT_ERROR)
        except UserError as exc:
            _fail(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory; use smaller batches (--batch-size)", EXIT_ERROR)
        except OSError as exc:
            if os.environ.get("MULTIPLEXER_DEBUG"):
                raise
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)
        except Exception as exc:  # a bug, not a bad input: still one line, with a way to see more
            if os.environ.get("MULTIPLEXER_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set MULTIPLEXER_DEBUG=1 for a traceback)", EXIT_ERROR)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return rv


def _progress(ctx: click.Context) -> bool:
    return not ctx.find_root().params.get("quiet", False)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


# ------------------------------------------------------------------------------------------------
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
    from pipeline.genome import synth_genome

    lengths = synth_genome(out, seed=seed, divisor=divisor)
    click.echo(f"wrote {out} ({len(lengths)} chromosomes, {sum(lengths.values()):,} bp) and {out}.fai")


_engine_option = click.option(
    "--engine",
    type=click.Choice(["auto", "fast", "naive"]),
    default="auto",
    show_default=True,
    help="ISM engine: fast (exact, incremental), naive (one base-model pass per variant), or auto "
    "(fast when it supports the base model, else naive, said once).",
)


# ------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--store", "store_path", help="Store path or URL (default: the spec's `store`, else stores/<name>.zarr).")
@click.option("--split", "splits", multiple=True, help="Only this split (repeatable; default: all).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@_engine_option
@click.option("--shard", help="I/N: write only the units u with u % N == I (e.g. a SLURM array task).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Variants per base-model pass (default: the spec's).")
@click.option("--overwrite", is_flag=True, help="Discard an existing store at the path first.")
@click.option(
    "--no-overlap", is_flag=True, help="Do not prepare and write units on background threads (for benchmarks)."
)
@click.option("--create-only", is_flag=True, help="Create (or check) the store and stop, e.g. before --shard jobs.")
@click.pass_context
def distill(
    ctx: click.Context,
    spec: str,
    store_path: str | None,
    splits: tuple[str, ...],
    device: str,
    engine: str,
    shard: str | None,
    batch_size: int | None,
    overwrite: bool,
    no_overlap: bool,
    create_only: bool,
) -> None:
    """Stage 1: write (or resume) the Zarr store of SPEC: sampled windows, the base model's
    reference predictions and the effect of every SNV. Complete write units are skipped on rerun.

    \b
    Scale out with torchrun (each process takes the units u % WORLD_SIZE == RANK):
      torchrun --nproc_per_node 4 -m pipeline.cli distill SPEC.yaml
    or with a scheduler's job array (each job takes u % N == I):
      multiplexer distill SPEC.yaml --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"""
    from pipeline.distill import distill as run
    from pipeline.distill import parse_shard
    from pipeline.spec import load_spec

    summary = run(
        load_spec(spec),
        store_path=store_path,
        splits=list(splits) or None,
        device=device,
        engine=engine,
        shard=parse_shard(shard),
        overwrite=overwrite,
        batch_size=batch_size,
        progress=_progress(ctx),
        notify=lambda message: click.echo(message, err=True),
        overlap=not no_overlap,
        create_only=create_only,
    )
    if create_only:
        click.echo(f"store {summary.store} is ready")
        return
    click.echo(summary.line())
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
    """Summary: spec name and hash, base model, per-split counts and completion, bytes per sample."""
    from pipeline.store import open_store
    from pipeline.store import store_info as info

    s = info(open_store(path))
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    base = s["base"]
    click.echo(
        f"store      {s['path']}\nspec       {s['name']} (hash {s['spec_hash'][:16]})\n"
        f"window     L = {s['seq_len']}, F = {s['n_targets']} targets, {s['target_kind']}, alphabet {s['alphabet']}\n"
        f"base       {base['model']} ({base['class']}), weights {base['weights'] or 'built in'}\n"
        f"genome     {s['genome']}\n"
        f"version    format {s['format_version']}, package {s['package_version']}, created {s['created']}"
    )
    for name, sp in s["splits"].items():
        bps = sp["bytes_per_sample"]
        size = (
            f"{bps / 1e6:.3f} MB/sample vs {sp['raw_float32_bytes_per_sample'] / 1e6:.3f} MB raw float32 "
            f"({sp['compression_vs_float32']:.1f}x)"
            if bps
            else "no complete samples yet"
        )
        click.echo(
            f"{name:<10} {sp['complete_samples']}/{sp['n_samples']} samples, units {sp['complete_units']}/"
            f"{sp['n_units']} complete, {sp['targets_dtype']}: {size}"
        )


@store.command("verify")
@click.argument("path")
@click.pass_context
def store_verify(ctx: click.Context, path: str) -> None:
    """Full integrity check: all units complete, no missing chunk, no NaN, targets exactly 0 at
    reference bases and N positions, shapes and attributes consistent."""
    from pipeline.store import open_store, verify_store

    problems = verify_store(open_store(path), progress=_progress(ctx))
    if problems:
        raise UserError(
            f"store {path!r} failed verification: {problems[0]}"
            + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")
        )
    click.echo(f"store {path} is complete and consistent")


# ------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("source")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--store", "store_path", help="With a SPEC: the store path (default: the spec's).")
@click.option("--steps", type=click.IntRange(min=1), help="Total optimizer steps (also with --resume).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Global samples per optimizer step (all ranks).")
@click.option("--grad-accum", type=click.IntRange(min=1), help="Micro-steps per optimizer step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=click.FloatRange(min=0), help="AdamW weight decay.")
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), help="Learning-rate schedule after warm-up.")
@click.option("--warmup-steps", type=click.IntRange(min=0), help="Linear warm-up steps.")
@click.option("--clip-grad", type=click.FloatRange(min=0, min_open=True), help="Clip the gradient norm to this.")
@click.option("--loss-mask/--no-loss-mask", default=None, help="Leave reference-base and N entries out of the loss.")
@click.option(
    "--amp",
    type=click.Choice(["auto", "none", "bf16", "fp16"]),
    help="Mixed precision (auto: bf16 on CUDA, none on CPU).",
)
@click.option("--compile/--no-compile", default=None, help="torch.compile the model.")
@click.option("--valid-every", type=click.IntRange(min=1), help="Validate and checkpoint every N steps.")
@click.option("--valid-samples", type=click.IntRange(min=1), help="Validate on the first N valid samples.")
@click.option("--log-every", type=click.IntRange(min=1), help="Write a metrics row every N steps.")
@click.option("--multiplexer", "arch", help="conv, beluga_multiplexer, or package.module:Class / file.py:Class.")
@click.option("--arch-kwargs", help="Constructor arguments as JSON, e.g. '{\"width1\": 64}'.")
@click.option("--num-workers", type=click.IntRange(min=0), help="DataLoader worker processes per rank.")
@click.option("--prefetch-factor", type=click.IntRange(min=1), help="Batches each worker loads ahead.")
@click.option("--shuffle-buffer", type=click.IntRange(min=1), help="Write units shuffled together.")
@click.option("--seed", type=int, help="Seed of initialisation and data order.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--resume", is_flag=True, help="Continue exactly from RUN_DIR/last.pt.")
@click.pass_context
def train(
    ctx: click.Context,
    source: str,
    run_dir: str,
    store_path: str | None,
    arch: str | None,
    arch_kwargs: str | None,
    device: str,
    resume: bool,
    **overrides: Any,
) -> None:
    """Stage 2: train a multiplexer on SOURCE (a spec .yaml, whose store must exist, or a store) and
    write best.pt, last.pt, metrics.csv and config.json into RUN_DIR. Defaults come from the spec's
    train: section.

    \b
    Several GPUs or nodes (DistributedDataParallel):
      torchrun --nproc_per_node 8 -m pipeline.cli train SPEC.yaml --run-dir runs/x"""
    from pipeline.spec import TrainSpec, load_spec
    from pipeline.store import check_same_spec, open_store
    from pipeline.train import train as run
    from pipeline.train import train_config

    if source.endswith((".yaml", ".yml")):
        spec = load_spec(source)
        path = store_path or str(spec.store_path())
        try:
            check_same_spec(open_store(path), spec)
        except UserError as exc:
            if "does not exist" in str(exc):
                raise UserError(f"store {path!r} does not exist; run `multiplexer distill {source}` first") from None
            raise
        defaults = dataclasses.replace(spec.train, multiplexer=spec.resolve_import(spec.train.multiplexer))
    else:
        if store_path:
            raise UserError("--store goes with a SPEC argument; here SOURCE is already a store")
        path, defaults = source, TrainSpec()
    kwargs = None
    if arch_kwargs is not None:
        try:
            kwargs = json.loads(arch_kwargs)
        except json.JSONDecodeError as exc:
            raise UserError(f"--arch-kwargs is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise UserError("--arch-kwargs must be a JSON object")
    config = train_config(defaults, multiplexer=arch, kwargs=kwargs, **overrides)
    result = run(path, run_dir, config, resume=resume, device=device, progress=_progress(ctx))
    m = result.last_metrics
    if result.finished_before:
        click.echo(f"{result.last} is already at step {result.step} (>= --steps): nothing to do")
    elif m:
        click.echo(
            f"trained to step {result.step}: valid loss {m['valid_loss']:.5f}, valid weighted "
            f"Pearson {m['valid_weighted_pearson']:.4f}; best {result.best}, last {result.last}"
        )


# ------------------------------------------------------------------------------------------------
def _input_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--region", help="chr:pos, the 1-based window center."),
            click.option(
                "--regions",
                "regions_file",
                type=click.Path(dir_okay=False),
                help="File of regions: 'chr pos' lines or BED (0-based start, end).",
            ),
            click.option("--fasta", type=click.Path(dir_okay=False), help="FASTA of sequences of the model's length."),
            click.option(
                "--genome",
                type=click.Path(dir_okay=False),
                help="Genome FASTA for --region/--regions (default: the checkpoint's or spec's).",
            ),
            click.option("--out", required=True, help="Output: .npz, or a Zarr folder (any other name)."),
            click.option(
                "--tsv",
                is_flag=True,
                help="Also write OUT_STEM.<i>.<chrom>_<center>.tsv.gz per sequence: one row per variant "
                "('chr:pos REF>ALT'), one column per target.",
            ),
            click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
            click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        ]
    ):
        f = option(f)
    return f


def _diff_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--diff",
                is_flag=True,
                help="Write alt - ref instead of log-fold effects (runs the checkpoint's base model on each window).",
            ),
            click.option(
                "--weights",
                type=click.Path(dir_okay=False),
                help="With --diff: the base model's weights file, if it moved (sha256 is checked).",
            ),
            click.option("--base", help="With --diff: the base model's import path, if its .py file moved."),
        ]
    ):
        f = option(f)
    return f


def _tsv_note(out: str, inputs: Any, tsv: bool) -> str:
    if not tsv:
        return ""
    from pipeline.outputs import tsv_paths

    paths = tsv_paths(out, inputs.chrom, inputs.center)
    return f" and {len(paths)} TSV file{'s' if len(paths) > 1 else ''} ({paths[0]}{', ...' if len(paths) > 1 else ''})"


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt or last.pt.")
@_input_options
@_diff_options
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Sequences per pass.")
@click.pass_context
def predict(
    ctx: click.Context,
    checkpoint: str,
    region: str | None,
    regions_file: str | None,
    fasta: str | None,
    genome: str | None,
    out: str,
    tsv: bool,
    device: str,
    overwrite: bool,
    diff: bool,
    weights: str | None,
    base: str | None,
    batch_size: int,
) -> None:
    """Multiplexer effects [N, F, 4, L] for regions or sequences (L, F, targets and the default genome
    come from the checkpoint)."""
    from pipeline.models import read_checkpoint
    from pipeline.predict import predict_effects
    from pipeline.regions import load_inputs, resolve_genome

    meta = read_checkpoint(checkpoint)
    inputs = load_inputs(
        seq_len=meta["seq_len"],
        genome=resolve_genome(genome, meta.get("genome"), f"checkpoint {checkpoint!r}") if fasta is None else None,
        region=region,
        regions_file=regions_file,
        fasta=fasta,
    )
    path = predict_effects(
        checkpoint,
        inputs,
        out,
        device=device,
        batch_size=batch_size,
        overwrite=overwrite,
        progress=_progress(ctx),
        diff=diff,
        weights=weights,
        base=base,
        tsv=tsv,
    )
    kind = "alt - ref" if diff else meta["target_kind"]
    click.echo(f"wrote {kind} effects of {len(inputs.X)} sequences to {path}{_tsv_note(out, inputs, tsv)}")


@cli.command()
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(dir_okay=False),
    help="Take the base model, window length and genome from this spec.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    help="Take the base model, window length, targets and genome recorded in this multiplexer checkpoint.",
)
@click.option(
    "--base",
    help="Base model: demo, beluga, or package.module:Class / file.py:Class (with --checkpoint: the recorded "
    "model's new import path).",
)
@click.option(
    "--weights", type=click.Path(dir_okay=False), help="Base-model state dict (with --checkpoint: its new path)."
)
@click.option("--base-kwargs", help="Base-model constructor arguments as JSON.")
@click.option("--seq-len", type=click.IntRange(min=2), help="Window length (default: the spec's or the model's).")
@click.option(
    "--target",
    "kind",
    type=click.Choice(["logfold", "diff", "alt"]),
    default=None,
    help="Effect kind (default: the spec's or checkpoint's, else logfold).",
)
@_input_options
@_engine_option
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(min=1), help="Variants per pass.")
@click.pass_context
def ism(
    ctx: click.Context,
    spec_path: str | None,
    checkpoint: str | None,
    base: str | None,
    weights: str | None,
    base_kwargs: str | None,
    seq_len: int | None,
    kind: str | None,
    region: str | None,
    regions_file: str | None,
    fasta: str | None,
    genome: str | None,
    out: str,
    tsv: bool,
    device: str,
    overwrite: bool,
    engine: str,
    batch_size: int,
) -> None:
    """Exact in-silico saturation mutagenesis with the base model (same output format as predict)."""
    from pipeline.predict import ism_effects, ism_setup
    from pipeline.regions import load_inputs

    model, L, kind, names, genome = ism_setup(
        spec_path=spec_path,
        checkpoint=checkpoint,
        base=base,
        weights=weights,
        base_kwargs=base_kwargs,
        seq_len=seq_len,
        kind=kind,
        genome=genome,
        need_genome=fasta is None,
    )
    inputs = load_inputs(seq_len=L, genome=genome, region=region, regions_file=regions_file, fasta=fasta)
    path = ism_effects(
        model,
        inputs,
        out,
        target=kind,
        target_names=names,
        engine=engine,
        device=device,
        batch_size=batch_size,
        overwrite=overwrite,
        progress=_progress(ctx),
        tsv=tsv,
    )
    click.echo(f"wrote exact ISM {kind} effects of {len(inputs.X)} sequences to {path}{_tsv_note(out, inputs, tsv)}")


@cli.command("score-vcf")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt or last.pt.")
@click.option("--vcf", required=True, type=click.Path(dir_okay=False), help="VCF, plain or gzipped (1-based POS).")
@click.option("--out", required=True, help="Output table: .tsv or .tsv.gz.")
@click.option(
    "--genome", type=click.Path(dir_okay=False), help="Genome FASTA (default: the one recorded in the checkpoint)."
)
@_diff_options
@click.option(
    "--group-span",
    type=click.IntRange(min=1),
    help="Variants whose positions span at most this many bases share one window (default: the model's L; "
    "1: a centred window per position).",
)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Windows per pass.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.pass_context
def score_vcf(
    ctx: click.Context,
    checkpoint: str,
    vcf: str,
    out: str,
    genome: str | None,
    diff: bool,
    weights: str | None,
    base: str | None,
    group_span: int | None,
    batch_size: int,
    device: str,
    overwrite: bool,
) -> None:
    """Per-variant effects of every SNV of a VCF, one multiplexer pass per window of nearby variants.
    One output row per VCF record: chrom, pos, id, ref, alt, window_center, ref_check, status, then one
    column per target. Indels, multi-allelic records, absent chromosomes, ... are rows marked
    'skipped: <reason>'."""
    from pipeline.vcf import score_vcf as run

    summary = run(
        checkpoint,
        vcf,
        out,
        genome=genome,
        device=device,
        batch_size=batch_size,
        group_span=group_span,
        diff=diff,
        weights=weights,
        base=base,
        overwrite=overwrite,
        progress=_progress(ctx),
    )
    click.echo(summary.line())


@cli.command()
@click.argument("pred", type=click.Path())
@click.option("--out", required=True, help="Image file: .png, .pdf or .svg.")
@click.option("--index", default=0, show_default=True, help="Which sequence of PRED.")
@click.option("--target", help="Target name or index (default: the one with the strongest effect).")
@click.option("--width", default=100, show_default=True, help="Positions per row.")
@click.option("--dpi", default=120, show_default=True, help="Pixels per inch of a PNG.")
@click.option(
    "--compare",
    type=click.Path(),
    help="A second effects file (e.g. `multiplexer ism` output) with the same sequence, drawn underneath "
    "on the same colour scale.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing image.")
def plot(
    pred: str,
    out: str,
    index: int,
    target: str | None,
    width: int,
    dpi: int,
    compare: str | None,
    overwrite: bool,
) -> None:
    """Heatmap of one target's [4, L] effects, reference letters underneath."""
    from pipeline.plot import plot_effects

    path = plot_effects(
        pred, out, index=index, target=target, width=width, overwrite=overwrite, compare=compare, dpi=dpi
    )
    click.echo(f"wrote {path}")


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt or last.pt.")
@click.option("--store", "store_path", required=True, help="Store with the held-out split.")
@click.option("--split", help="Split (default: test if present, else valid).")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for report.json, report.md and weighted_pearson_hist.png.",
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option(
    "--timing-sequences",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Sequences timed through naive and fast ISM.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing report in --out.")
@click.pass_context
def evaluate(
    ctx: click.Context,
    checkpoint: str,
    store_path: str,
    split: str | None,
    out: str,
    device: str,
    timing_sequences: int,
    overwrite: bool,
) -> None:
    """Accuracy against the base model's ISM (weighted Pearson per target) and speed against naive
    and fast ISM; writes report.json, report.md and a histogram of the per-target correlations."""
    from pipeline.evaluate import evaluate as run

    r = run(
        checkpoint,
        store_path,
        out,
        split=split,
        device=device,
        timing_sequences=timing_sequences,
        progress=_progress(ctx),
        overwrite=overwrite,
    )
    speedup = r["speedup_vs_naive_ism"]
    click.echo(
        f"mean weighted Pearson {r['weighted_pearson_mean']:.4f} on {r['split']} "
        f"({r['n_sequences']} sequences); "
        + (f"{speedup:.1f}x faster than naive ISM; " if speedup is not None else "")
        + f"report {r['report']}"
    )


@cli.command()
@click.option(
    "--workdir",
    default="work/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where everything is written (reused on rerun).",
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps (default: the demo spec's).")
@click.pass_context
def demo(ctx: click.Context, workdir: str, device: str, steps: int | None) -> None:
    """The embedded default end to end: synthetic genome -> distill -> train -> evaluate -> plot.
    The last line printed is a JSON object with the headline numbers."""
    from pipeline.demo import run_demo

    run_demo(workdir, device=device, steps=steps, progress=_progress(ctx), echo=click.echo)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="multiplexer")


if __name__ == "__main__":
    main()
