"""``evaluate``: a multiplexer's accuracy against the base model's own ISM, and its speed against ISM.

Accuracy is the published comparison's metric, the per-target weighted Pearson correlation
(:mod:`pipeline.metrics`), streamed over a held-out split of a store. Speed is measured on the same
device for the multiplexer, naive ISM and fast ISM. :func:`evaluate` writes ``report.json``,
``report.md`` and ``weighted_pearson_hist.png`` (the distribution of the per-target correlations),
under temporary names published together when all three are complete; ``--overwrite`` replaces only
report files that ``evaluate`` wrote, and ``--out`` may not be the store or checkpoint it reads.
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
from tqdm import tqdm

from pipeline.apply.outputs import IMAGE, OutputKind, Sources, check_inputs, check_output
from pipeline.core.commands import EvaluateOptions
from pipeline.core.files import refuse_existing, remove_stale_temporaries, staging
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
    acc = _accuracy(model, store, split, o.batch_size, dev, progress)
    timings = time_per_sequence(model, store, split, o.timing_sequences, dev)
    report = {"precision": o.precision} | _report(
        acc, store, timings, checkpoint=str(checkpoint), store_path=str(store_path), split=split, device=dev
    )
    wp, p = acc.weighted_pearson(), acc.pearson()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with staging(out / "report.json") as stage:  # published together once all three are complete
            stage.path(out / "report.json").write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
            title = f"{store.n_targets} targets, split {split}"
            pearson_histogram(wp.numpy(), p.numpy(), stage.path(out / HISTOGRAM), title=title)
            stage.path(out / "report.md").write_text(_markdown(report))
    except OSError as exc:
        raise WriteError(f"cannot write the report in {str(out)!r}: {exc.strerror or exc}") from None
    report["report"] = str(out / "report.json")
    report["histogram"] = str(out / HISTOGRAM)
    return report


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
    return (
        f"mean weighted Pearson {report['weighted_pearson_mean']:.4f} on {report['split']} "
        f"({report['n_sequences']} sequences); "
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
) -> PearsonAccumulator:
    """Stream the split through the multiplexer; masked predictions against the stored targets."""
    n = store.split_info(split).n_samples
    acc = PearsonAccumulator(store.n_targets)
    for start in tqdm(range(0, n, batch_size), desc=f"evaluate {split}", disable=not progress, unit="batch"):
        stop = min(start + batch_size, n)  # read checked against the store's checksums
        X = torch.from_numpy(store.read(split, "reference", start, stop).astype(np.float32)).to(dev)
        y = torch.from_numpy(store.read(split, "targets", start, stop)).to(dev).float()
        acc.update(y, mask_effects(model(X).float(), X))
    return acc


@torch.no_grad()
def time_per_sequence(
    model: torch.nn.Module, store: Store, split: str, sequences: int, dev: torch.device
) -> dict[str, Any]:
    """Seconds per sequence of the multiplexer, naive ISM and fast ISM (when it supports the base model),
    on the split's first sequences, after a warm-up; the base model is rebuilt as distill built it."""
    meta = store.meta
    base = build_base_from_identity(meta.base, seed=meta.seed).to(dev)
    k = max(1, min(sequences, store.split_info(split).n_samples))
    X = torch.from_numpy(store.read(split, "reference", 0, k).astype(np.float32)).to(dev)
    options: dict[str, Any] = {
        "target": meta.target_kind,
        "batch_size": meta.ism_batch_size or ISM_BATCH_SIZE,
        "device": dev,
    }
    model(X[:1])  # warm-up
    naive_ism(base, X[:1], **options)
    mux_s = _timed(lambda: model(X), dev, repeats=3) / k
    ism_s = _timed(lambda: naive_ism(base, X, **options), dev) / k
    fast_s = None
    if supports(base, store.seq_len, dev) is None:
        fast_ism(base, X[:1], **options)
        fast_s = _timed(lambda: fast_ism(base, X, **options), dev) / k
    return {"sequences": k, "multiplexer": mux_s, "naive_ism": ism_s, "fast_ism": fast_s}


def _report(
    acc: PearsonAccumulator,
    store: Store,
    timings: dict[str, Any],
    *,
    checkpoint: str,
    store_path: str,
    split: str,
    device: torch.device,
) -> dict[str, Any]:
    """What ``report.json`` holds: the run, the accuracy summaries, the timings, per-target figures."""
    wp, p, mse = acc.weighted_pearson(), acc.pearson(), acc.mse()
    names = store.target_names
    finite = [i for i in range(store.n_targets) if math.isfinite(float(wp[i]))]
    order = sorted(finite, key=lambda i: -float(wp[i]))  # best first; targets without effects left out
    n_show = min(5, len(order))
    mux_s, ism_s, fast_s = timings["multiplexer"], timings["naive_ism"], timings["fast_ism"]
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
        "speedup_vs_naive_ism": ism_s / mux_s if mux_s > 0 else None,
        "speedup_vs_fast_ism": fast_s / mux_s if fast_s is not None and mux_s > 0 else None,
        "best_targets": [_target(names, wp, p, i) for i in order[:n_show]],
        "worst_targets": [_target(names, wp, p, i) for i in order[::-1][:n_show]],
        "targets_without_effects": [names[i] for i in range(store.n_targets) if i not in set(finite)],
        "histogram": HISTOGRAM,
        "per_target": [
            {"name": names[i], "weighted_pearson": float(wp[i]), "pearson": float(p[i]), "mse": float(mse[i])}
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
        f"({r['n_sequences']} sequences, L = {r['seq_len']}, F = {r['n_targets']}, {r['target_kind']})",
        f"- base model: `{r['base_model']['model']}`, weights {r['base_model']['weights']}",
        f"- device: {r['device']}; speed measured on {r['timing_sequences']} sequences",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| mean weighted Pearson (weights = abs(base-model effect)) | {r['weighted_pearson_mean']:.4f} |",
        f"| median weighted Pearson | {r['weighted_pearson_median']:.4f} |",
        f"| mean Pearson | {r['pearson_mean']:.4f} |",
        f"| MSE | {r['mse']:.6f} |",
        f"| multiplexer, seconds per sequence | {t['multiplexer']:.5f} |",
        f"| naive ISM, seconds per sequence | {t['naive_ism']:.5f} |",
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
    if r["targets_without_effects"]:
        names = ", ".join(r["targets_without_effects"][:20])
        more = len(r["targets_without_effects"]) - 20
        lines += [
            f"Targets without any effect in this split (no correlation): {names}"
            + (f" and {more} more" if more > 0 else ""),
            "",
        ]
    return "\n".join(lines)
