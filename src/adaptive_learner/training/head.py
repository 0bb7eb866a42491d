"""A linear head on the frozen backbone's features, mixed with the adapter's label scores.

A LoRA adapter learns well what the backbone can already almost do (sentiment, question types);
on tasks it barely moves in a few hundred steps (sentence pairs, label words it has no prior
for), a linear classifier on the frozen backbone's pooled hidden states, fitted in seconds, is
often better (BENCHMARKS "Per-task quality"). So every task gets both, and one number decides
how they are mixed:

    p(label | x) = mix * softmax(adapter scores) + (1 - mix) * softmax(head(features(x)))

``mix`` is decided on the adapter's held-out examples (the same split early stopping used, with
the head fitted on the rest); then the head is refitted on every training example. ``mix = 1``
is the adapter alone (what a task without enough examples to hold out gets). The default rule,
``gated``, mixes the two equally unless the held-out examples tell them apart (a McNemar test at
5%: one is right where the other is wrong clearly more often), and then keeps the better one
alone; ``held-out`` picks the mix in :data:`MIXES` with the best held-out accuracy, which a few
dozen examples choose by chance as often as not (measured: benchmarks/head_choice.py, BENCHMARKS
"Adapter or head"); a number fixes the mix.

Features: the frozen backbone's hidden states at one layer (two thirds of the depth by default),
averaged over the prompt's tokens. They come from the backbone with every adapter disabled, so a
task's head stays valid when its adapter is later reused and changed by another task. The head may
also see views from a sentence encoder (the router's). By default, for an input of two or more fields
(a sentence pair, a passage and a question), ``pair``: how the first two fields relate,
``[u, v, |u - v|, u * v]`` of their sentence embeddings, the classic sentence-pair features
(paraphrase and similarity: BENCHMARKS "The head sees how a pair's fields relate"), kept when it lowers
the head's cross-validated log loss on the training examples (:func:`choose_views`).

``text`` (the sentence embedding of the input's fields as one text, what a frozen-encoder classifier
sees) is considered too (``TrainConfig.head_views``, default ``text,pair``), by one of three rules
(``head_view_rule``): ``gated`` (the default: the pair view as by ``min``; a set with the text view only
where the head's cross-validated answers with it beat those without by the mix's McNemar gate), ``min``
(the lowest cross-validated log loss) and ``one-se``. With ``min`` the text view lowered the loss on every
row rerun and the mixed answer lost on six of them (rotten_tomatoes at 512, -5.5; BENCHMARKS "A text view
for the head"); ``gated`` adds it on 5 of 32 catalog rows (the long news articles; trec and question-wants at
512), the answer changing on two (bbc_news +2.0 at 512, -1.0 at 160; BENCHMARKS, session 19).

Temperatures (``TrainConfig.head_calibrate``): ``head`` divides the head's logits by a temperature fitted to
its out-of-fold answers on the training part, ``both`` also the adapter's scores by one fitted to its
held-out answers; measured, not adopted (BENCHMARKS, session 19: the calibrated head weighs less in the mix,
which costs the rows where the head carries the answer, rte and stsb).

Every decision is made by :func:`decide_head` from arrays (:func:`head_arrays`), so that a benchmark that
kept them (``benchmarks/per_task_quality.py --dump``, ``benchmarks/head_policy.py``) replays it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..prompting import Encoded, left_pad

MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)
VIEWS = ("text", "pair")  # encoder views a head may add to the backbone's features
DEFAULT_VIEWS = ("text", "pair")  # those it considers by default (TrainConfig.head_views)
FREE_VIEWS = ("pair",)  # those the gated rule chooses by their loss alone (the others must pass the gate)
MIX_RULES = ("gated", "held-out")  # or a number in [0, 1]
GATE_Z = 1.96  # McNemar, two-sided 5%
VIEW_RULES = ("min", "one-se", "gated")  # how choose_views picks among the view sets (the first: the default)
CALIBRATIONS = ("none", "head", "both")  # which temperatures decide_head fits
DEFAULT_VIEW_RULE = "gated"  # TrainConfig.head_view_rule


def check_mix_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`MIX_RULES` or a number in [0, 1]; ValueError otherwise."""
    if rule in MIX_RULES:
        return rule
    try:
        value = float(rule)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"head mix must be one of {', '.join(MIX_RULES)} or a number between 0 and 1, got {rule!r}")
    return rule


def check_head_options(views: str, view_rule: str, calibrate: str) -> tuple[str, ...]:
    """The views named in ``views`` (comma-separated) when they, ``view_rule`` and ``calibrate`` are known;
    ValueError naming the bad one otherwise."""
    named = tuple(v.strip() for v in views.split(",") if v.strip())
    unknown = [v for v in named if v not in VIEWS]
    if unknown:
        raise ValueError(f"head views must be among {', '.join(VIEWS)}, got {', '.join(unknown)}")
    if view_rule not in VIEW_RULES:
        raise ValueError(f"head view rule must be one of {', '.join(VIEW_RULES)}, got {view_rule!r}")
    if calibrate not in CALIBRATIONS:
        raise ValueError(f"head calibration must be one of {', '.join(CALIBRATIONS)}, got {calibrate!r}")
    return named


class _Stop(Exception):
    """Raised by a forward hook to end the forward at the feature layer."""


def default_layer(model: Any) -> int:
    """Two thirds of the depth (the layer measured for the linear probe)."""
    return int(model.config.num_hidden_layers) * 2 // 3


@torch.no_grad()
def prompt_features(model: Any, items: Sequence[Encoded], layer: int, pad_id: int, batch_size: int = 16) -> np.ndarray:
    """(n, hidden): the hidden states after ``layer`` averaged over each prompt's tokens; the forward
    stops there. ``model`` is the backbone as it should be seen (adapters disabled by the caller)."""
    from ..features import decoder_layers

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
                ones = torch.ones((len(idx), shared), dtype=mask.dtype, device=device)
                hs = run(input_ids=enc["input_ids"], attention_mask=torch.cat([ones, mask], dim=1),
                         position_ids=enc["position_ids"] + shared, past_key_values=batch_cache, use_cache=True)
            else:
                hs = run(**enc, use_cache=False)
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
    from ..scoring import shared_prefix_len

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
        from ..features import text_encoder

        return np.concatenate([feats, *encoder_views(self.views, text_encoder(self.encoder or "minilm"), items)], 1)

    def log_probs(self, features: np.ndarray) -> np.ndarray:
        z = ((features - self.mean) / self.scale) @ self.weight + self.bias
        return z - np.logaddexp.reduce(z, axis=1, keepdims=True)

    def combine(self, adapter_scores: Sequence[np.ndarray], features: np.ndarray) -> list[np.ndarray]:
        """Per input, the mixed label log-probabilities (``adapter_scores``: log-likelihoods per label)."""
        return [np.log(m) for m in _mixed(np.stack([_softmax(np.asarray(s) / self.adapter_temperature)
                                                    for s in adapter_scores]),
                                          np.exp(self.log_probs(features)), self.mix)]

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


L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _folds(labels: Sequence[int], folds: int, seed: int) -> np.ndarray:
    """A label-stratified fold number per example, seeded."""
    y = np.asarray(labels)
    rng = np.random.RandomState(seed)
    fold = np.zeros(len(y), dtype=int)
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        fold[idx] = np.arange(len(idx)) % folds
    return fold


def _cv(features: np.ndarray, labels: Sequence[int], n_labels: int, l2: float, folds: int, seed: int
        ) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold label log-probabilities (n, n_labels), and which examples were scored (a fold is not when
    the rest hold one label alone; its rows stay uniform)."""
    y = np.asarray(labels)
    fold = _folds(y, folds, seed)
    out = np.full((len(y), n_labels), -np.log(n_labels))
    scored = np.zeros(len(y), dtype=bool)
    for f in range(folds):
        test = fold == f
        if not test.any() or len(np.unique(y[~test])) < 2:
            continue
        out[test] = fit_head(features[~test], y[~test].tolist(), n_labels, 0, l2=l2).log_probs(features[test])
        scored |= test
    return out, scored


def cv_log_probs(features: np.ndarray, labels: Sequence[int], n_labels: int, l2: float = 1e-2, folds: int = 5,
                 seed: int = 0) -> np.ndarray:
    """(n, n_labels): each example's label log-probabilities under a head fitted on the other ``folds - 1``
    label-stratified folds (uniform for an example whose fold could not be scored: the rest held one label
    alone)."""
    return _cv(features, labels, n_labels, l2, folds, seed)[0]


def _losses(lp: np.ndarray, scored: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    y = np.asarray(labels)
    return np.where(scored, -lp[np.arange(len(y)), y], 0.0)


def cv_losses(features: np.ndarray, labels: Sequence[int], n_labels: int, l2: float = 1e-2, folds: int = 5,
              seed: int = 0) -> np.ndarray:
    """Each example's log loss under a head fitted on the other ``folds - 1`` label-stratified folds (0 for an
    example whose fold could not be scored: the rest held one label alone)."""
    return _losses(*_cv(features, labels, n_labels, l2, folds, seed), labels)


def cv_log_loss(features: np.ndarray, labels: Sequence[int], n_labels: int, l2: float = 1e-2, folds: int = 5,
                seed: int = 0) -> float:
    """The head's mean log loss over ``folds`` label-stratified folds, each scored by a head fitted on the rest."""
    return float(cv_losses(features, labels, n_labels, l2, folds, seed).mean())


def choose_l2(features: np.ndarray, labels: Sequence[int], n_labels: int, grid: Sequence[float] = L2_GRID,
              folds: int = 5, seed: int = 0) -> tuple[float, dict[str, float]]:
    """The L2 strength of the head with the lowest cross-validated log loss over ``features`` (k folds,
    label-stratified, seeded), and every strength's log loss. A head fitted on a few hundred examples of
    hundreds of features separates them at any weak penalty; the penalty decides how far its
    probabilities can be trusted, which is what mixing it with the adapter needs."""
    losses = {f"{l2:g}": cv_log_loss(features, labels, n_labels, l2, folds, seed) for l2 in grid}
    best = min(grid, key=lambda l2: (round(losses[f"{l2:g}"], 6), -l2))
    return best, losses


def choose_views(backbone: np.ndarray, views: dict[str, np.ndarray], labels: Sequence[int], n_labels: int,
                 folds: int = 5, seed: int = 0, rule: str = "min", free: Sequence[str] = FREE_VIEWS,
                 details: dict[str, Any] | None = None) -> tuple[tuple[str, ...], dict[str, float]]:
    """Which encoder views the head adds to the backbone's features. Every candidate set (none, each subset
    of ``views`` in their order) is scored by cross-validation on the training examples (the same
    label-stratified folds for all): its per-example log loss and whether its answer is right. ``rule``:

    - ``min`` (the default): the lowest mean log loss, ties to fewer views;
    - ``one-se``: the fewest views whose mean loss is within one standard error of the lowest (the standard
      error of the two candidates' per-example difference);
    - ``gated``: the views in ``free`` are chosen as by ``min``; a set with any other view replaces that
      choice only when its cross-validated answers beat it by the mix's gate (a McNemar test at 5%: right
      where the other is wrong clearly more often than the reverse); of several that pass, the most
      accurate (then fewer views, then the lower loss). The gate the mix uses, applied to the views, with
      every training example's out-of-fold answer instead of the few held-out ones.

    Returns the views and each candidate's mean log loss; ``details``, when given, receives each
    candidate's cross-validated accuracy and, for ``gated``, the gate's counts against the free choice."""
    from itertools import combinations

    if rule not in VIEW_RULES:
        raise ValueError(f"view rule must be one of {', '.join(VIEW_RULES)}, got {rule!r}")
    y = np.asarray(labels)
    names = list(views)
    per: dict[tuple[str, ...], np.ndarray] = {}
    hit: dict[tuple[str, ...], np.ndarray] = {}
    for k in range(len(names) + 1):
        for subset in combinations(names, k):
            x = np.concatenate([backbone, *(views[v] for v in subset)], axis=1)
            lp, scored = _cv(x, y, n_labels, 1e-2, folds, seed)
            per[subset], hit[subset] = _losses(lp, scored, y), lp.argmax(1) == y
    mean = {k: round(float(v.mean()), 6) for k, v in per.items()}
    losses = {_key(k): float(v.mean()) for k, v in per.items()}
    if details is not None:
        details["cv_accuracy"] = {_key(k): round(float(v.mean()), 4) for k, v in hit.items()}
    lowest = min(per, key=lambda k: (mean[k], len(k)))
    if rule == "min":
        return lowest, losses
    if rule == "one-se":
        for k in sorted(per, key=lambda k: (len(k), mean[k])):  # the fewest views first
            d = per[k] - per[lowest]
            if d.mean() <= d.std(ddof=1) / np.sqrt(len(d)) + 1e-12:
                return k, losses
        return lowest, losses
    base = min((k for k in per if set(k) <= set(free)), key=lambda k: (mean[k], len(k)))
    gate: dict[str, Any] = {}
    passed = []
    for k in per:
        if set(k) <= set(free):
            continue
        b, c, z = _mcnemar(hit[k], hit[base])
        gate[_key(k)] = {"only_this": b, "only_free": c, "z": round(float(z), 3)}
        if z >= GATE_Z:
            passed.append(k)
    if details is not None:
        details["gate"] = {"free": _key(base), **gate}
    if not passed:
        return base, losses
    return max(passed, key=lambda k: (hit[k].mean(), -len(k), -mean[k])), losses


def _mcnemar(a_hit: np.ndarray, b_hit: np.ndarray) -> tuple[int, int, float]:
    """Examples only ``a`` gets right, only ``b`` gets right, and the signed McNemar z of a over b."""
    b, c = int((a_hit & ~b_hit).sum()), int((~a_hit & b_hit).sum())
    return b, c, (b - c) / np.sqrt(b + c) if b + c else 0.0


def _key(views: Sequence[str]) -> str:
    """A candidate's name in the reports: ``backbone+view+...``."""
    return "+".join(("backbone", *views))


def choose_mix(adapter_scores: Sequence[np.ndarray], head_log_probs: np.ndarray, labels: Sequence[int],
               rule: str = "gated") -> tuple[float, dict[str, Any]]:
    """The mix ``rule`` gives on held-out examples (see the module), and every mix's held-out accuracy and
    log loss, with the counts the gate compares (examples only the adapter / only the head gets right).

    ``held-out``: the mix in :data:`MIXES` with the best accuracy, ties to the lower log loss (then to
    more weight on the adapter). ``gated``: 0.5 unless ``|b - c| / sqrt(b + c) >= GATE_Z``, then the
    better one alone."""
    p_adapter = np.stack([_softmax(s) for s in adapter_scores])
    p_head = np.exp(head_log_probs)
    y = np.asarray(labels)
    table: dict[str, Any] = {}
    for m in MIXES:
        p = _mixed(p_adapter, p_head, m)
        table[f"{m:g}"] = {"accuracy": float(np.mean(p.argmax(1) == y)),
                           "log_loss": float(np.mean(-np.log(p[np.arange(len(y)), y])))}
    b, c, z = _mcnemar(p_adapter.argmax(1) == y, p_head.argmax(1) == y)
    z = abs(z)
    table["gate"] = {"adapter_only": b, "head_only": c, "z": round(float(z), 3)}
    if rule == "held-out":
        best = max(MIXES, key=lambda m: (table[f"{m:g}"]["accuracy"], -round(table[f"{m:g}"]["log_loss"], 6), m))
    elif rule == "gated":
        best = (1.0 if b > c else 0.0) if z >= GATE_Z else 0.5
    else:
        best = float(check_mix_rule(rule))
    return best, table


def _softmax(s: np.ndarray) -> np.ndarray:
    p = np.exp(s - np.max(s))
    return p / p.sum()


def _mixed(p_adapter: np.ndarray, p_head: np.ndarray, mix: float) -> np.ndarray:
    return np.clip(mix * p_adapter + (1 - mix) * p_head, 1e-12, 1.0)


def fit_temperature(log_probs: np.ndarray, labels: Sequence[int]) -> float:
    """The temperature T (logits divided by T) that minimises the log loss of ``log_probs`` (a head's
    out-of-fold answers): a grid over log T, then a local refinement; deterministic."""
    y = np.asarray(labels)

    def nll(t: float) -> float:
        z = log_probs / t
        z = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
        return float(-z[np.arange(len(y)), y].mean())

    grid = np.exp(np.linspace(np.log(0.25), np.log(16.0), 49))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.05, 0.05, 21))
    return float(min(fine, key=nll))


def _log_softmax(s: np.ndarray) -> np.ndarray:
    return s - np.logaddexp.reduce(s, axis=-1, keepdims=True)


def decide_head(f_train: np.ndarray, f_val: np.ndarray, y_train: Sequence[int], y_val: Sequence[int],
                s_val: Sequence[np.ndarray], n_labels: int, layer: int, rule: str = "gated",
                v_train: dict[str, np.ndarray] | None = None, v_val: dict[str, np.ndarray] | None = None,
                view_rule: str = "min", calibrate: str = "none") -> tuple[FeatureHead | None, dict[str, Any]]:
    """Everything :func:`fit_task_head` decides, from arrays: which encoder views the head adds (among those in
    ``v_train``/``v_val``, by ``view_rule`` on the training part alone), temperatures (``calibrate``: ``head``,
    the head's, fitted to its cross-validated answers on the training part; ``both``, also the adapter's,
    fitted to its answers on the held-out part), the mix (``rule``, on the held-out part: ``s_val`` the
    adapter's label scores there), then the head refitted on every example. A temperature changes no answer
    of the one it divides, only how far it outweighs the other in the mix. Pure: a benchmark that kept these
    arrays replays the decision exactly."""
    if calibrate not in CALIBRATIONS:
        raise ValueError(f"calibrate must be one of {', '.join(CALIBRATIONS)}, got {calibrate!r}")
    views: tuple[str, ...] = ()
    report: dict[str, Any] = {}
    if v_train:
        details: dict[str, Any] = {}
        views, losses = choose_views(f_train, v_train, y_train, n_labels, rule=view_rule, details=details)
        report["views"] = {"chosen": list(views), "cv_log_loss": {k: round(v, 4) for k, v in losses.items()},
                           "rule": view_rule, **details}
        if views:
            f_train = np.concatenate([f_train, *(v_train[v] for v in views)], axis=1)
            f_val = np.concatenate([f_val, *(v_val[v] for v in views)], axis=1)
    t_head = t_adapter = 1.0
    if calibrate != "none":
        t_head = round(fit_temperature(cv_log_probs(f_train, y_train, n_labels), y_train), 4)
        report["temperature"] = t_head
    if calibrate == "both":
        t_adapter = round(fit_temperature(np.stack([_log_softmax(np.asarray(s, dtype=np.float64)) for s in s_val]),
                                          y_val), 4)
        report["adapter_temperature"] = t_adapter
    head_val = fit_head(f_train, y_train, n_labels, layer)
    mix, table = choose_mix([np.asarray(s) / t_adapter for s in s_val], head_val.log_probs(f_val) / t_head, y_val, rule)
    report = {"mix": mix, "rule": rule, "layer": layer, **report, "held_out": table}
    head = None
    if mix < 1.0:
        head = fit_head(np.concatenate([f_train, f_val]), list(y_train) + list(y_val), n_labels, layer)
        head.weight, head.bias = head.weight / t_head, head.bias / t_head
        head.mix, head.views, head.adapter_temperature = mix, views, t_adapter
    return head, report


def fit_task_head(host: Any, adapter: str, items: Sequence[Encoded], cfg: Any, layer: int | None = None,
                  encoder: str | None = None, views: Sequence[str] | None = None, view_rule: str | None = None,
                  calibrate: str | None = None) -> tuple[FeatureHead | None, dict[str, Any]]:
    """Fit a task's head beside its trained adapter and choose their mix on the held-out examples
    that early stopping used (:func:`~adaptive_learner.training.trainer.split_validation` with the
    same config gives the same split). ``encoder``: the sentence encoder whose views the head may add
    among ``views`` (:func:`views_for`, :func:`choose_views` by ``view_rule``; None: the backbone's features
    alone). The decisions: :func:`decide_head`. ``views``, ``view_rule``, ``calibrate``: None takes ``cfg``'s
    ``head_views``, ``head_view_rule``, ``head_calibrate`` (:class:`TrainConfig`; their defaults where ``cfg``
    has none). Returns the head refitted on every example (None when the adapter alone is best, or nothing
    could be held out) and a report for the library's history."""
    import time

    if views is None:
        views = check_head_options(getattr(cfg, "head_views", ",".join(DEFAULT_VIEWS)), "min", "none")
    view_rule = getattr(cfg, "head_view_rule", DEFAULT_VIEW_RULE) if view_rule is None else view_rule
    calibrate = getattr(cfg, "head_calibrate", "none") if calibrate is None else calibrate

    from .trainer import split_validation

    t0 = time.perf_counter()
    train, val = split_validation(items, cfg)
    if not val:
        return None, {"mix": 1.0, "reason": "too few examples to hold any out: adapter alone"}
    arrays = head_arrays(host, adapter, train, val, layer, encoder, views)
    head, report = decide_head(**arrays, n_labels=len(items[0].choices), rule=getattr(cfg, "head_mix", "gated"),
                               view_rule=view_rule, calibrate=calibrate)
    if "views" in report:
        report["views"]["encoder"] = encoder
    if head is not None and head.views:
        head.encoder = encoder
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return head, report


def head_arrays(host: Any, adapter: str, train: Sequence[Encoded], val: Sequence[Encoded], layer: int | None = None,
                encoder: str | None = None, views: Sequence[str] = DEFAULT_VIEWS) -> dict[str, Any]:
    """What :func:`decide_head` reads, as its keyword arguments: the backbone's features of the training and
    held-out parts (at ``layer``, default :func:`default_layer`), their labels, the adapter's label scores on
    the held-out part, and the views of ``encoder`` (None: none) that the examples allow among ``views``."""
    from ..scoring import score

    pad = host.backbone.tokenizer.pad_token_id
    with host.base() as model:
        layer = default_layer(model) if layer is None else layer
        f_train, f_val = prompt_features(model, train, layer, pad), prompt_features(model, val, layer, pad)
    with host.using(adapter) as model:
        model.eval()
        s_val = score(model, val, pad)
    allowed = views_for(list(train) + list(val), tuple(views)) if encoder is not None else ()
    v_train: dict[str, np.ndarray] = {}
    v_val: dict[str, np.ndarray] = {}
    if allowed:
        from ..features import text_encoder

        enc = text_encoder(encoder)
        v_train = dict(zip(allowed, encoder_views(allowed, enc, train)))
        v_val = dict(zip(allowed, encoder_views(allowed, enc, val)))
    return {"f_train": f_train, "f_val": f_val, "y_train": [it.label for it in train],
            "y_val": [it.label for it in val], "s_val": s_val, "layer": layer, "v_train": v_train, "v_val": v_val}


# ---------------------------------------------------------------- in the library (beside the task's profile)
def head_files(task: str) -> tuple[str, str]:
    """File names of a task's head inside its adapter's data folder (named like its profile)."""
    from ..router.store import task_files

    return task_files("head", task)


def stage_head(tx: Any, adapter: str, task: str, head: FeatureHead | None) -> None:
    """Stage ``task``'s head under ``adapter`` (None: the task has none), dropping any older one."""
    from ..router.store import drop_profile

    old = tx.manifest["tasks"].get(task, {}).get("adapter")
    # a file written again is replaced by the install, never listed for removal as well (a plan
    # applied again after a crash would remove the installed file)
    for a in {old, adapter} - ({adapter} if head is not None else set()):
        if a and a in tx.manifest["adapters"]:
            drop_profile(tx, a, task, kind="head")
    if head is not None:
        tensors_name, meta_name = head_files(task)
        tx.write_tensors(adapter, tensors_name, head.tensors())
        tx.write_json(adapter, meta_name, head.meta())


def load_head(library: Any, task: str) -> FeatureHead | None:
    """The stored head of ``task`` (None: the adapter alone answers it)."""
    adapter = library.adapter_of(task)
    tensors_name, meta_name = head_files(task)
    if f"data/{adapter}/{tensors_name}" not in library.adapters[adapter].get("files", {}):
        return None
    tensors, meta = library.read_tensors(adapter, tensors_name), library.read_json(adapter, meta_name)
    if tensors is None or meta is None:
        return None
    return FeatureHead.from_stored(meta, tensors)
