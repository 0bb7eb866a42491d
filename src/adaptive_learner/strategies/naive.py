"""``naive``: one LoRA adapter fine-tuned on task after task with no protection (the forgetting floor)."""

from ..adapters import BASE
from ..prompting import Encoded
from ..tasks.spec import TaskData
from .base import Strategy, register

SHARED = "shared"


@register("naive")
class Naive(Strategy):
    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        if SHARED not in self.version:
            self.new_adapter(SHARED)
        self.train(SHARED, items, desc=f"naive {task.name}")

    def adapter_for(self, task: str) -> str:
        return SHARED if SHARED in self.version else BASE
