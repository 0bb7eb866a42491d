"""Scoring throughput of today's code against an earlier commit's, side by side in one process.

The earlier commit's ``scoring.py`` (``git show REF:src/adaptive_learner/scoring.py``) is loaded as a
module beside today's, and both score the same encoded test examples with the same model (a LoRA
adapter active, as evaluation scores them), alternating A-B, B-A, ... so that both see the same
machine. Reports examples/s of each (min/median/max), the ratio per repeat, and the largest
difference between their label log-likelihoods.

    python benchmarks/scoring_compare.py --ref f00ae2b --tasks sst2,mrpc,boolq --n 96 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.tasks import load_catalog_task
from common import fmt, machine, peak_rss_gb, save, spread

ROOT = Path(__file__).resolve().parents[1]


def reference_scoring(ref: str):
    """The ``scoring`` module as it was at commit ``ref`` (its relative imports read from today's package)."""
    src = subprocess.run(["git", "show", f"{ref}:src/adaptive_learner/scoring.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    src = src.replace("from .prompting import", "from adaptive_learner.prompting import")
    path = Path(tempfile.mkdtemp()) / f"scoring_{ref}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"scoring_{ref}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--ref", default="f00ae2b", help="the commit whose scoring is the reference")
    p.add_argument("--tasks", default="sst2,mrpc,boolq")
    p.add_argument("--n", type=int, default=96, help="test examples per task")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per batch for both (default: each commit's own default, as a user gets it)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="scoring_compare")
    a = p.parse_args()
    ref = reference_scoring(a.ref)
    own = {"now": a.batch_size or inspect.signature(score).parameters["batch_size"].default,
           "before": a.batch_size or inspect.signature(ref.score).parameters["batch_size"].default}
    print(f"batch sizes: now {own['now']}, {a.ref} {own['before']}", flush=True)
    bb = load_backbone(a.backbone)
    host = AdapterHost(bb)
    host.create("scored", seed=0)
    with torch.no_grad():  # a LoRA adapter that changes the outputs, as a trained one does
        for name, w in host.trainable("scored").items():
            if "lora_B" in name:
                w.normal_(0, 0.02)
    pad = bb.tokenizer.pad_token_id
    results = {}
    with host.using("scored") as model:
        model.eval()
        for name in a.tasks.split(","):
            task = load_catalog_task(name).subsample(None, a.n, 0)
            items = encode_examples(bb.tokenizer, task.spec, task.test, 256)
            score(model, items[:4], pad, own["now"])  # warm-up
            now, before, diff = [], [], 0.0
            for r in range(a.repeats):
                for arm in ("before", "now") if r % 2 == 0 else ("now", "before"):
                    fn = ref.score if arm == "before" else score
                    t0 = time.perf_counter()
                    got = fn(model, items, pad, own[arm])
                    (before if arm == "before" else now).append(len(items) / (time.perf_counter() - t0))
                    if arm == "before":
                        want = got
                    else:
                        mine = got
                diff = max(diff, max(float(np.abs(g - w).max()) for g, w in zip(mine, want)))
            results[name] = {"now_ex_per_s": spread(now), "before_ex_per_s": spread(before),
                             "ratio": spread([x / y for x, y in zip(now, before)]), "max_abs_logp_diff": diff,
                             "mean_prompt_tokens": float(np.mean([len(it.prompt) for it in items]))}
            print(f"{name}: now {fmt(results[name]['now_ex_per_s'])} ex/s, {a.ref} {fmt(results[name]['before_ex_per_s'])}"
                  f" ex/s, ratio {fmt(results[name]['ratio'])}, max |dlogp| {diff:.1e}", flush=True)
    save(a.out, {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(a), "batch_sizes": own,
                 "results": results,
                 "peak_rss_gb": peak_rss_gb()})


if __name__ == "__main__":
    main()
