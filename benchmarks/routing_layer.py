"""Per-input routing accuracy by the backbone layer its features come from (issue 13, item 5: routing
cost falls with the layer, so how early can it be?).

The router bank's profile and test rows of every catalog task (``bank_rows``, ``stratified_take`` with
the bank's seeds) are featurised again at each layer; everything else (field ratios, the input router,
the temperature fit) is as in ``alearn router-eval``'s routing test (``routing_eval``: a library of all
11 tasks, one adapter per family). Layer 4 is the default and reproduces the bank's own figures.

    python benchmarks/routing_layer.py --bank runs/router-eval-v3/bank --layers 1,2,3,4
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.evaluation.router_bank import bank_rows, load_bank
from adaptive_learner.evaluation.router_eval import routing_eval
from adaptive_learner.features import FeatureConfig, FeatureExtractor, input_text
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from common import machine, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--layers", default="1,2,3,4")
    ap.add_argument("--out", default="routing_layer")
    args = ap.parse_args()
    bank, meta = load_bank(Path(args.bank))
    host = AdapterHost(load_backbone(args.backbone))
    texts = {}
    for name, b in bank.items():
        t = load_catalog_task(name)
        prof, _ = bank_rows(t, b.profile.n_examples, len(b.pool), meta["features"]["seed"])
        test = stratified_take(t.test, len(b.test), meta["features"]["seed"] + 2)
        test_texts = [input_text(e.fields, t.spec) for e in test]
        if test_texts != b.test_texts:
            raise SystemExit(f"{name}: the bank's test rows are not the ones drawn here")
        texts[name] = ([input_text(e.fields, t.spec) for e in prof], test_texts)
    rows = {}
    for layer in [int(x) for x in args.layers.split(",")]:
        ex = FeatureExtractor(host, FeatureConfig(layer=layer, max_tokens=meta["features"]["max_tokens"]))
        at = copy.deepcopy(bank)
        for name, (prof, test) in texts.items():
            at[name].profile.examples = ex.input_features(prof)
            at[name].test = ex.input_features(test)
        r = routing_eval(at)
        rows[layer] = {k: r[k] for k in ("routing_accuracy", "routing_task_accuracy", "routing_adapter_accuracy",
                                         "ece", "n_inputs")}
        print(f"layer {layer}: {rows[layer]}", flush=True)
    save(args.out, {"machine": machine(), "bank": args.bank, "backbone": args.backbone, "layers": rows})


if __name__ == "__main__":
    main()
