"""Label scoring modes side by side on the untrained backbone: first-token, mean and sum.

Zero-shot accuracy of each mode on the same test examples of every catalog task and every
user-style CSV task with multi-word labels (the tasks of ``per_task_quality.py``). The trained
comparison is ``per_task_quality.py --label-scoring MODE``.

    python benchmarks/label_scoring.py --max-test 200 --out label_scoring
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import LABEL_SCORING, encode_examples
from adaptive_learner.scoring import accuracy, score
from adaptive_learner.tasks import load_catalog_task
from common import machine, save
from per_task_quality import CATALOG, CSV_TASKS, csv_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    backbone = load_backbone(a.backbone)
    tok = backbone.tokenizer
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [load_catalog_task(n) for n in CATALOG] + [csv_task(*t, Path(tmp)) for t in CSV_TASKS]
        for task in tasks:
            task = task.subsample(None, a.max_test, 0)
            row = {"task": task.name, "verbalizers": task.spec.verbalizers}
            for mode in LABEL_SCORING:
                items = encode_examples(tok, task.with_label_scoring(mode).spec, task.test, 256)
                row[mode] = round(accuracy(score(backbone.model, items, tok.pad_token_id), items), 4)
                if mode == "first-token":
                    row["first-token effective"] = "first-token" if not items[0].normalise else "mean"
            rows.append(row)
            print(row, flush=True)
    lines = ["| task | verbalizers | " + " | ".join(LABEL_SCORING) + " |", "|---" * (2 + len(LABEL_SCORING)) + "|"]
    for r in rows:
        lines.append(f"| {r['task']} | {' /'.join(r['verbalizers'])} | " + " | ".join(f"{r[m]:.3f}" for m in LABEL_SCORING) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{np.mean([r[m] for r in rows]):.3f}**" for m in LABEL_SCORING) + " |")
    print("\n".join(lines))
    if a.out:
        save(a.out, {"machine": machine(), "max_test": a.max_test, "rows": rows})


if __name__ == "__main__":
    main()
