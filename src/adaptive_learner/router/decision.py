"""The reuse-or-create decision for a new task, and the record of it.

For every stored task the combiner turns that pair's evidence into a calibrated probability that
the new task belongs with it (same family); an adapter's probability is that of its best task. The
best adapter is reused when its probability reaches the threshold the combiner chose from data;
otherwise a new adapter is created. The trial (the candidate adapter's loss on the k examples
against the base model's) is run only for a short list of the most likely adapters, because it
costs a forward pass per candidate.

An adapter none of whose tasks it learned (each task's held-out accuracy at its kept step judged not
learned against that task's majority-class rate by ``training.trainer.learned_verdict``,
``TaskProfile.learned`` False) is not offered for reuse: there
is nothing in it to transfer, and EWC and replay would hold the new task to weights that never
worked (the two wrong reuses of the outcome runs, BENCHMARKS.md, were both of this kind). The next
candidate above the threshold is reused instead, else a new adapter is made.

Before creating, the answer trial (where stored adapters are at hand: ``alearn learn``, the bench's
router): the likeliest candidates' adapters answer the k examples under their own task's prompt, and
their answers are mapped onto the new labels. A family shares its decision across datasets whatever
the labels are called; the signals above, fitted on the catalog's label sets, do not see that a
film-critic task labelled "recommended" / "not recommended" is sentiment. An adapter that answers
better than chance (permutation p <= ``answer_alpha``) and than the backbone alone under the same
prompt is reused, with confidence 1 - p (a test's, not the combiner's calibrated probability).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from ..features import TaskFeatures
from .calibration import Combiner, signals_of
from .evidence import TaskProfile, evidence_for_all

Trial = Callable[[Sequence[str]], dict[str, dict[str, float]]]  # adapters -> {adapter: {"trial_gain": ..}}
# (adapter, its task) pairs -> {adapter: {"answer_acc", "answer_p", "answer_base_acc", ...}} (trial.run_answer_trial)
AnswerTrial = Callable[[Sequence[tuple[str, str]]], dict[str, dict[str, Any]]]


@dataclass
class CandidateScore:
    """One adapter's case for being reused."""

    adapter: str
    task: str  # the adapter's task that matched best
    probability: float
    evidence: dict[str, float] = field(default_factory=dict)
    head: str = ""
    learned: bool = True  # False: every task of this adapter was judged not learned (not offered for reuse)


@dataclass
class RouteDecision:
    """What the router decided for a task, how sure it is, and why."""

    task: str
    action: str  # "reuse" or "new"
    adapter: str | None  # the adapter reused, or the one to create (filled in by the caller)
    confidence: float
    candidates: list[CandidateScore]
    explanation: str
    threshold: float | None = None
    router: str = "calibrated"

    def to_json(self) -> dict[str, Any]:
        """The decision as plain JSON (keys action, adapter, confidence, candidates, explanation, ...)."""
        return {"task": self.task, "action": self.action, "adapter": self.adapter,
                "confidence": round(self.confidence, 4), "threshold": self.threshold, "router": self.router,
                "candidates": [{**asdict(c), "probability": round(c.probability, 4),
                                "evidence": {k: round(v, 4) for k, v in c.evidence.items()}}
                               for c in self.candidates],
                "explanation": self.explanation}


@dataclass
class RouterConfig:
    """Knobs of the calibrated router."""

    permutations: int = field(default=200, metadata={"help": "permutations of the two-sample test"})
    trial_shortlist: int = field(default=3, metadata={"help": "adapters given the (costly) trial, most likely first"})
    threshold: float | None = field(default=None, metadata={"help": "override the data-chosen reuse threshold"})
    reuse_unlearned: bool = field(default=False, metadata={
        "help": "offer for reuse an adapter whose tasks were all judged not learned (held-out verdict)"})
    answer_alpha: float = field(default=0.01, metadata={
        "help": "before creating: reuse a candidate whose adapter already answers the k examples through a "
                "mapping of its labels onto the new ones, at this permutation p-value or below (0: never)"})
    seed: int = field(default=0, metadata={"help": "seed of the permutation test"})


class Router:
    """The calibrated reuse-or-create router."""

    name = "calibrated"

    def __init__(self, combiner: Combiner, config: RouterConfig | None = None) -> None:
        self.combiner = combiner
        self.config = config or RouterConfig()

    def decide(self, probe: TaskFeatures, profiles: Sequence[TaskProfile], trial: Trial | None = None,
               answer_trial: AnswerTrial | None = None) -> RouteDecision:
        """Decide for the task ``probe`` against the stored ``profiles`` (one per stored task)."""
        if not profiles:
            return RouteDecision(probe.task, "new", None, 1.0, [], "the library is empty: a new adapter")
        evidence = evidence_for_all(probe, profiles, self.config.permutations, self.config.seed)
        return self.decide_from_evidence(probe.task, profiles, evidence, trial, answer_trial)

    def decide_from_evidence(self, task: str, profiles: Sequence[TaskProfile], evidence: list[dict[str, float]],
                             trial: Trial | None = None, answer_trial: AnswerTrial | None = None) -> RouteDecision:
        """The decision once each stored task's evidence is known (one dict per profile)."""
        if not profiles:
            return RouteDecision(task, "new", None, 1.0, [], "the library is empty: a new adapter")
        cfg = self.config
        cands = self._per_adapter(profiles, evidence)
        if trial is not None and cfg.trial_shortlist > 0 and self.uses_trial:
            self._add_trial(cands, profiles, evidence, trial)
        cands.sort(key=lambda c: -c.probability)
        unlearned = set() if cfg.reuse_unlearned else _unlearned_adapters(profiles)
        for c in cands:
            c.learned = c.adapter not in unlearned
        eligible = [c for c in cands if c.learned]
        best = eligible[0] if eligible else cands[0]
        head = self.combiner.heads.get(best.head)
        tau = cfg.threshold if cfg.threshold is not None else (head.threshold if head else 0.5)
        skipped = [c for c in cands if not c.learned and c.probability >= tau]
        note = "".join(f"; {c.adapter} ({c.probability:.2f}) not offered: it never learned its tasks"
                       for c in skipped[:2])
        if eligible and best.probability >= tau:
            return RouteDecision(task, "reuse", best.adapter, best.probability, cands,
                                 _explain_reuse(best, tau) + note, tau)
        answered = self._answer_trial(eligible, answer_trial) if eligible else None
        if answered is not None:
            c, r = answered
            return RouteDecision(task, "reuse", c.adapter, 1.0 - r["answer_p"], cands,
                                 _explain_answers(c, r, best, tau) + note, tau)
        # no adapter learned anything: as with an empty library, nothing to reuse
        confidence = 1.0 - best.probability if eligible else 1.0
        return RouteDecision(task, "new", None, confidence, cands, _explain_new(best, tau) + note, tau)

    def _answer_trial(self, eligible: list[CandidateScore], answer_trial: AnswerTrial | None
                      ) -> tuple[CandidateScore, dict[str, Any]] | None:
        """The signals said new. Does one of the likeliest candidates' adapters already answer the task,
        through a mapping of its labels onto the new ones, better than chance (p <= ``answer_alpha``) and
        than the backbone alone under the same prompt? Then that one (the most accurate) is reused."""
        alpha = self.config.answer_alpha
        if answer_trial is None or alpha <= 0 or self.config.trial_shortlist <= 0:
            return None
        short = eligible[: self.config.trial_shortlist]
        results = answer_trial([(c.adapter, c.task) for c in short])
        passed = []
        for c in short:
            r = results.get(c.adapter)
            if r is not None:
                c.evidence.update({k: float(v) for k, v in r.items() if k != "answer_mapping"})
                if r["answer_p"] <= alpha and r["answer_acc"] > r["answer_base_acc"]:
                    passed.append((c, r))
        return max(passed, key=lambda cr: cr[1]["answer_acc"]) if passed else None

    @property
    def uses_trial(self) -> bool:
        """Whether any head weighs the trial (if none does, running it would be wasted forward passes)."""
        return any("trial" in h.signals for h in self.combiner.heads.values())

    def _score(self, ev: dict[str, float]) -> tuple[float, str]:
        head = self.combiner.head_for(signals_of(ev))
        if head is None:
            return 0.0, ""
        return head.probability(ev), "+".join(head.signals)

    def _per_adapter(self, profiles: Sequence[TaskProfile], evidence: list[dict[str, float]]) -> list[CandidateScore]:
        best: dict[str, CandidateScore] = {}
        for prof, ev in zip(profiles, evidence):
            p, head = self._score(ev)
            if prof.adapter not in best or p > best[prof.adapter].probability:
                best[prof.adapter] = CandidateScore(prof.adapter, prof.task, p, dict(ev), head)
        return list(best.values())

    def _add_trial(self, cands: list[CandidateScore], profiles: Sequence[TaskProfile],
                   evidence: list[dict[str, float]], trial: Trial) -> None:
        short = sorted(cands, key=lambda c: -c.probability)[: self.config.trial_shortlist]
        results = trial([c.adapter for c in short])
        for c in short:
            if c.adapter not in results:
                continue
            # the trial is per adapter: every task of that adapter gets it, and the best is kept again
            rescored = []
            for prof, ev in zip(profiles, evidence):
                if prof.adapter == c.adapter:
                    ev2 = {**ev, **results[c.adapter]}
                    rescored.append((*self._score(ev2), prof.task, ev2))
            p, head, task, ev2 = max(rescored, key=lambda r: r[0])
            c.task, c.probability, c.evidence, c.head = task, p, ev2, head


def _unlearned_adapters(profiles: Sequence[TaskProfile]) -> set[str]:
    """Adapters every one of whose tasks was judged not learned (unknown counts as learned)."""
    adapters = {p.adapter for p in profiles}
    return adapters - {p.adapter for p in profiles if p.learned is not False}


def _fmt_evidence(c: CandidateScore) -> str:
    keys = [("desc_cos", "description similarity"), ("label_cos", "label similarity"),
            ("conformal_p", "example p-value"), ("trial_gain", "trial gain (nats)")]
    parts = [f"{label} {c.evidence[k]:.2f}" for k, label in keys if k in c.evidence]
    if c.evidence.get("label_names_uninformative"):
        parts.append("label names left out: numbers or codes say nothing about what a task decides "
                     "(name the labels to let the router use them)")
    return ", ".join(parts)


def _explain_reuse(best: CandidateScore, tau: float) -> str:
    return (f"reuse {best.adapter}: matches its task {best.task} with probability {best.probability:.2f} "
            f">= threshold {tau:.2f} ({_fmt_evidence(best)})")


def _explain_answers(c: CandidateScore, r: dict[str, Any], best: CandidateScore, tau: float) -> str:
    return (f"reuse {c.adapter}: the signals alone matched no adapter (best {best.adapter}, probability "
            f"{best.probability:.2f} < {tau:.2f}), but its adapter already answers this task in its own task "
            f"{c.task}'s words: {r['answer_acc']:.2f} of the examples right through a mapping of its labels "
            f"(labels shuffled: {r['answer_null']:.2f}, p = {r['answer_p']:.3f}; the backbone alone "
            f"{r['answer_base_acc']:.2f}); confidence 1 - p")


def _explain_new(best: CandidateScore, tau: float) -> str:
    return (f"new adapter: the closest, {best.adapter} (task {best.task}), matches with probability "
            f"{best.probability:.2f} < threshold {tau:.2f} ({_fmt_evidence(best)})")
