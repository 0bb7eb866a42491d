"""Two user tasks of different families whose label names only code the answer (0/1, yes/no): reused?

Catalog data written as CSV under a short description and coded label names (``per_task_quality.csv_task``),
each task decided by the shipped decider against each other one stored alone (signals only: no adapters,
so no answer trial). A reuse is right only between tasks of one catalog family.

    python benchmarks/router_coded_labels.py --out router_coded_labels
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.service import LibraryRouter
from adaptive_learner.tasks import load_catalog_task
from common import machine, save
from per_task_quality import csv_task

# name: (source, description, label mapping; None = each catalog label by its index)
TASKS = {
    "movies01": ("sst2", "Classify each text.", {"negative": "0", "positive": "1"}),
    "sms01": ("sms_spam", "Classify each message.", {"ham": "0", "spam": "1"}),
    "questions01": ("trec", "Label the question.", None),
    "news01": ("bbc_news", "Label the article.", None),
    "movies_yn": ("rotten_tomatoes", "Is the review favourable?", {"negative": "no", "positive": "yes"}),
    "sms_yn": ("sms_spam", "Is this message spam?", {"ham": "no", "spam": "yes"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    router = LibraryRouter(AdapterHost(load_backbone(args.backbone)))
    family, probes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (source, description, mapping) in TASKS.items():
            spec = load_catalog_task(source).spec
            mapping = mapping or {n: str(i) for i, n in enumerate(spec.label_names)}
            probes[name] = router.probe(csv_task(name, source, description, mapping, Path(tmp)))
            family[name] = spec.family
    rows = []
    for new in TASKS:
        for stored in TASKS:
            if new == stored:
                continue
            d = router.decider.decide(probes[new], [TaskProfile(stored, f"lora-{stored}", probes[stored])])
            same = family[new] == family[stored]
            rows.append({"new": new, "stored": stored, "same_family": same, "action": d.action,
                         "confidence": round(d.confidence, 3), "right": (d.action == "reuse") == same,
                         "explanation": d.explanation})
            print(f"new {new:12s} stored {stored:12s} same family {same!s:5s} -> {d.action:5s} {d.confidence:.3f}",
                  flush=True)
    wrong = [r for r in rows if r["action"] == "reuse" and not r["same_family"]]
    missed = [r for r in rows if r["action"] == "new" and r["same_family"]]
    print(f"wrong reuses {len(wrong)} of {sum(not r['same_family'] for r in rows)}; "
          f"missed reuses {len(missed)} of {sum(r['same_family'] for r in rows)}")
    if args.out:
        save(args.out, {"machine": machine(), "backbone": args.backbone, "rows": rows, "wrong_reuses": len(wrong),
                        "missed_reuses": len(missed)})


if __name__ == "__main__":
    main()
