"""Training settings compared on recorded curves, under the trainer's own stopping rule.

Each arm is one or more ``learnability.py --train --held-out`` results made with one training setting (a rate,
LoRA+, ...) on the same tasks, examples and seed: the held-out curve and which test examples were right every
``eval_every`` steps. ``stopping_rules.replay`` runs a stopping rule on each arm's held-out curve (by default
the trainer's: ``acc:4``, the held-out accuracy with patience 4), so each arm is read where training would
have stopped and kept, without training again; what it cost is the step it stops at. The arms are paired on
the test examples (bootstrap over each task's examples, mean over tasks) against the first.

    python curve_arms.py lr1e-3=results/stopping_curves_lr1e-3_s47.json \\
        lp16-lr1e-3=results/stopping_curves_lr1e-3_lp16_s47.json --out curve_arms_lp16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from common import save
from stopping_rules import paired_ci, replay, right_at


def read_arm(files: list[str]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for f in files:
        doc = json.loads(Path(f).read_text())
        if not doc.get("held_out"):
            raise SystemExit(f"error: {f} was not made with --held-out")
        tc = doc.get("train_config", {})  # files finished before session 47 keep it only while partial
        rows.update({r["task"]: {**r, "lr": tc.get("lr"), "lora_plus_ratio": tc.get("lora_plus_ratio")}
                     for r in doc["rows"] if r.get("held_out_curve")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("arms", nargs="+", help="NAME=FILE[,FILE...]; the first arm is the reference")
    ap.add_argument("--rule", default="acc:4", help="stopping rule replayed (stopping_rules.py's syntax)")
    ap.add_argument("--cap", type=int, default=200, help="the step cap the rule runs under")
    ap.add_argument("--out", default="curve_arms")
    a = ap.parse_args()
    arms = {}
    for spec in a.arms:
        name, _, files = spec.partition("=")
        if not files:
            raise SystemExit(f"error: {spec!r} is not NAME=FILE[,FILE...]")
        arms[name] = read_arm(files.split(","))
    tasks = [t for t in next(iter(arms.values())) if all(t in rows for rows in arms.values())]
    if not tasks:
        raise SystemExit("error: no task is in every arm")
    out: dict[str, Any] = {"rule": a.rule, "cap": a.cap, "tasks": tasks, "arms": {}}
    ref = None
    for name, rows in arms.items():
        per, vecs = [], []
        for t in tasks:
            r = rows[t]
            kept, stop = replay(a.rule, r["held_out_curve"], a.cap)
            v = right_at(r, kept)
            vecs.append(v)
            by = {c["step"]: c["accuracy"] for c in r["curve"] if c["step"] <= a.cap}
            per.append({"task": t, "kept": kept, "stopped": stop, "test": round(float(v.mean()), 4),
                        "best_on_curve": max(by.values()), "at_cap": by[max(by)]})
        ref = ref or vecs
        lo, hi = paired_ci(vecs, ref)
        mean = float(np.mean([v.mean() for v in vecs]))
        out["arms"][name] = {"lr": rows[tasks[0]]["lr"], "lora_plus_ratio": rows[tasks[0]]["lora_plus_ratio"],
                             "mean_test": round(mean, 4), "mean_stop_step": float(np.mean([p["stopped"] for p in per])),
                             "minus_first": round(mean - float(np.mean([v.mean() for v in ref])), 4),
                             "interval": [round(lo, 4), round(hi, 4)], "per_task": per}
    lines = [f"rule {a.rule}, cap {a.cap}; tasks {', '.join(tasks)}",
             "| arm | lr | LoRA+ ratio | " + " | ".join(f"{t}: kept test (kept/stop step)" for t in tasks)
             + " | mean | minus the first [95% CI] | mean stop step |",
             "|" + "---|" * (len(tasks) + 6)]
    for name, r in out["arms"].items():
        cells = [f"{p['test']:.3f} ({p['kept']}/{p['stopped']})" for p in r["per_task"]]
        lines.append(f"| {name} | {r['lr'] or '?'} | {r['lora_plus_ratio'] or '?'} | " + " | ".join(cells)
                     + f" | {r['mean_test']:.3f} | {100 * r['minus_first']:+.1f} [{100 * r['interval'][0]:+.1f}, "
                       f"{100 * r['interval'][1]:+.1f}] | {r['mean_stop_step']:.0f} |")
    print("\n".join(lines))
    out["table"] = lines
    save(a.out, out)


if __name__ == "__main__":
    main()
