"""Stage 1: reproducible, resumable, shardable distillation into the store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from helpers import DEMO_KWARGS, TOY_MODELS, content_hash

from pipeline.core.commands import DistillOptions
from pipeline.core.encoding import one_hot
from pipeline.core.spec import load_spec
from pipeline.distill import distill, parse_shard
from pipeline.distill.sampling import WindowSampler
from pipeline.errors import UserError
from pipeline.ism import naive_ism
from pipeline.models import build_base
from pipeline.store import open_store, verify_store


def run(spec, path, **kwargs):
    kwargs.setdefault("allow_no_valid", True)  # some tests distil one split only
    return distill(spec, DistillOptions(store_path=str(path), device="cpu", **kwargs), progress=False)


def n_units_total(spec) -> int:
    u = spec.storage.unit_samples
    return sum(-(-s.samples // u) for s in spec.splits.values())


def test_two_runs_give_identical_stores(tiny_spec, tiny_store, tmp_path, assert_same_store):
    summary = run(tiny_spec, tmp_path / "again.zarr")
    assert summary.computed_samples == sum(s.samples for s in tiny_spec.splits.values())
    assert summary.computed_units == n_units_total(tiny_spec)
    assert summary.skipped_units == 0
    assert_same_store(tiny_store, str(tmp_path / "again.zarr"))
    created = {zarr.open_group(p, mode="r").attrs["created"] for p in (tiny_store, str(tmp_path / "again.zarr"))}
    assert all(isinstance(c, str) and c for c in created)


def test_store_content_is_the_base_models_ism(tiny_spec, tiny_store, genome):
    """The last (partial) unit of each split, recomputed from the spec alone: windows, encoding, ISM.

    (Exact equality of stores is tested between distill runs; here the reference is naive ISM.)
    """
    store = open_store(tiny_store)
    model = build_base("demo", seq_len=tiny_spec.seq_len, **tiny_spec.base.kwargs)
    for split in store.splits:
        sampler = WindowSampler(genome, tiny_spec, split)
        n_units = len(store.complete_units(split))
        start, stop = store.unit_range(split, n_units - 1)
        windows = [sampler(k) for k in range(start, stop)]
        X = np.stack([one_hot(w.seq) for w in windows])
        assert [str(c) for c in store.array(split, "chrom")[start:stop]] == [w.chrom for w in windows]
        assert np.asarray(store.array(split, "center")[start:stop]).tolist() == [w.center for w in windows]
        assert np.array_equal(np.asarray(store.array(split, "reference")[start:stop]), X)
        y, ref_pred = naive_ism(model, torch.from_numpy(X), target="logfold", batch_size=tiny_spec.ism_batch_size)
        np.testing.assert_allclose(np.asarray(store.array(split, "ref_pred")[start:stop]), ref_pred.numpy(), rtol=1e-5)
        stored = store.read(split, "targets", start, stop)  # format 4: expanded from the stored alternatives
        assert stored.dtype == np.float16
        # float16 storage; the engine may sum in another order than this naive recomputation
        np.testing.assert_allclose(stored.astype(np.float32), y.numpy(), rtol=2e-3, atol=2e-5)
        # exact zeros where the convention defines them: reference bases and N columns. (Elsewhere a zero
        # of naive ISM -- a position the model ignores -- may come out of the fast engine as float noise,
        # e.g. -1.3e-6 on AVX-512 CPUs, where its sliced convolutions round unlike the full one; allclose
        # above bounds it.)
        defined = np.broadcast_to((X == 1) | (X.sum(axis=1, keepdims=True) == 0), (len(X), 4, X.shape[-1]))
        assert (stored.transpose(1, 0, 2, 3)[:, defined] == 0).all()


def test_one_split_at_a_time_equals_all_at_once(tiny_spec, tiny_store, tmp_path, assert_same_store):
    path = tmp_path / "split.zarr"
    first = run(tiny_spec, path, splits=["valid"])
    assert first.computed_samples == tiny_spec.splits["valid"].samples
    store = open_store(path)
    assert store.complete_units("valid").all()
    assert not store.complete_units("train").any() and not store.complete_units("test").any()
    second = run(tiny_spec, path)
    assert second.skipped_units == len(store.complete_units("valid"))
    assert_same_store(tiny_store, str(path))


def test_shards_equal_all_at_once(tiny_spec, tiny_store, tmp_path, assert_same_store):
    path = tmp_path / "sharded.zarr"
    run(tiny_spec, path, shard="0/2")
    store = open_store(path)
    for split in store.splits:
        complete = store.complete_units(split)
        assert complete[0::2].all() and not complete[1::2].any()
    assert verify_store(store)  # half done: not yet a sound store
    run(tiny_spec, path, shard="1/2")
    assert verify_store(open_store(path)) == []
    assert_same_store(tiny_store, str(path))


def test_rerun_skips_complete_units(tiny_spec, store_copy):
    summary = run(tiny_spec, store_copy)
    assert summary.computed_samples == 0 and summary.computed_units == 0
    assert summary.skipped_units == n_units_total(tiny_spec)
    assert "0 samples" in summary.line()


def test_cleared_unit_is_recomputed(tiny_spec, tiny_store, store_copy, assert_same_store):
    g = zarr.open_group(store_copy, mode="r+")["train"]
    g["complete"][1] = 0
    g["targets"][4:8] = 7.0  # garbage, as after a crash in the middle of the unit
    g["center"][4:8] = 0
    summary = run(tiny_spec, store_copy)
    assert summary.computed_units == 1
    assert summary.computed_samples == tiny_spec.storage.unit_samples
    assert_same_store(tiny_store, store_copy)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"seq_len": 81}, "seq_len"),
        ({"seed": 5}, "seed"),
        ({"max_n": 2}, "max_n"),
        ({"target": "diff"}, "target"),
    ],
)
def test_changed_spec_is_refused_naming_the_key_and_overwrite_replaces(tiny_spec, store_copy, change, key):
    other = dataclasses.replace(tiny_spec, **change)
    with pytest.raises(UserError, match=key) as info:
        run(other, store_copy)
    assert "overwrite" in str(info.value)
    assert open_store(store_copy).spec_hash == content_hash(tiny_spec, open_store(store_copy))  # untouched
    run(other, store_copy, overwrite=True)
    store = open_store(store_copy)
    assert store.spec_hash == content_hash(other, store)
    assert verify_store(store) == []


def test_more_samples_grow_the_store_and_fewer_are_refused(tmp_path, write_spec, store_copy):
    fewer = load_spec(write_spec(tmp_path, "fewer.yaml", splits={"train": {"samples": 9}}))
    with pytest.raises(UserError, match=r"holds 10 samples of split 'train'.*--max-samples 9"):
        run(fewer, store_copy)
    more = load_spec(write_spec(tmp_path, "more.yaml", splits={"train": {"samples": 11}}))
    summary = run(more, store_copy)
    assert summary.per_split["train"] == {"units": 3, "computed": 1}  # the partial last unit, now 3 samples
    assert open_store(store_copy).split_meta("train").n_samples == 11


def test_operational_keys_do_not_block_resuming(tiny_spec, store_copy):
    other = dataclasses.replace(tiny_spec, ism_batch_size=3, store="elsewhere.zarr")
    assert run(other, store_copy).computed_samples == 0


def test_overwrite_refuses_a_folder_that_is_not_a_store(tiny_spec, tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(UserError):
        run(tiny_spec, folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_batch_size_changes_the_store_at_most_by_rounding(tiny_spec, tiny_store, tmp_path):
    """``ism_batch_size`` is not a content key: another batch size gives the same store up to float
    rounding (CPU kernels may sum in another order for another batch size)."""
    other = str(tmp_path / "b.zarr")
    run(tiny_spec, other, batch_size=97)
    a, b = open_store(tiny_store), open_store(other)
    for split in a.splits:
        for name in ("reference", "ref_pred", "chrom", "center"):
            assert np.array_equal(np.asarray(a.array(split, name)[:]), np.asarray(b.array(split, name)[:]))
        assert np.array_equal(a.complete_units(split), b.complete_units(split))  # digests: of rounded targets
        n = a.split_meta(split).n_samples
        ya = a.read(split, "targets", 0, n).astype(np.float32)
        yb = b.read(split, "targets", 0, n).astype(np.float32)
        np.testing.assert_allclose(yb, ya, rtol=2e-3, atol=1e-5)
    assert verify_store(b) == []


def test_bad_arguments(tiny_spec, tmp_path):
    with pytest.raises(UserError, match="holdout"):
        run(tiny_spec, tmp_path / "x.zarr", splits=["holdout"])
    with pytest.raises(UserError, match="nope"):
        run(tiny_spec, tmp_path / "y.zarr", engine="nope")
    assert parse_shard(None) == (0, 1)
    assert parse_shard("3/4") == (3, 4)
    for text in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(UserError):
            parse_shard(text)


def test_hand_placed_mutation_lands_at_f_b_j_in_the_store(tmp_path, spec_dict):
    """A base model that reads one (position, base) only: the store's targets are nonzero only there."""
    position, base, target = 21, 0, 2
    splits = {"train": {"samples": 6}, "valid": {"samples": 2}, "test": None}
    data = spec_dict(splits=splits, storage={"dtype": "float32"})
    data["base"] = {
        "model": f"{TOY_MODELS}:PositionDetector",
        "kwargs": {"n_targets": 3, "position": position, "base": base, "target": target},
    }
    path = tmp_path / "position.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    run(spec, tmp_path / "pos.zarr")
    store = open_store(tmp_path / "pos.zarr")
    assert store.n_targets == 3
    X = np.asarray(store.array("train", "reference")[:])
    y = store.read("train", "targets", 0, 6)  # [6, F, 4, L], expanded from the stored alternatives
    hits = 0
    for i in range(X.shape[0]):
        nonzero = {tuple(t) for t in np.argwhere(y[i])}
        if X[i, base, position] == 0 and X[i, :, position].sum() == 1:
            assert nonzero == {(target, base, position)}
            hits += 1
        elif X[i, base, position] == 1:
            assert nonzero == {(target, b, position) for b in range(4) if b != base}
        else:
            assert nonzero == set()
    assert hits > 0
    # the training data path serves the same layout
    from pipeline.train.data import StoreDataset
    from pipeline.train.feed import on_device

    ds = StoreDataset(str(tmp_path / "pos.zarr"), "train")
    X0, y0 = ds.__getitems__([0])
    assert X0.shape == (1, 4, spec.seq_len) and y0.shape == (1, 3, 3, spec.seq_len)  # the stored alternatives
    X0, y0 = on_device(X0, y0, torch.device("cpu"))  # expanded where training runs
    assert np.array_equal(y0[0].numpy(), y[0]) and np.array_equal(X0[0].numpy(), X[0].astype(np.float32))


def test_changed_base_weights_are_refused(tmp_path, spec_dict):
    """Same spec, but the weights file at the same path now holds other weights: refused (sha256)."""
    from pipeline.models import DemoBase

    weights = tmp_path / "demo.pth"
    torch.save(DemoBase(**DEMO_KWARGS).state_dict(), weights)
    data = spec_dict(base={"weights": str(weights)}, splits={"train": {"samples": 2}, "valid": None, "test": None})
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    run(spec, tmp_path / "w.zarr")
    store = open_store(tmp_path / "w.zarr")
    assert store.meta.base["weights_sha256"] is not None
    assert Path(store.meta.base["weights"]) == weights.resolve()
    assert run(spec, tmp_path / "w.zarr").computed_samples == 0
    torch.save(DemoBase(**DEMO_KWARGS, seed=1).state_dict(), weights)
    with pytest.raises(UserError, match="sha256"):
        run(spec, tmp_path / "w.zarr")
    assert run(spec, tmp_path / "w.zarr", overwrite=True).computed_samples == 2


def test_user_model_file_resolves_against_the_spec_folder(tmp_path, spec_dict, monkeypatch):
    """``base.model: toy.py:Net`` in a spec means the file next to the spec, wherever distill runs."""
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "toy.py").write_text(
        "from torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, seq_len=80):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv1d(4, 3, 5)\n"
        "        self.act = nn.ReLU()\n"
        "        self.flat = nn.Flatten()\n"
        "        self.fc = nn.Linear(3 * (seq_len - 4), 2)\n"
        "        self.out = nn.Sigmoid()\n\n"
        "    def forward(self, x):\n"
        "        return self.out(self.fc(self.flat(self.act(self.conv(x)))))\n"
    )
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(base={"model": "toy.py:Net", "kwargs": None})))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(spec_path)
    summary = distill(spec, DistillOptions(store_path=str(tmp_path / "user.zarr"), device="cpu"), progress=False)
    assert summary.engine == "fast"
    store = open_store(str(tmp_path / "user.zarr"))
    assert store.meta.base["model"] == f"{folder / 'toy.py'}:Net"
    assert store.n_targets == 2


def test_another_genome_at_the_same_path_is_refused(tmp_path, spec_dict, genome_path):
    """The store records the genome's fingerprint: a different genome at the spec's genome path is
    refused like a changed spec (naming what differs); a soft-masked copy of the same one is not."""
    from pipeline.core.genome import Genome
    from pipeline.errors import StoreMismatchError

    fasta = tmp_path / "g.fa"
    text = genome_path.read_text()
    fasta.write_text(text)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(spec_dict(genome=str(fasta))))
    spec = load_spec(path)
    run(spec, tmp_path / "g.zarr")
    assert open_store(tmp_path / "g.zarr").meta.genome_fingerprint == Genome(fasta).fingerprint()
    before = Genome(fasta).length("chr9")

    def replace_genome(new_text: str) -> None:
        fasta.write_text(new_text)
        fasta.with_name("g.fa.fai").unlink()

    soft = "\n".join(line if line.startswith(">") else line.lower() for line in text.splitlines()) + "\n"
    replace_genome(soft)  # soft-masked everywhere: the same genome
    assert run(spec, tmp_path / "g.zarr").computed_samples == 0
    records = text.split(">")[1:]
    shorter = [r if not r.startswith("chr9\n") else r[: len(r) - 70] + "\n" for r in records]
    replace_genome(">" + ">".join(shorter))
    after = Genome(fasta).length("chr9")
    with pytest.raises(
        StoreMismatchError, match=f"another genome .*contig 'chr9' is {before} bp in one and {after} bp"
    ):
        run(spec, tmp_path / "g.zarr")


def test_a_distill_cuts_the_splits_and_builds_each_sampler_once(tiny_spec, tmp_path, monkeypatch):
    """The split check, the samplers and the added-split check share one cut of the genome into segments
    and one sampler per split."""
    import pipeline.distill.check as check_module
    import pipeline.distill.run as run_module
    import pipeline.distill.sampling as sampling

    cuts, built = [], []
    segments, init = sampling.split_segments, sampling.WindowSampler.__init__

    def counted_segments(spec, genome):
        cuts.append(spec.name)
        return segments(spec, genome)

    def counted_init(self, genome, spec, split, *args, **kwargs):
        built.append(split)
        init(self, genome, spec, split, *args, **kwargs)

    for module in (check_module, run_module, sampling):
        monkeypatch.setattr(module, "split_segments", counted_segments, raising=False)
    monkeypatch.setattr(sampling.WindowSampler, "__init__", counted_init)
    run(tiny_spec, tmp_path / "s.zarr")
    assert cuts == [tiny_spec.name]
    assert sorted(built) == sorted(tiny_spec.splits)
