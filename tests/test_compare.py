"""``compare``: one row per run, real parameter counts and times, a real PNG, mixed stores refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, invoke, ok, rewrite_checkpoint

from pipeline.apply.compare import COLUMNS, compare
from pipeline.errors import UserError
from pipeline.models import load_checkpoint


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, tiny_spec, tiny_store) -> Path:
    """Another short run on the same store, with a wider multiplexer."""
    from pipeline.train import train, train_config

    run = tmp_path_factory.mktemp("second") / "wide"
    kwargs = {"width1": 16, "width2": 16, "kernel_size": 4, "dilations": [2, 2, 2, 2, 2]}
    train(tiny_store, str(run), train_config(tiny_spec.train, kwargs=kwargs, steps=2, valid_every=2), device="cpu",
          progress=False)  # fmt: skip
    return run


def _rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_two_runs_one_table_and_a_png(trained_run, second_run, tmp_path):
    out, plot = tmp_path / "table.md", tmp_path / "pareto.png"
    text = compare([str(trained_run), str(second_run)], out=str(out), plot=str(plot), device="cpu")
    assert out.read_text() == text
    rows = _rows(text)
    assert len(rows) == 2 and all(len(r) == len(COLUMNS) for r in rows)
    for row, run in zip(rows, (trained_run, second_run)):
        model, meta = load_checkpoint(run / "best.pt", optimize=False)
        assert row[0] == str(run) and row[1] == meta["architecture"]["name"]
        assert row[2] == f"{sum(p.numel() for p in model.parameters()):,}"
        assert row[4] == meta["spec_hash"][:12]
        assert float(row[9]) > 0 and float(row[11]) > 0  # multiplexer and naive ISM seconds per window
        assert row[7] != "-"  # best validation weighted Pearson from metrics.csv
    assert rows[0][2] != rows[1][2]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(plot) as image:
        assert image.size[0] > 100 and image.size[1] > 100


def test_runs_on_other_stores_need_mixed_stores(trained_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    for name in ("best.pt", "last.pt"):
        rewrite_checkpoint(trained_run / name, other / name, spec_hash="0" * 64)
    with pytest.raises(UserError, match="--mixed-stores"):
        compare([str(trained_run), str(other)], device="cpu")
    assert len(_rows(compare([str(trained_run), str(other)], device="cpu", mixed_stores=True))) == 2


def test_compare_from_the_command_line(trained_run, tmp_path):
    result = ok("compare", trained_run, "--device", "cpu", "--sequences", "1")
    assert result.output.startswith("| run | architecture |")
    assert_one_line_error(invoke("compare", tmp_path, "--device", "cpu"), "not a run folder")
    assert_one_line_error(invoke("compare", trained_run, "--plot", tmp_path / "p.jpg"), ".png")
