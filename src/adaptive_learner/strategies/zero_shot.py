"""``zero-shot``: the untouched backbone; learns nothing. The floor every strategy must clear."""

from ..prompting import Encoded
from ..tasks.spec import TaskData
from .base import Strategy, register


@register("zero-shot")
class ZeroShot(Strategy):
    answers_with_head = False  # no adapter: no task adapter for the head option
    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        return None
