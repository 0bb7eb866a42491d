"""Pool finished bench runs of several seeds into one table: mean and spread of AvgAcc over seeds, and
each strategy's paired bootstrap interval against the reference over all seeds together, and its LA (learning
accuracy: each task right after its own training), which with BWT splits a gap in AvgAcc into learning and forgetting.

``alearn bench`` pools the seeds it runs in one output folder; runs made on different machines or
sessions are kept as ``results-<strategy>.json`` files (the ``results.json`` of each run) in one
folder per seed, or as ``headline_queue.sh`` keeps them: one folder per run,
``<strategy>-lr<rate>-s<seed>/results.json`` (``<strategy>`` as ``--strategies`` names it, ``router+head`` for a
run given ``--set head=true``). This reads those files and computes the same comparison ``alearn bench`` prints
(``evaluation.stats.compare``: resampling each task's test examples within each seed), so a
3-seed interval can be had without keeping every run's folder. Every run must have been scored on
the same test examples per seed (the same ``--max-test``), which the script checks.

    python benchmarks/pool_seeds.py results/bench-headline-acc results/bench-headline-acc-seed1 \
        results/bench-headline-acc-seed2 --strategies router,per-task --out pooled_headline
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from adaptive_learner.evaluation.bench import TASK_INFERRED, run_outcomes
from adaptive_learner.evaluation.metrics import learning_accuracy
from adaptive_learner.evaluation.stats import avg_accuracy, bwt_paired, compare
from common import save


def load_runs(folders: list[Path], strategies: list[str], first_wins: bool = False) -> tuple[dict, dict]:
    """Per (strategy, seed): the run's AvgAcc and other metrics, and the per-example outcomes
    (``first_wins``: a second run of the same strategy and seed in a later folder is skipped, not an error)."""
    metrics: dict[tuple[str, int], dict] = {}
    correct: dict = {}
    for folder in folders:
        for s in strategies:
            for f in [folder / f"results-{s}.json", *sorted(folder.glob(f"{s}-lr*-s*/results.json"))]:
                if not f.is_file():
                    continue
                doc = json.loads(f.read_text())
                seed = int(doc["config"]["seed"])
                if (s, seed) in metrics:
                    if first_wins:
                        continue
                    raise SystemExit(f"error: two runs of {s} with seed {seed} ({f})")
                metrics[(s, seed)] = {**doc["metrics"], "n_adapters": doc.get("n_adapters"), "file": str(f),
                                      "max_test": doc["config"].get("max_test"), "tasks": doc["tasks"],
                                      "lr": doc["config"]["train"]["lr"], "final": doc["matrix"][-1],
                                      "learning_acc": learning_accuracy(np.array(doc["matrix"], dtype=float)),
                                      "stages": {k: doc.get(k) for k in ("tasks", "final_correct", "learned_correct")}}
                correct.update(run_outcomes(s, seed, 0, doc))
    return metrics, correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="folders of results-<strategy>.json files")
    ap.add_argument("--strategies", required=True, help="comma-separated; the first is the reference")
    ap.add_argument("--reference", default=None,
                    help="the strategy the others are compared with (default: the first of --strategies); "
                         "'router (task inferred)' compares with the router's routed AvgAcc")
    ap.add_argument("--first-wins", action="store_true",
                    help="two runs of one strategy and seed: keep the earlier folder's (default: an error)")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--out", default="pooled_seeds")
    args = ap.parse_args()
    strategies = args.strategies.split(",")
    metrics, correct = load_runs(args.folders, strategies, args.first_wins)
    ref = args.reference or strategies[0]
    if not any(k[0] == ref for k in correct):
        raise SystemExit(f"error: no runs of the reference {ref!r}")
    tests = {(m["max_test"], tuple(m["tasks"])) for m in metrics.values()}
    if len(tests) != 1:
        raise SystemExit(f"error: the runs differ in test examples or tasks: {sorted(tests)}")
    rows = []
    names = strategies + sorted({k[0] for k in correct if k[0].endswith(TASK_INFERRED)})
    for s in names:
        inferred = s.endswith(TASK_INFERRED)
        seeds = sorted(seed for (name, seed, _) in correct if name == s) if inferred else \
            sorted(seed for (name, seed) in metrics if name == s)
        accs = [avg_accuracy(correct[(s, seed, 0)]) if inferred else metrics[(s, seed)]["avg_acc"] for seed in seeds]
        row = {"strategy": s, "seeds": seeds, "avg_acc": accs,
               "mean": float(np.mean(accs)) if accs else None, "sd": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
               "learning_acc": None if inferred else [metrics[(s, seed)]["learning_acc"] for seed in seeds],
               "bwt": None if inferred else [metrics[(s, seed)].get("bwt") for seed in seeds],
               "adapters": None if inferred else [metrics[(s, seed)].get("n_adapters") for seed in seeds]}
        if not inferred:  # BWT's paired interval, where every seed's run kept each stage's outcomes
            b = bwt_paired([metrics[(s, seed)]["stages"] for seed in seeds], seeds, args.resamples) if seeds else None
            row["bwt_interval"] = None if b is None else [b.low, b.high]
        if s != ref:
            d = compare(correct, s, ref, args.resamples)
            row["minus_ref"] = d.to_dict() if d else None
        rows.append(row)
    print(f"| strategy | seeds | AvgAcc per seed | mean ± sd | LA (mean) | BWT (mean) [paired 95% CI] | adapters | "
          f"- {ref} [paired 95% CI, pooled over seeds] |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = r.get("minus_ref")
        diff = "(reference)" if r["strategy"] == ref else (
            f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{' *' if d['excludes_zero'] else ''}" if d else "")
        sd = f" ± {r['sd']:.3f}" if r["sd"] is not None else ""
        bwt = [b for b in (r["bwt"] or []) if b is not None]
        bwt_cell = f"{np.mean(bwt):+.3f}" if bwt else ""
        if r.get("bwt_interval"):
            lo, hi = r["bwt_interval"]
            bwt_cell += f" [{lo:+.3f}, {hi:+.3f}]" + (" *" if lo > 0 or hi < 0 else "")
        adapters = ",".join(sorted({str(a) for a in (r["adapters"] or []) if a is not None}))
        la = r["learning_acc"]  # NaN for a run scored only at the end: no mean then
        la_cell = f"{np.mean(la):.3f}" if la and not np.isnan(la).any() else ""
        print(f"| {r['strategy']} | {','.join(map(str, r['seeds']))} | {' / '.join(f'{a:.3f}' for a in r['avg_acc'])} "
              f"| {r['mean']:.3f}{sd} | {la_cell} | {bwt_cell} | {adapters} | {diff} |")
    save(args.out, {"folders": [str(f) for f in args.folders], "reference": ref, "rows": rows})


if __name__ == "__main__":
    main()
