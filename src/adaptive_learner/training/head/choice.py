"""How a task's head is decided: the encoder views it adds, its L2 strength, temperatures and its mix with
the adapter, each by cross-validation on the training part or a test on the held-out part. Pure functions of
arrays (:func:`decide_head`), so a benchmark that kept the arrays replays the decision exactly."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .model import FeatureHead, _mixed, _softmax, fit_head
from .views import VIEWS

MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_VIEWS = ("text", "pair")  # those it considers by default (TrainConfig.head_views)
FREE_VIEWS = ("pair",)  # those the gated rule chooses by their loss alone (the others must pass the gate)
MIX_RULES = ("gated", "held-out", "loss", "gated-loss")  # or a number in [0, 1]
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
    better one alone. ``loss``: the mix in :data:`MIXES` with the lowest held-out log loss (the linear pool's
    weight fitted by likelihood on the grid). ``gated-loss``: 0.5 unless the better one alone (by mean log loss)
    beats the equal mix on the per-example log losses by a paired z test at ``GATE_Z``, then that one alone."""
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
    elif rule == "loss":
        best = min(MIXES, key=lambda m: (round(table[f"{m:g}"]["log_loss"], 6), -m))
    elif rule == "gated-loss":
        best, table["loss_gate"] = _loss_gate(p_adapter, p_head, y)
    else:
        best = float(check_mix_rule(rule))
    return best, table


def _loss_gate(p_adapter: np.ndarray, p_head: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, Any]]:
    """``gated-loss``: the one alone (adapter: 1, head: 0) with the lower held-out log loss replaces the equal
    mix when its per-example log losses are lower than the mix's by a paired z test at ``GATE_Z``."""
    rows = np.arange(len(y))
    loss = {m: -np.log(_mixed(p_adapter, p_head, m)[rows, y]) for m in (0.0, 0.5, 1.0)}
    alone = min((1.0, 0.0), key=lambda m: loss[m].mean())
    d = loss[0.5] - loss[alone]  # > 0 where the one alone does better than the mix
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    if sd > 0:
        z = float(d.mean() / (sd / np.sqrt(len(d))))
    else:  # every example the same difference: certain when there is one
        z = float("inf") if len(d) > 1 and d.mean() > 0 else 0.0
    return (alone if z >= GATE_Z else 0.5), {"alone": alone, "z": round(z, 3) if np.isfinite(z) else "inf"}


def no_evidence_mix(rule: str) -> float:
    """The mix ``rule`` gives when no example is held out to tell the adapter and the head apart: the equal mix
    for ``gated`` (its answer while the gate is not passed) and ``held-out`` (no accuracy to rank the mixes by),
    the number itself for a fixed mix."""
    return 0.5 if check_mix_rule(rule) in MIX_RULES else float(rule)


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
    of the one it divides, only how far it outweighs the other in the mix. With no held-out examples (``y_val``
    empty) the mix is :func:`no_evidence_mix`'s and the head is fitted on the training part. Pure: a benchmark
    that kept these arrays replays the decision exactly."""
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
    if calibrate == "both" and len(y_val):  # the adapter's temperature needs held-out answers
        t_adapter = round(fit_temperature(np.stack([_log_softmax(np.asarray(s, dtype=np.float64)) for s in s_val]),
                                          y_val), 4)
        report["adapter_temperature"] = t_adapter
    if len(y_val):
        head_val = fit_head(f_train, y_train, n_labels, layer)
        mix, table = choose_mix([np.asarray(s) / t_adapter for s in s_val], head_val.log_probs(f_val) / t_head, y_val,
                                rule)
        report = {"mix": mix, "rule": rule, "layer": layer, **report, "held_out": table}
    else:  # nothing held out (a task too small to spare any): what the rule says without evidence
        mix = no_evidence_mix(rule)
        report = {"mix": mix, "rule": rule, "layer": layer, **report,
                  "reason": "no held-out examples: the rule's mix without evidence"}
    head = None
    if mix < 1.0:
        head = fit_head(np.concatenate([f_train, f_val]), list(y_train) + list(y_val), n_labels, layer)
        head.weight, head.bias = head.weight / t_head, head.bias / t_head
        head.mix, head.views, head.adapter_temperature = mix, views, t_adapter
    return head, report
