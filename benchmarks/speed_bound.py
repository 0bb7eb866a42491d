"""How much faster could scoring and training get in fp32 on this machine? A bound from the matrix products.

Issue 14 asks for 1.5x on scoring over commit f00ae2b and 2x over transformers.Trainer on training, without
changing results (same FLOPs, same precision). This script measures how far that is possible here:

1. today's scoring (and, beside it, f00ae2b's, as in ``scoring_compare.py``) and a few training steps are
   timed without a profiler: the wall time;
2. the same work runs once under ``torch.profiler`` with shapes recorded, listing every matrix product
   (``aten::mm``, ``aten::addmm``, ``aten::bmm``) and its time;
3. every distinct product shape is timed alone, at its own row count and at 512-4096 rows (what any batch
   size could give it), and the best rate is kept.

``bound`` = wall time / sum over products of FLOPs / best rate of that shape: the speed-up left if everything
but the matrix products took no time and every product ran at the best rate this machine reaches for its
shape. It is an upper bound (attention, norms, the optimiser and Python count as free). Where
``bound`` x (today / f00ae2b) < 1.5, the scoring target cannot be met in fp32 on this machine.

    python benchmarks/speed_bound.py --tasks sst2,mrpc,boolq --n 64 --train-steps 8
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.training import TrainConfig, train_adapter
from common import machine, matmul_peak_gflops, moved_adapter, peak_rss_gb, save, spread
from scoring_compare import reference_scoring

PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm")


def products(prof) -> list[tuple[tuple[int, int, int, int], float]]:
    """(batch, rows, inner, cols) and self time in seconds of every matrix product the profile saw."""
    out = []
    for e in prof.events():
        if e.name not in PRODUCTS or not e.input_shapes:
            continue
        shapes = [s for s in e.input_shapes if s]
        if e.name == "aten::addmm":
            shapes = shapes[1:3]
        a, b = shapes[0], shapes[1]
        if e.name == "aten::bmm":
            key = (a[0], a[1], a[2], b[2])
        else:
            key = (1, a[0], a[1], b[1])
        out.append((key, e.self_cpu_time_total / 1e6))
    return out


def flops(key: tuple[int, int, int, int]) -> float:
    b, m, k, n = key
    return 2.0 * b * m * k * n


def best_rate(key: tuple[int, int, int, int], budget_s: float = 0.15) -> float:
    """The best FLOP/s this machine gives a product with this inner and output size (and batch), over its own
    row count and 512, 1024, 2048 and 4096 rows."""
    b, m, k, n = key
    return max(_rate(b, rows, k, n, budget_s) for rows in {m, 512, 1024, 2048, 4096})


_row_rates: dict[tuple[int, int, int, int], float] = {}


def _rate(b: int, m: int, k: int, n: int, budget_s: float) -> float:
    if (b, m, k, n) in _row_rates:
        return _row_rates[(b, m, k, n)]
    if b > 1:
        x, fn = torch.randn(b, m, k), torch.bmm
        layouts = [torch.randn(b, k, n), torch.randn(b, n, k).transpose(1, 2)]
    else:  # a linear layer's weight is stored (n, k) and multiplied transposed: both layouts, the faster kept
        x, fn = torch.randn(m, k), torch.mm
        layouts = [torch.randn(k, n), torch.randn(n, k).t()]
    best = float("inf")
    for y in layouts:
        for _ in range(2):
            fn(x, y)
        t_end = time.perf_counter() + budget_s
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn(x, y)
            best = min(best, time.perf_counter() - t0)
    _row_rates[(b, m, k, n)] = flops((b, m, k, n)) / best
    return _row_rates[(b, m, k, n)]


def bound(wall_s: float, seen: list[tuple[tuple[int, int, int, int], float]]) -> dict:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for key, t in seen:
        groups[key].append(t)
    ideal = sum(flops(key) * len(ts) / best_rate(key) for key, ts in groups.items())
    product_s = sum(sum(ts) for ts in groups.values())
    total_flops = sum(flops(key) * len(ts) for key, ts in groups.items())
    by_shape = sorted(({"shape": list(key), "calls": len(ts), "self_s": sum(ts),
                        "ideal_s": flops(key) * len(ts) / best_rate(key),
                        "best_gflops": best_rate(key) / 1e9} for key, ts in groups.items()),
                      key=lambda r: r["ideal_s"] - r["self_s"])
    return {"wall_s": wall_s, "products": sum(len(ts) for ts in groups.values()), "shapes": len(groups),
            "widest_gaps": by_shape[:12],
            "product_gflop": total_flops / 1e9, "product_self_s_profiled": product_s,
            "product_rate_gflops_profiled": total_flops / product_s / 1e9 if product_s else None,
            "ideal_s": ideal, "bound": wall_s / ideal if ideal else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--ref", default="f00ae2b", help="the commit whose scoring issue 14's target is relative to")
    p.add_argument("--tasks", default="sst2,mrpc,boolq")
    p.add_argument("--n", type=int, default=64, help="test examples scored per task")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-task", default="sst2")
    p.add_argument("--train-steps", type=int, default=8, help="training steps timed and profiled (0: none)")
    p.add_argument("--out", default="speed_bound")
    a = p.parse_args()
    ref = reference_scoring(a.ref)
    bb = load_backbone(a.backbone)
    pad = bb.tokenizer.pad_token_id
    host = AdapterHost(bb)
    moved_adapter(host, "scored")
    peak = matmul_peak_gflops()
    results: dict = {}
    with host.using("scored") as model:
        model.eval()
        for name in a.tasks.split(","):
            task = load_catalog_task(name).subsample(None, a.n, 0)
            items = encode_examples(bb.tokenizer, task.spec, task.test, 256)
            score(model, items[:4], pad)
            now, before = [], []
            for r in range(a.repeats):
                for arm in ("before", "now") if r % 2 == 0 else ("now", "before"):
                    fn = ref.score if arm == "before" else score
                    t0 = time.perf_counter()
                    fn(model, items, pad)
                    (before if arm == "before" else now).append(time.perf_counter() - t0)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                score(model, items, pad)
            res = bound(float(np.median(now)), products(prof))
            res["vs_ref"] = spread([b / n for n, b in zip(now, before)])
            res["now_s"], res["ref_s"] = spread(now), spread(before)
            res["target_needs_from_today"] = 1.5 / res["vs_ref"]["median"]
            results[f"score/{name}"] = res
            print(f"score {name}: today {res['vs_ref']['median']:.2f}x {a.ref}; matrix products "
                  f"{res['product_rate_gflops_profiled']:.0f} GFLOP/s as run; bound {res['bound']:.2f}x today "
                  f"(the target needs {res['target_needs_from_today']:.2f}x)", flush=True)
    host.delete("scored")
    if a.train_steps:
        task = load_catalog_task(a.train_task).subsample(256, None, 0)
        items = encode_examples(bb.tokenizer, task.spec, task.train, 256)
        cfg = TrainConfig(steps=a.train_steps, early_stop=False, seed=0)
        walls = []
        for r in range(a.repeats):
            host.create("t", seed=0)
            walls.append(train_adapter(host, "t", items, cfg).seconds)
            host.delete("t")
        host.create("t", seed=0)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            train_adapter(host, "t", items, cfg)
        host.delete("t")
        res = bound(float(np.median(walls)), products(prof))
        res["step_s"] = spread([w / a.train_steps for w in walls])
        results[f"train/{a.train_task}"] = res
        print(f"train {a.train_task}: {res['step_s']['median']:.2f} s a step; matrix products "
              f"{res['product_rate_gflops_profiled']:.0f} GFLOP/s as run; bound {res['bound']:.2f}x today", flush=True)
    save(a.out, {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(a),
                 "matmul_peak_gflops_2048": peak, "results": results, "peak_rss_gb": peak_rss_gb()})


if __name__ == "__main__":
    main()
