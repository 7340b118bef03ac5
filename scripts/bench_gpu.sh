#!/usr/bin/env bash
# Every GPU figure of bench/REPORT.md in one run of at most BUDGET_S seconds (8 minutes) on one GPU.
#
#   scripts/bench_gpu.sh                       # on a GPU machine: writes bench/*_cuda.json and REPORT.md's GPU section
#   DEVICE=cpu TINY=1 scripts/bench_gpu.sh     # a dry run on a CPU: tiny sizes, results in $BENCH_OUT
#   make bench-gpu                             # the first form
#
# Steps, each with a time budget (its timeout): fast and naive ISM of Beluga (and fast ISM with TF32
# allowed, measured against the float16 a store keeps), where fast ISM's time goes (profile), distill
# windows/s on a Beluga-shaped spec (and the ISM engine alone), training steps on batches already on
# the device (BelugaMultiplexer and the `fast` multiplexer, bf16), a local Beluga-shaped store, and
# `train` end to end from it by loader worker count. Each step writes its JSON when it ends (the train
# step after every worker count), so a step that runs out of time leaves the others' results; a step
# is not started when less time is left than it needs. Then the GPU section of REPORT.md is rewritten.
#
# On a bare machine with only the checkout: the virtual environment is made if missing. Where the
# system python3 already has torch (a GPU machine's image), the venv reuses it (--system-site-packages)
# and installs the package from the wheels in $WHEELHOUSE (default .whl, made by `make gpu-wheels` on
# a machine with a package index), without a network; elsewhere `make install`. The store it needs is
# generated (random Beluga-shaped targets). Nothing is downloaded.
#
# Variables: DEVICE (cuda), TINY (0), BUDGET_S (480), BUDGET_SCALE (1: multiplies every step's budget,
# for a dry run on a slow or shared CPU), BENCH_OUT (bench; with DEVICE=cpu a temporary folder, so a
# dry run never replaces the GPU figures), WORK (scratch folder), WHEELHOUSE (.whl).
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
BUDGET_S=${BUDGET_S:-480}
BUDGET_SCALE=${BUDGET_SCALE:-1}
if [[ "$DEVICE" == cpu ]]; then BENCH_OUT=${BENCH_OUT:-${TMPDIR:-/tmp}/bench-gpu-dry-run}; else BENCH_OUT=${BENCH_OUT:-bench}; fi
WORK=${WORK:-${TMPDIR:-/tmp}/bench-gpu-work}
WHEELHOUSE=${WHEELHOUSE:-.whl}
PY=.venv/bin/python
START=$(date +%s)
mkdir -p "$BENCH_OUT" "$WORK"
export PYTHONUNBUFFERED=1

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET_S - $(elapsed))); }
tiny() { [[ "$TINY" == 1 ]] && echo "$1"; }

# ---- the environment --------------------------------------------------------------------------
ensure_env() {
    if [[ -x $PY ]] && $PY -c "import torch, zarr, pipeline" 2>/dev/null; then return 0; fi
    if python3 -c "import torch" 2>/dev/null && [[ -d "$WHEELHOUSE" || "$DEVICE" != cpu ]]; then
        echo "== making .venv on the system torch ($(python3 -c 'import torch; print(torch.__version__)')), wheels from $WHEELHOUSE"
        python3 -m venv --without-pip --system-site-packages .venv || return 1  # pip and setuptools: the image's
        # python3 may itself be a venv (the GPU image's is): its site-packages are not the base
        # interpreter's, so name them in a .pth file (after the venv's own, which come first)
        local purelib
        purelib=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || return 1
        python3 -c "import site; print('\n'.join(site.getsitepackages()))" >"$purelib/_image_python.pth" || return 1
        local links=()
        [[ -d "$WHEELHOUSE" ]] && links=(--find-links "$WHEELHOUSE")
        $PY -m pip install -q --no-index "${links[@]}" --no-build-isolation -e . || {
            echo "error: could not install the package without a network; run 'make gpu-wheels' where pip works and carry $WHEELHOUSE" >&2
            return 1
        }
    else
        echo "== make install"
        make install || return 1
    fi
    $PY -c "import torch, zarr, pipeline" || return 1
}

# nvCOMP (the `gpu` extra) for `train --decode gpu`, from the wheelhouse; without it that step says so
ensure_nvcomp() {
    $PY -c "from nvidia import nvcomp" 2>/dev/null && return 0
    [[ -d "$WHEELHOUSE" ]] && $PY -m pip install -q --no-index --find-links "$WHEELHOUSE" nvidia-nvcomp-cu12 2>/dev/null
    $PY -c "from nvidia import nvcomp" 2>/dev/null || echo "== nvCOMP not installed (make gpu-wheels carries it): no GPU-decode rows"
}

# ---- one timed step ----------------------------------------------------------------------------
# step NAME BUDGET MIN command...: runs the command with a timeout of min(BUDGET, time left), unless
# less than MIN seconds are left; prints its elapsed time.
declare -a SUMMARY=()
step() {
    local name=$1 budget=$(($2 * BUDGET_SCALE)) need=$(($3 * BUDGET_SCALE))
    shift 3
    local remaining
    remaining=$(left)
    if ((remaining < need)); then
        echo "== $name: skipped ($remaining s left, it needs $need s)"
        SUMMARY+=("$name: skipped")
        return 0
    fi
    ((budget > remaining)) && budget=$remaining
    echo "== $name (budget ${budget} s; $(elapsed) s elapsed)"
    local t0=$(date +%s) rc=0
    timeout --kill-after=10 "$budget" "$@" || rc=$?
    local took=$(($(date +%s) - t0))
    local status="ok"
    ((rc == 124 || rc == 137)) && status="stopped at its budget"
    ((rc != 0 && rc != 124 && rc != 137)) && status="failed (exit $rc)"
    echo "== $name: $status in ${took} s"
    SUMMARY+=("$name: $status in ${took} s")
}

ensure_env || exit 1
[[ "$DEVICE" != cpu ]] && ensure_nvcomp
$PY - <<EOF
import torch
dev = "$DEVICE"
if dev.startswith("cuda") and not torch.cuda.is_available():
    raise SystemExit("error: DEVICE=$DEVICE but torch sees no GPU (use DEVICE=cpu TINY=1 for a dry run)")
print("device:", torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu", "| torch", torch.__version__)
EOF
[[ $? -eq 0 ]] || exit 1
echo "== environment ready in $(elapsed) s; results in $BENCH_OUT"
if [[ "$BENCH_OUT" != bench && ! -f "$BENCH_OUT/REPORT.md" ]]; then
    cp bench/REPORT.md bench/*_cuda.json bench/*_cuda.txt bench/demo_cuda_report.json "$BENCH_OUT"/ 2>/dev/null
fi

# ---- ISM: fast and naive on Beluga, TF32 against exact float32 ----------------------------------
step ism 75 20 $PY scripts/bench_ism.py --devices "$DEVICE" --tf32-check $(tiny --tiny) \
    --json "$BENCH_OUT/ism_cuda.json"

# ---- where fast ISM's time goes (torch.profiler: operators, kernels, phases) -------------------
step ism-profile 45 15 $PY scripts/profile_ism.py --device "$DEVICE" --windows 2 --batch-size 4096 $(tiny --tiny) \
    --json "$BENCH_OUT/ism_profile_cuda.json"

# ---- distill windows/s on a Beluga-shaped spec, and the ISM engine alone -------------------------
step distill 80 25 $PY scripts/bench_distill.py --device "$DEVICE" --specs beluga \
    --beluga-windows "$([[ $TINY == 1 ]] && echo 4 || echo 48)" --unit-samples "$([[ $TINY == 1 ]] && echo 2 || echo 8)" \
    --ism-batch-size 4096 --modes overlap --no-codecs $(tiny --tiny) --workdir "$WORK/distill" \
    --json "$BENCH_OUT/distill_cuda.json"

# ---- training steps on batches already on the device (BelugaMultiplexer, fast; bf16) ----------
step train-steps 35 15 $PY scripts/bench_train_gpu.py --device "$DEVICE" --parts steps $(tiny --tiny) \
    --step-seconds "$([[ $TINY == 1 ]] && echo 1 || echo 5)" --workdir "$WORK/train" --json "$BENCH_OUT/train_cuda.json"

# ---- a local Beluga-shaped store, then `train` end to end by loader worker count -----------------
step store 60 20 $PY scripts/bench_train_gpu.py --device "$DEVICE" --parts store $(tiny --tiny) \
    --store-samples "$([[ $TINY == 1 ]] && echo 16 || echo 48)" --workdir "$WORK/train" --json "$BENCH_OUT/train_cuda.json"
TRAIN_BUDGET=$(($(left) - 85 * BUDGET_SCALE))  # leaves the GPU-decode step its time
step train 150 30 $PY scripts/bench_train_gpu.py --device "$DEVICE" --parts train $(tiny --tiny) \
    --workers "$([[ $TINY == 1 ]] && echo 0,1,2 || echo 1,2,4,8,12)" --train-steps "$([[ $TINY == 1 ]] && echo 6 || echo 24)" \
    --train-budget "$((TRAIN_BUDGET < 120 * BUDGET_SCALE ? TRAIN_BUDGET : 120 * BUDGET_SCALE))" --workdir "$WORK/train" --json "$BENCH_OUT/train_cuda.json"

# ---- `train` with GPU decode (issue 23, item 3) --------------------------------------------------
# The same shape, steps and model on a copy of the store written with storage codec zstd-gpu, with
# `decode: gpu` (the workers read and check the compressed chunks, nvCOMP decodes on the device): rows
# with feed "gpu-decode" beside the cpu-workers rows. Without nvCOMP (the `gpu` extra) or a CUDA device
# the script says so and measures nothing.
step train-gpu-decode 75 25 $PY scripts/bench_train_gpu.py --device "$DEVICE" --parts train-gpu-decode $(tiny --tiny) \
    --store-samples "$([[ $TINY == 1 ]] && echo 16 || echo 48)" --gpu-decode-workers "$([[ $TINY == 1 ]] && echo 0,1 || echo 1,2,4)" \
    --train-steps "$([[ $TINY == 1 ]] && echo 6 || echo 24)" --train-budget "$((45 * BUDGET_SCALE))" \
    --workdir "$WORK/train" --json "$BENCH_OUT/train_cuda.json"

# ---- the report's GPU section ------------------------------------------------------------------
$PY scripts/bench_report.py --gpu-only --bench "$BENCH_OUT"
echo
echo "== summary ($(elapsed) s of a $BUDGET_S s budget; device $DEVICE)"
printf '  %s\n' "${SUMMARY[@]}"
