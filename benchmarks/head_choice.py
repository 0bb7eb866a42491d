"""How to choose between a task's adapter and its linear head: rules compared offline, on test.

Reads what ``per_task_quality.py --dump DIR`` saved per task (frozen features of every training and
test example, the held-out split early stopping used, the adapter's label scores on the held-out and
test examples) and scores, on the test examples, what each rule would have answered:

- ``accuracy``: today's rule (:func:`~adaptive_learner.training.head.choose_mix`): the mix with the best
  held-out accuracy, ties to the lower log loss;
- ``log-loss``: the mix with the lowest held-out log loss;
- ``cv-head``: as ``accuracy``, but the head alone is judged by cross-validation over every training
  example (k folds) instead of the held-out part only; the adapter and the mixes on the held-out part;
- ``gated``: an equal mix (0.5) unless the adapter alone and the head alone differ on the held-out
  examples by a McNemar test at 5% (two-sided), then the better one alone;
- fixed mixes: ``adapter`` (1), ``half`` (0.5), ``head`` (0), and ``oracle`` (the best mix on test, a bound).

    python benchmarks/head_choice.py /tmp/pq/d160 /tmp/pq/d512 \\
        --results d160=per_task_quality_160_dump_a+per_task_quality_160_dump_b,d512=per_task_quality_512_dump
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from adaptive_learner.training.head import MIXES, choose_l2, choose_mix, fit_head
from adaptive_learner.training.head.model import _mixed, _softmax
from common import save

RULES = ("accuracy", "log-loss", "cv-head", "gated", "adapter", "half", "head", "oracle",
         "l2cv-accuracy", "l2cv-log-loss", "l2cv-half", "l2cv-head", "l2cv-oracle")


def cv_head_accuracy(x: np.ndarray, y: np.ndarray, n_labels: int, k: int, seed: int = 0) -> float:
    """Accuracy of the head over every example, each predicted by a head fitted without its fold."""
    folds = np.random.RandomState(seed).permutation(len(y)) % k
    hits = 0
    for f in range(k):
        test = folds == f
        if not test.any() or (~test).sum() < 2:
            continue
        head = fit_head(x[~test], y[~test].tolist(), n_labels, 0)
        hits += int((head.log_probs(x[test]).argmax(1) == y[test]).sum())
    return hits / len(y)


def evaluate(d: dict[str, np.ndarray], k: int) -> dict[str, dict[str, float]]:
    out = evaluate_l2(d, k, None)
    out.update({f"l2cv-{name}": v for name, v in evaluate_l2(d, k, "cv").items()
                if name in ("accuracy", "log-loss", "half", "head", "oracle")})
    return out


def evaluate_l2(d: dict[str, np.ndarray], k: int, l2_rule: str | None) -> dict[str, dict[str, float]]:
    x, y, held = d["features_train"], d["labels_train"], d["held_out"].astype(bool)
    n_labels = d["scores_test"].shape[1]
    y_test = d["labels_test"]
    p_adapter_test = np.stack([_softmax(s) for s in d["scores_test"]])
    def head_fit(xs: np.ndarray, ys: np.ndarray):
        l2 = choose_l2(xs, ys.tolist(), n_labels)[0] if l2_rule == "cv" else 1e-2
        return fit_head(xs, ys.tolist(), n_labels, 0, l2=l2)

    head_all = head_fit(x, y)
    p_head_test = np.exp(head_all.log_probs(d["features_test"]))

    def test_acc(mix: float) -> float:
        return float(np.mean(_mixed(p_adapter_test, p_head_test, mix).argmax(1) == y_test))

    out: dict[str, dict[str, float]] = {}
    for name, mix in (("adapter", 1.0), ("half", 0.5), ("head", 0.0)):
        out[name] = {"mix": mix, "accuracy": test_acc(mix)}
    best = max(MIXES, key=test_acc)
    out["oracle"] = {"mix": best, "accuracy": test_acc(best)}
    if "scores_val" not in d:
        for name in ("accuracy", "log-loss", "cv-head", "gated"):
            out[name] = dict(out["adapter"])
        return out
    head_train = head_fit(x[~held], y[~held])
    lp_val = head_train.log_probs(x[held])
    mix, table = choose_mix(list(d["scores_val"]), lp_val, y[held].tolist(), "held-out")
    out["accuracy"] = {"mix": mix, "accuracy": test_acc(mix)}
    ll = min(MIXES, key=lambda m: (round(table[f"{m:g}"]["log_loss"], 6), -m))
    out["log-loss"] = {"mix": ll, "accuracy": test_acc(ll)}
    cv = cv_head_accuracy(x, y, n_labels, k)
    scores = {m: table[f"{m:g}"]["accuracy"] for m in MIXES}
    scores[0.0] = cv
    pick = max(MIXES, key=lambda m: (scores[m], m))
    # gated: an equal mix unless the held-out examples tell the two apart (McNemar, two-sided 5%)
    a_hit = np.stack(list(d["scores_val"])).argmax(1) == y[held]
    h_hit = lp_val.argmax(1) == y[held]
    b, c = int((a_hit & ~h_hit).sum()), int((~a_hit & h_hit).sum())
    gated = 0.5
    if b + c and abs(b - c) / np.sqrt(b + c) >= 1.96:
        gated = 1.0 if b > c else 0.0
    out["gated"] = {"mix": gated, "accuracy": test_acc(gated), "b": b, "c": c}
    out["cv-head"] = {"mix": pick, "accuracy": test_acc(pick), "head_cv": cv, "head_val": table["0"]["accuracy"],
                      "adapter_val": table["1"]["accuracy"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="+", help="folders written by per_task_quality.py --dump")
    ap.add_argument("--results", default="", help="FOLDER=NAME[+NAME...],...: the per_task_quality results of each "
                                                  "dump folder (by its name), for the peer's accuracy")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    peer = {}
    for spec in filter(None, a.results.split(",")):
        folder, names = spec.split("=", 1)
        for name in names.split("+"):
            path = Path(__file__).parent / "results" / f"{name}.json"
            for r in json.loads(path.read_text())["rows"]:
                if "peer" in r:
                    peer[f"{folder}/{r['task']}"] = r["peer"]["accuracy"]
    rows = {}
    for folder in a.dumps:
        for f in sorted(Path(folder).glob("*.safetensors")):
            rows[f"{Path(folder).name}/{f.stem}"] = evaluate(load_file(str(f)), a.folds)
    print("| task | " + " | ".join(RULES) + " | peer |")
    print("|---" * (len(RULES) + 2) + "|")
    for task, r in rows.items():
        p = peer.get(task)
        cells = [f"{r[k]['accuracy']:.3f} ({r[k]['mix']:g})" for k in RULES]
        print(f"| {task} | " + " | ".join(cells) + f" | {'' if p is None else f'{p:.3f}'} |")
    means = [f"**{np.mean([r[k]['accuracy'] for r in rows.values()]):.3f}**" for k in RULES]
    ps = [peer.get(t) for t in rows]
    print("| **mean** | " + " | ".join(means) + f" | {np.mean(ps):.3f} |" if all(p is not None for p in ps)
          else "| **mean** | " + " | ".join(means) + " | |")
    if peer:
        below = {k: [t for t, r in rows.items() if peer.get(t, 0) > r[k]["accuracy"] + 1e-9]
                 for k in RULES}
        print("tasks below the peer: " + "; ".join(f"{k}: {len(v)} {v}" for k, v in below.items()))
    if a.out:
        save(a.out, {"rows": rows, "peer": peer, "folds": a.folds})


if __name__ == "__main__":
    main()
