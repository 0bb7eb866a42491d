"""The backbone in bfloat16 against float32 (``--dtype``), side by side: speed, and what it does to accuracy.

``--speed`` (run it alone on the machine): both backbones loaded in one process; each scores the same
encoded test examples with the same LoRA adapter (its B matrices moved off zero, as a trained one is) and
trains the same steps from the same fresh adapter (early stopping off), alternating A-B, B-A, ...; reports
examples/s and step time of each (min/median/max), the ratio per repeat, and the largest difference of
their label log-likelihoods and of their per-step losses.

``--quality``: per task, ``alearn learn --force-new`` as ``per_task_quality.py`` runs it (the defaults:
early stopping, the head), once per dtype on the same training and test examples and seed: accuracy,
steps, and bfloat16's answer minus float32's with a paired bootstrap 95% interval over the test examples.

    python benchmarks/dtype_compare.py --speed --tasks sst2,mrpc,boolq --n 64 --steps 8 --repeats 3
    OMP_NUM_THREADS=1 python benchmarks/dtype_compare.py --quality --tasks sst2,trec --n-train 160 --out dtype_quality
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone, resolve_device
from adaptive_learner.evaluation.stats import paired_bootstrap
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.training import TrainConfig, train_adapter
from common import fmt, machine, moved_adapter, peak_rss_gb, save, spread

DTYPES = ("float32", "bfloat16")


def speed(a: argparse.Namespace) -> dict:
    hosts = {d: AdapterHost(load_backbone(a.backbone, device=a.device, dtype=d)) for d in DTYPES}
    for h in hosts.values():
        moved_adapter(h, "scored")
    results = {}
    for name in a.tasks.split(","):
        task = load_catalog_task(name).subsample(a.n_train, a.n, 0)
        tok = hosts["float32"].backbone.tokenizer
        test = encode_examples(tok, task.spec, task.test, 256)
        train = encode_examples(tok, task.spec, task.train, 256)
        cfg = TrainConfig(steps=a.steps, early_stop=False, head=False, seed=0)
        ex_s = {d: [] for d in DTYPES}
        step_s = {d: [] for d in DTYPES}
        scores, losses = {}, {}
        for d, h in hosts.items():  # warm-up
            with h.using("scored") as m:
                m.eval()
                score(m, test[:4], tok.pad_token_id)
        for r in range(a.repeats):
            for d in DTYPES if r % 2 == 0 else DTYPES[::-1]:
                h = hosts[d]
                with h.using("scored") as m:
                    m.eval()
                    t0 = time.perf_counter()
                    scores[d] = score(m, test, tok.pad_token_id)
                    ex_s[d].append(len(test) / (time.perf_counter() - t0))
                h.create("trained", seed=0)
                rep = train_adapter(h, "trained", train, cfg, desc=None)
                step_s[d].append(rep.seconds / rep.steps)
                losses[d] = list(rep.losses)
                h.delete("trained")
        dlogp = max(float(np.abs(x - y).max()) for x, y in zip(scores["bfloat16"], scores["float32"]))
        agree = float(np.mean([int(np.argmax(x) == np.argmax(y)) for x, y in zip(scores["bfloat16"], scores["float32"])]))
        results[name] = {
            "score_ex_per_s": {d: spread(v) for d, v in ex_s.items()},
            "score_ratio": spread([x / y for x, y in zip(ex_s["bfloat16"], ex_s["float32"])]),
            "step_seconds": {d: spread(v) for d, v in step_s.items()},
            "step_ratio": spread([y / x for x, y in zip(step_s["bfloat16"], step_s["float32"])]),
            "max_abs_logp_diff": dlogp, "same_answer": agree,
            "final_loss": {d: float(losses[d][-1]) for d in DTYPES},
            "max_step_loss_diff": float(np.max(np.abs(np.subtract(losses["bfloat16"], losses["float32"])))),
            "mean_prompt_tokens": float(np.mean([len(it.prompt) for it in test]))}
        res = results[name]
        print(f"{name}: scoring bf16/fp32 {fmt(res['score_ratio'])}x; training step {fmt(res['step_ratio'])}x; "
              f"max |dlogp| {dlogp:.2e}, same answer {agree:.3f}", flush=True)
    return results


def quality(a: argparse.Namespace) -> dict:
    from per_task_quality import run_ours

    backbones = {d: load_backbone(a.backbone, device=a.device, dtype=d) for d in DTYPES}
    cfg = replace(TrainConfig(), seed=a.seed)
    rows = {}
    for name in a.tasks.split(","):
        task = load_catalog_task(name).subsample(a.n_train, a.max_test, a.seed)
        row = {}
        for d in DTYPES:
            t0 = time.perf_counter()
            out = run_ours(backbones[d], task, cfg, a.seed)
            out["seconds"] = round(time.perf_counter() - t0, 1)
            row[d] = out
        final = {d: _final(row[d]) for d in DTYPES}
        diff = paired_bootstrap([{name: final["bfloat16"]["correct"]}], [{name: final["float32"]["correct"]}], [0])
        row["bf16_minus_fp32"] = diff.to_dict()
        rows[name] = row
        print(f"{name}: float32 {final['float32']['accuracy']:.3f} ({row['float32']['steps']} steps), bfloat16 "
              f"{final['bfloat16']['accuracy']:.3f} ({row['bfloat16']['steps']} steps); bf16 - fp32 "
              f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]", flush=True)
        save(a.out, {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(a), "rows": rows,
                     "peak_rss_gb": peak_rss_gb(), "complete": False})
    final = {d: {t: _final(rows[t][d]) for t in rows} for d in DTYPES}
    pooled = paired_bootstrap(*([{t: f["correct"] for t, f in final[d].items()}] for d in ("bfloat16", "float32")), [0])
    return {"rows": rows, "pooled_bf16_minus_fp32": pooled.to_dict(),
            "mean": {d: float(np.mean([f["accuracy"] for f in final[d].values()])) for d in DTYPES}}


def _final(out: dict) -> dict:
    """What ``alearn learn`` answers with: the adapter + head when a head was fitted, else the adapter."""
    return out.get("head", out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda")
    p.add_argument("--tasks", default="sst2,mrpc,boolq")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--speed", action="store_true")
    mode.add_argument("--quality", action="store_true")
    p.add_argument("--n", type=int, default=64, help="--speed: test examples scored per task")
    p.add_argument("--steps", type=int, default=8, help="--speed: training steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-train", type=int, default=160)
    p.add_argument("--max-test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    a.device = resolve_device(a.device)
    a.out = a.out or ("dtype_speed" if a.speed else "dtype_quality")
    doc = speed(a) if a.speed else quality(a)
    save(a.out, {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(a),
               **({"results": doc} if a.speed else doc), "peak_rss_gb": peak_rss_gb(), "complete": True})


if __name__ == "__main__":
    main()
