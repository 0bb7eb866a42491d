"""An early-exit routing cascade, simulated (issue 13, item 5): route each input by a layer-1 LDA over the
library's stored examples; where its tempered confidence is below tau, by today's layer-4 LDA instead.
Every catalog task's 128 profile rows (the router bank's) and 64 test inputs, one adapter per family,
field ratios on. Prints, per tau, exact-task and adapter-level accuracy and the share of inputs that
would need the layer-4 forward. Writes results/routing_cascade.json.

    cd benchmarks && OMP_NUM_THREADS=1 python routing_cascade.py
"""
from __future__ import annotations

import numpy as np

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.features import FeatureConfig, FeatureExtractor
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.routing import InputRouter
from common import save
from routing_views import routing_rows


def main() -> None:
    host = AdapterHost(load_backbone("smollm2-135m"))
    extractors = {1: FeatureExtractor(host, FeatureConfig(layer=1)), 4: FeatureExtractor(host, FeatureConfig())}
    profiles: dict[int, list[TaskProfile]] = {1: [], 4: []}
    test: dict[int, dict[str, np.ndarray]] = {1: {}, 4: {}}
    texts, family = {}, {}
    for name, (t, prof, test_texts) in routing_rows(128, 64).items():
        family[name] = t.spec.family
        texts[name] = test_texts
        for layer, ex in extractors.items():
            f = ex.task_features(t.spec, prof)
            f.inputs = None  # routing only: no open set
            profiles[layer].append(TaskProfile(name, f"lora-{t.spec.family}", f))
            test[layer][name] = ex.input_features(texts[name])
        print(name, flush=True)
    routers = {layer: InputRouter(p) for layer, p in profiles.items()}
    fields = {p.task: p.features.n_fields for p in profiles[1]}
    res = {}
    for tau in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01):
        ok_adapter = ok_task = escalated = n = 0
        for name in sorted(texts):
            nf = [fields[name]] * len(texts[name])
            early = routers[1].route(test[1][name], nf, texts=texts[name])
            late = routers[4].route(test[4][name], nf, texts=texts[name])
            for a, b in zip(early, late):
                r = a if a.confidence >= tau else b
                escalated += a.confidence < tau
                n += 1
                ok_task += r.task == name
                ok_adapter += r.adapter == f"lora-{family[name]}"
        res[tau] = (ok_task / n, ok_adapter / n, escalated / n)  # exact task, adapter level, share escalated
        print(f"tau {tau}: exact {ok_task / n:.3f} adapter {ok_adapter / n:.3f} escalated {escalated / n:.3f}",
              flush=True)
    save("routing_cascade", res)


if __name__ == "__main__":
    main()
