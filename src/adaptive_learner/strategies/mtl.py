"""``mtl``: one adapter trained jointly on all tasks at once (the multitask upper bound).

It sees the whole sequence, so only the final row of the accuracy matrix exists; its budget is
the sequence's total (steps per task x number of tasks), over the pooled, shuffled examples.
Early stopping treats it as the tasks would be treated alone: each task holds out its own part,
the monitor is the mean of the tasks' held-out accuracies (what AvgAcc weighs), and it is checked
every ``eval_every`` x tasks steps (each task gets a share of every batch, so as many steps per
task pass between checks as in a single-task run) with the same patience.
"""

from dataclasses import replace

from ..adapters import BASE
from ..prompting import Encoded
from ..tasks.spec import TaskData
from .base import Strategy, register

JOINT = "joint"


@register("mtl")
class Multitask(Strategy):
    answers_with_head = False  # a joint adapter trained at the end: no task adapter for the head option
    evaluates_each_step = False

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.pool: list[Encoded] = []
        self.seen = 0

    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        self.pool.extend(items)
        self.seen += 1
        if self.seen == self.ctx.n_tasks:
            self.new_adapter(JOINT)
            n = self.ctx.n_tasks
            cfg = replace(self.ctx.train, steps=self.ctx.train.steps * n, eval_every=self.ctx.train.eval_every * n)
            self.train(JOINT, self.pool, desc="mtl (joint)", cfg=cfg)

    def adapter_for(self, task: str) -> str:
        return JOINT if JOINT in self.version else BASE
