"""The original design's router, kept as a baseline: cosine to a profile per adapter, softmax, 0.4.

Each adapter's profile is the unit vector of its tasks' mean backbone feature joined with their
mean description embedding; a new task is compared the same way; the cosines go through a softmax
over the K adapters, and the top adapter is reused when its softmax probability reaches 0.4. A
softmax over K similarities flattens as K grows, so this router stops reusing once the library
holds a handful of adapters; with one or two adapters it reuses every time. Inputs are routed to
the task whose mean feature has the highest cosine.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..features import TaskFeatures
from .decision import AnswerTrial, CandidateScore, RouteDecision, Trial
from .evidence import TaskProfile
from .routing import RoutedInput

SOFTMAX_THRESHOLD = 0.4


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def profile_vector(feats: Sequence[TaskFeatures]) -> np.ndarray:
    """The concatenated, normalised mean example feature and mean description embedding."""
    parts = []
    ex = [f.examples.mean(0) for f in feats if f.examples is not None]
    if ex:
        parts.append(_unit(np.mean(ex, 0)))
    desc = [f.description for f in feats if f.description is not None]
    if desc:
        parts.append(_unit(np.mean(desc, 0)))
    return _unit(np.concatenate(parts)) if parts else np.zeros(1)


class SoftmaxThresholdRouter:
    """Reuse the argmax adapter when softmax(cosines) of it is at least 0.4."""

    name = "softmax-threshold"

    def __init__(self, threshold: float = SOFTMAX_THRESHOLD) -> None:
        self.threshold = threshold

    def decide(self, probe: TaskFeatures, profiles: Sequence[TaskProfile], trial: Trial | None = None,
               answer_trial: AnswerTrial | None = None) -> RouteDecision:
        """Decide for ``probe`` against the stored profiles (``trial`` and ``answer_trial`` are ignored: the
        original had neither)."""
        if not profiles:
            return RouteDecision(probe.task, "new", None, 1.0, [], "the library is empty: a new adapter",
                                 self.threshold, self.name)
        adapters = sorted({p.adapter for p in profiles})
        vec = profile_vector([probe])
        cos = np.array([float(vec @ profile_vector([p.features for p in profiles if p.adapter == a]))
                        for a in adapters])
        prob = np.exp(cos - cos.max())
        prob /= prob.sum()
        order = np.argsort(-prob)
        cands = [CandidateScore(adapters[i], "", float(prob[i]), {"cosine": float(cos[i])}) for i in order]
        best = cands[0]
        if best.probability >= self.threshold:
            why = f"reuse {best.adapter}: softmax probability {best.probability:.2f} >= {self.threshold}"
            return RouteDecision(probe.task, "reuse", best.adapter, best.probability, cands, why, self.threshold,
                                 self.name)
        why = f"new adapter: top softmax probability {best.probability:.2f} < {self.threshold}"
        return RouteDecision(probe.task, "new", None, 1.0 - best.probability, cands, why, self.threshold, self.name)


class CosineInputRouter:
    """The baseline's per-input routing: the task whose mean feature is closest in cosine."""

    def __init__(self, profiles: Sequence[TaskProfile]) -> None:
        usable = [p for p in profiles if p.features.examples is not None]
        self.profiles = usable
        self.means = np.stack([_unit(p.features.examples.mean(0)) for p in usable])

    def route(self, feats: np.ndarray, n_fields: Sequence[int] | None = None) -> list[RoutedInput | None]:
        """Top-cosine task for each input among tasks with as many fields, its softmax share as the confidence."""
        x = np.asarray(feats, dtype=np.float64)
        cos = (x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)) @ self.means.T
        fields = np.array([p.features.n_fields for p in self.profiles])
        out: list[RoutedInput | None] = []
        for i, row in enumerate(cos):
            ok = np.ones(len(row), dtype=bool) if n_fields is None else fields == n_fields[i]
            if not ok.any():
                out.append(None)
                continue
            row = np.where(ok, row, -np.inf)
            p = np.exp(row - row.max())
            p /= p.sum()
            j = int(np.argmax(row))
            out.append(RoutedInput(self.profiles[j].task, self.profiles[j].adapter, float(p[j])))
        return out
