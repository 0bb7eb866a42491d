"""Scoring routed inputs: grouped by task (each task's prompt prefix shared) vs one stream of peft
mixed-adapter batches, on a real backbone, the same inputs, alternating in one process.

Inputs of several tasks arrive interleaved, each already routed to its task and adapter (one LoRA
per task, weights moved off zero so each adapter changes its answers). (a) ``group=False``: all in
mixed-adapter batches (``adapter_names``), no prefix shared; (b) ``group=True`` (the default of
``answer_routed``): by task, with that task's adapter active and its prompt prefix run once per batch.
Reports seconds per pass (min/median/max over repeats), the ratio a/b, and the largest score
difference between the two.

    python benchmarks/routed_scoring.py --backbone smollm2-135m --tasks sst2,mrpc,trec --inputs 32 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.router.inference import score_routed
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
from common import fmt, machine, save, spread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--tasks", default="sst2,mrpc,trec")
    ap.add_argument("--inputs", type=int, default=32, help="test inputs per task")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    host = AdapterHost(load_backbone(args.backbone))
    items, adapters, tasks = [], [], []
    for k, name in enumerate(args.tasks.split(",")):
        task = load_catalog_task(name)
        host.create(f"lora-{name}", seed=k)
        with torch.no_grad():
            for n, p in host.trainable(f"lora-{name}").items():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
        enc = encode_examples(host.backbone.tokenizer, task.spec, stratified_take(task.test, args.inputs, 0),
                              args.max_length)
        items += enc
        adapters += [f"lora-{name}"] * len(enc)
        tasks += [name] * len(enc)
    order = np.random.RandomState(0).permutation(len(items))  # interleaved, as requests arrive
    items, adapters, tasks = [items[i] for i in order], [adapters[i] for i in order], [tasks[i] for i in order]
    times = {"mixed": [], "grouped": []}
    results = {}
    for _ in range(args.repeats):
        for label, group in (("mixed", False), ("grouped", True)):
            t0 = time.perf_counter()
            results[label] = score_routed(host, items, adapters, tasks, args.batch_size, group)
            times[label].append(time.perf_counter() - t0)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(results["mixed"], results["grouped"]))
    ratio = [m / g for m, g in zip(times["mixed"], times["grouped"])]
    doc = {"machine": machine(), "args": vars(args), "n_inputs": len(items), "threads": torch.get_num_threads(),
           "mixed_s": spread(times["mixed"]), "grouped_s": spread(times["grouped"]), "ratio_mixed_over_grouped":
           spread(ratio), "max_abs_score_diff": diff}
    print(f"{len(items)} inputs of {args.tasks}: mixed {fmt(doc['mixed_s'])} s, grouped {fmt(doc['grouped_s'])} s, "
          f"mixed/grouped {fmt(doc['ratio_mixed_over_grouped'])}; max |score diff| {diff:.2e}")
    save("routed_scoring", doc)


if __name__ == "__main__":
    main()
