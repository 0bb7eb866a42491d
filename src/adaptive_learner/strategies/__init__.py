"""Strategies, one small file each, registered by name."""

from . import mtl, naive, per_task, zero_shot  # noqa: F401  (registration)
from . import ewc, ewc_replay, o_lora, replay  # noqa: F401  (forgetting control: issue 4)
from . import router  # noqa: F401  (reuse-or-create by the router)
from . import arrow, osf, per_task_warm  # noqa: F401  (peers: peft's Arrow and OSF; the router's warm start alone)
from .base import REGISTRY, Context, Strategy, register, require_peft


def check_requirements(name: str) -> None:
    """A one-line ``UserError`` for an unknown strategy, or one whose requirements are missing."""
    from ..errors import UserError

    if name not in REGISTRY:
        raise UserError(f"unknown strategy {name!r}; available: {', '.join(sorted(REGISTRY))}")
    REGISTRY[name].check_requirements()


def make(name: str, ctx: Context) -> Strategy:
    """Instantiate a registered strategy."""
    check_requirements(name)
    return REGISTRY[name](ctx)


__all__ = ["REGISTRY", "Context", "Strategy", "check_requirements", "make", "register", "require_peft"]
