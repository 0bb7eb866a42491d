"""Ground truth by outcome (issue 13, item 2): for a task B arriving after a task A, is reusing A's
adapter right? Train it both ways and look.

For each pair A:B (same family from another dataset, or a sample of other families): A is learned
into a library with a new adapter (``Learner.learn(force_new=True)``, today's defaults, adapters alone:
no head); then, in a copy of that library,
- the router's decision for B is recorded (``dry_run``: action, adapter, confidence),
- **reuse**: B is learned into A's adapter, protected by EWC + replay as the product does on reuse;
  A and B are scored after;
- **new**: B is learned into a new adapter (fresh, as the router's new adapters start), scored after.
Reuse is *right* when A's accuracy drops by at most ``--tolerance`` (1 point) and B's accuracy with the
reused adapter is within ``--tolerance`` of B's with its own. Then: how often the family (same family =
reuse) agrees with the outcome, and the router's accuracy against each.

    OMP_NUM_THREADS=1 python benchmarks/reuse_outcome.py --pairs mrpc:stsb,stsb:mrpc,cb:rte,rte:cb \\
        --n-train 160 --max-test 200 --out reuse_outcome
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import machine, peak_rss_gb, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", default="mrpc:stsb,stsb:mrpc,cb:rte,rte:cb")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--work", default="../runs/reuse-outcome", help="libraries are kept here (and reused)")
    ap.add_argument("--out", default="reuse_outcome")
    a = ap.parse_args()

    from adaptive_learner import Learner
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.tasks import load_catalog_task
    from adaptive_learner.training import TrainConfig

    pairs = [tuple(p.split(":")) for p in a.pairs.split(",") if p]
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = replace(TrainConfig(), head=False, seed=a.seed)
    tasks: dict[str, Any] = {}

    def task(name: str) -> Any:
        if name not in tasks:
            tasks[name] = load_catalog_task(name).subsample(a.n_train, a.max_test, a.seed)
        return tasks[name]

    def learner(path: Path) -> Any:
        return Learner(path, backbone=load_backbone(a.backbone, seed=a.seed), train=cfg)

    def alone(name: str) -> tuple[Path, float, float]:
        """A library holding only ``name``'s new adapter; (path, its accuracy, training seconds)."""
        path = work / f"alone-{name}"
        marker = path / "accuracy.txt"
        if not marker.is_file():
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.perf_counter()
            out = learner(path).learn(task(name), force_new=True, eval_limit=None)
            marker.write_text(f"{out.accuracy_after} {time.perf_counter() - t0:.1f}")
        acc, secs = marker.read_text().split()
        return path, float(acc), float(secs)

    rows = []
    for A, B in pairs:
        lib_a, acc_a, _ = alone(A)
        _, acc_b_new, secs_new = alone(B)
        path = work / f"reuse-{A}-{B}"
        done = path / "outcome.json"
        if done.is_file():  # a finished pair is kept with its row (the libraries above are kept too)
            rows.append(json.loads(done.read_text()))
            print(rows[-1], flush=True)
            continue
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(lib_a, path)
        lrn = learner(path)
        d = lrn.learn(task(B), dry_run=True)
        t0 = time.perf_counter()
        lrn.learn(task(B), reuse=f"lora-{A}", eval_limit=None)
        secs_reuse = time.perf_counter() - t0
        acc_b_reuse = lrn.evaluate(task(B), f"lora-{A}")
        acc_a_after = lrn.evaluate(task(A), f"lora-{A}")
        same_family = task(A).spec.family == task(B).spec.family
        right = acc_a_after >= acc_a - a.tolerance and acc_b_reuse >= acc_b_new - a.tolerance
        rows.append({"A": A, "B": B, "same_family": same_family, "router": d.action,
                     "router_adapter": d.adapter, "router_confidence": round(d.confidence, 4),
                     "A_before": acc_a, "A_after_reuse": acc_a_after, "B_new": acc_b_new, "B_reuse": acc_b_reuse,
                     "reuse_right": bool(right), "seconds_new": secs_new, "seconds_reuse": round(secs_reuse, 1),
                     "n_test": [len(task(A).test), len(task(B).test)]})
        done.write_text(json.dumps(rows[-1]))
        print(rows[-1], flush=True)
        save(a.out, {"machine": machine(), "args": vars(a), "rows": rows, "complete": False})
    n = len(rows)
    truth_outcome = [("reuse" if r["reuse_right"] else "new") for r in rows]
    truth_family = [("reuse" if r["same_family"] else "new") for r in rows]
    router = [r["router"] for r in rows]
    summary = {
        "family_outcome_agreement": sum(f == o for f, o in zip(truth_family, truth_outcome)) / n,
        "router_vs_outcome": sum(r == o for r, o in zip(router, truth_outcome)) / n,
        "router_vs_family": sum(r == f for r, f in zip(router, truth_family)) / n, "n": n}
    save(a.out, {"machine": machine(), "peak_rss_gb": peak_rss_gb(), "args": vars(a), "rows": rows,
                 "summary": summary, "complete": True})
    print("| A | B | same family | router (conf.) | A before | A after reuse | B new | B reused | reuse right |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['A']} | {r['B']} | {'yes' if r['same_family'] else 'no'} | {r['router']} "
              f"({r['router_confidence']:.2f}) | {r['A_before']:.3f} | {r['A_after_reuse']:.3f} | {r['B_new']:.3f} "
              f"| {r['B_reuse']:.3f} | {'yes' if r['reuse_right'] else 'no'} |")
    print(summary)


if __name__ == "__main__":
    main()
