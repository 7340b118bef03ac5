"""Collect the benchmark results (bench/*.json) into bench/REPORT.md.

Run by `make bench` after `bench-ism`, `bench-distill`, `bench-loader`, `bench-demo`, `bench-scale`,
`bench-checksums`, `bench-vcf`, `bench-catalogue`, `bench-storage`, `bench-multiplexer`,
`bench-curve` and `bench-identity`; a missing result is named in the report rather than invented.
`--section NAME` refreshes only that section of an existing REPORT.md (from its JSON), keeping the
others as they are: for one benchmark run on its own.

``--gpu-only`` (run by ``scripts/bench_gpu.sh``) rewrites only the "On a GPU" section from the
``*_cuda.json`` files and keeps the rest of the report as it is (the CPU results are not on a GPU
machine); ``--bench DIR`` reads and writes another folder than ``bench/`` (a dry run's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch
from benchlib import cpu_model

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str) -> dict | None:
    path = BENCH / name
    return json.loads(path.read_text()) if path.exists() else None


def _memory_gb() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1e6:.0f} GB"
    except OSError:
        pass
    return "unknown"


def _mb(x: float) -> str:
    return f"{x / 1e6:.2f} MB" if x >= 1e6 else f"{x / 1e3:.1f} kB"


def machine_section() -> list[str]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [
        "## Machine",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; memory {_memory_gb()}",
        f"- GPU: {gpu}",
        f"- {platform.platform()}, Python {platform.python_version()}, torch {torch.__version__}",
        "",
    ]


def ism_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## ISM engines", "", "not run (`make bench-ism`)", ""]
    lines = [
        "## ISM engines (`scripts/bench_ism.py`)",
        "",
        "| model | device | L | F | fast variants/s | naive variants/s | speedup | max err alt | max err log-fold |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["results"]:
        lines.append(
            f"| {x['model']} | {x['device']} | {x['seq_len']} | {x['n_targets']} | {x['fast_variants_per_s']} | "
            f"{x['naive_variants_per_s']} | **{x['speedup']}x** | {x['max_abs_error_alt']:.2e} | "
            f"{x['max_abs_error_logfold']:.2e} |"
        )
    return lines + ["", f"(run {r['date']})", ""]


def distill_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Distillation", "", "not run (`make bench-distill`)", ""]
    lines = [
        "## Distillation (`scripts/bench_distill.py`)",
        "",
        "| spec | overlap | engine | samples/s | stored MB/s | as raw float32 MB/s | bytes/sample "
        "| raw float32 bytes/sample |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["distill"]:
        lines.append(
            f"| {x['spec']} | {x['overlap']} | {x['engine']} | {x['samples_per_s']} | "
            f"{x['stored_bytes_per_s'] / 1e6:.2f} | {x['raw_float32_bytes_per_s'] / 1e6:.2f} | "
            f"{_mb(x['bytes_per_sample'])} | {_mb(x['raw_float32_bytes_per_sample'])} |"
        )
    if r["codecs"]:
        lines += [
            "",
            "| spec | codec | bytes/sample | vs raw float32 | write MB/s | read MB/s |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
    for x in r["codecs"]:
        lines.append(
            f"| {x['spec']} | {x['codec']} | {_mb(x['bytes_per_sample'])} | {x['ratio_vs_float32']}x | "
            f"{x['write_MB_per_s']} | {x['read_MB_per_s']} |"
        )
    return lines + ["", f"(run {r['date']})", ""]


LOADER_GOALS = {
    "one_worker_share_of_raw_decode": ("one worker's decoded GB/s / raw one-core decode", ">= 0.8"),
    "loader_time_over_plain_zarr_read": ("loader (in process, checks included) / plain zarr read", "<= 1.15"),
    "one_worker_time_over_plain_zarr_read": ("loader (one worker) / plain zarr read", "<= 1.15"),
    "checksum_share_of_loader_read": ("checksums / a loader read", "<= 0.05"),
}
"""The loader's must-hold ratios (issue 23): label and goal."""


def loader_section(r: dict | None, ism: dict | None = None) -> list[str]:
    """The loader section (``loader.json``: random targets), with the passes and goals of the run on
    windows of fast ISM (``loader_ism.json``) when there is one."""
    if r is None:
        return ["## Training loader", "", "not run (`make bench-loader`)", ""]
    if "passes" not in r:
        return _loader_section_v1(r)
    st, p, must = r["store"], r["passes"], r["must_hold"]
    load = r.get("load_average_1_5_15_min", {})
    note = _load_note([load["start"][0], load["end"][0]] if load else None)
    lines = [
        "## Training loader (`scripts/bench_loader.py`)",
        "",
        f"Beluga-shaped store (L = 2000, F = 2002, {st['targets']} float16 targets, {st['codec']}, one sample per "
        f"chunk, format {st['format_version']}): {_mb(st['bytes_per_sample'])} stored and "
        f"{_mb(st['decoded_bytes_per_sample'])} decoded per sample, **{st['decoded_share_of_format3']}** of format "
        f"3's F·4·L·2 = {_mb(st['format3_decoded_bytes_per_sample'])} (goal <= 0.75). {st['samples']} samples, "
        f"passes back to back in rotating order, {p['repeats']} rounds, batches of {p['batch']}; medians (wall "
        f"clock, and CPU seconds of this process and its loader workers), on {_cpu(r)}.{note}",
        "",
        "| pass | wall s | CPU s | decoded GB/s | decoded GB per CPU s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, wall in p["median_wall_seconds"].items():
        lines.append(
            f"| {name} | {wall} | {p['median_cpu_seconds'][name]} | {p['decoded_GB_per_s'][name]} | "
            f"{p['decoded_GB_per_cpu_s'][name]} |"
        )
    lines += [
        "",
        "| must hold | goal | wall clock (median, range) | CPU time (median, range) |",
        "| --- | --- | --- | --- |",
    ]
    for key, (label, goal) in LOADER_GOALS.items():
        if key not in must["wall"]:
            continue
        w, c = must["wall"][key], must["cpu"][key]
        lines.append(
            f"| {label} | {goal} | **{w['median']}** ({w['min']}-{w['max']}) | "
            f"**{c['median']}** ({c['min']}-{c['max']}) |"
        )
    lines += _floor_lines(r)
    if ism is not None and "passes" in ism:
        lines += ["", *_loader_ism_lines(ism)]
    lines += ["", "| loader workers | samples/s fed | decoded GB/s |", "| --- | --- | --- |"]
    for x in r["loader"]:
        lines.append(f"| {x['workers']} | {x['samples_per_s']} | {x['decoded_GB_per_s']} |")
    lines += ["", "| windows | layout | codec | stored MB | one-core decode GB/s |", "| --- | --- | --- | --- | --- |"]
    for x in r["layouts"]:
        lines.append(
            f"| {x['windows']} | {x['layout']} | {x['codec']} | {x['stored_MB']} | {x['decode_GB_per_s_one_core']} |"
        )
    device = r["feed"].get("device", "cpu") if r["feed"] else "cpu"
    lines += ["", "| training step | seconds |", "| --- | --- |"]
    for name, seconds in r["step_seconds"].items():
        lines.append(f"| {name} on {device} | {seconds:.3f} |")
    if r["feed"]:
        f = r["feed"]
        lines += [
            "",
            f"Fed against consumed (measured, {f['device']}): the BelugaMultiplexer trains at "
            f"{f['model_samples_per_s']} samples/s; one loader worker feeds {f['loader_samples_per_s_per_worker']} "
            f"samples/s, so {f['workers_needed']} worker(s) keep it fed.",
        ]
        if f["device"] != "cuda":
            lines += [
                "",
                'No GPU in this run: what one GPU consumes, and the feed measured against it, are in "On a GPU" '
                "(each table with the date of its run).",
            ]
    return lines + ["", f"(run {r['date']})", ""]


def _cpu(r: dict) -> str:
    """The run's CPU in words (``machine`` of a benchmark's JSON)."""
    m = r.get("machine", {})
    return f"{m.get('cpu', 'an unnamed CPU')} ({m.get('cores', '?')} cores)"


def _floor_lines(r: dict) -> list[str]:
    """The checks' floor on the run's CPU (``checksum_floor``: runs from 2026-12-07 on)."""
    f = r.get("checksum_floor")
    if not f:
        return []
    return [
        "",
        f"The checks' floor on this CPU: the CRC-32C runs at {f['crc32c_in_cache_GB_per_s']} GB/s on one core on "
        f"bytes in cache and {f['crc32c_from_memory_GB_per_s']} GB/s on the stored chunks, which come from memory "
        f"(plain memory reads: {f['memory_read_GB_per_s']} GB/s). Were every one of the {f['checked_MB']} MB checked "
        f"already in cache, the checks would still be **{f['floor_share_of_loader_read']}** of a read (CPU time).",
    ]


def _loader_ism_lines(r: dict) -> list[str]:
    """The same passes on a store of fast-ISM windows (``--targets ism``): compressible like real targets."""
    st, p, must = r["store"], r["passes"], r["must_hold"]
    load = r.get("load_average_1_5_15_min", {})
    note = _load_note([load["start"][0], load["end"][0]] if load else None)
    lines = [
        f"The same on a store of Beluga fast-ISM windows (random weights; {st['samples']} samples drawn from the "
        f"windows computed, `--targets ism`): {_mb(st['bytes_per_sample'])} stored per sample, "
        f"{_mb(st['decoded_bytes_per_sample'])} decoded (run {r['date']}).{note}",
        "",
        "| pass | wall s | CPU s | decoded GB per CPU s |",
        "| --- | --- | --- | --- |",
    ]
    for name, wall in p["median_wall_seconds"].items():
        lines.append(f"| {name} | {wall} | {p['median_cpu_seconds'][name]} | {p['decoded_GB_per_cpu_s'][name]} |")
    lines += ["", "| must hold (fast-ISM windows) | goal | wall clock | CPU time |", "| --- | --- | --- | --- |"]
    for key, (label, goal) in LOADER_GOALS.items():
        w, c = must["wall"][key], must["cpu"][key]
        lines.append(f"| {label} | {goal} | **{w['median']}** ({w['min']}-{w['max']}) | **{c['median']}** "
                     f"({c['min']}-{c['max']}) |")  # fmt: skip
    return lines + _floor_lines(r)


def _loader_section_v1(r: dict) -> list[str]:
    """The loader section of a run before format 4 (``raw_decode`` at the top level: the kept CUDA run)."""
    lines = [
        "## Training loader (`scripts/bench_loader.py`)",
        "",
        f"Beluga-sized store (L = 2000, F = 2002, random float16 targets): "
        f"{_mb(r['store']['bytes_per_sample'])} per sample stored. Raw decode of "
        f"{r['raw_decode']['codec']} on one core: {r['raw_decode']['decoded_GB_per_s_one_core']} GB/s.",
        "",
        "| workers | samples/s | decoded GB/s |",
        "| --- | --- | --- |",
    ]
    for x in r["loader"]:
        lines.append(f"| {x['workers']} | {x['samples_per_s']} | {x['decoded_GB_per_s']} |")
    lines += ["", "| training step | seconds |", "| --- | --- |"]
    for name, seconds in r["step_seconds"].items():
        lines.append(f"| {name} on {r['feed'].get('device', 'cpu') if r['feed'] else 'cpu'} | {seconds:.3f} |")
    if r["feed"]:
        f = r["feed"]
        lines += [
            "",
            f"Measured: the {f['device']} trains the BelugaMultiplexer at {f['model_samples_per_s']} samples/s; "
            f"one loader worker delivers {f['loader_samples_per_s_per_worker']} samples/s, so "
            f"{f['workers_needed']} worker(s) keep it fed.",
        ]
        if f["device"] != "cuda":
            per_worker = f["loader_samples_per_s_per_worker"]
            assumed = 150.0
            lines += [
                "",
                f"Estimate for a GPU (not a measurement): a BelugaMultiplexer training step costs about "
                f"2.4 TFLOP per sample (3x the 0.8 TFLOP forward); at an assumed {assumed:.0f} samples/s (about "
                f"360 TFLOP/s sustained in bf16 on an H100) a GPU needs {assumed / per_worker:.0f} loader workers "
                f"at the per-worker rate above ({per_worker} samples/s on one core of this machine).",
            ]
    return lines + ["", f"(run {r['date']})", ""]


def demo_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Demo", "", "not run (`make bench-demo`)", ""]
    lines = [
        "## Demo (`multiplexer demo`)",
        "",
        f"- held-out mean weighted Pearson: **{r['weighted_pearson_mean']}** (unweighted {r['pearson_mean']})",
        f"- multiplexer vs naive ISM, time per window on the same CPU: **{r['speedup_vs_naive_ism']}x**",
        *(
            [f"- multiplexer vs exact fast ISM: **{r['speedup_vs_fast_ism']}x**"]
            if r.get("speedup_vs_fast_ism")
            else []
        ),
        f"- whole demo: {r['seconds']} s",
    ]
    report = Path(r["report"])
    if report.exists():
        rep = json.loads(report.read_text())
        sec = rep["seconds_per_sequence"]
        lines.append(
            f"- seconds per window: multiplexer {sec['multiplexer']:.5f}, naive ISM {sec['naive_ism']:.5f}, "
            f"fast ISM {sec['fast_ism']:.5f}"
            if sec.get("fast_ism")
            else f"- seconds per window: multiplexer {sec['multiplexer']:.5f}, naive ISM {sec['naive_ism']:.5f}"
        )
    return lines + [""]


def _cell(x: dict | None, key: str, fmt: str = "{:.2f}") -> str:
    """One figure of a measurement: "failed" when it failed, "n/a" when it never ran."""
    if isinstance(x, dict) and "error" in x:
        return "failed"
    if not isinstance(x, dict) or x.get(key) is None:
        return "n/a"
    return fmt.format(x[key])


def _rss(x: dict | None) -> str:
    cell = _cell(x, "peak_rss_kb", "{:.0f}")
    return f"{int(cell) / 1024:.0f} MB" if cell.isdigit() else cell


def scale_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Scale in write units", "", "not run (`make bench-scale`)", ""]
    s, m = r["settings"], r.get("machine", {})
    lines = [
        "## Scale in write units (`scripts/bench_scale.py`)",
        "",
        f"The demo base model at L = {s['seq_len']}, {s['unit_samples']} sample per write unit, the synthetic genome "
        f"(divisor {s['genome_divisor']}), units split {s['shares']['train']:.0%} / {s['shares']['valid']:.0%} / "
        f"{s['shares']['test']:.0%} among train / valid / test; {s['device']}. Distill s/unit is distill's own "
        "compute/write loop over the units (process start-up excluded). Store info and verify: the whole command / "
        "the library call alone in a fresh process. Train start-up: process start to the end of the first optimizer "
        "step (imports included); its RSS also covers a 1-sample validation and the checkpoints. Evaluate start-up: "
        f"`open_store`, `require_complete('test')` and the first batch of {s['evaluate_batch']}, imports excluded. "
        "RSS: each process's own peak.",
        "",
        f"Measured on {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')} ({m.get('threads')} threads).",
        "",
        "| units | files | distill s/unit | distill peak RSS | store info s (CLI / library) "
        "| store verify s (CLI / library) | verify peak RSS | train start-up s | train peak RSS "
        "| evaluate start-up s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["sizes"]:
        d, info, verify = x.get("distill"), x.get("store_info") or {}, x.get("store_verify") or {}
        train, ev = x.get("train_startup"), x.get("evaluate_startup")
        files = f"{x['files']:,}" if "files" in x else "n/a"
        lines.append(
            f"| {x['units']:,} | {files} | {_cell(d, 's_per_unit', '{:.4f}')} | {_rss(d)} | "
            f"{_cell(info.get('cli'), 'wall_s')} / {_cell(info.get('library'), 'library_s', '{:.3f}')} | "
            f"{_cell(verify.get('cli'), 'wall_s')} / {_cell(verify.get('library'), 'library_s', '{:.3f}')} | "
            f"{_rss(verify.get('cli'))} | {_cell(train, 'to_first_step_s')} | {_rss(train)} | "
            f"{_cell(ev, 'startup_s', '{:.3f}')} |"
        )
    failures = [
        f"- {x['units']:,} units, {name}: {m['error']}"
        for x in r["sizes"]
        for name, m in _measurements(x)
        if isinstance(m, dict) and "error" in m
    ]
    if failures:
        lines += ["", "Failed:", *failures]
    return lines + ["", f"(run {r['date']})", ""]


def _measurements(x: dict) -> list[tuple[str, dict | None]]:
    out: list[tuple[str, dict | None]] = [("distill", x.get("distill"))]
    for key in ("store_info", "store_verify"):
        out += [(f"{key} ({how})", m) for how, m in (x.get(key) or {}).items()]
    return out + [("train start-up", x.get("train_startup")), ("evaluate start-up", x.get("evaluate_startup"))]


def checksums_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Checksums", "", "not run (`make bench-checksums`)", ""]
    s, m, on, off, pct = r["settings"], r["machine"], r["checksums_on"], r["checksums_off"], r["cost_pct"]
    lines = [
        "## Checksums (`scripts/bench_checksums.py`)",
        "",
        f"Two stores of {s['samples']} samples (L = {s['seq_len']}, F = {s['n_targets']}, {s['dtype']} targets, "
        f"{s['codec']}, {s['chunk_samples']} sample per chunk, {s['unit_samples']} per write unit; random targets, "
        "0 at reference bases and N columns), alike but for `storage.checksums`: on (the default), a CRC-32C at the "
        "end of every chunk and each sample's digest per array in its unit's completion marker (format 4: for "
        "`targets` the CRC-32C of its chunks' trailers, for the others the CRC-32 of the decoded bytes); "
        "off, neither (the fsync before a unit's marker stays in both). Write: `Store.write_unit`, median unit. Read: "
        f"`StoreDataset.__getitems__` on contiguous batches of {s['read_batch']}, one process, one decode thread, "
        "median batch. Verify: `verify_store(workers=1)`, median run. Times on the wall clock and as the process's CPU "
        "time. Cost: with / without - 1; for times, the median (and quartiles) of that ratio over the pairs timed back "
        f"to back ({s['pairs']['write']} units, {s['pairs']['read']} batches, {s['pairs']['verify']} verify runs).",
        "",
        f"Measured on {m.get('cpu')}, {m.get('cores')} cores, zarr {m.get('zarr')}, "
        + (f"crc32c {m['crc32c']} (the chunks' CRC-32C), " if m.get("crc32c") else "")
        + f"google-crc32c {m.get('google_crc32c')}.",
        "",
        "| measure | checksums on | checksums off | cost | cost, quartiles over the pairs |",
        "| --- | --- | --- | --- | --- |",
    ]
    spread = r["cost_pct_quartiles"]
    for key in ("write", "read", "verify"):
        for clock, k in (("s/sample", f"{key}_s_per_sample"), ("CPU s/sample", f"{key}_cpu_s_per_sample")):
            lines.append(
                f"| {key} {clock} | {on[k]:.4f} | {off[k]:.4f} | **{pct[k]:+.1f} %** | "
                f"{spread[k][0]:+.1f} .. {spread[k][2]:+.1f} % |"
            )
        if key == "read":
            lines += [
                f"| read samples/s | {on['read_samples_per_s']:.2f} | {off['read_samples_per_s']:.2f} | | |",
                f"| read decoded GB/s | {on['read_decoded_GB_per_s']:.3f} | {off['read_decoded_GB_per_s']:.3f} | | |",
            ]
    for key in ("targets", "store"):
        k = f"{key}_bytes_per_sample"
        lines.append(
            f"| {key} bytes/sample | {_mb(on[k])} | {_mb(off[k])} | "
            f"{pct[k]:+.5f} % ({r['extra_bytes_per_sample'][key]:+.1f} B) | |"
        )
    h = r.get("hash_speed")
    if h:
        lines += [
            "",
            f"The hashes alone on one core: CRC-32C (chunks) {h['crc32c_chunk_GB_per_s']} GB/s"
            + (f" (google-crc32c: {h['google_crc32c_GB_per_s']} GB/s)" if "google_crc32c_GB_per_s" in h else "")
            + f", zlib CRC-32 (samples) {h['zlib_crc32_sample_GB_per_s']} GB/s.",
        ]
    return lines + ["", f"(run {r['date']})", ""]


VCF_MODES = {
    "shared": "shared windows (default, `--group-span L//4`)",
    "shared_span_L": "shared windows, `--group-span L`",
    "centered": "`--centered`",
    "strand_both": "`--strand both` (shared windows)",
    "exact": "`--exact` (base model, ref/alt centred)",
}


def vcf_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Variant scoring", "", "not run (`make bench-vcf`)", ""]
    m, start = r["machine"], r["startup"]
    lines = [
        "## Variant scoring (`scripts/bench_vcf.py`)",
        "",
        f"`multiplexer score-vcf` on a VCF of {r['n_variants']:,} SNVs drawn uniformly over the demo genome "
        f"({r['genome_bp']:,} bp; sorted), with the demo's trained multiplexer (L = 200, F = 16) on the CPU "
        f"({m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}), `--batch-size 32`, output `.tsv.gz`, "
        "one subprocess per mode. Variants/s = variants / (wall - start-up), start-up being the wall time of the "
        f"command on a one-record VCF ({start['wall_s']:.2f} s). Peak RSS: the child's `ru_maxrss`.",
        "",
        "| mode | wall s | variants/s | peak RSS | summary |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in VCF_MODES.items():
        x = r["modes"].get(key)
        if x is None:
            continue
        if x["rc"]:
            lines.append(f"| {label} | failed: {x.get('error')} | | | |")
            continue
        summary = x["line"].split("; wrote")[0]
        lines.append(
            f"| {label} | {x['wall_s']:.1f} | **{x['variants_per_s']:,.0f}** | {x['peak_rss_kb'] / 1024:.0f} MB | "
            f"{summary} |"
        )
    held = r.get("held_out", {})
    lines += [
        "",
        f"What sharing windows costs, on the held-out chromosome ({held.get('chrom')}, the demo's test split): "
        "Pearson correlation between two modes' scores over every (variant, target), and the mean over targets of "
        "the per-target correlation.",
        "",
        "| modes | variants | Pearson, all | Pearson, mean per target |",
        "| --- | --- | --- | --- |",
    ]
    for key, x in held.items():
        if key == "chrom" or not isinstance(x, dict):
            continue
        a, b = key.split("_vs_")
        lines.append(
            f"| {a} vs {b} | {x['n_variants']} | {x.get('pearson_all')} | {x.get('pearson_mean_per_target')} |"
        )
    mem = r.get("memory", {})
    if mem:
        lines += [
            "",
            "Flat memory: shared windows, `.tsv.gz` output.",
            "",
            "| records | wall s | peak RSS |",
            "| --- | --- | --- |",
        ]
        for size, x in mem.items():
            rss = f"{x['peak_rss_kb'] / 1024:.0f} MB" if not x["rc"] else f"failed: {x.get('error')}"
            lines.append(f"| {int(size):,} | {x['wall_s']:.1f} | {rss} |")
        if "memory_ratio_largest_to_smallest" in r:
            lines.append(f"\nPeak RSS ratio, largest to smallest: **{r['memory_ratio_largest_to_smallest']}**.")
    return lines + ["", f"(run {r['when']})", ""]


def catalogue_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## SNV catalogue", "", "not run (`make bench-catalogue`)", ""]
    m, d, st, lk, b = r["machine"], r["demo"], r["stride"], r["lookup"], r["beluga_shaped"]
    bpp = d["bytes_per_position"]
    lines = [
        "## SNV catalogue (`scripts/bench_catalogue.py`)",
        "",
        f"On the CPU ({m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')})"
        + (
            f"; 1-minute load average {r['load_average_1min']['start']} at the start, "
            f"{r['load_average_1min'].get('end', '?')} at the end"
            if "load_average_1min" in r
            else ""
        )
        + "."
        + (f" {r['note']}" if r.get("note") else ""),
        "",
        f"- **Demo, whole genome** (`catalogue --all`, L = 200, F = 16, stride {d['stride']}): {d['positions']:,} "
        f"positions ({d['n_positions_at_N']:,} N) in {d['seconds']} s, **{d['positions_per_s']:,.0f} positions/s**, "
        f"{d['windows']:,} windows; stored bytes per position: effects {bpp['effects']}, ref {bpp['ref']}, max_abs "
        f"{bpp['max_abs']}, top_target {bpp['top_target']}.",
        f"- **BelugaMultiplexer-shaped** (L = 2000, F = 2002, random weights) on {b['region']}, stride {b['stride']}: "
        f"{b['positions']:,} positions, {b['windows']} windows in {b['seconds']} s: "
        f"**{b['positions_per_s']} positions/s** "
        f"({b['seconds_per_window']} s per window). Bytes per position (effects of 1 / 20 / 2,002 targets plus ref and "
        "the summaries; random weights compress worse than trained ones: upper bounds): "
        + " / ".join(f"{v:,}" for v in b["bytes_per_position_by_targets"].values())
        + ".",
        f"- **Lookup** of {lk['queries']:,} SNVs at random positions of the demo catalogue, one at a time in random "
        f"order (a fresh reader: most queries read and decode their inner chunk, {lk.get('block_positions', '?')} "
        f"positions of a {lk['unit_positions']:,}-position shard, from disk): "
        f"p50 **{lk['random_order_ms_p50']} ms**, p99 **{lk['random_order_ms_p99']} ms**"
        + (
            f" with every read checked (marker, shard present, CRC-32C, block digest); without the checks "
            f"{lk['unchecked_random_order_ms_p50']} / {lk['unchecked_random_order_ms_p99']} ms (the checks cost "
            f"{lk['check_cost_p50_percent']} % at p50, {lk['check_cost_p99_percent']} % at p99)"
            if "unchecked_random_order_ms_p50" in lk
            else ""
        )
        + f"; `lookup --vcf` of the same SNVs sorted: {lk['sorted_vcf_lookup_variants_per_s']:,.0f} variants/s.",
        "",
        f"**The stride** (held-out {st['region']}, {st['variants']:,} SNVs): tile scores against variant-centred "
        "multiplexer scores (`score-vcf --centered`), Pearson over every (variant, target).",
        "",
        "| stride | windows per position | build s | Pearson vs centred | mean per target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stride, x in st["strides"].items():
        c = x["vs_centred"]
        lines.append(
            f"| {stride} | {x['windows_per_position']} | {x['seconds']} | {c.get('pearson_all')} | "
            f"{c.get('pearson_mean_per_target')} |"
        )
    e = r.get("hg38_h100_estimate")
    if e:
        storage = " / ".join(f"{v} TB" for v in e["storage_TB_by_targets"].values())
        lines += [
            "",
            f"**hg38 x Beluga on one {e['device']} — an estimate, not a run**: {e['positions']:,} positions / stride "
            f"{e['stride']} = {e['windows']:,} windows x {e['multiplexer_ms_per_window_bf16_b8']} ms "
            "(BelugaMultiplexer, "
            f"bf16, batch 8, measured) = **{e['catalogue_hours']} h** of forward passes; exact fast ISM of the same "
            f"3 SNVs per position at {e['exact_fast_ism_variants_per_s']:,} variants/s (measured) = "
            f"**{e['exact_fast_ism_hours']:,} h** ({e['speedup']}x). Storage for 1 / 20 / 2,002 targets: {storage}.",
        ]
    return lines + ["", f"(run {r['when']})", ""]


def storage_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Lighter storage", "", "not run (`make bench-storage`)", ""]
    m, b = r["machine"], r["beluga_shaped"]
    lines = [
        "## Lighter storage (`scripts/bench_storage.py`)",
        "",
        f"The demo spec distilled with each `storage.quantize` on the CPU ({m.get('cpu')}, {m.get('cores')} cores), "
        "the "
        f"demo multiplexer trained on each store ({r['steps']} steps, same seed), and evaluated on the held-out test "
        "split of the lossless store (the exact targets). Goal: at most 25 % of raw float16 bytes with at most 0.01 "
        "loss of held-out weighted Pearson.",
        "",
        "| quantize | bytes per window | share of raw float16 | held-out weighted Pearson | loss vs lossless |",
        "| --- | --- | --- | --- | --- |",
    ]
    for x in r["demo"]:
        lines.append(
            f"| {x['quantize']} | {x['bytes_per_window']:,.0f} | {100 * x['share_of_raw']:.1f} % | "
            f"{x['held_out_weighted_pearson']:.4f} | {x.get('pearson_loss_vs_lossless', 0):+.4f} |"
        )
    raw = b["raw_float16_bytes_per_window"]
    shares = ", ".join(f"{q} {v / 1e6:.2f} MB ({100 * v / raw:.1f} %)" for q, v in b["bytes_per_window"].items())
    lines += [
        "",
        f"Beluga-shaped synthetic targets (F = 2002, L = 2000, {b['windows']} windows of Laplace noise with exact "
        f"zeros at reference bases; raw float16 {raw / 1e6:.1f} MB per window): {shares}.",
    ]
    return lines + ["", f"(run {r['when']})", ""]


def _multiplexer_demo_lines(r: dict) -> list[str]:
    m = r["machine"]
    lines = [
        "Each architecture trained on the demo store with the demo's settings (same steps, batch and seed; the "
        "learning rate and loss the row names), evaluated on the held-out test split by `evaluate`, which times "
        f"the multiplexer, rewritten for inference as every command runs it (one batch of {r['timing_sequences']} "
        "windows), and exact fast and naive ISM of the demo base model on the same windows, "
        f"on {r['device']} ({m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}).",
        "",
        "| architecture | parameters | held-out weighted Pearson | ms/window | fast ISM ms | naive ISM ms "
        "| vs fast ISM | vs naive ISM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, x in r["demo"].items():
        fast = x["speedup_vs_fast_ism"]
        lines.append(
            f"| {name} | {x['parameters']:,} | {x['held_out_weighted_pearson']:.4f} | {x['ms_per_window']} | "
            f"{x['fast_ism_ms_per_window']} | {x['naive_ism_ms_per_window']} | "
            f"**{fast:.1f}x** | {x['speedup_vs_naive_ism']:.1f}x |"
            if fast is not None
            else f"| {name} | {x['parameters']:,} | {x['held_out_weighted_pearson']:.4f} | {x['ms_per_window']} | - | "
            f"{x['naive_ism_ms_per_window']} | - | {x['speedup_vs_naive_ism']:.1f}x |"
        )
    note = "`conv w32` is the registered `conv_light` (the same constructor arguments and parameters)."
    return lines + ["", note, ""]


def _multiplexer_rewrite_lines(w: dict) -> list[str]:
    lines = [
        f"The inference rewrite (`pipeline.models.optimize_for_inference`: batch norms folded, 1x1 convolutions as "
        f"matrix products, ReLUs in place, on the CPU the 2-D channels-last layout), {w['device']}, one batch of "
        f"{w['batch']} demo-shaped windows, random weights with drawn batch-norm statistics; medians of "
        f"{w['rounds']} alternating rounds:",
        "",
        "| architecture | as trained, ms/window | rewritten, ms/window | speed-up "
        "| largest difference / largest output |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, x in w["architectures"].items():
        lines.append(f"| {name} | {x['ms_per_window']} | {x['rewritten_ms_per_window']} | **{x['speedup']:.2f}x** | "
                     f"{x['max_abs_difference_over_max_abs']:.1e} |")  # fmt: skip
    return lines + [""]


def _multiplexer_beluga_lines(b: dict) -> list[str]:
    bm, bf = b["beluga_multiplexer"], b["fast"]

    def one(x: dict) -> str:
        rewritten = (
            f"; rewritten {x['rewritten_ms_per_window']:,} ms, **{x['rewritten_speedup_vs_fast_ism']}x**"
            if "rewritten_ms_per_window" in x
            else ""
        )
        return f"{x['ms_per_window']:,} ms ({x['parameters']:,} parameters, **{x['speedup_vs_fast_ism']}x**{rewritten})"

    return [
        f"Beluga shape (L = 2000, F = 2002, random weights, batch {b['batch']}, {b['device']}): exact fast ISM of "
        f"Beluga {b['beluga_fast_ism_ms_per_window']:,} ms per window; BelugaMultiplexer {one(bm)}; `fast` {one(bf)} "
        "(untrained at this shape: speed only).",
        "",
    ]


def multiplexer_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Multiplexer architectures", "", "not run (`make bench-multiplexer`)", ""]
    lines = ["## Multiplexer architectures (`scripts/bench_multiplexer.py`)", ""]
    if r.get("demo"):
        lines += _multiplexer_demo_lines(r)
    if r.get("rewrite"):
        lines += _multiplexer_rewrite_lines(r["rewrite"])
    if r.get("beluga_shape"):
        lines += _multiplexer_beluga_lines(r["beluga_shape"])
    return lines + [f"(run {r['when']})", ""]


def _ci(x: dict) -> str:
    """``mean [low, high]`` of an interval dict (``bench_curve.interval``)."""
    return f"{x['mean']:.4f} [{x['low']:.4f}, {x['high']:.4f}]"


def _curve_variant_lines(r: dict, largest: str) -> list[str]:
    """The loss table (demo budget) and the learning-rate rule table (the curve's largest point)."""
    variants = r.get("variants") or {}
    loss = {k: v for k, v in variants.items() if v.get("budget", "demo") == "demo"}
    rule = {k: v for k, v in variants.items() if v.get("budget") == "curve"}
    lines: list[str] = []
    if loss:
        lines += ["", "The loss, with the demo's budget (each row over the same seeds; `effect_weight` a: each squared "
                  "error weighted by 1 + a |target| / mean |target|, `train --effect-weight`):", "",
                  "| run | train windows | steps | held-out weighted Pearson | held-out unweighted Pearson "
                  "| vs fast ISM (seed 0) |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for name, v in loss.items():
            ratio = r.get("variant_speed", {}).get(name, {}).get("speedup_vs_fast_ism")
            plain = v.get("held_out_unweighted_pearson")
            lines.append(f"| {name} | {v['train_windows']:,} | {v['steps']:,} | {_ci(v['held_out_weighted_pearson'])} "
                         f"| {_ci(plain) if plain else '-'} | {f'{ratio:.1f}x' if ratio else '-'} |")  # fmt: skip
    if rule:
        lines += ["", "The learning-rate rule lr = 1.2 / sqrt(parameters) against the hand-tuned rates, at the "
                  f"curve's largest point ({int(largest):,} windows, {r['steps']:,} steps, same seeds):", "",
                  "| architecture | hand-tuned lr | held-out | rule lr | held-out | difference |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for v in rule.values():
            arch = v["architecture"]
            tuned = r["curves"][arch][largest]["held_out_weighted_pearson"]
            got = v["held_out_weighted_pearson"]
            lines.append(f"| {arch} | {r['architectures'][arch]['train'].get('lr')} | {_ci(tuned)} | "
                         f"{v['settings']['lr']} | {_ci(got)} | {got['mean'] - tuned['mean']:+.4f} |")  # fmt: skip
    return lines


def _curve_default_lines(d: dict | None) -> list[str]:
    """The demo default's row against issue 26's goal, from the same run (``bench_curve.default_verdict``)."""
    if not d:
        return []
    goal, wp, ratio = d["goal"], d["held_out_weighted_pearson"], d["speedup_vs_fast_ism"]
    met = d["accuracy_met"] and d["speed_met"]
    return ["", f"**The demo's default** ({d['variant']}): held-out weighted Pearson {_ci(wp)} over "
            f"{wp.get('n', 3)} seeds (goal >= {goal['held_out_weighted_pearson']}), {ratio:.1f}x exact fast ISM "
            f"(seed 0; goal >= {goal['speedup_vs_fast_ism']:g}x): **{'met' if met else 'not met'}**, in this one "
            "run."]  # fmt: skip


ONE_THREAD = ", as OMP_NUM_THREADS=1 left it: the multiplexer's batch runs at about half its 2-thread speed"


def curve_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Learning curves", "", "not run (`make bench-curve`)", ""]
    m, sizes, largest = r["machine"], [str(n) for n in r["windows"]], str(max(r["windows"]))
    n_seeds = len(r["seeds"])
    lines = [
        "## Learning curves (`scripts/bench_curve.py`)",
        "",
        f"One demo store grown to {', '.join(f'{n:,}' for n in r['windows'])} train windows (the demo's 64 valid and "
        f"64 test windows computed with the first size); each architecture trained on the first N windows "
        f"(`--max-samples N`) for {r['steps']:,} steps of {r['batch_size']} (the same budget at every N) with "
        f"`--effect-weight {r['effect_weight']:g}`, seeds "
        f"{', '.join(map(str, r['seeds']))}, its `best.pt` scored on the held-out test split (chr9) by `evaluate`. "
        f"Cells: mean [95 % t interval over the {n_seeds} seeds]. On the CPU ({m.get('cpu')}, {m.get('cores')} cores, "
        f"torch {m.get('torch')}), {r.get('jobs', 1)} run(s) at a time, one thread each; load average "
        f"{r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after; {r['total_s'] / 60:.1f} min in all.",
        "",
        "| architecture | " + " | ".join(f"{int(n):,} windows" for n in sizes) + " |",
        "| --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for arch, by_size in r["curves"].items():
        a = r["architectures"][arch]
        name = f"{arch} (lr {a['train'].get('lr')})"
        lines.append(f"| {name} | " + " | ".join(_ci(by_size[n]["held_out_weighted_pearson"]) for n in sizes) + " |")
    lines += [
        "",
        "Distill cost of each point (the store grown in turn; CPU seconds: user + system of the process):",
        "",
    ]
    lines += ["| train windows | windows computed | wall s | CPU s | total windows | total CPU s |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for d in r["distill"]:
        lines.append(f"| {d['train_windows']:,} | {d['windows_computed']:,} | {d['wall_s']} | {d['cpu_s']} | "
                     f"{d['total_windows']:,} | {d['total_cpu_s']} |")  # fmt: skip
    steps = sorted(next(iter(r["curves"].values()))[largest]["validation_by_step"], key=int)
    lines += ["", f"Validation weighted Pearson (chr8) against training steps at {int(largest):,} train windows "
              "(the same runs' `metrics.csv`):", "",
              "| architecture | " + " | ".join(f"step {int(s):,}" for s in steps) + " |",
              "| --- | " + " | ".join("---" for _ in steps) + " |"]  # fmt: skip
    for arch, by_size in r["curves"].items():
        v = by_size[largest]["validation_by_step"]
        lines.append(
            f"| {arch} | " + " | ".join(f"{v[s]['mean']:.4f} ±{v[s]['high'] - v[s]['mean']:.4f}" for s in steps) + " |"
        )
    timed = next(iter(r["speed"].values()))["timing_sequences"]
    threads = r.get("timing_threads", 1)
    lines += ["", f"Speed (seed-0 run at {int(largest):,} windows; `evaluate` on {timed} windows with {threads} torch "
              f"thread(s){'' if threads > 1 else ONE_THREAD}; "
              "exact fast and naive ISM of the demo base model timed in the same process):", "",
              "| architecture | ms/window | fast ISM ms | naive ISM ms | vs fast ISM | vs naive ISM |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for arch, x in r["speed"].items():
        lines.append(f"| {arch} | {x['ms_per_window']} | {x['fast_ism_ms_per_window']} | "
                     f"{x['naive_ism_ms_per_window']} | **{x['speedup_vs_fast_ism']:.1f}x** | "
                     f"{x['speedup_vs_naive_ism']:.1f}x |")  # fmt: skip
    lines += _curve_variant_lines(r, largest)
    lines += _curve_default_lines(r.get("default"))
    reach = "; ".join(f"{a}: 0.90 at {w['0.9'] or 'none of these sizes'}, 0.92 at {w['0.92'] or 'none of these sizes'}"
                      for a, w in r["windows_for"].items())  # fmt: skip
    lines += ["", f"Fewest train windows whose mean reaches the target ({r['steps']:,} steps): {reach}.", ""]
    if r.get("plot"):
        lines += [f"![learning curves]({Path(r['plot']).name})", ""]
    return lines + [f"(run {r['when']})", ""]


def _load_note(load: list[float] | None) -> str:
    """A sentence on a run taken while the machine was busy (its 1-minute load average, before and after)."""
    cores = os.cpu_count() or 1
    if not load or max(load) < cores:
        return ""
    return (
        f" Taken while other jobs shared the {cores} cores (load average {load[0]:.0f} before, {load[1]:.0f} after): "
        "the absolute times are pessimistic; compare rows of one run."
    )


def identity_section(r: dict | None) -> list[str]:
    if r is None:
        return ["## Content identities", "", "not run (`make bench-identity`)", ""]
    m, hg19, meta = r["machine"], r["hg19_estimate"], r["meta_digest"]
    lines = [
        "## Content identities (`scripts/bench_identity.py`)",
        "",
        f"The full sequence digest of a generated {r['genome_mb']} Mb genome (random bases, soft-masked and N runs; "
        f"written to a temporary folder, read from the page cache) on the CPU ({m.get('cpu')}, {m.get('cores')} "
        "cores): cold with an empty cache (every base read, upper-cased and hashed with sha256), cached on a "
        "second open (read back from `$MULTIPLEXER_CACHE/digests`)." + _load_note(r.get("load_average")),
        "",
        "| FASTA | bases | open (index built) | quick fingerprint | digest cold | cold rate | digest cached |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["genomes"]:
        lines.append(
            f"| {x['file']} | {x['bases']:,} | {x['open_s']:.2f} s | {x['quick_fingerprint_s'] * 1e3:.1f} ms | "
            f"**{x['digest_cold_s']:.2f} s** | {x['cold_mb_per_s']:.0f} Mb/s | {x['digest_cached_s'] * 1e3:.2f} ms |"
        )
    lines += [
        "",
        f"hg19 (**estimate**, not measured): {hg19['bases']:,} bases at the plain FASTA's cold rate = "
        f"**{hg19['cold_s']:.0f} s**, once per version of the file, then cached ({hg19['note']}; a bgzip "
        "FASTA takes about the ratio of the two rows longer).",
        "",
        f"Metadata digest of a Beluga-shaped store's root attributes ({meta['targets']:,} target names): "
        f"{meta['write_us']:.0f} µs to write, {meta['check_us']:.0f} µs to check on each open.",
    ]
    return lines + ["", f"(run {r['when']})", ""]


def ism_gpu_lines(r: dict) -> list[str]:
    """The ISM table of ``ism_cuda.json``, with the fast engine's windows/s and the TF32 check."""
    lines = [
        "### ISM engines (`scripts/bench_ism.py`) on CUDA",
        "",
        "| model | device | L | F | windows | fast chunk | fast windows/s | fast variants/s | naive variants/s "
        "| speedup | max err alt | max err log-fold |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["results"]:
        fast_windows = x.get("fast_windows_per_s", round(x["windows"] / x["fast_seconds"], 3))
        lines.append(
            f"| {x['model']} | {x['device']} | {x['seq_len']} | {x['n_targets']} | {x['windows']} | "
            f"{x.get('fast_batch', '')} | "
            f"{fast_windows} | {x['fast_variants_per_s']} | {x['naive_variants_per_s']} | **{x['speedup']}x** | "
            f"{x['max_abs_error_alt']:.2e} | {x['max_abs_error_logfold']:.2e} |"
        )
    for x in r["results"]:
        if "tf32_share_changed" in x:
            lines += [
                "",
                f"TF32 products allowed ({x['model']}): {x['tf32_fast_variants_per_s']} variants/s; of the "
                f"{x['tf32_stored_elements']:,} float16 log-fold elements a store would keep, "
                f"{100 * x['tf32_share_changed']:.3f} % change, the largest by {x['tf32_max_abs_change']:.3g} "
                f"(largest |log-fold| {x['tf32_max_abs_logfold']:.3g}).",
            ]
    return lines + ["", f"(run {r['date']})", ""]


def profile_gpu_lines(r: dict) -> list[str]:
    """Where the fast engine's time goes on CUDA (``ism_profile_cuda.json``)."""
    regions = r.get("region_device_seconds", {})
    lines = [
        "### Where fast ISM's time goes on CUDA (`scripts/profile_ism.py`)",
        "",
        f"Beluga (L = {r['seq_len']}), {r['windows']} windows, chunks of {r['batch_size']} variants: "
        f"{r['windows_per_s_unprofiled']} windows/s unprofiled; {r['compute_ops_per_window']:.0f} operators "
        f"({r.get('kernel_launches', 0) / max(r['windows'], 1):.0f} kernels) per window; host syncs: "
        f"{sum(r['sync_ops'].values())}. Kernels kept the GPU busy {r.get('kernel_seconds', 0)} s of the "
        f"{r['seconds_profiled']} s profiled ({r['device']}).",
    ]
    if regions:
        lines += ["", "| phase | kernel seconds |", "| --- | --- |"]
        lines += [f"| {name} | {sec} |" for name, sec in regions.items()]
    top = r.get("top_kernels", {})
    if top:
        lines += ["", "| kernel | seconds | launches |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | {k['seconds']} | {k['count']} |" for name, k in list(top.items())[:8]]
    return lines + ["", f"(run {r['date']})", ""]


def distill_gpu_lines(r: dict) -> list[str]:
    sub = distill_section(r)
    lines = ["#" + sub[0] + " on CUDA", *sub[1:-3]]
    for x in r.get("compute_only", []):
        lines += [
            "",
            f"The ISM engine alone on {x['windows']} windows of the same shape ({x['unit_samples']} per call, chunks "
            f"of {x['ism_batch_size']} variants, float16 effects copied to the host): **{x['windows_per_s']} "
            f"windows/s** ({x['seconds_per_window']} s per window).",
        ]
    return lines + ["", f"(run {r['date']})", ""]


def train_gpu_lines(r: dict) -> list[str]:
    """Step rates on the device alone and ``train`` end to end (``train_cuda.json``)."""
    lines = ["### Training on CUDA (`scripts/bench_train_gpu.py`)", ""]
    rates = r.get("step_rates")
    if rates:
        lines += [
            f"Training steps on batches already on the device ({rates['shape']['seq_len']} x "
            f"{rates['shape']['n_targets']}), `train`'s step:",
            "",
            "| model | parameters | batch | precision | s/step | samples/s |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for key, x in rates["models"].items():
            lines.append(
                f"| {key} | {x['parameters']:,} | {x['batch']} | {x['precision']} | {x['step_seconds']} | "
                f"**{x['samples_per_s']}** |"
            )
        lines += ["", f"(run {rates['date']})", ""]
    section = r.get("train")
    if section:
        lines += [
            f"`train` end to end from a local Beluga-shaped store ({section['model']}, median samples/s of the "
            "logged windows after the first):",
            "",
            "| feed | workers | steps | samples/s | share of the GPU-only rate |",
            "| --- | --- | --- | --- | --- |",
        ]
        for x in section["rows"]:
            lines.append(
                f"| {x['feed']} | {x['workers']} | {x['steps']} | {x['samples_per_s']} | "
                f"{x.get('share_of_gpu_only', 'n/a')} |"
            )
        lines += ["", f"(run {section['date']})", ""]
    return lines


def gpu_section() -> list[str]:
    """The figures measured on a GPU (``*_cuda.json``; CI has none, so ``make bench`` does not rerun them):
    ``scripts/bench_gpu.sh`` writes ISM, its profile, distill and training; the loader, demo and forward
    figures are an earlier run's, kept with their date."""
    found = {name: _load(f"{name}_cuda.json") for name in ("ism", "ism_profile", "distill", "train", "loader")}
    demo = _load("demo_cuda_report.json")
    if not any(found.values()):
        return []
    device = next((r["machine"].get("cuda") for r in found.values() if r and r.get("machine", {}).get("cuda")), "a GPU")
    lines = [
        f"## On a GPU: {device}",
        "",
        "Measured on a lent GPU machine by `scripts/bench_gpu.sh` (`make bench-gpu`); CI has no GPU, so `make bench`",
        "does not rerun these. Each table gives the date of its run: a figure stays until a later run replaces it.",
        "",
    ]
    renderers = {
        "ism": ism_gpu_lines,
        "ism_profile": profile_gpu_lines,
        "distill": distill_gpu_lines,
        "train": train_gpu_lines,
    }
    for name, render in renderers.items():
        if found[name] is not None:
            lines += render(found[name])
    if found["loader"] is not None:
        sub = loader_section(found["loader"])
        lines += ["#" + sub[0] + " on CUDA", *sub[1:]]
    if demo is not None:
        t = demo["seconds_per_sequence"]
        lines += [
            "### The demo on CUDA (`multiplexer demo --device cuda`, its `report.json`; run 2026-11-25)",
            "",
            f"Held-out mean weighted Pearson {demo['weighted_pearson_mean']:.4f}; seconds per sequence: multiplexer "
            f"{t['multiplexer']:.4f}, naive ISM {t['naive_ism']:.4f}, fast ISM {t['fast_ism']:.4f} "
            f"({demo['speedup_vs_naive_ism']:.2f}x and {demo['speedup_vs_fast_ism']:.2f}x; the demo model is so small "
            "that kernel launches dominate all three).",
            "",
        ]
    forward = BENCH / "multiplexer_forward_cuda.txt"
    if forward.exists():
        lines += [
            "### BelugaMultiplexer forward passes on CUDA (L = 2000, F = 2002; run 2026-11-25)",
            "",
            "Inference (`torch.no_grad`), random weights and inputs, 3 warm-ups then the mean of 10; fp32 used "
            "PyTorch's defaults (TF32 convolutions).",
            "",
            "```",
        ]
        lines += [*forward.read_text().splitlines(), "```", ""]
    return lines


def loader_with_ism(r: dict | None) -> list[str]:
    """The loader section from ``loader.json`` and, when present, ``loader_ism.json``."""
    return loader_section(r, _load("loader_ism.json"))


def _loaded(x: dict) -> bool:
    """Whether the runs of a skipped-records result took much longer than their CPU time (a loaded machine)."""
    runs = [x[name] for name in ("this", "compared") if name in x and not x[name]["rc"]]
    return any(run["wall_s"] > 1.5 * run["cpu_s"] for run in runs)


def vcf_skipped_section(r: dict | None) -> list[str]:
    """Skipped VCF records (``bench_vcf.py``'s ``skipped``: from ``vcf_skipped.json`` or ``vcf.json``)."""
    title = "## Skipped VCF records (`scripts/bench_vcf.py --skipped-only`)"
    x = None if r is None else r.get("skipped")
    if x is None:
        return [title, "", "not run (`make bench-vcf`, or `bench_vcf.py --skipped-only`)", ""]
    m = r["machine"]
    lines = [
        title,
        "",
        f"`multiplexer score-vcf` to `.tsv.gz` over one SNV and {x['records'] - 1:,} records no mode scores "
        f"({', '.join(x['kinds'])}, in turn), on the CPU ({m.get('cpu')}, {m.get('cores')} cores). "
        "Records/s = records / (wall - start-up); per CPU second: the same from the child's user + system time. "
        "The machine is shared: load average "
        f"{', '.join(f'{v:.1f}' for v in x.get('load_average', []))} (1, 5, 15 min) at the end of the run"
        + (", so wall times are several times the CPU times" if _loaded(x) else "")
        + "; the ratio of two codes measured in the same run is the figure to trust.",
        "",
        "| code | imports `pipeline` from | wall s | CPU s | records/s | records per CPU s | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("this", "compared"):
        run = x.get(name)
        if run is None:
            continue
        label = "this code" if name == "this" else f"compared: `{run.get('code')}`"
        imports = f"`{run['imports']}`" if run.get("imports") else "not recorded"
        if run["rc"]:
            lines.append(f"| {label} | {imports} | failed: {run.get('error')} | | | | |")
            continue
        lines.append(
            f"| {label} | {imports} | {run['wall_s']:.1f} | {run['cpu_s']:.1f} | **{run['records_per_s']:,.0f}** | "
            f"{run['records_per_cpu_s']:,.0f} | {run['peak_rss_kb'] / 1024:.0f} MB |"
        )
    if "speedup_wall" in x:
        lines.append(
            f"\nSpeed-up over the compared code: **{x['speedup_wall']}x** (wall), **{x['speedup_cpu']}x** (CPU); "
            f"same output: {x['same_output']}."
            + (" **Both runs imported the same code: the ratio means nothing.**" if x.get("same_code") else "")
        )
    return lines + ["", f"(run {r['when']})", ""]


def effects_section(r: dict | None) -> list[str]:
    """Issue 25's figures (``effects.json``): each part of the issue adds its own lines for its own keys."""
    if r is None:
        return ["## Variant effects: export, percentiles, API", "", "not run (`make bench-effects`)", ""]
    m = r["machine"]
    before, after = r.get("load_average_before", [0.0])[0], r.get("load_average_after", [0.0])[0]
    lines = [
        "## Variant effects: export, percentiles, API (`scripts/bench_effects.py`)",
        "",
        f"On the CPU ({m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}, pyarrow {m.get('pyarrow')}, "
        f"pysam {m.get('pysam')}); 1-minute load average {before:.2f} at the start, {after:.2f} at the end."
        + _load_note([before, after]),
        "",
    ]
    lines += _values_lines(r.get("values"))
    lines += _background_lines(r.get("background"))
    lines += _export_lines(r.get("export"))
    return lines + ["", f"(run {r['date']})", ""]


def _background_lines(b: dict | None) -> list[str]:
    """``background`` build time and ``score-vcf --background`` variants/s (``background_rate``)."""
    if not b:
        return []
    build, plain, bg = b["build"], b["score_vcf"]["plain"], b["score_vcf"]["background"]
    return [
        f"`multiplexer background` (256 windows of the demo's test split, 1,000 effects kept per window, 1,001 "
        f"quantiles; the defaults) in {build['wall_s']} s wall, {build['cpu_s']} s CPU, peak RSS "
        f"{build['peak_rss_kb'] / 1024:.0f} MB, start-up included: {build['line']}",
        "",
        f"`score-vcf` (shared windows) on {b['n_variants']:,} demo SNVs with and without `--background` "
        f"(start-up subtracted: {b['startup_s']} s wall, {b['startup_cpu_s']} s CPU):",
        "",
        "| run | variants/s | variants per CPU s | peak RSS |",
        "| --- | --- | --- | --- |",
        *(
            f"| {label} | {x['variants_per_s']:,} | {x['variants_per_cpu_s']:,} | {x['peak_rss_kb'] / 1024:.0f} MB |"
            for label, x in (("plain", plain), ("`--background`", bg))
        ),
        "",
        f"Cost of the percentiles: {b['cost']}x wall, {b['cost_cpu']}x CPU.",
        "",
    ]


def _values_lines(v: dict | None) -> list[str]:
    """``score-vcf --values ref,alt``: variants/s with and without, per mode (``score_vcf_values_rate``)."""
    if not v:
        return []
    lines = [
        f"`score-vcf` on {v['n_variants']:,} demo SNVs with and without `--values ref,alt` (start-up subtracted: "
        f"{v['startup_s']} s wall, {v['startup_cpu_s']} s CPU):",
        "",
        "| mode | variants/s | with --values | cost | variants per CPU s | with --values | cost |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    short = False
    for mode, x in v["modes"].items():
        plain, valued = x["plain"], x["values_ref_alt"]
        if min(plain["wall_s"], valued["wall_s"]) - v["startup_s"] < 1.0:  # within the start-up's noise
            short, wall = True, "n/a | n/a | n/a"
        else:
            wall = f"{plain['variants_per_s']:,} | {valued['variants_per_s']:,} | {x['values_cost']}x"
        lines.append(
            f"| {mode} | {wall} | "
            f"{plain['variants_per_cpu_s']:,} | {valued['variants_per_cpu_s']:,} | {x['values_cost_cpu']}x |"
        )
    if short:
        lines += ["", "n/a: the run took less than a second more than the start-up, so its wall rate is noise."]
    return [*lines, ""]


def _export_lines(x: dict | None) -> list[str]:
    """``catalogue export``: rows/s, peak RSS, and the sizes of the two formats."""
    if not x:
        return []
    e, z, src = x["export"], x["sizes"], x.get("source", {})
    lines = [
        f"`catalogue export` of {src.get('catalogue', 'a catalogue')}: {src.get('positions', '?'):,} positions, "
        f"{z['rows']:,} SNV rows, {z['catalogue_targets']} stored targets, top-k 3; multiplexer weights: "
        f"{src.get('weights', '?')}. Each format in a fresh process; peak RSS from `wait4`, next to a process that "
        f"only imports the same modules and opens the catalogue ({e['baseline_rss_mb']} MB) and one that exports only "
        "the first contig:",
        "",
        "| output | rows | seconds | rows/s | peak RSS | peak RSS, first contig only | bytes | bytes/row |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for suffix, size in ((".tsv.gz", z["tsv_gz_bytes"]), (".parquet", z["parquet_bytes"])):
        y = e[suffix]
        index = f" (+ {z['tsv_index_bytes']:,} index)" if suffix == ".tsv.gz" else ""
        lines.append(
            f"| {suffix} | {y['rows']:,} | {y['seconds']} | **{y['rows_per_s']:,}** | {y['peak_rss_mb']} MB | "
            f"{y['one_contig']['peak_rss_mb']} MB ({y['one_contig']['rows']:,} rows) | {size:,}{index} | "
            f"{size / z['rows']:.2f} |"
        )
    lines += [
        "",
        f"Parquet / TSV.gz size: **{z['parquet_over_tsv_gz']}**; the catalogue itself (every stored target's "
        f"effects, float16, zstd) holds {z['catalogue_bytes']:,} bytes. Memory is one catalogue unit at a time, "
        "plus, for Parquet, the row group being filled (at most 524,288 rows and one unit's): the whole genome "
        "needs more than one contig shorter than a row group, and no more for a larger genome. Both processes load "
        "torch through the package's imports (most of the baseline).",
    ]
    return lines


SECTIONS = {
    "identity": (identity_section, "identity.json"),
    "catalogue": (catalogue_section, "catalogue.json"),
    "loader": (loader_with_ism, "loader.json"),
    "vcf-skipped": (vcf_skipped_section, "vcf_skipped.json"),
    "effects": (effects_section, "effects.json"),
    "curve": (curve_section, "curve.json"),
    "multiplexer": (multiplexer_section, "multiplexer.json"),
    "demo": (demo_section, "demo.json"),
    "checksums": (checksums_section, "checksums.json"),
}
"""Sections that ``--section`` refreshes on their own."""


def refresh_section(name: str) -> None:
    """Replace (or insert, before the GPU section) one section of the existing REPORT.md."""
    make, source = SECTIONS[name]
    new = make(_load(source))
    text = (BENCH / "REPORT.md").read_text().split("\n")
    title = new[0].split(" (`")[0]
    start = next((i for i, line in enumerate(text) if line.split(" (`")[0] == title), None)
    if start is None:
        start = end = next((i for i, line in enumerate(text) if line.startswith("## On a GPU")), len(text))
    else:
        end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")), len(text))
    (BENCH / "REPORT.md").write_text("\n".join(text[:start] + new + text[end:]))
    print(f"refreshed section {title!r} of {BENCH / 'REPORT.md'}")


def splice_gpu_section(report: Path) -> None:
    """Replace the "On a GPU" section of ``report`` (or add it), keeping everything before it."""
    text = report.read_text() if report.exists() else "# Benchmark report\n"
    head = text.split("\n## On a GPU", 1)[0].rstrip("\n")
    report.write_text(head + "\n\n" + "\n".join(gpu_section()))


def main() -> None:
    global BENCH
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=sorted(SECTIONS), help="Refresh only this section of REPORT.md.")
    parser.add_argument("--bench", type=Path, default=BENCH, help="the folder of the results and REPORT.md")
    parser.add_argument("--gpu-only", action="store_true", help="rewrite only the 'On a GPU' section")
    args = parser.parse_args()
    BENCH = args.bench
    if args.section:
        refresh_section(args.section)
        return
    if args.gpu_only:
        splice_gpu_section(BENCH / "REPORT.md")
        print(f"wrote the GPU section of {BENCH / 'REPORT.md'}")
        return
    lines = [
        "# Benchmark report",
        "",
        "Every figure below comes from the JSON files the benchmark scripts wrote in",
        "`bench/` during `make bench`.",
        "",
    ]
    lines += machine_section()
    lines += ism_section(_load("ism.json"))
    lines += distill_section(_load("distill.json"))
    lines += loader_with_ism(_load("loader.json"))
    lines += demo_section(_load("demo.json"))
    lines += scale_section(_load("scale.json"))
    lines += checksums_section(_load("checksums.json"))
    lines += vcf_section(_load("vcf.json"))
    lines += vcf_skipped_section(_load("vcf_skipped.json") or _load("vcf.json"))
    lines += catalogue_section(_load("catalogue.json"))
    lines += storage_section(_load("storage.json"))
    lines += multiplexer_section(_load("multiplexer.json"))
    lines += curve_section(_load("curve.json"))
    lines += identity_section(_load("identity.json"))
    lines += effects_section(_load("effects.json"))
    lines += gpu_section()
    (BENCH / "REPORT.md").write_text("\n".join(lines))
    print(f"wrote {BENCH / 'REPORT.md'}")


if __name__ == "__main__":
    main()
