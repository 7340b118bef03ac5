"""The ``multiplexer`` command line, end to end through click's ``CliRunner``.

Bad inputs of every command (one ``error: ...`` line, nothing touched) are the matrix in ``test_bad_inputs.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import yaml
import zarr
from click.testing import CliRunner
from helpers import assert_one_line_error, invoke, ok, rewrite_checkpoint

from pipeline.apply.outputs import read_effects
from pipeline.cli import cli


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, spec_dict) -> Path:
    """A folder with a CLI-made genome and a tiny spec (``spec.yaml``) whose store is ``store.zarr``."""
    work = tmp_path_factory.mktemp("cli")
    result = ok("genome", "synth", work / "genome.fa", "--divisor", "20000")
    assert "genome.fa" in result.stdout
    spec = spec_dict(genome="genome.fa", store="store.zarr")
    (work / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return work


def test_genome_synth(workdir, genome_path):
    assert (workdir / "genome.fa").read_bytes() == genome_path.read_bytes()
    assert (workdir / "genome.fa.fai").is_file()


def test_end_to_end(workdir):
    spec, store = workdir / "spec.yaml", workdir / "store.zarr"

    result = ok("distill", spec, "--device", "cpu")
    assert "distilled 21 samples" in result.stdout
    assert store.is_dir()
    assert "0 samples" in ok("distill", spec, "--device", "cpu").stdout  # resumes: nothing left to do

    info = ok("store", "info", store).stdout
    assert "MB/sample" in info and "valid" in info
    summary = json.loads(ok("store", "info", store, "--json").stdout)
    assert summary["n_targets"] == 4 and summary["seq_len"] == 80
    assert all(s["bytes_per_sample"] > 0 for s in summary["splits"].values())
    assert "complete and consistent" in ok("store", "verify", store).stdout

    run = workdir / "run"
    trained = ok("train", spec, "--run-dir", run, "--steps", "3", "--valid-every", "2", "--device", "cpu")
    assert {p.name for p in run.iterdir()} >= {"best.pt", "last.pt", "metrics.csv", "config.json"}
    final = float(trained.stdout.rsplit("valid weighted Pearson ", 1)[1].split(";")[0])
    # three steps teach nothing: the summary says so once (issue 28)
    assert trained.output.count("has not learned") == (1 if final < 0.1 else 0)
    ok("train", spec, "--run-dir", run, "--steps", "4", "--valid-every", "2", "--device", "cpu", "--resume")
    ok("train", store, "--run-dir", workdir / "run2", "--steps", "1", "--device", "cpu",
       "--arch-kwargs", '{"width1": 4, "width2": 4, "kernel_size": 3, "dilations": [1, 1, 1, 1, 1]}')  # fmt: skip

    result = ok("evaluate", "--checkpoint", run / "best.pt", "--store", store, "--out", workdir / "eval")
    assert "weighted Pearson" in result.stdout
    report = json.loads((workdir / "eval" / "report.json").read_text())
    assert report["split"] == "test" and "speedup_vs_naive_ism" in report
    assert (workdir / "eval" / "report.md").is_file() and (workdir / "eval" / "weighted_pearson_hist.png").is_file()
    assert_one_line_error(
        invoke("evaluate", "--checkpoint", run / "best.pt", "--store", store, "--out", workdir / "eval"), "--overwrite"
    )

    result = ok("predict", "--checkpoint", run / "best.pt", "--region", "chr7:3000", "--out", workdir / "pred.npz",
                "--tsv")  # fmt: skip
    assert "1 TSV file" in result.stdout and (workdir / "pred.0.chr7_3000.tsv.gz").is_file()
    pred = read_effects(workdir / "pred.npz")
    assert pred["effects"].shape == (1, 4, 4, 80) and pred["chrom"] == ["chr7"] and pred["center"].tolist() == [3000]

    regions = workdir / "regions.bed"
    regions.write_text("chr7\t1000\t1080\nchr8\t2000\t2080\n")
    ok("predict", "--checkpoint", run / "last.pt", "--regions", regions, "--out", workdir / "pred2")
    assert read_effects(workdir / "pred2")["center"].tolist() == [1040, 2040]

    ok("ism", "--spec", spec, "--region", "chr7:3000", "--out", workdir / "ism.zarr", "--device", "cpu")
    ism = read_effects(workdir / "ism.zarr")
    assert ism["effects"].shape == (1, 4, 4, 80) and ism["attrs"]["source"] == "ism"
    assert np.array_equal(ism["reference"], pred["reference"])
    ok("ism", "--base", "demo", "--base-kwargs", '{"n_targets": 3, "seq_len": 64}', "--region", "chr7:3000",
       "--genome", workdir / "genome.fa", "--target", "diff", "--out", workdir / "ism_demo.npz")  # fmt: skip
    assert read_effects(workdir / "ism_demo.npz")["effects"].shape == (1, 3, 4, 64)

    ok("plot", workdir / "pred.npz", "--out", workdir / "pred.png")
    ok("ism", "--checkpoint", run / "best.pt", "--region", "chr7:3000", "--out", workdir / "ism_ckpt.npz")
    assert np.array_equal(read_effects(workdir / "ism_ckpt.npz")["effects"], ism["effects"])  # same base model
    ok("plot", workdir / "pred.npz", "--compare", workdir / "ism.zarr", "--out", workdir / "compare.svg")
    assert b"<svg" in (workdir / "compare.svg").read_bytes()[:1000]
    ok("plot", workdir / "ism.zarr", "--out", workdir / "ism.pdf", "--target", "0", "--width", "40")
    assert (workdir / "pred.png").read_bytes().startswith(b"\x89PNG")
    assert (workdir / "ism.pdf").read_bytes().startswith(b"%PDF")

    # a damaged store fails verification with one error line
    zarr.open_group(str(store), mode="r+")["valid"]["complete"][0] = 0
    assert_one_line_error(invoke("store", "verify", store), "unit 0")


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out += _all_commands(command, (*prefix, name))
    return out


COMMANDS = _all_commands(cli)


def test_every_documented_command_exists():
    documented = {("genome", "synth"), ("distill",), ("store", "info"), ("store", "verify"), ("train",), ("ism",),
                  ("predict",), ("score-vcf",), ("plot",), ("evaluate",), ("demo",)}  # fmt: skip
    assert documented <= set(COMMANDS)


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "multiplexer")
def test_help(command):
    result = CliRunner().invoke(cli, [*command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    assert result.stderr == ""


@pytest.mark.processes
def test_console_script_help_is_light():
    """``multiplexer --help`` works as a program, and importing the CLI does not import torch."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from pipeline.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "distill" in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, pipeline.cli; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "False"


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "multiplexer" in result.stdout


def test_train_without_a_store_says_to_distill(tmp_path, write_spec):
    spec = write_spec(tmp_path, store="never_made.zarr")
    line = assert_one_line_error(invoke("train", spec, "--run-dir", tmp_path / "run", "--device", "cpu"))
    assert "distill" in line and "never_made.zarr" in line


def test_changed_spec_is_refused_by_the_cli(workdir, tmp_path):
    data = yaml.safe_load((workdir / "spec.yaml").read_text())
    data["seed"] = 7
    data["genome"] = str(workdir / "genome.fa")
    data["store"] = str(tmp_path / "s.zarr")
    spec = tmp_path / "seed7.yaml"
    spec.write_text(yaml.safe_dump(data))
    ok("distill", spec, "--device", "cpu", "--split", "test")
    data["seq_len"] = 81
    spec.write_text(yaml.safe_dump(data))
    assert_one_line_error(invoke("distill", spec, "--device", "cpu"), "seq_len", "--overwrite")
    ok("distill", spec, "--device", "cpu", "--split", "test", "--overwrite")


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """``multiplexer demo`` (a few training steps): the last line is the headline JSON; a rerun reuses."""
    workdir = tmp_path / "demo"
    result = ok("demo", "--workdir", workdir, "--steps", "3", "--device", "cpu")
    headline = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("weighted_pearson_mean", "speedup_vs_naive_ism", "speedup_vs_fast_ism", "report", "plot"):
        assert key in headline, key
    assert Path(headline["report"]).is_file() and Path(headline["plot"]).is_file()
    again = ok("demo", "--workdir", workdir, "--steps", "3", "--device", "cpu")
    assert "reusing" in again.stdout
    assert json.loads(again.stdout.strip().splitlines()[-1])["report"] == headline["report"]


def test_predict_diff_tsv_and_genome_override(trained_run, tmp_path):
    """``predict --diff --tsv --genome``: another genome than the checkpoint's, alt - ref from the base model."""
    import gzip

    import torch

    from pipeline.core.encoding import one_hot
    from pipeline.ism import logfold_to_diff, mask_effects
    from pipeline.models import base_from_checkpoint, load_checkpoint
    from pipeline.models.motifs import DEMO_MOTIFS

    rng = np.random.default_rng(5)
    seq = "".join(rng.choice(list("ACGT"), size=300))
    seq = seq[:100] + DEMO_MOTIFS[0][1] + DEMO_MOTIFS[3][1] + seq[113:]
    fasta = tmp_path / "other.fa"
    fasta.write_text(f">chrQ\n{seq}\n")
    out = tmp_path / "q.npz"
    result = ok("predict", "--checkpoint", trained_run / "best.pt", "--region", "chrQ:110", "--genome", fasta,
                "--out", out, "--diff", "--tsv")  # fmt: skip
    assert "alt - ref effects of 1 sequence to" in result.stdout  # one sequence, not "1 sequences" (issue 28)
    data = read_effects(out)
    assert data["attrs"]["kind"] == "diff"
    window = seq[110 - 40 : 110 + 40]  # 0-based [pos - L//2, pos - L//2 + L)
    assert np.array_equal(data["reference"][0], one_hot(window))
    model, meta = load_checkpoint(trained_run / "best.pt")
    X = torch.from_numpy(one_hot(window)[None]).float()
    with torch.no_grad():
        expected = logfold_to_diff(mask_effects(model(X), X), base_from_checkpoint(meta)(X)).numpy()
    np.testing.assert_allclose(data["effects"], expected, rtol=1e-5, atol=1e-7)
    with gzip.open(tmp_path / "q.0.chrQ_110.tsv.gz", "rt") as handle:
        lines = handle.read().splitlines()
    assert len(lines) == 1 + 3 * 80
    assert lines[1].startswith(f"chrQ:71 {window[0]}>")  # window index 0 is 1-based 110 - 40 + 1
    assert lines[-1].startswith(f"chrQ:150 {window[-1]}>")


def test_fasta_input_does_not_need_the_recorded_genome(trained_run, tmp_path):
    """A checkpoint whose genome moved still predicts (and runs ISM) on FASTA sequences."""
    ckpt = rewrite_checkpoint(trained_run / "best.pt", tmp_path / "moved_genome.pt", genome=str(tmp_path / "gone.fa"))
    fasta = tmp_path / "seqs80.fa"
    fasta.write_text(">s1\n" + "ACGT" * 20 + "\n")
    ok("predict", "--checkpoint", ckpt, "--fasta", fasta, "--out", tmp_path / "p.npz")
    ok("ism", "--checkpoint", ckpt, "--fasta", fasta, "--out", tmp_path / "i.npz", "--tsv")
    assert read_effects(tmp_path / "i.npz")["chrom"] == ["s1"] and (tmp_path / "i.0.s1.tsv.gz").is_file()
    ok("plot", tmp_path / "p.npz", "--compare", tmp_path / "i.npz", "--out", tmp_path / "c.png", "--dpi", "40")


def _all_commands(group: click.Group, path: str = "multiplexer"):
    for name, command in group.commands.items():
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from _all_commands(command, f"{path} {name}")


def test_every_command_offers_h_even_when_used_on_its_own():
    """A command first used without its parent context (a library caller's ``make_context``) keeps the
    help option click builds then; it still answers ``-h`` as on the command line."""
    for path, command in _all_commands(cli):
        ctx = command.make_context(path.split()[-1], [], resilient_parsing=True)
        help_option = command.get_help_option(ctx)
        assert help_option is not None and set(help_option.opts) == {"-h", "--help"}, path
