"""Outputs at URLs against a real S3 API on loopback (moto's server, s3fs): every path that names an
output writes through fsspec or is refused with one line, and nothing creates a local folder ``s3:``.

The server runs in a thread of this process on a free port of 127.0.0.1; the AWS variables (dummy
credentials, the endpoint) are set for this module only, so the console scripts and DataLoader workers the
tests start reach the same server.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import s3fs
import torch
from helpers import assert_one_line_error, invoke, ok, start_cli
from moto.server import ThreadedMotoServer

from pipeline.apply.outputs import read_effects
from pipeline.apply.variants.score_vcf import read_scores
from pipeline.core.genome import Genome
from pipeline.core.urls import is_url, join, looks_like_url, refuse_url, url_outputs
from pipeline.errors import OutputExistsError, UrlNotAcceptedError, UserError
from pipeline.train.state import RunDir


class S3:
    """The test bucket: ``url(key)`` is ``s3://<bucket>/<key>``; ``fs`` an s3fs file system on the server."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint, self.bucket = endpoint, bucket
        self.fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str, local: Path) -> Path:
        self.fs.invalidate_cache()
        self.fs.get(f"{self.bucket}/{key}", str(local), recursive=True)
        return local

    def exists(self, key: str) -> bool:
        self.fs.invalidate_cache()
        return bool(self.fs.exists(f"{self.bucket}/{key}"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto's S3 server on a free loopback port, a bucket, and the environment that points s3fs at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # botocore's own setting (the console scripts' s3fs reads it too)
        "FSSPEC_S3_ENDPOINT_URL": endpoint,  # fsspec's configuration of s3:// for processes started later
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})  # this process read its config at import
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = S3(endpoint, f"mpx-{uuid.uuid4().hex[:10]}")
        bucket.fs.mkdir(bucket.bucket)
        try:
            yield bucket
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so a command that made a local ``s3:`` folder would be seen."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _no_local_url_folder(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(":")], "a URL became a local folder"


@pytest.fixture(scope="module")
def s3_store(s3: S3, tiny_store: str) -> str:
    """The tiny store, copied into the bucket."""
    s3.fs.put(tiny_store, f"{s3.bucket}/stores/tiny.zarr", recursive=True)
    return s3.url("stores/tiny.zarr")


# ------------------------------------------------------------------------------------------------
# the rule
# ------------------------------------------------------------------------------------------------


def test_a_url_and_a_url_mangled_by_pathlib_are_both_seen() -> None:
    assert is_url("s3://b/run") and is_url("memory://x") and not is_url("runs/s3") and not is_url("C:/x")
    assert looks_like_url(Path("s3://b/run")) and not looks_like_url("C:/x") and not looks_like_url("a/b:/c")
    assert not looks_like_url("notes:/x")  # not a protocol fsspec knows
    with pytest.raises(UrlNotAcceptedError, match=r"--out 's3://b/c.zarr' does not accept a URL \(why\)"):
        refuse_url("s3://b/c.zarr", "--out", "why")
    refuse_url("runs/x", "--out", "why")  # a local path passes
    assert join("s3://b/run/", "best.pt") == "s3://b/run/best.pt" and join("runs/x", "best.pt") == "runs/x/best.pt"


def test_a_run_folder_given_as_a_path_object_of_a_url_is_refused_not_created(in_tmp: Path) -> None:
    with pytest.raises(UrlNotAcceptedError, match="--run-dir"):
        RunDir(Path("s3://bucket/run"))
    _no_local_url_folder(in_tmp)


def test_a_staged_local_writer_refuses_a_url(in_tmp: Path) -> None:
    from pipeline.core.files import atomic_path

    with pytest.raises(UrlNotAcceptedError), atomic_path(Path("s3://bucket/x.tsv")):
        pass
    _no_local_url_folder(in_tmp)


def test_url_outputs_upload_on_success_only_and_refuse_an_existing_object(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    url = f"memory://{uuid.uuid4().hex}/out.txt"
    with pytest.raises(RuntimeError), url_outputs({"--out": url}) as urls:
        Path(urls["--out"]).write_text("half")
        raise RuntimeError("killed")
    assert not fs.exists(url)
    with url_outputs({"--out": url}) as urls:
        Path(urls["--out"]).write_text("whole")
        Path(urls["--out"] + ".tbi").write_text("index")  # written beside it: uploaded beside it
    assert fs.cat_file(url) == b"whole" and fs.cat_file(url + ".tbi") == b"index"
    with url_outputs({"--out": url}) as urls:  # the existing object is fetched for the command's checks
        assert Path(urls["--out"]).read_text() == "whole"
    with pytest.raises(UserError, match="overlaps this command's --store"):
        url_outputs({"--out": "memory://a/store.zarr/x"}, inputs={"--store": "memory://a/store.zarr"}).__enter__()


# ------------------------------------------------------------------------------------------------
# stores on S3: distill two shards, verify, info
# ------------------------------------------------------------------------------------------------


def test_distill_two_shards_into_s3_verify_and_info(s3: S3, write_spec: Any, in_tmp: Path) -> None:
    spec = write_spec(in_tmp)
    url = s3.url("distill/two.zarr")
    ok("distill", spec, "--store", url, "--create-only", "--device", "cpu")
    for shard in ("0/2", "1/2"):
        ok("distill", spec, "--store", url, "--shard", shard, "--device", "cpu")
    assert "complete and consistent" in ok("store", "verify", url).output
    info = json.loads(ok("store", "info", url, "--json").output)
    assert all(split["complete_units"] == split["n_units"] for split in info["splits"].values())
    _no_local_url_folder(in_tmp)


@pytest.mark.processes
def test_distill_two_shards_at_once_into_s3(s3: S3, write_spec: Any, in_tmp: Path) -> None:
    spec = write_spec(in_tmp)
    url = s3.url("distill/at-once.zarr")
    ok("distill", spec, "--store", url, "--create-only", "--device", "cpu")
    shards = [start_cli("distill", spec, "--store", url, "--shard", f"{i}/2", "--device", "cpu") for i in range(2)]
    for shard in shards:
        _, err = shard.communicate(timeout=600)
        assert shard.returncode == 0, err
    assert "complete and consistent" in ok("store", "verify", url).output


# ------------------------------------------------------------------------------------------------
# training: from a store on S3, with loader workers, checkpoints on S3, resume
# ------------------------------------------------------------------------------------------------


def _model(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_train_from_s3_with_workers_into_an_s3_run_folder_and_resume_equals_a_local_run(
    s3: S3, s3_store: str, tiny_store: str, in_tmp: Path
) -> None:
    run = s3.url("runs/a")
    common = ("--device", "cpu", "--valid-every", "2")
    first = ok("train", s3_store, "--run-dir", run, "--steps", "2", "--num-workers", "2", *common)
    assert f"best {run}/best.pt, last {run}/last.pt" in first.output
    for name in ("best.pt", "last.pt", "config.json", "metrics.csv"):
        assert s3.exists(f"runs/a/{name}"), name
    again = invoke("train", s3_store, "--run-dir", run, "--steps", "2", *common)
    assert_one_line_error(again, f"run folder {run!r} already holds checkpoints")
    ok("train", s3_store, "--run-dir", run, "--steps", "4", "--resume", *common)
    ok("train", tiny_store, "--run-dir", in_tmp / "local", "--steps", "2", *common)  # the same, all local
    ok("train", tiny_store, "--run-dir", in_tmp / "local", "--steps", "4", "--resume", *common)
    resumed, straight = _model(s3.get("runs/a/last.pt", in_tmp / "a.pt")), _model(in_tmp / "local" / "last.pt")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)
    steps = [row.split(",")[0] for row in s3.get("runs/a/metrics.csv", in_tmp / "m.csv").read_text().splitlines()]
    assert steps == [row.split(",")[0] for row in (in_tmp / "local" / "metrics.csv").read_text().splitlines()]
    _no_local_url_folder(in_tmp)


def test_resume_of_an_s3_run_folder_without_checkpoints_is_one_line(s3: S3, s3_store: str, in_tmp: Path) -> None:
    run = s3.url("runs/empty")
    result = invoke("train", s3_store, "--run-dir", run, "--steps", "2", "--resume", "--device", "cpu")
    assert_one_line_error(result, f"--resume: '{run}/last.pt' does not exist")


# ------------------------------------------------------------------------------------------------
# evaluate, predict, score-vcf outputs on S3; catalogue and parts refused
# ------------------------------------------------------------------------------------------------


def test_evaluate_a_store_on_s3_into_an_s3_folder(s3: S3, s3_store: str, trained_run: Path, in_tmp: Path) -> None:
    out = s3.url("eval/a")
    args = ("evaluate", "--checkpoint", trained_run / "best.pt", "--store", s3_store, "--device", "cpu")
    line = ok(*args, "--out", out, "--split", "valid", "--timing-sequences", "1").output
    assert f"{out}/report.json" in line
    report = json.loads(s3.get("eval/a/report.json", in_tmp / "report.json").read_text())
    assert (
        report["split"] == "valid" and s3.exists("eval/a/report.md") and s3.exists("eval/a/weighted_pearson_hist.png")
    )
    assert_one_line_error(
        invoke(*args, "--out", out, "--split", "valid", "--timing-sequences", "1"), "exists", "--overwrite"
    )
    ok(*args, "--out", out, "--split", "valid", "--timing-sequences", "1", "--overwrite")
    assert_one_line_error(invoke(*args, "--out", s3_store, "--split", "valid"), "--store")
    _no_local_url_folder(in_tmp)


@pytest.fixture(scope="module")
def vcf(tmp_path_factory: pytest.TempPathFactory, genome_path: Path) -> Path:
    genome = Genome(genome_path)
    lines = []
    for pos in (150, 200, 250, 400):
        ref = genome.fetch("chr1", pos - 1, pos).upper()
        lines.append(f"chr1\t{pos}\tv{pos}\t{ref}\t{'G' if ref != 'G' else 'T'}\t.\t.\t.\n")
    path = tmp_path_factory.mktemp("url_vcf") / "a.vcf"
    path.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chr1>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(lines)
    )
    return path


@pytest.mark.parametrize("name", ["s.tsv.gz", "s.vcf.gz", "s.zarr"])
def test_score_vcf_outputs_on_s3_equal_local_ones(
    s3: S3, trained_run: Path, genome_path: Path, vcf: Path, in_tmp: Path, name: str
) -> None:
    args = (
        "score-vcf",
        "--checkpoint",
        trained_run / "best.pt",
        "--vcf",
        vcf,
        "--genome",
        genome_path,
        "--device",
        "cpu",
    )
    url = s3.url(f"scores/{name}")
    line = ok(*args, "--out", url).output
    assert url in line and str(in_tmp) not in line
    ok(*args, "--out", in_tmp / name)
    remote = s3.get(f"scores/{name}", in_tmp / "remote" / name)
    if name.endswith(".vcf.gz"):
        assert s3.exists(f"scores/{name}.tbi")
        import pysam

        with pysam.VariantFile(str(remote)) as a, pysam.VariantFile(str(in_tmp / name)) as b:
            assert [str(r) for r in a] == [str(r) for r in b]
    elif name.endswith(".zarr"):
        import zarr

        a, b = zarr.open_group(str(remote), mode="r"), zarr.open_group(str(in_tmp / name), mode="r")
        assert sorted(a.array_keys()) == sorted(b.array_keys())
        for key in a.array_keys():
            assert np.array_equal(np.asarray(a[key][:]), np.asarray(b[key][:]), equal_nan=a[key].dtype.kind == "f")
    else:
        assert read_scores(remote) == read_scores(in_tmp / name)
    assert_one_line_error(invoke(*args, "--out", url), "exists")
    ok(*args, "--out", url, "--overwrite")
    _no_local_url_folder(in_tmp)


def test_sharded_score_vcf_and_merge_refuse_a_url(s3: S3, trained_run: Path, genome_path: Path, vcf: Path) -> None:
    url = s3.url("scores/sharded.tsv")
    args = ("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--genome", genome_path)
    assert_one_line_error(invoke(*args, "--out", url, "--shard", "0/2"), f"--out {url!r} does not accept a URL")
    assert_one_line_error(invoke("score-vcf", "--merge", "--out", url), "does not accept a URL", "parts")


def test_catalogue_on_s3_is_refused_with_one_line(s3: S3, trained_run: Path, genome_path: Path, in_tmp: Path) -> None:
    url = s3.url("cat/c.zarr")
    result = invoke("catalogue", "--checkpoint", trained_run / "best.pt", "--out", url, "--genome", genome_path,
                    "--region", "chr1:100-400", "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, f"--out {url!r} does not accept a URL", "catalogue")
    assert not s3.exists("cat/c.zarr")
    _no_local_url_folder(in_tmp)


def test_predict_effects_and_tsv_files_and_plot_on_s3(
    s3: S3, trained_run: Path, genome_path: Path, in_tmp: Path
) -> None:
    args = ("predict", "--checkpoint", trained_run / "best.pt", "--genome", genome_path, "--region", "chr1:300",
            "--device", "cpu", "--tsv")  # fmt: skip
    url = s3.url("pred/p.npz")
    assert url in ok(*args, "--out", url).output
    ok(*args, "--out", in_tmp / "p.npz")
    remote = read_effects(s3.get("pred/p.npz", in_tmp / "remote.npz"))
    local = read_effects(in_tmp / "p.npz")
    assert np.array_equal(remote["effects"], local["effects"])
    tsv = [p.name for p in in_tmp.glob("p.*.tsv.gz")]
    assert tsv and all(s3.exists(f"pred/{name}") for name in tsv)
    png = s3.url("pred/p.png")
    assert png in ok("plot", in_tmp / "p.npz", "--out", png).output
    assert s3.get("pred/p.png", in_tmp / "p.png").read_bytes().startswith(b"\x89PNG")
    _no_local_url_folder(in_tmp)


def test_commands_whose_output_stays_local_refuse_a_url_with_one_line(in_tmp: Path) -> None:
    assert_one_line_error(invoke("demo", "--workdir", "s3://bucket/demo"), "--workdir", "does not accept a URL")
    assert_one_line_error(invoke("genome", "synth", "s3://bucket/g.fa"), "does not accept a URL")
    refused = invoke("background", "--checkpoint", in_tmp / "none.pt", "--out", "s3://bucket/b.zarr")
    assert_one_line_error(refused, "does not accept a URL")
    _no_local_url_folder(in_tmp)


def test_an_existing_url_output_is_never_replaced_without_overwrite(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    url = f"memory://{uuid.uuid4().hex}/r.tsv"
    fs.pipe_file(url, b"variant\tx\n")
    with pytest.raises(OutputExistsError):
        with url_outputs({"--out": url}) as urls:
            from pipeline.core.files import refuse_existing

            refuse_existing([urls["--out"]], overwrite=False)
    assert fs.cat_file(url) == b"variant\tx\n"
    assert not os.path.exists(str(tmp_path / "memory:"))
