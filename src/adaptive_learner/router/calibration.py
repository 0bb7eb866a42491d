"""Turning per-candidate evidence into a calibrated probability of "reuse this one", and checking it.

A ``Combiner`` holds one small logistic regression ("head") per set of available signals (all of
them; without the trial, when the candidate has no trained adapter yet; description and labels
only, when a task brings too few examples; and every subset, for ablations). Heads are fitted on
synthetic (new task, stored task) pairs built from the catalog, where "same family" is the truth.

The reuse threshold is the cost-optimal cut of a calibrated probability: reuse when
p >= c / (1 + c), c being the cost of a wrong reuse relative to a missed one (3 by default, so
3/4: a wrong reuse damages an adapter that serves other tasks; a missed one costs some memory). That cut is only right if the probabilities are calibrated, which is what the fitting is for
and what the benchmark checks (ECE). The cut that minimises the cost on held-out pairs
(leave-one-task-out) is recorded beside it as ``threshold_oof``; with seven families it swings
between about 0.3 and 0.7 from fold to fold, so it is reported, not used. Everything is plain
numbers in JSON: no pickle.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SIGNALS: dict[str, list[str]] = {
    "examples": ["conformal_p", "two_sample_p", "log_effect"],
    "description": ["desc_cos"],
    "labels": ["label_cos", "same_n_labels", "same_fields"],
    "content": ["content_cos", "content_nn"],
    "label_names": ["label_match"],
    "gradient": ["grad_cos"],
    "trial": ["trial_gain", "trial_acc_gain"],
    "structure": ["len_ratio_gap", "pair_cos_gap"],  # pair tasks only: how the two fields relate
    "relation": ["len_ratio_d", "pair_cos_d"],  # the same on the two tasks' own spread (standardised gaps)
}
# signals that only some (new task, stored task) pairs have: a combiner needs heads without them as well
# (structure, relation: two pair tasks; the label signals: names that say what the classes are, not 0/1 or LABEL_2)
PARTIAL_SIGNALS = ("structure", "relation", "label_names", "labels")
DEFAULT_COMBINER = Path(__file__).with_name("default_combiner.json")


def signals_of(evidence: dict[str, float]) -> frozenset[str]:
    """The signals whose features are all present in an evidence dict."""
    return frozenset(s for s, feats in SIGNALS.items() if all(f in evidence and np.isfinite(evidence[f])
                                                              for f in feats))


def present_signals(rows: Sequence[dict[str, float]]) -> frozenset[str]:
    """The signals complete in at least one evidence row."""
    return frozenset().union(*(signals_of(r) for r in rows)) if rows else frozenset()


@dataclass
class Head:
    """A logistic regression over the features of a set of signals (standardised inputs)."""

    signals: list[str]
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float = 0.5
    n_fit: int = 0
    threshold_oof: float | None = None  # the cost-minimising cut on held-out pairs (a diagnostic)

    def logit(self, evidence: dict[str, float]) -> float:
        x = (np.array([evidence[f] for f in self.features]) - np.array(self.mean)) / np.array(self.scale)
        return float(x @ np.array(self.coef) + self.intercept)

    def probability(self, evidence: dict[str, float]) -> float:
        return float(1.0 / (1.0 + np.exp(-self.logit(evidence))))


@dataclass
class Combiner:
    """Heads by signal set, and where they came from."""

    heads: dict[str, Head]
    info: dict[str, Any] = field(default_factory=dict)

    def head_for(self, available: frozenset[str]) -> Head | None:
        """The head using the most signals among those available (exact match first)."""
        key = _key(available)
        if key in self.heads:
            return self.heads[key]
        fitting = [h for h in self.heads.values() if set(h.signals) <= available]
        return max(fitting, key=lambda h: len(h.signals)) if fitting else None

    def to_dict(self) -> dict[str, Any]:
        return {"heads": {k: h.__dict__ for k, h in self.heads.items()}, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Combiner":
        return cls({k: Head(**h) for k, h in d["heads"].items()}, dict(d.get("info", {})))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_COMBINER) -> "Combiner":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _key(signals: Sequence[str] | frozenset[str]) -> str:
    return "+".join(sorted(signals))


def fit_head(rows: Sequence[dict[str, float]], labels: Sequence[int], signals: Sequence[str],
             c: float = 1.0) -> Head | None:
    """Fit one head on the rows that have all its features; None if one class is missing."""
    from sklearn.linear_model import LogisticRegression

    feats = [f for s in sorted(signals) for f in SIGNALS[s]]
    keep = [i for i, r in enumerate(rows) if all(f in r and np.isfinite(r[f]) for f in feats)]
    y = np.array([labels[i] for i in keep])
    if len(set(y.tolist())) < 2:
        return None
    x = np.array([[rows[i][f] for f in feats] for i in keep], dtype=np.float64)
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-6] = 1.0
    model = LogisticRegression(C=c, max_iter=1000).fit((x - mean) / scale, y)
    return Head(sorted(signals), feats, mean.tolist(), scale.tolist(), model.coef_[0].tolist(),
                float(model.intercept_[0]), n_fit=len(keep))


def fit_combiner(rows: Sequence[dict[str, float]], labels: Sequence[int], groups: Sequence[str],
                 signal_sets: Sequence[Sequence[str]] | None = None, cost_false_reuse: float = 3.0,
                 info: dict[str, Any] | None = None) -> Combiner:
    """Fit a head per signal set; its threshold is the cost-optimal cut c / (1 + c).

    ``cost_false_reuse`` (c) is the cost of reusing a wrong adapter relative to a missed reuse: a
    wrong reuse damages an adapter, a missed one only costs a little memory and transfer.
    ``groups`` names the new task of each row; the out-of-fold cut (folds leave whole tasks out) is
    kept as ``threshold_oof`` for comparison.
    """
    present = present_signals(rows)
    if signal_sets is None:
        base = sorted(present)
        signal_sets = [s for n in range(1, len(base) + 1) for s in itertools.combinations(base, n)]
    heads = {}
    for sigs in signal_sets:
        head = fit_head(rows, labels, sigs)
        if head is None:
            continue
        head.threshold = cost_false_reuse / (1.0 + cost_false_reuse)
        oof, truth = out_of_fold(rows, labels, groups, sigs)
        if len(oof):
            head.threshold_oof = choose_threshold(oof, truth, cost_false_reuse)
        heads[_key(sigs)] = head
    return Combiner(heads, {**(info or {}), "cost_false_reuse": cost_false_reuse, "n_rows": len(rows)})


def out_of_fold(rows: Sequence[dict[str, float]], labels: Sequence[int], groups: Sequence[str],
                signals: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for each usable row from a head fitted without that row's task (leave-one-task-out)."""
    feats = [f for s in signals for f in SIGNALS[s]]
    probs, truth = [], []
    for g in sorted(set(groups)):
        train = [i for i, gi in enumerate(groups) if gi != g]
        test = [i for i, gi in enumerate(groups) if gi == g and all(f in rows[i] for f in feats)]
        head = fit_head([rows[i] for i in train], [labels[i] for i in train], signals)
        if head is None or not test:
            continue
        probs.extend(head.probability(rows[i]) for i in test)
        truth.extend(labels[i] for i in test)
    return np.array(probs), np.array(truth)


def choose_threshold(probs: np.ndarray, truth: np.ndarray, cost_false_reuse: float) -> float:
    """The probability cut with the least total cost on held-out pairs (midpoint between neighbours)."""
    cands = np.unique(np.concatenate([[0.5], probs]))
    best, best_cost = 0.5, float("inf")
    for t in cands:
        fp = float(((probs >= t) & (truth == 0)).sum())
        fn = float(((probs < t) & (truth == 1)).sum())
        cost = cost_false_reuse * fp + fn
        if cost < best_cost - 1e-9:
            best, best_cost = float(t), cost
    above = probs[probs >= best]
    below = probs[probs < best]
    if len(below):
        best = float((best + below.max()) / 2) if len(above) else best
    return best


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE: the |accuracy - confidence| gap per equal-width confidence bin, weighted by the bin's share."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if len(conf) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(hit[m].mean() - conf[m].mean())
    return float(total)
