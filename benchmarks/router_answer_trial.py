"""The answer trial: do stored adapters that already answer a new task get it, and only those?

A library of real trained adapters (``alearn learn`` at its defaults, one per catalog task given with
``--library``) and new tasks: the user-style CSV tasks of ``per_task_quality.py`` (catalog data under
new descriptions and label names of several words) and the catalog's single-text tasks. Each new task
is decided against the library **without the adapter of its own source dataset** (so reuse is right
only into an adapter of the same family from another dataset; with none, new is right) and, for the
CSV tasks, **with** it (the same inputs asked in other words: reuse of a same-family adapter is
right). Each decision is made with the answer trial (today's router); without it (the router before)
the decision is the same except where the trial turned a new adapter into a reuse. The trial's
figures for every candidate asked are kept (adapter's mapped accuracy / the backbone's / p-value).

    python benchmarks/router_answer_trial.py --library runs/maplib --out router_answer_trial
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from adaptive_learner.learner import Learner
from adaptive_learner.tasks import load_catalog_task
from common import machine, save
from per_task_quality import CSV_TASKS, csv_task

CATALOG_SINGLE = ["sst2", "imdb", "rotten_tomatoes", "sms_spam", "trec", "bbc_news"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", required=True)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    learner = Learner(args.library, create=False)
    lib = learner.library
    adapters = {info["adapter"]: t for t, info in lib.tasks.items()}  # adapter -> its (first) task
    family = {a: lib.task_spec(t).family for a, t in adapters.items()}
    source_adapter = {t: a for a, t in adapters.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [(csv_task(n, src, d, m, Path(tmp)), src) for n, src, d, m in CSV_TASKS]
        tasks += [(load_catalog_task(t), t) for t in CATALOG_SINGLE]
        for task, source in tasks:
            fam = load_catalog_task(source).spec.family
            settings = [("without source", [a for a in adapters if a != source_adapter.get(source)])]
            if task.name != source and source in source_adapter:
                settings.append(("with source", list(adapters)))
            for setting, only in settings:
                kin = [a for a in only if family[a] == fam]
                t0 = time.perf_counter()
                d = learner.decide(task, only=only)
                seconds = time.perf_counter() - t0
                t0 = time.perf_counter()
                plain = learner.decide(task, only=only, answer_trial=False)  # the same signals, no trial
                seconds_plain = time.perf_counter() - t0
                asked = {c.adapter: {k: round(v, 4) for k, v in c.evidence.items() if k.startswith("answer_")}
                         for c in d.candidates if "answer_p" in c.evidence}
                by_answers = d.action == "reuse" and bool(asked) and "already answers" in d.explanation
                # the same signals without the trial: the same decision, or new where the trial reused
                assert (plain.action == "new") if by_answers else ((plain.action, plain.adapter) == (d.action, d.adapter))
                # the router without the trial: the same signals, so the same decision, except that a reuse
                # the trial made would have been a new adapter
                for label, action in (("answer trial", d.action), ("signals only", "new" if by_answers else d.action)):
                    adapter = d.adapter if action == "reuse" else None
                    right = (family.get(adapter) == fam) if action == "reuse" else not kin
                    rows.append({"task": task.name, "source": source, "family": fam, "library": setting,
                                 "router": label, "same_family_stored": kin, "action": action, "adapter": adapter,
                                 "confidence": round(d.confidence, 4) if label == "answer trial" or not by_answers
                                 else None, "right_by_family": bool(right), "answer_trial": asked,
                                 "explanation": d.explanation, "seconds": round(seconds, 3),
                                 "seconds_without_trial": round(seconds_plain, 3)})
                    print(f"{task.name:16s} {setting:15s} {label:13s} {action:5s} {str(adapter):16s} "
                          f"right={right} " + (" ".join(
                              f"{a}:{r['answer_acc']:.2f}/{r['answer_base_acc']:.2f}/p={r['answer_p']:.3f}"
                              for a, r in asked.items()) if label == "answer trial" else ""), flush=True)
    summary = {}
    for label in ("answer trial", "signals only"):
        mine = [r for r in rows if r["router"] == label]
        summary[label] = {"right": sum(r["right_by_family"] for r in mine), "of": len(mine),
                          "wrong_reuses": sum(r["action"] == "reuse" and not r["right_by_family"] for r in mine),
                          "missed_reuses": sum(r["action"] == "new" and not r["right_by_family"] for r in mine)}
        print(label, summary[label])
    ran = [r for r in rows if r["router"] == "answer trial" and r["answer_trial"]]
    if ran:
        extra = [r["seconds"] - r["seconds_without_trial"] for r in ran]
        summary["trial_seconds"] = {"decisions_with_a_trial": len(ran), "median_extra_s": float(np.median(extra)),
                                    "max_extra_s": float(np.max(extra)),
                                    "median_decision_s_without": float(np.median([r["seconds_without_trial"]
                                                                                  for r in ran]))}
        print("trial cost", summary["trial_seconds"])
    if args.out:
        save(args.out, {"machine": machine(), "library": args.library, "rows": rows, "summary": summary,
                        "adapters": adapters})


if __name__ == "__main__":
    main()
