"""Paired bootstrap intervals for differences in average accuracy: pure functions over 0/1 vectors.

Every strategy of a bench is scored on the same test examples for a given seed, so two strategies
can be compared example by example. ``paired_bootstrap`` resamples the test examples of each task
*within each group* (a group is a seed: its runs, whatever the task order, share the test
examples), applies the same resample to both strategies, and recomputes the difference of their
average accuracies (the mean over runs of the mean over tasks of the accuracy). The interval is
the percentile interval of those differences. It measures how much the difference could move with
another draw of test examples, the trained models held fixed; the spread over seeds (training
randomness) is reported beside it as the standard deviation.

The statistic is linear in the per-example outcomes, so a resample is a vector of counts per
example (multinomial), and all resamples are one matrix product per (group, task).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

Correct = Mapping[str, Sequence[int] | np.ndarray]  # task name -> 1/0 (right/wrong) per test example


@dataclass
class PairedDiff:
    """A difference ``a - b`` of average accuracy with its paired bootstrap interval."""

    mean: float  # the observed difference (mean over the paired runs)
    low: float
    high: float
    level: float  # e.g. 0.95
    resamples: int
    runs: int  # paired runs it is computed over

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (the difference is not test-sample noise)."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def wilson(acc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Two-sided Wilson score interval of an accuracy over n examples ((nan, nan) for none)."""
    if n <= 0:
        return float("nan"), float("nan")
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def avg_accuracy(correct: Correct) -> float:
    """Mean over tasks of the fraction right: AvgAcc of a final row from its per-example outcomes."""
    return float(np.mean([np.mean(np.asarray(v, dtype=float)) for v in correct.values()]))


def _weights(a: Sequence[Correct], b: Sequence[Correct], groups: Sequence[Hashable]
             ) -> dict[tuple[Hashable, str], np.ndarray]:
    """Per (group, task), each example's contribution to ``AvgAcc(a) - AvgAcc(b)`` averaged over runs."""
    if not (len(a) == len(b) == len(groups)) or not a:
        raise ValueError("give one (a, b, group) per paired run, at least one")
    out: dict[tuple[Hashable, str], np.ndarray] = {}
    for ra, rb, g in zip(a, b, groups):
        if set(ra) != set(rb):
            raise ValueError(f"paired runs cover different tasks: {sorted(ra)} vs {sorted(rb)}")
        for task in ra:
            va, vb = np.asarray(ra[task], dtype=float), np.asarray(rb[task], dtype=float)
            if va.shape != vb.shape or va.ndim != 1 or not va.size:
                raise ValueError(f"task {task}: the two strategies were not scored on the same examples")
            d = (va - vb) / (va.size * len(ra) * len(a))
            key = (g, task)
            if key in out and out[key].shape != d.shape:
                raise ValueError(f"task {task}: runs of group {g!r} have different test examples")
            out[key] = out[key] + d if key in out else d
    return out


def paired_bootstrap(a: Sequence[Correct], b: Sequence[Correct], groups: Sequence[Hashable],
                     resamples: int = 2000, level: float = 0.95, seed: int = 0) -> PairedDiff:
    """The paired bootstrap interval of ``AvgAcc(a) - AvgAcc(b)``.

    ``a[i]`` and ``b[i]`` are the per-example outcomes of two strategies in the same run setting
    (seed, task order); ``groups[i]`` names the test sample it was scored on (the seed): runs of one
    group share one resample of each task's examples, and both strategies always share it.
    Seeded: the same inputs give the same interval.
    """
    if resamples < 1 or not 0 < level < 1:
        raise ValueError("resamples must be >= 1 and level in (0, 1)")
    weights = _weights(a, b, groups)
    rng = np.random.default_rng(seed)
    diffs = np.zeros(resamples)
    for key in sorted(weights, key=repr):  # a fixed order: the same draws for the same inputs
        w = weights[key]
        counts = rng.multinomial(w.size, np.full(w.size, 1.0 / w.size), size=resamples)
        diffs += counts @ w
    observed = float(sum(w.sum() for w in weights.values()))
    tail = (1.0 - level) / 2
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    # float sums of identical outcomes can leave ~1e-17 instead of 0: round to what accuracies can resolve
    return PairedDiff(_tidy(observed), _tidy(low), _tidy(high), level, resamples, len(a))


def bwt_paired(runs: Sequence[Mapping[str, Any]], groups: Sequence[Hashable], resamples: int = 2000,
               level: float = 0.95, seed: int = 0) -> PairedDiff | None:
    """BWT with its paired bootstrap interval over ``runs`` (each a run's ``results.json``, or a dict with its
    ``tasks``, ``final_correct`` and ``learned_correct``): per stage j before the last, the final outcomes of
    stage j's task minus its outcomes right after stage j, averaged over stages and runs, the examples of each
    stage resampled within each group (seed). None when a run lacks the outcomes of a stage (results written
    before they were recorded, or a strategy scored only at the end)."""
    a: list[Correct] = []
    b: list[Correct] = []
    for run in runs:
        tasks, final, learned = run.get("tasks") or [], run.get("final_correct") or {}, run.get("learned_correct")
        if len(tasks) < 2 or not learned or len(learned) != len(tasks):
            return None
        ra, rb = {}, {}
        for j, task in enumerate(tasks[:-1]):
            if learned[j] is None or not final.get(task) or len(learned[j]) != len(final[task]):
                return None
            ra[f"{j}:{task}"], rb[f"{j}:{task}"] = final[task], learned[j]
        a.append(ra)
        b.append(rb)
    return paired_bootstrap(a, b, groups, resamples, level, seed) if a else None


def _tidy(x: float) -> float:
    return float(round(float(x), 12)) + 0.0  # + 0.0 turns -0.0 into 0.0


RunKey = tuple[str, int, int]  # (strategy, seed, order)


def compare(correct: Mapping[RunKey, Correct], a: str, b: str, resamples: int = 2000, level: float = 0.95,
            seed: int = 0) -> PairedDiff | None:
    """``a`` against ``b`` over every (seed, order) where both have per-example outcomes, resampled
    within seeds; None where no run pairs up (e.g. results written before outcomes were recorded)."""
    pairs = sorted((s, o) for (name, s, o) in correct if name == a and (b, s, o) in correct)
    if not pairs:
        return None
    return paired_bootstrap([correct[(a, s, o)] for s, o in pairs], [correct[(b, s, o)] for s, o in pairs],
                            [s for s, _ in pairs], resamples, level, seed)
