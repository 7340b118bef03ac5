"""Window convention at both chromosome ends, and the synthetic genome."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.genome import Genome
from pipeline.core.windows import center_range, parse_region, window_bounds
from pipeline.demo.synthetic import synth_genome
from pipeline.errors import UserError


def read_fasta(path: Path) -> dict[str, str]:
    """Parse a FASTA file by hand (independently of pyfaidx)."""
    records: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            records[name] = []
        elif line:
            records[name].append(line)
    return {k: "".join(v) for k, v in records.items()}


@pytest.fixture(scope="module")
def fasta(genome_path: Path) -> dict[str, str]:
    return read_fasta(genome_path)


def test_synthetic_genome_lengths(genome: Genome, fasta: dict[str, str]):
    assert list(genome.chrom_lengths) == [f"chr{i}" for i in range(1, 23)] + ["chrX"]
    assert genome.chrom_lengths == {k: len(v) for k, v in fasta.items()}
    assert 2000 <= min(genome.chrom_lengths.values()) <= max(genome.chrom_lengths.values()) <= 13000


def test_synthetic_genome_is_deterministic(tmp_path: Path, genome_path: Path):
    other = tmp_path / "again.fa"
    lengths = synth_genome(other, divisor=20000)
    assert other.read_bytes() == genome_path.read_bytes()
    assert (tmp_path / "again.fa.fai").is_file()
    assert sum(lengths.values()) == sum(len(s) for s in read_fasta(other).values())


def test_synthetic_genome_has_n_soft_mask_and_iupac(fasta: dict[str, str]):
    text = "".join(fasta.values())
    assert "N" in text and any(c in text for c in "acgt") and any(c in text for c in "RY")


def test_synthetic_genome_refuses_existing_path(genome_path: Path):
    with pytest.raises(UserError, match="exists"):
        synth_genome(genome_path, divisor=20000)


@pytest.mark.parametrize("seq_len", [80, 81, 2])
@pytest.mark.parametrize("chrom", ["chr1", "chr21"])
def test_window_is_the_documented_slice(genome: Genome, fasta: dict[str, str], chrom: str, seq_len: int):
    n = genome.length(chrom)
    lo, hi = center_range(n, seq_len)
    for pos in (lo, lo + 1, n // 2, hi - 1, hi):
        start = pos - seq_len // 2
        assert window_bounds(pos, seq_len) == (start, start + seq_len)
        window = genome.window(chrom, pos, seq_len)
        assert len(window) == seq_len
        assert window == fasta[chrom][start : start + seq_len]
    # the first and last centers that fit touch the chromosome's ends exactly
    assert genome.window(chrom, lo, seq_len) == fasta[chrom][:seq_len]
    assert genome.window(chrom, hi, seq_len) == fasta[chrom][-seq_len:]


@pytest.mark.parametrize("seq_len", [80, 81])
def test_window_one_beyond_either_end_is_an_error(genome: Genome, seq_len: int):
    n = genome.length("chr2")
    lo, hi = center_range(n, seq_len)
    with pytest.raises(UserError, match="does not fit"):
        genome.window("chr2", lo - 1, seq_len)
    with pytest.raises(UserError, match="does not fit"):
        genome.window("chr2", hi + 1, seq_len)


def test_window_for_l2000_covers_pos_minus_999_to_pos_plus_1000():
    # 1-based pos-999 ... pos+1000 is the 0-based half-open [pos-1000, pos+1000)
    assert window_bounds(5000, 2000) == (4000, 6000)


def test_missing_chromosome_is_an_error(genome: Genome):
    with pytest.raises(UserError, match="chrZ"):
        genome.window("chrZ", 100, 10)


def test_fetch_outside_is_an_error(genome: Genome):
    n = genome.length("chr3")
    with pytest.raises(UserError):
        genome.fetch("chr3", n - 5, n + 1)
    with pytest.raises(UserError):
        genome.fetch("chr3", -1, 5)


def test_genome_rejects_bad_files(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        Genome(tmp_path / "missing.fa")
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        Genome(empty)
    no_header = tmp_path / "noheader.fa"
    no_header.write_text("ACGT\n")
    with pytest.raises(UserError, match="header"):
        Genome(no_header)
    crlf = tmp_path / "crlf.fa"
    crlf.write_bytes(b">chr1\r\nACGT\r\n")
    with pytest.raises(UserError, match="CRLF"):
        Genome(crlf)


@pytest.mark.parametrize(
    "text, expected", [("chr1:100", ("chr1", 100)), ("chr2:1,234", ("chr2", 1234)), ("chrUn:x:7", ("chrUn:x", 7))]
)
def test_parse_region(text: str, expected: tuple[str, int]):
    assert parse_region(text) == expected


@pytest.mark.parametrize("text", ["chr1", "chr1:abc", "chr1:0", ":5"])
def test_parse_region_rejects(text: str):
    with pytest.raises(UserError):
        parse_region(text)
