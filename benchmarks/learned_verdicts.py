"""Does the held-out verdict (what the router knows) agree with the test split (what it cannot see)?

The router does not offer an adapter for reuse when the adapter learned none of its tasks, judged
as the library judges it after training: the held-out accuracy of the kept weights against the
held-out split's majority-class rate (``training.trainer.adapter_learned``: one-sided 95% Wilson
bound above the rate, or at least half of the rate's errors removed; the second condition since session
38). This script recomputes that verdict for stored ``per_task_quality.py``
runs (their held-out curves and kept steps; the held-out split rebuilt exactly as training split it)
and sets it beside the test-split verdict of ``learnability.py`` (accuracy at least 5 points above
the test majority rate with the two-sided 95% interval clear of it). No training.

    python benchmarks/learned_verdicts.py results/per_task_quality_160_head_a.json \\
        results/per_task_quality_160_head_b.json --out learned_verdicts_160
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import save
from learnability import verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="per_task_quality.py results (catalog tasks)")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--out", default="learned_verdicts")
    a = ap.parse_args()
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.prompting import encode_examples
    from adaptive_learner.tasks import load_catalog_task
    from adaptive_learner.tasks.catalog import CATALOG
    from adaptive_learner.training import TrainConfig
    from adaptive_learner.training.trainer import held_out_majority, learned_verdict, split_validation

    tok = load_backbone(a.backbone).tokenizer
    rows = []
    for f in a.results:
        doc = json.loads(Path(f).read_text())
        for r in doc["rows"]:
            ours = r.get("ours") or {}
            if r["task"] not in CATALOG or not ours.get("validation"):
                continue
            n_train = r.get("n_train", doc.get("n_train", 160))
            seed = doc.get("seed", 0)
            cfg = TrainConfig(seed=seed)
            task = load_catalog_task(r["task"]).subsample(n_train, r["n_test"], seed)
            _, val = split_validation(encode_examples(tok, task.spec, task.train, cfg.max_length), cfg)
            majority = held_out_majority(val)
            kept = [v["accuracy"] for v in ours["validation"] if v["step"] == ours["best_step"]][0]
            held = learned_verdict(kept, majority, len(val))
            test = verdict(ours["accuracy"], r["majority"], r["n_test"])
            rows.append({"task": r["task"], "held_out_n": len(val), "held_out_majority": round(majority, 4),
                         "held_out_kept": kept, "held_out_verdict": held, "test": round(ours["accuracy"], 4),
                         "test_majority": r["majority"], "test_n": r["n_test"], "test_verdict": test,
                         "agree": held == test})
    lines = ["| task | held-out n | held-out majority | held-out acc (kept) | learned (held-out) | test acc | "
             "test majority | learned (test) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['held_out_n']} | {r['held_out_majority']:.3f} | {r['held_out_kept']:.3f} | "
                     f"{'yes' if r['held_out_verdict'] else 'no'} | {r['test']:.3f} | {r['test_majority']:.3f} | "
                     f"{'yes' if r['test_verdict'] else 'no'} |")
    agree = sum(r["agree"] for r in rows)
    out = {"rows": rows, "agree": agree, "n": len(rows), "table": "\n".join(lines)}
    path = save(a.out, out)
    print(out["table"])
    print(f"held-out and test verdicts agree on {agree} of {len(rows)}; results: {path}")


if __name__ == "__main__":
    main()
