"""``per-task``: a new LoRA adapter for every task; the task id picks the adapter at test time."""

from ..adapters import BASE
from ..prompting import Encoded
from ..tasks.spec import TaskData
from .base import Strategy, register


@register("per-task")
class PerTask(Strategy):
    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.by_task: dict[str, str] = {}

    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        adapter = self.new_adapter(f"lora-{task.name}")
        self.by_task[task.name] = adapter
        self.train(adapter, items, desc=f"{self.name} {task.name}")

    def adapter_for(self, task: str) -> str:
        return self.by_task.get(task, BASE)
