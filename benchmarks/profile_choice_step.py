"""Where a training step of the choices objective spends its time: one step each of lm, every label and 8 labels
sampled on 50 labels (trec questions under the fine names), its wall time, its tokens, and a torch.profiler table.
Session 43 (BENCHMARKS.md): run beside the queue, so its seconds are shared; the step timings measured alone are
choice_scoring.py's.

    OMP_NUM_THREADS=1 python benchmarks/profile_choice_step.py 1      # the argument: torch threads
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from choice_scoring import items_with, LABEL_SETS
from adaptive_learner.backbone import load_backbone
from adaptive_learner.adapters import AdapterHost
from adaptive_learner.training.trainer import label_loss, sample_choices
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
bb = load_backbone("smollm2-135m")
host = AdapterHost(bb); host.create("a", seed=0); host.activate("a")
params = host.trainable("a")
pad = bb.tokenizer.pad_token_id
items = items_with(bb, LABEL_SETS["fine"], 40)
def step(obj, batch):
    loss = label_loss(host.model, batch, pad, torch.device("cpu"), objective=obj)[0]
    loss.backward()
    for p in params.values(): p.grad = None
host.model.train()
rng = np.random.RandomState(0)
for obj in ("lm", "choices", "sampled"):
    b = items[:8]
    if obj == "sampled": b = sample_choices(b, 8, rng)
    o = "choices" if obj == "sampled" else obj
    step(o, b)
    ts = []
    for r in range(3):
        bb_ = items[8*(r+1):8*(r+2)]
        if obj == "sampled": bb_ = sample_choices(bb_, 8, rng)
        t = time.perf_counter(); step(o, bb_); ts.append(time.perf_counter() - t)
    toks = sum(len(it.prompt) + (sum(map(len, it.choices)) if o == "choices" else len(it.choices[it.label])) for it in bb_)
    print(obj, "step s", [round(x, 3) for x in ts], "tokens", toks, flush=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(o, bb_)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))
