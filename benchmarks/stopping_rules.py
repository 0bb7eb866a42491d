"""Stopping rules replayed on recorded curves (issue 15, item 1: train until learned).

``learnability.py --train --held-out`` trains one adapter per task on exactly what early stopping
trains on and never stops: it records the held-out accuracy and loss at every evaluation and which
test examples the adapter got right at the same steps. Any rule that looks only at the held-out
curve can be replayed on that record without training again: where it stops, which evaluation's
weights it keeps, and the test accuracy of those weights. Every rule is scored on the same test
examples, so two rules are compared example by example (paired bootstrap over each task's test
examples).

Rules (``criterion:patience[:min_delta]``):
- ``loss:P:D``  keep the lowest held-out loss; a loss counts as lower when at least D below the best
  (the default of ``TrainConfig`` is ``loss:3:0.01``); stop after P evaluations without one.
- ``acc:P``     keep the highest held-out accuracy (ties: the lower loss); stop after P evaluations
  without a higher accuracy.
- ``accloss:P:D`` an evaluation improves when its accuracy is higher, or equal with a loss D lower;
  keep the best by (accuracy, -loss).
- ``steps:N``   no early stopping: the weights after N steps.
- ``smooth:P:W`` the held-out accuracy averaged over the last W evaluations (loss likewise, for ties) in place of
  one evaluation's: keep the weights of the middle of the best window (a trainer would hold the last (W-1)/2
  evaluations' weights); ``smoothlast:P:W`` keeps the window's last weights instead.
- ``latest:P:T`` stop as ``acc:P``, but keep the latest evaluation whose held-out accuracy is within T of the best
  (a difference of an example or two among 32 held out is noise; online, one set of weights: a new best or a point
  within T of it replaces the kept one).

    python benchmarks/stopping_rules.py results/stopping_curves_a.json results/stopping_curves_b.json \\
        --rules loss:3:0.01,loss:5:0.01,acc:3,acc:5,accloss:3:0.01,accloss:5:0.01,steps:100,steps:200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from common import save

DEFAULT_RULES = ("loss:3:0.01,loss:5:0.01,loss:8:0.01,loss:5:0,acc:3,acc:4,acc:5,acc:8,accloss:3:0.01,accloss:5:0.01,"
                 "accloss:8:0.01,steps:50,steps:100,steps:200")


def replay(rule: str, held: list[dict[str, float]], cap: int) -> tuple[int, int]:
    """(kept step, stop step) of ``rule`` on a held-out curve [{step, accuracy, loss}] (step 0 first)."""
    kind, *args = rule.split(":")
    if kind == "steps":
        n = min(int(args[0]), cap, held[-1]["step"])  # a curve recorded to fewer steps ends there
        return n, n
    if kind in ("smooth", "smoothlast"):
        return _replay_smoothed(int(args[0]), int(args[1]), kind == "smooth", held, cap)
    if kind == "latest":
        return _replay_latest(int(args[0]), float(args[1]), held, cap)
    from adaptive_learner.training.trainer import improvement

    patience = int(args[0])
    delta = float(args[1]) if len(args) > 1 else 0.0
    best = held[0]
    since = 0
    for point in held[1:]:
        if point["step"] > cap:
            break
        if kind in ("loss", "acc"):  # the trainer's own rule (TrainConfig.monitor loss / accuracy)
            keep, reset = improvement("loss" if kind == "loss" else "accuracy", delta, best, point)
        elif kind == "accloss":
            keep = reset = point["accuracy"] > best["accuracy"] or (
                point["accuracy"] == best["accuracy"] and point["loss"] < best["loss"] - delta)
        else:
            raise ValueError(f"unknown rule {rule!r}")
        best = point if keep else best
        since = 0 if reset else since + 1
        if since >= patience:
            return best["step"], point["step"]
    return best["step"], min(held[-1]["step"], cap)


def _replay_smoothed(patience: int, window: int, middle: bool, held: list[dict[str, float]],
                     cap: int) -> tuple[int, int]:
    """``smooth``/``smoothlast``: the trainer's accuracy rule (``improvement``) on moving averages over ``window``
    evaluations (the first points average what there is so far)."""
    from adaptive_learner.training.trainer import improvement

    pts = [p for p in held if p["step"] <= cap]
    best, kept, since = None, pts[0]["step"], 0
    for i in range(len(pts)):
        w = pts[max(0, i - window + 1): i + 1]
        point = {"accuracy": float(np.mean([p["accuracy"] for p in w])), "loss": float(np.mean([p["loss"] for p in w]))}
        keep, reset = improvement("accuracy", 0.0, best, point)
        if keep:
            best, kept = point, (w[len(w) // 2] if middle else w[-1])["step"]
        since = 0 if reset else since + 1
        if since >= patience:
            return kept, pts[i]["step"]
    return kept, pts[-1]["step"]


def _replay_latest(patience: int, tol: float, held: list[dict[str, float]], cap: int) -> tuple[int, int]:
    """``latest``: patience on a strictly higher held-out accuracy; keep the latest point within ``tol`` of the best."""
    pts = [p for p in held if p["step"] <= cap]
    best, kept, since = pts[0]["accuracy"], pts[0]["step"], 0
    for p in pts[1:]:
        if p["accuracy"] > best:
            best, since = p["accuracy"], 0
        else:
            since += 1
        if p["accuracy"] >= best - tol - 1e-9:
            kept = p["step"]
        if since >= patience:
            return kept, p["step"]
    return kept, pts[-1]["step"]


def right_at(row: dict[str, Any], step: int) -> np.ndarray:
    if step == 0:
        return np.array([c == "1" for c in row["zero_shot_right"]], dtype=float)
    by = {c["step"]: c["right"] for c in row["curve"]}
    return np.array([c == "1" for c in by[step]], dtype=float)


def paired_ci(a: list[np.ndarray], b: list[np.ndarray], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean-over-tasks accuracy(a) - accuracy(b), resampling each task's test examples."""
    rng = np.random.RandomState(seed)
    diffs = np.zeros(n_boot)
    for x, y in zip(a, b):
        idx = rng.randint(0, len(x), size=(n_boot, len(x)))
        diffs += (x[idx] - y[idx]).mean(axis=1)
    diffs /= len(a)
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def curves_table(rows: list[dict[str, Any]], cap: int, at: tuple[int, ...] = (20, 50, 100, 150, 200)) -> str:
    """Issue 11's learning curves: test accuracy at a few steps, where each task reaches its plateau
    (the first step within 1 point of the best it reaches by ``cap``), and the learned verdict there."""
    from learnability import verdict, wilson

    cols = [s for s in at if s <= cap]
    head = ["task", "test", "majority", "zero-shot", *[f"step {s}" for s in cols], "plateau step (acc)",
            "95% CI there", "learned"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        by = {c["step"]: c["accuracy"] for c in r["curve"] if c["step"] <= cap}
        top = max(by.values())
        plateau = min(s for s, v in by.items() if v >= top - 0.01)
        lo, hi = wilson(by[plateau], r["n_test"])
        lines.append("| " + " | ".join([r["task"], str(r["n_test"]), f"{r['majority']:.3f}", f"{r['zero_shot']:.3f}",
                                        *[f"{by[s]:.3f}" if s in by else "" for s in cols],
                                        f"{plateau} ({by[plateau]:.3f})", f"[{lo:.3f}, {hi:.3f}]",
                                        "yes" if verdict(by[plateau], r["majority"], r["n_test"]) else "**no**"])
                     + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="learnability.py --train --held-out results")
    ap.add_argument("--rules", default=DEFAULT_RULES)
    ap.add_argument("--reference", default="loss:3:0.01", help="the rule the others are paired against")
    ap.add_argument("--cap", type=int, default=200, help="the step cap every rule runs under")
    ap.add_argument("--out", default="stopping_rules")
    a = ap.parse_args()
    rows = []
    for f in a.results:
        doc = json.loads(Path(f).read_text())
        if not doc.get("held_out"):
            raise SystemExit(f"error: {f} was not made with --held-out")
        rows += [r for r in doc["rows"] if r.get("held_out_curve")]
    rules = [r for r in a.rules.split(",") if r]
    if a.reference not in rules:
        rules.insert(0, a.reference)
    tasks = [r["task"] for r in rows]
    out: dict[str, Any] = {"tasks": tasks, "cap": a.cap, "reference": a.reference, "rules": {}}
    ref = [right_at(r, replay(a.reference, r["held_out_curve"], a.cap)[0]) for r in rows]
    oracle = [max(c["accuracy"] for c in r["curve"] if c["step"] <= a.cap) for r in rows]
    for rule in rules:
        per = []
        vecs = []
        for r in rows:
            kept, stop = replay(rule, r["held_out_curve"], a.cap)
            v = right_at(r, kept)
            vecs.append(v)
            per.append({"task": r["task"], "kept": kept, "stopped": stop, "test": round(float(v.mean()), 4)})
        lo, hi = paired_ci(vecs, ref)
        mean = float(np.mean([p["test"] for p in per]))
        out["rules"][rule] = {"mean_test": round(mean, 4), "mean_steps": float(np.mean([p["stopped"] for p in per])),
                              "minus_reference": round(mean - float(np.mean([v.mean() for v in ref])), 4),
                              "ci": [round(lo, 4), round(hi, 4)], "per_task": per}
    head = ["rule", "mean test", "- reference [95% CI]", "mean steps run", *tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rule, r in out["rules"].items():
        mark = " *" if r["ci"][0] > 0 or r["ci"][1] < 0 else ""
        cells = [f"{p['test']:.3f} ({p['kept']}/{p['stopped']})" for p in r["per_task"]]
        lines.append("| " + " | ".join([rule, f"{r['mean_test']:.3f}",
                                        f"{r['minus_reference']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]{mark}",
                                        f"{r['mean_steps']:.0f}", *cells]) + " |")
    lines.append("| oracle (best test step) | " + f"{np.mean(oracle):.3f} | | | " + " | ".join(f"{o:.3f}" for o in oracle) + " |")
    out["table"] = "\n".join(lines)
    out["curves_table"] = curves_table(rows, a.cap)
    path = save(a.out, out)
    from learnability import plot  # every task's test accuracy against the step, one figure

    plot(rows, path.with_name(path.stem + "_curves.png"), held_out=False)
    print(out["curves_table"])
    print()
    print(out["table"])
    print(f"(cells: test accuracy (kept step / stop step)); results: {path}, curves: {path.stem}_curves.png")


if __name__ == "__main__":
    main()
