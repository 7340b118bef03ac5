"""Identity is content, not names (issue 22, finding 4): the genome by a digest of every base (cached
by path, size, mtime and inode), a user model by its file and every local module it imports, a store
and its checkpoints by the contents behind the spec's paths. Stores written before keep working."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from helpers import assert_one_line_error, content_hash, invoke, make_legacy, ok

import pipeline.core.genome as genome_module
from pipeline.core.commands import DistillOptions
from pipeline.core.genome import Genome, fingerprint_difference
from pipeline.core.spec import load_spec
from pipeline.distill import distill
from pipeline.errors import StoreMismatchError, UserError
from pipeline.models.closure import local_imports
from pipeline.store import open_store, verify_store


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for name, seq in records.items():
            handle.write(f">{name}\n")
            handle.writelines(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
    return path


def random_records(lengths: tuple[int, ...] = (100_000, 30_000)) -> dict[str, str]:
    rng = np.random.default_rng(4)
    return {f"chr{i + 1}": "".join(rng.choice(list("ACGT"), size=n)) for i, n in enumerate(lengths)}


def unsampled_position(length: int) -> int:
    """A position of a contig of ``length`` that no slice of the quick fingerprint reads (16 slices of
    64 bases, evenly spaced)."""
    starts = [i * (length - 64) // 15 for i in range(16)]
    return starts[3] + (starts[4] - starts[3]) // 2


def other_base(base: str) -> str:
    return "C" if base.upper() != "C" else "G"


def edit_base(path: Path, chrom: str, position: int) -> None:
    """Change one base of a FASTA in place (same size), as a user editing it later would: the
    modification time moves on by a second."""
    genome = Genome(path)
    old = genome.fetch(chrom, position, position + 1)
    rec = genome._fasta.faidx.index[chrom]
    offset = rec.offset + (position // rec.lenc) * rec.lenb + position % rec.lenc
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(other_base(old).encode())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


# ------------------------------------------------------------------------------------------------
# the genome: a digest of every base, cached
# ------------------------------------------------------------------------------------------------


def test_a_base_outside_the_sampled_slices_changes_the_fingerprint(tmp_path):
    records = random_records()
    a = Genome(write_fasta(tmp_path / "a" / "g.fa", records))
    p = unsampled_position(len(records["chr1"]))
    changed = {**records, "chr1": records["chr1"][:p] + other_base(records["chr1"][p]) + records["chr1"][p + 1 :]}
    b = Genome(write_fasta(tmp_path / "b" / "g.fa", changed))
    assert fingerprint_difference(a.quick_fingerprint(), b.quick_fingerprint()) is None  # the sample misses it
    assert fingerprint_difference(a.fingerprint(), b.fingerprint()) == (
        "same contig names and lengths but different sequence (the full digests differ)"
    )
    assert b.difference(a.fingerprint()) is not None and a.difference(a.fingerprint()) is None


def test_the_digest_ignores_case_line_width_and_compression_only(tmp_path, monkeypatch):
    """Soft-masking (lower case) encodes like upper case, so it does not change the digest; neither do
    line widths or bgzip. Any other letter does (an R is not an N in the digest)."""
    from Bio import bgzf

    records = random_records((5_000, 700))
    plain = Genome(write_fasta(tmp_path / "a" / "g.fa", records)).fingerprint()
    masked = {k: v[:1000].lower() + v[1000:] for k, v in records.items()}
    assert Genome(write_fasta(tmp_path / "b" / "g.fa", masked, width=80)).fingerprint() == plain
    packed = tmp_path / "c" / "g.fa.gz"
    packed.parent.mkdir()
    with bgzf.BgzfWriter(str(packed), "wb") as out:
        out.write((tmp_path / "a" / "g.fa").read_bytes())
    assert Genome(packed).fingerprint() == plain
    iupac = {**records, "chr2": records["chr2"][:10] + "R" + records["chr2"][11:]}
    n = {**records, "chr2": records["chr2"][:10] + "N" + records["chr2"][11:]}
    r_fp, n_fp = (
        Genome(write_fasta(tmp_path / d / "g.fa", recs)).fingerprint() for d, recs in (("r", iupac), ("n", n))
    )
    assert r_fp["sequence_digest"] != n_fp["sequence_digest"]


def test_the_digest_is_computed_once_per_version_of_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTIPLEXER_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []
    real = genome_module.sequence_digest

    def counting(*args: Any, **kwargs: Any) -> str:
        calls.append("computed")
        return real(*args, **kwargs)

    monkeypatch.setattr(genome_module, "sequence_digest", counting)
    path = write_fasta(tmp_path / "g.fa", random_records())
    digest = Genome(path).sequence_digest()
    assert Genome(path).sequence_digest() == digest and calls == ["computed"]  # the second from the cache
    cached = list((tmp_path / "cache" / "digests").glob("g.fa.*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["sequence_digest"] == digest
    edit_base(path, "chr1", unsampled_position(100_000))  # same size, later mtime
    edited = Genome(path).sequence_digest()
    assert edited != digest and len(calls) == 2
    cached = list((tmp_path / "cache" / "digests").glob("g.fa.*.json"))
    assert len(cached) == 1  # the earlier version's entry is gone
    cached[0].write_text("{not json")  # a damaged cache entry is computed again, never trusted
    assert Genome(path).sequence_digest() == edited and len(calls) == 3


def test_an_unwritable_cache_computes_the_digest_and_says_so_once(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("MULTIPLEXER_CACHE", str(blocker))
    records = random_records((3_000,))
    path = write_fasta(tmp_path / "g.fa", records)
    notes: list[str] = []
    genome = Genome(path, notify=notes.append)
    digest = genome.sequence_digest()
    assert genome.sequence_digest() == digest
    assert len(notes) == 1 and "cannot keep the digest" in notes[0] and "MULTIPLEXER_CACHE" in notes[0]


def test_a_genome_changing_while_it_is_digested_is_refused(tmp_path, monkeypatch):
    path = write_fasta(tmp_path / "g.fa", random_records((3_000,)))
    genome = Genome(path)
    real = genome._compute_digest

    def while_reading() -> str:
        digest = real()
        os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
        return digest

    monkeypatch.setattr(genome, "_compute_digest", while_reading)
    with pytest.raises(UserError, match="changed while its digest was computed"):
        genome.sequence_digest()


def test_resuming_a_store_on_a_genome_edited_outside_the_sample_is_refused(tmp_path, spec_dict, genome_path):
    """Finding 22.4: an edit outside the sampled slices between a kill and the rerun mixed two genomes."""
    fasta = tmp_path / "genome.fa"
    shutil.copy(genome_path, fasta)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec_dict(genome="genome.fa")))
    spec = load_spec(spec_file)
    store = tmp_path / "s.zarr"
    distill(
        spec, DistillOptions(store_path=str(store), splits=["train"], device="cpu"), progress=False
    )  # "killed" here
    length = Genome(fasta).length("chr5")
    edit_base(fasta, "chr5", unsampled_position(length))
    with pytest.raises(StoreMismatchError, match="full digests differ"):
        distill(spec, DistillOptions(store_path=str(store), device="cpu"), progress=False)


# ------------------------------------------------------------------------------------------------
# a user model: its file and every local module it imports
# ------------------------------------------------------------------------------------------------

MODEL = """
import torch
from torch import nn

import {helper} as helper


class Net(nn.Module):
    def __init__(self, seq_len=80):
        super().__init__()
        self.conv = nn.Conv1d(4, helper.WIDTH, 5)
        self.fc = nn.Linear(helper.WIDTH * (seq_len - 4), 2)

    def forward(self, x):
        return helper.squash(self.fc(self.conv(x).relu().flatten(1)))
"""

HELPER = """
import numpy as np

from {deeper} import SCALE

WIDTH = 3


def squash(y):
    return (y * SCALE).sigmoid()
"""


def user_model(folder: Path, tag: str) -> tuple[Path, Path, Path]:
    """``model.py`` importing ``helper_<tag>``, which imports ``deeper_<tag>`` (unique names: modules
    stay in ``sys.modules``)."""
    helper, deeper = f"helper_{tag}", f"deeper_{tag}"
    files = (folder / "model.py", folder / f"{helper}.py", folder / f"{deeper}.py")
    files[0].write_text(MODEL.format(helper=helper))
    files[1].write_text(HELPER.format(deeper=deeper))
    files[2].write_text("SCALE = 1.0\n")
    return files


def test_a_model_identity_lists_its_local_imports_and_not_installed_ones(tmp_path, monkeypatch):
    import importlib

    pkg = tmp_path / "idpkg_closure"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text("import os\nimport torch\nfrom .layers import Block\nfrom . import util as u\n")
    (pkg / "layers.py").write_text("Block = 1\n\ndef lazy():\n    from idpkg_closure.sub import deep\n")
    (pkg / "util.py").write_text("import numpy\n")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("idpkg_closure.model")
    found = dict(local_imports(module))
    assert set(found) == {"idpkg_closure", "idpkg_closure.layers", "idpkg_closure.util", "idpkg_closure.sub",
                          "idpkg_closure.sub.deep"}  # fmt: skip
    assert found["idpkg_closure.sub.deep"] == (pkg / "sub" / "deep.py").resolve()
    assert "idpkg_closure.sub.deep" not in sys.modules  # found by reading the source, not by importing


def test_an_edited_helper_module_of_a_user_model_is_refused_on_resume(tmp_path, spec_dict, monkeypatch):
    """Finding 22.4: a helper module imported by the model file changed between a kill and the rerun,
    and half the samples came from the other model."""
    model, helper, deeper = user_model(tmp_path, "resume")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec_dict(base={"model": "model.py:Net", "kwargs": None})))
    spec = load_spec(tmp_path / "spec.yaml")
    store = tmp_path / "user.zarr"
    distill(
        spec, DistillOptions(store_path=str(store), splits=["train"], device="cpu"), progress=False
    )  # "killed" after train
    base = open_store(store).meta.base
    assert [name for name, _, _ in base["imports"]] == ["deeper_resume", "helper_resume"]
    deeper.write_text("SCALE = 2.0\n")  # two imports away from the model file
    with pytest.raises(StoreMismatchError, match=r"local module 'deeper_resume'.*the model's code changed"):
        distill(spec, DistillOptions(store_path=str(store), device="cpu"), progress=False)
    deeper.write_text("SCALE = 1.0\n")  # as it was: the same model again
    distill(spec, DistillOptions(store_path=str(store), device="cpu"), progress=False)
    assert verify_store(open_store(store)) == []


# ------------------------------------------------------------------------------------------------
# stores and checkpoints: the contents behind the spec's paths, not the paths' text
# ------------------------------------------------------------------------------------------------


def folder_with_genome(tmp_path: Path, name: str, genome_path: Path, spec_dict, edit: bool = False) -> Path:
    """``<name>/spec.yaml`` naming ``genome.fa`` (relative) and store ``s.zarr``, with a copy of the
    test genome (one base changed outside the sample with ``edit``); returns the spec file."""
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(genome_path, folder / "genome.fa")
    if edit:
        edit_base(folder / "genome.fa", "chr1", unsampled_position(Genome(folder / "genome.fa").length("chr1")))
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(genome="genome.fa", store="s.zarr")))
    return spec


def test_two_folders_with_different_genomes_give_different_stores_to_train_resume_and_compare(
    tmp_path, spec_dict, genome_path
):
    """Finding 22.4: the spec hash used the genome path as written, so two folders with different
    ``genome.fa`` gave one hash, ``train --resume`` continued on the other genome's store and ``compare``
    called them the same content. A copy of one genome elsewhere is the same content."""
    specs = {name: folder_with_genome(tmp_path, name, genome_path, spec_dict, edit=name == "b") for name in "abc"}
    for spec in specs.values():
        ok("distill", spec, "--device", "cpu")
    stores = {name: spec.parent / "s.zarr" for name, spec in specs.items()}
    hashes = {name: open_store(path).spec_hash for name, path in stores.items()}
    assert hashes["a"] != hashes["b"]  # one base apart
    assert hashes["a"] == hashes["c"]  # the same genome in another folder
    for name, path in stores.items():
        assert hashes[name] == content_hash(load_spec(specs[name]), open_store(path))
    run_a, run_b = tmp_path / "run_a", tmp_path / "run_b"
    for store, run in ((stores["a"], run_a), (stores["b"], run_b)):
        ok("train", store, "--run-dir", run, "--steps", "2", "--valid-every", "2", "--device", "cpu")
    resumed = invoke("train", stores["b"], "--run-dir", run_a, "--steps", "4", "--device", "cpu", "--resume")
    assert_one_line_error(resumed, "another store")
    assert_one_line_error(invoke("compare", run_a, run_b, "--device", "cpu", "--sequences", "1"), "different content")


def test_a_genome_moved_elsewhere_resumes_its_store(tmp_path, spec_dict, genome_path):
    """Content, not names: the spec's genome path may change when its content does not."""
    spec_a = folder_with_genome(tmp_path, "a", genome_path, spec_dict)
    spec = load_spec(spec_a)
    distill(spec, DistillOptions(store_path=str(tmp_path / "s.zarr"), splits=["train"], device="cpu"), progress=False)
    moved = tmp_path / "elsewhere" / "renamed.fa"
    moved.parent.mkdir()
    shutil.move(spec_a.parent / "genome.fa", moved)
    again = spec.replace_paths(genome=str(moved))
    summary = distill(again, DistillOptions(store_path=str(tmp_path / "s.zarr"), device="cpu"), progress=False)
    assert summary.skipped_units > 0 and verify_store(open_store(tmp_path / "s.zarr")) == []


# ------------------------------------------------------------------------------------------------
# stores written before: hash version 1, no digests
# ------------------------------------------------------------------------------------------------


def test_a_store_written_before_opens_trains_resumes_grows_and_upgrades(tmp_path, tiny_spec, store_copy, write_spec):
    make_legacy(store_copy, tiny_spec)
    old_hash = tiny_spec.store_hash()
    store = open_store(store_copy)
    assert store.meta.hash_version == 1 and not store.meta.sealed and store.spec_hash == old_hash
    verdict = ok("store", "verify", store_copy).output
    assert "no metadata digest" in verdict and f"store upgrade {store_copy}" in verdict
    run = tmp_path / "run"
    ok("train", store_copy, "--run-dir", run, "--steps", "2", "--valid-every", "2", "--device", "cpu")
    grown = load_spec(write_spec(tmp_path, "grown.yaml", splits={"test": {"samples": 7}}))
    distill(grown, DistillOptions(store_path=store_copy, device="cpu"), progress=False)  # grows the old store
    store = open_store(store_copy)
    assert store.split_meta("test").n_samples == 7 and store.spec_hash == old_hash and not store.meta.sealed
    assert "added a metadata digest" in ok("store", "upgrade", store_copy).output
    store = open_store(store_copy)
    assert store.meta.sealed and store.spec_hash == old_hash  # the hash keeps its version: runs still resume
    ok("train", store_copy, "--run-dir", run, "--steps", "4", "--valid-every", "2", "--device", "cpu", "--resume")
    assert "no metadata digest" not in ok("store", "verify", store_copy).output
    assert "already" in ok("store", "upgrade", store_copy).output
    assert json.loads((Path(store_copy) / "test" / "zarr.json").read_text())["attributes"]["meta_digest"]
    assert zarr.open_group(store_copy, mode="r").attrs.get("spec_hash_version") is None
