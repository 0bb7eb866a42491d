"""Routing single inputs that arrive without a task id.

Each stored task is a class whose examples' backbone features were kept in its profile; a linear
discriminant with one shared, Ledoit-Wolf-shrunk covariance (scikit-learn's LDA) gives the posterior
over tasks for a new input's features. Only tasks that take as many fields as the input has
(pairs are written ``first ||| second``) are eligible. The features come from the same early-exit
forward the profiles used, so routing costs a fraction of one scoring pass.

Open set: an input far from every stored task is *unknown* rather than sent to the nearest one.
Its novelty is the squared Mahalanobis distance to each eligible task's mean (one shared,
Ledoit-Wolf-shrunk covariance), divided by that task's threshold: the ``quantile`` of the
distances of the task's own examples *held out* from the fit (each half of every task's examples
scored by a model fitted on the other halves; distances of fitted examples are far too small in
this many dimensions). Novelty above 1 for every eligible task: unknown.
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
    novelty: float | None = None  # distance to the nearest eligible task over its threshold (> 1: unknown)

    @property
    def known(self) -> bool:
        return self.novelty is None or self.novelty <= 1.0


DEFAULT_QUANTILE = 0.99


class NoveltyModel:
    """Squared Mahalanobis distances to each task's mean, and per-task thresholds from held-out halves."""

    def __init__(self, examples: Sequence[np.ndarray], quantile: float = DEFAULT_QUANTILE, seed: int = 0) -> None:
        xs = [np.asarray(x, dtype=np.float64) for x in examples]
        self.means, self.precision = _fit(xs)
        rng = np.random.RandomState(seed)
        halves = [np.array_split(rng.permutation(len(x)), 2) for x in xs]
        held: list[list[float]] = [[] for _ in xs]
        for side in (0, 1):
            fit_on = [x[h[side]] for x, h in zip(xs, halves)]
            if any(len(f) < 2 for f in fit_on):
                continue
            means, precision = _fit(fit_on)
            for k, (x, h) in enumerate(zip(xs, halves)):
                d = _distances(x[h[1 - side]], means[k: k + 1], precision)[:, 0]
                held[k].extend(d.tolist())
        # a task with too few examples to hold any out is never called unknown
        self.thresholds = np.array([np.quantile(h, quantile) if len(h) >= 4 else np.inf for h in held])

    def novelty(self, feats: np.ndarray) -> np.ndarray:
        """(n, tasks): each input's squared distance to each task's mean over the task's threshold."""
        return _distances(np.asarray(feats, dtype=np.float64), self.means, self.precision) / self.thresholds


def _fit(xs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    means = np.stack([x.mean(0) for x in xs])
    resid = np.vstack([x - m for x, m in zip(xs, means)])
    cov = LedoitWolf(assume_centered=True).fit(resid).covariance_
    return means, np.linalg.pinv(cov, hermitian=True)


def _distances(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    diff = x[:, None, :] - means[None, :, :]  # (n, tasks, dim)
    return np.einsum("nkd,de,nke->nk", diff, precision, diff)


class InputRouter:
    """Nearest task by Mahalanobis distance (shared covariance), as calibrated LDA posteriors."""

    def __init__(self, profiles: Sequence[TaskProfile], quantile: float = DEFAULT_QUANTILE) -> None:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        usable = [p for p in profiles if p.features.examples is not None and p.features.n_examples >= 2]
        if not usable:
            raise ValueError("no stored task has example features to route by")
        self.profiles = usable
        self.tasks = [p.task for p in usable]
        x = np.vstack([p.features.examples for p in usable]).astype(np.float64)
        y = np.concatenate([[i] * p.features.n_examples for i, p in enumerate(usable)])
        self.single = len(usable) == 1
        self.novelty_model = NoveltyModel([p.features.examples for p in usable], quantile)
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
        novelty = self.novelty_model.novelty(feats)
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
            out.append(RoutedInput(self.tasks[j], self.profiles[j].adapter, float(post[j]),
                                   float(novelty[i][ok].min())))
        return out


def count_fields(text: str) -> int:
    """How many fields an input has (pairs are separated by ``|||``)."""
    return text.count(PAIR_JOIN.strip()) + 1
