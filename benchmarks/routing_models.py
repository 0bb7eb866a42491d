"""Per-input routing by the model that reads the features (issue 13, item 5; issue 11's task-id-free row):
today's shrunk shared-covariance LDA against other classifiers over the same stored examples.

Every catalog task's profile rows (``bank_rows``: 128 training examples, the router bank's) and ``--test-n``
test inputs are featurised once (backbone layer 4, as the profiles store them; MiniLM at 64 tokens, as the
open set stores them) and cached in ``--cache``. Each router is then fitted on the profile rows of a library
(all 11 tasks, and the headline sequence's 6) and routes the test inputs among the tasks that take as many
fields; the exact-task rate, its per-task rates and the ECE of the routing posterior are reported.

    python benchmarks/routing_models.py --cache /tmp/routing_models.npz --out routing_models

``--bank PATH`` instead measures the product's own ``InputRouter`` on a router-eval bank (``routing_eval``:
one adapter per family, field ratios on), with and without its text view, over every bank task and over
the headline sequence's tasks. A bank that does not exist yet is built as ``alearn router-eval`` builds it
(the backbone's features, no adapter trained); with ``--outside DIR`` it also holds the four tasks of
``outside_catalog.py`` (their families as that file names them), and libraries with them are measured too:
every task, and session 46's (sst2, stsb, trec, sms_spam and the three outside sentiment tasks). Each library is
routed without the text view, with it, and with it deciding by adapter (``InputRouter._decide``: the adapter with the
most posterior mass, then its most probable task; the task's own argmax before session 48).

    python benchmarks/routing_models.py --bank runs/router-bank-outside --outside runs/outside/data --out routing_outside
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import numpy as np

from adaptive_learner.router.calibration import expected_calibration_error
from adaptive_learner.evaluation.router_bank import bank_rows
from adaptive_learner.features import input_text
from adaptive_learner.router.routing import _lda, fit_temperature
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.catalog import CATALOG
from adaptive_learner.tasks.spec import stratified_take
from common import machine, save

HEADLINE = ["sst2", "stsb", "trec", "rotten_tomatoes", "sms_spam", "imdb"]


def featurise(backbone: str, profile_n: int, test_n: int, cache: Path) -> dict[str, Any]:
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files}
    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.features import FeatureConfig, FeatureExtractor

    host = AdapterHost(load_backbone(backbone))
    ex = FeatureExtractor(host, FeatureConfig())
    out: dict[str, Any] = {}
    for name in catalog_names():
        t = load_catalog_task(name)
        prof, _ = bank_rows(t, profile_n, 64, 0)
        test = stratified_take(t.test, test_n, 2)
        for part, rows in (("prof", prof), ("test", test)):
            texts = [input_text(e.fields, t.spec) for e in rows]
            out[f"{name}/{part}/b"] = ex.input_features(texts)
            out[f"{name}/{part}/m"] = ex.input_embeddings(texts)
        out[f"{name}/fields"] = np.array(len(t.spec.input_fields))
        print(f"featurised {name}", flush=True)
    np.savez(cache, **out)
    return out


def _std(p: np.ndarray, *rest: np.ndarray) -> list[np.ndarray]:
    mu, sd = p.mean(0), p.std(0) + 1e-6
    return [(a - mu) / sd for a in (p, *rest)]


def lda(x, y, q, n):
    m = _lda(n).fit(x, y)
    return m.predict_log_proba(q)


def lda_tempered(x, y, q, n):
    t = fit_temperature(x, y, np.ones(n, dtype=int))
    return lda(x, y, q, n) / t


def logreg(c: float) -> Callable:
    def fit(x, y, q, n):
        from sklearn.linear_model import LogisticRegression

        xs, qs = _std(x, q)
        m = LogisticRegression(C=c, max_iter=2000).fit(xs, y)
        return m.predict_log_proba(qs)
    return fit


def knn(k: int) -> Callable:
    def fit(x, y, q, n):
        xs, qs = _std(x, q)
        xs /= np.linalg.norm(xs, axis=1, keepdims=True)
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        sim = qs @ xs.T
        out = np.zeros((len(q), n))
        for j in range(n):
            s = np.sort(sim[:, y == j], axis=1)[:, -k:]
            out[:, j] = s.mean(1) * 20
        return out - np.logaddexp.reduce(out, axis=1, keepdims=True)
    return fit


def centroid(x, y, q, n):
    xs, qs = _std(x, q)
    c = np.stack([xs[y == j].mean(0) for j in range(n)])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    qs = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    out = (qs @ c.T) * 20
    return out - np.logaddexp.reduce(out, axis=1, keepdims=True)


def _getter(data: dict, group: list[str], view: str) -> Callable:
    """A task's rows of one part (prof/test) in ``view``: b, m, or b+m (each column standardised over the
    group's profile rows)."""
    if view != "b+m":
        return lambda t, part: data[f"{t}/{part}/{view}"]
    stats = {}
    for v in ("b", "m"):
        rows = np.vstack([data[f"{t}/prof/{v}"] for t in group])
        stats[v] = (rows.mean(0), rows.std(0) + 1e-6)
    return lambda t, part: np.hstack([(data[f"{t}/{part}/{v}"] - stats[v][0]) / stats[v][1] for v in ("b", "m")])


def evaluate(data: dict, tasks: list[str], view: str, model: Callable) -> dict[str, Any]:
    per, conf, hit, fam = {}, [], [], []
    fields = np.array([int(data[f"{t}/fields"]) for t in tasks])
    for nf in sorted(set(fields.tolist())):
        group = [t for t, f in zip(tasks, fields) if f == nf]
        if len(group) == 1:
            per[group[0]] = 1.0
            n = len(data[f"{group[0]}/test/b"])
            hit += [True] * n
            fam += [True] * n
            conf += [1.0] * n
            continue

        y = np.concatenate([[j] * len(data[f"{t}/prof/b"]) for j, t in enumerate(group)])
        if view == "b*m":  # two LDAs, their tempered log posteriors summed
            xb, xm = (np.vstack([data[f"{t}/prof/{v}"] for t in group]).astype(np.float64) for v in ("b", "m"))
            log_post = lambda t: (model(xb, y, data[f"{t}/test/b"].astype(np.float64), len(group))  # noqa: E731
                                  + model(xm, y, data[f"{t}/test/m"].astype(np.float64), len(group)))
        else:
            get = _getter(data, group, view)
            x = np.vstack([get(t, "prof") for t in group]).astype(np.float64)
            log_post = lambda t: model(x, y, get(t, "test").astype(np.float64), len(group))  # noqa: E731
        families = np.array([CATALOG[g].spec.family for g in group])
        for j, t in enumerate(group):
            lp = log_post(t)
            p = np.exp(lp - lp.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            ok = p.argmax(1) == j
            fam += (families[p.argmax(1)] == CATALOG[t].spec.family).tolist()
            per[t] = float(ok.mean())
            hit += ok.tolist()
            conf += p.max(1).tolist()
    return {"exact": float(np.mean(hit)), "family": float(np.mean(fam)), "ece": expected_calibration_error(conf, hit),
            "per_task": per}


MODELS = {"lda": lda_tempered, "logreg-0.01": logreg(0.01), "logreg-0.1": logreg(0.1), "logreg-1": logreg(1.0),
          "knn-5": knn(5), "knn-15": knn(15), "centroid": centroid}


OUTSIDE_LIBRARY = ["sst2", "stsb", "trec", "sms_spam", "product-reviews", "tweet-mood", "editorial-tone"]


def build_outside_bank(path: Path, backbone: str, outside: Path | None) -> None:
    """The bank ``alearn router-eval`` builds (its own ``_build``), with the outside tasks when given."""
    from adaptive_learner.evaluation.router_bank import save_bank
    from adaptive_learner.evaluation.router_eval import GauntletConfig, _build

    extra = []
    if outside is not None:
        from outside_catalog import load_tasks

        extra = [(task, family) for _, task, family in load_tasks(outside)]
    bank, meta = _build(backbone, GauntletConfig(), None, None, extra)
    save_bank(bank, path, meta)


def bank_rows_eval(path: Path) -> dict[str, Any]:
    from adaptive_learner.evaluation.router_bank import add_test_inputs, load_bank, save_bank
    from adaptive_learner.evaluation.router_eval import routing_eval
    from adaptive_learner.features import FeatureConfig, text_encoder

    bank, meta = load_bank(path)
    tokens = FeatureConfig.from_dict(meta.get("features", {})).input_embedding_tokens
    if add_test_inputs(bank, text_encoder(meta.get("encoder", "minilm")), tokens):
        save_bank(bank, path, meta)
    catalog = sorted(set(bank) & set(catalog_names()))
    libraries = [("catalog", catalog), ("headline", HEADLINE)]
    if set(OUTSIDE_LIBRARY) <= set(bank):
        libraries += [("catalog+outside", sorted(bank)), ("outside-s46", OUTSIDE_LIBRARY)]
    rows = {}
    for lib, tasks in libraries:
        for text_view, decide in ((False, "task"), (True, "task"), (True, "adapter")):
            r = routing_eval({t: bank[t] for t in tasks}, "calibrated", text_view, decide)
            rows[f"{lib}/text_view={text_view}/decide={decide}"] = r
            print(f"{lib:9s} text view {str(text_view):5s} by {decide:7s} answer {r['routing_accuracy']:.3f} exact "
                  f"{r['routing_task_accuracy']:.3f} adapter {r['routing_adapter_accuracy']:.3f} ECE {r['ece']:.3f}  "
                  + " ".join(f"{k[:6]} {v:.3f}" for k, v in r["per_task"].items()), flush=True)
    return {"bank": str(path), "bank_meta": meta, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--profile-n", type=int, default=128)
    ap.add_argument("--test-n", type=int, default=200)
    ap.add_argument("--cache", default="/tmp/routing_models.npz")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--views", default="b,b+m")
    ap.add_argument("--out", default="routing_models")
    ap.add_argument("--bank", default=None, help="a router-eval bank (its .json/.safetensors without suffix); "
                                                  "built when it does not exist")
    ap.add_argument("--outside", type=Path, default=None,
                    help="with --bank: a bank built now also holds outside_catalog.py's tasks (written here)")
    args = ap.parse_args()
    if args.bank and not Path(args.bank).with_suffix(".json").exists():
        build_outside_bank(Path(args.bank), args.backbone, args.outside)
    if args.bank:
        save(args.out, {"machine": machine(), **bank_rows_eval(Path(args.bank))})
        return
    data = featurise(args.backbone, args.profile_n, args.test_n, Path(args.cache))
    rows: dict[str, Any] = {}
    for lib, tasks in (("catalog", list(catalog_names())), ("headline", HEADLINE)):
        for view in args.views.split(","):
            for name in args.models.split(","):
                r = evaluate(data, tasks, view, MODELS[name])
                rows[f"{lib}/{view}/{name}"] = r
                worst = sorted(r["per_task"].items(), key=lambda kv: kv[1])[:3]
                print(" ".join(f"{k[:6]} {v:.3f}" for k, v in r["per_task"].items()))
                print(f"{lib:9s} {view:4s} {name:12s} exact {r['exact']:.3f} family {r['family']:.3f} ECE {r['ece']:.3f}  worst "
                      + ", ".join(f"{k} {v:.2f}" for k, v in worst), flush=True)
    save(args.out, {"machine": machine(), "backbone": args.backbone, "profile_n": args.profile_n,
                    "test_n": args.test_n, "rows": rows})


if __name__ == "__main__":
    main()
