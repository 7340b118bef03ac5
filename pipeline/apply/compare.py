"""``compare``: training runs side by side — accuracy against the time a window costs.

One row per run folder: the architecture and its parameter count, the store (path, content hash,
train samples used), the steps done, the best validation weighted Pearson (``metrics.csv``) and, when
the run was evaluated, the test weighted Pearson (a ``report.json`` of ``evaluate`` inside the run
folder, or given with ``--report``), and the seconds per window of the multiplexer next to exact fast
ISM and naive ISM of the same base model, timed on the same device and the same windows (the store's
first validation windows; :func:`~pipeline.apply.evaluate.time_per_sequence`). Runs on stores of
another content hash are refused from one table unless ``mixed_stores``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pipeline.apply.evaluate import time_per_sequence
from pipeline.apply.outputs import IMAGE, check_output, table_kind
from pipeline.core.files import atomic_path
from pipeline.core.runtime import exact_float32, resolve_device
from pipeline.errors import UserError
from pipeline.models import load_checkpoint, optimize_for_inference
from pipeline.store import open_store

COLUMNS = (
    "run", "architecture", "parameters", "store", "store_hash", "train_samples", "steps", "best_valid_wp",
    "test_wp", "multiplexer_s", "fast_ism_s", "naive_ism_s", "speedup_vs_fast_ism",
)  # fmt: skip
"""The table's columns (markdown header and CSV)."""

COMPARE_TABLE = table_kind("a table written by compare", "| run | architecture |")
"""What ``--overwrite`` may replace."""


@dataclass
class RunRow:
    """One run of the table."""

    run: str
    architecture: str
    parameters: int
    store: str
    store_hash: str
    train_samples: int | None
    steps: int
    best_valid_wp: float | None
    test_wp: float | None
    timing: dict[str, Any]

    def cells(self) -> list[str]:
        """The row's cells, formatted."""
        t = self.timing
        speedup = t["fast_ism"] / t["multiplexer"] if t.get("fast_ism") and t["multiplexer"] > 0 else None
        return [
            self.run, self.architecture, f"{self.parameters:,}", self.store, self.store_hash[:12],
            "all" if self.train_samples is None else str(self.train_samples), str(self.steps),
            _fmt(self.best_valid_wp, ".4f"), _fmt(self.test_wp, ".4f"), _fmt(t["multiplexer"], ".5f"),
            _fmt(t.get("fast_ism"), ".5f"), _fmt(t["naive_ism"], ".5f"), _fmt(speedup, ".1f"),
        ]  # fmt: skip


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _best_valid(run: Path) -> float | None:
    path = run / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        values = [float(r["valid_weighted_pearson"]) for r in csv.DictReader(handle) if r.get("valid_weighted_pearson")]
    return max(values) if values else None


def _test_wp(run: Path, reports: dict[str, Path]) -> float | None:
    found = reports.get(str(run)) or next(iter(sorted(run.rglob("report.json"))), None)
    if found is None:
        return None
    try:
        report = json.loads(Path(found).read_text())
        return float(report["weighted_pearson_mean"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{str(found)!r} is not a report.json written by evaluate") from None


def _checkpoint(run: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file():
            return run / name
    raise UserError(f"{str(run)!r} is not a run folder (no best.pt or last.pt)")


def _row(
    run: Path, reports: dict[str, Path], device: Any, sequences: int, timings: dict[str, dict[str, Any]]
) -> RunRow:
    model, meta = load_checkpoint(_checkpoint(run), device, optimize=False)
    parameters = sum(p.numel() for p in model.parameters())  # the trained network's, before the rewrite
    optimize_for_inference(model)
    store = open_store(str(meta["store"]))
    key = f"{meta['store']}"
    timing = time_per_sequence(model, store, "valid" if "valid" in store.splits else store.splits[0], sequences, device)
    if key in timings:  # one store, one base model: its ISM times are measured once
        timing.update({k: timings[key][k] for k in ("naive_ism", "fast_ism")})
    timings.setdefault(key, timing)
    arch = meta["architecture"]
    last = (run / "last.pt") if (run / "last.pt").is_file() else _checkpoint(run)
    _, last_meta = load_checkpoint(last, optimize=False)
    return RunRow(
        run=str(run), architecture=str(arch["name"]), parameters=parameters,
        store=str(meta["store"]), store_hash=str(meta["spec_hash"]), train_samples=last_meta.get("train_samples"),
        steps=int(last_meta.get("step", 0)), best_valid_wp=_best_valid(run), test_wp=_test_wp(run, reports),
        timing=timing,
    )  # fmt: skip


def markdown(rows: list[RunRow], device: str) -> str:
    """The table in Markdown, with a line saying where the times come from."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
        *("| " + " | ".join(r.cells()) + " |" for r in rows),
        "",
        f"Seconds per window on {device}: the multiplexer's forward pass, and exact fast / naive ISM of every SNV of "
        "the window with the base model, on the same windows; wp = mean weighted Pearson.",
    ]
    return "\n".join(lines) + "\n"


def pareto_plot(rows: list[RunRow], path: Path) -> None:
    """Accuracy (test weighted Pearson, else best validation) against seconds per window (log scale),
    with the ISM times of each store as vertical lines."""
    fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for r in rows:
        y = r.test_wp if r.test_wp is not None else r.best_valid_wp
        if y is None:
            continue
        ax.scatter(r.timing["multiplexer"], y, s=36)
        ax.annotate(
            Path(r.run).name, (r.timing["multiplexer"], y), fontsize=8, xytext=(4, 2), textcoords="offset points"
        )
    for name, style in (("fast_ism", "--"), ("naive_ism", ":")):
        for t in sorted({r.timing[name] for r in rows if r.timing.get(name)}):
            ax.axvline(t, linestyle=style, color="grey")
            ax.annotate(name.replace("_", " "), (t, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per window (log)")
    ax.set_ylabel("weighted Pearson (test if evaluated, else best valid)")
    fig.savefig(path, format="png")


@exact_float32()
def compare(
    runs: list[str],
    *,
    out: str | None = None,
    plot: str | None = None,
    reports: list[str] | None = None,
    mixed_stores: bool = False,
    device: str | None = None,
    sequences: int = 2,
    overwrite: bool = False,
) -> str:
    """Compare run folders; returns the Markdown table (also written to ``out``), and draws ``plot``.

    Parameters
    ----------
    runs : list of str
        Run folders of ``train``.
    out : str, optional
        Write the table there (``.md``).
    plot : str, optional
        Accuracy against seconds per window (``.png``).
    reports : list of str, optional
        ``RUN=REPORT.json`` pairs: the ``evaluate`` report of a run kept outside its folder.
    mixed_stores : bool
        Allow runs on stores of different content in one table.
    device : str, optional
        Where the times are measured.
    sequences : int
        Windows timed per run.

    Raises
    ------
    UserError
        Fewer than one run, a folder that is not a run, runs on different stores without
        ``mixed_stores``, or outputs that may not be written.
    """
    if not runs:
        raise UserError("give at least one run folder")
    for path, kind in ((out, COMPARE_TABLE), (plot, IMAGE)):
        if path is not None:
            check_output(Path(path), kind, overwrite=overwrite, inputs={"RUN": runs[0]})
    if plot is not None and not plot.endswith(".png"):
        raise UserError(f"--plot must end in .png, got {plot!r}")
    pairs = {}
    for item in reports or []:
        run, sep, report = item.partition("=")
        if not sep:
            raise UserError(f"--report {item!r} must be RUN=REPORT.json")
        pairs[str(Path(run))] = Path(report)
    dev = resolve_device(device)
    folders = [Path(r) for r in runs]
    metas = [load_checkpoint(_checkpoint(f))[1] for f in folders]
    hashes = {str(m["spec_hash"]) for m in metas}
    if len(hashes) > 1 and not mixed_stores:
        listed = ", ".join(f"{f.name}: {str(m['spec_hash'])[:12]}" for f, m in zip(folders, metas))
        raise UserError(f"the runs were trained on stores of different content ({listed}); pass --mixed-stores")
    timings: dict[str, dict[str, Any]] = {}
    rows = [_row(f, pairs, dev, sequences, timings) for f in folders]
    text = markdown(rows, str(dev))
    if out is not None:
        with atomic_path(out) as tmp:
            Path(tmp).write_text(text)
    if plot is not None:
        with atomic_path(plot) as tmp:
            pareto_plot(rows, Path(tmp))
    return text
