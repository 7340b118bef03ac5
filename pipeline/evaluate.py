"""Accuracy of a multiplexer against the base model's own ISM, and its speed against ISM.

:func:`weighted_pearson` is the published comparison's metric: for each target ``f``, the Pearson
correlation over all samples, bases and positions (flattened) of ``y_true[:, f]`` and
``y_pred[:, f]``, each term weighted by ``|y_true|``. :class:`PearsonAccumulator` computes it (and
the unweighted Pearson and the MSE) in one streaming pass, so a held-out split never has to fit in
memory. :func:`evaluate` writes ``report.json``, ``report.md`` and ``weighted_pearson_hist.png`` (the
distribution of the per-target correlations).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import UserError


class PearsonAccumulator:
    """Streaming per-target weighted and unweighted Pearson correlation and MSE (float64 sums)."""

    def __init__(self, n_targets: int) -> None:
        self.n_targets = n_targets
        self.w = torch.zeros(2, 6, n_targets, dtype=torch.float64)  # [weighted?, moment, F]
        self.sq_err = torch.zeros(n_targets, dtype=torch.float64)
        self.count = 0

    @torch.no_grad()
    def update(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
        """Add a batch.

        Parameters
        ----------
        y_true, y_pred : torch.Tensor, shape=(B, F, 4, L)
        """
        if y_true.shape != y_pred.shape or y_true.ndim < 2 or y_true.shape[1] != self.n_targets:
            raise ValueError(f"shapes {list(y_true.shape)} and {list(y_pred.shape)} do not match F={self.n_targets}")
        a = y_true.transpose(0, 1).reshape(self.n_targets, -1).double().cpu()
        b = y_pred.transpose(0, 1).reshape(self.n_targets, -1).double().cpu()
        for k, w in enumerate((torch.ones_like(a), a.abs())):
            self.w[k] += torch.stack(
                [w.sum(1), (w * a).sum(1), (w * b).sum(1), (w * a * a).sum(1), (w * b * b).sum(1), (w * a * b).sum(1)]
            )
        self.sq_err += ((a - b) ** 2).sum(1)
        self.count += a.shape[1]

    def _pearson(self, k: int) -> torch.Tensor:
        sw, sa, sb, saa, sbb, sab = self.w[k]
        cov = sab / sw - (sa / sw) * (sb / sw)
        va = saa / sw - (sa / sw) ** 2
        vb = sbb / sw - (sb / sw) ** 2
        return cov / torch.sqrt(va.clamp_min(0) * vb.clamp_min(0))

    def weighted_pearson(self) -> torch.Tensor:
        """``[F]`` weighted Pearson (NaN for a target whose effects are all 0)."""
        return self._pearson(1)

    def pearson(self) -> torch.Tensor:
        """``[F]`` unweighted Pearson."""
        return self._pearson(0)

    def mse(self) -> torch.Tensor:
        """``[F]`` mean squared error."""
        return self.sq_err / max(self.count, 1)


def weighted_pearson(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Per-target Pearson correlation weighted by ``|y_true|``.

    Parameters
    ----------
    y_true : torch.Tensor, shape=(N, F, 4, L)
        Base-model effects (the reference).
    y_pred : torch.Tensor, shape=(N, F, 4, L)
        Multiplexer effects.

    Returns
    -------
    r : torch.Tensor, shape=(F,), float64
    """
    acc = PearsonAccumulator(y_true.shape[1])
    acc.update(y_true, y_pred)
    return acc.weighted_pearson()


def nanmean(values: torch.Tensor) -> float:
    """Mean over the finite entries (targets without any effect give NaN correlations)."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


REPORT_FILES = ("report.json", "report.md", "weighted_pearson_hist.png")
HISTOGRAM = REPORT_FILES[2]


def _timed(fn: Any, device: torch.device, repeats: int = 1) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def evaluate(
    checkpoint: str,
    store_path: str,
    out_dir: str,
    *,
    split: str | None = None,
    device: str | None = None,
    batch_size: int = 16,
    timing_sequences: int = 4,
    progress: bool = True,
    overwrite: bool = False,
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
    split : str, optional
        Default ``test`` if the store has it, else ``valid``.
    device : str, optional
        Where both models run.
    batch_size : int
        Sequences per multiplexer pass.
    timing_sequences : int
        Sequences timed through naive and fast ISM (the multiplexer is timed on the same ones).
    overwrite : bool
        Replace an existing report in ``out_dir``.

    Returns
    -------
    report : dict
        What ``report.json`` holds.
    """
    from tqdm import tqdm

    from pipeline.device import exact_float32, resolve_device
    from pipeline.fast_ism import fast_ism, supports
    from pipeline.ism import mask_effects, naive_ism
    from pipeline.models import load_checkpoint
    from pipeline.models.registry import build_base_from_identity
    from pipeline.store import open_store

    out = Path(out_dir)
    files = [out / name for name in REPORT_FILES]
    if not overwrite and any(f.exists() for f in files):
        raise UserError(f"{str(out)!r} already holds a report; choose another folder or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder")
    dev = resolve_device(device)
    exact_float32()
    model, meta = load_checkpoint(checkpoint, dev)
    store = open_store(store_path)
    if store.seq_len != meta["seq_len"] or store.n_targets != meta["n_targets"]:
        raise UserError(
            f"checkpoint is for L={meta['seq_len']}, F={meta['n_targets']} but store {store_path!r} has "
            f"L={store.seq_len}, F={store.n_targets}"
        )
    if store.target_kind != meta["target_kind"]:
        raise UserError(f"checkpoint predicts {meta['target_kind']} but store holds {store.target_kind}")
    split = split or ("test" if "test" in store.splits else "valid")
    store.require_complete(split)
    n = store.split_info(split).n_samples
    ref_arr, tgt_arr = store.array(split, "reference"), store.array(split, "targets")
    acc = PearsonAccumulator(store.n_targets)
    with torch.no_grad():
        for start in tqdm(range(0, n, batch_size), desc=f"evaluate {split}", disable=not progress, unit="batch"):
            X = torch.from_numpy(np.asarray(ref_arr[start : start + batch_size]).astype(np.float32)).to(dev)
            y = torch.from_numpy(np.asarray(tgt_arr[start : start + batch_size])).to(dev).float()
            acc.update(y, mask_effects(model(X).float(), X))

    # speed on the same sequences: multiplexer pass vs naive ISM with the base model
    base = build_base_from_identity(store.attrs["base"], seed=store.attrs["spec"].get("seed")).to(dev)
    k = max(1, min(timing_sequences, n))
    X = torch.from_numpy(np.asarray(ref_arr[:k]).astype(np.float32)).to(dev)
    ism_batch = int(store.attrs["spec"].get("ism_batch_size", 1024))
    with torch.no_grad():
        model(X[:1])  # warm-up
        naive_ism(base, X[:1], target=store.target_kind, batch_size=ism_batch, device=dev)
        mux_s = _timed(lambda: model(X), dev, repeats=3) / k
        ism_s = _timed(lambda: naive_ism(base, X, target=store.target_kind, batch_size=ism_batch, device=dev), dev) / k
        fast_s = None
        if supports(base, store.seq_len, dev) is None:
            fast_ism(base, X[:1], target=store.target_kind, batch_size=ism_batch, device=dev)
            fast_s = (
                _timed(lambda: fast_ism(base, X, target=store.target_kind, batch_size=ism_batch, device=dev), dev) / k
            )

    wp, p, mse = acc.weighted_pearson(), acc.pearson(), acc.mse()
    names = store.target_names
    finite = [i for i in range(store.n_targets) if math.isfinite(float(wp[i]))]
    order = sorted(finite, key=lambda i: -float(wp[i]))  # best first; targets without effects left out
    n_show = min(5, len(order))
    report = {
        "checkpoint": str(checkpoint),
        "store": str(store_path),
        "split": split,
        "n_sequences": n,
        "device": str(dev),
        "seq_len": store.seq_len,
        "n_targets": store.n_targets,
        "target_kind": store.target_kind,
        "weighted_pearson_mean": nanmean(wp),
        "weighted_pearson_median": float(np.median(wp[finite].numpy())) if finite else float("nan"),
        "pearson_mean": nanmean(p),
        "mse": float(mse.mean()),
        "timing_sequences": k,
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
    out.mkdir(parents=True, exist_ok=True)
    pearson_histogram(wp.numpy(), p.numpy(), out / HISTOGRAM, title=f"{store.n_targets} targets, split {split}")
    (out / "report.json").write_text(json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(_markdown(report))
    report["report"] = str(out / "report.json")
    report["histogram"] = str(out / HISTOGRAM)
    return report


def _target(names: list[str], wp: torch.Tensor, p: torch.Tensor, i: int) -> dict[str, Any]:
    return {"name": names[i], "weighted_pearson": float(wp[i]), "pearson": float(p[i])}


def _json_safe(obj: Any) -> Any:
    """NaN and infinities become ``null`` (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = np.linspace(-1.0, 1.0, 41)
    fig, ax = plt.subplots(figsize=HIST_SIZE, dpi=HIST_DPI, layout="constrained")
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
    plt.close(fig)
    return str(path)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _markdown(r: dict[str, Any]) -> str:
    t = r["seconds_per_sequence"]
    lines = [
        "# Multiplexer evaluation",
        "",
        f"- checkpoint: `{r['checkpoint']}`",
        f"- store: `{r['store']}`, split `{r['split']}` "
        f"({r['n_sequences']} sequences, L = {r['seq_len']}, F = {r['n_targets']}, {r['target_kind']})",
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
