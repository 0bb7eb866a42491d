"""Ground truth by outcome, read from a bench (issue 13, item 2): each reuse the router made in a
continual-learning run, judged against what a new adapter gave the same task in the same seed.

For a router run and the per-task run of the same seed and order (same tasks, same test examples):
for every task B the router put into an existing adapter, **reuse is right** when
- B's accuracy right after its training (the router's matrix, row B) is within ``--tolerance`` of
  (or above) the accuracy of B's own new adapter (per-task's matrix, row B), and
- every earlier task on that adapter lost at most ``--tolerance`` over B's training (the router's
  rows before and after B).
The router's "new" decisions are not judged here: what reusing would have given was not run.

    python benchmarks/bench_outcomes.py ../runs/bench-headline --out bench_outcomes_headline
    python benchmarks/bench_outcomes.py results/bench-headline-acc results/bench-headline-acc-seed1 --out X
    python benchmarks/bench_outcomes.py results/headline-chosen-lr --rate 0.001 --suffix +head --out X

Each argument is a bench output directory (``seed*-order*/{router,per-task}/results.json``), a folder of
kept results (``results-router.json`` beside ``results-per-task.json``, as ``pool_seeds.py`` reads them), or the
queue's folder (``router-lr0.001-s0/results.json`` beside ``per-task-lr0.001-s0/results.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import save


def judge(router: dict[str, Any], per_task: dict[str, Any], tol: float) -> list[dict[str, Any]]:
    """One row per reuse decision of ``router`` (a results.json), against ``per_task`` (same seed and order)."""
    if router["tasks"] != per_task["tasks"] or router["n_test"] != per_task["n_test"]:
        raise SystemExit("the router and per-task runs are not on the same tasks and test examples")
    tasks, R, P = router["tasks"], router["matrix"], per_task["matrix"]
    holder: dict[str, list[int]] = {}  # adapter -> indices of the tasks trained into it so far
    rows = []
    for i, d in enumerate(router["router"]["decisions"]):
        adapter = d["adapter"]
        earlier = holder.setdefault(adapter, [])
        if d["action"] == "reuse" and earlier:
            new_acc, own_acc = R[i][i], P[i][i]
            drops = {tasks[a]: round(R[i - 1][a] - R[i][a], 4) for a in earlier}
            right = new_acc >= own_acc - tol and all(v <= tol for v in drops.values())
            rows.append({"task": tasks[i], "adapter": adapter, "confidence": d["confidence"],
                         "family": d.get("family"), "reused_acc": round(new_acc, 4), "own_adapter_acc": round(own_acc, 4),
                         "earlier_drop": drops, "right": bool(right)})
        earlier.append(i)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench", nargs="+", help="bench output directories, or folders of kept results-<strategy>.json")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--suffix", default="", help="judge the runs named router<suffix> against per-task<suffix> "
                    "(e.g. '+head': the product's answer, each task's head mixed in)")
    ap.add_argument("--rate", default=None, help="in a folder of the queue's runs (<strategy>-lr<rate>-s<seed>/), only "
                    "this rate's (e.g. 0.001)")
    ap.add_argument("--out", default="bench_outcomes")
    a = ap.parse_args()
    rows = []
    for bench in map(Path, a.bench):
        pairs = [(run.name, run / f"router{a.suffix}" / "results.json", run / f"per-task{a.suffix}" / "results.json")
                 for run in sorted(bench.glob("seed*-order*"))]
        pairs.append((bench.name, bench / f"results-router{a.suffix}.json", bench / f"results-per-task{a.suffix}.json"))
        # the queue's layout (headline_queue.sh): <strategy><suffix>-lr<rate>-s<seed>/results.json, paired by rate and seed
        for run in sorted(bench.glob(f"router{a.suffix}-lr{a.rate or '*'}-s*")):
            tail = run.name[len(f"router{a.suffix}"):]  # -lr<rate>-s<seed>: the per-task run of that rate and seed
            pairs.append((run.name, run / "results.json", bench / f"per-task{a.suffix}{tail}" / "results.json"))
        for name, r, p in pairs:
            if r.is_file() and p.is_file():
                router = json.loads(r.read_text())
                for row in judge(router, json.loads(p.read_text()), a.tolerance):
                    rows.append({"run": name, "seed": router.get("config", {}).get("seed"), **row})
    right = sum(r["right"] for r in rows)
    print("| run | task | reused | confidence | B reused / own adapter | earlier tasks lost (points) | reuse right? |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        drops = ", ".join(f"{k} {100 * v:+.1f}" for k, v in r["earlier_drop"].items())
        print(f"| {r['run']} | {r['task']} | {r['adapter']} | {r['confidence']:.2f} | {r['reused_acc']:.3f} / "
              f"{r['own_adapter_acc']:.3f} | {drops} | {'yes' if r['right'] else '**no**'} |")
    print(f"\nreuse right by outcome: {right} of {len(rows)} (tolerance {a.tolerance})")
    save(a.out, {"bench": [str(b) for b in a.bench], "suffix": a.suffix, "tolerance": a.tolerance, "rows": rows, "right": right, "n": len(rows)})


if __name__ == "__main__":
    main()
