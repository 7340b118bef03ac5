"""Interval splits: region strings and BED files in specs, the sequence each split samples from,
and windows that never cross a split's boundary."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from pipeline.core.intervals import VCF_QUERY_MAX, Interval, check_region, merge, parse_interval, read_bed, subtract
from pipeline.core.spec import load_spec, spec_from_dict
from pipeline.distill import WindowSampler, check_splits, split_segments
from pipeline.errors import SpecError, UserError


def bases(intervals: list[Interval]) -> set[tuple[str, int]]:
    return {(iv.chrom, p) for iv in intervals for p in range(iv.start, iv.end)}


# ------------------------------------------------------------------------------------------------
# intervals
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("chr17:1-2000000", Interval("chr17", 0, 2000000)),
        ("chr17:1,001-2,000", Interval("chr17", 1000, 2000)),
        ("gi|9626243|ref|NC_001416.1|:5-5", Interval("gi|9626243|ref|NC_001416.1|", 4, 5)),
        ("HLA-A*01:01:01:01:10-20", Interval("HLA-A*01:01:01:01", 9, 20)),
    ],
)
def test_region_strings_are_one_based_inclusive(text, expected):
    assert parse_interval(text) == expected
    assert parse_interval(str(expected)) == expected


@pytest.mark.parametrize("text", ["chr1", "chr1:5", "chr1:0-10", "chr1:10-9", ":1-5", "chr1:a-b", "chr1:1-"])
def test_bad_region_strings_are_refused(text):
    with pytest.raises(SpecError, match="chr:start-end"):
        parse_interval(text)


@pytest.mark.parametrize("text", ["chr21:1-99999999999999999999", "chr21:99999999999999999999-99999999999999999999"])
def test_positions_past_any_genome_are_one_line_naming_the_option(text):
    """Issue 27.2: ``score-vcf --region chr21:1-99999999999999999999`` was an ``OverflowError`` in
    pysam; every parser of regions refuses such a position, naming the option."""
    with pytest.raises(SpecError, match=r"--region: .* position 9+ is out of range \(at most"):
        parse_interval(text, "--region")
    with pytest.raises(SpecError, match=r"--region: .* out of range \(at most 2,147,483,647\)"):
        check_region(text, "--region", VCF_QUERY_MAX)


@pytest.mark.parametrize(
    "text", ["chr7", "chr7:100", "chr7:100-", "chr7:1,000-2,000", "HLA-A*01:01", f"chr7:1-{2**31 - 1}"]
)
def test_htslib_regions_are_passed_unchanged(text):
    assert check_region(text, "--region", VCF_QUERY_MAX) == text


@pytest.mark.parametrize("text", ["chr7:0-5", "chr7:10-9", ":1-5", f"chr7:1-{2**31}"])
def test_bad_htslib_regions_are_refused(text):
    with pytest.raises(SpecError, match="--region"):
        check_region(text, "--region", VCF_QUERY_MAX)


def test_merge_and_subtract_are_set_operations():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ivs = []
        for _ in range(rng.integers(0, 6)):
            start = int(rng.integers(0, 60))
            ivs.append(Interval(str(rng.choice(["a", "b"])), start, start + int(rng.integers(1, 20))))
        merged = merge(ivs)
        assert bases(merged) == bases(ivs)
        assert all(x.chrom != y.chrom or x.end < y.start for x, y in zip(merged, merged[1:]))
        whole = Interval("a", int(rng.integers(0, 30)), int(rng.integers(31, 90)))
        pieces = subtract(whole, ivs)
        assert bases(pieces) == bases([whole]) - bases(ivs)
        assert all(p.length > 0 for p in pieces) and pieces == sorted(pieces)


def test_bed_files_are_zero_based(tmp_path):
    bed = tmp_path / "x.bed"
    bed.write_text("track name=x\n# comment\nchr1\t0\t100\tpeak1\t5\n\nchr2 10 20\n")
    assert read_bed(bed) == [Interval("chr1", 0, 100), Interval("chr2", 10, 20)]
    bed.write_text("chr1\t100\t100\n")
    with pytest.raises(SpecError, match="x.bed:1"):
        read_bed(bed)


# ------------------------------------------------------------------------------------------------
# specs
# ------------------------------------------------------------------------------------------------


def test_chromosome_only_splits_keep_their_form_and_hash(spec_dict):
    """A split of whole chromosomes is written as before regions existed, so its hash is unchanged."""
    spec = spec_from_dict(spec_dict())
    assert spec.content_dict()["splits"]["train"] == {"chroms": ["chr1", "chr2", "chr3"], "samples": 10}
    assert spec_from_dict(spec.to_dict()).content_hash() == spec.content_hash()


def test_bed_file_and_region_strings_give_the_same_spec(tmp_path, spec_dict):
    bed = tmp_path / "valid.bed"
    bed.write_text("chr1\t1000\t3000\nchr2\t0\t500\n")
    as_bed = spec_dict(splits={"valid": {"chroms": None, "bed": "valid.bed"}})
    as_regions = spec_dict(splits={"valid": {"chroms": None, "regions": ["chr1:1001-3000", "chr2:1-500"]}})
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(as_bed))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(as_regions))
    a, b = load_spec(tmp_path / "a.yaml"), load_spec(tmp_path / "b.yaml")
    assert a.content_hash() == b.content_hash()
    assert a.splits["valid"].regions == (Interval("chr1", 1000, 3000), Interval("chr2", 0, 500))
    assert spec_from_dict(a.to_dict()).content_hash() == a.content_hash()  # round trip without the BED file


@pytest.mark.parametrize(
    "splits, message",
    [
        (
            {
                "valid": {"chroms": None, "regions": ["chr1:1-2000"]},
                "test": {"chroms": None, "regions": ["chr1:1500-3000"]},
            },
            "region chr1:1-2000 of split 'valid' overlaps region chr1:1500-3000 of split 'test'",
        ),
        (
            {
                "valid": {"chroms": None, "regions": ["chr1:1-9000", "chr2:1-5"]},
                "test": {"chroms": None, "regions": ["chr1:8000-8001"]},
            },
            "overlaps region chr1:8000-8001 of split 'test'",
        ),
        ({"train": {"regions": ["chr1:1-2000"]}}, "lies on 'chr1', which the split already takes whole"),
        ({"valid": {"chroms": None}}, "give the chromosomes (chroms) or intervals (regions, bed)"),
        ({"valid": {"regions": "chr8:1-100"}}, "list of 'chr:start-end' strings"),
        ({"valid": {"bed": "nowhere.bed"}}, "nowhere.bed"),
    ],
)
def test_bad_interval_splits_are_refused(splits, message, spec_dict):
    with pytest.raises(SpecError) as info:
        spec_from_dict(spec_dict(splits=splits))
    assert message in str(info.value)


# ------------------------------------------------------------------------------------------------
# the sequence each split samples from
# ------------------------------------------------------------------------------------------------


def one_contig_spec(spec_dict, **splits):
    """The tiny spec with train on chr1 and the given interval splits (``chroms`` of theirs dropped)."""
    base = {"train": {"chroms": ["chr1"], "samples": 40}, "valid": None, "test": None}
    return spec_from_dict(spec_dict(splits={**base, **{k: {"chroms": None, **v} for k, v in splits.items()}}))


def test_whole_chromosomes_give_way_to_other_splits_intervals_plus_a_window(spec_dict, genome):
    L = 80
    spec = one_contig_spec(spec_dict, valid={"regions": ["chr1:1001-3000"], "samples": 8})
    segments = split_segments(spec, genome)
    n = genome.length("chr1")
    assert segments["valid"] == [Interval("chr1", 1000, 3000)]
    assert segments["train"] == [Interval("chr1", 0, 1000 - L), Interval("chr1", 3000 + L, n)]


def test_windows_never_cross_split_boundaries(spec_dict, genome):
    """Every drawn window lies inside its split's sequence, at least L from every other split's."""
    L = 80
    valid, test = Interval("chr1", 1000, 3000), Interval("chr1", 3100, 3400)
    spec = one_contig_spec(
        spec_dict,
        valid={"regions": [str(valid)], "samples": 8},
        test={"regions": [str(test), "chr2:1-300"], "samples": 8},
    )
    windows = {split: [WindowSampler(genome, spec, split)(k) for k in range(300)] for split in spec.splits}
    for split, drawn in windows.items():
        for w in drawn:
            start = w.center - L // 2
            assert genome.fetch(w.chrom, start, start + L) == w.seq
            if split == "valid":
                assert valid.start <= start and start + L <= valid.end
            elif split == "test":
                assert any(iv.start <= start and start + L <= iv.end for iv in (test, Interval("chr2", 0, 300)))
            else:
                assert w.chrom == "chr1"
                assert start + L <= valid.start - L or start >= test.end + L
    assert {w.chrom for w in windows["test"]} == {"chr1", "chr2"}  # the 300-bp interval holds windows too


def test_intervals_outside_the_genome_are_named(spec_dict, genome):
    n = genome.length("chr1")
    spec = one_contig_spec(spec_dict, valid={"regions": [f"chr1:{n - 10}-{n + 5}"], "samples": 2})
    with pytest.raises(UserError, match=f"split 'valid': region chr1:{n - 10}-{n + 5} runs past the end of chr1"):
        split_segments(spec, genome)
    spec = one_contig_spec(spec_dict, valid={"regions": ["chrQ:1-100"], "samples": 2})
    with pytest.raises(UserError, match="split 'valid': chromosome 'chrQ' is not in genome"):
        split_segments(spec, genome)


def test_check_reports_each_split(spec_dict, genome):
    spec = one_contig_spec(spec_dict, valid={"regions": ["chr1:1001-3000"], "samples": 8})
    checks = check_splits(spec, genome, count_bases=True)
    n = genome.length("chr1")
    assert checks["valid"].bases == 2000 and checks["valid"].windows == 2000 - 80 + 1
    assert checks["train"].bases == n - 2000 - 2 * 80 and checks["train"].contigs == ["chr1"]
    seq = genome.fetch("chr1", 1000, 3000)
    assert checks["valid"].usable == sum(seq.upper().count(b) for b in "ACGT")
    assert 0 <= checks["train"].rejected <= checks["train"].probes


def test_a_split_too_small_for_its_samples_is_refused_before_anything_is_written(spec_dict, genome):
    spec = one_contig_spec(spec_dict, valid={"regions": ["chr1:1001-1100"], "samples": 30})
    with pytest.raises(UserError, match="asks for 30 windows, but its sequence holds only 21 distinct windows"):
        check_splits(spec, genome)
    spec = one_contig_spec(spec_dict, valid={"regions": ["chr1:1001-1050"], "samples": 1})
    with pytest.raises(UserError, match="none of its sequence .* is at least the window length"):
        check_splits(spec, genome)
