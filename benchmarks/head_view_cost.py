"""What the head's text view adds to answering an input with its task given (``alearn predict --task``).

A task with a head answers from (a) the adapter's label scores and (b) the head's features: the frozen
backbone's pooled hidden states (a second, shorter forward with adapters disabled) and, where the head
chose them, encoder views. This times, on the same test inputs of each task, (a), (b) and (c) the text
view (the router's sentence encoder, MiniLM, on the input as one text), alternating them over repeats;
the text view's cost = c / (a + b), min/median/max over repeats. A fresh adapter (B moved off zero) stands
in for a trained one: the cost does not depend on the weights. Timing figures only when the machine runs
nothing else.

    python benchmarks/head_view_cost.py --tasks sst2,trec,bbc_news --inputs 32 --repeats 3
"""

from __future__ import annotations

import argparse

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.features import text_encoder
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import score
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.training.head import default_layer, prompt_features, text_view
from common import fmt, machine, moved_adapter, save, spread, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--tasks", default="sst2,trec,rotten_tomatoes,sms_spam,bbc_news")
    ap.add_argument("--inputs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    backbone = load_backbone(a.backbone)
    tok = backbone.tokenizer
    host = AdapterHost(backbone)
    moved_adapter(host, "t")
    enc = text_encoder("minilm")
    rows = []
    for name in a.tasks.split(","):
        task = load_catalog_task(name)
        items = encode_examples(tok, task.spec, task.test[: a.inputs], 256)
        times: dict[str, list[float]] = {"adapter": [], "head_backbone": [], "text_view": []}
        text_view(enc, items[:2])  # warm
        for _ in range(a.repeats):
            with host.using("t") as m:
                m.eval()
                times["adapter"].append(timed(lambda: score(m, items, tok.pad_token_id))[0])
            with host.base() as m:
                layer = default_layer(m)
                times["head_backbone"].append(timed(lambda: prompt_features(m, items, layer, tok.pad_token_id))[0])
            times["text_view"].append(timed(lambda: text_view(enc, items))[0])
        ratio = [c / (x + b) for x, b, c in zip(times["adapter"], times["head_backbone"], times["text_view"])]
        row = {"task": name, "inputs": len(items), "seconds": {k: spread(v) for k, v in times.items()},
               "text_view_over_answer": spread(ratio)}
        rows.append(row)
        print(f"{name:16s} adapter {fmt(row['seconds']['adapter'])} s, head backbone "
              f"{fmt(row['seconds']['head_backbone'])} s, text view {fmt(row['seconds']['text_view'])} s: "
              f"+{fmt(row['text_view_over_answer'])}", flush=True)
    if a.out:
        save(a.out, {"machine": machine(), "inputs": a.inputs, "repeats": a.repeats, "rows": rows})


if __name__ == "__main__":
    main()
