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
from pathlib import Path

import numpy as np

from adaptive_learner.evaluation.router_bank import bank_rows
from adaptive_learner.features import field_ratio, input_text, text_encoder
from adaptive_learner.router.calibration import expected_calibration_error
from adaptive_learner.router.routing import RatioModel, _lda, fit_temperature
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.catalog import CATALOG
from adaptive_learner.tasks.spec import stratified_take
from common import machine, save

VIEWS = ["b", "b+m", "b+cos", "b+rel", "b+f", "b+f+rel", "f+rel"]
WITH_RATIO = ["b", "b+rel", "b+cos"]


def rows_of(name: str):
    """A pair task, and its profile rows and test inputs as ``routing_models.py`` takes them."""
    t = load_catalog_task(name)
    return t, {"prof": bank_rows(t, 128, 64, 0)[0], "test": stratified_take(t.test, 200, 2)}


def field_embeddings(pairs: list[str], cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        return dict(np.load(cache))
    enc = text_encoder("minilm")
    pf = {}
    for name in pairs:
        t, parts = rows_of(name)
        for part, rows in parts.items():
            for i, f in enumerate(t.spec.input_fields):
                pf[f"{name}/{part}/f{i}"] = enc.encode([e.fields[f] for e in rows], max_tokens=64)
        print("done", name, flush=True)
    np.savez(cache, **pf)
    return pf


def main() -> None:
    data = dict(np.load(sys.argv[1]))
    pairs = [t for t in catalog_names() if int(data[f"{t}/fields"]) == 2]
    pf = field_embeddings(pairs, Path(sys.argv[2]))
    n = len(pairs)
    y = np.concatenate([[j] * len(data[f"{t}/prof/b"]) for j, t in enumerate(pairs)])

    def view(t: str, part: str, v: str) -> np.ndarray:
        b = data[f"{t}/{part}/b"].astype(np.float64)
        e0, e1 = pf[f"{t}/{part}/f0"].astype(np.float64), pf[f"{t}/{part}/f1"].astype(np.float64)
        cos, gap = (e0 * e1).sum(1, keepdims=True), np.abs(e0 - e1)
        return np.hstack({"b": [b], "b+f": [b, e0, e1], "b+rel": [b, cos, gap], "b+f+rel": [b, e0, e1, cos, gap, e0 * e1],
                          "b+cos": [b, cos], "f+rel": [e0, e1, cos, gap],
                          "b+m": [b, data[f"{t}/{part}/m"].astype(np.float64)]}[v])

    def tempered(v: str):
        """Each test input's tempered LDA log posterior over the pair tasks, fitted on the profile rows in ``v``
        (columns standardised, constant ones left out)."""
        x = np.vstack([view(t, "prof", v) for t in pairs])
        keep = x.std(0) > 0
        mu, sd = x[:, keep].mean(0), x[:, keep].std(0)
        xs = (x[:, keep] - mu) / sd
        m, temp = _lda(n).fit(xs, y), fit_temperature(xs, y, np.ones(n, dtype=int))
        return (lambda t: m.predict_log_proba((view(t, "test", v)[:, keep] - mu) / sd) / temp), temp

    out = {"stage1": {}, "with_ratio": {}}
    fits = {v: tempered(v) for v in VIEWS}  # WITH_RATIO's views are among them: each fitted once
    for v in VIEWS:
        log_post, temp = fits[v]
        hit, conf, per = [], [], {}
        for j, t in enumerate(pairs):
            lp = log_post(t)
            p = np.exp(lp - lp.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            ok = p.argmax(1) == j
            per[t] = float(ok.mean())
            hit += ok.tolist()
            conf += p.max(1).tolist()
        ece = expected_calibration_error(conf, hit)
        out["stage1"][v] = {"exact": float(np.mean(hit)), "ece": ece, "per_task": per}
        print(f"{v:8s} exact {np.mean(hit):.3f} ece {ece:.3f} T {temp:.1f} ",
              " ".join(f"{k} {a:.3f}" for k, a in per.items()), flush=True)

    print("--- with the field-ratio Gaussian (the product's RatioModel) and family level")
    ratios = {}
    for name in pairs:
        t, parts = rows_of(name)
        ratios[name] = {part: [field_ratio(input_text(e.fields, t.spec)) for e in rows] for part, rows in parts.items()}
    fam = np.array([CATALOG[t].spec.family for t in pairs])
    ratio_model = RatioModel(np.ones(n, dtype=bool), np.array([np.mean(ratios[t]["prof"]) for t in pairs]),
                             np.array([max(float(np.std(ratios[t]["prof"])), RatioModel.MIN_SD) for t in pairs]))
    for v in WITH_RATIO:
        log_post, _ = fits[v]
        ex, fa, miss = [], [], {}
        for j, t in enumerate(pairs):
            a = (log_post(t) + ratio_model.log_likelihood(ratios[t]["test"])).argmax(1)
            ex += (a == j).tolist()
            fa += (fam[a] == fam[j]).tolist()
            miss[t] = {pairs[k]: int((a == k).sum()) for k in range(n) if k != j and fam[k] != fam[j] and (a == k).any()}
        out["with_ratio"][v] = {"exact": float(np.mean(ex)), "family": float(np.mean(fa)), "cross_family_misses": miss}
        print(f"{v:6s} exact {np.mean(ex):.3f} family {np.mean(fa):.3f} "
              f"misses {sum(sum(m.values()) for m in miss.values())}", miss, flush=True)
    save("routing_pair_relation", {"machine": machine(), **out})


if __name__ == "__main__":
    main()
