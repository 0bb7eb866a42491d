"""An early-exit routing cascade, simulated (issue 13, item 5): route each input by a layer-1 LDA over the
library's stored examples; where its tempered confidence is below tau, by today's layer-4 LDA instead.
Every catalog task's 128 profile rows (the router bank's) and 64 test inputs, one adapter per family,
field ratios on. Prints, per tau, exact-task and adapter-level accuracy and the share of inputs that
would need the layer-4 forward. Writes results/routing_cascade.json.

    OMP_NUM_THREADS=1 python benchmarks/routing_cascade.py
"""
import json

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.evaluation.router_bank import bank_rows
from adaptive_learner.features import FeatureConfig, FeatureExtractor, input_text
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.routing import InputRouter
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
host = AdapterHost(load_backbone("smollm2-135m"))
ex1 = FeatureExtractor(host, FeatureConfig(layer=1)); ex4 = FeatureExtractor(host, FeatureConfig())
P = {1: [], 4: []}; T = {1: {}, 4: {}}; texts = {}; fam = {}
for name in catalog_names():
    t = load_catalog_task(name); fam[name] = t.spec.family
    prof, _ = bank_rows(t, 128, 64, 0)
    test = stratified_take(t.test, 64, 2)
    texts[name] = [input_text(e.fields, t.spec) for e in test]
    for L, ex in ((1, ex1), (4, ex4)):
        f = ex.task_features(t.spec, prof); f.inputs = None
        P[L].append(TaskProfile(name, f"lora-{t.spec.family}", f))
        T[L][name] = ex.input_features(texts[name])
    print(name, flush=True)
R = {L: InputRouter(P[L]) for L in (1, 4)}
res = {}
for tau in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01):
    ok_a = ok_t = esc = n = 0
    for name in sorted(texts):
        nf = [P[1][[p.task for p in P[1]].index(name)].features.n_fields] * len(texts[name])
        r1 = R[1].route(T[1][name], nf, texts=texts[name])
        r4 = R[4].route(T[4][name], nf, texts=texts[name])
        for a, b in zip(r1, r4):
            r = a if a.confidence >= tau else b
            esc += a.confidence < tau; n += 1
            ok_t += r.task == name; ok_a += r.adapter == f"lora-{fam[name]}"
    res[tau] = (ok_t / n, ok_a / n, esc / n)
    print(f"tau {tau}: exact {ok_t/n:.3f} adapter {ok_a/n:.3f} escalated {esc/n:.3f}", flush=True)
json.dump(res, open('results/routing_cascade.json', 'w'))
