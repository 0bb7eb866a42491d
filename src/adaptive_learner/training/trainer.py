"""Train one LoRA adapter: loss on the label tokens only, dynamic padding, AdamW, seeded, a progress bar."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..prompting import Encoded
from ..scoring import tail_logits
from .regularisers import Regulariser


@dataclass
class TrainConfig:
    """Optimisation budget and hyperparameters for one task."""

    steps: int = field(default=60, metadata={"help": "optimizer steps per task"})
    batch_size: int = field(default=8, metadata={"help": "examples per step (before replay is mixed in)"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of steps of linear warm-up"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm"})
    max_length: int = field(default=256, metadata={"help": "max tokens per example (prompt head+tail kept)"})
    max_batch_tokens: int = field(default=512, metadata={
        "help": "token positions per forward: a longer batch is split into micro-batches whose gradients add up "
                "to the same update (bounds activation memory)"})
    seed: int = field(default=0, metadata={"help": "seed of batch order and dropout"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainReport:
    """What one training call did."""

    steps: int
    examples: int
    tokens: int
    seconds: float
    final_loss: float
    losses: list[float]
    positions: int = 0  # token positions computed: padding included, each batch's shared prefix once


def batches_for(n_items: int, lengths: Sequence[int], cfg: TrainConfig, rng: np.random.RandomState) -> list[list[int]]:
    """``cfg.steps`` batches of indices: epochs of shuffled items, length-bucketed within windows."""
    out: list[list[int]] = []
    window = cfg.batch_size * 16
    while len(out) < cfg.steps:
        perm = rng.permutation(n_items)
        epoch: list[list[int]] = []
        for start in range(0, n_items, window):
            chunk = sorted(perm[start: start + window], key=lambda i: lengths[i])
            epoch.extend(chunk[j: j + cfg.batch_size] for j in range(0, len(chunk), cfg.batch_size))
        rng.shuffle(epoch)
        out.extend(b for b in epoch if b)
    return [list(map(int, b)) for b in out[: cfg.steps]]


def micro_batches(batch: Sequence[Encoded], max_tokens: int) -> list[list[Encoded]]:
    """Split a batch, in order, into chunks of at most ``max_tokens`` padded positions (one item at least)."""
    chunks: list[list[Encoded]] = []
    cur: list[Encoded] = []
    width = 0
    for it in batch:
        n = len(it.prompt) + len(it.choices[it.label])
        if cur and (len(cur) + 1) * max(width, n) > max_tokens:
            chunks.append(cur)
            cur, width = [], 0
        cur.append(it)
        width = max(width, n)
    if cur:
        chunks.append(cur)
    return chunks


def label_loss(model: Any, batch: list[Encoded], pad_id: int, device: torch.device,
               share_prefix: bool = True) -> tuple[torch.Tensor, int, int]:
    """Cross-entropy of the gold verbalizer tokens only; logits computed at those positions alone.

    The prompt prefix shared by the whole batch runs once (:func:`~adaptive_learner.scoring.tail_logits`).
    Returns the loss, the examples' tokens, and the token positions actually computed.
    """
    seqs = [b.prompt + b.choices[b.label] for b in batch]
    lens = [len(b.choices[b.label]) for b in batch]
    keep = max(lens) + 1
    tail = tail_logits(model, seqs, pad_id, device, keep, share_prefix=share_prefix)
    losses = []
    for row, n in enumerate(lens):
        pred = tail.logits[row, keep - n - 1: keep - 1, :]
        tgt = tail.input_ids[row, -n:]
        losses.append(torch.nn.functional.cross_entropy(pred, tgt, reduction="sum"))
    return torch.stack(losses).sum() / sum(lens), sum(len(s) for s in seqs), tail.positions


def train_adapter(host: Any, adapter: str, items: Sequence[Encoded], cfg: TrainConfig,
                  regularisers: Sequence[Regulariser] = (), desc: str | None = None,
                  accelerator: Any = None) -> TrainReport:
    """Train the adapter ``adapter`` of ``host`` on ``items`` with the given regularisers.

    With an ``accelerate.Accelerator``, the model and optimizer are prepared by it and each
    process trains on its shard of every batch (data parallel); gradients are averaged by it.
    """
    if not items:
        raise ValueError("no training examples")
    host.activate(adapter)
    model = host.model
    params = host.trainable(adapter)
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    rng = np.random.RandomState(cfg.seed)
    for r in regularisers:
        r.begin(host, adapter)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * cfg.steps), cfg.steps)
    plan = batches_for(len(items), [len(it.prompt) for it in items], cfg, rng)
    if accelerator is not None:
        model, opt = accelerator.prepare(model, opt)
        device = accelerator.device
    pad_id = host.backbone.tokenizer.pad_token_id
    model.train()
    losses: list[float] = []
    n_ex = n_tok = n_pos = 0
    t0 = time.perf_counter()
    bar = tqdm(plan, desc=desc or f"train {adapter}", leave=False, disable=accelerator is not None
               and not accelerator.is_local_main_process)
    for idx in bar:
        batch = [items[i] for i in idx]
        for r in regularisers:
            batch = r.mix(batch, rng)
        if accelerator is not None:
            batch = batch[accelerator.process_index:: accelerator.num_processes] or batch[:1]
        opt.zero_grad(set_to_none=True)
        # micro-batches: each chunk's mean label loss weighted by its share of the label tokens, so the
        # accumulated gradient is the full batch's; the regularisers' penalties join the last backward
        chunks = micro_batches(batch, cfg.max_batch_tokens)
        n_label = sum(len(b.choices[b.label]) for b in batch)
        loss_value = 0.0
        for k, chunk in enumerate(chunks):
            part, tokens, positions = label_loss(model, chunk, pad_id, device)
            part = part * (sum(len(b.choices[b.label]) for b in chunk) / n_label)
            loss_value += part.item()
            n_tok += tokens
            n_pos += positions
            last = k == len(chunks) - 1
            if last:
                for r in regularisers:
                    extra = r.penalty(params)
                    if extra is not None:
                        part = part + extra
            if accelerator is None:
                part.backward()
            elif last:
                accelerator.backward(part)
            else:
                with accelerator.no_sync(model):
                    accelerator.backward(part)
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss_value)
        n_ex += len(batch)
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    model.eval()
    seconds = time.perf_counter() - t0
    for r in regularisers:
        r.end(host, adapter, items)
    return TrainReport(len(plan), n_ex, n_tok, seconds, float(np.mean(losses[-10:])), losses, n_pos)
