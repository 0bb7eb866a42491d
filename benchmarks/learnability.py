"""Learnability: which tasks does the backbone learn, and how fast (issue 11, item 1)?

Two modes, one table:

``--train``: for each task, one new adapter trained on ``--n-train`` examples for the largest of
``--checkpoints`` steps without early stopping (the training defaults otherwise), scored on the test
split (at most ``--max-test`` examples) at every checkpoint; beside it the zero-shot accuracy and the
majority-class rate of the same test examples.

``--train --held-out``: as ``--train``, but the adapter trains on what early stopping trains on (the
validation split held out as ``alearn learn`` holds it) and never stops early: the held-out accuracy
and loss every ``eval_every`` steps and the test accuracy at the same steps (which test examples
were right, too), up to ``--steps``. ``benchmarks/stopping_rules.py`` replays any stopping rule on
these curves without training again.

``--from FILE...``: the same table from ``per_task_quality.py`` results (the adapter trained until
its held-out loss stopped improving, scored once on the test examples), with the held-out accuracy
curves it recorded.

A task counts as *learned* when its adapter's test accuracy beats the majority-class rate by at least
5 points and the lower end of the two-sided 95% Wilson interval of that accuracy lies above the rate.

    python benchmarks/learnability.py --from results/per_task_quality_160_head_a.json \\
        results/per_task_quality_160_head_b.json --out learnability_160
    OMP_NUM_THREADS=1 python benchmarks/learnability.py --train --tasks sst2,trec --checkpoints 25,50,100,200
    OMP_NUM_THREADS=1 python benchmarks/learnability.py --train --held-out --steps 200 --tasks trec --max-test 200
    OMP_NUM_THREADS=1 python benchmarks/learnability.py --train --held-out --steps 200 --tasks trec --lr 1e-3 \
        --lora-plus-ratio 16
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_learner.evaluation.stats import wilson
from common import machine, peak_rss_gb, save

HERE = Path(__file__).parent
CATALOG = ["sst2", "imdb", "rotten_tomatoes", "mrpc", "stsb", "rte", "cb", "boolq", "trec", "sms_spam", "bbc_news"]


def verdict(acc: float, majority: float, n: int) -> bool:
    lo, _ = wilson(acc, n)
    return bool(acc - majority >= 0.05 and lo > majority)


def from_results(files: list[str]) -> list[dict[str, Any]]:
    rows = []
    for f in files:
        path = Path(f) if Path(f).exists() else HERE / f  # as given, or relative to benchmarks/
        doc = json.loads(path.read_text())
        for r in doc["rows"]:
            ours = r.get("ours")
            if not ours or r["task"] not in CATALOG:  # the catalog's tasks; the user-style CSVs are elsewhere
                continue
            rows.append({"task": r["task"], "n_train": r["n_train"], "n_test": r["n_test"], "majority": r["majority"],
                         "zero_shot": ours["zero_shot"], "curve": [{"step": ours["best_step"], "accuracy": ours["accuracy"]}],
                         "final": ours["accuracy"], "steps": ours["steps"], "best_step": ours["best_step"],
                         "held_out_curve": ours.get("validation", []), "source": Path(f).name})
    return rows


def train_curves(a: argparse.Namespace) -> list[dict[str, Any]]:
    from adaptive_learner.adapters import AdapterHost
    from adaptive_learner.backbone import device_name, load_backbone, resolve_device
    from adaptive_learner.prompting import encode_examples
    from adaptive_learner.scoring import accuracy, score
    from adaptive_learner.tasks import load_catalog_task
    from adaptive_learner.training import TrainConfig, train_adapter

    if a.held_out:  # early stopping's split and evaluations, never stopping: every evaluation is a checkpoint
        cfg = replace(TrainConfig(), steps=a.steps, early_stop=True, patience=10**9, seed=a.seed)
        checkpoints = list(range(cfg.eval_every, cfg.steps + 1, cfg.eval_every))
    else:
        checkpoints = sorted(int(x) for x in a.checkpoints.split(","))
        cfg = replace(TrainConfig(), steps=checkpoints[-1], early_stop=False, seed=a.seed)
    cfg = replace(cfg, lr=a.lr or cfg.lr, lora_plus_ratio=a.lora_plus_ratio)
    a.checkpoint_list, a.train_config_used = checkpoints, cfg.to_dict()
    backbone = load_backbone(a.backbone, device=resolve_device(a.device), seed=a.seed)
    a.device_used = device_name(backbone.device)
    tok = backbone.tokenizer
    rows = []
    for name in [t for t in a.tasks.split(",") if t]:
        task = load_catalog_task(name).subsample(a.n_train, a.max_test, a.seed)
        items = encode_examples(tok, task.spec, task.train, cfg.max_length)
        test = encode_examples(tok, task.spec, task.test, cfg.max_length)
        labels = [it.label for it in test]
        majority = max(np.bincount(labels)) / len(labels)
        host = AdapterHost(backbone)
        with host.base() as m:
            zero_scores = score(m, test, tok.pad_token_id)
        zero = accuracy(zero_scores, test)
        host.create("q", seed=a.seed)
        curve: list[dict[str, Any]] = []
        t0 = time.perf_counter()

        def at(step: int, model: Any) -> None:
            if step in checkpoints:
                s = score(model, test, tok.pad_token_id)
                curve.append({"step": step, "accuracy": accuracy(s, test),
                              "seconds": round(time.perf_counter() - t0, 1), "right": right(s, labels)})
                print(f"{name} step {step}: {curve[-1]['accuracy']:.3f}", flush=True)

        report = train_adapter(host, "q", items, cfg, desc=f"curve {name}", on_step=at)
        host.delete("q")
        best = max(curve, key=lambda c: c["accuracy"])
        rows.append({"task": name, "n_train": len(task.train), "n_test": len(test), "majority": round(majority, 4),
                     "zero_shot": zero, "zero_shot_right": right(zero_scores, labels), "curve": curve,
                     "final": curve[-1]["accuracy"], "best_step": best["step"], "steps": checkpoints[-1],
                     "held_out_curve": report.validation, "val_size": report.val_size,
                     "val_majority": report.val_majority})
        save(a.out, {"machine": machine(), "device": a.device_used, "peak_rss_gb": peak_rss_gb(), "mode": "train",
                     "held_out": a.held_out, "train_config": cfg.to_dict(),
                     "backbone": a.backbone,
                     "n_train": a.n_train, "max_test": a.max_test, "seed": a.seed, "checkpoints": checkpoints,
                     "rows": rows, "complete": False})
    return rows


def right(scores: Any, labels: list[int]) -> str:
    """Which test examples the scores get right, as a string of 0/1 (paired comparisons later)."""
    return "".join("1" if int(np.argmax(s)) == y else "0" for s, y in zip(scores, labels))


def markdown(rows: list[dict[str, Any]], checkpoints: list[int] | None) -> str:
    steps_cols = [f"step {c}" for c in checkpoints] if checkpoints else ["adapter (kept step)"]
    head = ["task", "train", "test", "majority", "zero-shot", *steps_cols, "95% CI of the last", "learned"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lo, hi = wilson(r["final"], r["n_test"])
        if checkpoints:
            by = {c["step"]: c["accuracy"] for c in r["curve"]}
            cells = [f"{by[c]:.3f}" if c in by else "" for c in checkpoints]
        else:
            cells = [f"{r['final']:.3f} ({r['best_step']})"]
        out.append("| " + " | ".join([r["task"], str(r["n_train"]), str(r["n_test"]), f"{r['majority']:.3f}",
                                        f"{r['zero_shot']:.3f}", *cells, f"[{lo:.3f}, {hi:.3f}]",
                                        "yes" if verdict(r["final"], r["majority"], r["n_test"]) else "**no**"]) + " |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path, held_out: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab20").colors
    for k, r in enumerate(rows):
        c = r["held_out_curve"] if held_out else r["curve"]
        if c:
            ax.plot([p["step"] for p in c], [p["accuracy"] for p in c], marker=".", label=r["task"],
                    color=colours[(2 * k) % 20 if k < 10 else (2 * k + 1) % 20])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out accuracy (early stopping's examples)" if held_out else "test accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("learning curves, one new adapter per task")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="sources", nargs="*", default=None, help="per_task_quality results to tabulate")
    ap.add_argument("--train", action="store_true", help="train and score learning curves")
    ap.add_argument("--tasks", default=",".join(CATALOG))
    ap.add_argument("--checkpoints", default="25,50,100,200")
    ap.add_argument("--held-out", action="store_true", help="with --train: early stopping's held-out split and "
                    "evaluations, no stopping; test scored at every evaluation (for stopping_rules.py)")
    ap.add_argument("--steps", type=int, default=200, help="with --held-out: steps to train")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--max-test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the training default)")
    ap.add_argument("--lora-plus-ratio", type=float, default=1.0, help="LoRA+: the B matrices at this many times "
                    "--lr (TrainConfig.lora_plus_ratio; 1: plain LoRA)")
    ap.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    ap.add_argument("--out", default="learnability")
    a = ap.parse_args()
    if a.train == bool(a.sources):
        ap.error("give exactly one of --train or --from FILE...")
    if a.train:
        rows = train_curves(a)
        checkpoints = a.checkpoint_list
    else:
        rows, checkpoints = from_results(a.sources), None
    table = markdown(rows, checkpoints)
    learned = [r["task"] for r in rows if verdict(r["final"], r["majority"], r["n_test"])]
    doc = {"machine": machine(), "mode": "train" if a.train else "from", "sources": a.sources, "rows": rows,
           "learned": learned, "table": table, "complete": True}
    if a.train:
        doc.update({"held_out": a.held_out, "device": a.device_used, "backbone": a.backbone, "n_train": a.n_train, "max_test": a.max_test, "seed": a.seed,
                    "checkpoints": checkpoints, "peak_rss_gb": peak_rss_gb(), "train_config": a.train_config_used})
    path = save(a.out, doc)
    plot(rows, path.with_suffix(".png"), held_out=not a.train)
    print(table)
    print(f"learned: {', '.join(learned) or 'none'}; results: {path}")


if __name__ == "__main__":
    main()
