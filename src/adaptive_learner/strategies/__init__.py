"""Strategies, one small file each, registered by name."""

from . import mtl, naive, per_task, zero_shot  # noqa: F401  (registration)
from . import ewc, ewc_replay, o_lora, replay  # noqa: F401  (forgetting control: issue 4)
from . import router  # noqa: F401  (reuse-or-create by the router)
from .base import REGISTRY, Context, Strategy, register


def make(name: str, ctx: Context) -> Strategy:
    """Instantiate a registered strategy."""
    from ..errors import UserError

    if name not in REGISTRY:
        raise UserError(f"unknown strategy {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](ctx)


__all__ = ["REGISTRY", "Context", "Strategy", "make", "register"]
