"""Where a new adapter starts: fresh (the default), or as a copy of the library adapter closest to the new task.

When the router decides that no adapter should be reused, the task still shares something with
the library: the prompt format, the answer-as-a-label-word output, often the kind of input. With a
fixed budget of 20 steps a freshly initialised LoRA (B = 0) moved little, and a copy of the best
candidate carried that shared part over (+1.5 to +4.2 points). Trained until its held-out loss
stops improving (today's default), a fresh adapter learns the task and a copy of an adapter of
*another* family (the router only creates when no candidate is of the task's kind) ends lower:
on `seed`, mrpc 0.48 from a copy of the sst2 adapter against 0.65 fresh (BENCHMARKS.md). So
``fresh`` is the default and ``nearest`` an option (``--init nearest``, ``router_init=nearest``).
"""

from __future__ import annotations

from typing import Collection

from ..errors import UserError
from .decision import RouteDecision

INITS = ("fresh", "nearest")
DEFAULT_INIT = "fresh"
WARM = "nearest"


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
