"""Does the memory allocator change training and scoring speed? (issue 14: "thread and allocator settings").

The allocator is chosen per process (``LD_PRELOAD``), so each arm is a fresh worker process: glibc's malloc
(the default), jemalloc and tcmalloc (Debian's ``libjemalloc2``, ``libtcmalloc-minimal4``) and glibc told by ``mallopt`` to keep freed memory
(``glibc-mallopt``), in a rotated
order each repeat. A worker loads the backbone and task, trains an adapter for ``--steps`` steps with the
product's trainer (``train_adapter``, today's defaults but a fixed step count) and scores ``--n`` test
examples with it (``scoring.score``: shared prompt prefix, batched), and reports the seconds of each and
its step losses and scores, which must not differ between allocators (the arithmetic is the same).

    python benchmarks/allocator_compare.py --task sst2 --steps 12 --n 96 --repeats 3 --out allocator_compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LIBS = {"glibc": None, "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "glibc-mallopt": None}
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def glibc_keep_memory() -> None:
    """glibc told (``mallopt``) to serve large blocks from its heap and keep what is freed, instead of an
    mmap and munmap (and the kernel zeroing fresh pages) for every large tensor."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1


def worker(args: argparse.Namespace) -> None:
    if args.mallopt:
        glibc_keep_memory()
    import resource

    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.backbone import load_backbone
    from adaptive_learner.prompting import encode_examples
    from adaptive_learner.scoring import score
    from adaptive_learner.tasks import load_catalog_task
    from adaptive_learner.training import TrainConfig, train_adapter

    backbone = load_backbone(args.backbone)
    task = load_catalog_task(args.task).subsample(256, args.n, 0)
    items = encode_examples(backbone.tokenizer, task.spec, task.train, 256)
    test = encode_examples(backbone.tokenizer, task.spec, task.test, 256)
    host = AdapterHost(backbone)
    host.create("bench", seed=0)
    cfg = TrainConfig(steps=args.steps, early_stop=False, seed=0)
    t0 = time.perf_counter()
    rep = train_adapter(host, "bench", items, cfg)
    train_s = time.perf_counter() - t0
    with host.using("bench") as model:
        model.eval()
        t0 = time.perf_counter()
        scores = score(model, test, backbone.tokenizer.pad_token_id)
        score_s = time.perf_counter() - t0
    print(json.dumps({"train_s": train_s, "step_s": rep.seconds / rep.steps, "score_s": score_s,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                      "losses": [float(x) for x in rep.losses], "scores": [s.tolist() for s in scores]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--n", type=int, default=96, help="test examples scored")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--allocators", default=",".join(LIBS))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mallopt", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="allocator_compare")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    from common import machine, save, spread

    arms = args.allocators.split(",")
    for a in arms:
        if LIBS[a] is not None and not Path(LIBS[a]).is_file():
            raise SystemExit(f"error: {a} is not installed ({LIBS[a]})")
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.repeats):
        order = arms[r % len(arms):] + arms[: r % len(arms)]
        for a in order:
            env = dict(os.environ)
            if LIBS[a]:
                env["LD_PRELOAD"] = LIBS[a]
            cmd = [sys.executable, __file__, "--worker", "--backbone", args.backbone, "--task", args.task,
                   "--steps", str(args.steps), "--n", str(args.n)] + (["--mallopt"] if a == "glibc-mallopt" else [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            runs[a].append(json.loads(out.strip().splitlines()[-1]))
            print(f"repeat {r} {a:9s} step {runs[a][-1]['step_s']:.3f} s, scoring {runs[a][-1]['score_s']:.2f} s",
                  flush=True)
    ref = runs[arms[0]][0]
    doc = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args), "arms": {}}
    for a in arms:
        loss_diff = max(float(np.max(np.abs(np.subtract(x["losses"], ref["losses"])))) for x in runs[a])
        score_diff = max(float(max(np.max(np.abs(np.subtract(s, t))) for s, t in zip(x["scores"], ref["scores"])))
                         for x in runs[a])
        doc["arms"][a] = {"step_s": spread([x["step_s"] for x in runs[a]]),
                          "score_s": spread([x["score_s"] for x in runs[a]]),
                          "step_ratio_vs_first": spread([x["step_s"] / y["step_s"] for x, y in zip(runs[a], runs[arms[0]])]),
                          "score_ratio_vs_first": spread([x["score_s"] / y["score_s"]
                                                          for x, y in zip(runs[a], runs[arms[0]])]),
                          "peak_rss_gb": spread([x["peak_rss_gb"] for x in runs[a]]),
                          "max_loss_difference": loss_diff, "max_score_difference": score_diff}
        print(a, json.dumps({k: v for k, v in doc["arms"][a].items()}), flush=True)
    save(args.out, doc)


if __name__ == "__main__":
    main()
