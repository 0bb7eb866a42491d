"""Zero-shot accuracy of a user's CSV task under candidate default prompt templates.

A task loaded from a user's file gets a generic template (``tasks/files.py``, ``default_template``): the
description line, one line per text column, then ``Answer:``. The catalog's hand-written templates name
what is asked ("Sentiment:", "Spam:") and start from a prior the generic one lacks (sst2 0.760 against
0.510). Here each catalog task (its labels under their names) and each user-style CSV task of
``per_task_quality.py`` is written as CSV, loaded as ``alearn learn --data`` loads it, and scored by the
frozen backbone under each candidate template, with and without contextual calibration (Zhao et al.
2021: each label's score on a content-free input, every field "N/A", subtracted), on the same test
examples. Only what a user's file gives is used: column names, label names, the description.

    python benchmarks/csv_templates.py --max-test 200 --out csv_templates
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.tasks.spec import Example, TaskData, TaskSpec
from common import machine, save
from per_task_quality import CATALOG, CSV_TASKS, csv_task, esc, fields_lines, with_template


def options(spec: TaskSpec) -> str:
    words = [v.strip() for v in spec.verbalizers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


TEMPLATES = {
    "plain": lambda s: fields_lines(s) + "\nAnswer:",
    "options": lambda s: fields_lines(s) + f"\nAnswer ({esc(options(s))}):",
    "options-line": lambda s: fields_lines(s) + f"\nOptions: {esc(options(s))}\nAnswer:",
}


def label_scores(host: AdapterHost, task: TaskData, examples: list[Example]) -> np.ndarray:
    """(n, labels): log-probabilities over the task's labels (normalised among them)."""
    items = encode_examples(host.backbone.tokenizer, task.spec, examples, 256)
    with host.using(None) as m:
        s = np.array(score(m, items, host.backbone.tokenizer.pad_token_id), dtype=np.float64)
    return s - np.logaddexp.reduce(s, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--tasks", default=",".join(CATALOG))
    ap.add_argument("--csv-tasks", default=",".join(t[0] for t in CSV_TASKS))
    ap.add_argument("--templates", default=",".join(TEMPLATES))
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="csv_templates")
    a = ap.parse_args()
    host = AdapterHost(load_backbone(a.backbone))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = [load_catalog_task(n) for n in a.tasks.split(",") if n]
        tasks = [csv_task(f"{t.name}-names", t.name, t.spec.description, {lab: lab for lab in t.spec.label_names},
                          Path(tmp)) for t in sources]
        tasks += [csv_task(*t, Path(tmp)) for t in CSV_TASKS if t[0] in a.csv_tasks.split(",")]
        for task in tasks:
            task = task.subsample(8, a.max_test, a.seed)
            y = np.array([e.label for e in task.test])
            row: dict[str, Any] = {"task": task.name, "labels": task.spec.label_names, "n_test": len(y),
                                   "majority": float(np.bincount(y).max() / len(y))}
            for name in a.templates.split(","):
                t = with_template(task, TEMPLATES[name](task.spec))
                s = label_scores(host, t, task.test)
                cf = label_scores(host, t, [Example({c: "N/A" for c in t.spec.input_fields}, 0)])[0]
                row[name] = float(np.mean(s.argmax(1) == y))
                row[name + "+cc"] = float(np.mean((s - cf).argmax(1) == y))
                row[name + ":right"] = (s.argmax(1) == y).astype(int).tolist()
                row[name + "+cc:right"] = ((s - cf).argmax(1) == y).astype(int).tolist()
            rows.append(row)
            print(f"{task.name:22s} maj {row['majority']:.3f} " + " ".join(
                f"{k} {row[k]:.3f}" for k in row if k in TEMPLATES or k.endswith("+cc")), flush=True)
            save(a.out, {"machine": machine(), "max_test": a.max_test, "seed": a.seed,
                         "templates": {k: TEMPLATES[k](tasks[0].spec) for k in a.templates.split(",")},
                         "rows": rows})
    names = [k for k in rows[0] if k in TEMPLATES or k.endswith("+cc")]
    print(json.dumps({k: round(float(np.mean([r[k] for r in rows])), 4) for k in names}))


if __name__ == "__main__":
    main()
