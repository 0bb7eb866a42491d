"""Generative replay (LAMOL-style): the adapted model writes pseudo-examples of an earlier task.

The task's own prompt is the generator's prompt: its description and template are filled field by
field, each field sampled from the model (adapter active) and cut where the template's next text
begins (a newline, or e.g. the ``?`` after a question). The model then labels the finished input by
rank-scoring the task's verbalizers, exactly as at test time, and an example is kept only if that
label's probability reaches ``min_confidence``. Kept examples are balanced across labels as far as
the confident ones allow. What comes out is always a valid labelled input of the task: every input
field non-empty, the label one of the task's labels.

Unlike LAMOL the adapter is not trained to generate its tasks' inputs (the training loss covers the
label tokens only), so the inputs come from the backbone's language model as steered by the task's
prompt and the adapter; the model's own labels and the confidence filter make them useful targets.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
import torch

from ..prompting import encode_examples, left_pad
from ..scoring import score
from ..tasks.spec import Example, TaskSpec

OVERSAMPLE = 2  # candidates generated per example wanted, before the confidence filter


def template_parts(spec: TaskSpec) -> list[tuple[str, str | None]]:
    """The template as (literal text, field or None) pairs, in order."""
    return [(lit, name) for lit, name, _, _ in string.Formatter().parse(spec.template)]


def cut_field(text: str, next_literal: str) -> str:
    """The generated text up to where the template continues (its next literal's first line) or a newline."""
    stops = ["\n"]
    head = next_literal.split("\n", 1)[0].strip()
    if head:
        stops.append(head)
    end = min([text.find(s) for s in stops if s in text] or [len(text)])
    return " ".join(text[:end].split())


@torch.no_grad()
def _continue(host: Any, prompts: list[str], max_new_tokens: int, temperature: float) -> list[str]:
    """Sample a continuation of each prompt with the active adapter; the new text only."""
    tok = host.backbone.tokenizer
    ids = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    batch = left_pad(ids, tok.pad_token_id)
    device = next(host.model.parameters()).device
    out = host.model.generate(input_ids=batch["input_ids"].to(device),
                              attention_mask=batch["attention_mask"].to(device),
                              max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                              top_p=0.95, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    width = batch["input_ids"].shape[1]
    return [tok.decode(row[width:], skip_special_tokens=True) for row in out]


def generate_inputs(host: Any, spec: TaskSpec, n: int, max_new_tokens: int, temperature: float) -> list[dict[str, str]]:
    """``n`` candidate inputs of ``spec`` (fields filled in template order); empty fields are dropped."""
    parts = template_parts(spec)
    prefix = [f"{spec.description.strip()}\n"] * n
    fields: list[dict[str, str]] = [{} for _ in range(n)]
    for k, (literal, name) in enumerate(parts):
        prefix = [p + literal for p in prefix]
        if name is None:
            continue
        nxt = parts[k + 1][0] if k + 1 < len(parts) else ""
        texts = _continue(host, prefix, max_new_tokens, temperature)
        for i, t in enumerate(texts):
            fields[i][name] = cut_field(t, nxt)
            prefix[i] = prefix[i] + fields[i][name]
    return [f for f in fields if all(f.get(x) for x in spec.input_fields)]


def generate_examples(host: Any, adapter: str, spec: TaskSpec, cfg: Any, seed: int,
                      n: int | None = None) -> list[tuple[Example, float]]:
    """Up to ``n`` (default ``cfg.generate_per_task``) confident pseudo-examples of ``spec``, each with
    the model's probability of its label. ``cfg`` is a ``ReplayConfig``."""
    n = cfg.generate_per_task if n is None else n
    if n <= 0:
        return []
    host.activate(adapter)
    model = host.model
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            inputs = generate_inputs(host, spec, OVERSAMPLE * n, cfg.max_new_tokens, cfg.temperature)
        if not inputs:
            return []
        tok = host.backbone.tokenizer
        items = encode_examples(tok, spec, [Example(f, 0) for f in inputs], cfg.max_length)
        scores = score(model, items, tok.pad_token_id)
    finally:
        model.train(was_training)
    kept: dict[int, list[tuple[float, Example]]] = {}
    for f, s in zip(inputs, scores):
        p = np.exp(s - s.max())
        p /= p.sum()
        label = int(np.argmax(p))
        if p[label] >= cfg.min_confidence:
            kept.setdefault(label, []).append((float(p[label]), Example(f, label)))
    return _balanced(kept, n)


def _balanced(kept: dict[int, list[tuple[float, Example]]], n: int) -> list[tuple[Example, float]]:
    """Round-robin over labels, most confident first, up to ``n`` examples."""
    queues = {k: sorted(v, key=lambda x: -x[0]) for k, v in sorted(kept.items())}
    out: list[tuple[Example, float]] = []
    while len(out) < n and any(queues.values()):
        for k in list(queues):
            if queues[k] and len(out) < n:
                conf, ex = queues[k].pop(0)
                out.append((ex, conf))
    return out
