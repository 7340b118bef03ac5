"""A "real-like" genome, end to end: what a researcher's own assembly looks like, built in the test.

The FASTA has NCBI pipe headers with descriptions, soft-masked runs, an assembly gap of ``N``, 70-base
lines, a second contig, and a contig shorter than the window. The spec trains on ONE contig with
interval validation and test splits (a bacterium or phage has no second chromosome to hold out), and
the test follows it through ``distill --check`` -> ``distill`` -> ``train`` -> ``predict`` ->
``score-vcf``, checking every stored window's coordinates against the split boundaries.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_SPEC
from helpers import DEMO_KWARGS, SEQ_LEN, assert_one_line_error, invoke, make_read_only, ok

from pipeline.core.genome import Genome
from pipeline.core.intervals import Interval, parse_interval
from pipeline.models import read_checkpoint
from pipeline.store import open_store

PHAGE = "gi|9626243|ref|NC_001416.1|"
COLI = "NC_000913.3"
STUB = "chrM_stub"
L = SEQ_LEN
VALID, TEST = "8001-9500", "10001-11500"


def write_real_like_fasta(path: Path) -> dict[str, str]:
    """Write the FASTA; returns each contig's sequence (with its case) by name."""
    rng = np.random.default_rng(11)

    def random_bases(n: int) -> str:
        return "".join(rng.choice(list("ACGT"), size=n))

    phage = list(random_bases(12000))
    for start in (500, 4000, 8400, 10200):  # soft-masked repeats, some inside the held-out intervals
        phage[start : start + 150] = [b.lower() for b in phage[start : start + 150]]
    phage[6000:6300] = "N" * 300  # an assembly gap
    contigs = {
        PHAGE: "".join(phage),
        COLI: random_bases(5000),
        STUB: random_bases(L - 20),
    }
    descriptions = {PHAGE: " Enterobacteria phage lambda, complete genome", COLI: " Escherichia coli K-12", STUB: ""}
    with open(path, "w") as handle:
        for name, seq in contigs.items():
            handle.write(f">{name}{descriptions[name]}\n")
            handle.writelines(seq[i : i + 70] + "\n" for i in range(0, len(seq), 70))
    return contigs


@pytest.fixture(scope="module")
def real_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("real_like")
    contigs = write_real_like_fasta(root / "assembly.fa")
    spec = {
        **TINY_SPEC,
        "name": "phage",
        "genome": "assembly.fa",
        "store": "phage.zarr",
        "base": {"model": "demo", "kwargs": {k: v for k, v in DEMO_KWARGS.items() if k != "seq_len"}},
        "splits": {
            "train": {"chroms": [PHAGE], "samples": 24},
            "valid": {"regions": [f"{PHAGE}:{VALID}"], "samples": 8},
            "test": {"regions": [f"{PHAGE}:{TEST}"], "samples": 6},
        },
    }
    (root / "phage.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return {"root": root, "spec": root / "phage.yaml", "contigs": contigs}


def test_check_reports_the_splits_without_writing(real_like):
    root, spec = real_like["root"], real_like["spec"]
    out = ok("distill", spec, "--check").stdout
    lines = out.splitlines()
    assert lines[-1] == "every split can be sampled; nothing was written"
    rows = {line.split()[0]: line for line in lines[2:-1]}
    assert set(rows) == {"train", "valid", "test"}
    assert f"1 ({PHAGE})" in rows["train"] and "1,500" in rows["valid"]
    assert not (root / "phage.zarr").exists()


def test_one_contig_trains_end_to_end_and_windows_stay_inside_their_splits(real_like):
    root, spec = real_like["root"], real_like["spec"]
    contigs: dict[str, str] = real_like["contigs"]  # type: ignore[assignment]
    ok("distill", spec, "--device", "cpu")
    ok("store", "verify", root / "phage.zarr")

    # every stored window, against the split boundaries
    store = open_store(str(root / "phage.zarr"))
    held_out = {"valid": parse_interval(f"{PHAGE}:{VALID}"), "test": parse_interval(f"{PHAGE}:{TEST}")}
    for split in ("train", "valid", "test"):
        chroms, centers = store.array(split, "chrom")[:], store.array(split, "center")[:]
        assert len(centers) == store.split_meta(split).n_samples
        for chrom, center in zip(chroms, centers):
            window = Interval(chrom, int(center) - L // 2, int(center) - L // 2 + L)
            assert chrom == PHAGE and window.start >= 0 and window.end <= len(contigs[PHAGE])
            if split in held_out:
                assert held_out[split].start <= window.start and window.end <= held_out[split].end
            else:  # train keeps a window's length away from both held-out intervals
                assert not any(window.overlaps(iv.widened(L)) for iv in held_out.values()), window

    run = root / "run"
    ok("train", spec, "--run-dir", run, "--device", "cpu", "--steps", "4")
    checkpoint = run / "best.pt"

    # predict on the pipe-named contig, and on the other contig
    ok("predict", "--checkpoint", checkpoint, "--region", f"{PHAGE}:4000", "--out", root / "p.npz")
    with np.load(root / "p.npz") as data:
        reference = data["reference"]
    expected = contigs[PHAGE][4000 - L // 2 : 4000 - L // 2 + L].upper()
    assert "".join("AGCT"[i] for i in reference[0].argmax(0)) == expected
    result = ok("predict", "--checkpoint", checkpoint, "--region", f"{COLI}:2500", "--out", root / "q.npz")
    assert "warning" not in result.stderr

    # the checkpoint knows its genome: another assembly under the same names is said, once
    assert read_checkpoint(checkpoint)["genome_fingerprint"] == Genome(root / "assembly.fa").fingerprint()
    other = dict(contigs, **{COLI: contigs[COLI][:-100]})
    with open(root / "other.fa", "w") as handle:
        handle.writelines(f">{name}\n{seq}\n" for name, seq in other.items())
    args = ("--region", f"{COLI}:2500", "--genome", root / "other.fa")
    result = ok("predict", "--checkpoint", checkpoint, *args, "--out", root / "o.npz")
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "not the genome the model was distilled from" in warning[0]
    assert f"contig '{COLI}' is 5000 bp in one and 4900 bp in the other" in warning[0]
    assert_one_line_error(
        invoke("predict", "--checkpoint", checkpoint, "--region", f"{STUB}:30", "--out", root / "r.npz"),
        STUB,
        "shorter than the window",
    )


def test_score_vcf_on_the_real_like_genome(real_like):
    root, spec = real_like["root"], real_like["spec"]
    contigs: dict[str, str] = real_like["contigs"]  # type: ignore[assignment]
    checkpoint = root / "run" / "best.pt"
    if not checkpoint.exists():
        ok("distill", spec, "--device", "cpu")
        ok("train", spec, "--run-dir", root / "run", "--device", "cpu", "--steps", "4")
    records = []
    for pos in (520, 3000, 8450, 11990):  # 520 and 8450 are soft-masked
        ref = contigs[PHAGE][pos - 1].upper()
        records.append((PHAGE, pos, ref, "ACGT"[("ACGT".index(ref) + 1) % 4]))
    records.append((COLI, 100, contigs[COLI][99], "A" if contigs[COLI][99] != "A" else "C"))
    records.append((STUB, 10, contigs[STUB][9], "A" if contigs[STUB][9] != "A" else "C"))
    vcf = root / "calls.vcf.gz"
    with gzip.open(vcf, "wt") as handle:
        handle.write("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        handle.writelines(f"{c}\t{p}\tv{i}\t{r}\t{a}\t.\tPASS\t.\n" for i, (c, p, r, a) in enumerate(records))
    out = root / "scores.tsv"
    ok("score-vcf", "--checkpoint", checkpoint, "--vcf", vcf, "--out", out, "--device", "cpu")
    with open(out) as handle:
        rows = list(csv.DictReader((line for line in handle if not line.startswith("##")), delimiter="\t"))
    assert [(r["chrom"], int(r["pos"])) for r in rows] == [(c, p) for c, p, _, _ in records]
    for row in rows[:-1]:
        assert row["ref_check"] == "ok" and row["status"] == "scored", row
    assert rows[-1]["status"].startswith("skipped: chromosome chrM_stub") and "shorter" in rows[-1]["status"]
    assert Genome(root / "assembly.fa").length(STUB) == L - 20


def test_a_genome_in_a_read_only_folder_without_its_index(real_like, tmp_path, monkeypatch):
    """A shared reference folder the user cannot write: the index goes to the user cache, said once."""
    import shutil

    reference = tmp_path / "shared_reference"
    reference.mkdir()
    shutil.copy(real_like["root"] / "assembly.fa", reference / "assembly.fa")
    spec = yaml.safe_load(real_like["spec"].read_text())
    spec["genome"] = str(reference / "assembly.fa")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("MULTIPLEXER_CACHE", str(tmp_path / "cache"))
    make_read_only(monkeypatch, reference)
    try:
        first = ok("distill", tmp_path / "spec.yaml", "--check")
        again = ok("distill", tmp_path / "spec.yaml", "--check")
    finally:
        reference.chmod(0o755)
    assert first.stdout == again.stdout and first.stdout.endswith("nothing was written\n")
    notes = first.stderr.splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"note: {reference / 'assembly.fa'}'s folder is read-only")
    assert str(tmp_path / "cache" / "fai") in notes[0] and again.stderr == ""
    assert sorted(p.name for p in reference.iterdir()) == ["assembly.fa"]


def test_a_bgzip_copy_is_the_same_genome(real_like, tmp_path):
    """``samtools faidx``-style bgzip FASTA: read directly, with the same checks and fingerprint."""
    from Bio import bgzf

    plain = real_like["root"] / "assembly.fa"
    with bgzf.BgzfWriter(str(tmp_path / "assembly.fa.gz"), "wb") as writer:
        writer.write(plain.read_bytes())
    assert Genome(tmp_path / "assembly.fa.gz").fingerprint() == Genome(plain).fingerprint()
    spec = yaml.safe_load(real_like["spec"].read_text())
    outputs = []
    for genome in (plain, tmp_path / "assembly.fa.gz"):
        spec["genome"] = str(genome)
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        outputs.append(ok("distill", tmp_path / "spec.yaml", "--check").stdout.split("\n", 1)[1])
    assert outputs[0] == outputs[1]
