"""Per-input routing accuracy by the view an input is routed by (issue 13, item 5: can routing reuse the
sentence embedding the open set computes anyway, and skip or shorten the backbone forward?).

Every catalog task's profile rows (``bank_rows``: 128 training examples, the router bank's seeds) and 64
test inputs are featurised in each view; the routing test is ``alearn router-eval``'s (``routing_eval``:
a library of all 11 tasks, one adapter per family, field ratios on, tempered LDA). Views: the backbone's
layer-L features (``bL``, today's routing: b4), MiniLM's sentence embeddings at N tokens (``mN``), and
concatenations of the two (each column standardised over the profile rows first).

    python benchmarks/routing_views.py --views b4,b1,m64,b1+m64,b4+m64
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import numpy as np

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.evaluation.router_bank import TaskBank, bank_rows
from adaptive_learner.evaluation.router_eval import routing_eval
from adaptive_learner.features import DEFAULT_LAYER, FeatureConfig, FeatureExtractor, input_text, text_encoder
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from common import machine, save


def routing_rows(profile_n: int, test_n: int) -> dict[str, tuple[Any, list, list[str]]]:
    """Per catalog task: (task, its profile rows as the router bank draws them, its test inputs' texts)."""
    out = {}
    for name in catalog_names():
        t = load_catalog_task(name)
        prof, _ = bank_rows(t, profile_n, 64, 0)
        out[name] = (t, prof, [input_text(e.fields, t.spec) for e in stratified_take(t.test, test_n, 2)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--views", default="b4,b1,m64,b1+m64,b4+m64")
    ap.add_argument("--profile-n", type=int, default=128)
    ap.add_argument("--test-n", type=int, default=64)
    ap.add_argument("--out", default="routing_views")
    args = ap.parse_args()
    host = AdapterHost(load_backbone(args.backbone))
    encoder = text_encoder("minilm")
    base = FeatureExtractor(host, FeatureConfig())
    texts, banks = {}, {}
    for name, (t, prof, tt) in routing_rows(args.profile_n, args.test_n).items():
        texts[name] = ([input_text(e.fields, t.spec) for e in prof], tt)
        feats = base.task_features(t.spec, prof)
        feats.inputs = None  # the open set is not what is measured here
        banks[name] = TaskBank(name, t.spec.family, feats, np.zeros((0, 1)), base.input_features(tt),
                               np.zeros((1, 1)), tt)
        print(f"featurised {name}", flush=True)
    # the default layer's features are the banks' own: not computed again
    cache: dict[str, tuple[dict, dict]] = {
        f"b{DEFAULT_LAYER}": ({k: b.profile.examples for k, b in banks.items()}, {k: b.test for k, b in banks.items()})}

    def view(part: str) -> tuple[dict, dict]:
        if part not in cache:
            if part.startswith("b"):
                ex = FeatureExtractor(host, FeatureConfig(layer=int(part[1:])))
                get = ex.input_features
            else:
                n = int(part[1:])
                get = lambda xs: encoder.encode(xs, max_tokens=n)  # noqa: E731
            cache[part] = ({k: get(p) for k, (p, _) in texts.items()}, {k: get(q) for k, (_, q) in texts.items()})
        return cache[part]

    rows = {}
    for spec in args.views.split(","):
        parts = spec.split("+")
        prof = {k: [] for k in texts}
        test = {k: [] for k in texts}
        for part in parts:
            p, q = view(part)
            if len(parts) > 1:  # standardise each column over all profile rows, so neither view's scale rules
                allp = np.vstack(list(p.values()))
                mu, sd = allp.mean(0), allp.std(0) + 1e-6
                p = {k: (v - mu) / sd for k, v in p.items()}
                q = {k: (v - mu) / sd for k, v in q.items()}
            for k in texts:
                prof[k].append(p[k])
                test[k].append(q[k])
        at = copy.deepcopy(banks)
        for k in texts:
            at[k].profile.examples = np.hstack(prof[k]).astype(np.float32)
            at[k].test = np.hstack(test[k]).astype(np.float32)
        r = routing_eval(at)
        rows[spec] = {k: r[k] for k in ("routing_accuracy", "routing_task_accuracy", "routing_adapter_accuracy",
                                        "ece", "n_inputs", "per_task")}
        print(f"{spec:10s} exact {r['routing_task_accuracy']:.3f}  adapter {r['routing_adapter_accuracy']:.3f}  "
              f"ECE {r['ece']:.3f}  (n={r['n_inputs']})", flush=True)
    save(args.out, {"machine": machine(), "backbone": args.backbone, "profile_n": args.profile_n,
                    "test_n": args.test_n, "views": rows})


if __name__ == "__main__":
    main()
