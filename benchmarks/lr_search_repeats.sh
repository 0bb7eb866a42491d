#!/usr/bin/env bash
# The lr search of session 36 repeated (issue 11, item 5; BENCHMARKS.md, session 40): each rate's run again on its own
# held-out split and training seed (`--search-repeats 2`), rates compared by the mean of the two runs. Repeat 0 is
# session 36's run (linked from results/lr-search-headline/S/, reused as finished), repeat 1 runs here.
#
#   THREADS=2 benchmarks/lr_search_repeats.sh router naive per-task     # from the repository root
set -euo pipefail
ALEARN=${ALEARN:-.venv/bin/alearn}
for s in "$@"; do
    out=benchmarks/results/lr-search-headline-r2/$s
    mkdir -p "$out/lr-search"
    for run in benchmarks/results/lr-search-headline/"$s"/lr-search/"$s"-lr*/; do   # repeat 0: session 36's runs
        link="$out/lr-search/$(basename "$run")"
        [[ -e $link ]] || ln -s "../../../lr-search-headline/$s/lr-search/$(basename "$run")" "$link"
    done
    echo "$s: started $(date -u +%H:%M:%S)"
    OMP_NUM_THREADS=${THREADS:-1} "$ALEARN" bench headline --strategies "$s" --seeds 0 --max-train 160 --max-test 200 \
        --lr-search --search-tasks sst2,stsb,trec,rotten_tomatoes,sms_spam --search-only --search-repeats 2 \
        --out "$out" > "runs/lrs-r2-$s.log" 2>&1 && echo "$s: finished $(date -u +%H:%M:%S)" || echo "$s: failed"
done
