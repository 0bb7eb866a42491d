#!/usr/bin/env bash
# The `headline` table at each strategy's learning rate chosen by the lr search (issue 11; BENCHMARKS.md,
# sessions 36-38): one run (strategy, rate, seed) per process (one thread unless THREADS), JOBS processes at a time.
#
#   benchmarks/headline_queue.sh [JOBS] < plan        # run from the repository root
#   THREADS=2 benchmarks/headline_queue.sh 1 < plan   # one run at a time on two threads
# On the 2-core AMD EPYC (session 46) two one-thread runs side by side got through 1.2x the work of one two-thread run
# (sst2's first 80 steps, the same seed: 171 s beside another run against 103 s alone), so the default is JOBS=2.
# Never start anything else beside a two-thread run: OpenMP's barrier spin made OSF's step 10-20x slower (session 45).
#
# Each plan line is `LABEL STRATEGY LR SEED [alearn bench options...]`, for example
#   router-lr0.001 router 0.001 0
#   router+head-lr0.001 router 0.001 0 --set head=true
# A run trains in runs/queue/LABEL-sSEED/ and, once finished, its bench-key.json and results.json are copied to
# benchmarks/results/headline-chosen-lr/LABEL-sSEED/ (commit them). A line whose results are already there is
# skipped, so the queue can be stopped and started again on any machine; a run interrupted mid-way starts again
# from its last finished task when runs/ is still there (`alearn bench` resumes it).
# Budget: 160 training / 200 test examples a task, the defaults otherwise (as every `headline` table).
# The backbone's zero-shot row is the same for every run of a seed: the runs share one cache file
# (runs/queue/zero-shot.json, keyed by the backbone and each task's encoded test examples), so it is scored once a seed.
set -euo pipefail
JOBS=${1:-2}
KEEP=benchmarks/results/headline-chosen-lr
ALEARN=${ALEARN:-.venv/bin/alearn}
THREADS=${THREADS:-1}
mkdir -p "$KEEP" runs/queue

one() {
    local label=$1 strategy=$2 lr=$3 seed=$4
    shift 4
    local name="$label-s$seed" run="runs/queue/$label-s$seed"
    if [[ -f "$KEEP/$name/results.json" ]]; then
        echo "$name: kept already"
        return 0
    fi
    echo "$name: started $(date -u +%H:%M:%S)"
    if OMP_NUM_THREADS=$THREADS "$ALEARN" bench headline --strategies "$strategy" --seeds "$seed" --lr "$lr" \
        --max-train 160 --max-test 200 --zero-shot-cache runs/queue/zero-shot.json "$@" --out "$run" \
        > "$run.log" 2>&1; then
        mkdir -p "$KEEP/$name"
        cp "$run/seed$seed-order0/$strategy/bench-key.json" "$run/seed$seed-order0/$strategy/results.json" \
            "$KEEP/$name/"
        echo "$name: finished $(date -u +%H:%M:%S)"
    else
        echo "$name: failed (see $run.log)"
    fi
}
export -f one
export KEEP ALEARN THREADS

grep -v '^\s*\(#\|$\)' | xargs -P "$JOBS" -L 1 bash -c 'one "$@"' _
