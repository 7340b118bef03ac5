"""Heatmaps of one target's ``[4, L]`` effect map, with the reference sequence written underneath.

Rows of ``width`` positions; a diverging colour map centred at 0 (blue: lower, red: higher than
the reference); the reference letter of each position, shaded by the mean effect of mutating it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.encoding import ALPHABET, decode
from pipeline.errors import UserError
from pipeline.outputs import read_effects

FORMATS = (".png", ".pdf", ".svg")


def pick_target(effects: np.ndarray, target_names: list[str], target: str | int | None) -> int:
    """Index of ``target`` (a name or an index); default the target with the largest ``|effect|``."""
    if target is None:
        return int(np.abs(effects).reshape(effects.shape[0], -1).max(axis=1).argmax())
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        index = int(target)
        if not 0 <= index < len(target_names):
            raise UserError(f"target index {index} is out of range 0..{len(target_names) - 1}")
        return index
    if target not in target_names:
        raise UserError(f"unknown target {target!r} (for example {', '.join(target_names[:3])})")
    return target_names.index(target)


def _letter_colour(cmap: Any, norm: Any, value: float, vmax: float) -> tuple[float, float, float]:
    """Dark grey for no effect, blending into the colour map's colour as ``|value|`` grows."""
    t = min(1.0, abs(float(value)) / vmax) ** 0.5
    r, g, b, _ = cmap(norm(value))
    grey = 0.3
    return (grey + t * (r - grey), grey + t * (g - grey), grey + t * (b - grey))


def plot_effects(
    pred: str,
    out: str,
    *,
    index: int = 0,
    target: str | int | None = None,
    width: int = 100,
    overwrite: bool = False,
) -> str:
    """Render one sequence's effect map for one target.

    Parameters
    ----------
    pred : str
        Effects file from ``predict`` or ``ism``.
    out : str
        ``.png``, ``.pdf`` or ``.svg``.
    index : int
        Which sequence of the file.
    target : str or int, optional
        Target name or index (default: the one with the strongest effect).
    width : int
        Positions per row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    out_path = Path(out)
    if out_path.suffix.lower() not in FORMATS:
        raise UserError(f"plot output must end in {', '.join(FORMATS)}, got {out_path.name!r}")
    if out_path.exists() and not overwrite:
        raise UserError(f"output {str(out_path)!r} exists; remove it or pass --overwrite")
    if width < 10:
        raise UserError(f"--width must be at least 10 positions, got {width}")
    data = read_effects(pred)
    n = data["effects"].shape[0]
    if not 0 <= index < n:
        raise UserError(f"--index {index} is out of range: {pred!r} holds {n} sequences")
    effects = data["effects"][index]  # [F, 4, L]
    f = pick_target(effects, data["target_names"], target)
    y = effects[f]  # [4, L]
    seq = decode(data["reference"][index])
    L = y.shape[1]
    rows = -(-L // width)
    vmax = float(np.abs(y).max()) or 1.0
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    cmap = plt.get_cmap("RdBu_r")
    mean_effect = y.sum(axis=0) / 3.0
    fig, axes = plt.subplots(rows, 1, figsize=(max(6.0, width * 0.12), 1.6 * rows + 0.8), squeeze=False)
    chrom, center = data["chrom"][index], int(data["center"][index])
    start = center - L // 2 + 1 if center > 0 else 1  # 1-based genomic position of column 0
    image = None
    for r in range(rows):
        ax = axes[r, 0]
        lo, hi = r * width, min(L, (r + 1) * width)
        image = ax.imshow(
            y[:, lo:hi],
            aspect="auto",
            cmap=cmap,
            norm=norm,
            interpolation="nearest",
            extent=(lo - 0.5, hi - 0.5, 3.5, -0.5),
        )
        ax.set_xlim(lo - 0.5, lo + width - 0.5)
        ax.set_yticks(range(4), list(ALPHABET), fontsize=7)
        ax.set_xticks([])
        for j in range(lo, hi):
            ax.text(
                j,
                4.3,
                seq[j],
                ha="center",
                va="center",
                fontsize=max(4, min(8, 700 // width)),
                family="monospace",
                color=_letter_colour(cmap, norm, mean_effect[j], vmax),
                clip_on=False,
                bbox={"boxstyle": "square,pad=0.05", "fc": "0.92", "ec": "none"} if seq[j] == "N" else None,
            )
        ax.set_ylim(4.8, -0.5)
        ax.set_ylabel(f"{start + lo}", rotation=0, ha="right", va="center", fontsize=7)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    where = f"{chrom}:{center}" if center > 0 else chrom
    fig.suptitle(
        f"{where}  |  target {data['target_names'][f]}  |  {data['attrs'].get('kind', '')} "
        f"({data['attrs'].get('source', '')})",
        fontsize=9,
    )
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01, label="effect")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return str(out_path)
