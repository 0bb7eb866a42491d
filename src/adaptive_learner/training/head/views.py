"""What a task's head sees: the frozen backbone's pooled hidden states at one layer, and views of the
input from a sentence encoder (``text``: the fields as one text; ``pair``: how the first two fields relate)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ...prompting import Encoded, left_pad
from ...scoring import attention_mask

VIEWS = ("text", "pair")  # encoder views a head may add to the backbone's features


class _Stop(Exception):
    """Raised by a forward hook to end the forward at the feature layer."""


def default_layer(model: Any) -> int:
    """Two thirds of the depth (the layer measured for the linear probe)."""
    return int(model.config.num_hidden_layers) * 2 // 3


@torch.no_grad()
def prompt_features(model: Any, items: Sequence[Encoded], layer: int, pad_id: int, batch_size: int = 16) -> np.ndarray:
    """(n, hidden): the hidden states after ``layer`` averaged over each prompt's tokens; the forward
    stops there. ``model`` is the backbone as it should be seen (adapters disabled by the caller)."""
    from ...features import decoder_layers

    hidden = int(model.config.hidden_size)
    out = np.zeros((len(items), hidden), dtype=np.float32)
    if not items:
        return out
    captured: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    def run(**kwargs: Any) -> torch.Tensor:
        captured.clear()
        try:
            model(**kwargs)
        except _Stop:
            pass
        hs = captured[0].float()
        return hs.view(kwargs["input_ids"].shape[0], -1, hidden) if hs.dim() == 2 else hs  # some layers: (b * t, h)

    layers = decoder_layers(model)
    handle = layers[min(max(layer, 1), len(layers)) - 1].register_forward_hook(hook)
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt))
    try:
        # the prompt prefix every item shares (the task's description) runs once: its keys and values serve
        # every batch, and its hidden states count once per item in the mean (causal: the same states)
        shared, cache, prefix_sum = _shared_prefix(model, items, device, run)
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            enc = {k: v.to(device) for k, v in left_pad([items[i].prompt[shared:] for i in idx], pad_id).items()}
            mask = enc["attention_mask"]
            if shared:
                import copy

                batch_cache = copy.deepcopy(cache)
                batch_cache.batch_repeat_interleave(len(idx))
                hs = run(input_ids=enc["input_ids"], attention_mask=attention_mask(model, mask, shared),
                         position_ids=enc["position_ids"] + shared, past_key_values=batch_cache, use_cache=True)
            else:
                hs = run(input_ids=enc["input_ids"], attention_mask=attention_mask(model, mask),
                         position_ids=enc["position_ids"], use_cache=False)
            m = mask.to(hs.dtype)[..., None]
            total = (hs * m).sum(1) + prefix_sum
            out[idx] = (total / (m.sum(1) + shared).clamp(min=1)).cpu().numpy()
    finally:
        handle.remove()
    return out


def _shared_prefix(model: Any, items: Sequence[Encoded], device: torch.device, run: Any
                   ) -> tuple[int, Any, torch.Tensor | float]:
    """(length, keys and values, summed hidden states at the feature layer) of the prefix every prompt
    shares, leaving each at least one token; (0, None, 0.0) when it is too short or a window hides it."""
    from ...scoring import shared_prefix_len

    prompts = [it.prompt for it in items]
    n = shared_prefix_len(model, prompts, 1)
    if not n:
        return 0, None, 0.0
    from transformers import DynamicCache

    cache = DynamicCache(config=getattr(model, "config", None))
    hs = run(input_ids=torch.as_tensor([list(prompts[0][:n])], dtype=torch.long, device=device),
             past_key_values=cache, use_cache=True)
    return n, cache, hs[0].sum(0)


def pair_view(encoder: Any, items: Sequence[Encoded]) -> np.ndarray:
    """(n, 4 d): ``[u, v, |u - v|, u * v]`` of the sentence embeddings of each item's first two fields."""
    if any(len(it.fields) < 2 for it in items):
        raise ValueError("the pair view needs inputs of two fields")
    u = np.asarray(encoder.encode([it.fields[0] for it in items]), dtype=np.float32)
    v = np.asarray(encoder.encode([it.fields[1] for it in items]), dtype=np.float32)
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def text_view(encoder: Any, items: Sequence[Encoded]) -> np.ndarray:
    """(n, d): the sentence embedding of each item's fields as one text (one per line)."""
    if any(not it.fields for it in items):
        raise ValueError("the text view needs the inputs' fields")
    return np.asarray(encoder.encode(["\n".join(it.fields) for it in items]), dtype=np.float32)


def views_for(items: Sequence[Encoded], considered: Sequence[str] = VIEWS) -> tuple[str, ...]:
    """The encoder views among ``considered`` that ``items`` allow: ``text`` when every item keeps its
    fields, ``pair`` when every item has two or more."""
    unknown = [v for v in considered if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown head views {unknown}; known: {', '.join(VIEWS)}")
    if not items or any(not it.fields for it in items):
        return ()
    allowed = ("text", "pair") if all(len(it.fields) >= 2 for it in items) else ("text",)
    return tuple(v for v in allowed if v in considered)


def encoder_views(views: Sequence[str], encoder: Any, items: Sequence[Encoded]) -> list[np.ndarray]:
    """The named encoder views of ``items``, in order."""
    makers = {"text": text_view, "pair": pair_view}
    out = []
    for view in views:
        if view not in makers:
            raise ValueError(f"unknown head view {view!r}; known: {', '.join(VIEWS)}")
        out.append(makers[view](encoder, items))
    return out
