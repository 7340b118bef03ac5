"""Progress bars count what a person waits for (windows, positions), move within a unit of work, and
read slow rates as seconds per item; summary lines use the same words (issue 28)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from pipeline.core.progress import Share, per_second, plural, progress_bar, rate_text
from pipeline.distill.sampling import WindowSampler
from pipeline.distill.units import Unit, run_units


def test_slow_rates_read_as_seconds_per_item():
    assert rate_text(1 / 50, "sample") == "50.0 s/sample"
    assert rate_text(1 / 420, "window") == "420 s/window"
    assert rate_text(3.21, "window") == "3.2 windows/s"
    assert rate_text(1234.0, "position") == "1,234 positions/s"
    assert rate_text(None, "window") == "? windows/s" == rate_text(0.0, "window")
    assert per_second(4, 210.0, "sample") == "52.5 s/sample"  # the 'distilled ...' line of a Beluga CPU run
    assert "0.0" not in per_second(1, 1000.0, "sample")


def test_plurals():
    assert plural(1, "contig") == "1 contig" and plural(2, "contig") == "2 contigs"
    assert plural(0, "unit") == "0 units" and plural(25600, "position") == "25,600 positions"
    assert plural(1, "sequence") == "1 sequence" and plural(1, "entry") == "1 entry"
    assert plural(2, "entry") == "2 entries"


def _shown(bar) -> str:
    bar.refresh()
    return bar.fp.getvalue().rsplit("\r", 1)[-1]


def test_a_bar_names_its_units_and_moves_in_fractions_of_an_item():
    out = io.StringIO()
    bar = progress_bar(desc="distill train", unit="window", total=4, file=out, mininterval=0)
    share = Share(bar, 2, 600)  # a unit of 2 windows, 600 variants
    share(150)
    assert bar.n == pytest.approx(0.5)
    assert "0.5/4 windows" in _shown(bar)
    share(10_000)  # more work than announced never moves the bar past the unit
    assert bar.n == pytest.approx(2)
    share.finish()
    bar.update(2)
    assert bar.n == 4 and "4/4 windows" in _shown(bar)
    bar.close()
    open_bar = progress_bar(desc="lookup", unit="variant", file=io.StringIO(), mininterval=0)
    open_bar.update(1)
    assert "1 variant " in _shown(open_bar)
    open_bar.close()


def test_distill_bar_counts_windows_and_moves_before_a_unit_is_done(tiny_spec, genome):
    """The Beluga distill bar sat at 0/4 for 7 minutes: it now counts windows, and the ISM engine's
    variant counts move it while the first unit is still being computed."""
    sampler = WindowSampler(genome, tiny_spec, "valid")
    seen: list[tuple[float, float]] = []

    def compute(X, progress):
        total = 3 * int((X.sum(axis=1) > 0).sum())
        progress(total // 2)
        seen.append((progress.bar.n, progress.bar.total))
        progress(total - total // 2)
        n, F, L = len(X), 2, X.shape[-1]
        return torch.zeros(n, F, 4, L), torch.zeros(n, F)

    written = []

    def write(prepared, y, ref):
        written.append(prepared.unit.size)
        return prepared.unit.size

    units = [Unit(0, 0, 3), Unit(1, 3, 6)]
    done = list(run_units(units, 6, sampler, compute, write, overlap=False, progress=True))
    assert done == written == [3, 3]
    first_n, total = seen[0]
    assert total == 6  # the bar's total is the windows, not the units
    assert 0 < first_n < 3 and first_n == pytest.approx(1.5, abs=0.1)  # half of the first unit's windows
    assert seen[1][0] == pytest.approx(4.5, abs=0.1)


def test_share_with_nothing_to_report_moves_at_the_end():
    bar = progress_bar(desc="x", unit="window", total=1, file=io.StringIO())
    share = Share(bar, 1, 0)  # an all-N window: no variants
    share(0)
    assert bar.n == 0
    share.finish()
    assert bar.n == 1
    bar.close()
    assert np.isclose(bar.n, 1)


def test_fractions_summed_past_the_total_never_show_negative_time_left():
    """Shares of several runs add up in floating point (130 windows in thirds can sum to 130.00000000000003):
    the bar shows the total and no negative time left."""
    bar = progress_bar(desc="evaluate timing", unit="window", total=3, file=io.StringIO(), mininterval=0)
    for _ in range(30):
        bar.update(0.1)
    assert bar.n > 3  # the rounding this test is about
    shown = _shown(bar)
    assert "3/3 windows" in shown and "<-" not in shown
    bar.close()
