"""Routing single inputs that arrive without a task id.

Each stored task is a class whose examples' backbone features were kept in its profile; a linear
discriminant with one shared, Ledoit-Wolf-shrunk covariance (scikit-learn's LDA) gives the posterior
over tasks for a new input's features. Only tasks that take as many fields as the input has
(pairs are written ``first ||| second``) are eligible. The features come from the same early-exit
forward the profiles used, so routing costs a fraction of one scoring pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..features import PAIR_JOIN
from .evidence import TaskProfile


@dataclass
class RoutedInput:
    """Where one input goes."""

    task: str
    adapter: str
    confidence: float


class InputRouter:
    """Nearest task by Mahalanobis distance (shared covariance), as calibrated LDA posteriors."""

    def __init__(self, profiles: Sequence[TaskProfile]) -> None:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        usable = [p for p in profiles if p.features.examples is not None and p.features.n_examples >= 2]
        if not usable:
            raise ValueError("no stored task has example features to route by")
        self.profiles = usable
        self.tasks = [p.task for p in usable]
        x = np.vstack([p.features.examples for p in usable]).astype(np.float64)
        y = np.concatenate([[i] * p.features.n_examples for i, p in enumerate(usable)])
        self.single = len(usable) == 1
        if not self.single:
            self.lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto",
                                                  priors=np.full(len(usable), 1.0 / len(usable)))
            self.lda.fit(x, y)

    def log_posterior(self, feats: np.ndarray) -> np.ndarray:
        """(n, tasks) log posterior over the stored tasks, before the field-count constraint."""
        if self.single:
            return np.zeros((len(feats), 1))
        return self.lda.predict_log_proba(np.asarray(feats, dtype=np.float64))

    def route(self, feats: np.ndarray, n_fields: Sequence[int] | None = None) -> list[RoutedInput | None]:
        """The task, adapter and posterior confidence for each input; None where no task takes its fields."""
        logp = self.log_posterior(feats)
        out: list[RoutedInput | None] = []
        fields = np.array([p.features.n_fields for p in self.profiles])
        for i, row in enumerate(logp):
            ok = np.ones(len(row), dtype=bool) if n_fields is None else fields == n_fields[i]
            if not ok.any():
                out.append(None)
                continue
            masked = np.where(ok, row, -np.inf)
            post = np.exp(masked - masked.max())
            post /= post.sum()
            j = int(np.argmax(post))
            out.append(RoutedInput(self.tasks[j], self.profiles[j].adapter, float(post[j])))
        return out


def count_fields(text: str) -> int:
    """How many fields an input has (pairs are separated by ``|||``)."""
    return text.count(PAIR_JOIN.strip()) + 1
