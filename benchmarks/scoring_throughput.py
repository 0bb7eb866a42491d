"""Scoring throughput: batched rank scoring vs a loop scoring one example and one label at a time.

The loop is the straightforward implementation: for each example and each label, one forward pass
over prompt + verbalizer with full logits. Both give the same log-likelihoods (checked here).

    python benchmarks/scoring_throughput.py --backbone smollm2-135m --task sst2 --n 64 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.tasks import load_catalog_task
from common import fmt, machine, peak_rss_gb, save, spread


@torch.no_grad()
def one_at_a_time(model, items):
    out = []
    for it in items:
        row = []
        for choice in it.choices:
            ids = torch.tensor([it.prompt + choice])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            row.append(sum(logp[len(it.prompt) - 1 + k, t].item() for k, t in enumerate(choice)))
        out.append(np.array(row))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--tasks", default="sst2,mrpc")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="scoring_throughput")
    a = p.parse_args()
    bb = load_backbone(a.backbone)
    results = {}
    for name in a.tasks.split(","):
        task = load_catalog_task(name).subsample(None, a.n, 0)
        items = encode_examples(bb.tokenizer, task.spec, task.test, 256)
        fast, slow, diff = [], [], 0.0
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            got = score(bb.model, items, bb.tokenizer.pad_token_id, a.batch_size)
            fast.append(len(items) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            want = one_at_a_time(bb.model, items)
            slow.append(len(items) / (time.perf_counter() - t0))
            diff = max(diff, max(float(np.abs(g - w).max()) for g, w in zip(got, want)))
        results[name] = {"batched_ex_per_s": spread(fast), "loop_ex_per_s": spread(slow),
                         "speedup": spread([f / s for f, s in zip(fast, slow)]), "max_abs_logp_diff": diff}
        print(f"{name}: batched {fmt(results[name]['batched_ex_per_s'])} ex/s, loop {fmt(results[name]['loop_ex_per_s'])}"
              f" ex/s, speedup {fmt(results[name]['speedup'])}x, max |dlogp| {diff:.2e}", flush=True)
    save(a.out, {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(a), "results": results,
                 "peak_rss_gb": peak_rss_gb()})


if __name__ == "__main__":
    main()
