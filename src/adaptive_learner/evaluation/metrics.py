"""Continual-learning metrics: pure functions over an accuracy matrix.

``R[i][j]`` is the accuracy on task j after training on task i (T x T); ``b[j]`` is the untouched
backbone's accuracy on task j (the zero-shot row). NaN entries (not measured) are skipped.
"""

from __future__ import annotations

import numpy as np


def average_accuracy(R: np.ndarray) -> float:
    """Mean accuracy over all tasks after the last task."""
    return float(np.nanmean(R[-1]))


def learning_accuracy(R: np.ndarray) -> float:
    """LA (Riemer et al., 2019): mean over j of R[j][j], each task's accuracy right after it was trained.

    How well each task was learned, apart from what later tasks did to it: with T tasks,
    AvgAcc = LA + (T-1)/T * BWT, so a gap in AvgAcc splits into learning (LA) and forgetting (BWT).
    NaN unless every task was scored right after its training (joint training scores only at the end)."""
    diag = np.diag(R).astype(float)
    return float(diag.mean()) if diag.size and not np.isnan(diag).any() else float("nan")


def backward_transfer(R: np.ndarray) -> float:
    """BWT: mean over j < T-1 of R[T-1][j] - R[j][j] (negative = forgetting)."""
    T = R.shape[0]
    if T < 2:
        return float("nan")
    vals = [R[-1, j] - R[j, j] for j in range(T - 1)]
    return _mean(vals)


def forward_transfer(R: np.ndarray, b: np.ndarray) -> float:
    """FWT: mean over j >= 1 of R[j-1][j] - b[j] (what earlier tasks did for a task not yet seen)."""
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return _mean([R[j - 1, j] - b[j] for j in range(1, T)])


def forgetting(R: np.ndarray) -> float:
    """Mean over j < T-1 of the best accuracy ever reached on j (from its own step on) minus the final one."""
    T = R.shape[0]
    if T < 2:
        return float("nan")
    vals = []
    for j in range(T - 1):
        col = R[j: T - 1, j]
        vals.append(np.nan if np.all(np.isnan(col)) else np.nanmax(col) - R[-1, j])
    return _mean(vals)


def all_metrics(R: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every metric at once, keyed as in results.json."""
    return {"avg_acc": average_accuracy(R), "learning_acc": learning_accuracy(R), "bwt": backward_transfer(R),
            "fwt": forward_transfer(R, b),
            "forgetting": forgetting(R), "zero_shot_avg": float(np.nanmean(b))}


def _mean(vals: list[float]) -> float:
    arr = np.asarray(vals, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")
