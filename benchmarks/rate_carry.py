"""Does the learning rate the held-out search chose carry to the test split? For each strategy, its runs at the
chosen rate (kept by ``headline_queue.sh``) against its runs at the common default rate (the earlier tables), on the
seeds both have: mean test AvgAcc at each rate and the paired bootstrap interval of the difference (the same test
examples per seed, resampled within seeds: ``evaluation.stats.compare``), and each task's final test accuracy at both.

    cd benchmarks && python rate_carry.py results/headline-chosen-lr \
        --default results/bench-headline-acc results/bench-headline-acc-seed1 results/bench-headline-acc-seed2 \
        --strategies router,per-task,naive --out rate_carry_headline
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from adaptive_learner.evaluation.stats import compare
from common import save
from pool_seeds import load_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chosen", type=Path, help="folder of <strategy>-lr<rate>-s<seed>/results.json runs (the chosen rates)")
    ap.add_argument("--default", nargs="+", type=Path, required=True,
                    help="folders of results-<strategy>.json runs at the default rate, one per seed")
    ap.add_argument("--strategies", required=True, help="comma-separated")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--out", default="rate_carry")
    args = ap.parse_args()
    rows = []
    print("| strategy | chosen rate | seeds | test AvgAcc at the chosen rate | at the default rate | "
          "chosen minus default [paired 95% CI] |")
    print("|---|---|---|---|---|---|")
    for s in args.strategies.split(","):
        chosen_m, chosen_c = load_runs([args.chosen], [s])
        default_m, default_c = load_runs(args.default, [s], first_wins=True)
        seeds = sorted({seed for (_, seed) in chosen_m} & {seed for (_, seed) in default_m})
        if not seeds:
            print(f"| {s} | | | | | no seed run at both rates |")
            continue
        # the runs' own rows (not the router's task-inferred one); compare() pairs them by seed, so only the
        # seeds both rates have take part
        correct = {(f"{s}@chosen", seed, o): v for (name, seed, o), v in chosen_c.items() if name == s}
        correct.update({(f"{s}@default", seed, o): v for (name, seed, o), v in default_c.items() if name == s})
        d = compare(correct, f"{s}@chosen", f"{s}@default", args.resamples)
        rates = sorted({f"{chosen_m[(s, seed)]['lr']:g}" for seed in seeds})
        at_chosen = [chosen_m[(s, seed)]["avg_acc"] for seed in seeds]
        at_default = [default_m[(s, seed)]["avg_acc"] for seed in seeds]
        row = {"strategy": s, "chosen_rate": ",".join(rates), "seeds": seeds, "chosen": at_chosen, "default": at_default,
               "difference": d.to_dict() if d else None, "tasks": chosen_m[(s, seeds[0])]["tasks"],
               # each task's test accuracy after the last task, mean over the seeds, at each rate
               "per_task_chosen": np.mean([chosen_m[(s, seed)]["final"] for seed in seeds], axis=0).tolist(),
               "per_task_default": np.mean([default_m[(s, seed)]["final"] for seed in seeds], axis=0).tolist()}
        rows.append(row)
        diff = f"{d.mean * 100:+.1f} [{d.low * 100:+.1f}, {d.high * 100:+.1f}]{' *' if d.excludes_zero else ''}" if d else ""
        print(f"| {s} | {row['chosen_rate']} | {','.join(map(str, seeds))} | {np.mean(at_chosen):.3f} "
              f"({' / '.join(f'{a:.3f}' for a in at_chosen)}) | {np.mean(at_default):.3f} "
              f"({' / '.join(f'{a:.3f}' for a in at_default)}) | {diff} |")
    if rows:
        print(f"\nPer task (the final row, mean over the seeds above):\n| strategy, rate | {' | '.join(rows[0]['tasks'])} |")
        print("|---" * (len(rows[0]["tasks"]) + 1) + "|")
        for r in rows:
            for label, accs in ((r["chosen_rate"], r["per_task_chosen"]), ("default", r["per_task_default"])):
                print(f"| {r['strategy']}, {label} | {' | '.join(f'{a:.3f}' for a in accs)} |")
    save(args.out, {"chosen": str(args.chosen), "default": [str(f) for f in args.default], "rows": rows})


if __name__ == "__main__":
    main()
