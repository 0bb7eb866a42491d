"""Rank classification: the log-likelihood of each label's verbalizer after the prompt, batched.

With single-token verbalizers (the common case) one forward per example scores every label, and
only the last position's logits are computed (``logits_to_keep``), not the whole vocabulary at
every position. Multi-token verbalizers score each (prompt, label) pair, keeping only the logits
at the label positions.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .prompting import Encoded, left_pad, length_batches


def _forward_tail(model: Any, batch: dict[str, torch.Tensor], keep: int, adapter_names: list[str] | None) -> torch.Tensor:
    kwargs = dict(batch)
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    out = model(**kwargs, logits_to_keep=keep, use_cache=False)
    return out.logits.float()


@torch.no_grad()
def score(model: Any, items: Sequence[Encoded], pad_id: int, batch_size: int = 16,
          adapter_names: Sequence[str] | None = None, progress: bool = False) -> list[np.ndarray]:
    """Per item, the log-likelihood of each choice. ``adapter_names`` routes each item to an adapter
    (peft mixed-adapter batch; ``"__base__"`` means no adapter)."""
    device = next(model.parameters()).device
    results: list[np.ndarray | None] = [None] * len(items)
    batches = length_batches([len(it.prompt) for it in items], batch_size)
    for idx in tqdm(batches, desc="scoring", leave=False, disable=not progress):
        group = [items[i] for i in idx]
        names = [adapter_names[i] for i in idx] if adapter_names is not None else None
        if all(len(c) == 1 for it in group for c in it.choices):
            results_batch = _score_single(model, group, pad_id, device, names)
        else:
            results_batch = _score_multi(model, group, pad_id, device, names)
        for i, r in zip(idx, results_batch):
            results[i] = r
    return results  # type: ignore[return-value]


def _score_single(model, group: list[Encoded], pad_id: int, device, names) -> list[np.ndarray]:
    batch = {k: v.to(device) for k, v in left_pad([g.prompt for g in group], pad_id).items()}
    logp = torch.log_softmax(_forward_tail(model, batch, 1, names)[:, -1, :], dim=-1)
    return [logp[i, [c[0] for c in g.choices]].cpu().numpy() for i, g in enumerate(group)]


def _score_multi(model, group: list[Encoded], pad_id: int, device, names) -> list[np.ndarray]:
    seqs, owners, lens, flat_names = [], [], [], []
    for i, g in enumerate(group):
        for c in g.choices:
            seqs.append(g.prompt + c)
            owners.append(i)
            lens.append(len(c))
            if names is not None:
                flat_names.append(names[i])
    keep = max(lens) + 1
    batch = {k: v.to(device) for k, v in left_pad(seqs, pad_id).items()}
    logits = _forward_tail(model, batch, keep, flat_names if names is not None else None)
    logp = torch.log_softmax(logits, dim=-1)
    ids = batch["input_ids"]
    sums = []
    for row, n in enumerate(lens):
        # tokens at the last n positions are predicted by the logits one step earlier
        pred = logp[row, keep - n - 1: keep - 1, :]
        tgt = ids[row, -n:]
        sums.append(pred.gather(-1, tgt[:, None]).sum().item())
    out: list[list[float]] = [[] for _ in group]
    for owner, s in zip(owners, sums):
        out[owner].append(s)
    return [np.asarray(o) for o in out]


def accuracy(scores: Sequence[np.ndarray], items: Sequence[Encoded]) -> float:
    """Fraction of items whose highest-scoring choice is the label."""
    if not items:
        return float("nan")
    return float(np.mean([int(np.argmax(s)) == it.label for s, it in zip(scores, items)]))
