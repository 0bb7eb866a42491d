"""The router's decisions for user-style tasks: catalog data under the user's own words and labels.

Each task of ``per_task_quality.CSV_TASKS`` is a catalog dataset written to CSV with a new
description and new label names of several words ("recommended" / "not recommended" for film
critics' snippets), loaded as a user's file task. Its k examples are the probe; the library is the
router bank's stored catalog profiles (one adapter per task), either **with** the source dataset (the
same inputs asked in other words: reuse of the source's adapter, or of another of its family, is
right) or **without** it (reuse is right only into a task of the same family from another dataset;
with no such task, new is right). The shipped combiner decides (``alearn learn``'s default router).

    python benchmarks/router_user_tasks.py --bank runs/router-eval-v3/bank --out router_user_tasks
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.evaluation.router_bank import load_bank
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.service import LibraryRouter
from adaptive_learner.tasks import load_catalog_task
from common import machine, save
from per_task_quality import CSV_TASKS, csv_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    bank, _ = load_bank(Path(args.bank))
    router = LibraryRouter(AdapterHost(load_backbone(args.backbone)))
    family = {t: b.family for t, b in bank.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, source, description, mapping in CSV_TASKS:
            task = csv_task(name, source, description, mapping, Path(tmp))
            probe = router.probe(task)
            fam = load_catalog_task(source).spec.family
            for with_source in (True, False):
                lib = [t for t in sorted(bank) if with_source or t != source]
                profiles = [TaskProfile(t, f"lora-{t}", bank[t].profile) for t in lib]
                d = router.decider.decide(probe, profiles)
                kin = [t for t in lib if family[t] == fam]
                reused = next((c.task for c in d.candidates if c.adapter == d.adapter), None) if d.action == "reuse" else None
                right = (family.get(reused) == fam) if d.action == "reuse" else not kin
                rows.append({"task": name, "source": source, "family": fam, "library": "with source" if with_source
                             else "without source", "same_family_stored": kin, "action": d.action,
                             "adapter": d.adapter, "reused_task": reused, "confidence": round(d.confidence, 3),
                             "right_by_family": bool(right), "explanation": d.explanation})
                print(f"{name:15s} {rows[-1]['library']:15s} {d.action:5s} {str(d.adapter):22s} "
                      f"{d.confidence:.2f} right={right}  (same family stored: {','.join(kin) or '-'})", flush=True)
    acc = sum(r["right_by_family"] for r in rows) / len(rows)
    print(f"right by family: {sum(r['right_by_family'] for r in rows)}/{len(rows)} = {acc:.3f}")
    if args.out:
        save(args.out, {"machine": machine(), "bank": args.bank, "backbone": args.backbone, "rows": rows,
                        "right_by_family": acc})


if __name__ == "__main__":
    main()
