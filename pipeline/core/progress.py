"""Progress bars and rates as a person reads them: the work they wait for, counted in its own units.

Every long loop of the package shows its bar through :func:`progress_bar` (a :class:`Bar`): it
counts windows, positions or bases, never batches or write units, and names them (``3/8 windows``).
Work that takes longer than a few seconds per item advances the bar in fractions of an item
(:class:`Share`: the ISM engines report the variants they finished), so the first update comes
within seconds, not when the first item is complete. A rate below one item per second reads as
seconds per item (``42.0 s/window``), above it as items per second (``3.2 windows/s``); the summary
lines of the commands use the same words (:func:`rate_text`, :func:`plural`). Nothing here imports
torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:
    _Tqdm = tqdm[Any]  # generic in the type stubs only
else:
    _Tqdm = tqdm

__all__ = ["Bar", "Share", "count_text", "plural", "progress_bar", "rate_text"]

IRREGULAR = {"sequence": "sequences", "bp": "bp", "base": "bases", "entry": "entries"}
"""Plurals that are not the word and an ``s`` (or words that stay as they are)."""


def plural(count: float, word: str, words: str | None = None) -> str:
    """``count`` and ``word``, in the plural unless ``count`` is exactly 1: ``1 contig``, ``2 contigs``.

    Counts are written with thousands separators (``25,600 positions``); fractions with one decimal.
    ``words`` is the plural when it is not ``word + "s"`` (default from :data:`IRREGULAR`).
    """
    many = words or IRREGULAR.get(word, word + "s")
    return f"{count_text(count)} {word if count == 1 else many}"


def count_text(count: float) -> str:
    """A count as written: whole numbers with thousands separators, fractions with one decimal."""
    if float(count).is_integer():
        return f"{int(count):,}"
    return f"{count:,.1f}"


def rate_text(rate: float | None, unit: str, units: str | None = None) -> str:
    """A rate in ``unit`` per second, as a person reads it.

    At least one per second: ``"3.2 windows/s"`` (whole numbers from 100 on: ``"1,250 windows/s"``);
    below: seconds per item, ``"42.0 s/window"`` (never ``"0.02 windows/s"``); unknown or zero: ``"?"``.
    """
    many = units or IRREGULAR.get(unit, unit + "s")
    if rate is None or rate <= 0:
        return f"? {many}/s"
    if rate >= 100:
        return f"{rate:,.0f} {many}/s"
    if rate >= 1:
        return f"{rate:.1f} {many}/s"
    seconds = 1.0 / rate
    return f"{seconds:,.0f} s/{unit}" if seconds >= 100 else f"{seconds:.1f} s/{unit}"


def per_second(count: float, seconds: float, unit: str, units: str | None = None) -> str:
    """:func:`rate_text` of ``count`` items done in ``seconds``."""
    return rate_text(count / seconds if seconds > 0 else None, unit, units)


_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {count} [{elapsed}<{remaining}, {speed}{postfix}]"
_FORMAT_OPEN = "{desc}: {count} [{elapsed}, {speed}{postfix}]"


class Bar(_Tqdm):
    """A tqdm bar that names what it counts (``3/8 windows``, ``0.4/8 windows`` while the first is
    under way) and reads slow rates as seconds per item (:func:`rate_text`)."""

    def __init__(self, *, unit: str = "item", units: str | None = None, **kwargs: Any) -> None:
        self.units = units or IRREGULAR.get(unit, unit + "s")
        kwargs.setdefault("bar_format", _FORMAT if kwargs.get("total") else _FORMAT_OPEN)
        kwargs.setdefault("dynamic_ncols", True)
        super().__init__(unit=unit, **kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        """tqdm's fields and two of this bar's: ``count`` (``3/8 windows``) and ``speed`` (:func:`rate_text`)."""
        d = dict(super().format_dict)
        n, total = d.get("n") or 0, d.get("total")
        if total and n > total:  # fractional updates summed past the total by rounding: no negative time left
            d["n"] = n = total
        done = count_text(round(n, 1) if not float(n).is_integer() else n)
        d["count"] = f"{done}/{count_text(total)} {self.units}" if total else plural(n, str(self.unit), self.units)
        rate, elapsed = d.get("rate"), d.get("elapsed") or 0
        if rate is None and elapsed > 0:  # as tqdm: the mean rate until its smoothed one exists
            rate = (n - (d.get("initial") or 0)) / elapsed
        d["speed"] = rate_text(rate, str(self.unit), self.units)
        return d


def progress_bar(
    *,
    desc: str,
    unit: str,
    total: float | None = None,
    enabled: bool = True,
    units: str | None = None,
    **kwargs: Any,
) -> Bar:
    """The package's progress bar on stderr (off when ``enabled`` is false, e.g. ``multiplexer -q``).

    Parameters
    ----------
    desc : str
        What is being done (``"distill train"``).
    unit : str
        What is counted, in the singular: ``"window"``, ``"position"``, ``"sample"``.
    total : float, optional
        How many there are (unknown: the bar shows the count and the rate only).
    enabled : bool
        Show the bar.
    units : str, optional
        The plural of ``unit`` when it is not ``unit + "s"``.
    **kwargs
        Passed to tqdm (``leave``, ``position``, ...).
    """
    return Bar(total=total, desc=desc, unit=unit, units=units, disable=not enabled, **kwargs)


class Share:
    """Advances a bar by ``items`` in step with work reported in other units (variants of an ISM run).

    Call it with the amount of work just finished (the ISM engines' ``progress`` callback: a number of
    variants); the bar moves by the same share of ``items``. :meth:`finish` moves it to exactly
    ``items`` (however much work was reported), so fractions never accumulate rounding errors.

    Parameters
    ----------
    bar : tqdm
        The bar to advance.
    items : float
        What the whole work counts on the bar (e.g. the windows of a unit).
    work : int
        The whole work in the reported units (e.g. the unit's variants); 0 moves the bar only at the end.
    """

    def __init__(self, bar: _Tqdm, items: float, work: int) -> None:
        self.bar, self.items, self.work = bar, items, work
        self.done = 0
        self.shown = 0.0

    def __call__(self, done: int) -> None:
        """``done`` more units of work are finished."""
        self.done += done
        if self.work > 0:
            self._show(self.items * min(1.0, self.done / self.work))

    def finish(self) -> None:
        """All the work is done: the bar has moved by exactly ``items``."""
        self._show(self.items)

    def _show(self, value: float) -> None:
        step = value - self.shown
        if step > 0:
            self.bar.update(step)
            self.shown = value
