"""Metadata checked like data (issue 27, finding 1): one flipped byte in the attributes that give the
data its meaning (target names, alphabet, window length, the genome's path, a split's sample count) is
named by ``store verify`` and refused by every reader in one line, for training stores, catalogues and
score-vcf Zarr outputs. Stores written before digests open, and ``store upgrade`` adds one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, invoke, ok

from pipeline.core.commands import DistillOptions
from pipeline.core.genome import Genome
from pipeline.errors import MetadataError
from pipeline.store import open_store
from pipeline.store.meta_digest import META_DIGEST, meta_digest_problems, write_meta_digest


def flip(zarr_json: Path, key: str, old: str, new: str) -> None:
    """Change ``old`` to ``new`` (as many bytes) in the text of attribute ``key`` of a ``zarr.json``, in
    place: the rest of the file keeps every byte."""
    assert len(old.encode()) == len(new.encode()) and old != new
    text = zarr_json.read_text()
    start = text.index(f'\n    "{key}": ')  # an attribute: indented once inside "attributes"
    end = text.find('\n    "', start + 1)
    segment = text[start:end]
    assert old in segment, f"{old!r} is not in attribute {key!r}"
    zarr_json.write_text(text[:start] + segment.replace(old, new, 1) + text[end:])


def test_a_digest_names_each_attribute_that_changed():
    attrs = write_meta_digest({"target_names": ["a", "b"], "seq_len": 80, "spec": {"seed": 0}})
    assert meta_digest_problems(attrs) == []
    assert meta_digest_problems({k: v for k, v in attrs.items() if k != META_DIGEST}) == []  # none: not checked
    damaged = {**attrs, "target_names": ["b", "a"], "seq_len": 81}
    assert meta_digest_problems(damaged) == [
        "attribute 'target_names' does not match its digest",
        "attribute 'seq_len' does not match its digest",
    ]
    renamed = {("seq_lem" if k == "seq_len" else k): v for k, v in attrs.items()}
    assert meta_digest_problems(renamed) == [
        "attribute 'seq_len' is missing",
        "attribute 'seq_lem' is not covered by the digest",
    ]


# ------------------------------------------------------------------------------------------------
# training stores
# ------------------------------------------------------------------------------------------------

ROOT_FLIPS = [
    ("target_names", '"demo_03"', '"demo_02"'),  # evaluate reported demo_02 twice
    ("target_names", '"demo_00",\n      "demo_01"', '"demo_01",\n      "demo_00"'),  # swapped
    ("alphabet", '"AGCT"', '"ACGT"'),
    ("genome", 'genome.fa"', 'genome.fb"'),  # another genome's path
    ("seq_len", "80", "81"),
    ("n_targets", "4", "5"),
    ("target_kind", '"logfold"', '"logfole"'),
    ("spec", '"seed": 0', '"seed": 1'),
    ("spec_hash", '"', "'"),
]


@pytest.mark.parametrize(("key", "old", "new"), ROOT_FLIPS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(ROOT_FLIPS)])
def test_a_flipped_root_attribute_is_named_by_verify_and_refused_by_train_and_evaluate(
    store_copy, trained_run, tmp_path, key, old, new
):
    if key == "spec_hash":  # one byte of the hash itself
        text = (Path(store_copy) / "zarr.json").read_text()
        first = text[text.index('\n    "spec_hash": "') + len('\n    "spec_hash": "')]
        old, new = f'"spec_hash": "{first}', f'"spec_hash": "{"0" if first != "0" else "1"}'
    flip(Path(store_copy) / "zarr.json", key, old, new)
    line = assert_one_line_error(invoke("store", "verify", store_copy), f"attribute '{key}' does not match")
    assert "zarr.json" in line
    assert_one_line_error(
        invoke("train", store_copy, "--run-dir", tmp_path / "run", "--steps", "1", "--device", "cpu"), f"'{key}'"
    )
    out = tmp_path / "eval"
    evaluated = invoke("evaluate", "--checkpoint", trained_run / "best.pt", "--store", store_copy, "--out", out)
    assert_one_line_error(evaluated, f"'{key}'")
    assert not (tmp_path / "run").exists() and not out.exists()


@pytest.mark.parametrize(("split", "command"), [("test", "evaluate"), ("train", "train"), ("valid", "train")])
def test_a_flipped_sample_count_of_a_split_is_named_and_refused(store_copy, trained_run, tmp_path, split, command):
    n = json.loads((Path(store_copy) / split / "zarr.json").read_text())["attributes"]["n_samples"]
    fewer = str(n - 1) if len(str(n - 1)) == len(str(n)) else str(n + 1)  # one byte, the sample count wrong
    flip(Path(store_copy) / split / "zarr.json", "n_samples", str(n), fewer)
    assert_one_line_error(invoke("store", "verify", store_copy), f"{split}/zarr.json: attribute 'n_samples'")
    if command == "evaluate":  # scored n - 1 sequences before
        args = ["evaluate", "--checkpoint", trained_run / "best.pt", "--store", store_copy, "--split", split]
        result = invoke(*args, "--out", tmp_path / "eval")
    else:
        result = invoke("train", store_copy, "--run-dir", tmp_path / "run", "--steps", "1", "--device", "cpu")
    assert_one_line_error(result, "'n_samples' does not match its digest")


def test_a_sound_store_passes_and_its_digests_cover_every_attribute(tiny_store):
    store = open_store(tiny_store)
    assert store.meta.sealed
    attrs = dict(store.group.attrs)
    assert set(attrs[META_DIGEST]["keys"]) == set(attrs) - {META_DIGEST}
    assert "no metadata digest" not in ok("store", "verify", tiny_store).output


def test_growing_a_store_keeps_its_digests(tmp_path, store_copy, write_spec):
    from pipeline.core.spec import load_spec
    from pipeline.distill import distill

    grown = load_spec(write_spec(tmp_path, "grown.yaml", splits={"train": {"samples": 14}, "test": {"samples": 6}}))
    distill(grown, DistillOptions(store_path=store_copy, device="cpu"), progress=False)
    store = open_store(store_copy)
    assert store.split_meta("train").n_samples == 14
    assert meta_digest_problems(dict(store.group.attrs)) == []
    for split in store.splits:
        assert meta_digest_problems(dict(store.split_group(split).attrs)) == []
    assert ok("store", "verify", store_copy).output.startswith(f"store {store_copy} is complete")


def test_the_open_refuses_a_damaged_attribute_through_the_api(store_copy):
    flip(Path(store_copy) / "zarr.json", "target_names", '"demo_03"', '"demo_02"')
    with pytest.raises(MetadataError, match="'target_names' does not match its digest"):
        open_store(store_copy)
    assert open_store(store_copy, check=False).target_names[-1] == "demo_02"  # what verify reads


# ------------------------------------------------------------------------------------------------
# catalogues and score-vcf outputs
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, trained_run, genome_path) -> Path:
    from pipeline.apply.variants.catalogue import build_catalogue
    from pipeline.apply.variants.options import CatalogueOptions

    out = tmp_path_factory.mktemp("meta_cat") / "cat.zarr"
    options = CatalogueOptions(genome=str(genome_path), regions=("chr1:100-400",), stride=20, device="cpu")
    build_catalogue(str(trained_run / "best.pt"), str(out), options, progress=False)
    return out


@pytest.fixture(scope="module")
def vcf(tmp_path_factory, genome_path) -> Path:
    genome = Genome(genome_path)
    lines = []
    for pos in (150, 200, 250):
        ref = genome.fetch("chr1", pos - 1, pos).upper()
        lines.append(f"chr1\t{pos}\tv{pos}\t{ref}\t{'G' if ref != 'G' else 'T'}\t.\t.\t.\n")
    path = tmp_path_factory.mktemp("meta_vcf") / "a.vcf"
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(lines))
    return path


@pytest.mark.parametrize(("key", "old", "new"), [("target_names", '"demo_03"', '"demo_02"'), ("stride", "20", "21")])
def test_a_flipped_catalogue_attribute_is_named_and_refused_by_lookup_and_score_vcf(
    catalogue, trained_run, genome_path, vcf, tmp_path, key, old, new
):
    cat = tmp_path / "cat.zarr"
    shutil.copytree(catalogue, cat)
    assert ok("store", "verify", cat).output.startswith(f"catalogue {cat} is complete")
    flip(cat / "zarr.json", key, old, new)
    assert_one_line_error(invoke("store", "verify", cat), f"attribute '{key}' does not match its digest")
    looked = invoke("lookup", cat, "--variant", "chr1:150:A>G", "--out", tmp_path / "l.tsv")
    assert_one_line_error(looked, f"'{key}' does not match its digest")
    scored = invoke("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", tmp_path / "s.tsv",
                    "--genome", genome_path, "--catalogue", cat, "--device", "cpu")  # fmt: skip
    assert_one_line_error(scored, f"'{key}' does not match its digest")
    assert not (tmp_path / "l.tsv").exists() and not (tmp_path / "s.tsv").exists()


def test_a_catalogue_written_before_digests_opens_resumes_and_is_upgraded(
    catalogue, trained_run, genome_path, tmp_path
):
    from pipeline.apply.variants.catalogue import build_catalogue
    from pipeline.apply.variants.options import CatalogueOptions

    cat = tmp_path / "cat.zarr"
    shutil.copytree(catalogue, cat)
    meta = json.loads((cat / "zarr.json").read_text())
    del meta["attributes"][META_DIGEST]
    for key in ("sequence_digest", "digest_version"):  # a fingerprint of before full digests
        del meta["attributes"]["genome_fingerprint"][key]
    (cat / "zarr.json").write_text(json.dumps(meta, indent=2))
    options = CatalogueOptions(genome=str(genome_path), regions=("chr1:100-400",), stride=20, device="cpu")
    summary = build_catalogue(str(trained_run / "best.pt"), str(cat), options, progress=False)
    assert summary.n_computed == 0  # the same genome, by its sample: resumed, nothing to do
    verdict = ok("store", "verify", cat).output
    assert "no metadata digest" in verdict and "store upgrade" in verdict
    assert "added a metadata digest" in ok("store", "upgrade", cat).output
    flip(cat / "zarr.json", "stride", "20", "21")
    assert_one_line_error(invoke("store", "verify", cat), "'stride' does not match its digest")


def test_a_flipped_score_vcf_output_attribute_is_named_by_verify(trained_run, genome_path, vcf, tmp_path):
    out = tmp_path / "s.zarr"
    ok("score-vcf", "--checkpoint", trained_run / "best.pt", "--vcf", vcf, "--out", out, "--genome", genome_path,
       "--device", "cpu")  # fmt: skip
    assert "3 rows" in ok("store", "verify", out).output
    flip(out / "zarr.json", "target_names", '"demo_03"', '"demo_02"')
    assert_one_line_error(invoke("store", "verify", out), "attribute 'target_names' does not match its digest")
