"""Which stored bench runs would `--lr-retries` have changed? No training.

A retry happens only where the kept weights of a task's training call did not learn it
(``training.trainer.worth_retrying``: the kept step's held-out accuracy neither clear of the held-out
majority-class rate by a one-sided 95% Wilson bound nor halfway from it to 1). This script rebuilds each
run's held-out split exactly as training split it (``prepare_tasks`` and ``split_validation`` at the run's
seed), reads the kept step's held-out accuracy from the run's recorded curves, and lists every task call
that would be retried:
at ``--lr-retries 1`` those calls, and everything after them in the run, would differ; every other run is
what ``--lr-retries 1`` computes too. Runs with one training call per task only (not mtl).

    python benchmarks/retry_triggers.py results/bench-headline-acc*/results-*.json \\
        results/bench-headline-head{,-seed?,-tv-seed?}/results-*.json --out retry_triggers_headline
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from common import save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="results.json of bench runs (with held-out curves)")
    ap.add_argument("--out", default="retry_triggers")
    a = ap.parse_args()
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.evaluation.config import RunConfig
    from adaptive_learner.evaluation.harness import prepare_tasks
    from adaptive_learner.prompting import encode_examples
    from adaptive_learner.training import TrainConfig
    from adaptive_learner.training.trainer import (TrainReport, adapter_learned, held_out_majority, kept_point,
                                                   split_validation, worth_retrying)

    runs, splits, toks = [], {}, {}
    for path in a.results:
        doc = json.loads(Path(path).read_text())
        reps, names = doc.get("train_reports", []), doc["tasks"]
        if len(reps) != len(names) or not all("validation" in r for r in reps):
            print(f"skipped {path}: not one training call per task with its held-out curve")
            continue
        c = doc["config"]
        train = TrainConfig.from_dict(c["train"])
        key = (c["sequence"], c["backbone"], c["max_train"], c["max_test"], c["seed"])
        if key not in splits:
            rc = RunConfig(sequence=c["sequence"], backbone=c["backbone"], max_train=c["max_train"],
                           max_test=c["max_test"], seed=c["seed"], train=train)
            tok = toks.setdefault(c["backbone"], load_backbone(c["backbone"]).tokenizer)
            splits[key] = {}
            for t in prepare_tasks(rc):
                val = split_validation(encode_examples(tok, t.spec, t.train, train.max_length), train)[1]
                splits[key][t.name] = (len(val), held_out_majority(val))
        calls = []
        for name, rep in zip(names, reps):
            n, majority = splits[key][name]
            # the stored report as the trainer's own: judged by the same functions that decide a retry
            judged = TrainReport(0, 0, 0, 0.0, 0.0, [], validation=rep["validation"], best_step=rep.get("best_step"),
                                 val_majority=majority, val_size=n)
            kept = kept_point(judged)
            calls.append({"task": name, "held_out_n": n, "majority": majority,
                          "kept_accuracy": kept["accuracy"] if kept else None, "learned": adapter_learned(judged),
                          "retry": worth_retrying(judged)})
        retried = [x["task"] for x in calls if x["retry"]]
        runs.append({"file": str(path), "strategy": doc.get("strategy"), "seed": c["seed"], "lr": train.lr,
                     "avg_acc": doc["metrics"]["avg_acc"], "calls": calls, "would_retry": retried})
        print(f"{path}: {', '.join(retried) if retried else 'no retry'}")
    n_calls = sum(len(r["calls"]) for r in runs)
    n_retry = sum(len(r["would_retry"]) for r in runs)
    by_task = Counter(t for r in runs for t in r["would_retry"])
    print(f"{n_retry} of {n_calls} task calls in {len(runs)} runs would be trained again; by task: {dict(by_task)}; "
          f"runs unchanged: {sum(not r['would_retry'] for r in runs)} of {len(runs)}")
    save(a.out, {"runs": runs, "calls": n_calls, "retried": n_retry, "by_task": dict(by_task)})


if __name__ == "__main__":
    main()
