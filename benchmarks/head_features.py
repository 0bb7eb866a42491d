"""Which frozen features the task head should see: the backbone's pooled hidden states (today), the
sentence encoder's embedding of the input, and for two-field inputs how the fields relate
([u, v, |u - v|, u * v] of the fields' embeddings, the classic sentence-pair features).

No adapter is trained: each head (L2-regularised logistic regression, its strength chosen by
cross-validation on the training examples, ``choose_l2``) is fitted on the training examples and
scored on the test examples of ``per_task_quality.py`` (the same subsample, seed and sizes).

    cd benchmarks && python head_features.py --tasks sst2,mrpc,rte --n-train 160 --out head_features_160
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from adaptive_learner.backbone import load_backbone
from adaptive_learner.features import text_encoder
from adaptive_learner.prompting import encode_examples
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.training.head import choose_l2, choose_views, default_layer, fit_head, pair_view, prompt_features
from common import machine, save

TASKS = ["sst2", "rotten_tomatoes", "trec", "sms_spam", "mrpc", "stsb", "rte", "cb", "boolq", "imdb", "bbc_news"]


def encoder_views(encoder: Any, spec: Any, examples: list, items: list) -> dict[str, np.ndarray]:
    """The sentence encoder's views of the inputs: ``joined`` (the fields as one text, as the peer sees
    them) and, for two fields, ``pair`` (the head's own :func:`pair_view` of the encoded items)."""
    fields = spec.input_fields
    views = {"joined": encoder.encode(["\n".join(f"{f}: {e.fields[f]}" for f in fields) for e in examples])}
    if len(fields) >= 2:
        views["pair"] = pair_view(encoder, items)
    return views


def head_accuracy(x_train: np.ndarray, y_train: list[int], x_test: np.ndarray, y_test: list[int], n: int
                  ) -> dict[str, Any]:
    l2, _ = choose_l2(x_train, y_train, n)
    head = fit_head(x_train, y_train, n, 0, l2=l2)
    pred = head.log_probs(x_test).argmax(1)
    fixed = fit_head(x_train, y_train, n, 0).log_probs(x_test).argmax(1)
    return {"accuracy": float(np.mean(pred == np.asarray(y_test))), "l2": l2,
            "accuracy_l2_default": float(np.mean(fixed == np.asarray(y_test)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    backbone = load_backbone(a.backbone)
    tok, model = backbone.tokenizer, backbone.model
    layer = default_layer(model)
    encoder = text_encoder("minilm")
    rows = []
    for name in a.tasks.split(","):
        task = load_catalog_task(name).subsample(a.n_train, a.max_test, a.seed)
        spec, n = task.spec, len(task.spec.label_names)
        y_train, y_test = [e.label for e in task.train], [e.label for e in task.test]
        t0 = time.perf_counter()
        items = encode_examples(tok, spec, task.train, a.max_length)
        test = encode_examples(tok, spec, task.test, a.max_length)
        b_train = prompt_features(model, items, layer, tok.pad_token_id)
        b_test = prompt_features(model, test, layer, tok.pad_token_id)
        t_backbone = time.perf_counter() - t0
        t0 = time.perf_counter()
        e_train, e_test = encoder_views(encoder, spec, task.train, items), encoder_views(encoder, spec, task.test, test)
        t_encoder = time.perf_counter() - t0
        sets = {"backbone": (b_train, b_test)}
        for k in e_train:
            sets[k] = (e_train[k], e_test[k])
            sets[f"backbone+{k}"] = (np.concatenate([b_train, e_train[k]], 1), np.concatenate([b_test, e_test[k]], 1))
        if "pair" in e_train:
            sets["backbone+joined+pair"] = (np.concatenate([b_train, e_train["joined"], e_train["pair"]], 1),
                                            np.concatenate([b_test, e_test["joined"], e_test["pair"]], 1))
        chosen = None
        if "pair" in e_train:  # what fit_task_head chooses (on all training examples here, no held-out part)
            views, losses = choose_views(b_train, {"pair": e_train["pair"]}, y_train, n)
            chosen = {"views": list(views), "cv_log_loss": losses}
        counts = np.bincount(y_test, minlength=n)
        row: dict[str, Any] = {"task": name, "n_train": len(y_train), "n_test": len(y_test),
                               "majority": round(float(counts.max() / counts.sum()), 4),
                               "seconds": {"backbone": round(t_backbone, 1), "encoder": round(t_encoder, 1)},
                               "heads": {k: head_accuracy(tr, y_train, te, y_test, n) for k, (tr, te) in sets.items()},
                               "chosen": chosen}
        rows.append(row)
        print(name, row["majority"], {k: round(v["accuracy"], 3) for k, v in row["heads"].items()}, row["seconds"],
              flush=True)
        if a.out:
            save(a.out, {"machine": machine(), "n_train": a.n_train, "max_test": a.max_test, "seed": a.seed,
                         "layer": layer, "rows": rows})


if __name__ == "__main__":
    main()
