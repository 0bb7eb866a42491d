"""Per-input routing overhead on a real backbone: what routing adds to the time of scoring an input.

For a few tasks (a short single text, a sentence pair, a passage and question, a long article),
the same test inputs are (a) scored with their task given, through a LoRA adapter, in peft
mixed-adapter batches as ``Learner.predict`` does, and (b) routed: the early-exit backbone features
plus the linear-discriminant posterior over every catalog task. Repeats alternate (a) and (b).

    python benchmarks/router_eval.py --backbone smollm2-135m --inputs 48 --repeats 3

The decision benchmark (the gauntlet) is ``alearn router-eval``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.features import FeatureConfig, FeatureExtractor, input_text
from adaptive_learner.prompting import encode_examples
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.routing import InputRouter, count_fields
from adaptive_learner.scoring import score
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from common import fmt, machine, save, spread

TIMED_TASKS = ["sst2", "mrpc", "boolq", "bbc_news"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--inputs", type=int, default=48, help="test inputs per timed task")
    ap.add_argument("--profile", type=int, default=32, help="profile examples per catalog task (routing only)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--layer", type=int, default=None, help="feature layer (default: the router's default)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    backbone = load_backbone(args.backbone)
    host = AdapterHost(backbone)
    extractor = FeatureExtractor(host, FeatureConfig(layer=args.layer))
    profiles = []
    for name in catalog_names():  # the router chooses among all 11 tasks, as in a full library
        t = load_catalog_task(name)
        feats = extractor.input_features([input_text(e.fields, t.spec) for e in stratified_take(t.train, args.profile, 1)])
        profiles.append(TaskProfile(name, f"lora-{name}", _features(t, feats)))
    router = InputRouter(profiles)
    rows = {}
    for name in TIMED_TASKS:
        t = load_catalog_task(name)
        host.create(f"lora-{name}", seed=0)
        examples = stratified_take(t.test, args.inputs, 2)
        texts = [input_text(e.fields, t.spec) for e in examples]
        items = encode_examples(backbone.tokenizer, t.spec, examples, args.max_length)
        host.model.eval()
        t_score, t_route = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            score(host.model, items, backbone.tokenizer.pad_token_id, args.batch_size,
                  adapter_names=[f"lora-{name}"] * len(items))
            t_score.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            router.route(extractor.input_features(texts), [count_fields(x) for x in texts])
            t_route.append(time.perf_counter() - t0)
        ratio = [r / s for r, s in zip(t_route, t_score)]
        rows[name] = {"inputs": len(texts), "prompt_tokens_mean": float(np.mean([len(i.prompt) for i in items])),
                      "score_s": spread(t_score), "route_s": spread(t_route), "overhead": spread(ratio)}
        print(f"{name:10s} score {fmt(rows[name]['score_s'])} s  route {fmt(rows[name]['route_s'], 3)} s  "
              f"overhead {fmt(rows[name]['overhead'], 3)}", flush=True)
    total_s = sum(r["score_s"]["median"] for r in rows.values())
    total_r = sum(r["route_s"]["median"] for r in rows.values())
    doc = {"machine": machine(), "backbone": args.backbone, "features": extractor.config.to_dict(),
           "args": vars(args), "tasks": rows, "overall_overhead": total_r / total_s}
    print(f"overall: routing adds {100 * total_r / total_s:.1f}% to scoring")
    save(f"router_overhead_layer{extractor.config.layer if args.layer is not None else 'default'}", doc)


def _features(task, feats):
    from adaptive_learner.features import TaskFeatures

    s = task.spec
    return TaskFeatures(s.name, feats, None, None, None, len(s.label_names), len(s.input_fields),
                        list(s.label_names), list(s.verbalizers))


if __name__ == "__main__":
    main()
