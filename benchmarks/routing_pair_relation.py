"""Would the relation between a pair's two fields route pair inputs better? (issue 13: per-input routing; the
router's text view covers single texts only.) Each pair task's profile rows and test inputs (those of
``routing_models.py``, whose feature cache this reads) get MiniLM embeddings of each field apart (64 tokens);
views: the backbone features (b, the product's), b with the embedding of the joined pair (b+m), with the two
fields' cosine (b+cos), with the cosine and |e0 - e1| (b+rel), with both fields' embeddings (b+f), ... One
tempered LDA over the pair tasks per view (``router.routing``); then the best views again with the product's
field-ratio Gaussian added, at task and family (adapter) level.

    python benchmarks/routing_models.py --cache /tmp/routing_models.npz   # once, for the cache
    python benchmarks/routing_pair_relation.py /tmp/routing_models.npz /tmp/pairfields.npz
"""
import sys

import numpy as np
from pathlib import Path
from adaptive_learner.evaluation.router_bank import bank_rows
from adaptive_learner.features import text_encoder
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from adaptive_learner.router.routing import _lda, fit_temperature
from adaptive_learner.router.calibration import expected_calibration_error
cache = Path(sys.argv[2])
data = dict(np.load(sys.argv[1]))
out = {"stage1": {}, "with_ratio": {}}
pairs = [t for t in catalog_names() if int(data[f"{t}/fields"]) == 2]
print(pairs)
if cache.exists():
    pf = dict(np.load(cache))
else:
    enc = text_encoder("minilm")
    pf = {}
    for name in pairs:
        t = load_catalog_task(name)
        prof, _ = bank_rows(t, 128, 64, 0)
        test = stratified_take(t.test, 200, 2)
        for part, rows in (("prof", prof), ("test", test)):
            for i, f in enumerate(t.spec.input_fields):
                pf[f"{name}/{part}/f{i}"] = enc.encode([e.fields[f] for e in rows], max_tokens=64)
        print("done", name, flush=True)
    np.savez(cache, **pf)

def view(t, part, v):
    b = data[f"{t}/{part}/b"].astype(np.float64)
    e0, e1 = pf[f"{t}/{part}/f0"].astype(np.float64), pf[f"{t}/{part}/f1"].astype(np.float64)
    cos = (e0 * e1).sum(1, keepdims=True)
    parts = {"b": [b], "b+f": [b, e0, e1], "b+rel": [b, cos, np.abs(e0 - e1)], "b+f+rel": [b, e0, e1, cos, np.abs(e0-e1), e0*e1],
             "b+cos": [b, cos], "f+rel": [e0, e1, cos, np.abs(e0 - e1)], "b+m": [b, data[f"{t}/{part}/m"].astype(np.float64)]}[v]
    return np.hstack(parts)

for v in ["b", "b+m", "b+cos", "b+rel", "b+f", "b+f+rel", "f+rel"]:
    x = np.vstack([view(t, "prof", v) for t in pairs])
    keep = x.std(0) > 0
    mu, sd = x[:, keep].mean(0), x[:, keep].std(0)
    xs = (x[:, keep] - mu) / sd
    y = np.concatenate([[j] * len(data[f"{t}/prof/b"]) for j, t in enumerate(pairs)])
    n = len(pairs)
    m = _lda(n).fit(xs, y); T = fit_temperature(xs, y, np.ones(n, dtype=int))
    hit, conf, per = [], [], {}
    for j, t in enumerate(pairs):
        q = (view(t, "test", v)[:, keep] - mu) / sd
        lp = m.predict_log_proba(q) / T
        p = np.exp(lp - lp.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
        ok = p.argmax(1) == j
        per[t] = float(ok.mean()); hit += ok.tolist(); conf += p.max(1).tolist()
    out["stage1"][v] = {"exact": float(np.mean(hit)), "ece": expected_calibration_error(conf, hit), "per_task": per}
    print(f"{v:8s} exact {np.mean(hit):.3f} ece {expected_calibration_error(conf, hit):.3f} T {T:.1f} ", " ".join(f"{k} {a:.3f}" for k, a in per.items()), flush=True)

print("--- with the field-ratio Gaussian and family level")
from adaptive_learner.tasks.catalog import CATALOG
from adaptive_learner.features import field_ratio, input_text
from adaptive_learner.tasks import load_catalog_task
ratios = {}
for t in pairs:
    task = load_catalog_task(t)
    prof, _ = bank_rows(task, 128, 64, 0); test = stratified_take(task.test, 200, 2)
    ratios[t] = {part: np.array([field_ratio(input_text(e.fields, task.spec)) for e in rows]) for part, rows in (("prof", prof), ("test", test))}
fam = np.array([CATALOG[t].spec.family for t in pairs]); print(dict(zip(pairs, fam)))
mean = np.array([ratios[t]["prof"].mean() for t in pairs]); sdv = np.array([max(ratios[t]["prof"].std(), 0.05) for t in pairs])
for v in ["b", "b+rel", "b+cos"]:
    x = np.vstack([view(t, "prof", v) for t in pairs]); keep = x.std(0) > 0
    mu, sd = x[:, keep].mean(0), x[:, keep].std(0); xs = (x[:, keep] - mu) / sd
    y = np.concatenate([[j] * len(data[f"{t}/prof/b"]) for j, t in enumerate(pairs)]); n = len(pairs)
    m = _lda(n).fit(xs, y); T = fit_temperature(xs, y, np.ones(n, dtype=int))
    ex, fa, miss = [], [], {}
    for j, t in enumerate(pairs):
        q = (view(t, "test", v)[:, keep] - mu) / sd
        r = ratios[t]["test"][:, None]; z = (r - mean) / sdv
        lp = m.predict_log_proba(q) / T - 0.5 * z * z - np.log(sdv)
        a = lp.argmax(1); ex += (a == j).tolist(); fa += (fam[a] == fam[j]).tolist()
        miss[t] = {pairs[k]: int((a == k).sum()) for k in range(n) if k != j and fam[k] != fam[j] and (a == k).sum()}
    out["with_ratio"][v] = {"exact": float(np.mean(ex)), "family": float(np.mean(fa)), "cross_family_misses": miss}
    print(f"{v:6s} exact {np.mean(ex):.3f} family {np.mean(fa):.3f} misses {sum(len(x) and sum(x.values()) for x in miss.values())}", miss)

from common import machine, save  # noqa: E402

save("routing_pair_relation", {"machine": machine(), **out})
