"""``evaluate``: a multiplexer's accuracy against the base model's own ISM, and its speed against ISM.

Accuracy is the published comparison's metric, the per-target weighted Pearson correlation
(:mod:`pipeline.metrics`), streamed over a held-out split of a store. Speed is measured on the same
device for the multiplexer, naive ISM and fast ISM. :func:`evaluate` writes ``report.json``,
``report.md`` and ``weighted_pearson_hist.png`` (the distribution of the per-target correlations),
under temporary names published together when all three are complete; ``--overwrite`` replaces only
report files that ``evaluate`` wrote, and ``--out`` may not be the store or checkpoint it reads.

The accuracy report is written as soon as the accuracy is known, before timing starts (timing exact
ISM of a large base model on a CPU can take far longer than the accuracy); it is written again with
the timings once they are measured. ``--timing-sequences 0`` skips timing. A target whose base-model
effects have fewer than :data:`MIN_EFFECTS` non-zero values in the split is flagged
(``sparse_targets``) and left out of the best and worst targets: a correlation over a handful of
values says nothing (two values always correlate at exactly +1 or -1).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from pipeline.apply.outputs import IMAGE, OutputKind, Sources, check_inputs, check_output
from pipeline.core.commands import EvaluateOptions
from pipeline.core.files import refuse_existing, remove_stale_temporaries, staging
from pipeline.core.progress import Share, plural, progress_bar
from pipeline.core.runtime import exact_float32, resolve_device
from pipeline.core.spec import ISM_BATCH_SIZE
from pipeline.errors import UserError, WriteError
from pipeline.ism import fast_ism, mask_effects, naive_ism, supports
from pipeline.metrics import PearsonAccumulator, nanmean
from pipeline.models import build_base_from_identity, for_inference, load_checkpoint, weights_label
from pipeline.store import Store, open_store

REPORT_FILES = ("report.json", "report.md", "weighted_pearson_hist.png")
HISTOGRAM = REPORT_FILES[2]
MARKDOWN_TITLE = "# Multiplexer evaluation"
MIN_EFFECTS = 100
"""A target needs at least this many non-zero base-model effects in the split to be ranked among the best
or worst: below it a correlation's standard error (about ``1/sqrt(n)``) exceeds 0.1, and a handful of
values can correlate at exactly +-1. Such targets are listed in ``sparse_targets``."""


def _is_report_json(path: Path) -> bool:
    try:
        if path.stat().st_size > 64 * 1024**2:
            return False
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "weighted_pearson_mean" in data


def _is_report_md(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MARKDOWN_TITLE)) == MARKDOWN_TITLE.encode()
    except OSError:
        return False


REPORT_KINDS = {
    "report.json": OutputKind("a report.json written by evaluate", _is_report_json),
    "report.md": OutputKind("a report.md written by evaluate", _is_report_md),
    HISTOGRAM: IMAGE,
}
"""What ``--overwrite`` may replace in the report folder."""


def _timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


@exact_float32()
def evaluate(
    checkpoint: str,
    store_path: str,
    out_dir: str,
    options: EvaluateOptions | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare a multiplexer with the base model's ISM on a held-out split; write the report.

    Parameters
    ----------
    checkpoint : str
        ``best.pt``/``last.pt`` from ``multiplexer train``.
    store_path : str
        Store holding the split (its targets are the base model's ISM).
    out_dir : str
        Gets ``report.json``, ``report.md`` and ``weighted_pearson_hist.png``.
    options : EvaluateOptions, optional
        The split (default ``test`` if the store has it, else ``valid``), the device where both models
        run, the sequences per multiplexer pass, the sequences timed through naive and fast ISM (the
        multiplexer is timed on the same ones), the multiplexer's precision (recorded in the report)
        and ``--overwrite`` (replace an existing report in ``out_dir``: only files that ``evaluate``
        wrote; the new ones are written under temporary names and swapped in together when complete)
        (:class:`~pipeline.core.commands.EvaluateOptions`; default: all defaults).
    progress : bool
        Show a progress bar.

    Returns
    -------
    report : dict
        What ``report.json`` holds.
    """
    o = options or EvaluateOptions()
    out = Path(out_dir)
    _check_report_folder(out, o.overwrite, {"--checkpoint": checkpoint, "--store": store_path})
    dev = resolve_device(o.device)
    model, meta = load_checkpoint(checkpoint, dev)
    model = for_inference(model, o.precision)
    store = open_store(store_path)
    _check_compatible(meta, store)
    split = o.split or ("test" if "test" in store.splits else "valid")
    store.require_complete(split)
    acc, nonzero = _accuracy(model, store, split, o.batch_size, dev, progress)

    def report_of(timings: dict[str, Any] | None, timing: str) -> dict[str, Any]:
        found = _report(
            acc,
            nonzero,
            store,
            timings,
            checkpoint=str(checkpoint),
            store_path=str(store_path),
            split=split,
            device=dev,
        )
        return {"precision": o.precision} | found | {"timing": timing}

    report = report_of(None, "pending" if o.timing_sequences > 0 else "skipped")
    _write_report(out, report, acc, store)  # the accuracy is kept even if timing is stopped
    if o.timing_sequences > 0:
        timings = time_per_sequence(model, store, split, o.timing_sequences, dev, progress=progress)
        report = report_of(timings, "measured")
        _write_report(out, report, acc, store)
    report["report"] = str(out / "report.json")
    report["histogram"] = str(out / HISTOGRAM)
    return report


def _write_report(out: Path, report: dict[str, Any], acc: PearsonAccumulator, store: Store) -> None:
    """Write the three report files, published together once all three are complete."""
    wp, p = acc.weighted_pearson(), acc.pearson()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with staging(out / "report.json") as stage:
            stage.path(out / "report.json").write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
            title = f"{plural(store.n_targets, 'target')}, split {report['split']}"
            pearson_histogram(wp.numpy(), p.numpy(), stage.path(out / HISTOGRAM), title=title)
            stage.path(out / "report.md").write_text(_markdown(report))
    except OSError as exc:
        raise WriteError(f"cannot write the report in {str(out)!r}: {exc.strerror or exc}") from None


def _check_report_folder(out: Path, overwrite: bool, inputs: Sources) -> None:
    """Before any work: ``out`` is a folder (or does not exist yet) and none of the command's inputs;
    each report file in it may be replaced (:func:`pipeline.apply.outputs.check_output`)."""
    check_inputs(out, inputs)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder")
    files = [out / name for name in REPORT_FILES]
    remove_stale_temporaries(files)
    for path in files:
        check_output(path, REPORT_KINDS[path.name], overwrite=True, inputs=inputs, label="report file", clean=False)
    refuse_existing(files, overwrite, what="report file")


EXACT_IS_BETTER_BELOW = 2.0
"""When the multiplexer is less than this many times faster than exact fast ISM, the report says that
exact ISM (no approximation error) is the better choice."""


def verdict(report: dict[str, Any]) -> str:
    """What the speed-ups mean: exact fast ISM is the better choice when the multiplexer is less than
    :data:`EXACT_IS_BETTER_BELOW` times faster than it (or slower)."""
    fast = report.get("speedup_vs_fast_ism")
    if report.get("timing") in ("skipped", "pending"):
        return "speed not measured" + (" (--timing-sequences 0)" if report["timing"] == "skipped" else " yet")
    if fast is None:
        return "exact fast ISM does not support this base model: the multiplexer is compared with naive ISM only"
    if fast < EXACT_IS_BETTER_BELOW:
        how = f"only {fast:.1f}x faster than it" if fast >= 1 else f"slower than it ({fast:.1f}x)"
        return (
            f"exact fast ISM is the better choice here: the multiplexer is {how}, and exact ISM has no "
            "approximation error"
        )
    return f"the multiplexer is {fast:.1f}x faster than exact fast ISM"


def summary_line(report: dict[str, Any]) -> str:
    """One line for the command line: the headline accuracy, both speed-ups, the verdict and the report's path."""
    naive, fast = report["speedup_vs_naive_ism"], report.get("speedup_vs_fast_ism")
    sparse = report.get("sparse_targets") or []
    return (
        f"mean weighted Pearson {report['weighted_pearson_mean']:.4f} on {report['split']} "
        f"({plural(report['n_sequences'], 'sequence')}); "
        + (
            f"{plural(len(sparse), 'target')} with fewer than {MIN_EFFECTS} non-zero base-model effects not ranked; "
            if sparse
            else ""
        )
        + (f"{naive:.1f}x faster than naive ISM, " if naive is not None else "")
        + (f"{fast:.1f}x vs exact fast ISM " if fast is not None else "")
        + f"({verdict(report)}); report {report['report']}"
    )


def _check_compatible(meta: dict[str, Any], store: Store) -> None:
    """The checkpoint's model must take the store's windows and predict its kind of targets."""
    if store.seq_len != meta["seq_len"] or store.n_targets != meta["n_targets"]:
        raise UserError(
            f"checkpoint is for L={meta['seq_len']}, F={meta['n_targets']} but store {store.path!r} has "
            f"L={store.seq_len}, F={store.n_targets}"
        )
    if store.target_kind != meta["target_kind"]:
        raise UserError(f"checkpoint predicts {meta['target_kind']} but store holds {store.target_kind}")


@torch.no_grad()
def _accuracy(
    model: torch.nn.Module, store: Store, split: str, batch_size: int, dev: torch.device, progress: bool
) -> tuple[PearsonAccumulator, torch.Tensor]:
    """Stream the split through the multiplexer; masked predictions against the stored targets.

    Returns the accumulated metrics and, per target, the number of non-zero stored effects ``[F]``.
    """
    n = store.split_info(split).n_samples
    acc = PearsonAccumulator(store.n_targets)
    nonzero = torch.zeros(store.n_targets, dtype=torch.long)
    with progress_bar(desc=f"evaluate {split}", unit="window", total=n, enabled=progress) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)  # read checked against the store's checksums
            X = torch.from_numpy(store.read(split, "reference", start, stop).astype(np.float32)).to(dev)
            y = torch.from_numpy(store.read(split, "targets", start, stop)).to(dev).float()
            acc.update(y, mask_effects(model(X).float(), X))
            nonzero += (y != 0).sum(dim=(0, 2, 3)).cpu()
            bar.update(stop - start)
    return acc, nonzero


@torch.no_grad()
def time_per_sequence(
    model: torch.nn.Module, store: Store, split: str, sequences: int, dev: torch.device, *, progress: bool = False
) -> dict[str, Any]:
    """Seconds per sequence of the multiplexer, naive ISM and fast ISM (when it supports the base model),
    on the split's first sequences, after a warm-up; the base model is rebuilt as distill built it.

    With ``progress``, a bar counts the windows run through exact ISM (warm-ups included), advancing as
    the engines report finished variants.
    """
    meta = store.meta
    base = build_base_from_identity(meta.base, seed=meta.seed).to(dev)
    k = max(1, min(sequences, store.split_info(split).n_samples))
    X = torch.from_numpy(store.read(split, "reference", 0, k).astype(np.float32)).to(dev)
    options: dict[str, Any] = {
        "target": meta.target_kind,
        "batch_size": meta.ism_batch_size or ISM_BATCH_SIZE,
        "device": dev,
    }
    fast = supports(base, store.seq_len, dev) is None
    variants = 3 * (X.sum(dim=1) > 0).sum(dim=1).cpu()  # [k]: what the engines report, per window
    total = (1 + k) * (2 if fast else 1)
    with progress_bar(desc="evaluate timing (exact ISM)", unit="window", total=total, enabled=progress) as bar:

        def ism(engine: Any, windows: int) -> Callable[[], object]:
            """Exact ISM of the first ``windows`` windows, advancing the bar as variants finish."""
            share = Share(bar, windows, int(variants[:windows].sum()))

            def run() -> object:
                result = engine(base, X[:windows], progress=share, **options)
                share.finish()
                return result

            return run

        model(X[:1])  # warm-up
        ism(naive_ism, 1)()
        mux_s = _timed(lambda: model(X), dev, repeats=3) / k
        ism_s = _timed(ism(naive_ism, k), dev) / k
        fast_s = None
        if fast:
            ism(fast_ism, 1)()
            fast_s = _timed(ism(fast_ism, k), dev) / k
    return {"sequences": k, "multiplexer": mux_s, "naive_ism": ism_s, "fast_ism": fast_s}


NO_TIMINGS: dict[str, Any] = {"sequences": 0, "multiplexer": None, "naive_ism": None, "fast_ism": None}
"""The timings of a report whose speed was not measured (yet)."""


def _report(
    acc: PearsonAccumulator,
    nonzero: torch.Tensor,
    store: Store,
    timings: dict[str, Any] | None,
    *,
    checkpoint: str,
    store_path: str,
    split: str,
    device: torch.device,
) -> dict[str, Any]:
    """What ``report.json`` holds: the run, the accuracy summaries, the timings (``None``: not measured),
    per-target figures; targets with fewer than :data:`MIN_EFFECTS` non-zero effects are not ranked."""
    wp, p, mse = acc.weighted_pearson(), acc.pearson(), acc.mse()
    names = store.target_names
    finite = [i for i in range(store.n_targets) if math.isfinite(float(wp[i]))]
    sparse = [i for i in finite if int(nonzero[i]) < MIN_EFFECTS]
    ranked = sorted(set(finite) - set(sparse), key=lambda i: -float(wp[i]))  # best first
    n_show = min(5, len(ranked))
    timings = timings or NO_TIMINGS
    mux_s, ism_s, fast_s = timings["multiplexer"], timings["naive_ism"], timings["fast_ism"]
    measured = mux_s is not None and mux_s > 0
    return {
        "checkpoint": checkpoint,
        "store": store_path,
        "split": split,
        "n_sequences": store.split_info(split).n_samples,
        "device": str(device),
        "seq_len": store.seq_len,
        "n_targets": store.n_targets,
        "target_kind": store.target_kind,
        "base_model": {"model": store.meta.base["model"], "weights": weights_label(store.meta.base)},
        "weighted_pearson_mean": nanmean(wp),
        "weighted_pearson_median": float(np.median(wp[finite].numpy())) if finite else float("nan"),
        "pearson_mean": nanmean(p),
        "mse": float(mse.mean()),
        "timing_sequences": timings["sequences"],
        "seconds_per_sequence": {"multiplexer": mux_s, "naive_ism": ism_s, "fast_ism": fast_s},
        "speedup_vs_naive_ism": ism_s / mux_s if measured else None,
        "speedup_vs_fast_ism": fast_s / mux_s if fast_s is not None and measured else None,
        "best_targets": [_target(names, wp, p, i) for i in ranked[:n_show]],
        "worst_targets": [_target(names, wp, p, i) for i in ranked[::-1][:n_show]],
        "targets_without_effects": [names[i] for i in range(store.n_targets) if i not in set(finite)],
        "min_effects": MIN_EFFECTS,
        "sparse_targets": [{**_target(names, wp, p, i), "nonzero_effects": int(nonzero[i])} for i in sparse],
        "histogram": HISTOGRAM,
        "per_target": [
            {
                "name": names[i],
                "weighted_pearson": float(wp[i]),
                "pearson": float(p[i]),
                "mse": float(mse[i]),
                "nonzero_effects": int(nonzero[i]),
            }
            for i in range(store.n_targets)
        ],
    }


def _target(names: list[str], wp: torch.Tensor, p: torch.Tensor, i: int) -> dict[str, Any]:
    return {"name": names[i], "weighted_pearson": float(wp[i]), "pearson": float(p[i])}


def json_safe(obj: Any) -> Any:
    """NaN and infinities become ``null`` (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


HIST_SIZE = (6.4, 4.0)
"""Histogram figure size in inches (at :data:`HIST_DPI`: 640 x 400 pixels)."""
HIST_DPI = 100


def pearson_histogram(weighted: np.ndarray, unweighted: np.ndarray, path: str | Path, *, title: str = "") -> str:
    """Histogram PNG of per-target weighted and unweighted Pearson (NaN targets left out).

    Parameters
    ----------
    weighted, unweighted : np.ndarray, shape=(F,)
    path : path
        PNG file; its size is :data:`HIST_SIZE` x :data:`HIST_DPI`.
    """
    bins = np.linspace(-1.0, 1.0, 41).tolist()
    fig = Figure(figsize=HIST_SIZE, dpi=HIST_DPI, layout="constrained")
    ax = fig.subplots()
    for values, label, colour in ((weighted, "weighted", "tab:red"), (unweighted, "unweighted", "tab:blue")):
        v = np.asarray(values, dtype=np.float64)
        v = np.clip(v[np.isfinite(v)], -1.0, 1.0)
        if v.size:
            ax.hist(v, bins=bins, alpha=0.55, color=colour, label=f"{label} (mean {v.mean():.3f})")
            ax.axvline(v.mean(), color=colour, linestyle="--", linewidth=1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no target has any effect", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Pearson correlation with the base model's ISM, per target")
    ax.set_ylabel("targets")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=HIST_DPI)
    return str(path)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _markdown(r: dict[str, Any]) -> str:
    t = r["seconds_per_sequence"]
    lines = [
        MARKDOWN_TITLE,
        "",
        f"- checkpoint: `{r['checkpoint']}`",
        f"- store: `{r['store']}`, split `{r['split']}` "
        f"({plural(r['n_sequences'], 'sequence')}, L = {r['seq_len']}, F = {r['n_targets']}, {r['target_kind']})",
        f"- base model: `{r['base_model']['model']}`, weights {r['base_model']['weights']}",
        f"- device: {r['device']}; "
        + (f"speed measured on {plural(r['timing_sequences'], 'sequence')}" if r["timing_sequences"] else verdict(r)),
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| mean weighted Pearson (weights = abs(base-model effect)) | {r['weighted_pearson_mean']:.4f} |",
        f"| median weighted Pearson | {r['weighted_pearson_median']:.4f} |",
        f"| mean Pearson | {r['pearson_mean']:.4f} |",
        f"| MSE | {r['mse']:.6f} |",
        f"| multiplexer, seconds per sequence | {_fmt(t['multiplexer'], '.5f')} |",
        f"| naive ISM, seconds per sequence | {_fmt(t['naive_ism'], '.5f')} |",
        f"| fast ISM, seconds per sequence | {_fmt(t['fast_ism'], '.5f')} |",
        f"| speedup vs naive ISM | {_fmt(r['speedup_vs_naive_ism'], '.1f')}x |",
        f"| speedup vs fast ISM | {_fmt(r['speedup_vs_fast_ism'], '.1f')}x |",
        "",
        f"**{verdict(r).capitalize()}.**",
        "",
        f"![per-target Pearson]({r['histogram']})",
        "",
    ]
    for title, key in (("Best targets", "best_targets"), ("Worst targets", "worst_targets")):
        lines += [f"## {title}", "", "| target | weighted Pearson | Pearson |", "| --- | --- | --- |"]
        lines += [f"| {x['name']} | {x['weighted_pearson']:.4f} | {x['pearson']:.4f} |" for x in r[key]]
        lines.append("")
    if r.get("sparse_targets"):
        sparse = ", ".join(f"{x['name']} ({x['nonzero_effects']})" for x in r["sparse_targets"][:20])
        more = len(r["sparse_targets"]) - 20
        lines += [
            f"Targets with fewer than {r['min_effects']} non-zero base-model effects in this split, not ranked "
            f"above (their correlation says little): {sparse}" + (f" and {more} more" if more > 0 else ""),
            "",
        ]
    if r["targets_without_effects"]:
        names = ", ".join(r["targets_without_effects"][:20])
        more = len(r["targets_without_effects"]) - 20
        lines += [
            f"Targets without any effect in this split (no correlation): {names}"
            + (f" and {more} more" if more > 0 else ""),
            "",
        ]
    return "\n".join(lines)
