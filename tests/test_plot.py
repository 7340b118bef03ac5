"""``plot``: the [4, L] heatmap of one target, alone or stacked over exact ISM (``--compare``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from pipeline.apply.exact_ism import ism_effects
from pipeline.apply.inputs import load_inputs
from pipeline.apply.outputs import read_effects
from pipeline.apply.plot import figure_size, pick_target, plot_effects
from pipeline.apply.predict import predict_effects
from pipeline.core.commands import IsmOptions, PlotOptions
from pipeline.core.encoding import ALPHABET
from pipeline.errors import UserError
from pipeline.models import base_from_checkpoint, read_checkpoint

L = 80


@pytest.fixture(scope="module")
def prediction(trained_run, genome_path, tmp_path_factory) -> Path:
    inputs = load_inputs(seq_len=L, genome=genome_path, regions_file=_regions(tmp_path_factory))
    out = tmp_path_factory.mktemp("pred") / "pred.zarr"
    return Path(predict_effects(str(trained_run / "best.pt"), inputs, str(out), progress=False))


def _regions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("regions") / "regions.txt"
    path.write_text("chr7 3000\nchr5 2500\n")
    return path


@pytest.fixture(scope="module")
def exact_ism(trained_run, genome_path, tmp_path_factory) -> Path:
    """Exact ISM of the second region only (chr5:2500) with the checkpoint's base model."""
    meta = read_checkpoint(trained_run / "best.pt")
    inputs = load_inputs(seq_len=L, genome=genome_path, region="chr5:2500")
    out = tmp_path_factory.mktemp("ism") / "ism.npz"
    return Path(
        ism_effects(
            base_from_checkpoint(meta),
            inputs,
            str(out),
            IsmOptions(target=meta["target_kind"]),
            target_names=meta["target_names"],
            progress=False,
        )
    )


def pixels(path: Path) -> tuple[int, int]:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3
    return image.shape[0], image.shape[1]


@pytest.mark.parametrize("width, dpi", [(40, 120), (100, 50), (25, 80)])
def test_png_has_the_requested_size(prediction, tmp_path, width, dpi):
    out = tmp_path / "plot.png"
    assert plot_effects(str(prediction), str(out), PlotOptions(width=width, dpi=dpi)) == str(out)
    w, h = figure_size(L, width, 1)
    assert pixels(out) == (round(h * dpi), round(w * dpi))
    rgb = matplotlib.image.imread(out)[..., :3]
    assert rgb.std() > 0.05  # not blank
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # a heatmap, letters and axes


def test_compare_stacks_two_maps(prediction, exact_ism, tmp_path):
    out = tmp_path / "compare.png"
    plot_effects(str(prediction), str(out), PlotOptions(index=1, compare=str(exact_ism), width=40, dpi=60))
    w, h = figure_size(L, 40, 2)
    assert pixels(out) == (round(h * 60), round(w * 60))
    assert h > figure_size(L, 40, 1)[1] * 1.8  # two panels


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_pdf_and_svg(prediction, exact_ism, tmp_path, suffix, magic):
    out = tmp_path / f"plot{suffix}"
    names = read_effects(prediction)["target_names"]
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text, so the title can be read
        plot_effects(str(prediction), str(out), PlotOptions(index=1, target=names[2], compare=str(exact_ism)))
    data = out.read_bytes()
    assert data.startswith(magic) and len(data) > 1000
    if suffix == ".svg":
        text = data.decode()
        assert "<svg" in text
        for fragment in ("chr5:2500", f"target {names[2]}", "multiplexer", "exact ISM"):
            assert fragment in text, fragment


def test_default_target_is_the_strongest():
    effects = np.zeros((3, 4, 10), dtype=np.float32)
    effects[1, 2, 5] = -3.0
    effects[2, 0, 0] = 2.0
    assert pick_target(effects, ["a", "b", "c"], None) == 1
    assert pick_target(effects, ["a", "b", "c"], "c") == 2
    assert pick_target(effects, ["a", "b", "c"], "0") == 0


def test_compare_refuses_another_sequence_or_kind(prediction, exact_ism, tmp_path, genome_path, trained_run):
    with pytest.raises(UserError, match="chr7:3000"):  # the ISM file only holds chr5:2500
        plot_effects(str(prediction), str(tmp_path / "a.png"), PlotOptions(index=0, compare=str(exact_ism)))
    meta = read_checkpoint(trained_run / "best.pt")
    inputs = load_inputs(seq_len=L, genome=genome_path, region="chr5:2500")
    diff = ism_effects(
        base_from_checkpoint(meta),
        inputs,
        str(tmp_path / "diff.npz"),
        IsmOptions(target="diff"),
        target_names=meta["target_names"],
        progress=False,
    )
    with pytest.raises(UserError, match="diff"):
        plot_effects(str(prediction), str(tmp_path / "a.png"), PlotOptions(index=1, compare=diff))
    other = read_effects(diff)
    np.savez_compressed(
        tmp_path / "renamed.npz",
        effects=other["effects"],
        reference=other["reference"],
        chrom=np.array(other["chrom"]),
        center=other["center"],
        target_names=np.array([f"x{i}" for i in range(len(other["target_names"]))]),
        attrs=np.array('{"kind": "logfold", "source": "ism"}'),
    )
    with pytest.raises(UserError, match="target names"):
        plot_effects(
            str(prediction), str(tmp_path / "a.png"), PlotOptions(index=1, compare=str(tmp_path / "renamed.npz"))
        )
    assert not (tmp_path / "a.png").exists()


def test_plot_errors(prediction, tmp_path):
    with pytest.raises(UserError, match="no_such_target"):
        plot_effects(str(prediction), str(tmp_path / "a.png"), PlotOptions(target="no_such_target"))
    with pytest.raises(UserError, match="out of range"):
        plot_effects(str(prediction), str(tmp_path / "a.png"), PlotOptions(target="99"))
    with pytest.raises(UserError, match="index"):
        plot_effects(str(prediction), str(tmp_path / "a.png"), PlotOptions(index=5))
    with pytest.raises(UserError, match=".jpg"):
        plot_effects(str(prediction), str(tmp_path / "a.jpg"))
    with pytest.raises(UserError, match="dpi"):
        plot_effects(str(prediction), str(tmp_path / "a.png"), PlotOptions(dpi=5))
    existing = tmp_path / "b.png"
    plot_effects(str(prediction), str(existing), PlotOptions(dpi=30))
    with pytest.raises(UserError, match="exists"):
        plot_effects(str(prediction), str(existing))
    plot_effects(str(prediction), str(existing), PlotOptions(overwrite=True, dpi=30))
    with pytest.raises(UserError, match="does not exist"):
        plot_effects(str(tmp_path / "missing.zarr"), str(tmp_path / "c.png"))


@pytest.fixture(scope="module")
def catalogue(trained_run, genome_path, tmp_path_factory) -> Path:
    from pipeline.apply.variants.catalogue import build_catalogue
    from pipeline.apply.variants.options import CatalogueOptions

    out = tmp_path_factory.mktemp("cat") / "cat.zarr"
    options = CatalogueOptions(regions=("chr7:2901-3100",), genome=str(genome_path), device="cpu")
    build_catalogue(str(trained_run / "best.pt"), str(out), options, progress=False)
    return out


def test_a_catalogue_region_is_drawn_with_the_values_lookup_answers(catalogue, tmp_path):
    """plot draws a catalogue region; the map it draws holds, for every SNV, what lookup answers, 0 at the
    reference base, and nothing outside the catalogued positions."""
    from pipeline.apply.plot import catalogue_panel
    from pipeline.apply.variants.lookup import lookup
    from pipeline.apply.variants.options import LookupOptions
    from pipeline.apply.variants.score_vcf import read_scores
    from pipeline.store.catalogue import open_catalogue

    panel = catalogue_panel(open_catalogue(catalogue), "chr7:2891-2960")  # 10 positions before the region
    y, X = panel["effects"][0], panel["reference"][0]  # [T, 4, 70], [4, 70]
    assert panel["start"] == 2891 and y.shape == (len(panel["target_names"]), 4, 70)
    assert not X[:, :10].any() and not y[:, :, :10].any()  # outside the catalogued region
    assert (X[:, 10:].sum(axis=0) == 1).all()
    assert not (y * X[None]).any()  # 0 at the reference base
    out = tmp_path / "l.tsv"
    lookup(str(catalogue), str(out), LookupOptions(region="chr7:2901-2960"), progress=False)
    rows = [r for r in read_scores(out) if r["effects"] and r["alt"] in ALPHABET]
    assert len(rows) == 3 * 60
    for row in rows:
        got = y[:, ALPHABET.index(row["alt"]), row["pos"] - 2891]
        np.testing.assert_allclose(got, list(row["effects"].values()), rtol=1e-3, atol=1e-6)

    png = tmp_path / "cat.png"
    assert plot_effects(str(catalogue), str(png), PlotOptions(region="chr7:2901-2960", width=20, dpi=30)) == str(png)
    assert pixels(png) == tuple(round(x * 30) for x in figure_size(60, 20)[::-1])
    with pytest.raises(UserError, match="--region"):
        plot_effects(str(catalogue), str(tmp_path / "a.png"))
    with pytest.raises(UserError, match="at most"):
        plot_effects(str(catalogue), str(tmp_path / "a.png"), PlotOptions(region="chr7:1-20000"))
    with pytest.raises(UserError, match="not in catalogue"):
        plot_effects(str(catalogue), str(tmp_path / "a.png"), PlotOptions(region="chrZ:1-20"))


def test_a_damaged_catalogue_unit_is_not_drawn(catalogue, tmp_path):
    import shutil

    import zarr

    from pipeline.store.catalogue import open_catalogue

    copy = tmp_path / "cat.zarr"
    shutil.copytree(catalogue, copy)
    k = open_catalogue(copy).meta.contig_index("chr7")
    effects = zarr.open_array(str(copy / f"c{k}" / "effects"), mode="r+")
    effects[2950] = effects[2950] + 1  # a value changed behind the marker's digest
    with pytest.raises(UserError, match="damaged"):
        plot_effects(str(copy), str(tmp_path / "a.png"), PlotOptions(region="chr7:2901-2960"))
