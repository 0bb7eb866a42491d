"""Evidence that a new task matches one stored task, each on that candidate's own scale.

Nothing here compares candidates with each other: every number is a function of the new task and
one candidate (whitened by a covariance pooled over the other stored tasks), so it does not flatten
as the library grows.

* ``conformal_p``: the mean, over the new task's examples, of a conformal p-value: the example's
  Mahalanobis distance to the candidate's mean against the candidate's own leave-one-out distances.
  About 0.5 when the examples come from the candidate's distribution, near 0 when not.
* ``two_sample_p`` / ``log_effect``: a permutation two-sample test on the whitened means over the
  k examples, and the log ratio of the observed statistic to its permutation mean (0: same task).
* ``desc_cos`` / ``label_cos`` / ``grad_cos``: cosine similarities of the unit embeddings.
* ``same_n_labels`` / ``same_fields``: 1 when the label count / number of input fields agree.
* ``label_match``: the two label sets' names matched by meaning. The label signals (``label_match``,
  ``label_cos``, ``same_n_labels``, ``same_fields``) are left out, and ``label_names_uninformative`` set,
  when either task's names do not say what its classes are (``0``/``1``, ``LABEL_2``:
  ``features.label_names_informative``): equal names would otherwise read as a strong match between
  any two such tasks.
* ``trial_gain`` / ``trial_acc_gain``: from a trial of the candidate's adapter on the k examples
  (classification cross-entropy and accuracy, base model minus adapter); added by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..features import TaskFeatures, label_names_informative


@dataclass
class TaskProfile:
    """A stored task and the adapter that serves it."""

    task: str
    adapter: str
    features: TaskFeatures
    learned: bool | None = None  # did the adapter learn this task (held-out verdict)? None: not known


class FeatureSpace:
    """Whitening by the pooled within-task covariance of the library (Ledoit-Wolf shrinkage)."""

    def __init__(self, groups: Sequence[np.ndarray]) -> None:
        from sklearn.covariance import LedoitWolf

        usable = [g for g in groups if g is not None and len(g) >= 2]
        if not usable:
            raise ValueError("no task with two or more examples to estimate a covariance from")
        centred = np.vstack([g - g.mean(0) for g in usable]).astype(np.float64)
        cov = LedoitWolf(assume_centered=True).fit(centred).covariance_
        evals, evecs = np.linalg.eigh(cov)
        evals = np.maximum(evals, evals.max() * 1e-9)
        self.whitener = evecs / np.sqrt(evals)  # z = x @ whitener has identity within-task covariance

    def whiten(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.whitener


def conformal_p(z_probe: np.ndarray, z_cand: np.ndarray) -> float:
    """Mean conformal p-value of the probe examples against the candidate's leave-one-out distances."""
    n = len(z_cand)
    if n < 2:
        return float("nan")
    mean = z_cand.mean(0)
    # distance of each stored example to the mean of the other n-1 (closed form of leave-one-out)
    calib = (n / (n - 1)) ** 2 * ((z_cand - mean) ** 2).sum(1)
    scores = ((z_probe - mean) ** 2).sum(1)
    calib_sorted = np.sort(calib)
    ge = n - np.searchsorted(calib_sorted, scores, side="left")  # how many calibration scores >= each score
    return float(np.mean((1 + ge) / (n + 1)))


def two_sample(z_probe: np.ndarray, z_cand: np.ndarray, permutations: int, seed: int) -> tuple[float, float]:
    """Permutation p-value of the squared distance between whitened means, and log(observed / null mean)."""
    pooled = np.vstack([z_probe, z_cand])
    n_p, n = len(z_probe), len(pooled)
    observed = float(((z_probe.mean(0) - z_cand.mean(0)) ** 2).sum())
    rng = np.random.RandomState(seed)
    assign = np.zeros((permutations, n))
    for b in range(permutations):
        assign[b, rng.permutation(n)[:n_p]] = 1.0
    mean_p = assign @ pooled / n_p
    mean_c = (1 - assign) @ pooled / (n - n_p)
    null = ((mean_p - mean_c) ** 2).sum(1)
    p = (1 + int((null >= observed).sum())) / (permutations + 1)
    return p, float(np.log(max(observed, 1e-12) / max(null.mean(), 1e-12)))


MIN_EXAMPLES = 4  # fewer examples than this: no example or content signals (the heads without them decide)


def _cos(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def example_evidence(z_probe: np.ndarray, z_cand: np.ndarray, permutations: int, seed: int) -> dict[str, float]:
    """The example-feature signals for whitened probe and candidate examples."""
    p, effect = two_sample(z_probe, z_cand, permutations, seed)
    return {"conformal_p": conformal_p(z_probe, z_cand), "two_sample_p": p, "log_effect": effect}


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def content_evidence(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """What the inputs are about, in the sentence encoder's space (``TaskFeatures.inputs``).

    ``content_cos``: cosine of the two tasks' mean input embeddings; ``content_nn``: how close each
    input of the new task is to its nearest stored input (mean cosine) minus how close the stored
    inputs are to each other (mean leave-one-out nearest-neighbour cosine), so a tight stored task
    and a diffuse one are on the same scale. Both follow meaning rather than length or format,
    which the backbone's statistics mostly see (a long review and a short one of the same kind).
    """
    ua, ub = _unit_rows(a), _unit_rows(b)
    sims = ua @ ub.T
    inner = ub @ ub.T
    np.fill_diagonal(inner, -np.inf)
    own = float(np.mean(inner.max(axis=1))) if len(ub) > 1 else 1.0
    return {"content_cos": float(_cos(ua.mean(0), ub.mean(0))),
            "content_nn": float(np.mean(sims.max(axis=1))) - own}


def label_match(a: np.ndarray, b: np.ndarray) -> float:
    """Label sets matched by meaning: each label's best counterpart in the other set (cosine of the
    names' sentence embeddings), averaged both ways, so {positive, negative} and {liked it, did not
    like it} match though their names share no word, and a set with an extra label matches less."""
    s = _unit_rows(a) @ _unit_rows(b).T
    return float(0.5 * (s.max(axis=1).mean() + s.max(axis=0).mean()))


def relation_evidence(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How the two fields relate, compared on each pair of tasks' own scale: the gap between the two tasks'
    mean length ratio (and mean field cosine) over the pooled spread of both (a standardised mean difference,
    Cohen's d). The raw gaps (``len_ratio_gap``) mix the family's own variety in: within entailment a short
    hypothesis may follow one sentence or a paragraph, so its gaps are wide and its spread wide too; a
    paraphrase pair's fields are alike in both tasks, so its gaps are small and its spread small."""
    def d(x: np.ndarray, y: np.ndarray) -> float:
        spread = np.sqrt(0.5 * (np.var(x) + np.var(y)))
        return float(abs(np.mean(x) - np.mean(y)) / max(spread, 1e-3))
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return {"len_ratio_d": d(a[:, 0], b[:, 0]), "pair_cos_d": d(a[:, 1], b[:, 1])}


def _has_rows(x: np.ndarray | None) -> bool:
    return x is not None and len(x) > 0


def pair_evidence(probe: TaskFeatures, cand: TaskFeatures) -> dict[str, float]:
    """The embedding and format signals of one (new task, stored task) pair; absent ones are left out."""
    ev: dict[str, float] = {}
    if (probe.inputs is not None and cand.inputs is not None and len(probe.inputs) >= MIN_EXAMPLES
            and len(cand.inputs) >= 2):
        ev.update(content_evidence(probe.inputs, cand.inputs))
    # label names that only code an answer (0/1, LABEL_2) match any other such task: no label signals then
    named = label_names_informative(probe.label_names) and label_names_informative(cand.label_names)
    pairs = [("desc_cos", probe.description, cand.description), ("grad_cos", probe.gradient, cand.gradient)]
    if named:
        pairs.append(("label_cos", probe.labels, cand.labels))
    for key, a, b in pairs:
        c = _cos(a, b)
        if c is not None:
            ev[key] = c
    if _has_rows(probe.structure) and _has_rows(cand.structure):  # two pair tasks: do their fields relate alike?
        a, b = probe.structure.mean(axis=0), cand.structure.mean(axis=0)
        ev["len_ratio_gap"], ev["pair_cos_gap"] = float(abs(a[0] - b[0])), float(abs(a[1] - b[1]))
        ev.update(relation_evidence(probe.structure, cand.structure))
    if not named:
        ev["label_names_uninformative"] = 1.0
        return ev
    if probe.label_vecs is not None and cand.label_vecs is not None and len(probe.label_vecs) and len(cand.label_vecs):
        ev["label_match"] = label_match(probe.label_vecs, cand.label_vecs)
    if probe.labels is not None and cand.labels is not None:
        ev["same_n_labels"] = float(probe.n_labels == cand.n_labels)
        ev["same_fields"] = float(probe.n_fields == cand.n_fields)
    return ev


def whitening_for(index: int, groups: Sequence[np.ndarray | None]) -> tuple[FeatureSpace, np.ndarray] | None:
    """The whitening to test candidate ``index`` with, and the candidate examples to test.

    The covariance must not come from the two samples being compared, or the permutation test is
    biased (the within-sample covariance shrinks exactly the direction that separates them). So it
    is pooled over every *other* stored task; with no other task, the candidate's examples are split
    in half: one half gives the covariance, the other is tested.
    """
    own = groups[index]
    if own is None or len(own) < 2:
        return None
    others = [g for i, g in enumerate(groups) if i != index and g is not None and len(g) >= 2]
    if others:
        return FeatureSpace(others), own
    if len(own) < 4:
        return None
    half = len(own) // 2
    return FeatureSpace([own[:half]]), own[half:]


def evidence_for_all(probe: TaskFeatures, profiles: Sequence[TaskProfile], permutations: int = 200,
                     seed: int = 0, min_examples: int = MIN_EXAMPLES, cache: dict | None = None) -> list[dict[str, float]]:
    """Evidence of the probe against every stored task.

    ``cache`` (optional) keeps each candidate's whitening between calls with the same stored tasks,
    for benchmarks that ask thousands of questions of a few libraries.
    """
    groups = [p.features.examples for p in profiles]
    use_examples = probe.examples is not None and probe.n_examples >= min_examples
    names = tuple(p.task for p in profiles)
    out = []
    for i, prof in enumerate(profiles):
        ev = pair_evidence(probe, prof.features)
        fit = None
        if use_examples:
            key = (names, i)
            if cache is None or key not in cache:
                fit = whitening_for(i, groups)
                if cache is not None:
                    cache[key] = fit
            else:
                fit = cache[key]
        if fit is not None:
            space, cand = fit
            ev.update(example_evidence(space.whiten(probe.examples), space.whiten(cand), permutations, seed))
        out.append(ev)
    return out
