"""What a continual-learning strategy is: a few hooks over a shared context (mammoth-style).

A strategy learns tasks one at a time (``learn``) and scores test items of any task it was asked
about (``score``). It owns the adapters it creates on the context's ``AdapterHost``.

Option ``head`` (``alearn bench --set head=true``): a strategy that answers each task by an adapter on the
shared backbone (``answers_with_head``) also fits, after each task, the head ``alearn learn`` fits (a linear
classifier on the frozen backbone's features and the sentence encoder's views, mixed with the adapter as the
held-out examples decide: ``training/head/``), and scores that task with the mix: the product's learner in
the continual-learning table. The head of a task is fitted once, beside its adapter as it is then; it is a
function of frozen features, so later training of a shared adapter changes only the adapter's part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ..adapters import BASE, AdapterHost
from ..errors import UserError
from ..prompting import Encoded
from ..scoring import BATCH, score
from ..tasks.spec import TaskData
from ..training import TrainConfig, TrainReport, train_adapter
from ..training.forgetting import coerce_option


@dataclass
class Context:
    """Everything a strategy may use: the backbone host, the budget, where to write, the sequence length."""

    host: AdapterHost
    train: TrainConfig
    n_tasks: int
    workdir: Path
    eval_batch_size: int = BATCH
    options: dict[str, Any] = field(default_factory=dict)
    # set by the harness for the task being learned: training calls save their progress there and an
    # interrupted run continues from it (training/resume.py)
    step_checkpoint: Any = None

    @property
    def tokenizer(self) -> Any:
        return self.host.backbone.tokenizer


class Strategy:
    """Base class: a new strategy overrides ``learn`` and, if it routes differently, ``adapter_for``."""

    name = "base"
    evaluates_each_step = True  # False: only the final row of the matrix is measured (joint training)
    # True: holds several task adapters but picks none by task id (o-lora sums them, arrow routes per
    # token); the bench compares it with the reference's row scored with the task inferred per input
    task_id_free = False
    # True: answers each task by ``adapter_for(task)`` on the shared host with the base ``score``, so the head
    # option applies; strategies that answer otherwise (one rewritten model, a sum of adapters, routing per
    # token, a joint adapter trained at the end) set False
    answers_with_head = True

    @classmethod
    def check_requirements(cls) -> None:
        """Raise ``UserError`` when something this strategy needs is missing (e.g. a peft too old)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.version: dict[str, int] = {}
        self.reports: list[dict[str, Any]] = []
        self.heads: dict[str, Any] = {}  # task -> its FeatureHead (option head; None: the adapter alone)
        self.head_reports: list[dict[str, Any]] = []

    @property
    def uses_head(self) -> bool:
        return self.answers_with_head and coerce_option("head", self.ctx.options.get("head", False), bool)

    # -- to override
    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        raise NotImplementedError

    def adapter_for(self, task: str) -> str:
        """The adapter used for ``task`` when the task id is given (``BASE``: the backbone)."""
        return BASE

    # -- shared machinery
    def score(self, task: str, items: Sequence[Encoded]) -> list[np.ndarray]:
        pad = self.ctx.tokenizer.pad_token_id
        with self.ctx.host.using(self.adapter_for(task)) as model:
            scores = score(model, items, pad, self.ctx.eval_batch_size)
        head = self.heads.get(task)
        return scores if head is None else head.mix_in(self.ctx.host, items, scores)

    def eval_key(self, task: str) -> Hashable:
        """Identifies the weights that score ``task``; equal keys give equal accuracies (cached)."""
        a = self.adapter_for(task)
        head_fits = sum(r["task"] == task for r in self.head_reports)  # the task's own heads: another's leaves it
        return (a, self.version.get(a, 0), head_fits)

    def fit_head(self, task: TaskData, items: Sequence[Encoded]) -> None:
        """Fit ``task``'s head beside the adapter that now answers it (option ``head``; the harness calls this
        after ``learn``), as ``alearn learn`` does: same held-out split, same views and mix rule."""
        from ..features import FeatureConfig
        from ..training.head import fit_task_head

        adapter = self.adapter_for(task.name)
        if adapter == BASE or not items:
            return
        encoder = FeatureConfig().resolved_encoder(self.ctx.host.backbone.name)
        head, report = fit_task_head(self.ctx.host, adapter, items, self.ctx.train, encoder=encoder)
        self.heads[task.name] = head
        self.head_reports.append({"task": task.name, "adapter": adapter, **report})

    def new_adapter(self, name: str, init_from: str | None = None) -> str:
        """Create adapter ``name``: fresh, or a copy of ``init_from`` (warm start)."""
        self.ctx.host.create(name, seed=self.ctx.train.seed, init_from=init_from)
        self.version[name] = 0
        return name

    def train(self, adapter: str, items: Sequence[Encoded], regularisers: Sequence[Any] = (),
              desc: str | None = None, cfg: TrainConfig | None = None, host: Any = None) -> TrainReport:
        """Train ``adapter`` of ``host`` (the context's by default) and record the report."""
        rep = train_adapter(host or self.ctx.host, adapter, items, cfg or self.ctx.train, regularisers, desc=desc,
                            accelerator=self.ctx.options.get("accelerator"),
                            checkpoint=self.ctx.step_checkpoint if host is None else None)
        self.version[adapter] = self.version.get(adapter, 0) + 1
        self.reports.append({"adapter": adapter, "steps": rep.steps, "examples": rep.examples, "tokens": rep.tokens,
                             "seconds": round(rep.seconds, 2), "final_loss": round(rep.final_loss, 4),
                             "best_step": rep.best_step, "stopped": rep.stopped, "validation": rep.validation,
                             **({"lr": rep.lr, "attempts": rep.attempts} if rep.attempts else {})})
        return rep

    @property
    def adapters(self) -> list[str]:
        return list(self.version)

    def trainable_params(self) -> int:
        return sum(self.ctx.host.count_trainable(a) for a in self.adapters)


def require_peft(strategy: str, *names: str) -> None:
    """A one-line ``UserError`` when the installed peft lacks any of ``names`` (a method ``strategy`` wraps)."""
    import peft

    missing = [n for n in names if not hasattr(peft, n)]
    if missing:
        raise UserError(f"strategy {strategy} needs peft's {', '.join(missing)}, which peft {peft.__version__} does "
                        f"not have; install a newer peft (pip install -U peft)")


REGISTRY: dict[str, type[Strategy]] = {}


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Register a strategy class under ``name`` (``alearn run --strategy NAME``)."""
    def wrap(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return wrap
