"""Open-set routing: does the input router tell inputs of a learned task from inputs of no learned task?

For random libraries of stored catalog tasks (profiles of 128 training examples each, as ``alearn
learn`` stores them), every test input of every catalog task is routed. Inputs of a task in the
library are *in*; inputs of the other tasks are *out*, split into tasks of a family the library
does not have ("other family") and tasks of a family it has, from another dataset ("same family,
other dataset": a sentiment review when sst2 is stored; its adapter may well answer it, so calling
it unknown is debatable). Reported: AUROC of the novelty score (in vs out), and at the router's
thresholds (per-task quantile of held-out distances) the rate of in-library inputs called unknown
and of out-of-library inputs caught. Inputs no stored task takes (another number of fields) are
rejected by the field count and left out.

    python benchmarks/open_set.py --bank ../runs/bank-smollm2 --out open_set
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from adaptive_learner.evaluation.router_bank import TaskBank, build_bank, load_bank, save_bank
from adaptive_learner.router.routing import NoveltyModel
from common import machine, save


def novelty_of(bank: dict[str, TaskBank], library: list[str], quantile: float) -> dict[str, Any]:
    """Min novelty over the eligible stored tasks for every test input, with its kind."""
    model = NoveltyModel([bank[t].profile.examples for t in library], quantile)
    fields = np.array([bank[t].profile.n_fields for t in library])
    families = {bank[t].family for t in library}
    scores: dict[str, list[float]] = {"in": [], "other_family": [], "same_family": []}
    for name, b in bank.items():
        ok = fields == b.profile.n_fields
        if not ok.any():
            continue
        nov = model.novelty(b.test)[:, ok].min(1)
        kind = "in" if name in library else ("same_family" if b.family in families else "other_family")
        scores[kind].extend(nov.tolist())
    return scores


def summarise(scores: dict[str, list[float]]) -> dict[str, Any]:
    inn = np.asarray(scores["in"])
    out: dict[str, Any] = {"n_in": len(inn), "false_unknown": float(np.mean(inn > 1))}
    for kind in ("other_family", "same_family"):
        o = np.asarray(scores[kind])
        out[f"n_{kind}"] = len(o)
        if len(o):
            y = np.r_[np.zeros(len(inn)), np.ones(len(o))]
            out[f"auroc_{kind}"] = float(roc_auc_score(y, np.r_[inn, o]))
            out[f"caught_{kind}"] = float(np.mean(o > 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--bank", default="../runs/bank-smollm2", help="feature bank path (built and saved if missing)")
    ap.add_argument("--sizes", default="3,6,10")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--quantiles", default="0.95,0.99,0.999")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    path = Path(a.bank)
    if path.with_suffix(".safetensors").exists():
        bank, _ = load_bank(path)
    else:
        from adaptive_learner.adapters import AdapterHost
        from adaptive_learner.backbone import load_backbone
        from adaptive_learner.features import FeatureConfig, FeatureExtractor
        from adaptive_learner.tasks import catalog_names, load_catalog_task

        extractor = FeatureExtractor(AdapterHost(load_backbone(a.backbone)), FeatureConfig())
        bank = build_bank(extractor, [load_catalog_task(n) for n in catalog_names()], test_n=100)
        save_bank(bank, path, {"backbone": a.backbone})
    names = sorted(bank)
    rng = np.random.RandomState(0)
    results: dict[str, Any] = {}
    for q in [float(x) for x in a.quantiles.split(",")]:
        for size in [int(x) for x in a.sizes.split(",")]:
            pooled: dict[str, list[float]] = {"in": [], "other_family": [], "same_family": []}
            per_draw = []
            for _ in range(a.draws):
                lib = sorted(rng.choice(names, size=min(size, len(names)), replace=False).tolist())
                s = novelty_of(bank, lib, q)
                per_draw.append(summarise(s))
                for k in pooled:
                    pooled[k].extend(s[k])
            res = summarise(pooled)
            res["auroc_other_family_per_draw_min"] = float(np.nanmin([d.get("auroc_other_family", np.nan)
                                                                       for d in per_draw]))
            results[f"q{q:g}/size{size}"] = res
            print(f"quantile {q:g} size {size}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                           for k, v in res.items()), flush=True)
    if a.out:
        save(a.out, {"machine": machine(), "backbone": a.backbone, "draws": a.draws, "results": results})


if __name__ == "__main__":
    main()
