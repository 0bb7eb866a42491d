"""How a task's head is decided, replayed offline: the product's own decision function on stored arrays.

``per_task_quality.py --dump DIR`` keeps, per task, exactly what ``fit_task_head`` hands
``training/head.py``'s ``decide_head`` (the frozen features and encoder views of the training part and
of the held-out part early stopping used, their labels, the adapter's label scores on the held-out part),
and the same for the test examples. This script calls ``decide_head`` on them under each policy and
scores the answer on the test examples (``FeatureHead.combine``, as ``alearn predict`` answers). The
adapter is the same in every policy (it does not depend on the head), so the policies differ only in
the head: which views it sees, whether its temperature is fitted, and the mix that follows.

Policies (``name: views considered / view rule / temperature``):
- ``default``: the pair view / lowest cross-validated loss / none (today's ``alearn learn``);
- ``text-min``: text and pair / lowest loss / none (session 18's option);
- ``text-gated``: text and pair / the gated rule (the pair view free, a set with the text view only where
  its cross-validated answers beat the free choice by the mix's McNemar gate) / none;
- ``calibrated``, ``text-gated-calibrated``: as ``default`` / ``text-gated``, the head's temperature fitted
  to its cross-validated answers on the training part; ``...-both``: also the adapter's, fitted to its
  answers on the held-out part;
- ``text-gated-loss``, ``text-gated-gated-loss``: as ``text-gated``, the mix by the rules ``loss`` (the lowest
  held-out log loss) and ``gated-loss`` (the equal mix unless the better one alone beats it on the per-example
  held-out log losses by a paired z test at 5%);
- ``adapter``: the adapter alone (no head).

``--reference`` names the policy the others are compared with (and that must reproduce the run's own answers):
``default`` for dumps made before session 19's change, ``text-gated`` for dumps of today's ``alearn learn``.

    python head_policy.py /tmp/pq/h160 /tmp/pq/h512 --results h160=per_task_quality_160_h,h512=... --out head_policy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from adaptive_learner.evaluation.stats import paired_bootstrap
from adaptive_learner.training.head import decide_head
from common import save

POLICIES: dict[str, tuple[tuple[str, ...], str, str, str]] = {  # views, view rule, calibration, mix rule
    "default": (("pair",), "min", "none", "gated"),
    "text-min": (("text", "pair"), "min", "none", "gated"),
    "text-gated": (("text", "pair"), "gated", "none", "gated"),
    "calibrated": (("pair",), "min", "head", "gated"),
    "calibrated-both": (("pair",), "min", "both", "gated"),
    "text-gated-calibrated": (("text", "pair"), "gated", "head", "gated"),
    "text-gated-calibrated-both": (("text", "pair"), "gated", "both", "gated"),
    "text-gated-loss": (("text", "pair"), "gated", "none", "loss"),
    "text-gated-gated-loss": (("text", "pair"), "gated", "none", "gated-loss"),
}


def replay(d: dict[str, np.ndarray], layer: int, views: tuple[str, ...], view_rule: str, calibrate: str,
           mix_rule: str = "gated") -> dict[str, Any]:
    """The test answers of the head ``decide_head`` gives under one policy, mixed with the adapter."""
    y_test = d["labels_test"]
    scores_test = list(d["scores_test"])
    if "scores_val" not in d:  # nothing held out: the adapter alone
        correct = [int(np.argmax(s) == y) for s, y in zip(scores_test, y_test)]
        return {"accuracy": float(np.mean(correct)), "correct": correct, "mix": 1.0, "views": []}
    v_train = {v: d[f"fit_view_{v}"] for v in views if f"fit_view_{v}" in d}
    v_val = {v: d[f"val_view_{v}"] for v in v_train}
    head, report = decide_head(d["fit_features"], d["val_features"], d["fit_labels"].tolist(),
                               d["val_labels"].tolist(), list(d["scores_val"]), d["scores_test"].shape[1], layer,
                               mix_rule, v_train=v_train, v_val=v_val, view_rule=view_rule, calibrate=calibrate)
    answers = scores_test
    if head is not None:
        x = np.concatenate([d["features_test"], *(d[f"test_view_{v}"] for v in head.views)], axis=1)
        answers = head.combine(scores_test, x)
    correct = [int(np.argmax(s) == y) for s, y in zip(answers, y_test)]
    return {"accuracy": float(np.mean(correct)), "correct": correct, "mix": report["mix"],
            "views": list(head.views) if head is not None else report.get("views", {}).get("chosen", []),
            "temperature": report.get("temperature"), "adapter_temperature": report.get("adapter_temperature"),
            "gate": report.get("views", {}).get("gate")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="+", help="folders written by per_task_quality.py --dump")
    ap.add_argument("--results", default="", help="FOLDER=NAME[+NAME...],...: the per_task_quality results of each "
                                                  "dump folder, for the peer's answers and a check of the default")
    ap.add_argument("--reference", default="default", choices=sorted(POLICIES))
    ap.add_argument("--policies", default="", help="comma-separated subset of the policies (default: all)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    policies = {k: v for k, v in POLICIES.items() if not a.policies or k in a.policies.split(",") or k == a.reference}
    ref_name = a.reference
    ref: dict[str, dict[str, Any]] = {}
    for spec in filter(None, a.results.split(",")):
        folder, names = spec.split("=", 1)
        for name in names.split("+"):
            for r in json.loads((Path(__file__).parent / "results" / f"{name}.json").read_text())["rows"]:
                ref[f"{folder}/{r['task']}"] = r
    rows: dict[str, dict[str, Any]] = {}
    for folder in a.dumps:
        for f in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(str(f), "np") as fh:
                layer = int(fh.metadata()["layer"])
            d = load_file(str(f))
            key = f"{Path(folder).name}/{f.stem}"
            rows[key] = {"adapter": replay({k: v for k, v in d.items() if k != "scores_val"}, layer, (), "min", "none")}
            for name, (views, rule, cal, mix_rule) in policies.items():
                rows[key][name] = replay(d, layer, views, rule, cal, mix_rule)
            r = ref.get(key, {})
            if "peer" in r:
                rows[key]["peer"] = {"accuracy": r["peer"]["accuracy"], "correct": r["peer"]["correct"]}
            stored = r.get("ours", {}).get("head", {}).get("correct")
            if stored is not None:  # the replay must reproduce the run's own answer
                rows[key]["reference_reproduces_run"] = stored == rows[key][ref_name]["correct"]
            print(key, {k: (round(v["accuracy"], 3), v.get("mix"), "+".join(v.get("views") or []))
                        for k, v in rows[key].items() if isinstance(v, dict)}, flush=True)
    names = ["adapter", *policies]
    summary: dict[str, Any] = {}
    for name in names:
        summary[name] = {"mean": round(float(np.mean([r[name]["accuracy"] for r in rows.values()])), 4)}
        if name != ref_name:
            diff = paired_bootstrap([{k: r[name]["correct"] for k, r in rows.items()}],
                                    [{k: r[ref_name]["correct"] for k, r in rows.items()}], [0])
            summary[name][f"minus_{ref_name}"] = diff.to_dict()
        with_peer = [r for r in rows.values() if "peer" in r]
        summary[name]["below_peer"] = [k for k, r in rows.items() if "peer" in r
                                       and r[name]["accuracy"] < r["peer"]["accuracy"] - 1e-9]
        if with_peer:
            summary[name]["peer_mean"] = round(float(np.mean([r["peer"]["accuracy"] for r in with_peer])), 4)
    print("| task | " + " | ".join(names) + " | peer |")
    print("|---" * (len(names) + 2) + "|")
    for key, r in rows.items():
        cells = [f"{r[n]['accuracy']:.3f} ({r[n]['mix']:g}{'; ' + '+'.join(r[n]['views']) if r[n].get('views') else ''})"
                 for n in names]
        print(f"| {key} | " + " | ".join(cells) + f" | {r['peer']['accuracy']:.3f} |" if "peer" in r
              else f"| {key} | " + " | ".join(cells) + " | |")
    print(json.dumps(summary, indent=1))
    if a.out:
        save(a.out, {"rows": rows, "summary": summary, "reference": ref_name,
                     "policies": {k: list(map(str, v)) for k, v in policies.items()}})


if __name__ == "__main__":
    main()
