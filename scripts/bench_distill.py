"""Benchmark: distillation throughput and store size.

For the demo spec and a Beluga-sized spec (L = 2000, F = 2002, random weights, a handful of windows):
samples/s and target bytes/s written by ``distill``, with and without the overlap of window
preparation / device compute / compression and writing; then, on the targets each run produced,
compressed bytes per sample against raw float32 for every codec, with write and read speed.

    python scripts/bench_distill.py --json bench/distill.json
    python scripts/bench_distill.py --quick          # fewer windows
    python scripts/bench_distill.py --device cuda --specs beluga --beluga-windows 48 --unit-samples 8 \
        --ism-batch-size 4096 --modes overlap --no-codecs --json bench/distill_cuda.json     # on a GPU

Next to each Beluga-sized distill run, ``compute_only`` times the ISM engine alone on as many random
windows of the same shape (float16 effects copied to the host, as distill stores them): the gap to
distill's rate is what preparing and writing the windows cost.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import zarr
import zarr.codecs as zc

from pipeline.core.commands import DistillOptions
from pipeline.core.runtime import exact_float32
from pipeline.core.spec import spec_from_dict
from pipeline.demo import DEMO_SPEC
from pipeline.demo.synthetic import synth_genome
from pipeline.distill import distill
from pipeline.ism import fast_ism
from pipeline.models import build_base
from pipeline.store import open_store, store_info

CODECS = [
    ("none", None),
    ("blosc-lz4 shuffle", zc.BloscCodec(cname="lz4", clevel=5, shuffle=zc.BloscShuffle.shuffle)),
    ("blosc-lz4 bitshuffle", zc.BloscCodec(cname="lz4", clevel=5, shuffle=zc.BloscShuffle.bitshuffle)),
    ("blosc-zstd shuffle", zc.BloscCodec(cname="zstd", clevel=3, shuffle=zc.BloscShuffle.shuffle)),
    ("blosc-zstd bitshuffle", zc.BloscCodec(cname="zstd", clevel=3, shuffle=zc.BloscShuffle.bitshuffle)),
    ("zstd", zc.ZstdCodec(level=3)),
]


def run_distill(spec_dict: dict, work: Path, name: str, overlap: bool, device: str) -> dict:
    spec = spec_from_dict(spec_dict, base_dir=work)
    path = work / f"{name}-{'overlap' if overlap else 'sequential'}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    summary = distill(
        spec,
        DistillOptions(store_path=str(path), device=device, overlap=overlap, allow_no_valid=True),
        progress=False,
        notify=lambda message: None,
    )
    info = store_info(open_store(str(path)))["splits"]["train"]
    return {
        "spec": name,
        "overlap": overlap,
        "engine": summary.engine,
        "samples": summary.computed_samples,
        "seconds": round(summary.seconds, 3),
        "samples_per_s": round(summary.computed_samples / summary.seconds, 3),
        "stored_bytes_per_s": round(info["target_bytes_stored"] / summary.seconds),
        "raw_float32_bytes_per_s": round(
            info["raw_float32_bytes_per_sample"] * summary.computed_samples / summary.seconds
        ),
        "bytes_per_sample": round(info["bytes_per_sample"]),
        "raw_float32_bytes_per_sample": info["raw_float32_bytes_per_sample"],
        "store": str(path),
    }


def compute_only(spec_dict: dict, windows: int, batch: int, device: str) -> dict:
    """The fast engine alone on ``windows`` random windows of the spec's shape (after a warm-up)."""
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    )
    torch.manual_seed(0)
    model = build_base(spec_dict["base"]["model"], **spec_dict["base"].get("kwargs", {})).to(dev).eval()
    L = spec_dict["seq_len"]
    g = torch.Generator().manual_seed(3)
    X = torch.nn.functional.one_hot(torch.randint(0, 4, (windows, L), generator=g), 4).permute(0, 2, 1).float()
    unit = spec_dict["storage"]["unit_samples"]
    with exact_float32():
        fast_ism(model, X[:unit], batch_size=batch, device=dev, out_dtype=torch.float16)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        for i in range(0, windows, unit):  # one call per write unit, as distill makes them
            fast_ism(model, X[i : i + unit], batch_size=batch, device=dev, out_dtype=torch.float16)
        seconds = time.perf_counter() - start
    return {
        "spec": spec_dict["name"],
        "windows": windows,
        "unit_samples": unit,
        "ism_batch_size": batch,
        "seconds": round(seconds, 3),
        "windows_per_s": round(windows / seconds, 3),
        "seconds_per_window": round(seconds / windows, 4),
    }


def codec_table(store: str, name: str, work: Path) -> list[dict]:
    targets = np.asarray(open_store(store).array("train", "targets")[:])  # float16 [N, F, 4, L]
    n = targets.shape[0]
    raw32 = targets[0].size * 4
    rows = []
    for label, codec in CODECS:
        path = work / f"codec-{name}-{label.replace(' ', '-')}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        arr = zarr.create_array(
            str(path),
            shape=targets.shape,
            chunks=(1,) + targets.shape[1:],
            dtype="float16",
            compressors=codec,
            fill_value=0.0,
        )
        start = time.perf_counter()
        arr[:] = targets
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        back = zarr.open_array(str(path), mode="r")[:]
        read_s = time.perf_counter() - start
        assert np.array_equal(back, targets)
        stored = arr.nbytes_stored()
        rows.append(
            {
                "spec": name,
                "codec": label,
                "bytes_per_sample": round(stored / n),
                "raw_float32_bytes_per_sample": raw32,
                "ratio_vs_float32": round(raw32 * n / stored, 2),
                "write_MB_per_s": round(targets.nbytes / write_s / 1e6, 1),
                "read_MB_per_s": round(targets.nbytes / read_s / 1e6, 1),
            }
        )
        shutil.rmtree(path, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows")
    parser.add_argument("--tiny", action="store_true", help="Beluga's layout at L=400, F=64 (a dry run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--specs", default="demo,beluga", help="which specs: demo, beluga (comma-separated)")
    parser.add_argument("--beluga-windows", type=int, default=None, help="Beluga-sized windows (default 4, quick 2)")
    parser.add_argument("--unit-samples", type=int, default=2, help="windows per write unit of the Beluga spec")
    parser.add_argument("--ism-batch-size", type=int, default=512, help="the Beluga spec's ism_batch_size")
    parser.add_argument("--modes", default="overlap,sequential", help="overlap, sequential (comma-separated)")
    parser.add_argument("--no-codecs", action="store_true", help="skip the per-codec table")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--workdir", help="keep the stores here (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-distill-"))
    work.mkdir(parents=True, exist_ok=True)
    genome = work / "genome.fa"
    if not genome.exists():
        synth_genome(genome)
    demo = {
        **DEMO_SPEC,
        "genome": str(genome),
        "store": None,
        "splits": {"train": {"chroms": DEMO_SPEC["splits"]["train"]["chroms"], "samples": 128 if args.quick else 512}},
    }
    n_beluga = args.beluga_windows or (2 if args.quick else 4)
    beluga = {
        **DEMO_SPEC,
        "name": "beluga_random",
        "genome": str(genome),
        "store": None,
        "seq_len": 400 if args.tiny else 2000,
        "base": {
            "model": "beluga",
            "weights": "random",
            **({"kwargs": {"seq_len": 400, "n_targets": 64}} if args.tiny else {}),
        },
        "ism_batch_size": args.ism_batch_size,
        "storage": {**DEMO_SPEC["storage"], "unit_samples": args.unit_samples},
        "splits": {"train": {"chroms": DEMO_SPEC["splits"]["train"]["chroms"], "samples": n_beluga}},
    }
    specs = [(name, spec) for name, spec in (("demo", demo), ("beluga", beluga)) if name in args.specs.split(",")]
    modes = [mode == "overlap" for mode in args.modes.split(",")]
    runs, codecs, alone = [], [], []
    # warm-up (page cache, kernels, thread pools) so the first timed run is not penalised
    warm = {**demo, "name": "warmup", "splits": {"train": {**demo["splits"]["train"], "samples": 64}}}
    run_distill(warm, work, "warmup", True, args.device)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "distill": runs,
        "compute_only": alone,
        "codecs": codecs,
    }
    for name, spec in specs:
        if name == "beluga":  # one write unit of the same shapes first: the kernels' first use is not timed
            one_unit = {
                **spec,
                "name": "beluga_warmup",
                "splits": {"train": {**spec["splits"]["train"], "samples": args.unit_samples}},
            }
            run_distill(one_unit, work, "beluga-warmup", True, args.device)
        for overlap in modes:
            runs.append(run_distill(spec, work, name, overlap, args.device))
            print(
                f"{name:7} overlap={str(overlap):5} {runs[-1]['samples_per_s']:9.3f} samples/s "
                f"{runs[-1]['stored_bytes_per_s'] / 1e6:8.2f} MB/s stored "
                f"({runs[-1]['raw_float32_bytes_per_s'] / 1e6:.1f} MB/s as raw float32)",
                flush=True,
            )
        if name == "beluga":
            alone.append(compute_only(spec, n_beluga, args.ism_batch_size, args.device))
            print(
                f"{name:7} ISM alone: {alone[-1]['windows_per_s']:.3f} windows/s "
                f"({alone[-1]['seconds_per_window']:.3f} s per window)",
                flush=True,
            )
        if not args.no_codecs:
            codecs += codec_table(runs[-1]["store"], name, work)
    if codecs:
        print()
        print(
            f"{'spec':7} {'codec':22} {'bytes/sample':>13} {'raw float32':>12} {'ratio':>7} {'write MB/s':>11} "
            f"{'read MB/s':>10}"
        )
    for r in codecs:
        print(
            f"{r['spec']:7} {r['codec']:22} {r['bytes_per_sample']:13d} {r['raw_float32_bytes_per_sample']:12d} "
            f"{r['ratio_vs_float32']:6.2f}x {r['write_MB_per_s']:11.1f} {r['read_MB_per_s']:10.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
