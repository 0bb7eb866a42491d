"""Where a bench run's task-id-free inputs go (issue 11's task-inferred row, issue 13's per-input routing).

The router strategy's per-input routing depends only on the stored profiles (base-model features and
sentence embeddings of each task's profile examples) and the test inputs, not on the trained adapters. This
rebuilds both exactly as ``alearn bench <sequence> --max-train N --max-test M --seeds S`` does (the same
subsamples, profile examples and feature settings), routes every test input as the bench's task-inferred row
does (``open_set=False``), and reports the confusion between tasks, per seed, without training anything.
``--adapters`` maps tasks onto the adapters a finished run gave them (its results file), so the adapter-level
rate is the bench's ``routing_accuracy``.

    python benchmarks/bench_routing.py --sequence headline --max-train 160 --max-test 200 --seeds 1 \
        --adapters runs/bench-headline-head-r-s1tv/seed1-order0/router/results.json --out bench_routing_s1
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.evaluation.config import RunConfig
from adaptive_learner.evaluation.harness import prepare_tasks
from adaptive_learner.features import input_text
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.service import LibraryRouter
from common import machine, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequence", default="headline")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--max-train", type=int, default=160)
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--adapters", default=None, help="a run's results.json: its tasks' adapters")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--out", default="bench_routing")
    args = ap.parse_args()
    adapters = {}
    if args.adapters:
        doc = json.loads(Path(args.adapters).read_text())
        adapters = {d["task"]: d["adapter"] for d in doc["router"]["decisions"]} if "router" in doc else {}
    host = AdapterHost(load_backbone(args.backbone))
    out = {"machine": machine(), "args": vars(args), "seeds": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = RunConfig(sequence=args.sequence, backbone=args.backbone, max_train=args.max_train,
                        max_test=args.max_test, seed=seed)
        tasks = prepare_tasks(cfg)
        router = LibraryRouter(host)
        profiles = [TaskProfile(t.name, adapters.get(t.name, f"lora-{t.name}"), router.profile(t, args.max_length))
                    for t in tasks]
        rows = {}
        for t in tasks:
            texts = [input_text(e.fields, t.spec) for e in t.test]
            routed, _ = router.route(texts, profiles, open_set=False)
            where = Counter(r.task for r in routed)
            own = adapters.get(t.name, f"lora-{t.name}")
            rows[t.name] = {"n": len(texts), "exact": where[t.name] / len(texts),
                            "adapter": float(np.mean([r.adapter == own for r in routed])),
                            "to": dict(where.most_common()),
                            "missed": [{"text": x[:200], "to": r.task, "confidence": round(r.confidence, 3)}
                                       for x, r in zip(texts, routed) if r.adapter != own]}
            print(f"seed {seed} {t.name}: exact {rows[t.name]['exact']:.3f} adapter {rows[t.name]['adapter']:.3f} "
                  f"-> {dict(where.most_common())}", flush=True)
        out["seeds"][str(seed)] = rows
    save(args.out, out)


if __name__ == "__main__":
    main()
