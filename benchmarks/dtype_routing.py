"""Routing with the backbone in bfloat16: a float32 library's profiles, and a library made in bfloat16.

The 11 catalog tasks' profiles (backbone features and sentence embeddings of 32 training examples each,
as ``Learner`` stores them) are computed with the backbone in float32 and in bfloat16; each task's test
inputs are then routed (``LibraryRouter.route``, open set on, as ``alearn predict`` without a task) three
ways: float32 throughout (today's default); float32 profiles routed in bfloat16 (a library made in
float32, used with ``--dtype bfloat16``); bfloat16 throughout. Reports exact-task routing accuracy,
in-library inputs called unknown, and how often each way routes an input where float32 does.
No adapters are trained: routing reads the profiles only.

    OMP_NUM_THREADS=1 python benchmarks/dtype_routing.py --inputs 50 --out dtype_routing
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.features import input_text
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.service import LibraryRouter
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from common import machine, peak_rss_gb, save

WAYS = {"float32": ("float32", "float32"), "fp32 profiles, bf16 routing": ("float32", "bfloat16"),
        "bfloat16": ("bfloat16", "bfloat16")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--inputs", type=int, default=50, help="test inputs routed per task")
    ap.add_argument("--profile", type=int, default=32)
    ap.add_argument("--out", default="dtype_routing")
    a = ap.parse_args()
    routers = {d: LibraryRouter(AdapterHost(load_backbone(a.backbone, dtype=d))) for d in ("float32", "bfloat16")}
    tasks = {n: load_catalog_task(n) for n in catalog_names()}
    profiles = {d: [TaskProfile(n, f"lora-{n}", r.extractor.task_features(t.spec, stratified_take(t.train, a.profile, 1), 256))
                    for n, t in tasks.items()] for d, r in routers.items()}
    routed: dict[str, list] = {w: [] for w in WAYS}
    truth = []
    for name, t in tasks.items():
        texts = [input_text(e.fields, t.spec) for e in stratified_take(t.test, a.inputs, 2)]
        truth += [name] * len(texts)
        for way, (prof, route) in WAYS.items():
            out, _ = routers[route].route(texts, profiles[prof], open_set=True)
            routed[way] += [(r.task if r is not None else None, (not r.known) if r is not None else True)
                            for r in out]
    res = {}
    for way, got in routed.items():
        tasks_got = [g[0] for g in got]
        res[way] = {"exact_task": float(np.mean([g == t for g, t in zip(tasks_got, truth)])),
                    "unknown": float(np.mean([g[1] for g in got])),
                    "same_as_float32": float(np.mean([g == f[0] for g, f in zip(tasks_got, routed["float32"])]))}
        print(f"{way}: exact task {res[way]['exact_task']:.3f}, unknown {res[way]['unknown']:.3f}, "
              f"same task as float32 {res[way]['same_as_float32']:.3f}", flush=True)
    save(a.out, {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(a), "inputs": len(truth),
                 "results": res, "peak_rss_gb": peak_rss_gb()})


if __name__ == "__main__":
    main()
