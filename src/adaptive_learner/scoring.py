"""Rank classification: the log-likelihood of each label's verbalizer after the prompt, batched.

With single-token verbalizers (the common case) one forward per example scores every label, and
only the last position's logits are computed (``logits_to_keep``), not the whole vocabulary at
every position. Multi-token verbalizers are scored from one row per example: the prompt once, then
every label, each seeing the prompt and its own tokens only (:func:`choice_scores`); where the model
cannot take that mask, each (prompt, label) pair is its own sequence, keeping only the logits at the
label positions.

Prompts of one task start with the same tokens (the description and the template's head). The
longest prefix shared by every sequence of a batch runs once, with batch size 1, and its keys and
values are repeated for the batch (:func:`tail_logits`); the rest runs as usual. Causal attention
makes this the same computation as running every full sequence (up to float rounding), with or
without gradients: the training loss uses the same function.

``pack=True`` runs the rows after the shared prefix as one padding-free sequence instead of a padded
batch, when that saves at least ``PACK_MIN_SAVING`` of the positions: positions restart for each row,
and a block-diagonal causal mask (every row also sees the shared prefix, run once and not repeated)
keeps the rows apart, so it is again the same computation. Its attention spans the whole packed
sequence, so it only pays where padding is large: rows of different tasks (replay), not a
length-bucketed batch of one task (measured: benchmarks/train_throughput.py --compare pack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .prompting import Encoded, left_pad, length_batches


MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate forward
# examples per scoring forward (every caller's default): on the development CPU (2 threads), batches of 8 sorted
# by length scored inputs of 60 tokens and more 1.05-1.46x faster than 16 (less padding), the shortest 0.89-0.94x
# (BENCHMARKS.md, "Batches of 8")
BATCH = 8
# on a GPU, larger batches: an expectation (small forwards there are bound by kernel launches), not yet measured
# by this project (BENCHMARKS.md, session 20); `alearn serve --score-batch` overrides it
GPU_BATCH = 32
PACK_MIN_SAVING = 0.2  # pack (``pack=True``) only rows whose padding is at least this part of the positions


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix of token ids shared by every sequence."""
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


def _window_exceeded(model: Any, length: int) -> bool:
    """True when a sliding-window (or chunked) attention layer would not see the whole sequence: its
    cache keeps only the window, so a cached prefix would no longer match the full computation."""
    cfg = getattr(getattr(model, "module", model), "config", None)
    windows = [getattr(cfg, k, None) for k in ("sliding_window", "attention_chunk_size")]
    return any(isinstance(w, int) and 0 < w < length for w in windows)


@dataclass
class Tail:
    """Logits at the last ``keep`` positions of each sequence, and what was computed to get them."""

    logits: torch.Tensor  # (batch, keep, vocab), float32
    input_ids: torch.Tensor  # (batch, width) left-padded; row i ends with the last tokens of sequence i
    shared: int  # tokens of the shared prefix, run once
    positions: int  # token positions the model computed (padding included, shared prefix once)


def tail_logits(model: Any, seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device, keep: int,
                adapter_names: Sequence[str] | None = None, share_prefix: bool = True, pack: bool = False,
                prefix: "SharedPrefix | None" = None) -> Tail:
    """Logits at the last ``keep`` positions of every sequence, running their common prefix once
    (``prefix``: one already run for every batch of a :func:`score` call, when it fits these sequences).

    Works with gradients (training) and without (scoring). A mixed-adapter batch (``adapter_names``)
    is run whole: its rows do not share one adapter for the prefix (nor are they packed).
    """
    parts = _decoder_and_head(model) if adapter_names is None else None
    if parts is None:
        out, ids, shared, positions = _run_tail(model, seqs, pad_id, device, keep, adapter_names, share_prefix,
                                                pack=pack, prefix=prefix)
        return Tail(out.logits.float(), ids, shared, positions)
    decoder, head, cap = parts
    out, ids, shared, positions = _run_tail(decoder, seqs, pad_id, device, keep, None, share_prefix, hidden=True,
                                            pack=pack, prefix=prefix)
    h = out.last_hidden_state[:, -keep:, :]
    # one (batch * keep, hidden) x (hidden, vocab) product: a causal LM's own output layer gets the kept
    # positions as a strided 3D slice, which torch runs as a batched product over copies of the weight
    logits = _output_layer(head, cap, h.reshape(-1, h.shape[-1]))
    return Tail(logits.view(len(seqs), keep, -1).float(), ids, shared, positions)


def _output_layer(head: torch.nn.Linear, cap: float | None, h: torch.Tensor) -> torch.Tensor:
    return _soft_cap(torch.nn.functional.linear(h.contiguous(), head.weight, head.bias), cap)


def _soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """A model's final logit soft-cap (Gemma's ``final_logit_softcapping``), or the logits as they are."""
    return torch.tanh(logits / cap) * cap if cap else logits


def _decoder_and_head(model: Any) -> tuple[Any, Any, float | None] | None:
    """(decoder, output embedding, final logit soft-cap) of a causal LM, peft-wrapped or not; None when
    the model is wrapped for distributed training (its forward must run whole) or has no such parts."""
    if hasattr(model, "module"):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    cfg = getattr(base, "config", None)
    if decoder is None or not isinstance(head, torch.nn.Linear) or getattr(cfg, "logit_scale", None) is not None:
        return None
    return decoder, head, getattr(cfg, "final_logit_softcapping", None)


def choice_logits(model: Any, seqs: Sequence[Sequence[int]], choice_ids: Sequence[Sequence[int]], pad_id: int,
                  device: torch.device, share_prefix: bool = True, pack: bool = False) -> tuple[torch.Tensor, int]:
    """Per sequence, the next-token logits of its own choice tokens only (``choice_ids[i]``, one row of
    logits per sequence, all rows as long): the output embedding is applied to those rows alone, not
    to the whole vocabulary. Equal to ``tail_logits(...).logits[i, -1, choice_ids[i]]`` up to float
    rounding. Returns the logits (float32) and the token positions computed."""
    parts = _decoder_and_head(model)
    if parts is None:
        tail = tail_logits(model, seqs, pad_id, device, 1, share_prefix=share_prefix, pack=pack)
        rows = torch.as_tensor([list(c) for c in choice_ids], device=tail.logits.device)
        return tail.logits[:, -1, :].gather(1, rows), tail.positions
    decoder, head, cap = parts
    out, _, _, positions = _run_tail(decoder, seqs, pad_id, device, 1, None, share_prefix, hidden=True, pack=pack)
    h = out.last_hidden_state[:, -1, :]  # (batch, hidden)
    rows = torch.as_tensor([list(c) for c in choice_ids], device=h.device)
    w = head.weight[rows]  # (batch, n_choices, hidden)
    logits = torch.einsum("bh,bch->bc", h, w)
    if head.bias is not None:
        logits = logits + head.bias[rows]
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float(), positions


def _packable(model: Any, seqs: Sequence[Sequence[int]], shared: int) -> bool:
    """True when the rows after the shared prefix are worth packing and can be packed under a custom 4D
    mask: padding at least ``PACK_MIN_SAVING`` of the padded positions, the model not wrapped for
    distributed training, an attention that takes the mask as given (sdpa, eager), and no sliding
    window shorter than a row (the mask would replace the window's)."""
    lens = [len(s) - shared for s in seqs]
    if len(seqs) < 2 or sum(lens) > (1 - PACK_MIN_SAVING) * len(seqs) * max(lens):
        return False
    return _takes_mask(model, max(len(s) for s in seqs))


def _takes_mask(model: Any, length: int) -> bool:
    """True when ``model``'s attention takes a prepared 4D mask as given: sdpa or eager attention, not
    wrapped for distributed training, no sliding window shorter than ``length`` (the mask would replace
    the window's)."""
    cfg = getattr(model, "config", None)
    return (not hasattr(model, "module") and getattr(cfg, "_attn_implementation", None) in ("sdpa", "eager")
            and not _window_exceeded(model, length))


def attention_mask(model: Any, mask: torch.Tensor, shared: int = 0) -> torch.Tensor:
    """The attention mask for a left-padded batch (``mask``: (batch, width), 1 on tokens) whose rows all
    follow ``shared`` cached prefix tokens.

    Where the model takes a prepared mask (:func:`_takes_mask`), the 4D additive mask itself (keys of
    padding masked, causal within a row, the prefix seen by every row): given a 2D mask, transformers
    builds this on every forward through ``torch.vmap``, which took half of the scoring time of a served
    batch on a GPU (BENCHMARKS.md, session 21).
    A batch without padding or prefix keeps its 2D mask (transformers then uses causal attention
    without any mask); so does a model that takes no prepared mask (the prefix's ones in front)."""
    b, width = mask.shape
    if shared:
        mask = torch.cat([torch.ones((b, shared), dtype=mask.dtype, device=mask.device), mask], dim=1)
    elif bool(mask.all()):
        return mask
    if not _takes_mask(model, shared + width):
        return mask
    allowed = torch.ones((width, shared + width), dtype=torch.bool, device=mask.device).tril(diagonal=shared)
    allowed = allowed[None] & mask.bool()[:, None, :]
    # a query row of padding sees everything equally, finite, and no real row ever reads it
    return _additive(model, allowed)[:, None]


def _additive(model: Any, allowed: torch.Tensor) -> torch.Tensor:
    """``allowed`` (True: attend) as an additive mask in the model's dtype: eager attention adds it to the scores,
    sdpa takes it as well."""
    dtype = model.get_input_embeddings().weight.dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def _prefix_cache(model: Any, ids: Sequence[int], device: torch.device, hidden: bool) -> Any:
    """The keys and values of ``ids`` run alone (batch 1)."""
    # an explicit cache: some models (Gemma 3) make none themselves in training mode
    from transformers import DynamicCache

    cache = DynamicCache(config=getattr(getattr(model, "module", model), "config", None))  # DDP wraps the model
    model(input_ids=torch.as_tensor([list(ids)], dtype=torch.long, device=device), use_cache=True,
          past_key_values=cache, **({} if hidden else {"logits_to_keep": 1}))
    return cache


def shared_prefix_len(model: Any, seqs: Sequence[Sequence[int]], keep: int) -> int:
    """Tokens of the prefix common to ``seqs`` worth running once, leaving ``keep`` tokens of each after
    it; 0 when it is shorter than ``MIN_SHARED_PREFIX`` or a sliding window would not see it all."""
    if len(seqs) < 2:
        return 0
    n = min(common_prefix_len(seqs), min(len(s) for s in seqs) - keep)
    return 0 if n < MIN_SHARED_PREFIX or _window_exceeded(model, max(len(s) for s in seqs)) else n


@dataclass
class SharedPrefix:
    """The prompt prefix every item of a :func:`score` call starts with, run once for all its batches
    (the model must not change in between)."""

    ids: tuple[int, ...]
    cache: Any  # batch 1; copied for every batch, never extended itself

    def fits(self, seqs: Sequence[Sequence[int]], keep: int) -> bool:
        n = len(self.ids)
        return all(len(s) - keep >= n and tuple(s[:n]) == self.ids for s in seqs)

    def copy(self) -> Any:
        import copy

        return copy.deepcopy(self.cache)


def shared_prefix(model: Any, seqs: Sequence[Sequence[int]], device: torch.device, keep: int = 1
                  ) -> SharedPrefix | None:
    """The common prefix of ``seqs`` (leaving ``keep`` tokens of each after it) run once, or None when it
    is too short to be worth it or a sliding window would not see it all."""
    n = shared_prefix_len(model, seqs, keep)
    if not n:
        return None
    parts = _decoder_and_head(model)
    runner = parts[0] if parts is not None else model
    return SharedPrefix(tuple(seqs[0][:n]), _prefix_cache(runner, seqs[0][:n], device, parts is not None))


@dataclass
class _Packed:
    """The output of a packed forward, gathered back to one row per sequence: (batch, keep, ...)."""

    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


def _run_tail(model: Any, seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device, keep: int,
              adapter_names: Sequence[str] | None, share_prefix: bool, hidden: bool = False, pack: bool = False,
              prefix: "SharedPrefix | None" = None) -> tuple[Any, torch.Tensor, int, int]:
    """The forward behind :func:`tail_logits` (``hidden``: ``model`` is the decoder, without the output
    layer). Returns its output, the left-padded input ids, the shared prefix length and the positions."""
    shared = 0
    cache = None
    if prefix is not None and adapter_names is None and prefix.fits(seqs, keep):
        shared, cache = len(prefix.ids), prefix.copy()
    elif share_prefix and adapter_names is None:
        # every row keeps at least ``keep`` tokens after the prefix: the logits asked for are its own
        shared = shared_prefix_len(model, seqs, keep)
    kwargs: dict[str, Any] = {}
    if adapter_names is not None:
        kwargs["adapter_names"] = list(adapter_names)
    keep_arg: dict[str, Any] = {} if hidden else {"logits_to_keep": keep}
    enc = {k: v.to(device) for k, v in left_pad([s[shared:] for s in seqs], pad_id).items()}
    if shared and cache is None:
        cache = _prefix_cache(model, seqs[0][:shared], device, hidden)
    if pack and adapter_names is None and _packable(model, seqs, shared):
        return _run_packed(model, seqs, device, keep, shared, cache, hidden), enc["input_ids"], shared, \
            shared + sum(len(s) - shared for s in seqs)
    mask = attention_mask(model, enc["attention_mask"], shared)
    if shared:
        cache.batch_repeat_interleave(len(seqs))
        kwargs.update(past_key_values=cache, use_cache=True, attention_mask=mask,
                      position_ids=enc["position_ids"] + shared)
        out = model(input_ids=enc["input_ids"], **keep_arg, **kwargs)
    else:
        out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=enc["position_ids"],
                    use_cache=False, **keep_arg, **kwargs)
    width = enc["input_ids"].shape[1]
    return out, enc["input_ids"], shared, shared + len(seqs) * width


def _run_packed(model: Any, seqs: Sequence[Sequence[int]], device: torch.device, keep: int, shared: int,
                cache: Any, hidden: bool) -> _Packed:
    """The rows after the shared prefix (``cache``: its keys and values, batch 1) as one sequence with no
    padding; the outputs at the last ``keep`` positions of every row, as (batch, keep, ...)."""
    lens = torch.as_tensor([len(s) - shared for s in seqs])
    ends = lens.cumsum(0)
    row = torch.repeat_interleave(torch.arange(len(seqs)), lens)  # (total,) the row of every token
    local = torch.arange(int(ends[-1])) - (ends - lens)[row]  # position within its row
    allowed = (row[:, None] == row[None, :]) & (local[:, None] >= local[None, :])
    if shared:
        allowed = torch.cat([torch.ones((len(row), shared), dtype=torch.bool), allowed], dim=1)
    mask = _additive(model, allowed)
    index = (ends[:, None] - torch.arange(keep, 0, -1)[None, :]).clamp(min=0).reshape(-1).to(device)
    ids = torch.as_tensor([t for s in seqs for t in s[shared:]], dtype=torch.long, device=device)[None]
    kwargs: dict[str, Any] = {"position_ids": (local + shared)[None].to(device),
                              "attention_mask": mask[None, None].to(device)}
    if cache is not None:
        kwargs.update(past_key_values=cache, use_cache=True)
    else:
        kwargs["use_cache"] = False
    if hidden:
        h = model(input_ids=ids, **kwargs).last_hidden_state
        return _Packed(last_hidden_state=h[0, index].reshape(len(seqs), keep, -1))
    logits = model(input_ids=ids, logits_to_keep=index, **kwargs).logits
    return _Packed(logits=logits[0].reshape(len(seqs), keep, -1))


def batch_for(device: "str | torch.device") -> int:
    """Items per scoring forward on ``device``: ``BATCH`` on a CPU, ``GPU_BATCH`` on an accelerator."""
    return BATCH if torch.device(device).type == "cpu" else GPU_BATCH


PREFIXES_KEPT = 4  # prompt prefixes a caller's store keeps per model state (a task's description, a few tasks)


def _stored_prefix(model: Any, prompts: Sequence[Sequence[int]], device: torch.device,
                   prefixes: list[SharedPrefix]) -> SharedPrefix | None:
    """A prefix of ``prefixes`` every prompt starts with, or the one these prompts share, run now and kept."""
    found = next((p for p in prefixes if p.fits(prompts, 1)), None)
    if found is None:
        found = shared_prefix(model, prompts, device)
        if found is not None:
            prefixes.append(found)
            del prefixes[:-PREFIXES_KEPT]
    return found


@torch.no_grad()
def score(model: Any, items: Sequence[Encoded], pad_id: int, batch_size: int | None = None,
          adapter_names: Sequence[str] | None = None, progress: bool = False,
          prefixes: list[SharedPrefix] | None = None) -> list[np.ndarray]:
    """Per item, the log-likelihood of each choice. ``adapter_names`` routes each item to an adapter
    (peft mixed-adapter batch; ``"__base__"`` means no adapter). ``batch_size``: items per forward
    (default: :func:`batch_for` the model's device).

    ``prefixes``: prompt prefixes kept from earlier calls with this same model state (the caller's store,
    which it must empty when the weights change): a prefix every prompt starts with is not run again, and
    one run here is kept. A server answers one task's requests call after call with the same description;
    its prefix ran in every call (BENCHMARKS.md, session 21)."""
    device = next(model.parameters()).device
    batch_size = batch_size or batch_for(device)
    results: list[np.ndarray | None] = [None] * len(items)
    batches = length_batches([len(it.prompt) for it in items], batch_size)
    # the prompt prefix all items share, run once for the whole call (the prompts leave at least one token)
    prompts = [it.prompt for it in items]
    if adapter_names is not None or not items:
        prefix = None
    elif prefixes is not None:
        prefix = _stored_prefix(model, prompts, device, prefixes)
    else:
        prefix = shared_prefix(model, prompts, device) if len(batches) > 1 else None
    for idx in tqdm(batches, desc="scoring", leave=False, disable=not progress):
        group = [items[i] for i in idx]
        names = [adapter_names[i] for i in idx] if adapter_names is not None else None
        if all(len(c) == 1 for it in group for c in it.choices):
            results_batch = _score_single(model, group, pad_id, device, names, prefix)
        else:
            packed = choice_scores(model, group, pad_id, device, prefix=prefix) if names is None else None
            results_batch = ([r.cpu().numpy() for r in packed[0]] if packed is not None
                             else _score_multi(model, group, pad_id, device, names, prefix))
        for i, r in zip(idx, results_batch):
            results[i] = r
    return results  # type: ignore[return-value]


def _score_single(model, group: list[Encoded], pad_id: int, device, names, prefix=None) -> list[np.ndarray]:
    logp = torch.log_softmax(tail_logits(model, [g.prompt for g in group], pad_id, device, 1, names,
                                         prefix=prefix).logits[:, -1, :], dim=-1)
    return [logp[i, [c[0] for c in g.choices]].cpu().numpy() for i, g in enumerate(group)]


OUTPUT_ROWS = 1024  # positions per output-layer product in :func:`choice_scores` (bounds the logits' memory)


def choice_scores(model: Any, items: Sequence[Encoded], pad_id: int, device: torch.device,
                  prefix: "SharedPrefix | None" = None, share_prefix: bool = True
                  ) -> tuple[list[torch.Tensor], int] | None:
    """Per item, the score of each of its choices (the mean token log-likelihood where the item says
    ``normalise``, else the sum) from one forward over all ``items``: each row is an item's prompt once,
    then every choice after it, each choice seeing the prompt and its own earlier tokens only (a mask per
    row; positions restart after the prompt for each choice), rows left-padded into one batch after the
    prefix they share (``prefix``, or the one found here, run once). The same log-likelihoods as scoring
    every (prompt, choice) pair as its own sequence (:func:`_score_multi`) up to float rounding, at the
    cost of the prompt once instead of once per choice. Works with gradients (the ``choices`` training
    objective of multi-token labels). Returns the scores and the token positions computed, or None where
    the model cannot take it (no separate decoder and output layer, an attention that does not take a
    prepared mask, a sliding window shorter than a row): score the pairs instead."""
    parts = _decoder_and_head(model)
    if parts is None or not items:
        return None
    decoder, head, cap = parts
    prompts = [it.prompt for it in items]
    shared, cache = 0, None
    if prefix is not None and prefix.fits(prompts, 1):
        shared, cache = len(prefix.ids), prefix.copy()
    elif share_prefix:
        shared = shared_prefix_len(decoder, prompts, 1)
    rows: list[list[int]] = []
    segs: list[list[int]] = []  # 0: the prompt, k + 1: choice k
    positions: list[list[int]] = []
    for it in items:
        p = len(it.prompt)
        rows.append(list(it.prompt[shared:]) + [t for c in it.choices for t in c])
        segs.append([0] * (p - shared) + [k + 1 for k, c in enumerate(it.choices) for _ in c])
        positions.append(list(range(shared, p)) + [p + j for c in it.choices for j in range(len(c))])
    width = max(len(r) for r in rows)
    if not _takes_mask(decoder, shared + width):
        return None
    b = len(items)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    seg = torch.full((b, width), -1, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    for i, (r, sg, ps) in enumerate(zip(rows, segs, positions)):
        ids[i, width - len(r):] = torch.as_tensor(r)
        seg[i, width - len(r):] = torch.as_tensor(sg)
        pos[i, width - len(r):] = torch.as_tensor(ps)
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()[None]
    # a prompt token sees the prompt causally; a choice token sees the whole prompt and its own choice causally;
    # a query of padding sees the prompt (finite, and no real row reads it)
    allowed = ((k == 0) & (causal | (q != 0))) | ((k == q) & (q > 0) & causal)
    if shared:
        allowed = torch.cat([torch.ones((b, width, shared), dtype=torch.bool), allowed], dim=2)
    kwargs: dict[str, Any] = {"position_ids": pos.to(device), "attention_mask": _additive(decoder, allowed)[:, None].to(device)}
    if shared:
        if cache is None:
            cache = _prefix_cache(decoder, prompts[0][:shared], device, True)
        cache.batch_repeat_interleave(b)
        kwargs.update(past_key_values=cache, use_cache=True)
    else:
        kwargs["use_cache"] = False
    h = decoder(input_ids=ids.to(device), **kwargs).last_hidden_state  # (b, width, hidden)
    # the positions whose next-token distribution is read: the prompt's last token (every choice's first token)
    # and each choice token but the last; each read target's (row of that list, token, choice)
    read: dict[tuple[int, int], int] = {}
    rows_at, tokens, owner = [], [], []
    n_choices = 0
    for i, it in enumerate(items):
        last = width - len(rows[i]) + len(it.prompt) - shared - 1  # the prompt's last token in row i
        at = last  # the token before the choice's first
        for c in it.choices:
            for j, t in enumerate(c):
                rows_at.append(read.setdefault((i, last if j == 0 else at + j), len(read)))
                tokens.append(t)
                owner.append(n_choices)
            at += len(c)
            n_choices += 1
    where = torch.as_tensor(list(read), dtype=torch.long, device=h.device)
    picked = h[where[:, 0], where[:, 1]]  # (positions read, hidden)
    rows_t = torch.as_tensor(rows_at, device=h.device)
    tokens_t = torch.as_tensor(tokens, device=h.device)
    # log p(token) = its logit - the log-normaliser of its position: the normaliser over the vocabulary a slice of
    # positions at a time, each target's logit from its own row of the output weights
    norms = torch.cat([_output_layer(head, cap, part).float().logsumexp(-1) for part in picked.split(OUTPUT_ROWS)])
    logit = (picked[rows_t] * head.weight[tokens_t]).sum(-1)
    if head.bias is not None:
        logit = logit + head.bias[tokens_t]
    vals = _soft_cap(logit, cap).float() - norms[rows_t]
    sums = torch.zeros(n_choices, device=h.device, dtype=torch.float32).index_add(
        0, torch.as_tensor(owner, device=h.device), vals)
    lens = torch.as_tensor([len(c) for it in items for c in it.choices], device=h.device, dtype=torch.float32)
    norm = torch.as_tensor([it.normalise for it in items for _ in it.choices], device=h.device)
    scores = torch.where(norm, sums / lens, sums)
    out = list(torch.split(scores, [len(it.choices) for it in items]))
    return out, shared + b * width


def _score_multi(model, group: list[Encoded], pad_id: int, device, names, prefix=None) -> list[np.ndarray]:
    seqs, owners, lens, flat_names, norms = [], [], [], [], []
    for i, g in enumerate(group):
        for c in g.choices:
            seqs.append(g.prompt + c)
            owners.append(i)
            lens.append(len(c))
            norms.append(g.normalise)
            if names is not None:
                flat_names.append(names[i])
    keep = max(lens) + 1
    tail = tail_logits(model, seqs, pad_id, device, keep, flat_names if names is not None else None, prefix=prefix)
    logp = torch.log_softmax(tail.logits, dim=-1)
    ids = tail.input_ids
    sums = []
    for row, n in enumerate(lens):
        # tokens at the last n positions are predicted by the logits one step earlier
        pred = logp[row, keep - n - 1: keep - 1, :]
        tgt = ids[row, -n:]
        total = pred.gather(-1, tgt[:, None]).sum().item()
        sums.append(total / n if norms[row] else total)
    out: list[list[float]] = [[] for _ in group]
    for owner, s in zip(owners, sums):
        out[owner].append(s)
    return [np.asarray(o) for o in out]


def accuracy(scores: Sequence[np.ndarray], items: Sequence[Encoded]) -> float:
    """Fraction of items whose highest-scoring choice is the label."""
    if not items:
        return float("nan")
    return float(np.mean([int(np.argmax(s)) == it.label for s, it in zip(scores, items)]))
