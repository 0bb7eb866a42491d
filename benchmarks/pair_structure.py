"""A lead for issue 13 (signals that survive a change of dataset): how the two fields of a pair task
relate, measured per task on its training examples, with no backbone.

For each pair task: the mean log ratio of the fields' lengths in words (second over first), the
MiniLM cosine of the two fields (mean and sd, and per label), and how well that cosine alone tells
the labels apart (one-vs-rest ROC AUC per label). Paraphrase and similarity tasks pair sentences of
one kind (length ratio near 0) whose cosine predicts the label; entailment and QA pair a long text
with a short one. Not a router signal yet: measured, not fitted.

    python benchmarks/pair_structure.py --tasks mrpc,stsb,rte,cb,boolq --n 192 --out pair_structure
"""

from __future__ import annotations

import argparse

import numpy as np

from common import save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="mrpc,stsb,rte,cb,boolq")
    ap.add_argument("--n", type=int, default=192, help="training examples per task (stratified)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="pair_structure")
    a = ap.parse_args()

    from sklearn.metrics import roc_auc_score

    from adaptive_learner.features import pair_structure, text_encoder
    from adaptive_learner.tasks import load_catalog_task
    from adaptive_learner.tasks.spec import stratified_take

    enc = text_encoder("minilm")
    rows_out = []
    print("| task | family | length ratio (log, 2nd/1st) | cosine mean (sd) | cosine per label | AUC of the cosine per label |")
    print("|---|---|---|---|---|---|")
    for name in [t for t in a.tasks.split(",") if t]:
        t = load_catalog_task(name)
        if len(t.spec.input_fields) < 2:
            continue
        rows = stratified_take(t.train, a.n, a.seed)
        ratio, cos = pair_structure(enc, t.spec, rows).T  # the router's own measure
        y = np.array([r.label for r in rows])
        labels = sorted(set(y.tolist()))
        per = {t.spec.label_names[k]: round(float(cos[y == k].mean()), 3) for k in labels}
        auc = {t.spec.label_names[k]: round(float(roc_auc_score(y == k, cos)), 3) for k in labels}
        row = {"task": name, "family": t.spec.family, "n": len(rows), "log_length_ratio": round(float(ratio.mean()), 3),
               "cos_mean": round(float(cos.mean()), 3), "cos_sd": round(float(cos.std()), 3), "cos_per_label": per,
               "auc_per_label": auc}
        rows_out.append(row)
        print(f"| {name} | {row['family']} | {row['log_length_ratio']:+.2f} | {row['cos_mean']:.3f} ({row['cos_sd']:.3f}) | "
              + ", ".join(f"{k} {x:.3f}" for k, x in per.items()) + " | "
              + ", ".join(f"{k} {x:.2f}" for k, x in auc.items()) + " |")
    save(a.out, {"args": vars(a), "rows": rows_out})


if __name__ == "__main__":
    main()
