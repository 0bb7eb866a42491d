"""The head itself: a standardised linear classifier over the features, and how its answer is mixed with
the adapter's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ...prompting import Encoded
from .views import VIEWS, encoder_views, prompt_features


@dataclass
class FeatureHead:
    """A standardised linear classifier over the pooled features (and any encoder views), and its
    mixing weight."""

    layer: int
    mean: np.ndarray  # (features,)
    scale: np.ndarray  # (features,)
    weight: np.ndarray  # (features, n_labels)
    bias: np.ndarray  # (n_labels,)
    mix: float = 1.0  # weight of the adapter's probabilities
    views: tuple[str, ...] = ()  # encoder views after the backbone's features (:data:`VIEWS`)
    encoder: str | None = None  # the sentence encoder of the views (``features.text_encoder``)
    adapter_temperature: float = 1.0  # the adapter's label scores are divided by it before the mix

    def features(self, model: Any, items: Sequence[Encoded], pad_id: int) -> np.ndarray:
        """The head's input for ``items``: the backbone's pooled features (``model``: the backbone with
        adapters disabled), then each encoder view."""
        feats = prompt_features(model, items, self.layer, pad_id)
        if not self.views or not items:
            return feats
        from ...features import text_encoder

        return np.concatenate([feats, *encoder_views(self.views, text_encoder(self.encoder or "minilm"), items)], 1)

    def log_probs(self, features: np.ndarray) -> np.ndarray:
        z = ((features - self.mean) / self.scale) @ self.weight + self.bias
        return z - np.logaddexp.reduce(z, axis=1, keepdims=True)

    def combine(self, adapter_scores: Sequence[np.ndarray], features: np.ndarray) -> list[np.ndarray]:
        """Per input, the mixed label log-probabilities (``adapter_scores``: log-likelihoods per label)."""
        return [np.log(m) for m in _mixed(np.stack([_softmax(np.asarray(s) / self.adapter_temperature)
                                                    for s in adapter_scores]),
                                          np.exp(self.log_probs(features)), self.mix)]

    def mix_in(self, host: Any, items: Sequence[Encoded], adapter_scores: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The mixed answers of ``items`` (``adapter_scores``: the adapter's label scores for them), the head's
        features read from ``host``'s backbone with every adapter disabled."""
        if not items:
            return list(adapter_scores)
        with host.base() as model:
            return self.combine(adapter_scores, self.features(model, items, host.backbone.tokenizer.pad_token_id))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float32))
                for k in ("mean", "scale", "weight", "bias")}

    def meta(self) -> dict[str, Any]:
        meta = {"layer": self.layer, "mix": self.mix, "views": list(self.views), "encoder": self.encoder}
        if self.adapter_temperature != 1.0:
            meta["adapter_temperature"] = self.adapter_temperature
        return meta

    @classmethod
    def from_stored(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "FeatureHead":
        arrays = {k: tensors[k].numpy().astype(np.float32) for k in ("mean", "scale", "weight", "bias")}
        views = tuple(meta.get("views") or ())  # heads stored before the views: the backbone's features alone
        unknown = [v for v in views if v not in VIEWS]
        if unknown:
            raise ValueError(f"stored head uses unknown views {unknown}; known: {', '.join(VIEWS)}")
        return cls(int(meta["layer"]), mix=float(meta["mix"]), views=views, encoder=meta.get("encoder"),
                   adapter_temperature=float(meta.get("adapter_temperature", 1.0)), **arrays)


def fit_head(features: np.ndarray, labels: Sequence[int], n_labels: int, layer: int, l2: float = 1e-2,
             max_iter: int = 200) -> FeatureHead:
    """L2-regularised logistic regression (L-BFGS) on standardised features; deterministic."""
    x = torch.from_numpy(features).double()
    mean, scale = x.mean(0), x.std(0, unbiased=False) + 1e-6
    x = (x - mean) / scale
    y = torch.as_tensor(list(labels), dtype=torch.long)
    w = torch.zeros(x.shape[1], n_labels, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return FeatureHead(layer, mean.numpy().astype(np.float32), scale.numpy().astype(np.float32),
                       w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32))


def _softmax(s: np.ndarray) -> np.ndarray:
    p = np.exp(s - np.max(s))
    return p / p.sum()


def _mixed(p_adapter: np.ndarray, p_head: np.ndarray, mix: float) -> np.ndarray:
    return np.clip(mix * p_adapter + (1 - mix) * p_head, 1e-12, 1.0)
