"""Window convention at both chromosome ends, the synthetic genome, and real genomes (issue 12): bgzip
FASTA, read-only folders, chromosome-name suggestions, short contigs and fingerprints."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from Bio import bgzf
from helpers import make_read_only

from pipeline.core.genome import Genome, cache_dir, fingerprint_difference
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


# ------------------------------------------------------------------------------------------------
# real genomes (issue 12): bgzip, read-only folders, chromosome names, short contigs, fingerprints
# ------------------------------------------------------------------------------------------------


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    with open(path, "w") as out:
        for name, seq in records.items():
            out.write(f">{name} some description\n")
            out.writelines(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
    return path


def random_records(seed: int = 0, lengths: tuple[int, ...] = (90_000, 70_000, 1_500, 3)) -> dict[str, str]:
    """Contigs with soft-masked stretches and N runs, together larger than two 64 KiB bgzip blocks."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, n in enumerate(lengths):
        seq = rng.choice(list("ACGTacgtN"), size=n, p=[0.2, 0.2, 0.2, 0.2, 0.04, 0.04, 0.04, 0.04, 0.04])
        out[f"chr{i + 1}"] = "".join(seq)
    return out


def bgzip(src: Path, dst: Path, block: int | None = None) -> Path:
    """BGZF-compress ``src`` with Biopython: 64 KiB blocks, or ``block``-byte ones (htslib uses 65280)."""
    data = src.read_bytes()
    writer = bgzf.BgzfWriter(str(dst), "wb")
    step = block or len(data)
    for i in range(0, len(data), step):
        writer.write(data[i : i + step])
        if block:
            writer.flush()
    writer.close()
    return dst


def gzi_bytes(path: Path) -> bytes:
    """htslib's ``.gzi`` for a bgzip file, written here independently of the package."""
    with open(path, "rb") as handle:
        blocks = list(bgzf.BgzfBlocks(handle))
    pairs = [(start, data_start) for start, _, data_start, data_len in blocks[1:] if data_len]
    return struct.pack("<Q", len(pairs)) + b"".join(struct.pack("<QQ", c, u) for c, u in pairs)


def fai_records(path: Path) -> dict[str, tuple[int, int, int, int]]:
    rows = (line.split("\t") for line in Path(str(path) + ".fai").read_text().splitlines())
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def boundary_bases(plain: Path, compressed: Path) -> list[tuple[str, int]]:
    """(contig, 0-based base) at each bgzip block boundary (the next base where it falls on a newline)."""
    with open(compressed, "rb") as handle:
        starts = [data_start for _, _, data_start, data_len in bgzf.BgzfBlocks(handle) if data_len][1:]
    out = []
    for u in starts:
        for name, (rlen, offset, lenc, lenb) in fai_records(plain).items():
            line, col = divmod(u - offset, lenb)
            base = line * lenc + min(col, lenc)
            if u >= offset and base < rlen:
                out.append((name, base))
    return out


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of the test's own (no test writes into the real home)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MULTIPLEXER_CACHE", str(folder))
    return folder


@pytest.mark.parametrize("block", [None, 65280], ids=["64KiB-blocks", "htslib-blocks"])
@pytest.mark.parametrize("index", ["built", "samtools"])
def test_bgzip_fasta_reads_the_bases_of_the_plain_fasta(tmp_path: Path, cache: Path, block: int | None, index: str):
    records = random_records()
    plain = write_fasta(tmp_path / "plain.fa", records)
    Genome(plain)  # builds plain.fa.fai
    packed = bgzip(plain, tmp_path / "genome.fa.gz", block)
    if index == "samtools":  # a bgzip FASTA's .fai is that of the plain FASTA; .gzi lists the blocks
        Path(str(packed) + ".fai").write_bytes(Path(str(plain) + ".fai").read_bytes())
        Path(str(packed) + ".gzi").write_bytes(gzi_bytes(packed))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    genome = Genome(packed)
    assert genome.chrom_lengths == {k: len(v) for k, v in records.items()}
    assert {"genome.fa.gz.fai", "genome.fa.gz.gzi"} <= {p.name for p in tmp_path.iterdir()}
    if index == "samtools":  # used as they are
        assert all((tmp_path / name).read_bytes() == data for name, data in before.items())
    boundaries = boundary_bases(plain, packed)
    assert len(boundaries) >= 2
    for chrom, base in boundaries:  # reads that start at, end at and cross a block boundary
        n = len(records[chrom])
        for start, end in ((base, base + 1), (base - 1, base + 1), (base - 70, base + 70), (base, base + 200)):
            start, end = max(0, start), min(n, end)
            assert genome.fetch(chrom, start, end) == records[chrom][start:end]
    for chrom, seq in records.items():
        for start in range(0, len(seq), 997):
            for length in (1, 61, 500):
                if start + length <= len(seq):
                    assert genome.fetch(chrom, start, start + length) == seq[start : start + length]
        if len(seq) >= 81:
            lo, hi = center_range(len(seq), 81)
            for pos in (lo, (lo + hi) // 2, hi):
                start = pos - 81 // 2
                assert genome.window(chrom, pos, 81) == seq[start : start + 81]
    again = Genome(packed)  # the index next to it is now used as it is
    assert again.fetch("chr1", 65_000, 66_000) == records["chr1"][65_000:66_000]
    assert not cache.exists()


def test_bgzip_fasta_has_the_fingerprint_of_the_plain_fasta(tmp_path: Path, cache: Path):
    plain = write_fasta(tmp_path / "plain.fa", random_records())
    packed = bgzip(plain, tmp_path / "genome.fa.bgz")
    assert Genome(packed).fingerprint() == Genome(plain).fingerprint()


def test_plain_gzip_fasta_is_refused_with_advice(tmp_path: Path):
    plain = write_fasta(tmp_path / "plain.fa", random_records(lengths=(500,)))
    packed = tmp_path / "genome.fa.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(UserError, match=r"genome\.fa\.gz.*gzip- but not bgzip-compressed.*gunzip.*bgzip") as info:
        Genome(packed)
    assert "\n" not in str(info.value)


def test_compression_and_name_must_agree(tmp_path: Path):
    plain = write_fasta(tmp_path / "plain.fa", random_records(lengths=(500,)))
    hidden = bgzip(plain, tmp_path / "packed.fa")
    with pytest.raises(UserError, match=r"packed\.fa.*bgzip-compressed.*does not end in \.gz"):
        Genome(hidden)
    named = tmp_path / "named.fa.gz"
    named.write_bytes(plain.read_bytes())
    with pytest.raises(UserError, match=r"named\.fa\.gz.*not compressed"):
        Genome(named)


def test_truncated_bgzip_fasta_is_refused(tmp_path: Path):
    plain = write_fasta(tmp_path / "plain.fa", random_records(lengths=(90_000,)))
    whole = bgzip(plain, tmp_path / "whole.fa.gz").read_bytes()
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"cut\.fa\.gz.*truncated"):
        Genome(cut)


def test_bgzip_fasta_with_a_stale_fai_is_refused(tmp_path: Path, cache: Path):
    """The .fai of another FASTA (another line width, so other offsets) next to a bgzip FASTA."""
    records = random_records(lengths=(90_000, 5_000))
    packed = bgzip(write_fasta(tmp_path / "plain.fa", records), tmp_path / "genome.fa.gz")
    Genome(packed)  # builds .fai and .gzi
    other = write_fasta(tmp_path / "other.fa", records, width=80)
    Genome(other)
    Path(str(packed) + ".fai").write_bytes(Path(str(other) + ".fai").read_bytes())
    with pytest.raises(UserError, match=r"genome\.fa\.gz\.fai.*does not match.*genome\.fa\.gz") as info:
        Genome(packed)
    assert "\n" not in str(info.value) and ".gzi" in str(info.value)


def test_bgzip_fasta_with_a_stale_gzi_is_refused(tmp_path: Path, cache: Path):
    """A .gzi of the same text compressed in other blocks: it would map offsets to the wrong bytes."""
    plain = write_fasta(tmp_path / "plain.fa", random_records(lengths=(150_000, 5_000)))
    packed = bgzip(plain, tmp_path / "genome.fa.gz")
    Genome(packed)
    Path(str(packed) + ".gzi").write_bytes(gzi_bytes(bgzip(plain, tmp_path / "other.fa.gz", block=30_001)))
    with pytest.raises(UserError, match=r"genome\.fa\.gz\.fai.*does not match"):
        Genome(packed)


def test_bgzip_fasta_with_a_corrupt_gzi_is_refused(tmp_path: Path, cache: Path):
    packed = bgzip(write_fasta(tmp_path / "plain.fa", random_records(lengths=(90_000,))), tmp_path / "genome.fa.gz")
    Genome(packed)
    Path(str(packed) + ".gzi").write_bytes(b"not a .gzi")
    with pytest.raises(UserError, match=r"genome\.fa\.gz.*corrupt.*delete the \.fai and \.gzi") as info:
        Genome(packed)
    assert "\n" not in str(info.value)


class ReadOnly:
    """Make folders refuse writes (:func:`helpers.make_read_only`) until :meth:`undo`."""

    def __init__(self) -> None:
        self.folders: list[Path] = []
        self.mp = pytest.MonkeyPatch()

    def add(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folders.append(folder)
        make_read_only(self.mp, folder)

    def undo(self) -> None:
        self.mp.undo()
        for folder in self.folders:
            folder.chmod(0o755)
        self.folders = []


@pytest.fixture
def read_only() -> Iterator[ReadOnly]:
    ro = ReadOnly()
    yield ro
    ro.undo()


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("kind", ["plain", "bgzip"])
def test_read_only_folder_keeps_the_index_in_the_cache(tmp_path: Path, cache: Path, read_only: ReadOnly, kind: str):
    records = random_records(lengths=(70_000, 2_000))
    folder = tmp_path / "reference"
    folder.mkdir()
    path = write_fasta(folder / "genome.fa", records)
    if kind == "bgzip":
        path = bgzip(path, folder / "genome.fa.gz")
    read_only.add(folder)
    before = files_under(folder)
    notes: list[str] = []
    genome = Genome(path, notify=notes.append)
    assert len(notes) == 1
    assert notes[0].startswith(f"note: {path}'s folder is read-only; its index is kept in {genome.index_path}")
    assert genome.index_path is not None and genome.index_path.parent == cache / "fai"
    assert genome.index_path.is_file() and files_under(folder) == before
    assert all(name.endswith((".fai", ".gzi")) for name in files_under(cache / "fai"))  # no temporary files left
    assert genome.fetch("chr1", 60_000, 66_000) == records["chr1"][60_000:66_000]
    again = Genome(path, notify=notes.append)  # the cached index is used, silently
    assert len(notes) == 1 and again.index_path == genome.index_path
    assert again.fetch("chr2", 0, 2_000) == records["chr2"]


def test_changed_fasta_in_a_read_only_folder_gets_a_new_cached_index(tmp_path: Path, cache: Path, read_only: ReadOnly):
    folder = tmp_path / "reference"
    folder.mkdir()
    path = write_fasta(folder / "genome.fa", random_records(seed=1, lengths=(3_000,)))
    read_only.add(folder)
    first = Genome(path, notify=lambda line: None).index_path
    read_only.undo()
    changed = random_records(seed=2, lengths=(5_000, 100))
    write_fasta(path, changed)
    read_only.add(folder)
    genome = Genome(path, notify=lambda line: None)
    assert genome.index_path != first and genome.index_path is not None and first is not None
    assert genome.index_path.parent == first.parent
    assert genome.chrom_lengths == {"chr1": 5_000, "chr2": 100}
    assert genome.fetch("chr1", 0, 5_000) == changed["chr1"]


def test_read_only_folder_and_cache_build_the_index_for_this_run(
    tmp_path: Path, cache: Path, read_only: ReadOnly, monkeypatch: pytest.MonkeyPatch
):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    records = random_records(lengths=(4_000,))
    folder = tmp_path / "reference"
    folder.mkdir()
    path = write_fasta(folder / "genome.fa", records)
    read_only.add(folder)
    read_only.add(cache)
    notes: list[str] = []
    genome = Genome(path, notify=notes.append)
    assert len(notes) == 1 and f"{path}'s folder is read-only" in notes[0] and "for this run only" in notes[0]
    assert str(cache) in notes[0] and "MULTIPLEXER_CACHE" in notes[0]
    assert genome.index_path is None
    assert genome.fetch("chr1", 0, 4_000) == records["chr1"]
    assert files_under(folder) == {"genome.fa"} and files_under(cache) == set() and files_under(temp) == set()


def test_read_only_folder_with_its_fai_needs_no_cache(genome_path: Path, tmp_path: Path, cache: Path, read_only):
    folder = tmp_path / "reference"
    folder.mkdir()
    for suffix in ("", ".fai"):
        shutil.copy2(genome_path.with_name(genome_path.name + suffix), folder / ("genome.fa" + suffix))
    read_only.add(folder)
    notes: list[str] = []
    genome = Genome(folder / "genome.fa", notify=notes.append)
    assert notes == [] and genome.index_path == folder / "genome.fa.fai" and not cache.exists()


def test_the_note_goes_to_stderr_by_default(tmp_path: Path, cache: Path, read_only: ReadOnly, capsys):
    folder = tmp_path / "reference"
    folder.mkdir()
    path = write_fasta(folder / "genome.fa", random_records(lengths=(500,)))
    read_only.add(folder)
    Genome(path)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("note: ")


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MULTIPLEXER_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("MULTIPLEXER_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "multiplexer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "multiplexer"


@pytest.fixture
def named(tmp_path: Path) -> Callable[[list[str]], Genome]:
    def make(names: list[str]) -> Genome:
        path = tmp_path / f"named{len(list(tmp_path.iterdir()))}.fa"
        return Genome(write_fasta(path, {name: "ACGT" * 10 for name in names}))

    return make


@pytest.mark.parametrize(
    "names, asked, expected",
    [
        (["chr1", "chr17", "chrM"], "17", "chr17"),
        (["1", "17", "MT"], "chr17", "17"),
        (["chr1", "chr17", "chrM"], "MT", "chrM"),
        (["chr1", "chr17", "chrM"], "M", "chrM"),
        (["1", "17", "MT"], "chrM", "MT"),
        (["1", "17", "M"], "chrM", "M"),
        (["chr1", "chrX"], "chrx", "chrX"),
        (["chr1", "chrX"], "x", "chrX"),
        (["chr1", "chr17"], "chr2", None),
        (["chr1", "chr17"], "chr17", None),
        (["chr1", "chr17"], "chrM", None),
    ],
)
def test_suggest_names_the_other_convention(named, names: list[str], asked: str, expected: str | None):
    assert named(names).suggest(asked) == expected


def test_missing_chromosome_error_suggests_the_other_naming(named):
    genome = named(["chr1", "chr17", "chrM"])
    for call in (lambda: genome.length("17"), lambda: genome.window("17", 20, 10), lambda: genome.fetch("17", 0, 5)):
        with pytest.raises(UserError) as info:
            call()
        message = str(info.value)
        assert message.startswith("chromosome '17' is not in genome") and message.endswith("; did you mean 'chr17'?")
        assert "\n" not in message
    with pytest.raises(UserError) as info:
        genome.length("chr5")
    assert "did you mean" not in str(info.value)


def test_contig_shorter_than_the_window_says_so(tmp_path: Path):
    genome = Genome(write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 100, "chrM": "ACGTACG" * 17}))
    assert genome.length("chrM") == 119
    with pytest.raises(UserError) as info:
        genome.window("chrM", 100, 200)
    assert str(info.value) == "chromosome 'chrM' (119 bp) is shorter than the window (200 bp)"
    assert genome.window("chrM", center_range(119, 119)[0], 119) == "ACGTACG" * 17  # exactly as long: it fits
    with pytest.raises(UserError, match=r"does not fit in chr1 .*centers must lie in 100\.\.300"):
        genome.window("chr1", 350, 200)  # long enough, but the center is too close to the end


def fingerprint_of(tmp_path: Path, name: str, records: dict[str, str], width: int = 60) -> dict[str, Any]:
    folder = tmp_path / name
    folder.mkdir()
    return Genome(write_fasta(folder / "g.fa", records, width)).fingerprint()


def test_fingerprint_is_json_and_names_the_layout(tmp_path: Path):
    records = random_records(lengths=(5_000, 300, 0, 7))
    fp = fingerprint_of(tmp_path, "a", records)
    assert json.loads(json.dumps(fp)) == fp
    assert fp["n_contigs"] == 4 and fp["total_length"] == sum(map(len, records.values()))
    assert fp["first_contigs"] == [[k, len(v)] for k, v in records.items()]
    assert set(fp) >= {"layout_sha256", "sequence_sha256"}


def test_fingerprint_reads_a_sample_not_the_whole_sequence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    records = random_records(lengths=(200_000, 100_000))
    genome = Genome(write_fasta(tmp_path / "g.fa", records))
    read: list[int] = []
    real = genome.fetch
    monkeypatch.setattr(genome, "fetch", lambda c, s, e: read.append(e - s) or real(c, s, e))
    genome.fingerprint()
    assert 0 < sum(read) <= 2 * 16 * 64 < sum(genome.chrom_lengths.values()) // 100


def test_same_genome_same_fingerprint(tmp_path: Path):
    records = random_records()
    a = fingerprint_of(tmp_path, "a", records)
    b = fingerprint_of(tmp_path, "b", records, width=80)  # another copy, even with other line widths
    assert a == b and fingerprint_difference(a, b) is None
    assert fingerprint_difference(json.loads(json.dumps(a)), b) is None


def test_soft_masked_copy_has_the_same_fingerprint(tmp_path: Path):
    records = random_records()
    masked = {k: v[: len(v) // 2].lower() + v[len(v) // 2 :] for k, v in records.items()}
    upper = {k: v.upper() for k, v in records.items()}
    a, b, c = (fingerprint_of(tmp_path, n, r) for n, r in (("a", records), ("b", masked), ("c", upper)))
    assert a == b == c


def test_one_changed_base_at_a_sampled_position_changes_the_sequence_fingerprint(tmp_path: Path):
    records = random_records()
    seq = records["chr2"]
    changed = {**records, "chr2": ("C" if seq[0].upper() != "C" else "G") + seq[1:]}  # the first base is sampled
    a, b = fingerprint_of(tmp_path, "a", records), fingerprint_of(tmp_path, "b", changed)
    assert a["layout_sha256"] == b["layout_sha256"]
    assert fingerprint_difference(a, b) == "same contig names and lengths but different sequence"


def test_fingerprint_difference_names_what_differs(tmp_path: Path):
    records = random_records(lengths=(5_000, 3_000, 1_000))
    base = fingerprint_of(tmp_path, "base", records)
    longer = fingerprint_of(tmp_path, "longer", {**records, "chr2": records["chr2"] + "ACGT"})
    assert fingerprint_difference(base, longer) == "contig 'chr2' is 3000 bp in one and 3004 bp in the other"
    renamed = fingerprint_of(tmp_path, "renamed", {k.removeprefix("chr"): v for k, v in records.items()})
    assert fingerprint_difference(base, renamed) == "contig names differ ('chr1' vs '1')"
    extra = fingerprint_of(tmp_path, "extra", {**records, "chrM": "ACGT" * 4})
    message = fingerprint_difference(base, extra)
    assert message is not None and message.startswith("3 contigs vs 4") and "chrM" in message
    reordered = fingerprint_of(tmp_path, "reordered", dict(reversed(list(records.items()))))
    assert "another order" in str(fingerprint_difference(base, reordered))


def test_fingerprint_difference_beyond_the_listed_contigs(tmp_path: Path):
    records = {f"scaffold{i}": "ACGT" * 5 for i in range(30)}
    a = fingerprint_of(tmp_path, "a", records)
    b = fingerprint_of(tmp_path, "b", {**records, "scaffold29": "ACGT" * 6})
    assert a["first_contigs"] == b["first_contigs"]
    assert fingerprint_difference(a, b) == "the contig names and lengths differ"
