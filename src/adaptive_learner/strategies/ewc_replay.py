"""``ewc-replay``: one LoRA adapter reused over all tasks, protected by EWC and replay together.

The original design's best run. EWC's Fisher and the replay buffer live in memory between tasks
(the library keeps them as files when ``Learner`` does the same); settings come from the run's
options (``ewc_strength``, ``ewc_decay``, ``replay_ratio``, ``replay_buffer_size``, ... see
``training/forgetting.py``).
"""

from typing import Any

from ..adapters import BASE
from ..prompting import Encoded
from ..tasks.spec import TaskData
from ..training.forgetting import ForgettingOptions, make_forgetting_regularisers, store_forgetting_state
from ..training.ewc import EWC
from ..training.replay import Replay
from .base import Strategy, register

SHARED = "shared"


@register("ewc-replay")
class EWCReplay(Strategy):
    """One shared adapter; the regularisers switched on by ``use_ewc`` / ``use_replay`` protect it."""

    use_ewc = True
    use_replay = True
    option_prefixes = ("ewc_", "replay_")  # the run options it reads

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts = dict(ctx.options)
        opts.setdefault("replay_max_length", ctx.train.max_length)
        self.options = ForgettingOptions.from_mapping(opts, ewc=self.use_ewc, replay=self.use_replay,
                                                      seed=ctx.train.seed)
        self.memory: dict[str, Any] = {}
        self.generated = 0

    def learn(self, task: TaskData, items: list[Encoded]) -> None:
        if SHARED not in self.version:
            self.new_adapter(SHARED)
        regs = make_forgetting_regularisers(self.memory, SHARED, self.options, task)
        self.train(SHARED, items, regs, desc=f"{self.name} {task.name}")
        self.generated += sum(len(r.generated) for r in regs if isinstance(r, Replay))
        for r in regs:
            if isinstance(r, EWC) and r.history:  # how strong the penalty got, beside the task loss
                self.reports[-1]["ewc_penalty_max"] = round(max(r.history), 4)
        store_forgetting_state(self.memory, SHARED, regs)

    def adapter_for(self, task: str) -> str:
        return SHARED if SHARED in self.version else BASE

    def finish_info(self) -> dict[str, Any]:
        """Settings and counts recorded in results.json."""
        return {"forgetting": self.options.to_dict(), "generated_examples": self.generated}
