"""Heatmaps of one target's ``[4, L]`` effect map, with the reference sequence written underneath.

Rows of ``width`` positions; a diverging colour map centred at 0 (blue: lower, red: higher than
the reference); the reference letter of each position, shaded by the mean effect of mutating it.
With ``compare``, the maps of two effects files for the same sequence (a multiplexer prediction and
exact ISM) are stacked with one shared colour scale. A catalogue is drawn over a ``region`` of it
(:func:`catalogue_panel`: each position's values come from the tile where it is most central, as
``lookup`` answers them, read through the store's checked reader). The figure's size is fixed by
:func:`figure_size` and ``dpi`` (no tight bounding box), so a PNG is exactly
``round(width_in * dpi) x round(height_in * dpi)`` pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Colormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure

from pipeline.apply.outputs import IMAGE, check_output, read_effects
from pipeline.core.commands import PlotOptions
from pipeline.core.encoding import ALPHABET, decode
from pipeline.core.files import atomic_path
from pipeline.core.genome import other_spelling
from pipeline.core.intervals import parse_interval
from pipeline.core.windows import first_position
from pipeline.errors import UserError, WriteError
from pipeline.store.catalogue import N_CODE, Catalogue, CheckedReader, is_catalogue, open_catalogue

FORMATS = (".png", ".pdf", ".svg")
MAX_REGION = 10_000
"""The most positions of a catalogue ``plot --region`` draws (100 rows at the default width)."""


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


def _letter_colour(cmap: Colormap, norm: Normalize, value: float, vmax: float) -> tuple[float, float, float]:
    """Dark grey for no effect, blending into the colour map's colour as ``|value|`` grows."""
    t = min(1.0, abs(float(value)) / vmax) ** 0.5
    r, g, b, _ = cmap(norm(value))
    grey = 0.3
    return (grey + t * (r - grey), grey + t * (g - grey), grey + t * (b - grey))


SOURCE_TITLES = {"multiplexer": "multiplexer", "ism": "exact ISM"}


def figure_size(seq_len: int, width: int, n_panels: int = 1) -> tuple[float, float]:
    """Figure size in inches: ``max(6, 0.12 * width)`` wide, 1.6 in per row of each panel plus titles."""
    rows = -(-seq_len // width)
    return max(6.0, width * 0.12), n_panels * (1.6 * rows + 0.5) + 0.4


def _find_same_sequence(data: dict[str, Any], chrom: str, center: int, reference: np.ndarray, path: str) -> int:
    """Index of the sequence of ``data`` with this name/center and this reference (else an error)."""
    candidates = [k for k, (c, p) in enumerate(zip(data["chrom"], data["center"])) if c == chrom and int(p) == center]
    where = f"{chrom}:{center}" if center > 0 else chrom
    if not candidates:
        raise UserError(f"--compare file {path!r} holds no sequence {where}")
    for k in candidates:
        if np.array_equal(data["reference"][k], reference):
            return k
    raise UserError(f"--compare file {path!r} has {where}, but with another reference sequence")


def _read_pair(pred: str, compare: str | None, index: int) -> list[tuple[str, dict[str, Any], int]]:
    """``(title, data, index)`` per panel: PRED's sequence ``index`` and the same sequence of ``compare``."""
    data = read_effects(pred)
    n = data["effects"].shape[0]
    if not 0 <= index < n:
        raise UserError(f"--index {index} is out of range: {pred!r} holds {n} sequences")
    panels = [(SOURCE_TITLES.get(data["attrs"].get("source", ""), Path(pred).name), data, index)]
    if compare is None:
        return panels
    other = read_effects(compare)
    if other["effects"].shape[1:] != data["effects"].shape[1:]:
        raise UserError(
            f"{pred!r} has effects [F, 4, L] = {list(data['effects'].shape[1:])} but --compare file {compare!r} "
            f"has {list(other['effects'].shape[1:])}"
        )
    if other["target_names"] != data["target_names"]:
        raise UserError(f"{pred!r} and --compare file {compare!r} have different target names")
    kinds = data["attrs"].get("kind"), other["attrs"].get("kind")
    if kinds[0] != kinds[1]:
        raise UserError(f"{pred!r} holds {kinds[0]} effects but --compare file {compare!r} holds {kinds[1]}")
    k = _find_same_sequence(other, data["chrom"][index], int(data["center"][index]), data["reference"][index], compare)
    panels.append((SOURCE_TITLES.get(other["attrs"].get("source", ""), Path(compare).name), other, k))
    return panels


def _panels(pred: str, o: PlotOptions) -> list[tuple[str, dict[str, Any], int]]:
    """The panels to draw: a catalogue's region, or an effects file's sequence (and ``--compare``'s)."""
    if is_catalogue(pred):
        if o.region is None:
            raise UserError(f"{pred!r} is a catalogue: give the positions to draw with --region chr:start-end")
        if o.compare is not None or o.index != 0:
            raise UserError("--compare and --index are for effects files, not a catalogue (give --region)")
        return [("catalogue", catalogue_panel(open_catalogue(pred), o.region), 0)]
    if o.region is not None:
        raise UserError(f"--region is for a catalogue; {pred!r} is an effects file (choose its sequence with --index)")
    return _read_pair(pred, o.compare, o.index)


def catalogue_panel(cat: Catalogue, region: str) -> dict[str, Any]:
    """The effects of every SNV of ``region`` (``chr:start-end``, 1-based, inclusive) in a catalogue, laid
    out as an effects file of one sequence (``effects [1, T, 4, n]``, ``reference [1, 4, n]``, 0 at the
    reference base and at positions without a base or outside the catalogued regions), with the
    region's 1-based ``start``.

    Every unit the region touches must be complete; the values are read through the store's
    :class:`~pipeline.store.catalogue.CheckedReader`, so a damaged chunk is an error naming its unit,
    never a picture of wrong values.
    """
    interval = parse_interval(region, "--region")
    chrom, lo, hi = interval.chrom, interval.start, interval.end  # 0-based, half-open
    if interval.length > MAX_REGION:
        raise UserError(f"--region {region!r} spans {interval.length:,} positions; plot draws at most {MAX_REGION:,}")
    meta = cat.meta
    names = [c.name for c in meta.contigs]
    k = meta.contig_index(chrom)
    if k is None:
        other = other_spelling(chrom, names)
        k = None if other is None else meta.contig_index(other)
    if k is None:
        raise UserError(f"contig {chrom!r} is not in catalogue {cat.path!r} (it has {', '.join(names[:5])})")
    contig = meta.contigs[k]
    if hi > contig.length:
        raise UserError(f"--region {region!r} ends outside {contig.name} (1..{contig.length:,})")
    reader = CheckedReader(cat)  # every value it returns is checked against the unit's marker
    U = meta.unit_positions
    for u in range(lo // U, (hi - 1) // U + 1):
        if not reader.complete(k, u):
            raise UserError(f"{contig.name} unit {u} of catalogue {cat.path!r} is not computed yet (rerun catalogue)")
    codes = np.array([int(reader.value(k, p, "ref")) for p in range(lo, hi)], dtype=np.int64)
    values = np.stack([reader.value(k, p, "effects") for p in range(lo, hi)])  # [n, 3, T]
    effects, reference = _laid_out(codes, values)
    return {
        "effects": effects[None],
        "reference": reference[None],
        "chrom": [contig.name],
        "center": np.zeros(1, dtype=np.int64),
        "start": lo + 1,
        "target_names": list(meta.target_names),
        "attrs": {"kind": meta.semantics.get("fields", {}).get("quantity", ""), "source": "catalogue"},
    }


def _laid_out(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A catalogue's ``ref`` codes ``[n]`` and effects ``[n, 3, T]`` as ``effects [T, 4, n]`` and
    ``reference [4, n]``: the three other bases' values under their base, 0 at the reference base and
    at positions without one (``N``, or outside the catalogued regions)."""
    n, T = len(codes), values.shape[-1]
    effects = np.zeros((T, 4, n), dtype=np.float32)
    reference = np.zeros((4, n), dtype=np.uint8)
    finite = np.nan_to_num(values.astype(np.float32))
    for j, code in enumerate(codes):
        if code >= N_CODE:
            continue
        reference[code, j] = 1
        others = [x for x in range(4) if x != code]  # the catalogue's order: the other bases by alphabet
        effects[:, others, j] = finite[j].T
    return effects, reference


def plot_effects(pred: str, out: str, options: PlotOptions | None = None) -> str:
    """Render one sequence's effect map for one target, or a region of a catalogue.

    Parameters
    ----------
    pred : str
        Effects file from ``predict`` or ``ism``, or a catalogue (with ``options.region``).
    out : str
        ``.png``, ``.pdf`` or ``.svg``.
    options : PlotOptions, optional
        Which sequence (``index``) or catalogue ``region``, which target (a name or an index; default:
        the one with the strongest effect), positions per row (``width``), ``dpi`` (the size in inches
        is :func:`figure_size`), a second effects file holding the same sequence (``compare``: same
        name, center and reference; its map is drawn under the first with the same colour scale), and
        ``overwrite`` (replace an existing image at ``out``, never a file of another kind nor an input;
        the new one is written under a temporary name and renamed over it when complete).

    Returns
    -------
    path : str
    """
    o = options or PlotOptions()
    target, width, dpi, compare = o.target, o.width, o.dpi, o.compare
    out_path = Path(out)
    if out_path.suffix.lower() not in FORMATS:
        raise UserError(f"plot output must end in {', '.join(FORMATS)}, got {out_path.name!r}")
    check_output(out_path, IMAGE, overwrite=o.overwrite, inputs={"PRED": pred, "--compare": compare})
    if width < 10:
        raise UserError(f"--width must be at least 10 positions, got {width}")
    if not 10 <= dpi <= 1200:
        raise UserError(f"--dpi must lie in 10..1200, got {dpi}")
    panels = _panels(pred, o)
    first, i0 = panels[0][1], panels[0][2]
    f = pick_target(first["effects"][i0], first["target_names"], target)
    maps = [data["effects"][k][f] for _, data, k in panels]  # each [4, L]
    seq = decode(first["reference"][i0])
    L = maps[0].shape[1]
    rows = -(-L // width)
    vmax = max(float(np.abs(y).max()) for y in maps) or 1.0
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    cmap = matplotlib.colormaps["RdBu_r"]
    chrom, center = first["chrom"][i0], int(first["center"][i0])
    start = int(first.get("start", first_position(center, L) if center > 0 else 1))  # 1-based, column 0

    fig = Figure(figsize=figure_size(L, width, len(panels)), dpi=dpi, layout="constrained")
    subfigs = fig.subfigures(len(panels), 1, squeeze=False)[:, 0] if len(panels) > 1 else [fig]
    for subfig, (title, _, _), y in zip(subfigs, panels, maps):
        axes = subfig.subplots(rows, 1, squeeze=False)[:, 0]
        mean_effect = y.sum(axis=0) / 3.0
        image = None
        for r, ax in enumerate(axes):
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
        subfig.colorbar(image, ax=list(axes), fraction=0.02, pad=0.01, label="effect")
        if len(panels) > 1:
            subfig.suptitle(title, fontsize=9)
    where = f"{chrom}:{center} ({chrom}:{start:,}-{start + L - 1:,})" if center > 0 else chrom
    if "start" in first:  # a catalogue region
        where = f"{chrom}:{start:,}-{start + L - 1:,}"
    sources = " vs ".join(title for title, _, _ in panels)
    fig.suptitle(
        f"{where}  |  target {first['target_names'][f]}  |  {first['attrs'].get('kind', '')} ({sources})",
        fontsize=9,
    )
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_path) as tmp:  # the old image stays until the new one is complete
            fig.savefig(tmp, dpi=dpi)
    except OSError as exc:
        raise WriteError(f"cannot write image {str(out_path)!r}: {exc.strerror or exc}") from None
    return str(out_path)
