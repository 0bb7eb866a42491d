"""Where a new adapter starts: fresh, or as a copy of the library adapter closest to the new task.

When the router decides that no adapter should be reused, the task still shares a lot with the
library: the prompt format, the answer-as-a-label-word output, often the kind of input. A LoRA
freshly initialised (B = 0) learns slowly in a short budget; starting from a copy of the best
candidate's weights carries that shared part over (forward transfer) while the candidate itself
stays untouched, so nothing already learned can be forgotten by it.
"""

from __future__ import annotations

from typing import Collection

from ..errors import UserError
from .decision import RouteDecision

INITS = ("nearest", "fresh")
DEFAULT_INIT = "nearest"


def check_init(init: str, option: str = "router_init") -> str:
    """``init`` if it is a known way to start a new adapter, else a one-line error naming ``option``."""
    if init not in INITS:
        raise UserError(f"{option} {init!r}: use one of {', '.join(INITS)}")
    return init


def warm_start_source(init: str, decision: RouteDecision, available: Collection[str]) -> str | None:
    """The adapter a new one copies (``None``: fresh): the decision's best-scored candidate that exists."""
    if init == "fresh":
        return None
    best = max((c for c in decision.candidates if c.adapter in available), key=lambda c: c.probability, default=None)
    return best.adapter if best is not None else None
