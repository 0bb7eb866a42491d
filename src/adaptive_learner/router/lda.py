"""Linear discriminant analysis with Ledoit-Wolf shrinkage, as the per-input router fits it.

The same model as scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=...)``
(each class's covariance estimated on its standardised examples with the Ledoit-Wolf shrinkage, the
prior-weighted sum of them shared; the test suite checks the posteriors against scikit-learn's), computed
the way this router's data are shaped: a few hundred examples in about a thousand dimensions. Each class's
shrinkage needs only its examples' Gram matrix (n x n, not d x d), the pooled covariance is one weighted
product, and the discriminant is one linear solve of the (positive definite) pooled covariance instead of
an SVD least-squares. Building the input router, four such fits and more (every ``alearn predict``
without ``--task``), took about ten times as long through scikit-learn (BENCHMARKS.md, session 33), and
the import of scikit-learn was a second or two of it.
"""

from __future__ import annotations

import numpy as np

_EPS = np.finfo(np.float64).eps
_LOG_SMALLEST = float(np.log(np.finfo(np.float64).smallest_normal))


def _scale(x: np.ndarray) -> np.ndarray:
    """Per column standard deviation, 1 where a column is constant (scikit-learn's StandardScaler rule)."""
    n = len(x)
    mean, var = x.mean(0), x.var(0)
    constant = var <= n * _EPS * var + (n * mean * _EPS) ** 2
    return np.where(constant, 1.0, np.sqrt(var))


def ledoit_wolf_shrinkage(z: np.ndarray) -> tuple[float, float]:
    """(shrinkage, mu) of the Ledoit-Wolf estimate for centred rows ``z``: the estimate is
    ``(1 - shrinkage) * z.T @ z / n + shrinkage * mu * I``. From the n x n Gram matrix: the sums
    scikit-learn takes over d x d products are the same sums over the examples."""
    n, d = z.shape
    if n == 1:
        return 0.0, float((z ** 2).sum() / d)
    row = (z ** 2).sum(1)  # each example's squared norm
    trace = row.sum() / n  # trace of the empirical covariance
    mu = trace / d
    gram = z @ z.T
    delta_ = float((gram ** 2).sum()) / n ** 2  # squared Frobenius norm of the empirical covariance
    beta_ = float((row ** 2).sum())  # sum of all entries of (z**2).T @ (z**2)
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu ** 2) / d
    beta = min(beta, delta)
    return (0.0 if beta == 0 else beta / delta), mu


class ShrunkLDA:
    """``fit(x, y)`` with classes 0..K-1; ``predict_log_proba(x)`` as scikit-learn's (posteriors under the
    given priors, clipped at the smallest normal float)."""

    def __init__(self, priors: np.ndarray) -> None:
        self.priors = np.asarray(priors, dtype=np.float64)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ShrunkLDA":
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y)
        k, d = len(self.priors), x.shape[1]
        means = np.zeros((k, d))
        centred = np.empty_like(x)
        weights = np.zeros(len(x))
        diagonal = np.zeros(d)
        for c in range(k):
            rows = y == c
            xc = x[rows]
            means[c] = xc.mean(0)
            z = centred[rows] = xc - means[c]
            scale = _scale(xc)
            shrinkage, mu = ledoit_wolf_shrinkage(z / scale)
            # the class covariance in the original units: (1 - s) * empirical + s * mu * diag(scale^2)
            weights[rows] = self.priors[c] * (1.0 - shrinkage) / rows.sum()
            diagonal += self.priors[c] * shrinkage * mu * scale ** 2
        a = centred * np.sqrt(weights)[:, None]
        covariance = a.T @ a
        covariance[np.diag_indices(d)] += diagonal
        try:
            self.coef_ = np.linalg.solve(covariance, means.T).T
        except np.linalg.LinAlgError:  # singular (no spread left to shrink): the least-norm solution, as lstsq
            self.coef_ = np.linalg.lstsq(covariance, means.T, rcond=None)[0].T
        self.intercept_ = -0.5 * np.einsum("kd,kd->k", means, self.coef_) + np.log(self.priors)
        return self

    def predict_log_proba(self, x: np.ndarray) -> np.ndarray:
        scores = np.asarray(x, dtype=np.float64) @ self.coef_.T + self.intercept_
        scores = scores - scores.max(1, keepdims=True)
        out = scores - np.log(np.exp(scores).sum(1, keepdims=True))
        return np.maximum(out, _LOG_SMALLEST)


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each example's fold, as scikit-learn's ``StratifiedKFold(folds, shuffle=True, random_state=seed)``
    assigns them: round robin over the sorted labels sets each fold's count of each class, shuffled within
    the class."""
    _, first, inverse = np.unique(np.asarray(y), return_index=True, return_inverse=True)
    y = np.unique(first, return_inverse=True)[1][inverse]  # classes numbered by first appearance
    rng = np.random.RandomState(seed)
    order = np.sort(y)
    k = len(first)
    allocation = np.asarray([np.bincount(order[i::folds], minlength=k) for i in range(folds)])
    out = np.empty(len(y), dtype=int)
    for c in range(k):
        assigned = np.arange(folds).repeat(allocation[:, c])
        rng.shuffle(assigned)
        out[y == c] = assigned
    return out
