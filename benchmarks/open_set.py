"""Open-set routing: does the router tell inputs of a learned task from inputs of no learned task?

For random libraries of stored catalog tasks (each with the sentence embeddings of its 128 profile
examples, as ``alearn learn`` stores them), test inputs of every catalog task are scored by the
router's novelty model (``router/routing.py``). Inputs of a task in the library are *in*; inputs
of the other tasks are *out*, split into tasks of a family the library does not have ("other
family") and tasks of a family it has, from another dataset ("same family": a film review when
sst2 is stored; its adapter may well answer it, so calling it unknown is debatable). Reported:
AUROC of the novelty (in vs out) and, at the threshold (novelty 1), the share of in-library inputs
called unknown and of out-of-library inputs caught. Only inputs that some stored task takes (the
same number of fields) count: the others are refused by the field count already.

    python benchmarks/open_set.py --out open_set
    python benchmarks/open_set.py --no-ratio --no-features   # embeddings only, as before the field length ratio
    python benchmarks/open_set.py --no-features              # embeddings and ratio, as before the backbone view
    python benchmarks/open_set.py --no-embeddings            # backbone features and ratio: no sentence encoder
    python benchmarks/open_set.py --outside runs/outside/data --cache runs/open_set_embed.npz \
        --libraries "sst2,stsb,trec,sms_spam,product-reviews"  # outside_catalog.py's tasks too, as unknown inputs
        # (and a fixed library that holds one of them); --k 5: the fixed neighbour of sessions 11-47
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from adaptive_learner.features import FeatureConfig, field_ratio, input_text, text_encoder
from adaptive_learner.router.routing import NoveltyModel
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from common import machine, save


def _task_sources(outside: Path | None) -> list[tuple[str, Any, str, bool]]:
    """(name, task, family, from outside the catalog) for every catalog task, and the outside tasks when asked
    (their family as ``outside_catalog.py`` names it: a user's file has none)."""
    out = []
    for name in catalog_names():
        t = load_catalog_task(name)
        out.append((name, t, t.spec.family, False))
    if outside is not None:
        from outside_catalog import load_tasks

        out += [(name, task, family, True) for name, task, family in load_tasks(outside)]
    return out


def embed_tasks(encoder: Any, profile_n: int, test_n: int, extractor: Any = None,
                max_tokens: int | None = None, outside: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per task (the catalog's, and with ``outside`` the four of ``outside_catalog.py``): sentence embeddings
    (and, with ``extractor``, the router's backbone features) of its profile examples and test inputs."""
    out = {}
    for name, t, family, is_outside in _task_sources(outside):
        prof = stratified_take(t.train, profile_n, 1)  # the router's profile examples (seed + 1)
        test = stratified_take(t.test, test_n, 2)
        prof_texts = [input_text(e.fields, t.spec) for e in prof]
        test_texts = [input_text(e.fields, t.spec) for e in test]
        pair = len(t.spec.input_fields) > 1
        out[name] = {"family": family, "fields": len(t.spec.input_fields), "outside": is_outside,
                     "profile": encoder.encode(prof_texts, max_tokens=max_tokens),
                     "test": encoder.encode(test_texts, max_tokens=max_tokens),
                     "profile_ratios": np.array([field_ratio(x) for x in prof_texts]) if pair else None,
                     "test_ratios": [field_ratio(x) for x in test_texts],
                     "profile_features": extractor.input_features(prof_texts) if extractor is not None else None,
                     "test_features": extractor.input_features(test_texts) if extractor is not None else None}
        print(f"embedded {name}", flush=True)
    return out


ARRAYS = ("profile", "test", "profile_ratios", "test_ratios", "profile_features", "test_features")


def save_cache(path: Path, tasks: dict[str, dict[str, Any]], key: dict[str, Any]) -> None:
    """The embedded tasks as one ``.npz`` of plain arrays (no pickle), with ``key`` (what made them)."""
    arrays = {"key": np.array(json.dumps(key, sort_keys=True))}
    for name, t in tasks.items():
        arrays[f"{name}/meta"] = np.array(json.dumps({"family": t["family"], "fields": t["fields"],
                                                      "outside": t["outside"]}))
        for k in ARRAYS:
            v = t[k]
            if v is not None:
                arrays[f"{name}/{k}"] = np.array([np.nan if r is None else r for r in v], dtype=np.float64) \
                    if k == "test_ratios" else np.asarray(v)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_cache(path: Path, key: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The tasks ``save_cache`` wrote with the same ``key``; None when there is no such file."""
    if not path.exists():
        return None
    z = np.load(path, allow_pickle=False)
    if json.loads(str(z["key"])) != json.loads(json.dumps(key, sort_keys=True)):
        return None
    tasks: dict[str, dict[str, Any]] = {}
    for entry in z.files:
        if entry.endswith("/meta"):
            name = entry[: -len("/meta")]
            t = tasks[name] = {**json.loads(str(z[entry])), **{k: None for k in ARRAYS}}
            for k in ARRAYS:
                if f"{name}/{k}" in z.files:
                    t[k] = z[f"{name}/{k}"]
            if t["test_ratios"] is not None:
                t["test_ratios"] = [None if np.isnan(r) else float(r) for r in t["test_ratios"]]
    return tasks


def scores_for(tasks: dict[str, dict[str, Any]], library: list[str], quantile: float, k: int | None,
               ratio: bool = True, embeddings: bool = True) -> dict[str, list[float]]:
    """Each eligible test input's novelty (its least novel eligible stored task), by kind: ``in`` (a task of the
    library), ``other_family`` / ``same_family`` (a catalog task not in it, of a family it lacks / has), and the same
    two for tasks from outside the catalog (``outside_other_family``, ``outside_same_family``)."""
    model = NoveltyModel([tasks[t]["profile"] if embeddings else None for t in library], quantile, k,
                         [tasks[t]["profile_ratios"] for t in library] if ratio else None,
                         [tasks[t]["profile_features"] for t in library])
    fields = np.array([tasks[t]["fields"] for t in library])
    families = {tasks[t]["family"] for t in library}
    out: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for name, t in tasks.items():
        ok = fields == t["fields"]
        if not ok.any():
            continue
        test = t["test"] if embeddings else np.zeros_like(t["test"])  # no stored embeddings: a view of no task
        nov = model.novelty(test, t["test_ratios"] if ratio else None, t["test_features"])[:, ok].min(1)
        kind = "in" if name in library else ("same_family" if t["family"] in families else "other_family")
        out[("outside_" if t.get("outside") and kind != "in" else "") + kind].extend(nov.tolist())
    return out


KINDS = ("in", "other_family", "same_family", "outside_other_family", "outside_same_family")


def summarise(s: dict[str, list[float]]) -> dict[str, Any]:
    inn = np.asarray(s["in"])
    res: dict[str, Any] = {"n_in": len(inn), "false_unknown": round(float(np.mean(inn > 1)), 4)}
    for kind in KINDS[1:]:
        o = np.asarray(s.get(kind, []))
        res[f"n_{kind}"] = len(o)
        if len(o) and len(inn):
            res[f"auroc_{kind}"] = round(float(roc_auc_score(np.r_[np.zeros(len(inn)), np.ones(len(o))],
                                                             np.r_[inn, o])), 4)
            res[f"caught_{kind}"] = round(float(np.mean(o > 1)), 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="3,6,10")
    ap.add_argument("--draws", type=int, default=30)
    ap.add_argument("--quantiles", default="0.95,0.99")
    ap.add_argument("--k", type=int, default=0,
                    help="the neighbour whose distance is read (0: the router's rule, routing.neighbours: the square "
                         "root of a task's stored examples, at least 5; 5 for every task until session 48)")
    ap.add_argument("--profile-n", type=int, default=128)
    ap.add_argument("--test-n", type=int, default=100)
    ap.add_argument("--no-ratio", action="store_true", help="embeddings only (before the field length ratio)")
    ap.add_argument("--no-features", action="store_true",
                    help="sentence embeddings only (before the backbone features were a second view)")
    ap.add_argument("--no-embeddings", action="store_true",
                    help="the backbone features (and ratio) alone: no sentence encoder per input")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=None, help="the backbone view's layer (default: the router's)")
    ap.add_argument("--encoder-max-tokens", type=int, default=None,
                    help="tokens of each input MiniLM embeds, profiles and inputs alike (default: the router's, "
                         "FeatureConfig.input_embedding_tokens; 256 before 2026-12-03)")
    ap.add_argument("--outside", type=Path, default=None,
                    help="also score the four tasks of outside_catalog.py (written into this folder) as inputs of no "
                         "stored task: kinds outside_other_family / outside_same_family")
    ap.add_argument("--libraries", default="",
                    help="fixed libraries scored besides the random draws, ';'-separated, each comma-separated "
                         "task names (outside tasks allowed with --outside)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="an .npz of the embedded tasks: read when it was made with the same settings, else written")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    max_tokens = a.encoder_max_tokens or FeatureConfig.input_embedding_tokens
    key = {"backbone": a.backbone, "layer": a.layer, "max_tokens": max_tokens,
           "profile_n": a.profile_n, "test_n": a.test_n, "outside": a.outside is not None}
    tasks = load_cache(a.cache, key) if a.cache else None
    if tasks is None:
        from adaptive_learner.adapters import AdapterHost
        from adaptive_learner.backbone import load_backbone
        from adaptive_learner.features import FeatureExtractor

        # the router's own feature extractor, as a library built by `alearn learn` has it (kept in the cache for the
        # runs that use it; --no-features leaves them out below)
        extractor = FeatureExtractor(AdapterHost(load_backbone(a.backbone)), FeatureConfig(layer=a.layer))
        tasks = embed_tasks(text_encoder("minilm"), a.profile_n, a.test_n, extractor, max_tokens, a.outside)
        if a.cache:
            save_cache(a.cache, tasks, key)
    if a.no_features:
        for t in tasks.values():
            t["profile_features"] = t["test_features"] = None
    names = sorted(n for n, t in tasks.items() if not t["outside"])  # libraries are drawn from the catalog
    results: dict[str, Any] = {}
    for q in [float(x) for x in a.quantiles.split(",")]:
        for size in [int(x) for x in a.sizes.split(",")]:
            rng = np.random.RandomState(size)  # the same libraries for every quantile
            pooled: dict[str, list[float]] = {kind: [] for kind in KINDS}
            aurocs = []
            for _ in range(a.draws):
                lib = sorted(rng.choice(names, size=min(size, len(names)), replace=False).tolist())
                s = scores_for(tasks, lib, q, a.k or None, not a.no_ratio, not a.no_embeddings)
                aurocs.append(summarise(s).get("auroc_other_family", np.nan))
                for kind in pooled:
                    pooled[kind].extend(s[kind])
            res = summarise(pooled)
            res["auroc_other_family_mean_over_draws"] = round(float(np.nanmean(aurocs)), 4)
            res["auroc_other_family_worst_draw"] = round(float(np.nanmin(aurocs)), 4)
            results[f"q{q:g}/size{size}"] = res
            print(f"quantile {q:g}, {size} tasks: {res}", flush=True)
        for lib in filter(None, a.libraries.split(";")):
            res = summarise(scores_for(tasks, sorted(lib.split(",")), q, a.k or None, not a.no_ratio,
                                       not a.no_embeddings))
            results[f"q{q:g}/{lib}"] = res
            print(f"quantile {q:g}, library {lib}: {res}", flush=True)
    if a.out:
        save(a.out, {"machine": machine(), "encoder": "all-MiniLM-L6-v2", "k": a.k, "draws": a.draws,
                     "field_ratio": not a.no_ratio, "backbone_features": None if a.no_features else a.backbone,
                     "sentence_embeddings": not a.no_embeddings, "layer": a.layer,
                     "encoder_max_tokens": max_tokens, "outside": a.outside is not None,
                     "profile_n": a.profile_n, "test_n": a.test_n, "results": results})


if __name__ == "__main__":
    main()
