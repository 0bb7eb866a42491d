"""Has the library kept what it learned? Each task's test examples, stored with which ones were right.

``Learner.learn`` scores a task on its test examples once its adapter is trained. Those examples, and
which of them were right, are kept beside the adapter as ``data/<adapter>/check-<task>.json`` (raw
text, like the replay buffer; JSON only). Scoring them again later, with the adapter as it is then,
tells a user whether learning another task into the same adapter cost the old one anything:
``alearn learn`` does so for every other task of an adapter it reuses, and ``alearn evaluate`` for
any task on demand. The change is paired example by example, with a bootstrap interval
(``stats.paired_bootstrap``), so a difference of one or two examples is not read as forgetting.

Written inside the learner's transaction, so a check exists exactly when its task does; a task
learned again replaces its check, and one that moves to another adapter leaves its old one behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import LibraryError
from ..tasks.spec import Example
from .stats import PairedDiff, paired_bootstrap

FORMAT = "adaptive-learner/check-1"
KIND = "check"


def check_file(task: str) -> str:
    """The name of ``task``'s check inside its adapter's data folder (named like its profile)."""
    from ..router.store import task_files

    return task_files(KIND, task)[1]


@dataclass
class TaskCheck:
    """A task's test examples and which were right when it was (last) learned."""

    task: str
    examples: list[Example]
    correct: list[int]  # 1/0 per example, when learned (when: the task's "updated" in the manifest)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if self.correct else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "task": self.task, "accuracy": self.accuracy,
                "examples": [{"fields": dict(e.fields), "label": int(e.label), "correct": int(c)}
                             for e, c in zip(self.examples, self.correct)]}

    @classmethod
    def from_json(cls, obj: Any, n_labels: int, fields: Sequence[str]) -> "TaskCheck":
        """Rebuild from ``to_json``'s output, refusing anything malformed or not matching the task's spec."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise LibraryError("a task check file is not an adaptive-learner check")
        try:
            examples, correct = [], []
            for row in obj["examples"]:
                label, right = int(row["label"]), int(row["correct"])
                if not 0 <= label < n_labels or right not in (0, 1) or set(fields) - set(row["fields"]):
                    raise ValueError("an example does not match the task")
                examples.append(Example({str(k): str(v) for k, v in row["fields"].items()}, label))
                correct.append(right)
            return cls(str(obj["task"]), examples, correct)
        except (KeyError, TypeError, ValueError) as exc:
            raise LibraryError(f"the check of task {obj.get('task')!r} is damaged: {exc}") from None


def stage_check(tx: Any, adapter: str, check: TaskCheck) -> None:
    """Stage ``check`` under ``adapter``, dropping the task's older check under another adapter."""
    from ..router.store import drop_profile

    old = tx.manifest["tasks"].get(check.task, {}).get("adapter")
    if old and old != adapter and old in tx.manifest["adapters"]:
        drop_profile(tx, old, check.task, kind=KIND)
    tx.write_json(adapter, check_file(check.task), check.to_json())


def load_check(library: Any, task: str) -> TaskCheck | None:
    """The stored check of ``task`` (None: learned before checks were kept, or without test examples)."""
    adapter = library.adapter_of(task)
    name = check_file(task)
    if f"data/{adapter}/{name}" not in library.adapters[adapter].get("files", {}):
        return None
    spec = library.task_spec(task)
    obj = library.read_json(adapter, name)
    return None if obj is None else TaskCheck.from_json(obj, len(spec.label_names), spec.input_fields)


@dataclass
class Retention:
    """A task's accuracy on its stored examples when learned and now, and the paired change."""

    task: str
    adapter: str
    examples: int
    then: float
    now: float
    change: PairedDiff  # now - then

    @property
    def verdict(self) -> str:
        """'kept' (the interval includes 0), 'lost' or 'gained' (it lies below or above 0)."""
        if not self.change.excludes_zero:
            return "kept"
        return "lost" if self.change.high < 0 else "gained"

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "adapter": self.adapter, "examples": self.examples, "then": self.then,
                "now": self.now, "change": self.change.mean, "low": self.change.low, "high": self.change.high,
                "verdict": self.verdict}


def retention(check: TaskCheck, adapter: str, correct_now: Sequence[int], resamples: int = 2000) -> Retention:
    """``check``'s task scored again (``correct_now``, one 0/1 per stored example, in order)."""
    now = np.asarray(correct_now, dtype=int)
    if now.shape != (len(check.correct),):
        raise ValueError(f"{check.task}: {now.size} outcomes for {len(check.correct)} stored examples")
    diff = paired_bootstrap([{check.task: now}], [{check.task: np.asarray(check.correct)}], [0], resamples=resamples)
    return Retention(check.task, adapter, len(check.correct), check.accuracy, float(now.mean()), diff)


def describe(r: Retention) -> str:
    """One line for a person: ``trec (lora-trec): 0.900 when learned, 0.895 now (-0.5 points [-2.0, +1.0]; kept)``."""
    return (f"{r.task} ({r.adapter}): {r.then:.3f} when learned, {r.now:.3f} now ({100 * r.change.mean:+.1f} points "
            f"[{100 * r.change.low:+.1f}, {100 * r.change.high:+.1f}] over {r.examples} examples; {r.verdict})")
