#!/usr/bin/env bash
# Accuracy at Beluga shape (issue 26, item 4): distil a Beluga-shaped store with random Beluga weights on
# the GPU, train `fast` and the BelugaMultiplexer on it for about TRAIN_S seconds each, and report their
# held-out weighted Pearson and time per window next to exact fast ISM (scripts/bench_beluga_shape.py).
#
#   scripts/bench_beluga_shape.sh                    # on a GPU machine -> bench/beluga_shape_cuda.json
#   DEVICE=cpu TINY=1 scripts/bench_beluga_shape.sh  # a CPU dry run at L = 400, F = 64 -> $BENCH_OUT
#
# Budget on one H100 (about 10 minutes): 576 windows distilled at about 2.9 windows/s (bench/distill_cuda.json)
# is about 3.3 minutes, then TRAIN_S (150) seconds per model plus evaluation. The whole run is bounded by
# BUDGET_S (600) with `timeout`; each model's result is written as soon as it is done.
#
# Variables: DEVICE (cuda), TINY (0), TRAIN (512), TRAIN_S (150), BUDGET_S (600), WORKERS (12),
# BENCH_OUT (bench; with DEVICE=cpu a temporary folder, so a dry run never replaces GPU figures), WORK.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
BUDGET_S=${BUDGET_S:-600}
if [[ "$DEVICE" == cpu ]]; then BENCH_OUT=${BENCH_OUT:-${TMPDIR:-/tmp}/bench-beluga-shape-dry-run}; else BENCH_OUT=${BENCH_OUT:-bench}; fi
WORK=${WORK:-${TMPDIR:-/tmp}/bench-beluga-shape-work}
PY=${PY:-.venv/bin/python}
mkdir -p "$BENCH_OUT" "$WORK"
export PYTHONUNBUFFERED=1

if [[ "$TINY" == 1 ]]; then
    args=(--tiny --train "${TRAIN:-8}" --valid 2 --test 2 --unit-samples 2 --ism-batch-size 256
          --train-s "${TRAIN_S:-5}" --min-steps 2 --batch-size 2 --workers "${WORKERS:-0}" --timing-sequences 1)
else
    args=(--train "${TRAIN:-512}" --train-s "${TRAIN_S:-150}" --workers "${WORKERS:-12}")
fi
timeout "$BUDGET_S" $PY scripts/bench_beluga_shape.py --device "$DEVICE" --workdir "$WORK" \
    --json "$BENCH_OUT/beluga_shape_$DEVICE.json" "${args[@]}"
echo "== wrote $BENCH_OUT/beluga_shape_$DEVICE.json"
