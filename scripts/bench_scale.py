"""Benchmark: a paper-scale rehearsal -- how the commands scale in write units.

The paper's spec has 3,125 write units and users go further. This rehearses *scale in units* with a
cheap model: the demo base model (``n_targets: 4, channels: 12, hidden: 8``) at ``seq_len: 64``, one
sample per write unit (``unit_samples: 1, chunk_samples: 1``), on the synthetic genome (divisor 2000,
the demo's: chr21, the shortest, is 24 kb), with the demo's splits (chr8 valid, chr9 test, the rest
train) holding 90 % / 5 % / 5 % of the units. For each total number of units (``--sizes``):

1. **distill** -- ``multiplexer -q distill SPEC --store STORE --device cpu`` in a subprocess. Seconds
   per unit = S / units, where S is the seconds of the compute/write loop that distill itself prints
   (``distilled N samples (U units) in S s``, 0.1 s resolution): process start-up, imports, loading
   the genome and the base model and creating the store are outside S. The wall time of the whole
   command is reported too (wall - S is that start-up).
2. **store info** -- wall time of ``multiplexer -q store info STORE --json``; and, in a fresh Python
   process, the time of the library calls alone (``open_store`` then ``store_info``), imports timed
   apart.
3. **store verify** -- wall time and peak RSS of ``multiplexer -q store verify STORE``; and, in a fresh
   Python process, the time of ``verify_store(open_store(path))`` alone (it must find no problem).
   ``verify`` reads a local store's data in forked worker processes (one per core); the peak RSS is
   the main process's own, each worker's is about the same or less.
4. **train start-up** -- a fresh Python process builds ``pipeline.train.Trainer`` (store, datasets,
   ``conv`` multiplexer with width 8, kernel 4, dilations 2,2,2,2,2; optimizer; run folder) for 1 step
   of batch 1 on the CPU and calls ``Trainer.run``, with ``train_step`` and ``validate_and_checkpoint``
   wrapped in timers. Start-up = from the process's first statement (imports included; reported apart)
   to the end of its first optimizer step: Trainer construction + loader set-up + first batch read +
   forward/backward/update. The wall time and peak RSS of that process also cover what follows the
   step: one validation on 1 sample and writing ``last.pt``/``best.pt``.
5. **evaluate start-up** -- in a fresh Python process, the time of what ``evaluate`` does on the store
   before its loop: ``open_store``, ``require_complete("test")`` and reading the first batch (16
   samples, evaluate's default) of ``reference`` and ``targets``; imports are timed apart, and the
   process's peak RSS is reported.

Peak RSS is the child's own ``ru_maxrss`` from ``os.wait4(pid)`` on a ``subprocess.Popen`` (kB on
Linux; it also covers any process the child itself waited for, none here), not ``RUSAGE_CHILDREN``,
which is a maximum over every child this script ever had. A child's ``ru_maxrss`` starts at its
parent's RSS at fork time, so this script imports neither torch nor the package (the genome and the
demo spec come from a child too) and records its own peak RSS, the floor of every figure, as
``bench_process_peak_rss_kb``. Every measurement runs once, with a warm page cache (the store was
just written). The number of files and bytes in each store are reported to show the scale.
Everything lives in a temporary folder (or ``--workdir``, where ``units-N/`` folders are replaced)
and is removed afterwards unless ``--keep``. A step that fails is recorded with its error, not
invented.

    python scripts/bench_scale.py --json bench/scale.json
    python scripts/bench_scale.py --sizes 50,200 --keep --workdir /tmp/scale
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchlib import machine, package_version

SIZES = "500,4000,32000"
SHARES = {"train": 0.90, "valid": 0.05, "test": 0.05}
DIVISOR = 2000
SEQ_LEN = 64
BASE = {"model": "demo", "kwargs": {"n_targets": 4, "channels": 12, "hidden": 8}}
ARCH_KWARGS = {"width1": 8, "width2": 8, "kernel_size": 4, "dilations": [2, 2, 2, 2, 2]}
EVAL_BATCH = 16
SUMMARY = re.compile(r"distilled (\d+) samples \((\d+) units\) in ([0-9.]+)s")

# Each snippet runs in a fresh `python -c` and prints one JSON object as its last line. This process
# imports neither torch nor the package: a child's ru_maxrss starts at its parent's RSS at fork time.
SETUP_SNIPPET = """
import json, sys
import torch
from pipeline.demo import DEMO_SPEC
from pipeline.demo.synthetic import synth_genome
if sys.argv[1] != "-":
    synth_genome(sys.argv[1], divisor=int(sys.argv[2]))
print(json.dumps({"demo_spec": DEMO_SPEC, "torch": torch.__version__, "threads": torch.get_num_threads()}))
"""

INFO_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from pipeline.store import open_store, store_info
t1 = time.perf_counter()
store = open_store(sys.argv[1])
t2 = time.perf_counter()
info = store_info(store)
t3 = time.perf_counter()
assert all(s["complete_units"] == s["n_units"] for s in info["splits"].values()), info["splits"]
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "info_s": t3 - t2, "library_s": t3 - t1}))
"""

VERIFY_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from pipeline.store import open_store, verify_store
t1 = time.perf_counter()
problems = verify_store(open_store(sys.argv[1]))
t2 = time.perf_counter()
assert not problems, problems
print(json.dumps({"import_s": t1 - t0, "library_s": t2 - t1}))
"""

TRAIN_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
import torch
from pipeline.core.runtime import Launch, exact_float32
from pipeline.core.spec import TrainSpec
from pipeline.train import RunDir, Trainer, train_config
t1 = time.perf_counter()
store, run_dir, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = train_config(TrainSpec(), steps=1, valid_every=1000, valid_samples=1, batch_size=1, kwargs=kwargs)
marks = {}

def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        marks.setdefault(name + "_start", start)
        marks.setdefault(name + "_end", time.perf_counter())
        return out
    return wrapper

with exact_float32():
    trainer = Trainer(store, RunDir(run_dir), config, launch=Launch(), device=torch.device("cpu"), resume=False)
    t2 = time.perf_counter()
    trainer.train_step = timed("step", trainer.train_step)
    trainer.validate_and_checkpoint = timed("validate", trainer.validate_and_checkpoint)
    result = trainer.run(progress=False)
    t3 = time.perf_counter()
assert result.step == 1, result
print(json.dumps({
    "import_s": t1 - t0,
    "construct_s": t2 - t1,
    "loader_setup_s": marks["step_start"] - t2,
    "first_step_s": marks["step_end"] - marks["step_start"],
    "to_first_step_s": marks["step_end"] - t0,
    "to_first_step_after_imports_s": marks["step_end"] - t1,
    "validate_and_checkpoint_s": marks.get("validate_end", t3) - marks.get("validate_start", t3),
    "run_s": t3 - t2,
}))
"""

EVALUATE_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from pipeline.store import open_store
t1 = time.perf_counter()
store = open_store(sys.argv[1])
t2 = time.perf_counter()
split = "test" if "test" in store.splits else "valid"
store.require_complete(split)
t3 = time.perf_counter()
n = store.split_info(split).n_samples
batch = int(sys.argv[2])
X = np.asarray(store.array(split, "reference")[0:batch])
y = np.asarray(store.array(split, "targets")[0:batch])
t4 = time.perf_counter()
assert X.shape[0] == y.shape[0] == min(n, batch)
print(json.dumps({
    "import_s": t1 - t0,
    "open_s": t2 - t1,
    "require_complete_s": t3 - t2,
    "first_batch_s": t4 - t3,
    "startup_s": t4 - t1,
}))
"""


# ------------------------------------------------------------------------------------------------
def run_child(argv: list[str]) -> dict[str, Any]:
    """Run ``argv``; its return code, wall seconds, own peak RSS (kB), stdout and stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
        out.seek(0)
        err.seek(0)
        return {
            "rc": proc.returncode,
            "wall_s": wall,
            "peak_rss_kb": usage.ru_maxrss,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def _error(child: dict[str, Any], what: str) -> dict[str, Any]:
    text = (child["stderr"].strip() or child["stdout"].strip() or f"exit status {child['rc']}").splitlines()
    return {"error": f"{what}: {text[-1][:300]}"}


def snippet(code: str, *args: str) -> dict[str, Any]:
    """Run a snippet in a fresh Python; its JSON figures, wall seconds and peak RSS (or an error)."""
    child = run_child([sys.executable, "-c", code, *args])
    if child["rc"] != 0:
        return _error(child, "snippet failed")
    try:
        figures = json.loads(child["stdout"].strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return _error(child, "no JSON from the snippet")
    return {
        **{k: round(v, 4) for k, v in figures.items()},
        "wall_s": round(child["wall_s"], 3),
        "peak_rss_kb": child["peak_rss_kb"],
    }


def cli(multiplexer: str, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``multiplexer -q ARGS``; (figures or error, the child's raw result)."""
    child = run_child([multiplexer, "-q", *args])
    if child["rc"] != 0:
        command = " ".join(args[:2] if args[0] == "store" else args[:1])
        return _error(child, f"multiplexer {command} failed"), child
    return {"wall_s": round(child["wall_s"], 3), "peak_rss_kb": child["peak_rss_kb"]}, child


# ------------------------------------------------------------------------------------------------
def split_units(total: int) -> dict[str, int]:
    valid = max(1, round(total * SHARES["valid"]))
    test = max(1, round(total * SHARES["test"]))
    if total - valid - test < 1:
        raise SystemExit(f"--sizes: {total} units is too few for three splits")
    return {"train": total - valid - test, "valid": valid, "test": test}


def setup(genome: Path) -> dict[str, Any]:
    """Write the synthetic genome unless it exists; the demo spec, torch's version and threads."""
    argv = [str(genome), str(DIVISOR)] if not genome.exists() else ["-"]
    child = run_child([sys.executable, "-c", SETUP_SNIPPET, *argv])
    if child["rc"] != 0:
        raise SystemExit(f"writing the synthetic genome failed:\n{child['stderr']}")
    return dict(json.loads(child["stdout"].strip().splitlines()[-1]))


def scale_spec(demo: dict[str, Any], genome: Path, total: int) -> dict[str, Any]:
    """The demo spec's settings at seq_len 64, one sample per unit, ``total`` units in all."""
    units = split_units(total)
    chroms = {"train": demo["splits"]["train"]["chroms"], "valid": ["chr8"], "test": ["chr9"]}
    return {
        "name": f"scale_{total}",
        "genome": str(genome),
        "seq_len": SEQ_LEN,
        "seed": 0,
        "max_n": demo["max_n"],
        "target": "logfold",
        "base": BASE,
        "splits": {split: {"chroms": chroms[split], "samples": units[split]} for split in units},
        "storage": {**demo["storage"], "unit_samples": 1, "chunk_samples": 1},
        "ism_batch_size": demo["ism_batch_size"],
    }


def count_files(path: Path) -> tuple[int, int]:
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(root, name))
    return files, size


def measure_distill(multiplexer: str, spec_path: Path, store: Path, total: int) -> dict[str, Any]:
    figures, child = cli(multiplexer, "distill", str(spec_path), "--store", str(store), "--device", "cpu")
    if "error" in figures:
        return figures
    match = SUMMARY.search(child["stdout"])
    if match is None:
        return {"error": f"no summary line in distill's output: {child['stdout'].strip()[-300:]!r}"}
    samples, units, seconds = int(match[1]), int(match[2]), float(match[3])
    if units != total:
        return {"error": f"distill wrote {units} units, expected {total}"}
    return {
        "samples": samples,
        "units": units,
        "loop_s": seconds,
        "s_per_unit": round(seconds / units, 6),
        "startup_s": round(figures["wall_s"] - seconds, 3),
        **figures,
    }


def measure_size(multiplexer: str, demo: dict[str, Any], work: Path, genome: Path, total: int) -> dict[str, Any]:
    folder = work / f"units-{total}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec_path, store, run_dir = folder / "spec.yaml", folder / "store.zarr", folder / "run"
    spec_path.write_text(json.dumps(scale_spec(demo, genome, total), indent=2))  # JSON is YAML
    result: dict[str, Any] = {"units": total, "splits": split_units(total)}
    print(f"[{total} units] distill ...", flush=True)
    result["distill"] = measure_distill(multiplexer, spec_path, store, total)
    if "error" in result["distill"]:
        print(f"  {result['distill']['error']}", flush=True)
        return result
    result["files"], result["bytes"] = count_files(store)
    print(f"[{total} units] store info, store verify, train and evaluate start-up ...", flush=True)
    info_cli, child = cli(multiplexer, "store", "info", str(store), "--json")
    if "error" not in info_cli:
        try:
            json.loads(child["stdout"])
        except json.JSONDecodeError:
            info_cli = {"error": "store info --json printed no JSON"}
    result["store_info"] = {"cli": info_cli, "library": snippet(INFO_SNIPPET, str(store))}
    result["store_verify"] = {
        "cli": cli(multiplexer, "store", "verify", str(store))[0],
        "library": snippet(VERIFY_SNIPPET, str(store)),
    }
    result["train_startup"] = snippet(TRAIN_SNIPPET, str(store), str(run_dir), json.dumps(ARCH_KWARGS))
    result["evaluate_startup"] = snippet(EVALUATE_SNIPPET, str(store), str(EVAL_BATCH))
    for key in ("store_info", "store_verify"):
        for how, figures in result[key].items():
            if "error" in figures:
                print(f"  {key} ({how}): {figures['error']}", flush=True)
    for key in ("train_startup", "evaluate_startup"):
        if "error" in result[key]:
            print(f"  {key}: {result[key]['error']}", flush=True)
    return result


# ------------------------------------------------------------------------------------------------
def _get(row: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(row, dict) or key not in row:
            return None
        row = row[key]
    return row


def _s(x: Any, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _mb(kb: Any) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f}"


def _pair(row: dict[str, Any], key: str) -> str:
    return f"{_s(_get(row, key, 'cli', 'wall_s'))}/{_s(_get(row, key, 'library', 'library_s'))}"


def _ms_per_unit(row: dict[str, Any]) -> str:
    seconds = _get(row, "distill", "s_per_unit")
    return _s(None if seconds is None else 1000 * seconds)


COLUMNS = [
    ("units", 7, lambda r: str(r["units"])),
    ("files", 8, lambda r: str(r.get("files", "-"))),
    ("distill ms/unit", 15, _ms_per_unit),
    ("loop s", 8, lambda r: _s(_get(r, "distill", "loop_s"), 1)),
    ("wall s", 8, lambda r: _s(_get(r, "distill", "wall_s"), 1)),
    ("RSS MB", 7, lambda r: _mb(_get(r, "distill", "peak_rss_kb"))),
    ("info cli/lib s", 14, lambda r: _pair(r, "store_info")),
    ("verify cli/lib s", 16, lambda r: _pair(r, "store_verify")),
    ("RSS MB", 7, lambda r: _mb(_get(r, "store_verify", "cli", "peak_rss_kb"))),
    ("train start s", 13, lambda r: _s(_get(r, "train_startup", "to_first_step_s"))),
    ("(imports)", 9, lambda r: _s(_get(r, "train_startup", "import_s"))),
    ("RSS MB", 7, lambda r: _mb(_get(r, "train_startup", "peak_rss_kb"))),
    ("eval start s", 12, lambda r: _s(_get(r, "evaluate_startup", "startup_s"), 3)),
    ("RSS MB", 7, lambda r: _mb(_get(r, "evaluate_startup", "peak_rss_kb"))),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print(" ".join(f"{name:>{width}}" for name, width, _ in COLUMNS))
    for row in rows:
        print(" ".join(f"{cell(row):>{width}}" for _, width, cell in COLUMNS))
    print()
    print(
        "distill ms/unit: distill's own compute/write loop / units (start-up excluded); loop s: that loop; "
        "wall s: the whole command. info/verify: CLI wall / library call in a fresh process (no imports). "
        "train start: process start to the end of the first optimizer step, imports included (shown apart); "
        "its RSS also covers a 1-sample validation and the checkpoints. eval start: open_store + "
        f"require_complete('test') + first batch of {EVAL_BATCH}, imports excluded. RSS: the process's own peak."
    )


def machine_info(env: dict[str, Any]) -> dict[str, Any]:
    return machine(torch=env["torch"], threads=env["threads"], zarr=package_version("zarr"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=SIZES, help=f"total write units, comma-separated (default {SIZES})")
    parser.add_argument("--workdir", help="work here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the genome, specs, stores and runs")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--sizes: expected comma-separated integers, got {args.sizes!r}") from None
    for total in sizes:
        split_units(total)
    multiplexer = shutil.which("multiplexer", path=str(Path(sys.executable).parent)) or shutil.which("multiplexer")
    if multiplexer is None:
        raise SystemExit("no `multiplexer` command next to this Python or on PATH; run `make install`")
    made_workdir = not args.workdir or not Path(args.workdir).exists()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    genome = work / "genome.fa"
    made = [work / f"units-{total}" for total in sizes]
    if not genome.exists():
        made += [genome, work / "genome.fa.fai"]
    try:
        env = setup(genome)
        rows = [measure_size(multiplexer, env["demo_spec"], work, genome, total) for total in sizes]
    finally:
        if not args.keep:
            if made_workdir:
                shutil.rmtree(work, ignore_errors=True)
            else:
                for path in made:
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
    print_table(rows)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(env),
        "bench_process_peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "settings": {
            "seq_len": SEQ_LEN,
            "base": BASE,
            "unit_samples": 1,
            "chunk_samples": 1,
            "shares": SHARES,
            "genome_divisor": DIVISOR,
            "train": {"multiplexer": "conv", "kwargs": ARCH_KWARGS, "batch_size": 1, "steps": 1, "valid_samples": 1},
            "evaluate_batch": EVAL_BATCH,
            "device": "cpu",
        },
        "sizes": rows,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
