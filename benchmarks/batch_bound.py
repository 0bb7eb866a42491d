"""What batching can give at best on this machine: scoring throughput at batch size b against b = 1.

The server's dynamic batching can at most turn one-request-at-a-time scoring into batch-b scoring, so
examples/s at batch b over examples/s at batch 1 (same inputs, same adapter, no HTTP, no routing) is
the ceiling of its throughput gain (issue 12's "5x at 32 clients" target). Measured alone.

    python benchmarks/batch_bound.py --task sst2 --n 96 --sizes 1,8,32 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.tasks import load_catalog_task
from common import machine, save, spread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--sizes", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="batch_bound")
    a = ap.parse_args()
    backbone = load_backbone(a.backbone)
    task = load_catalog_task(a.task)
    items = encode_examples(backbone.tokenizer, task.spec, task.test[: a.n], 256)
    host = AdapterHost(backbone)
    host.create("a", seed=0)  # an adapter as served: LoRA layers in the forward
    pad = backbone.tokenizer.pad_token_id
    rows = {}
    with host.using("a") as m, torch.no_grad():
        m.eval()
        score(m, items[:8], pad, 8)  # warm-up
        for b in [int(x) for x in a.sizes.split(",")]:
            rates = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                score(m, items, pad, b)
                rates.append(len(items) / (time.perf_counter() - t0))
            rows[b] = spread(rates)
            print(f"batch {b}: {rows[b]['median']:.1f} examples/s (min {rows[b]['min']:.1f}, max {rows[b]['max']:.1f})",
                  flush=True)
    base = rows[min(rows)]["median"]
    ratios = {b: r["median"] / base for b, r in rows.items()}
    print("ratio to batch 1: " + ", ".join(f"{b}: {v:.2f}x" for b, v in ratios.items()))
    save(a.out, {"machine": machine(), "args": vars(a), "examples_per_s": rows, "ratio_to_batch_1": ratios})


if __name__ == "__main__":
    main()
