"""Turning task examples into token ids: prompts (head+tail truncated), label verbalizers, padded batches.

How a label is scored (``TaskSpec.label_scoring``) is decided here, at encoding time:

- ``first-token`` (the default): the verbalizers' common leading tokens join the prompt and each
  label is scored by its first token after them, the one that tells the labels apart. "X" vs
  "not X" is then one decision between " X" and " not", with no bias towards the shorter label,
  and every label is scored in one forward. Where no single token tells every label apart (two
  labels share a first token but not the rest), the task falls back to ``mean``.
- ``mean``: the log-likelihood of the whole verbalizer divided by its token count.
- ``sum``: the whole verbalizer's summed log-likelihood (the scoring of earlier releases; it
  favours short labels when labels share words).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .tasks.spec import Example, TaskSpec

TAIL_TOKENS = 24  # the end of the prompt (the question and "Answer:") survives truncation


@dataclass
class Encoded:
    """One example of one task as ids: the prompt and every label's verbalizer."""

    prompt: list[int]
    choices: list[list[int]]
    label: int
    task: str
    normalise: bool = False  # score a choice by its mean token log-likelihood (``mean`` scoring)
    fields: tuple[str, ...] = ()  # the raw input fields, in the spec's order (the task head's encoder views)


def verbalizer_ids(tokenizer: Any, spec: TaskSpec) -> list[list[int]]:
    """Token ids of each label's verbalizer (continuation of the prompt, no special tokens)."""
    out = [tokenizer(v, add_special_tokens=False)["input_ids"] for v in spec.verbalizers]
    for v, ids in zip(spec.verbalizers, out):
        if not ids:
            raise ValueError(f"verbalizer {v!r} of task {spec.name} encodes to no tokens")
    return out


LABEL_SCORING = ("first-token", "mean", "sum")
DEFAULT_LABEL_SCORING = "first-token"


def check_label_scoring(mode: str) -> str:
    if mode not in LABEL_SCORING:
        from .errors import UserError

        raise UserError(f"unknown label scoring {mode!r}; choose one of {', '.join(LABEL_SCORING)}")
    return mode


def distinguishing_tokens(choices: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]] | None:
    """The verbalizers' common leading tokens and, after them, one token per label that tells every
    label apart; None when no such token exists (a label ends inside the common part, or two labels
    share the token after it)."""
    n = min(len(c) for c in choices)
    k = 0
    while k < n and all(c[k] == choices[0][k] for c in choices):
        k += 1
    if k == n:
        return None
    firsts = [c[k] for c in choices]
    if len(set(firsts)) != len(firsts):
        return None
    return list(choices[0][:k]), [[t] for t in firsts]


def scoring_plan(choices: list[list[int]], mode: str) -> tuple[str, list[int], list[list[int]]]:
    """(effective mode, tokens appended to every prompt, choices as scored) for ``mode``."""
    check_label_scoring(mode)
    if mode == "first-token":
        split = distinguishing_tokens(choices)
        if split is None:
            return "mean", [], choices
        return "first-token", split[0], split[1]
    return mode, [], choices


def encode_prompt(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """Prompt ids with the tokenizer's BOS; if too long, keep the head and the last ``TAIL_TOKENS``."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if len(ids) <= max_length:
        return ids
    tail = min(TAIL_TOKENS, max_length // 2)
    return ids[: max_length - tail] + ids[-tail:]


def encode_examples(tokenizer: Any, spec: TaskSpec, examples: Sequence[Example], max_length: int) -> list[Encoded]:
    """Encode examples of one task."""
    mode, head, choices = scoring_plan(verbalizer_ids(tokenizer, spec), spec.label_scoring)
    budget = max_length - len(head) - max(len(c) for c in choices)
    return [Encoded(encode_prompt(tokenizer, spec.prompt(e.fields), budget) + head, choices, e.label, spec.name,
                    normalise=mode == "mean", fields=tuple(str(e.fields[f]) for f in spec.input_fields))
            for e in examples]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask`` and matching ``position_ids`` (real tokens start at 0).

    Every sequence ends at the last column, so the final logits of the batch line up with the labels.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.as_tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
