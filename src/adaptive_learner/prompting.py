"""Turning task examples into token ids: prompts (head+tail truncated), label verbalizers, padded batches."""

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


def verbalizer_ids(tokenizer: Any, spec: TaskSpec) -> list[list[int]]:
    """Token ids of each label's verbalizer (continuation of the prompt, no special tokens)."""
    out = [tokenizer(v, add_special_tokens=False)["input_ids"] for v in spec.verbalizers]
    for v, ids in zip(spec.verbalizers, out):
        if not ids:
            raise ValueError(f"verbalizer {v!r} of task {spec.name} encodes to no tokens")
    return out


def encode_prompt(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """Prompt ids with the tokenizer's BOS; if too long, keep the head and the last ``TAIL_TOKENS``."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if len(ids) <= max_length:
        return ids
    tail = min(TAIL_TOKENS, max_length // 2)
    return ids[: max_length - tail] + ids[-tail:]


def encode_examples(tokenizer: Any, spec: TaskSpec, examples: Sequence[Example], max_length: int) -> list[Encoded]:
    """Encode examples of one task."""
    choices = verbalizer_ids(tokenizer, spec)
    budget = max_length - max(len(c) for c in choices)
    return [Encoded(encode_prompt(tokenizer, spec.prompt(e.fields), budget), choices, e.label, spec.name)
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
