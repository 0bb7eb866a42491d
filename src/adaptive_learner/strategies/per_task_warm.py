"""``per-task-warm``: a new LoRA adapter for every task, started as ``router_init=nearest`` starts the
router's new adapters.

With ``router_init=nearest`` the router's lead over ``per-task`` has two sources: the reuse decision,
and the warm start of the adapters it creates (a copy of its best-scored candidate,
``router/warm_start.py``); at the default ``router_init=fresh`` only the first (then ``router`` minus
``per-task`` is what reusing adds). This strategy
keeps the second and drops the first: the router scores every stored adapter against the new task
exactly as in ``router`` (same features, combiner and options ``router``, ``router_k``,
``router_layer``, ``router_trial``), and whatever it advises, a new adapter is created as a copy of
the best-scored candidate (the first task starts fresh: there is nothing to copy), then trained as
``per-task`` trains (no EWC or replay: nothing earlier lives in a new adapter). ``router`` with
``router_init=nearest`` minus ``per-task-warm`` is then what reusing adds. The task id picks the adapter at test time; like the
router, its results also hold the final row with the task inferred per input, and each decision
records what the router advised (``router_advised``).
"""

from ..router.warm_start import WARM
from .base import register
from .router import RouterStrategy


@register("per-task-warm")
class PerTaskWarm(RouterStrategy):
    """The router's candidate scoring and warm start, without its reuse decision."""

    may_reuse = False
    option_prefixes = ("router",)  # the run options it reads: router, router_k, ...

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.init = WARM  # the warm start is what this strategy is
        self.factories = []  # plain training, as per-task
