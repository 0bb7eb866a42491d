"""Which encoder views the task head chooses, per task, with the text view and by each rule, and by default.

``alearn learn`` fits a linear head on the frozen backbone's features beside each adapter and may add
a sentence encoder's views (``text``: the input as one text, an option; ``pair``: how two fields relate)
by the head's cross-validated log loss on the training part of the examples (``training/head.py``,
``choose_views``). This script runs only that choice, on exactly the examples
``per_task_quality.py`` gives ``fit_task_head`` (same subsample, same held-out split), without training
an adapter: the adapter does not depend on the head, so a task whose chosen views are the same under two
rules gets the same head, the same mix and the same test answers, and only the tasks whose choice
changed need ``per_task_quality.py`` again. Every view the input allows is a candidate (``text`` and ``pair``, as
``per_task_quality.py --head-views text,pair``): ``chosen`` is the one-standard-error rule's choice (in
the first two result files, written before that rule, the lowest loss's), ``lowest`` the lowest
cross-validated loss's, ``before`` the default's (the pair view alone, lowest loss), ``gated`` the gated rule's (the text view added
only where the head's cross-validated answers with it beat the default's by a McNemar test at 5%; from
session 19; ``gate``: its counts, ``cv_accuracy``: each candidate's).

    OMP_NUM_THREADS=1 python view_choice.py --n-train 160 --out view_choice_160
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from adaptive_learner.backbone import load_backbone
from adaptive_learner.features import text_encoder
from adaptive_learner.prompting import encode_examples
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.training import TrainConfig
from adaptive_learner.training.head import choose_views, default_layer, encoder_views, prompt_features, views_for
from adaptive_learner.training.trainer import split_validation
from common import machine, save
from per_task_quality import CATALOG, CSV_TASKS, csv_task


def lowest(losses: dict[str, float], among: tuple[str, ...] | None = None) -> list[str]:
    """The ``min`` rule's views from :func:`choose_views`'s losses (keys ``backbone+view+...``): the lowest
    loss, ties to fewer views; ``among``: only the candidates of these keys (the default's: the backbone
    alone or with the pair view)."""
    pool = {k: v for k, v in losses.items() if among is None or k in among}
    best = min(pool, key=lambda k: (round(pool[k], 6), k.count("+")))
    return best.split("+")[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--tasks", default=",".join(CATALOG))
    ap.add_argument("--csv-tasks", default=",".join(t[0] for t in CSV_TASKS))
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    cfg = TrainConfig()
    backbone = load_backbone(a.backbone)
    tok = backbone.tokenizer
    enc = text_encoder(a.encoder)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [load_catalog_task(n) for n in a.tasks.split(",") if n]
        wanted = [n for n in a.csv_tasks.split(",") if n]
        tasks += [csv_task(*t, Path(tmp)) for t in CSV_TASKS if t[0] in wanted]
        for task in tasks:
            task = task.subsample(a.n_train, a.max_test, a.seed)
            items = encode_examples(tok, task.spec, task.train, cfg.max_length)
            train, val = split_validation(items, cfg)
            t0 = time.perf_counter()
            layer = default_layer(backbone.model)
            f_train = prompt_features(backbone.model, train, layer, tok.pad_token_id)
            allowed = views_for(items)
            v_train = dict(zip(allowed, encoder_views(allowed, enc, train)))
            y, n_labels = [it.label for it in train], len(task.spec.label_names)
            chosen, losses = choose_views(f_train, v_train, y, n_labels, rule="one-se")
            details: dict = {}
            gated, _ = choose_views(f_train, v_train, y, n_labels, rule="gated", details=details)
            low = lowest(losses)
            row = {"task": task.name, "n_train": len(items), "fit_on": len(train), "held_out": len(val),
                   "chosen": list(chosen), "lowest": low, "before": lowest(losses, ("backbone", "backbone+pair")),
                   "gated": list(gated), "cv_log_loss": {k: round(v, 4) for k, v in losses.items()}, **details,
                   "seconds": round(time.perf_counter() - t0, 1)}
            row["changed"] = row["chosen"] != row["before"]
            rows.append(row)
            print(f"{task.name:16s} n={len(items)} chosen {'+'.join(chosen) or '-':10s} lowest "
                  f"{'+'.join(low) or '-':10s} before "
                  f"{'+'.join(row['before']) or '-':6s} {'CHANGED' if row['changed'] else 'same'} "
                  f"gated {'+'.join(gated) or '-':10s} {row.get('gate')} {row.get('cv_accuracy')} "
                  f"{row['cv_log_loss']} ({row['seconds']} s)", flush=True)
            if a.out:
                save(a.out, {"machine": machine(), "n_train": a.n_train, "seed": a.seed, "encoder": a.encoder,
                             "rows": rows, "complete": False})
    if a.out:
        save(a.out, {"machine": machine(), "n_train": a.n_train, "seed": a.seed, "encoder": a.encoder,
                     "rows": rows, "complete": True,
                     "changed": [r["task"] for r in rows if r["changed"]]})


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
