"""Store format 4: targets without their reference-base rows, read straight from their chunks.

The layout (expand and compact are exact inverses, zeros where they must be, a hand-placed effect lands
at ``[f, b, j]``), the chunk reader (what it decodes is what zarr decodes, for every codec and chunk
geometry the writer makes, on local and fsspec stores), the format-4 digests (a flipped byte and a
swapped chunk are caught), stores written for GPU decode read identically on the CPU, and format 3
stores: read, trained on, and upgraded to format 4 (resumable, checked, identical targets)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
import zarr.codecs as zc
from helpers import as_format3, assert_one_line_error, invoke, ok

from pipeline.core.commands import DistillOptions
from pipeline.core.spec import load_spec
from pipeline.distill import distill
from pipeline.errors import UserError
from pipeline.store import open_store, verify_store
from pipeline.store.chunkio import ChunkError, DigestError, TargetChunks, runs_of
from pipeline.store.digests import DIGESTED, sample_digests
from pipeline.store.format import FORMAT_VERSION, byte_shuffle
from pipeline.store.layout import ALTS, compact_targets, dropped_nonzero, expand_targets
from pipeline.store.upgrade import upgrade_store


def random_batch(rng: np.random.Generator, B: int = 3, F: int = 5, L: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """One-hot windows with N columns, and effects that are 0 at reference bases and N columns."""
    X = np.zeros((B, 4, L), dtype=np.uint8)
    X[np.arange(B)[:, None], rng.integers(0, 4, (B, L)), np.arange(L)] = 1
    X[:, :, rng.random(L) < 0.15] = 0
    y = rng.standard_normal((B, F, 4, L)).astype(np.float16)
    keep = (X.sum(axis=1, keepdims=True) > 0) & (X == 0)
    y[~np.broadcast_to(keep[:, None], y.shape)] = 0
    return X, y


def test_expand_is_the_exact_inverse_of_compact_with_zeros_where_nothing_is_stored():
    rng = np.random.default_rng(0)
    X, y = random_batch(rng)
    y[0, 1, :, 3] = [np.float16(-0.0) if X[0, b, 3] == 0 else 0 for b in range(4)]  # a signed zero survives
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    stored = compact_targets(yt, Xt)
    assert stored.shape == (3, 5, 3, 40)
    back = expand_targets(stored, Xt)
    assert torch.equal(back.view(torch.int16), yt.view(torch.int16))  # bit for bit
    assert torch.equal(compact_targets(back, Xt), stored)
    as_float = expand_targets(stored, Xt, torch.float32)
    assert as_float.dtype == torch.float32 and torch.equal(as_float, yt.float())
    assert dropped_nonzero(y, X) is None
    y[2, 0, int(X[2, :, 7].argmax()), 7] = 1  # a value at a reference base would be lost
    assert dropped_nonzero(y, X) == 2


def test_a_hand_placed_effect_lands_at_its_base_and_position():
    L = 6
    X = torch.zeros(1, 4, L, dtype=torch.uint8)
    refs = [0, 1, 2, 3, 0, 2]
    for j, r in enumerate(refs):
        X[0, r, j] = 1
    X[0, :, 4] = 0  # N
    for j, r in enumerate(refs):
        for k, b in enumerate(ALTS[r]):
            stored = torch.zeros(1, 2, 3, L)
            stored[0, 1, k, j] = 7.0
            full = expand_targets(stored, X)
            if j == 4:
                assert not full.any()  # an N column has no effects, whatever is stored there
                continue
            assert full[0, 1, b, j] == 7.0 and full.count_nonzero() == 1


# ------------------------------------------------------------------------------------------------
# the chunk reader against zarr
# ------------------------------------------------------------------------------------------------

CODECS = {
    "blosc": lambda: [zc.BloscCodec(cname="zstd", clevel=3, shuffle=zc.BloscShuffle.bitshuffle)],
    "zstd": lambda: [zc.ZstdCodec(level=3)],
    "shuffle+zstd": lambda: [byte_shuffle(), zc.ZstdCodec(level=3)],
    "none": lambda: [],
}


@pytest.mark.parametrize(
    ("codec", "chunk_samples", "width", "sharded"), list(itertools.product(CODECS, (1, 3), (10, 4), (False, True)))
)
def test_the_chunk_reader_decodes_what_zarr_decodes(tmp_path, codec, chunk_samples, width, sharded):
    N, F, R, L = 7, 10, 3, 12
    data = np.random.default_rng(1).standard_normal((N, F, R, L)).astype(np.float16)
    padded = width * -(-F // width)
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="w")
    array = group.create_array(
        "t", shape=data.shape, chunks=(chunk_samples, width, R, L), dtype="float16", fill_value=0,
        shards=(2 * chunk_samples, padded, R, L) if sharded else None,
        compressors=[*CODECS[codec](), zc.Crc32cCodec()], config={"write_empty_chunks": True},
    )  # fmt: skip
    array[:] = data
    reader = TargetChunks(array)
    for indices in ([0], [6], [1, 2, 3], [0, 2, 4, 5, 6], list(range(N))):
        out = np.empty((len(indices), F, R, L), np.float16)
        reader.read_into(list(runs_of(indices)), out)
        assert np.array_equal(out.view(np.uint16), np.asarray(array[:])[indices].view(np.uint16))


def test_the_chunk_reader_reads_an_fsspec_store(tmp_path):
    data = np.random.default_rng(2).standard_normal((5, 6, 3, 8)).astype(np.float16)
    for sharded in (False, True):
        url = f"memory://chunkio-{sharded}.zarr"
        group = zarr.open_group(url, mode="w")
        array = group.create_array(
            "t", shape=data.shape, chunks=(1, 3, 3, 8), shards=(5, 6, 3, 8) if sharded else None, dtype="float16",
            compressors=[zc.ZstdCodec(level=1), zc.Crc32cCodec()], fill_value=0,
        )  # fmt: skip
        array[:] = data
        reader = TargetChunks(array)
        out = np.empty((3, 6, 3, 8), np.float16)
        reader.read_into([(1, 3), (4, 5)], out)
        assert np.array_equal(out, data[[1, 2, 4]])
        assert reader.digests(0, 5).shape == (5,)


def test_a_damaged_chunk_and_a_swapped_chunk_are_told_apart(tmp_path):
    data = np.random.default_rng(3).standard_normal((4, 2, 3, 8)).astype(np.float16)
    array = zarr.open_group(str(tmp_path / "d.zarr"), mode="w").create_array(
        "t", shape=data.shape, chunks=(1, 2, 3, 8), dtype="float16", compressors=[zc.ZstdCodec(), zc.Crc32cCodec()],
        fill_value=0,
    )  # fmt: skip
    array[:] = data
    reader = TargetChunks(array)
    digests = reader.digests(0, 4)
    out = np.empty((4, 2, 3, 8), np.float16)
    reader.read_into([(0, 4)], out, digests)
    folder = tmp_path / "d.zarr" / "t" / "c"
    a, b = (folder / "1" / "0" / "0" / "0"), (folder / "2" / "0" / "0" / "0")
    blob_a, blob_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(blob_b)
    b.write_bytes(blob_a)
    reader = TargetChunks(array)
    reader.read_into([(0, 4)], out)  # each chunk is intact
    with pytest.raises(DigestError) as swapped:
        reader.read_into([(0, 4)], out, digests)
    assert swapped.value.sample == 1
    damaged = bytearray(blob_a)
    damaged[len(damaged) // 2] ^= 0x40
    a.write_bytes(bytes(damaged))
    with pytest.raises(ChunkError, match="CRC-32C") as flipped:
        TargetChunks(array).read_into([(1, 2)], out[:1])
    assert flipped.value.sample == 1


# ------------------------------------------------------------------------------------------------
# format 4 stores
# ------------------------------------------------------------------------------------------------


def test_a_new_store_is_format_4_and_reads_the_effects_distill_computed(tiny_store, tiny_spec):
    from pipeline.ism import saturation_mutagenesis
    from pipeline.models import build_base_from_identity

    store = open_store(tiny_store)
    assert store.meta.format_version == FORMAT_VERSION == 4 and store.rows == 3 and store.meta.sealed
    targets = store.array("valid", "targets")
    assert targets.shape == (6, 4, 3, tiny_spec.seq_len)
    assert targets.metadata.dimension_names == ("sample", "target", "alt", "position")
    X = store.read("valid", "reference", 0, 6)
    y = store.read("valid", "targets", 0, 6)
    assert y.shape == (6, 4, 4, tiny_spec.seq_len)
    base = build_base_from_identity(store.meta.base, seed=store.meta.seed)
    exact = saturation_mutagenesis(base, torch.from_numpy(X).float(), target="logfold").half().numpy()
    assert np.array_equal(y, exact)
    info = json.loads(ok("store", "info", tiny_store, "--json").output)["splits"]["valid"]
    assert info["stored_rows"] == 3 and info["decoded_bytes_per_sample"] == 4 * 3 * tiny_spec.seq_len * 2


def test_a_store_for_gpu_decode_reads_identically_through_the_cpu_path(tmp_path, write_spec, tiny_store):
    spec = load_spec(write_spec(tmp_path, storage={"codec": "zstd-gpu", "unit_samples": 4}))
    path = tmp_path / "gpu.zarr"
    distill(spec, DistillOptions(store_path=str(path), device="cpu"), progress=False)
    store, reference = open_store(path), open_store(tiny_store)
    targets = store.array("train", "targets")
    assert targets.shards is not None and [type(c).__name__ for c in targets.compressors] == [
        "Shuffle", "ZstdCodec", "Crc32cCodec"
    ]  # fmt: skip
    for split in store.splits:
        n = store.split_meta(split).n_samples
        assert np.array_equal(store.read(split, "targets", 0, n), reference.read(split, "targets", 0, n))
        assert np.array_equal(store.read_targets(split, 0, n), np.asarray(targets[:]) if split == "train" else
                              np.asarray(store.array(split, "targets")[:]))  # fmt: skip
    assert verify_store(open_store(path)) == []
    assert store.target_chunks("train").gpu_problem() is None
    assert "nvCOMP" in reference.target_chunks("train").gpu_problem()


def test_a_flipped_byte_in_a_gpu_store_shard_is_caught(tmp_path, write_spec):
    spec = load_spec(write_spec(tmp_path, storage={"codec": "zstd-gpu", "unit_samples": 4}))
    path = tmp_path / "gpu.zarr"
    distill(spec, DistillOptions(store_path=str(path), device="cpu"), progress=False)
    shard = path / "train" / "targets" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x21
    shard.write_bytes(bytes(data))
    line = assert_one_line_error(invoke("store", "verify", path), "train: unit 1", "targets")
    assert "cannot be read" in line
    with pytest.raises(UserError, match="split 'train' unit 1 sample"):
        open_store(path).read("train", "targets", 4, 8)


# ------------------------------------------------------------------------------------------------
# format 3 stores
# ------------------------------------------------------------------------------------------------


def test_a_format_3_store_is_read_verified_and_trained(tmp_path, store_copy, tiny_store):
    as_format3(store_copy)
    old, new = open_store(store_copy), open_store(tiny_store)
    assert old.meta.format_version == 3 and old.rows == 4
    assert old.array("train", "targets").shape[2] == 4
    for split in old.splits:
        n = old.split_meta(split).n_samples
        assert np.array_equal(old.read(split, "targets", 0, n), new.read(split, "targets", 0, n))
    assert verify_store(open_store(store_copy)) == []
    run = tmp_path / "run"
    ok("train", store_copy, "--run-dir", run, "--steps", "2", "--valid-every", "2", "--device", "cpu")
    ok("train", tiny_store, "--run-dir", tmp_path / "run4", "--steps", "2", "--valid-every", "2", "--device", "cpu")
    a = torch.load(run / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "run4" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same data, the same training


def test_a_format_3_sample_swapped_or_flipped_is_caught(store_copy):
    as_format3(store_copy)
    train = Path(store_copy) / "train" / "targets" / "c"
    a, b = train / "5" / "0" / "0" / "0", train / "6" / "0" / "0" / "0"
    blob_a, blob_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(blob_b)
    b.write_bytes(blob_a)
    line = assert_one_line_error(invoke("store", "verify", store_copy), "train: unit 1", "sample 5")
    assert "targets does not match its checksum" in line


def test_upgrade_turns_format_3_into_4_with_the_same_targets_and_resumes_after_a_kill(
    tmp_path, store_copy, tiny_store, monkeypatch
):
    as_format3(store_copy)
    old_hash = open_store(store_copy).spec_hash
    from pipeline.store import store as store_module

    calls = {"n": 0}
    write = store_module.Store.write_unit

    def dies_after_three(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt  # a kill mid-conversion
        return write(self, *args, **kwargs)

    monkeypatch.setattr(store_module.Store, "write_unit", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        upgrade_store(store_copy)
    monkeypatch.undo()
    assert open_store(store_copy).meta.format_version == 3  # untouched until the swap
    converted = Path(store_copy).with_name(f".{Path(store_copy).name}.upgrading")
    assert open_store(converted).complete_units("train").sum() == 3
    done = upgrade_store(store_copy)
    assert "from format 3 to 4" in done and not converted.exists()
    store, reference = open_store(store_copy), open_store(tiny_store)
    assert store.meta.format_version == 4 and store.spec_hash == old_hash and store.meta.sealed
    assert store.meta.history[-1]["note"] == "upgraded from format 3"
    for split in store.splits:
        n = store.split_meta(split).n_samples
        assert np.array_equal(store.read_targets(split, 0, n), reference.read_targets(split, 0, n))
        assert np.array_equal(store.digests(split), reference.digests(split))
    assert verify_store(open_store(store_copy)) == []
    assert "already format 4" in ok("store", "upgrade", store_copy).output


def test_upgrade_finishes_a_swap_cut_short_and_refuses_lost_values(tmp_path, store_copy):
    as_format3(store_copy)
    upgrade_copy = tmp_path / "second.zarr"
    shutil.copytree(store_copy, upgrade_copy)
    upgrade_store(store_copy)  # a converted store to swap in
    path = Path(upgrade_copy)
    new, old = path.with_name(f".{path.name}.upgrading"), path.with_name(f".{path.name}.format3")
    shutil.copytree(store_copy, new)
    path.rename(old)  # killed between the two renames: the store's name is empty
    assert "conversion cut short" in upgrade_store(path)
    assert open_store(path).meta.format_version == 4 and not old.exists() and not new.exists()
    # a format-3 store whose targets are not 0 at a reference base: nothing of it would be kept
    third = tmp_path / "third.zarr"
    shutil.copytree(upgrade_copy, third)
    as_format3(third)
    g = zarr.open_group(str(third / "valid"), mode="r+")
    X = np.asarray(g["reference"][2])
    g["targets"][2, 1, int(X[:, 5].argmax()), 5] = 0.5
    with pytest.raises(UserError, match="valid' unit 0 sample 2: targets does not match its checksum"):
        upgrade_store(third)  # caught by its digest first
    row = np.asarray(g["complete"][0])
    row[1 + 2 * len(DIGESTED) + DIGESTED.index("targets")] = sample_digests(np.asarray(g["targets"][2:3]))[0]
    g["complete"][0] = row  # a writer that stored a value there (its digest matches)
    with pytest.raises(UserError, match="valid' unit 0 sample 2: targets are not 0 at a reference base"):
        upgrade_store(third)
    assert open_store(third).meta.format_version == 3


@pytest.mark.parametrize(("codec", "chunk_samples", "sharded"), list(itertools.product(CODECS, (1, 2), (False, True))))
def test_the_writer_writes_what_zarr_writes_byte_for_byte(tmp_path, codec, chunk_samples, sharded):
    """distill encodes the targets itself (to know each chunk's trailer without reading it back): the
    chunks are the ones zarr writes (a shard's may lie in another order in its file), and zarr reads them."""
    from pipeline.store.chunkio import TargetWriter

    N, F, R, L = 5, 10, 3, 12
    data = np.random.default_rng(4).standard_normal((N, F, R, L)).astype(np.float16)
    arrays = []
    for name in ("zarr", "ours"):
        arrays.append(zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="w").create_array(
            "t", shape=data.shape, chunks=(chunk_samples, 4, R, L), dtype="float16", fill_value=0,
            shards=(2 * chunk_samples, 12, R, L) if sharded else None,
            compressors=[*CODECS[codec](), zc.Crc32cCodec()], config={"write_empty_chunks": True},
        ))  # fmt: skip
    block = 2 * chunk_samples if sharded else chunk_samples
    writer = TargetWriter(arrays[1])
    for start in range(0, N, block):
        stop = min(start + block, N)
        arrays[0][start:stop] = data[start:stop]
        encoded = [task() for task in writer.encode_tasks(start, stop, data[start:stop])]
        for key, blob in writer.files(encoded):
            writer.put(key, blob)
        assert np.array_equal(writer.digests(start, stop, encoded), TargetChunks(arrays[0]).digests(start, stop))
    ours, theirs = tmp_path / "ours.zarr" / "t" / "c", tmp_path / "zarr.zarr" / "t" / "c"
    files = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
    if not sharded:
        for f in files:
            assert (ours / f).read_bytes() == (theirs / f).read_bytes(), f
    pieces = TargetChunks(arrays[0]).pieces(0, N)
    assert [bytes(c) for c in TargetChunks(arrays[0]).encoded(pieces)] == [
        bytes(c) for c in TargetChunks(arrays[1]).encoded(pieces)
    ]
    assert np.array_equal(np.asarray(arrays[1][:]), data)


def test_chunk_crc32c_is_the_value_zarr_writes():
    """The chunk checksum (the ``crc32c`` package) is zarr's ``crc32c`` codec's CRC-32C (``google_crc32c``)
    on every length, on bytes, memoryviews and numpy views alike: stores stay readable both ways."""
    import google_crc32c

    from pipeline.store.chunkio import crc32c

    rng = np.random.default_rng(0)
    for n in (0, 1, 3, 4, 7, 8, 63, 64, 1000, 4096 + 5, 1 << 20):
        data = rng.integers(0, 256, n + 9, dtype=np.uint8)
        body = data[5 : 5 + n]  # an unaligned view, as a chunk's bytes before its trailer
        assert crc32c(body) == crc32c(memoryview(body.tobytes())) == google_crc32c.value(body.tobytes())
