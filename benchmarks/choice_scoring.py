"""Multi-token labels: every label after the prompt in one packed row against one sequence per (prompt, label).

Labels that no single token tells apart (``mean`` or ``sum`` label scoring) were scored by running each
(prompt, label) pair as its own sequence, the prompt once per label; ``scoring.choice_scores`` runs each
prompt once with all its labels after it. Both score the same encoded examples with the same model (a LoRA
adapter active, as evaluation scores them), alternated A-B, B-A, ... in one process; then one training step
(forward and backward) of each objective on the same batches: ``lm`` (the gold label's tokens, what multi-token
labels trained on before) and ``choices`` (cross-entropy over every label's score, packed). Reports examples/s
(min/median/max), the ratio per repeat and the largest score difference. Timing figures only alone.

    python benchmarks/choice_scoring.py --labels kind,asks,intents --n 48 --repeats 3
    python benchmarks/choice_scoring.py --labels fine --train-only --choice-sample 8   # 50 labels; a sampled step too
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptive_learner import scoring
from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.tasks.spec import TaskSpec
from adaptive_learner.training.trainer import label_loss, sample_choices
from common import fmt, machine, peak_rss_gb, save, spread
from per_task_quality import FINE_TREC

# label sets on trec's questions (timing: what matters is how many labels and how long, not whether they fit)
LABEL_SETS = {
    "kind": ["a person", "a place", "a number", "a description", "an entity", "an abbreviation"],
    "asks": ["asks for a person", "asks for a place", "asks for a number", "asks for a description",
             "asks for an entity", "asks for an abbreviation"],
    # an intent set's shape (banking-style names, underscores read as spaces): 24 labels of 2-4 tokens
    "intents": [s.replace("_", " ") for s in (
        "card_arrival", "card_linking", "card_payment_fee", "card_not_working", "cash_withdrawal",
        "cash_withdrawal_charge", "change_pin", "exchange_rate", "exchange_charge", "lost_or_stolen_card",
        "pending_transfer", "pending_card_payment", "top_up_failed", "top_up_limits", "transfer_timing",
        "transfer_fee_charged", "wrong_amount_of_cash", "declined_transfer", "declined_card_payment",
        "verify_identity", "virtual_card_not_working", "balance_not_updated", "refund_not_showing", "terminate_account")],
    # TREC's 50 fine question types as per_task_quality.py's question-fine names them: 1-3 tokens in smollm2's tokenizer
    "fine": list(FINE_TREC.values()),
}


def items_with(backbone, labels: list[str], n: int):
    task = load_catalog_task("trec")
    spec = TaskSpec.from_dict({**task.spec.to_dict(), "label_names": [f"l{i}" for i in range(len(labels))],
                               "verbalizers": [" " + v for v in labels], "label_scoring": "mean"})
    examples = [type(e)(e.fields, i % len(labels)) for i, e in enumerate(task.test[:n])]
    items = encode_examples(backbone.tokenizer, spec, examples, 256)
    assert all(it.normalise for it in items), "labels one token tells apart: not this benchmark's case"
    return items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--labels", default="kind,asks,intents", help=f"label sets: {', '.join(LABEL_SETS)}")
    p.add_argument("--n", type=int, default=48, help="test examples scored per repeat")
    p.add_argument("--train-batches", type=int, default=3, help="training steps of 8 timed per objective per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-only", action="store_true", help="time the training steps only (no scoring)")
    p.add_argument("--choice-sample", type=int, default=0,
                   help="also time a choices step over the gold label and K-1 others drawn at random (TrainConfig.choice_sample)")
    p.add_argument("--out", default="choice_scoring")
    a = p.parse_args()
    unknown = [x for x in a.labels.split(",") if x not in LABEL_SETS]
    if unknown:
        raise SystemExit(f"error: unknown label set {', '.join(unknown)}; choose from {', '.join(LABEL_SETS)}")
    backbone = load_backbone(a.backbone)
    host = AdapterHost(backbone)
    host.create("a", seed=0)
    host.activate("a")
    params = host.trainable("a")
    with torch.no_grad():  # an adapter that changes the scores, as a trained one does
        for name, prm in params.items():
            if "lora_B" in name:
                prm.normal_(0, 0.02)
    pad = backbone.tokenizer.pad_token_id
    real = scoring.choice_scores
    rows = {}
    for name in a.labels.split(","):
        items = items_with(backbone, LABEL_SETS[name], a.n)

        def scored(packed: bool):
            scoring.choice_scores = real if packed else (lambda *args, **kw: None)
            try:
                host.model.eval()
                t0 = time.perf_counter()
                out = scoring.score(host.model, items, pad)
                return time.perf_counter() - t0, out
            finally:
                scoring.choice_scores = real

        def trained(objective: str) -> float:
            host.model.train()
            total = 0.0
            rng = np.random.RandomState(0)
            for b in range(a.train_batches):
                batch = items[8 * b: 8 * b + 8]
                t0 = time.perf_counter()
                run = objective
                if objective == "sampled":  # every batch drawn again (until session 43 only the first was)
                    batch, run = sample_choices(batch, a.choice_sample, rng), "choices"
                loss = label_loss(host.model, batch, pad, torch.device("cpu"), objective=run)[0]
                loss.backward()
                total += time.perf_counter() - t0
                for prm in params.values():
                    prm.grad = None
            host.model.eval()
            return total / a.train_batches

        pairs_s, packed_s, ratio, diff = [], [], [], 0.0
        steps: dict[str, list[float]] = {"lm": [], "choices": [], **({"sampled": []} if a.choice_sample else {})}
        for r in range(a.repeats):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {}
            for packed in order if not a.train_only else ():
                sec, out = scored(packed)
                got[packed] = out
                (packed_s if packed else pairs_s).append(a.n / sec)
            if got:
                ratio.append(packed_s[-1] / pairs_s[-1])
                diff = max(diff, float(max(np.abs(x - y).max() for x, y in zip(got[True], got[False]))))
            for obj in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
                steps[obj].append(trained(obj))
        lens = [len(c) for c in items[0].choices]
        rows[name] = {"labels": len(lens), "label_tokens": lens, "prompt_tokens": float(np.mean([len(it.prompt) for it in items])),
                      **({} if a.train_only else {"pairs_ex_s": spread(pairs_s), "packed_ex_s": spread(packed_s),
                                                  "ratio": spread(ratio), "largest_score_difference": diff}),
                      **{f"train_step_s_{k}": spread(v) for k, v in steps.items()},
                      **({"choice_sample": a.choice_sample} if a.choice_sample else {})}
        scored_line = "" if a.train_only else (
            f"scoring ex/s pairs {fmt(spread(pairs_s))}, packed {fmt(spread(packed_s))}, ratio {fmt(spread(ratio))}; "
            f"largest difference {diff:.1e}; ")
        print(f"{name}: {len(lens)} labels of {min(lens)}-{max(lens)} tokens; {scored_line}training step s "
              + ", ".join(f"{k} {fmt(spread(v))}" for k, v in steps.items()), flush=True)
    path = save(a.out, {"machine": machine(), "backbone": a.backbone, "n": a.n, "repeats": a.repeats,
                        "train_batches": a.train_batches,
                        "threads": torch.get_num_threads(), "peak_rss_gb": peak_rss_gb(), "rows": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
