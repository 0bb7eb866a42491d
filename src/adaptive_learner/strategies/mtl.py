"""``mtl``: one adapter trained jointly on all tasks at once (the multitask upper bound).

It sees the whole sequence, so only the final row of the accuracy matrix exists; its budget is
the sequence's total (steps per task x number of tasks), over the pooled, shuffled examples.
"""

from dataclasses import replace

from ..adapters import BASE
from ..prompting import Encoded
from ..tasks.spec import TaskData
from .base import Strategy, register

JOINT = "joint"


@register("mtl")
class Multitask(Strategy):
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
            cfg = replace(self.ctx.train, steps=self.ctx.train.steps * self.ctx.n_tasks)
            self.train(JOINT, self.pool, desc="mtl (joint)", cfg=cfg)

    def adapter_for(self, task: str) -> str:
        return JOINT if JOINT in self.version else BASE
