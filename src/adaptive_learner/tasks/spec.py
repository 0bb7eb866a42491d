"""A task: what it asks (description), how to prompt it, its labels, and its data."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")  # \Z: "$" would let a trailing newline in
MAX_FIELD_CHARS = 4000  # long reviews/articles are cut before tokenising; the prompt is token-truncated later


def check_name(name: str, what: str = "task") -> str:
    """Validate a task or adapter name: 1-64 chars of letters, digits, '_', '-', '.', no path parts."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise UserError(f"invalid {what} name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
                        f"starting with a letter or digit")
    return name


@dataclass
class TaskSpec:
    """Everything about a task except its rows. Round-trips through JSON/YAML via ``to_dict``/``from_dict``."""

    name: str
    description: str
    family: str
    input_fields: list[str]
    template: str
    label_names: list[str]
    verbalizers: list[str]
    source: str = "user"
    splits: dict[str, Any] = field(default_factory=dict)
    label_scoring: str = field(default="first-token", metadata={
        "help": "how a label is scored: first-token (the token that tells the labels apart), mean "
                "(length-normalised log-likelihood) or sum (summed log-likelihood, earlier releases)"})

    def __post_init__(self) -> None:
        check_name(self.name)
        if not self.description or not self.description.strip():
            raise UserError(f"task {self.name}: the description is empty; write the instruction a person would give")
        if len(self.label_names) < 2:
            raise UserError(f"task {self.name}: needs at least two labels, got {self.label_names}")
        if len(self.verbalizers) != len(self.label_names):
            raise UserError(f"task {self.name}: {len(self.verbalizers)} verbalizers for {len(self.label_names)} labels")
        if len(set(self.verbalizers)) != len(self.verbalizers):
            raise UserError(f"task {self.name}: verbalizers must differ, got {self.verbalizers}")
        if self.label_scoring not in ("first-token", "mean", "sum"):
            raise UserError(f"task {self.name}: unknown label scoring {self.label_scoring!r}; "
                            f"choose first-token, mean or sum")
        for f in self.input_fields:
            if "{" + f + "}" not in self.template:
                raise UserError(f"task {self.name}: template does not use input field {{{f}}}")

    def prompt(self, fields: dict[str, str]) -> str:
        """The prompt for one example: the description, then the filled template (ends before the label)."""
        vals = {k: str(fields[k])[:MAX_FIELD_CHARS] for k in self.input_fields}
        return f"{self.description.strip()}\n{self.template.format(**vals)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        # a spec stored before label scoring was a setting was scored by summed log-likelihood
        known.setdefault("label_scoring", "sum")
        return cls(**known)


@dataclass
class Example:
    """One labelled input: the text fields by name and the label index."""

    fields: dict[str, str]
    label: int


@dataclass
class TaskData:
    """A task and its train/test rows."""

    spec: TaskSpec
    train: list[Example]
    test: list[Example]

    @property
    def name(self) -> str:
        return self.spec.name

    def subsample(self, max_train: int | None, max_test: int | None, seed: int) -> "TaskData":
        """A deterministic, label-stratified subsample of each split."""
        return TaskData(self.spec, stratified_take(self.train, max_train, seed),
                        stratified_take(self.test, max_test, seed + 1))

    def with_label_scoring(self, mode: str) -> "TaskData":
        """The same task with its labels scored by ``mode`` (first-token, mean or sum)."""
        return TaskData(TaskSpec.from_dict({**self.spec.to_dict(), "label_scoring": mode}), self.train, self.test)

    def renamed(self, name: str, description: str | None = None) -> "TaskData":
        d = self.spec.to_dict()
        d["name"] = name
        if description:
            d["description"] = description
        return TaskData(TaskSpec.from_dict(d), self.train, self.test)


def stratified_take(rows: list[Example], n: int | None, seed: int) -> list[Example]:
    """Up to ``n`` rows with the label proportions kept, chosen with a fixed seed, in a shuffled order."""
    if n is None or n >= len(rows):
        idx = np.random.RandomState(seed).permutation(len(rows))
        return [rows[i] for i in idx]
    rng = np.random.RandomState(seed)
    labels = np.array([r.label for r in rows])
    picked: list[int] = []
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.floor(counts / counts.sum() * n).astype(int)
    quotas[np.argsort(-counts)[: n - quotas.sum()]] += 1
    for c, q in zip(classes, quotas):
        members = np.flatnonzero(labels == c)
        picked.extend(rng.choice(members, size=min(q, len(members)), replace=False).tolist())
    order = rng.permutation(len(picked))
    return [rows[picked[i]] for i in order]


def stratified_split(rows: list[Example], test_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A deterministic, label-stratified train/test split."""
    rng = np.random.RandomState(seed)
    labels = np.array([r.label for r in rows])
    train_idx: list[int] = []
    test_idx: list[int] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(members) * test_fraction))
        test_idx.extend(members[:k].tolist())
        train_idx.extend(members[k:].tolist())
    return [rows[i] for i in sorted(train_idx)], [rows[i] for i in sorted(test_idx)]
