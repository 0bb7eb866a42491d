"""What routing adds to answering an input, on the product's path, for every catalog task.

A library of all 11 catalog tasks (profiles as ``Learner`` stores them: backbone features and
sentence embeddings of 32 training examples each, one LoRA adapter per task, B moved off zero).
For each task, the same test inputs are
  (a) scored with their task given: the task's adapter active, its prompt prefix run once per
      batch (``score_routed`` grouped, what ``alearn predict --task`` does);
  (b) routed as ``alearn predict`` without a task routes them (``LibraryRouter.route``): the
      early-exit backbone features, the tempered LDA posterior, the field ratios and, with the open
      set (the default), each input's sentence embedding and novelty; and without the open set.
Repeats alternate (a) and (b); overhead = routing seconds / scoring seconds (min/median/max).
Timing figures only when the machine runs nothing else.

    python benchmarks/routing_overhead.py --inputs 32 --repeats 3 [--layer L]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.features import FeatureConfig, input_text
from adaptive_learner.prompting import encode_examples
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.inference import score_routed
from adaptive_learner.router.service import LibraryRouter
from adaptive_learner.scoring import BATCH
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from common import fmt, machine, save, spread


@contextlib.contextmanager
def old_batches(router: LibraryRouter):
    """Routing with the batch size before 2026-12-03: MiniLM 32 inputs per forward (sentence-transformers')."""
    enc = router.extractor.encoder
    enc_bs = enc.batch_size
    enc.batch_size = 32
    try:
        yield
    finally:
        enc.batch_size = enc_bs


@contextlib.contextmanager
def input_tokens(router: LibraryRouter, n: int):
    """Routed inputs embedded at ``n`` tokens (timing only: the stored profiles stay at the library's length)."""
    cfg = router.extractor.config
    kept = cfg.input_embedding_tokens
    cfg.input_embedding_tokens = n
    try:
        yield
    finally:
        cfg.input_embedding_tokens = kept


@contextlib.contextmanager
def peft_base(host: AdapterHost):
    """``host.base()`` as it was before 2026-12-03: through peft's ``disable_adapter()``."""
    @contextlib.contextmanager
    def base():
        with host.peft.disable_adapter():
            yield host.peft

    host.base = base
    try:
        yield
    finally:
        del host.base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--tasks", default=",".join(catalog_names()), help="tasks timed (all 11 are stored)")
    ap.add_argument("--inputs", type=int, default=32, help="test inputs per timed task")
    ap.add_argument("--profile", type=int, default=32, help="profile examples per stored task")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=BATCH, help="examples per scoring batch (default: scoring.BATCH)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layer", type=int, default=None, help="feature layer (default: the router's default)")
    ap.add_argument("--encoder-max-tokens", type=int, default=FeatureConfig.input_embedding_tokens,
                    help="tokens of each input MiniLM embeds, profiles and inputs alike (default: the router's, "
                         "FeatureConfig.input_embedding_tokens; 256 before 2026-12-03)")
    ap.add_argument("--also-tokens", type=int, default=None,
                    help="also time routing with the inputs embedded at this many tokens, in the same loop (e.g. 256)")
    ap.add_argument("--peft-base", action="store_true",
                    help="also time routing with the backbone reached through peft's disable_adapter() (before 2026-12-03)")
    ap.add_argument("--old-batches", action="store_true",
                    help="also time scoring and routing with the batch sizes before 2026-12-03 (scoring 16, MiniLM 32)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_backbone(args.backbone)
    host = AdapterHost(backbone)
    router = LibraryRouter(host, features=FeatureConfig(layer=args.layer, input_embedding_tokens=args.encoder_max_tokens))
    profiles, tasks = [], {}
    for name in catalog_names():
        t = load_catalog_task(name)
        tasks[name] = t
        feats = router.extractor.task_features(t.spec, stratified_take(t.train, args.profile, 1), args.max_length)
        host.create(f"lora-{name}", seed=0)
        with torch.no_grad():
            for n, p in host.model.named_parameters():
                if f"lora_B.lora-{name}" in n:
                    p.normal_(0, 0.02)
        profiles.append(TaskProfile(name, f"lora-{name}", feats))
    router.route(["warm-up"], profiles)  # builds the input router once (cached per library state, as in serving)
    host.model.eval()
    rows = {}
    for name in args.tasks.split(","):
        t = tasks[name]
        examples = stratified_take(t.test, args.inputs, 2)
        texts = [input_text(e.fields, t.spec) for e in examples]
        items = encode_examples(backbone.tokenizer, t.spec, examples, args.max_length)
        a = f"lora-{name}"
        t_score, t_route, t_route_closed, t_route_peft, right = [], [], [], [], 0
        t_score_old, t_route_old, t_route_tokens = [], [], []
        for _ in range(args.repeats):
            if args.old_batches:
                t0 = time.perf_counter()
                score_routed(host, items, [a] * len(items), [name] * len(items), 16)
                t_score_old.append(time.perf_counter() - t0)
                with old_batches(router):
                    t0 = time.perf_counter()
                    router.route(texts, profiles, open_set=True)
                    t_route_old.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            score_routed(host, items, [a] * len(items), [name] * len(items), args.batch_size)
            t_score.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            routed, _ = router.route(texts, profiles, open_set=True)
            t_route.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            router.route(texts, profiles, open_set=False)
            t_route_closed.append(time.perf_counter() - t0)
            if args.also_tokens:
                with input_tokens(router, args.also_tokens):
                    t0 = time.perf_counter()
                    router.route(texts, profiles, open_set=True)
                    t_route_tokens.append(time.perf_counter() - t0)
            if args.peft_base:
                with peft_base(host):
                    t0 = time.perf_counter()
                    router.route(texts, profiles, open_set=True)
                    t_route_peft.append(time.perf_counter() - t0)
            right = sum(r is not None and r.task == name for r in routed)
        ratio = [r / s for r, s in zip(t_route, t_score)]
        ratio_closed = [r / s for r, s in zip(t_route_closed, t_score)]
        rows[name] = {"inputs": len(texts), "prompt_tokens_mean": float(np.mean([len(i.prompt) for i in items])),
                      "routed_to_its_task": right / len(texts), "score_s": spread(t_score),
                      "route_s": spread(t_route), "route_closed_s": spread(t_route_closed),
                      "overhead": spread(ratio), "overhead_closed": spread(ratio_closed)}
        if t_score_old:
            rows[name].update({"score_old_batches_s": spread(t_score_old), "route_old_batches_s": spread(t_route_old),
                               "overhead_old_batches": spread([r / s for r, s in zip(t_route_old, t_score_old)]),
                               "scoring_speedup": spread([o / n for o, n in zip(t_score_old, t_score)]),
                               "routing_speedup": spread([o / n for o, n in zip(t_route_old, t_route)])})
        if t_route_tokens:
            rows[name]["route_also_tokens_s"] = spread(t_route_tokens)
            rows[name]["overhead_also_tokens"] = spread([r / s for r, s in zip(t_route_tokens, t_score)])
        if t_route_peft:
            rows[name]["route_peft_base_s"] = spread(t_route_peft)
            rows[name]["overhead_peft_base"] = spread([r / s for r, s in zip(t_route_peft, t_score)])
        print(f"{name:16s} score {fmt(rows[name]['score_s'])} s  route {fmt(rows[name]['route_s'], 3)} s  "
              f"overhead {fmt(rows[name]['overhead'], 3)}  (closed set {fmt(rows[name]['overhead_closed'], 3)})"
              + (f"  (inputs at {args.also_tokens} tokens {fmt(rows[name]['overhead_also_tokens'], 3)})"
                 if t_route_tokens else "")
              + (f"  (peft's disable_adapter {fmt(rows[name]['overhead_peft_base'], 3)})" if t_route_peft else "")
              + (f"  (old batches: overhead {fmt(rows[name]['overhead_old_batches'], 3)}, scoring x"
                 f"{fmt(rows[name]['scoring_speedup'], 2)}, routing x{fmt(rows[name]['routing_speedup'], 2)})"
                 if t_score_old else ""),
              flush=True)
    total_s = sum(r["score_s"]["median"] for r in rows.values())
    total_r = sum(r["route_s"]["median"] for r in rows.values())
    doc = {"machine": machine(), "backbone": args.backbone, "features": router.features.to_dict(),
           "args": vars(args), "tasks": rows, "overall_overhead": total_r / total_s}
    print(f"overall: routing adds {100 * total_r / total_s:.1f}% to scoring")
    if args.also_tokens:
        also = sum(r["route_also_tokens_s"]["median"] for r in rows.values()) / total_s
        doc["overall_overhead_also_tokens"] = also
        print(f"overall with inputs at {args.also_tokens} tokens: {100 * also:.1f}%")
    if args.old_batches:
        old = (sum(r["route_old_batches_s"]["median"] for r in rows.values())
               / sum(r["score_old_batches_s"]["median"] for r in rows.values()))
        doc["overall_overhead_old_batches"] = old
        print(f"overall with the old batch sizes: {100 * old:.1f}%")
    save(args.out or f"routing_overhead_layer{args.layer if args.layer is not None else 'default'}", doc)


if __name__ == "__main__":
    main()
